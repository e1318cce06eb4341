"""The delivery pipeline: queue message → recipients → one message each, at most once per recipient.

The queue triggers (shared/triggers/mail.py) are thin adapters around `deliver` and `handle_poison`.

Delivery guarantees
- At most one message per (event, recipient) from completed sends, however often the host redelivers the queue
  message: every send is guarded by an idempotency record in the `deliveries` table (`Store.claim_delivery` /
  `finish_delivery`).
- Transient failures (server down, timeouts, 4xx) are retried a few times inside the invocation; if they persist
  the claim is released and the invocation raises, so the host redelivers the message (host.json: maxDequeueCount
  5, visibilityTimeout 30 s). Recipients already served are skipped on redelivery.
- Permanent failures (5xx for a mailbox, credentials refused) are recorded and never retried, so a wrong password
  cannot make the host retry forever.
- After maxDequeueCount failed attempts the host moves the message to `monitor-events-poison`; `handle_poison`
  (shared/notify/poison.py) then tells the operator once, marks the event failed and closes the audience's
  delivery records, so a stray redelivery of the original message cannot reach them later.
- Once a recipient accepted an event's message, the state fields the event asks to confirm (`Event.confirm`, e.g.
  a report's hash) are recorded in the monitor's state.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.events import DeliveryStatus, Event
from shared.notify.channel import Channel, Notification, NotifyError, PermanentError, TransientError
from shared.notify.render import MAX_DEQUEUE_COUNT, render_event
from shared.outbound.errors import is_transient
from shared.outbound.retry import SMTP
from shared.settings import Settings
from shared.storage import Claim

if TYPE_CHECKING:
    from shared.storage import Store

log = logging.getLogger("shared.mailer")


class DeliveryDeferred(TransientError):
    """Raised to make the host redeliver the message later (some recipients are still due)."""


def parse(body: str) -> Event:
    """The queue message `{"event": {...}}` (shared/engine.py `publish`) → Event; ValueError when unusable."""
    try:
        data = json.loads(body)
        return Event.model_validate(data["event"])
    except (ValueError, TypeError, KeyError, ValidationError) as error:
        raise ValueError(f"not an event message: {type(error).__name__}") from None


def dedupe(addresses: Iterable[Any]) -> list[str]:
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
        return dedupe(settings.admin_recipients)
    own: list[Any] = []
    if event.kind == "alert_rule":  # shared/rules: the rule's recipients travel with its events
        return dedupe(event.details.get("recipients") or settings.default_recipients)
    entity = await store.get_monitor(event.monitor_id) if event.monitor_id else None
    if entity is not None:
        try:
            own = json.loads(entity.get("spec") or "{}").get("recipients") or []
        except (ValueError, AttributeError):
            log.warning("monitor %s has an unreadable spec; using DEFAULT_EMAIL_RECIPIENTS", event.monitor_id)
    return dedupe(own or settings.default_recipients)


def lease_seconds(settings: Settings) -> int:
    """How long a claim protects a send in progress: every try may wait a full SMTP timeout, plus the waits."""
    return int(SMTP.attempts * settings.smtp_timeout_seconds + SMTP.attempts * (SMTP.wait_max + SMTP.jitter)) + 30


async def send_with_retry(channel: Channel, note: Notification) -> None:
    """Send, retrying transient failures (the SMTP policy); smtplib blocks, so it runs in a thread."""
    async for attempt in SMTP.tries(is_transient, f"{channel.name} send"):
        with attempt:
            await asyncio.to_thread(channel.send, note)


@dataclass
class _Tally:
    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)  # finished by an earlier invocation
    retry: dict[str, str] = field(default_factory=dict)
    channel_failure: NotifyError | None = None


async def statuses(store: Store, event_id: str, prefix: str, recipients: list[str]) -> dict[str, dict[str, Any]]:
    """The delivery records of these recipients: {recipient: row} (status, error)."""
    rows = await store.delivery_statuses(event_id, [f"{prefix}{rcpt}" for rcpt in recipients])
    return {rcpt: rows[f"{prefix}{rcpt}"] for rcpt in recipients if f"{prefix}{rcpt}" in rows}


async def deliver(body: str, dequeue_count: int, settings: Settings, store: Store,
                  channel: Channel | None = None) -> str:
    """Deliver one queued event. Returns a short status; raises DeliveryDeferred to have the host redeliver."""
    try:
        event = parse(body)
    except ValueError as error:
        from shared.notify.poison import body_ref, give_up

        log.error("queue message %s is unusable (%s); telling the operator", body_ref(body), error)
        await give_up(body, None, settings, store, reason=str(error), channel=channel)
        return "invalid"

    if not settings.email_enabled:
        await store.mark_event(event.model_dump(mode="json"), DeliveryStatus.DISABLED.value)
        return "disabled"
    if event.audience == "none":
        return "none"
    recipients = await recipients_for(event, settings, store)
    ev = event.model_dump(mode="json")
    if not recipients:
        log.warning("event %s (%s, monitor %s) has no recipients", event.id, event.type.value, event.monitor_id)
        await store.mark_event(ev, DeliveryStatus.NO_RECIPIENTS.value)
        return "no_recipients"

    channel = channel or email_channel(settings)
    tally = await _send_all(store, settings, channel, event, recipients)
    await _confirm(store, event, f"{channel.name}:", tally)
    if tally.retry or isinstance(tally.channel_failure, TransientError):
        pending = len(recipients) - len(tally.sent) - len(tally.failed) - len(tally.done)
        reason = "; ".join(sorted(set(tally.retry.values()))) or str(tally.channel_failure)
        await store.mark_event(ev, DeliveryStatus.RETRYING.value,
                               f"attempt {dequeue_count} of {MAX_DEQUEUE_COUNT}: {reason}")
        log.warning("event %s: %d of %d recipients still due after attempt %d of %d: %s", event.id, pending,
                    len(recipients), dequeue_count, MAX_DEQUEUE_COUNT, reason)
        raise DeliveryDeferred(f"event {event.id}: {pending} recipient(s) still due: {reason}", scope="channel")

    sent, failed = list(tally.sent), dict(tally.failed)
    if tally.done:
        earlier = await statuses(store, event.id, f"{channel.name}:", tally.done)
        for rcpt in tally.done:
            row = earlier.get(rcpt) or {}
            if row.get("status") == "sent":
                sent.append(rcpt)
            else:
                failed[rcpt] = row.get("error") or "failed earlier"
    status = "sent" if not failed else ("partial" if sent else "failed")
    errors = "; ".join(f"{rcpt}: {text}" for rcpt, text in failed.items()) or None
    await store.mark_event(ev, status, errors)
    log.info("event %s (%s, monitor %s): %s, %d/%d recipients", event.id, event.type.value, event.monitor_id,
             status, len(sent), len(recipients))
    return f"{status} ({len(sent)}/{len(recipients)} sent)"


async def _send_all(store: Store, settings: Settings, channel: Channel, event: Event,
                    recipients: list[str]) -> _Tally:
    """One message per recipient, each guarded by its delivery record. A channel-wide transient failure stops the
    round (the rest waits for the redelivery, unclaimed); a channel-wide permanent one fails the rest at once."""
    lease = lease_seconds(settings)
    rendered = render_event(event, settings)
    tally = _Tally()
    for rcpt in recipients:
        key = f"{channel.name}:{rcpt}"
        if isinstance(tally.channel_failure, TransientError):
            break
        claim = await store.claim_delivery(event.id, key, lease)
        if claim == Claim.DONE:
            tally.done.append(rcpt)
            continue
        if claim == Claim.BUSY:
            tally.retry[rcpt] = "another invocation is sending it"
            continue
        if isinstance(tally.channel_failure, PermanentError):  # e.g. credentials refused: the same for everyone
            await store.finish_delivery(event.id, key, "failed", str(tally.channel_failure))
            tally.failed[rcpt] = str(tally.channel_failure)
            continue
        note = Notification(rcpt, rendered.subject, rendered.text, rendered.html, ref=event.id)
        try:
            await send_with_retry(channel, note)
        except PermanentError as error:
            await store.finish_delivery(event.id, key, "failed", str(error))
            tally.failed[rcpt] = str(error)
            log.error("event %s: e-mail to %s failed permanently: %s", event.id, rcpt, error)
            if error.scope == "channel":
                tally.channel_failure = error
        except TransientError as error:
            await store.finish_delivery(event.id, key, "released")
            tally.retry[rcpt] = str(error)
            if error.scope == "channel":
                tally.channel_failure = error
        except BaseException:
            await asyncio.shield(store.finish_delivery(event.id, key, "released"))
            raise
        else:
            await store.finish_delivery(event.id, key, "sent")
            tally.sent.append(rcpt)
    return tally


async def _confirm(store: Store, event: Event, prefix: str, tally: _Tally) -> None:
    """A recipient accepted the event's message, now or in an earlier invocation: record the state fields the event
    asks to confirm (a parts report's hash: `on_change` then stays quiet until the report changes). Best effort:
    when this fails the next run sends the report again, which beats a report never sent."""
    if not event.confirm or not (tally.sent or tally.done):
        return
    try:
        if not tally.sent:
            earlier = await statuses(store, event.id, prefix, tally.done)
            if not any(row.get("status") == "sent" for row in earlier.values()):
                return
        await store.confirm_state(event.kind, event.monitor_id, dict(event.confirm))
    except Exception:
        log.exception("event %s: delivered, but %s could not be recorded; the next run sends it again", event.id,
                      ", ".join(event.confirm))


def email_channel(settings: Settings) -> Channel:
    from shared.notify.email import EmailChannel

    return EmailChannel(settings)
