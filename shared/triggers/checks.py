"""The queue worker of fanned-out ticks (shared/engine/fanout.py): one message = one batch of due monitors.

Raising makes the host deliver the message again (host.json: visibilityTimeout, maxDequeueCount); a batch is safe
to check twice (results are keyed by slot, a slot is applied to a state once). A message that is not a batch is
logged and dropped: retrying cannot make it readable.
"""

from __future__ import annotations

import logging

import azure.functions as func

log = logging.getLogger("monitor.checks")

bp = func.Blueprint()


@bp.function_name("check_batch")
@bp.queue_trigger(arg_name="msg", queue_name="%CHECKS_QUEUE%", connection="AzureWebJobsStorage")
async def check_batch(msg: func.QueueMessage) -> None:
    from shared.engine import fanout
    from shared.settings import get_settings
    from shared.storage import Store

    settings = get_settings()
    async with Store.open(settings) as store:
        try:
            summary = await fanout.run_batch(store, settings, msg.get_body().decode("utf-8", "replace"))
        except fanout.BadBatch as error:
            log.error("checks message %s dropped: %s", msg.id, error)
            return
    log.info("checks message %s (dequeue count %s): %d checked of %d", msg.id, msg.dequeue_count, summary.checked,
             summary.monitors)
