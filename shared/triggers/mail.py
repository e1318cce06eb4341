"""Queue triggers of the delivery path: thin adapters around shared.notify (which holds the logic and the tests).

- send_event_email: one message per event on `monitor-events` (written by shared/engine/outbox.py `publish`).
  Raising makes the host redeliver it (host.json: maxDequeueCount 5, visibilityTimeout 30 s).
- handle_poison_events: the host moves a message to `monitor-events-poison` after maxDequeueCount failures;
  the operator is told once.
"""

from __future__ import annotations

import logging

import azure.functions as func

log = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("send_event_email")
@bp.queue_trigger(arg_name="msg", queue_name="monitor-events", connection="AzureWebJobsStorage")
async def send_event_email(msg: func.QueueMessage) -> None:
    from shared.notify import deliver
    from shared.settings import get_settings
    from shared.storage import Store

    settings = get_settings()
    async with Store.open(settings) as store:
        status = await deliver(msg.get_body().decode("utf-8", "replace"), msg.dequeue_count or 1, settings, store)
    log.info("queue message %s (dequeue count %s): %s", msg.id, msg.dequeue_count, status)


@bp.function_name("handle_poison_events")
@bp.queue_trigger(arg_name="msg", queue_name="monitor-events-poison", connection="AzureWebJobsStorage")
async def handle_poison_events(msg: func.QueueMessage) -> None:
    from shared.notify import handle_poison
    from shared.settings import get_settings
    from shared.storage import Store

    settings = get_settings()
    async with Store.open(settings) as store:
        await handle_poison(msg.get_body().decode("utf-8", "replace"), settings, store)
    log.info("poison message %s handled", msg.id)
