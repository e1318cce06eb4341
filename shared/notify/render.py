"""Rendering events as messages: subject, plain text and HTML (jinja2, autoescaped), one template per message
type (shared/notify/templates), or a kind's own (monitors/templates, named by `Kind.email_templates`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from tabulate import tabulate

from monitors import KINDS
from shared.events import Event, EventType
from shared.notify.updown import UPDOWN_TYPES, tell
from shared.outbound.errors import plain
from shared.settings import Settings
from shared.text import clip, duration, quantity, timestamp

TEMPLATES = Path(__file__).resolve().parent / "templates"
KIND_TEMPLATES = Path(__file__).resolve().parents[2] / "monitors" / "templates"
_env = Environment(
    loader=ChoiceLoader([FileSystemLoader(str(TEMPLATES)), FileSystemLoader(str(KIND_TEMPLATES))]),
    autoescape=select_autoescape(enabled_extensions=("html", "htm"), default_for_string=True, default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)

FOOTER = "Sent by the monitoring service. You receive this because you are a recipient of this monitor."
ADMIN_FOOTER = "Sent by the monitoring service to ADMIN_EMAIL_RECIPIENTS."
MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount (a test keeps them in step)


_TAGS: dict[EventType, str] = {
    EventType.MONITOR_DOWN: "DOWN",
    EventType.MONITOR_UP: "UP",
    EventType.MONITOR_DEGRADED: "DEGRADED",
    EventType.MONITOR_RECOVERED_FROM_DEGRADED: "RECOVERED",
    EventType.CERTIFICATE_EXPIRING: "CERTIFICATE",
    EventType.MONITOR_ERROR: "CHECKER ERROR",
    EventType.MONITOR_ERROR_CLEARED: "CHECKER OK",
    EventType.REGIONAL_ISSUE: "REGIONAL",
    EventType.REGIONAL_ISSUE_CLEARED: "REGIONAL OK",
    EventType.STOCK_INCREASED: "STOCK UP",
    EventType.STOCK_DECREASED: "STOCK DOWN",
    EventType.THRESHOLD_BREACH_LOW: "LOW",
    EventType.THRESHOLD_BREACH_HIGH: "HIGH",
    EventType.THRESHOLD_CLEARED: "OK",
    EventType.PARTS_REPORT: "PARTS",
}
_COLORS = {"critical": "#cf222e", "warning": "#9a6700", "info": "#1a7f37"}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


_utc = timestamp
_LABELS = {"latency_ms": "Response time", "url": "URL", "error": "Cause", "since": "Since"}


def _label(key: str) -> str:
    return _LABELS.get(key) or key.replace("_", " ").strip().capitalize() or key


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("_seconds") and isinstance(value, (int, float)):
        return duration(value)
    if key.endswith("_ms") and isinstance(value, (int, float)):
        return f"{value:.0f} ms"
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        try:
            return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return clip(str(value), 500) or ""


def _summary(event: Event) -> tuple[str, str]:
    """(tag, one-line summary) for the subject."""
    d = event.details
    tag = _TAGS.get(event.type, event.type.value.replace("_", " "))
    summary = event.message
    if event.type == EventType.MONITOR_ERROR:
        summary = plain(d.get("error")) or summary
    elif event.type == EventType.MONITOR_ERROR_CLEARED:
        summary = "the checker works again"
    elif summary.startswith(event.monitor_name + " "):
        summary = summary[len(event.monitor_name) + 1:]
    return tag, " ".join(str(summary).split())


def monitor_link(settings: Settings, event: Event) -> str | None:
    """Where a recipient can look at the monitor: its place on the public status page when the monitor is public.
    Every other page needs a function key, so an e-mail about a private monitor carries no link."""
    if not settings.public_base_url or not event.monitor_id or not event.public:
        return None
    return f"{settings.public_base_url.rstrip('/')}/api/status-page#m-{quote(event.monitor_id, safe='')}"


def _subject(tag: str, name: str, summary: str) -> str:
    subject = f"[{tag}] {name}: {summary}" if summary else f"[{tag}] {name}"
    subject = " ".join(subject.split())
    return subject if len(subject) <= 200 else subject[:199] + "…"


def text_table(header: list[str], rows: list[list[Any]], right: tuple[int, ...] = ()) -> str:
    """Plain-text columns with a rule under the header (tabulate's "simple"); `right`: right-aligned columns."""
    align = ["right" if i in right else "left" for i in range(len(header))]
    return tabulate([[str(c) for c in row] for row in rows], headers=header, tablefmt="simple", colalign=align,
                    disable_numparse=True)


_env.filters["quantity"] = quantity
_env.globals["text_table"] = text_table



def own_template(event: Event) -> str | None:
    """The template a kind declares for this event type (its details are the template's context, with `title`
    and `summary` for the subject: "[PARTS] Widget ×10: 2 parts short, …")."""
    kind = KINDS.get(event.kind)
    return kind.email_templates.get(event.type) if kind is not None else None


def _render_own(template: str, event: Event, settings: Settings) -> Rendered:
    d = event.details
    tag = _TAGS.get(event.type, event.type.value.replace("_", " "))
    title = str(d.get("title") or event.monitor_name)
    subject = _subject(tag, title, str(d.get("summary") or event.message))
    ctx = {**d, "subject": subject, "banner": f"{tag}: {title}", "color": _COLORS.get(event.severity, "#57606a"),
           "message": event.message, "time": _utc(event.occurred_at), "link": monitor_link(settings, event),
           "footer": FOOTER}
    return Rendered(subject, _env.get_template(f"{template}.txt").render(ctx),
                    _env.get_template(f"{template}.html").render(ctx))


def render_event(event: Event, settings: Settings) -> Rendered:
    if event.type in NOTICE_LOOK:
        return render_notice(event, settings)
    template = own_template(event)
    if template is not None:
        return _render_own(template, event, settings)
    if event.type in UPDOWN_TYPES:
        return _render_updown(event, settings)
    tag, summary = _summary(event)
    subject = _subject(tag, event.monitor_name, summary)
    facts = [("Monitor", event.monitor_name), ("Kind", event.kind), ("Event", event.type.value),
             ("Severity", event.severity), ("Time", _utc(event.occurred_at))]
    if event.type == EventType.MONITOR_UP:
        secs = event.details.get("downtime_seconds")
        facts.append(("Downtime", duration(secs) if isinstance(secs, (int, float)) else "unknown"))
    shown = {"downtime_seconds"} if event.type == EventType.MONITOR_UP else set()
    shown |= {"group"} if "group" in event.details else set()  # a grouped notice's cause id means nothing to people
    details = [(_label(k), _value(k, v)) for k, v in event.details.items() if v is not None and k not in shown]
    ctx = {"subject": subject, "banner": f"{tag}: {event.monitor_name}", "color": _COLORS.get(event.severity,
           "#57606a"), "message": event.message or summary, "facts": facts, "details": details,
           "link": monitor_link(settings, event) if event.kind != "alert_rule" else None,
           "footer": ADMIN_FOOTER if event.audience == "operator" else FOOTER,
           "width": max(len(label) for label, _ in facts + details) + 1}
    return Rendered(subject, _env.get_template("event.txt").render(ctx), _env.get_template("event.html").render(ctx))


def _render_updown(event: Event, settings: Settings) -> Rendered:
    """A website's (any up/down monitor's) DOWN, UP, DEGRADED, RECOVERED and certificate mails: see updown.py."""
    told = tell(event)
    held = event.details.get("held_dependents")
    if isinstance(held, list) and held:  # monitors that depend on this one: their alerts are held meanwhile
        told.facts.append(("Held alerts of", ", ".join(str(h) for h in held[:20])
                           + (f" and {len(held) - 20} more" if len(held) > 20 else "")))
    subject = _subject(told.tag, event.monitor_name, told.summary)
    ctx = {"subject": subject, "banner": f"{told.tag}: {event.monitor_name}",
           "color": _COLORS.get(event.severity, "#57606a"), "message": told.headline, "facts": told.facts,
           "details": [], "link": monitor_link(settings, event), "footer": FOOTER,
           "width": max(len(label) for label, _ in told.facts) + 1}
    return Rendered(subject, _env.get_template("event.txt").render(ctx), _env.get_template("event.html").render(ctx))


NOTICE_LOOK = {
    EventType.DELIVERY_FAILED: ("DELIVERY FAILED", "Notification delivery failed",
                                "Check the SMTP settings, the SMTP server and the function's logs."),
    EventType.RECIPIENT_REFUSED: ("RECIPIENT REFUSED", "A recipient was refused",
                                  "The mail server refuses this address for good: correct or remove it."),
    EventType.CHANNEL_FAILING: ("CHANNEL FAILING", "Notifications are refused",
                                "The mail server refuses every message (credentials, sender, TLS?): nobody is "
                                "being told anything until this is fixed. You hear about it at most once an hour."),
}
NOTICE_FACTS = (("event_type", "Event"), ("event_id", "Event id"), ("event_message", "Message"),
                ("occurred_at", "Happened"), ("recipient", "Recipient"), ("not_notified", "Not notified"),
                ("channel", "Channel"), ("server_said", "The server said"), ("last_error", "Last error"),
                ("tries", "Tries"), ("since", "Since"), ("message_ref", "Queue message"), ("reason", "Reason"))


def render_notice(event: Event, settings: Settings) -> Rendered:
    """An operator notice about delivery (DELIVERY_FAILED, RECIPIENT_REFUSED, CHANNEL_FAILING)."""
    tag, banner, explanation = NOTICE_LOOK[event.type]
    subject = _subject(tag, event.monitor_name, event.message)
    d = event.details
    facts = [("Monitor", event.monitor_name)] if event.monitor_id else []
    facts += [(label, _value(key, d[key])) for key, label in NOTICE_FACTS if d.get(key) not in (None, "")]
    ctx = {"subject": subject, "banner": banner, "color": "#cf222e", "headline": event.message, "facts": facts,
           "link": monitor_link(settings, event), "footer": ADMIN_FOOTER, "explanation": explanation,
           "width": max((len(label) for label, _ in facts), default=8) + 1}
    return Rendered(subject, _env.get_template("poison.txt").render(ctx), _env.get_template("poison.html").render(ctx))


def message_parts(event: Event, settings: Settings) -> tuple[Rendered, dict[str, Any]]:
    """The e-mail rendering and what other channels take from it: the short text, the link, the webhook body."""
    from shared.notify.chat import short_text, webhook_body

    rendered = render_event(event, settings)
    step = event.details.get("escalation")
    if isinstance(step, dict):  # an escalation step re-sends a problem nobody acknowledged
        from dataclasses import replace

        rendered = replace(rendered, subject=_subject("ESCALATED", event.monitor_name, rendered.subject))
    link = monitor_link(settings, event) if event.kind != "alert_rule" else None
    short = short_text(event, rendered, link)
    return rendered, {"short": short, "link": link, "body": webhook_body(event, rendered, short, link)}
