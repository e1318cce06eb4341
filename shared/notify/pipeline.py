"""The delivery pipeline: queue message → recipients → one message each.

The queue triggers (shared/triggers/mail.py) are thin adapters around `deliver` and `handle_poison`.

Guarantees (docs/DELIVERY.md says them for users):
- Each (event, recipient) is sent at most once by completed sends, however often a message is redelivered: every
  send is guarded by an idempotency record in the `deliveries` table (`claim_delivery` / `finish_delivery`). A
  process killed in the middle of an SMTP transaction may make the next try send a second copy — with the same
  Message-ID, so mail clients fold them.
- Transient failures (server down, timeouts, 4xx) are tried again a few times in the invocation, then the message
  is put back on the queue with a growing delay (30 s, 1 min, 2 min, … up to DELIVERY_RETRY_MAX_SECONDS) until
  the event is DELIVERY_MAX_AGE_HOURS old: meanwhile the event shows `pending`, its next try and the last error.
  Only then is it `failed`, and the operator is told (DELIVERY_FAILED).
- The events of one monitor go out in the order they happened: an event waits while an older one of its monitor
  is still queued or pending.
- Permanent failures (a 5xx for a mailbox, credentials refused) are recorded and never retried; the operator is
  told: which monitor, which address, the server's words (RECIPIENT_REFUSED), and for channel-wide ones at most
  once an hour (CHANNEL_FAILING). An alert none of whose recipients took it reaches the operator.
- An event that became moot before it went out is not sent (`superseded`): a newer reminder or report of the same
  monitor, or a report whose hash was confirmed meanwhile. Events of a deleted monitor are dropped.
- Once a recipient accepted an event's message, the state fields the event asks to confirm (`Event.confirm`) are
  recorded in the monitor's state.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.events import DeliveryStatus, Event, EventType, audience_of
from shared.notify import ack, escalation, operator, storm
from shared.notify.channel import TransientError
from shared.notify.routing import Target, stored_channels, targets_for
from shared.notify.send import FOLDED, Tally, report, send_event
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.storage import Store

log = logging.getLogger("shared.mailer")

FIRST_RETRY_SECONDS = 30
BUSY_RETRY_SECONDS = 10  # another invocation holds a recipient's claim
WAIT_FOR_OLDER_SECONDS = 5  # an older event of the monitor is still on its way
STUCK_QUEUED = timedelta(minutes=15)  # a "queued" older event this old is not waited for (its message is gone)


class DeliveryDeferred(TransientError):
    """Raised to make the host redeliver the message (putting it back on the queue failed)."""


@dataclass
class QueueMessage:
    """What the events queue carries: the event, and for a message put back after a failed try, which try comes
    next and when the first one was made."""

    event: Event
    attempt: int = 1
    first_try_at: datetime | None = None

    @classmethod
    def parse(cls, body: str) -> QueueMessage:
        """ValueError when the body is not an event message."""
        try:
            data = json.loads(body)
            event = Event.model_validate(data["event"])
            attempt = int(data.get("attempt") or 1)
            first = datetime.fromisoformat(data["first_try_at"]) if data.get("first_try_at") else None
        except (ValueError, TypeError, KeyError, AttributeError, ValidationError) as error:
            raise ValueError(f"not an event message: {type(error).__name__}") from None
        return cls(event, max(1, attempt), first)

    def next(self, now: datetime) -> dict[str, Any]:
        return {"event": self.event.model_dump(mode="json"), "attempt": self.attempt + 1,
                "first_try_at": (self.first_try_at or now).isoformat()}


def parse(body: str) -> Event:
    """The event of a queue message (ValueError when unusable)."""
    return QueueMessage.parse(body).event


async def recipients_for(event: Event, settings: Settings, store: Store) -> list[str] | None:
    """The labels of every target of an event (routing.targets_for); None when its monitor was deleted."""
    targets = await targets_for(event, settings, store)
    return None if targets is None else [t.label for t in targets]


def retry_delay(settings: Settings, attempt: int) -> int:
    """Seconds before try `attempt + 1`: 30 s, 1 min, 2 min, … capped at DELIVERY_RETRY_MAX_SECONDS."""
    return int(min(FIRST_RETRY_SECONDS * 2 ** max(0, attempt - 1), settings.delivery_retry_max_seconds))


async def statuses(store: Store, event_id: str, keys: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The delivery records of these targets ({label: key}): {label: row} (status, error)."""
    rows = await store.delivery_statuses(event_id, list(keys.values()))
    return {label: rows[key] for label, key in keys.items() if key in rows}


def _now() -> datetime:
    return datetime.now(UTC)


async def deliver(body: str, dequeue_count: int, settings: Settings, store: Store) -> str:
    """Deliver one queued event (or run a delayed task, shared/notify/tasks.py); returns a short status. Raises
    only when the message could not be put back on the queue (so the host redelivers it)."""
    task = _task_of(body)
    if task is not None:
        from shared.notify.tasks import run_task

        return await run_task(task, settings, store)
    try:
        msg = QueueMessage.parse(body)
    except ValueError as error:
        from shared.notify.poison import unreadable

        await unreadable(body, str(error), store)
        return "invalid"
    event, ev = msg.event, msg.event.model_dump(mode="json")
    if dequeue_count > 1:
        log.warning("event %s: message redelivered (dequeue %d): an earlier invocation did not finish", event.id,
                    dequeue_count)
    if event.audience == "none":
        return "none"
    channels = await stored_channels(store)
    if not settings.email_enabled and not any(c.enabled for c in channels):
        await store.mark_event(ev, DeliveryStatus.DISABLED.value)
        return "disabled"
    held = await _held(store, settings, event)
    if held is not None:
        await store.mark_event(ev, held)
        return held
    targets = await targets_for(event, settings, store, channels)
    labels = None if targets is None else [t.label for t in targets]
    skipped = await _moot(store, event, labels)
    if skipped is not None:
        log.info("event %s (%s, monitor %s) not sent: %s", event.id, event.type.value, event.monitor_id, skipped)
        await store.mark_event(ev, skipped)
        return skipped
    assert targets is not None
    if not targets:
        log.warning("event %s (%s, monitor %s) has no recipients", event.id, event.type.value, event.monitor_id)
        await store.mark_event(ev, DeliveryStatus.NO_RECIPIENTS.value)
        return DeliveryStatus.NO_RECIPIENTS.value
    wait = await _older_on_its_way(store, event, settings)
    if wait is not None:
        await _put_back(store, msg, wait, same_attempt=True)
        return "waiting for an older event"

    tally = await send_event(store, settings, await _with_dependents(store, event), targets,
                             extra=await _extra(store, settings, event, targets))
    await _confirm(store, event, tally)
    await report(store, event, targets, tally)
    if tally.took:
        await escalation.after_sent(store, settings, event, [t.definition for t in tally.took if t.definition])
    labels = [t.label for t in targets]
    if tally.busy and not tally.retry:
        await _put_back(store, msg, BUSY_RETRY_SECONDS, same_attempt=True)
        return "waiting for another invocation"
    if tally.retry:
        return await _retry_later(store, settings, msg, labels, tally)
    return await _finish(store, settings, event, labels, tally)


def _task_of(body: str) -> dict[str, Any] | None:
    """A delayed task's message ({"task": name, …}), or None for an event message."""
    if '"task"' not in body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("task"), str) else None


async def _held(store: Store, settings: Settings, event: Event) -> str | None:
    """Why an event is not sent to anyone now: folded into its cause's group notice, or a reminder of a problem
    someone acknowledged."""
    if event.type in (EventType.MONITOR_ERROR, EventType.MONITOR_ERROR_CLEARED) and "group" not in event.details \
            and settings.error_group_seconds > 0:
        status = await storm.absorb(store, settings, event)
        if status:
            return status
    if await ack.suppressed(store, event):
        return DeliveryStatus.ACKNOWLEDGED.value
    return None


async def _extra(store: Store, settings: Settings, event: Event, targets: list[Target]) -> dict[str, Any]:
    """What the message carries besides the rendering: the acknowledgement link — only where acknowledging
    changes something, i.e. the monitor reminds (`renotify_minutes`) or a channel it goes to escalates."""
    url = await ack.ack_url(store, settings, event)
    if url is not None and not any(t.definition is not None and t.definition.escalation for t in targets):
        entity = await store.get_monitor(event.monitor_id)
        try:
            reminds = bool(json.loads((entity or {}).get("spec") or "{}").get("renotify_minutes"))
        except ValueError:
            reminds = False
        url = url if reminds else None
    return {"ack_url": url}


async def _with_dependents(store: Store, event: Event) -> Event:
    """A DOWN or UP names the monitors that depend on this one (their alerts are held while it is down)."""
    if event.type not in (EventType.MONITOR_DOWN, EventType.MONITOR_UP) or not event.monitor_id:
        return event
    from shared.manage.dependencies import dependents

    try:
        children = await dependents(store, event.monitor_id)
    except Exception:  # the alert matters more than its list of dependents
        log.exception("event %s: the monitors depending on %s could not be listed", event.id, event.monitor_id)
        return event
    if not children:
        return event
    names = [f"{c.get('name')} ({c.get('status') or 'PENDING'})" for c in children]
    return event.model_copy(update={"details": {**event.details, "held_dependents": names}})


async def _moot(store: Store, event: Event, recipients: list[str] | None) -> str | None:
    """Why an event need not go out any more (dropped / superseded), or None."""
    if recipients is None:
        return DeliveryStatus.DROPPED.value  # its monitor was deleted: never to the default recipients
    ev = event.model_dump(mode="json")
    if event.replaces and await store.newer_with_key(ev, event.replaces):
        return DeliveryStatus.SUPERSEDED.value
    if event.confirm:
        row = await store.get_state(event.kind, event.monitor_id)
        if row is not None and all(row.data.get(k) == v for k, v in event.confirm.items()):
            return DeliveryStatus.SUPERSEDED.value  # people were told this very news (a report confirmed meanwhile)
    return None


async def _older_on_its_way(store: Store, event: Event, settings: Settings) -> int | None:
    """Seconds to wait when an older event of the same monitor is still queued or pending (order is kept)."""
    if not event.monitor_id:
        return None
    now = _now()
    since = max(event.occurred_at - timedelta(hours=settings.delivery_max_age_hours), now - timedelta(days=60))
    for row in await store.undelivered_before(event.model_dump(mode="json"), since):
        if audience_of(str(row.get("type"))) != event.audience:
            continue  # an operator notice and an audience alert have separate orders
        if row.get("delivery") == DeliveryStatus.QUEUED.value:
            stamp = row.get("Timestamp") or row.get("occurred_at")
            if isinstance(stamp, datetime) and now - stamp > STUCK_QUEUED:
                continue
            return WAIT_FOR_OLDER_SECONDS
        next_try = row.get("next_try_at")
        if isinstance(next_try, datetime):
            return max(WAIT_FOR_OLDER_SECONDS, int((next_try - now).total_seconds()) + WAIT_FOR_OLDER_SECONDS)
        return WAIT_FOR_OLDER_SECONDS
    return None


async def _put_back(store: Store, msg: QueueMessage, delay: int, same_attempt: bool = False) -> None:
    body = msg.next(_now())
    if same_attempt:
        body["attempt"] = msg.attempt
    try:
        await store.send_event_message(body, delay_seconds=max(1, delay))
    except Exception as error:  # the host redelivers the original instead
        raise DeliveryDeferred(f"event {msg.event.id}: could not be put back on the queue: {error}",
                               scope="channel") from error


async def _retry_later(store: Store, settings: Settings, msg: QueueMessage, recipients: list[str],
                       tally: Tally) -> str:
    event, ev = msg.event, msg.event.model_dump(mode="json")
    now = _now()
    first = msg.first_try_at or now
    reason = "; ".join(sorted(set(tally.retry.values()))) or str(tally.channel_failure)
    pending = len(recipients) - len(tally.sent) - len(tally.failed) - len(tally.done)
    if now - min(first, event.occurred_at) >= timedelta(hours=settings.delivery_max_age_hours):
        log.error("event %s: %d of %d recipients still not reached after %.0f h; giving up: %s", event.id, pending,
                  len(recipients), settings.delivery_max_age_hours, reason)
        await store.mark_event(ev, DeliveryStatus.FAILED.value, f"not delivered within "
                               f"{settings.delivery_max_age_hours:g} h ({msg.attempt} tries): {reason}")
        await operator.delivery_failed(store, settings, event, [r for r in recipients if r in tally.retry], reason,
                                       msg.attempt)
        return DeliveryStatus.FAILED.value
    delay = retry_delay(settings, msg.attempt)
    await _put_back(store, msg, delay)
    next_try = now + timedelta(seconds=delay)
    await store.mark_event(ev, DeliveryStatus.PENDING.value, f"try {msg.attempt} failed: {reason}",
                           next_try_at=next_try, attempts=msg.attempt)
    log.warning("event %s: %d of %d recipients still due after try %d; next try at %s: %s", event.id, pending,
                len(recipients), msg.attempt, next_try.isoformat(timespec="seconds"), reason)
    return f"pending (try {msg.attempt + 1} in {delay} s)"


async def _finish(store: Store, settings: Settings, event: Event, labels: list[str], tally: Tally) -> str:
    sent, failed = list(tally.sent), dict(tally.failed)
    if tally.done:
        earlier = await statuses(store, event.id, {label: tally.keys[label] for label in tally.done})
        for label in tally.done:
            row = earlier.get(label) or {}
            if row.get("status") == "sent":
                sent.append(label)
            elif row.get("status") == FOLDED:
                tally.folded.append(label)
            else:
                failed[label] = row.get("error") or "failed earlier"
    status = DeliveryStatus.SENT if not failed else (DeliveryStatus.PARTIAL if sent else DeliveryStatus.FAILED)
    if not sent and not failed and tally.folded:
        status = DeliveryStatus.FOLDED
    errors = "; ".join(f"{label}: {text}" for label, text in failed.items()) or None
    await store.mark_event(event.model_dump(mode="json"), status.value, errors)
    if status == DeliveryStatus.FAILED and event.audience == "monitor" and tally.failed \
            and tally.channel_failure is None:  # a channel-wide refusal is told once an hour, not per alert
        await operator.delivery_failed(store, settings, event, list(failed), "every recipient was refused", 1)
    log.info("event %s (%s, monitor %s): %s, %d/%d recipients", event.id, event.type.value, event.monitor_id,
             status.value, len(sent), len(labels))
    return f"{status.value} ({len(sent)}/{len(labels)} sent)"


async def _confirm(store: Store, event: Event, tally: Tally) -> None:
    """A recipient accepted the event's message, now or in an earlier invocation: record the state fields the event
    asks to confirm (a parts report's hash: `on_change` then stays quiet until the report changes). Best effort:
    when this fails the next run sends the report again, which beats a report never sent."""
    if not event.confirm or not (tally.sent or tally.done):
        return
    try:
        if not tally.sent:
            earlier = await statuses(store, event.id, {label: tally.keys[label] for label in tally.done})
            if not any(row.get("status") == "sent" for row in earlier.values()):
                return
        await store.confirm_state(event.kind, event.monitor_id, dict(event.confirm))
    except Exception:
        log.exception("event %s: delivered, but %s could not be recorded; the next run sends it again", event.id,
                      ", ".join(event.confirm))
