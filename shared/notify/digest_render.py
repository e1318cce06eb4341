"""A digest as a message: the subject, plain text and HTML (templates/digest.txt and digest.html, jinja2,
autoescaped, the alert mails' layout), the short form for chat channels, and the webhook body.

Every line is worded here once, so the text, the HTML and the short form say the same thing; problems first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from shared.notify.digest import Digest
from shared.notify.render import TEMPLATES, text_table
from shared.text import clock, duration, plural, quantity, timestamp

SHORT_MAX = 1500
_env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                   autoescape=select_autoescape(enabled_extensions=("html", "htm"), default=False),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
FOOTER = "Sent by the monitoring service: the digest of this channel (digest, digest_at in its definition)."


@dataclass(frozen=True)
class Section:
    heading: str
    lines: list[str]


@dataclass(frozen=True)
class RenderedDigest:
    subject: str
    text: str
    html: str
    short: str


def _when(value: str | datetime | None) -> str:
    if value is None:
        return "?"
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return timestamp(dt)


def headline(digest: Digest) -> str:
    return f"{plural(digest.problems, 'problem')}, {plural(digest.changes, 'change')}"


def subject_of(digest: Digest, day: date | None = None) -> str:
    """[DIGEST] Daily digest: 2 problems, 14 changes (Tue 1 Dec)."""
    day = day or digest.until.date()
    return f"[DIGEST] {digest.title}: {headline(digest)} ({day:%a} {day.day} {day:%b})"


def problem_sections(digest: Digest) -> list[Section]:
    out: list[Section] = []
    sites = []
    for o in (o for o in digest.outages if o.problem):
        state = f"DOWN since {_when(o.down_since)}" if o.down_now else "flapping"
        line = f"{o.name}: {state}; down {duration(o.downtime_seconds)} in the period " \
               f"({plural(o.outages, 'outage')}, {plural(o.down_events, 'DOWN event')})"
        sites.append(line + (f" - {o.reason}" if o.reason and o.down_now else ""))
    if sites:
        out.append(Section("Sites down or flapping", sites))
    stock = []
    for s in digest.stock:
        if s.status in ("LOW", "HIGH"):
            line = f"{s.name}: {s.status.lower()} stock, {quantity(s.quantity)} left"
            if s.threshold is not None:
                line += f" ({s.status.lower()} threshold {s.threshold})"
            if s.breach_since:
                line += f" since {_when(s.breach_since)}"
        else:
            line = f"{s.name}: {quantity(s.quantity)} left"
        if s.days_to_stockout is not None and s.stockout_at:
            line += f"; runs out in about {s.days_to_stockout:g} days, around {s.stockout_at[:10]}" \
                    f" ({quantity(s.consumption_per_day)} a day)"
        elif s.days_to_stockout == 0:
            line += "; out of stock"
        stock.append(line)
    if stock:
        out.append(Section("Stock breaches and stock-out forecasts", stock))
    parts = [f"{p.name}" + (f" ×{p.kits}" if p.kits else "") + f": {quantity(p.lines_short)} of "
             f"{quantity(p.lines)} lines short, {quantity(p.total_missing)} missing, "
             f"{quantity(p.kits_buildable)} kits buildable now" for p in digest.parts]
    if parts:
        out.append(Section("Parts lists short", parts))
    resources = [f"{r.name}: {r.status}" + (f" since {_when(r.since)}" if r.since else "")
                 + (f" - {'; '.join(r.metrics)}" if r.metrics else "") for r in digest.resources]
    if resources:
        out.append(Section("Resources in WARNING or ALERT", resources))
    rules = [f"{r.name}: {r.metric} is {'unknown' if r.value is None else f'{r.value:g}'} ({r.severity})"
             + (f" since {_when(r.since)}" if r.since else "") for r in digest.rules]
    if rules:
        out.append(Section("Alert rules firing", rules))
    errors = [f"{e.name} ({e.kind}): no data since {_when(e.since)}" + (f" - {e.error}" if e.error else "")
              for e in digest.errors]
    if errors:
        out.append(Section("Checker errors", errors))
    return out


def other_sections(digest: Digest) -> list[Section]:
    out: list[Section] = []
    recovered = [f"{o.name}: down {duration(o.downtime_seconds)} in the period ({plural(o.outages, 'outage')}), "
                 "up now" for o in digest.outages if not o.problem]
    if recovered:
        out.append(Section("Outages in the period", recovered))
    counts = [f"{count} {kind}" for kind, count in digest.events_by_type.items()]
    changes = [f"  {timestamp(c.at)}  {c.monitor}: " + (f"{c.from_status} -> {c.to_status}" if c.from_status
                                                         else f"now {c.to_status}") for c in digest.status_changes]
    if digest.more_changes:
        changes.insert(0, f"  +{digest.more_changes} earlier changes not listed")
    lines = [f"Events: {', '.join(counts)}" + (" (truncated)" if digest.events_truncated else "")] if counts \
        else ["No events in the period."]
    out.append(Section("What changed", lines + (["Status changes:", *changes] if changes else [])))
    return out


def uptime_rows(digest: Digest) -> list[list[str]]:
    return [[m.name, m.kind, m.status, "-" if m.uptime_percent is None else f"{m.uptime_percent:g} %", str(m.checks)]
            for m in digest.monitors]


UPTIME_HEADER = ["Monitor", "Kind", "Status", "Uptime", "Checks"]


def period_text(digest: Digest) -> str:
    length = duration((digest.until - digest.since).total_seconds())
    return f"{timestamp(digest.since)} - {timestamp(digest.until)} ({length})"


def render_digest(digest: Digest, day: date | None = None) -> RenderedDigest:
    subject = subject_of(digest, day)
    problems = problem_sections(digest)
    ctx: dict[str, Any] = {
        "subject": subject, "banner": f"{digest.title}: {headline(digest)}",
        "color": "#cf222e" if digest.problems else "#1a7f37", "period": period_text(digest),
        "problems": problems, "others": other_sections(digest), "uptime_header": UPTIME_HEADER,
        "uptime_rows": uptime_rows(digest),
        "uptime_table": text_table(UPTIME_HEADER, uptime_rows(digest), right=(3, 4)) if digest.monitors else "",
        "footer": FOOTER,
    }
    return RenderedDigest(subject, _env.get_template("digest.txt").render(ctx),
                          _env.get_template("digest.html").render(ctx), short_form(digest, subject, problems))


def short_form(digest: Digest, subject: str, problems: list[Section] | None = None) -> str:
    """The headline counts and the problems, at most SHORT_MAX characters (chat, SMS, push)."""
    lines = [subject.removeprefix("[DIGEST] "), f"As of {clock(digest.until)}."]
    for section in problems if problems is not None else problem_sections(digest):
        lines.append(f"{section.heading}:")
        lines += [f"- {line}" for line in section.lines]
    if not digest.problems:
        lines.append("Nothing is wrong now.")
    text = "\n".join(lines)
    return text if len(text) <= SHORT_MAX else text[:SHORT_MAX - 1] + "…"


def webhook_body(digest: Digest, ref: str, subject: str, short: str) -> dict[str, Any]:
    """The webhook body of a digest: the version-1 envelope (type DIGEST) with the digest as data."""
    from shared.notify.chat import WEBHOOK_VERSION

    return {"version": WEBHOOK_VERSION, "id": ref, "type": "DIGEST", "kind": "digest", "severity":
            "warning" if digest.problems else "info", "audience": "channel", "monitor": None,
            "occurred_at": digest.until.isoformat(), "message": headline(digest), "subject": subject, "text": short,
            "details": digest.model_dump(mode="json"), "link": None}
