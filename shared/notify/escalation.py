"""Escalation steps: a problem nobody acknowledged goes to further channels.

A stored channel's `escalation` is a list of steps {after_minutes, channels}. When a problem event (ack.PROBLEM_TYPES,
not a reminder) reached such a channel, `after_sent` queues the "escalate" task for step 0 at the event's time +
steps[0].after_minutes (shared/notify/tasks.py: the queue's visibility delay). `step` runs it:

- early (a queue delay is only approximate, at most 7 days) → it puts itself back for the time left;
- the problem is over (the state's `since` is newer than the event, or the status is no problem any more, or the
  monitor is gone) → "resolved"; acknowledged → "acknowledged": nothing is sent, no further step is queued;
- else the event goes to the step's channels (routing.targets_of_channels → send.send_event with key_prefix
  f"esc{n}.", so a redelivered task sends nothing twice) with details["escalation"] = {"step": n + 1,
  "after_minutes": m, "channel": <the channel escalating>} (the renderer marks the subject "[ESCALATED]"), and the
  next step is queued, counted from the event. Targets that failed transiently are tried again in a minute.

Every step is queued at most once per (event, channel, step): a create-only row in the `alerting` table (pk "esc")
guards it, so a redelivered event or task does not multiply the steps that follow.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.events import Event
from shared.notify import tasks
from shared.notify.ack import PROBLEM_TYPES, standing

if TYPE_CHECKING:
    from shared.notify.definitions import ChannelBase
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("shared.mailer")

PK = "esc"
RETRY_SECONDS = 60  # a step whose sends failed transiently runs again this much later (only the unsent targets)


def _event_json(event: Event) -> dict[str, Any]:
    return event.model_dump(mode="json")


def _seconds_until(when: datetime, now: datetime) -> int:
    return max(1, int((when - now).total_seconds() + 0.999))


def escalates(event: Event) -> bool:
    """A first announcement of a problem: reminders and escalated copies start nothing."""
    return event.type in PROBLEM_TYPES and not event.details.get("reminder") and not event.details.get("escalation")


async def _queue_step(store: Store, event: Event, channel: str, n: int, after_minutes: int, now: datetime) -> bool:
    """Queue step n of this event × channel once (False: it was queued before)."""
    from shared.storage import Conflict, keys

    row_key, due = keys.alerting_row(f"{event.id}|{channel}|{n}"), event.occurred_at + timedelta(minutes=after_minutes)
    guard = {"PartitionKey": PK, "RowKey": row_key, "event_id": event.id, "channel": channel, "step": n,
             "due_at": due}
    try:
        await store.put_row(guard, create=True)
    except Conflict:
        return False
    try:
        await tasks.schedule(store, "escalate", _seconds_until(due, now), event=_event_json(event),
                             channel=channel, step=n)
    except BaseException:
        await store.delete_row(PK, row_key)  # let a redelivery queue it
        raise
    return True


async def after_sent(store: Store, settings: Settings, event: Event,  # noqa: ARG001 - the pipeline's hook
                     channels: list[ChannelBase]) -> None:
    """A problem event reached these stored channels: queue the first escalation step of each that has steps."""
    if not escalates(event):
        return
    now = datetime.now(UTC)
    for defn in channels:
        if defn.escalation and await _queue_step(store, event, defn.name, 0, defn.escalation[0].after_minutes, now):
            log.info("event %s: escalation step 1 of channel %s queued (+%d min)", event.id, defn.name,
                         defn.escalation[0].after_minutes)


async def _channel(store: Store, name: str) -> ChannelBase | None:
    from shared.notify.routing import stored_channels

    return next((c for c in await stored_channels(store) if c.name == name), None)


async def step(store: Store, settings: Settings, task: dict[str, Any], now: datetime | None = None) -> str:
    """Run one escalation step (the "escalate" task: {event, channel, step}); returns a short status."""
    from shared.notify.ack import ack_url
    from shared.notify.routing import targets_of_channels
    from shared.notify.send import send_event

    now = now or datetime.now(UTC)
    again = {k: v for k, v in task.items() if k != "task"}
    try:
        event, name, n = Event.model_validate(task["event"]), str(task["channel"]), int(task["step"])
    except (KeyError, TypeError, ValueError, ValidationError):
        log.error("escalation task without a readable event, channel and step; dropped")
        return "invalid"
    defn = await _channel(store, name)
    if defn is None or not defn.enabled or n >= len(defn.escalation):
        return "no such step"  # the channel was deleted, disabled, or its steps were shortened
    todo = defn.escalation[n]
    due = event.occurred_at + timedelta(minutes=todo.after_minutes)
    if now < due:
        wait = _seconds_until(due, now)
        await tasks.schedule(store, "escalate", wait, **again)
        return f"early (again in {wait} s)"
    outcome = await standing(store, event)
    if outcome != "ongoing":
        log.info("event %s: escalation of channel %s stops at step %d: %s", event.id, name, n + 1, outcome)
        return outcome
    copy = event.model_copy(update={"details": {**event.details, "escalation": {
        "step": n + 1, "after_minutes": todo.after_minutes, "channel": name}}})
    targets = await targets_of_channels(list(todo.channels), settings, store)
    tally = await send_event(store, settings, copy, targets, key_prefix=f"esc{n}.",
                             extra={"ack_url": await ack_url(store, settings, event)})
    if tally.retry:
        await tasks.schedule(store, "escalate", RETRY_SECONDS, **again)
    if n + 1 < len(defn.escalation):
        await _queue_step(store, event, name, n + 1, defn.escalation[n + 1].after_minutes, now)
    log.info("event %s: escalation step %d of channel %s: %d sent, %d failed, %d to retry", event.id, n + 1, name,
             len(tally.sent), len(tally.failed), len(tally.retry))
    return f"escalated (step {n + 1}: {len(tally.sent)} sent, {len(tally.failed)} failed, {len(tally.retry)} retry)"
