"""Delayed work on the events queue besides events: a message `{"task": name, …}` is run by the task's handler
(module:function, imported on first use), so a group flush, a rate-cap summary or an escalation step waits in the
queue (its visibility delay) instead of in a running function. A handler returns a short status and may put its
message back (`requeue`) when it is early."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("shared.mailer")

TASKS = {
    "group": "shared.notify.storm:flush",  # one operator notice for checker errors with one cause
    "summary": "shared.notify.ratecap:flush",  # the summary of changes beyond a channel-recipient's rate cap
    "escalate": "shared.notify.escalation:step",  # the next escalation step of an unacknowledged problem
}


def task_message(name: str, **fields: Any) -> dict[str, Any]:
    if name not in TASKS:
        raise KeyError(name)
    return {"task": name, **fields}


async def schedule(store: Store, name: str, delay_seconds: int, **fields: Any) -> None:
    """Queue a task to run in `delay_seconds` (the queue's visibility delay; at most 7 days)."""
    await store.send_event_message(task_message(name, **fields), delay_seconds=max(1, min(int(delay_seconds),
                                                                                          7 * 86400 - 60)))


async def run_task(data: dict[str, Any], settings: Settings, store: Store) -> str:
    target = TASKS.get(str(data.get("task")))
    if target is None:
        from shared.notify.poison import unreadable

        await unreadable(str(data)[:2000], f"unknown task {data.get('task')!r}", store)
        return "invalid"
    module, _, func = target.partition(":")
    handler = getattr(importlib.import_module(module), func)
    status: str = await handler(store, settings, data)
    return status
