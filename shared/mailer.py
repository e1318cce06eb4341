"""The e-mail notification service: queue message → recipients → one e-mail each, at most once.

The queue triggers (shared/blueprints/mail.py) are thin adapters around `deliver` and `handle_poison`.

Delivery guarantees
- At most one e-mail per (event, recipient), however often the host redelivers the message: every send is
  guarded by an idempotency record in the `deliveries` table (`Store.claim_delivery` / `finish_delivery`).
- Transient failures (server down, timeouts, 4xx) are retried a few times inside the invocation; if they persist
  the claim is released and the invocation raises, so the host redelivers the message (host.json: maxDequeueCount
  5, visibilityTimeout 30 s). Recipients already served are skipped on redelivery.
- Permanent failures (5xx for a mailbox, credentials refused) are recorded and never retried, so a wrong password
  cannot make the host retry forever.
- After maxDequeueCount failed attempts the host moves the message to `monitor-events-poison`; `handle_poison`
  then e-mails the operator once, marks the event failed and closes the audience's delivery records, so a stray
  redelivery of the original message cannot e-mail them later.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pydantic import ValidationError

from shared.events import Event, EventType
from shared.notify import Channel, EmailChannel, Notification, NotifyError, PermanentError, TransientError
from shared.settings import Settings
from shared.storage import Store, _safe_key, clip

log = logging.getLogger(__name__)

MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount (a test keeps them in step)
RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5)  # waits between the tries of one invocation (3 tries)

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(enabled_extensions=("html", "htm"), default_for_string=True, default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)

FOOTER = "Sent by the monitoring service. You receive this because you are a recipient of this monitor."
ADMIN_FOOTER = "Sent by the monitoring service to ADMIN_EMAIL_RECIPIENTS."


class DeliveryDeferred(TransientError):
    """Raised to make the host redeliver the message later (some recipients are still due)."""


# ---------------------------------------------------------------------------------------------- rendering

_TAGS: dict[EventType, str] = {
    EventType.MONITOR_DOWN: "DOWN",
    EventType.MONITOR_UP: "UP",
    EventType.MONITOR_DEGRADED: "DEGRADED",
    EventType.MONITOR_RECOVERED_FROM_DEGRADED: "RECOVERED",
    EventType.CERTIFICATE_EXPIRING: "CERTIFICATE",
    EventType.MONITOR_ERROR: "CHECKER ERROR",
    EventType.MONITOR_ERROR_CLEARED: "CHECKER OK",
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


def duration(seconds: float | int | None) -> str:
    """42 s, 5 min, 2 h 5 min, 3 d 4 h."""
    if seconds is None:
        return "unknown"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min" + (f" {s} s" if s and m < 10 else "")
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h" + (f" {m} min" if m else "")
    d, h = divmod(h, 24)
    return f"{d} d" + (f" {h} h" if h else "")


def _utc(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _label(key: str) -> str:
    return key.replace("_", " ").strip().capitalize() or key


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
    if event.type == EventType.MONITOR_DOWN:
        if d.get("reminder"):
            tag = "STILL DOWN"
        summary = d.get("error") or summary
    elif event.type == EventType.MONITOR_UP:
        secs = d.get("downtime_seconds")
        summary = f"up again after {duration(secs)}" if isinstance(secs, (int, float)) else "up again"
    elif event.type == EventType.MONITOR_DEGRADED:
        summary = d.get("reason") or summary
    elif event.type == EventType.MONITOR_ERROR:
        summary = d.get("error") or summary
    elif event.type == EventType.MONITOR_ERROR_CLEARED:
        summary = "the checker works again"
    elif summary.startswith(event.monitor_name + " "):
        summary = summary[len(event.monitor_name) + 1:]
    return tag, " ".join(str(summary).split())


def monitor_link(settings: Settings, monitor_id: str) -> str | None:
    if not settings.public_base_url or not monitor_id:
        return None
    return f"{settings.public_base_url.rstrip('/')}/api/v1/monitors/{quote(monitor_id, safe='')}"


def _subject(tag: str, name: str, summary: str) -> str:
    subject = f"[{tag}] {name}: {summary}" if summary else f"[{tag}] {name}"
    subject = " ".join(subject.split())
    return subject if len(subject) <= 200 else subject[:199] + "…"


def quantity(value: Any) -> str:
    """A quantity for people: 4.0 → 4, 0.25 → 0.25, 2/3 → 0.667; None (unknown) → -."""
    if value is None:
        return "-"
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:.3f}".rstrip("0").rstrip(".")


def text_table(header: list[str], rows: list[list[Any]], right: Iterable[int] = ()) -> str:
    """Plain-text columns, two spaces apart, with a rule under the header; `right`: right-aligned columns."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    aligned = set(right)

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in aligned else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = ["-" * w if title else "" for title, w in zip(cells[0], widths)]  # none under an untitled column
    return "\n".join([line(cells[0]).rstrip(), line(rule).rstrip()]
                     + [line(row).rstrip() for row in cells[1:]])


_env.filters["quantity"] = quantity
_env.globals["text_table"] = text_table

# Event types with a template of their own (shared/templates/<name>.html / .txt): reports whose details are the
# template's context, with `title` and `summary` for the subject ("[PARTS] Widget ×10: 2 parts short, …").
TEMPLATES_BY_TYPE: dict[EventType, str] = {EventType.PARTS_REPORT: "parts_report"}


def _render_own(template: str, event: Event, settings: Settings) -> Rendered:
    d = event.details
    tag = _TAGS.get(event.type, event.type.value.replace("_", " "))
    title = str(d.get("title") or event.monitor_name)
    subject = _subject(tag, title, str(d.get("summary") or event.message))
    ctx = {**d, "subject": subject, "banner": f"{tag}: {title}", "color": _COLORS.get(event.severity, "#57606a"),
           "message": event.message, "time": _utc(event.occurred_at), "link": monitor_link(settings, event.monitor_id),
           "footer": FOOTER}
    return Rendered(subject, _env.get_template(f"{template}.txt").render(ctx),
                    _env.get_template(f"{template}.html").render(ctx))


def render_event(event: Event, settings: Settings) -> Rendered:
    if event.type in TEMPLATES_BY_TYPE:
        return _render_own(TEMPLATES_BY_TYPE[event.type], event, settings)
    tag, summary = _summary(event)
    subject = _subject(tag, event.monitor_name, summary)
    facts = [("Monitor", event.monitor_name), ("Kind", event.kind), ("Event", event.type.value),
             ("Severity", event.severity), ("Time", _utc(event.occurred_at))]
    if event.type == EventType.MONITOR_UP:
        secs = event.details.get("downtime_seconds")
        facts.append(("Downtime", duration(secs) if isinstance(secs, (int, float)) else "unknown"))
    shown = {"downtime_seconds"} if event.type == EventType.MONITOR_UP else set()
    details = [(_label(k), _value(k, v)) for k, v in event.details.items() if v is not None and k not in shown]
    ctx = {"subject": subject, "banner": f"{tag}: {event.monitor_name}", "color": _COLORS.get(event.severity,
           "#57606a"), "message": event.message or summary, "facts": facts, "details": details,
           "link": monitor_link(settings, event.monitor_id) if event.kind != "alert_rule" else None,
           "footer": ADMIN_FOOTER if event.audience == "operator" else FOOTER,
           "width": max(len(label) for label, _ in facts + details) + 1}
    return Rendered(subject, _env.get_template("event.txt").render(ctx), _env.get_template("event.html").render(ctx))


def render_poison(event: Event | None, settings: Settings, reason: str, ref: str,
                  audience: list[str], last_error: str | None) -> Rendered:
    if event is not None:
        subject = _subject("DELIVERY FAILED", event.monitor_name, f"{event.type.value} event not delivered")
        headline = f"Event {event.id} could not be delivered after {MAX_DEQUEUE_COUNT} attempts."
        facts = [("Event", event.type.value), ("Event id", event.id), ("Monitor", event.monitor_name),
                 ("Monitor id", event.monitor_id), ("Kind", event.kind), ("Severity", event.severity),
                 ("Time", _utc(event.occurred_at)), ("Message", event.message or "")]
        link = monitor_link(settings, event.monitor_id)
    else:
        subject = "[DELIVERY FAILED] unreadable notification message"
        headline = f"Queue message {ref} could not be processed."
        facts = []
        link = None
    if audience:
        facts.append(("Not notified", ", ".join(audience)))
    if last_error:
        facts.append(("Last error", clip(last_error, 1000) or ""))
    facts.append(("Reason", reason))
    ctx = {"subject": subject, "banner": "Notification delivery failed", "color": "#cf222e",
           "headline": headline, "facts": facts, "link": link, "footer": ADMIN_FOOTER,
           "explanation": "The message was moved to the poison queue; it will not be retried. Check the SMTP "
                          "settings and the SMTP server, and the function's logs.",
           "width": max((len(label) for label, _ in facts), default=8) + 1}
    return Rendered(subject, _env.get_template("poison.txt").render(ctx), _env.get_template("poison.html").render(ctx))


# ---------------------------------------------------------------------------------------------- the service


def parse(body: str) -> Event:
    """The queue message `{"event": {...}}` (shared/engine.py `publish`) → Event; ValueError when unusable."""
    try:
        data = json.loads(body)
        return Event.model_validate(data["event"])
    except (ValueError, TypeError, KeyError, ValidationError) as error:
        raise ValueError(f"not an event message: {type(error).__name__}") from None


def _dedupe(addresses: Iterable[Any]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for address in addresses:
        text = str(address).strip()
        if text and text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    return out


async def recipients_for(event: Event, settings: Settings, store: Store) -> list[str]:
    """Audience "monitor" → the monitor's `recipients`, or DEFAULT_EMAIL_RECIPIENTS when it has none or is gone
    (an alert rule's event: the rule's recipients in its details, or the default); "operator" →
    ADMIN_EMAIL_RECIPIENTS; "none" → nobody."""
    audience = event.audience
    if audience == "none":
        return []
    if audience == "operator":
        return _dedupe(settings.admin_recipients)
    own: list[Any] = []
    if event.kind == "alert_rule":  # shared/snapshots.py: the rule's recipients travel with its events
        return _dedupe(event.details.get("recipients") or settings.default_recipients)
    entity = await store.get_monitor(event.monitor_id) if event.monitor_id else None
    if entity is not None:
        try:
            own = json.loads(entity.get("spec") or "{}").get("recipients") or []
        except (ValueError, AttributeError):
            log.warning("monitor %s has an unreadable spec; using DEFAULT_EMAIL_RECIPIENTS", event.monitor_id)
    return _dedupe(own or settings.default_recipients)


def lease_seconds(settings: Settings) -> int:
    """How long a claim protects a send in progress: every try may wait a full SMTP timeout, plus margin."""
    return int((len(RETRY_DELAYS) + 1) * settings.smtp_timeout_seconds + sum(RETRY_DELAYS)) + 30


async def send_with_retry(channel: Channel, note: Notification) -> None:
    """Send, retrying transient failures after RETRY_DELAYS; smtplib blocks, so it runs in a thread."""
    for delay in (*RETRY_DELAYS, None):
        try:
            await asyncio.to_thread(channel.send, note)
            return
        except TransientError as error:
            if delay is None:
                raise
            log.info("%s to one recipient failed (%s); trying again in %.1f s", channel.name, error, delay)
            await asyncio.sleep(delay)


@dataclass
class _Tally:
    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)  # finished by an earlier invocation
    retry: dict[str, str] = field(default_factory=dict)


async def _statuses(store: Store, event_id: str, prefix: str, recipients: list[str]) -> dict[str, dict[str, Any]]:
    """The delivery records of these recipients: {recipient: row} (status, error)."""
    rows = {row["RowKey"]: row for row in await store.list_deliveries(event_id)}
    out = {}
    for rcpt in recipients:
        row = rows.get(_safe_key(f"{prefix}{rcpt}"))
        if row is not None:
            out[rcpt] = row
    return out


async def deliver(body: str, dequeue_count: int, settings: Settings, store: Store,
                  channel: Channel | None = None) -> str:
    """Deliver one queued event. Returns a short status; raises DeliveryDeferred to have the host redeliver."""
    try:
        event = parse(body)
    except ValueError as error:
        ref = _body_ref(body)
        log.error("queue message %s is unusable (%s); telling the operator", ref, error)
        await _give_up(body, None, settings, store, reason=str(error), channel=channel)
        return "invalid"

    if not settings.email_enabled:
        await store.mark_event(event.model_dump(mode="json"), "disabled")
        return "disabled"
    if event.audience == "none":
        return "none"
    recipients = await recipients_for(event, settings, store)
    ev = event.model_dump(mode="json")
    if not recipients:
        log.warning("event %s (%s, monitor %s) has no recipients", event.id, event.type.value, event.monitor_id)
        await store.mark_event(ev, "no_recipients")
        return "no_recipients"

    channel = channel or EmailChannel(settings)
    lease = lease_seconds(settings)
    rendered = render_event(event, settings)
    tally = _Tally()
    channel_failure: NotifyError | None = None

    for rcpt in recipients:
        key = f"{channel.name}:{rcpt}"
        if isinstance(channel_failure, TransientError):
            break  # the server is unreachable: the rest waits for the redelivery, unclaimed
        claim = await store.claim_delivery(event.id, key, lease)
        if claim == "done":
            tally.done.append(rcpt)
            continue
        if claim == "busy":
            tally.retry[rcpt] = "another invocation is sending it"
            continue
        if isinstance(channel_failure, PermanentError):  # e.g. credentials refused: the same for everyone
            await store.finish_delivery(event.id, key, "failed", str(channel_failure))
            tally.failed[rcpt] = str(channel_failure)
            continue
        note = Notification(rcpt, rendered.subject, rendered.text, rendered.html, ref=event.id)
        try:
            await send_with_retry(channel, note)
        except PermanentError as error:
            await store.finish_delivery(event.id, key, "failed", str(error))
            tally.failed[rcpt] = str(error)
            log.error("event %s: e-mail to %s failed permanently: %s", event.id, rcpt, error)
            if error.scope == "channel":
                channel_failure = error
        except TransientError as error:
            await store.finish_delivery(event.id, key, "released")
            tally.retry[rcpt] = str(error)
            if error.scope == "channel":
                channel_failure = error
        except BaseException:
            await asyncio.shield(store.finish_delivery(event.id, key, "released"))
            raise
        else:
            await store.finish_delivery(event.id, key, "sent")
            tally.sent.append(rcpt)

    await _confirm_report(store, event, f"{channel.name}:", tally)
    if tally.retry or isinstance(channel_failure, TransientError):
        pending = len(recipients) - len(tally.sent) - len(tally.failed) - len(tally.done)
        reason = "; ".join(sorted(set(tally.retry.values()))) or str(channel_failure)
        await store.mark_event(ev, "retrying", f"attempt {dequeue_count} of {MAX_DEQUEUE_COUNT}: {reason}")
        log.warning("event %s: %d of %d recipients still due after attempt %d of %d: %s", event.id, pending,
                    len(recipients), dequeue_count, MAX_DEQUEUE_COUNT, reason)
        raise DeliveryDeferred(f"event {event.id}: {pending} recipient(s) still due: {reason}", scope="channel")

    sent, failed = list(tally.sent), dict(tally.failed)
    if tally.done:
        earlier = await _statuses(store, event.id, f"{channel.name}:", tally.done)
        for rcpt in tally.done:
            row = earlier.get(rcpt) or {}
            if row.get("status") == "sent":
                sent.append(rcpt)
            else:
                failed[rcpt] = row.get("error") or "failed earlier"
    status = "sent" if not failed else ("partial" if sent else "failed")
    error = "; ".join(f"{rcpt}: {text}" for rcpt, text in failed.items()) or None
    await store.mark_event(ev, status, error)
    log.info("event %s (%s, monitor %s): %s, %d/%d recipients", event.id, event.type.value, event.monitor_id,
             status, len(sent), len(recipients))
    return f"{status} ({len(sent)}/{len(recipients)} sent)"


async def _confirm_report(store: Store, event: Event, prefix: str, tally: _Tally) -> None:
    """SMTP accepted a report (PARTS_REPORT) for at least one recipient, now or in an earlier invocation: record
    its hash in the monitor's state (`last_hash`), so `on_change` stays quiet until the report changes. Best
    effort: when this fails the next run sends the report again, which beats a report never sent."""
    digest = event.details.get("hash")
    if event.type != EventType.PARTS_REPORT or not digest or not (tally.sent or tally.done):
        return
    try:
        if not tally.sent:
            earlier = await _statuses(store, event.id, prefix, tally.done)
            if not any(row.get("status") == "sent" for row in earlier.values()):
                return
        await store.confirm_last_hash(event.kind, event.monitor_id, str(digest))
    except Exception:  # noqa: BLE001 - the e-mail went out; only the "already told" mark is missing
        log.exception("event %s: report sent, but its hash could not be recorded; the next run sends it again",
                      event.id)


# ------------------------------------------------------------------------------------------------- poison


def _body_ref(body: str) -> str:
    return "msg-" + hashlib.sha256(body.encode("utf-8", "replace")).hexdigest()[:32]


async def _last_error(store: Store, event: Event) -> str | None:
    """The delivery error `deliver` recorded on the event row, for the operator's e-mail (best effort)."""
    try:
        rows = await store.list_events(limit=10, before=event.occurred_at + timedelta(microseconds=1),
                                       monitor_id=event.monitor_id, type_=event.type.value, months=1)
    except Exception:  # noqa: BLE001 - only decoration for the notice
        return None
    for row in rows:
        if row.get("event_id") == event.id:
            return row.get("delivery_error") or None
    return None


async def handle_poison(body: str, settings: Settings, store: Store, channel: Channel | None = None) -> None:
    """The host gave up on a message (maxDequeueCount): tell the operator once, mark the event failed."""
    try:
        event: Event | None = parse(body)
    except ValueError as error:
        event = None
        reason = str(error)
    else:
        reason = f"not delivered after {MAX_DEQUEUE_COUNT} attempts; moved to the poison queue"
    await _give_up(body, event, settings, store, reason=reason, channel=channel)


async def _give_up(body: str, event: Event | None, settings: Settings, store: Store, reason: str,
                   channel: Channel | None) -> None:
    ref = event.id if event is not None else _body_ref(body)
    prefix = f"{channel.name if channel is not None else EmailChannel.name}:"
    audience: list[str] = []
    last_error = None
    if event is not None:
        last_error = await _last_error(store, event)
        audience = await recipients_for(event, settings, store)
        # Close the audience's records, so a stray redelivery of the original message cannot e-mail them now.
        lease = lease_seconds(settings)
        for rcpt in audience:
            key = f"{prefix}{rcpt}"
            claim = await store.claim_delivery(event.id, key, lease)
            if claim == "claimed":
                await store.finish_delivery(event.id, key, "failed", f"abandoned: {reason}")
            elif claim == "busy":
                log.warning("event %s: a send to one recipient is in progress; not closing its record", event.id)
        statuses = await _statuses(store, event.id, prefix, audience)
        served = [r for r in audience if statuses.get(r, {}).get("status") == "sent"]
        unserved = [r for r in audience if r not in served]
        await store.mark_event(event.model_dump(mode="json"), "partial" if served else "failed",
                               f"{reason}" + (f"; last error: {last_error}" if last_error else ""))
        audience = unserved

    admins = _dedupe(settings.admin_recipients)
    what = f"event {ref}" + (f" ({event.type.value}, monitor {event.monitor_id})" if event is not None else "")
    if not settings.email_enabled or not admins:
        log.error("%s could not be delivered (%s); no operator e-mail: %s", what, reason,
                  "e-mail is disabled" if not settings.email_enabled else "ADMIN_EMAIL_RECIPIENTS is empty")
        return
    log.error("%s could not be delivered (%s); e-mailing the operator", what, reason)

    channel = channel or EmailChannel(settings)
    rendered = render_poison(event, settings, reason, ref, audience, last_error)
    lease = lease_seconds(settings)
    retry: list[str] = []
    for admin in admins:
        key = f"admin-poison:{admin}"
        if await store.claim_delivery(ref, key, lease) != "claimed":
            continue  # done (or being done) already
        note = Notification(admin, rendered.subject, rendered.text, rendered.html, ref=f"poison.{ref}")
        try:
            await send_with_retry(channel, note)
        except PermanentError as error:
            await store.finish_delivery(ref, key, "failed", str(error))
            log.error("the operator notice about %s could not be sent: %s", what, error)
        except TransientError as error:
            await store.finish_delivery(ref, key, "released")
            retry.append(str(error))
        except BaseException:
            await asyncio.shield(store.finish_delivery(ref, key, "released"))
            raise
        else:
            await store.finish_delivery(ref, key, "sent")
    if retry:
        raise DeliveryDeferred(f"operator notice about {what} not sent yet: {retry[0]}", scope="channel")
