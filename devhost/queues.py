"""Queue triggers of the local host, polling Azurite as the Functions host polls Storage queues.

host.json's visibilityTimeout, batchSize, maxPollingInterval, messageEncoding and maxDequeueCount are honoured. A
received message is held invisible while it waits and runs (a lease of `lease_seconds`, renewed every
`renew_seconds`), so a host that goes away gives it back within the lease; a failure makes it visible again after
visibilityTimeout; a message whose handler keeps failing goes to `<queue>-poison`. Each delivery is logged when it
starts and when it ends (message id and dequeue count), as the host logs executions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from typing import Any

from azure.functions.queue import QueueMessage

from devhost.core import Function, invoke, resolve, seconds

log = logging.getLogger("devhost")


class QueueTriggers:
    """The queue part of LocalHost (a mixin: LocalHost sets these attributes)."""

    host_json: dict[str, Any]
    lease_seconds: float
    renew_seconds: float
    invocations: dict[str, int]

    async def _queue_loop(self, fn: Function) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue.aio import QueueClient

        from shared.storage import expand_dev_storage  # the same Azurite shorthand handling as the app

        opts = self.host_json.get("extensions", {}).get("queues", {})
        max_dequeue = int(opts.get("maxDequeueCount", 5))
        visibility = seconds(opts.get("visibilityTimeout", "00:00:00"))
        batch = int(opts.get("batchSize", 16))
        max_poll = seconds(opts.get("maxPollingInterval", "00:00:02")) or 2.0
        base64_encoded = opts.get("messageEncoding", "base64").lower() == "base64"
        name = resolve(fn.trigger["queueName"])
        conn = expand_dev_storage(os.environ[fn.trigger.get("connection") or "AzureWebJobsStorage"])
        queue = QueueClient.from_connection_string(conn, name)
        poison = QueueClient.from_connection_string(conn, f"{name}-poison")
        for client in (queue, poison):
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
        log.info("queue %s -> %s (lease %g s, renewed every %g s)", name, fn.name, self.lease_seconds,
                 round(self.renew_seconds, 1))
        idle = 0.1
        async with queue, poison:
            while True:
                # received with a short lease, held (renewed) while the batch waits and runs: a host that goes away
                # gives its messages back within the lease; a failure shows one again after visibilityTimeout
                received = [msg async for msg in queue.receive_messages(
                    messages_per_page=batch, max_messages=batch, visibility_timeout=max(1, int(self.lease_seconds)))]
                if received:
                    held = {msg.id: msg for msg in received}
                    lock = asyncio.Lock()
                    renewer = asyncio.create_task(self._hold(queue, held, lock), name=f"{fn.name}-lease")
                    try:  # the batch's messages run at once, as the host runs up to batchSize of them
                        await asyncio.gather(*(self._deliver(fn, queue, poison, msg, base64_encoded, max_dequeue,
                                                             visibility, held, lock) for msg in received))
                    finally:
                        renewer.cancel()
                        await asyncio.gather(renewer, return_exceptions=True)
                idle = 0.1 if received else min(idle * 2, max_poll)
                await asyncio.sleep(0 if received else idle)

    async def _hold(self, queue: Any, held: dict[str, Any], lock: asyncio.Lock) -> None:
        """Renew the lease of every message of the batch not yet finished, every renew_seconds (each renewal gives
        a new pop receipt, kept on the message for the next renewal and for the final delete or update)."""
        while True:
            await asyncio.sleep(self.renew_seconds)
            async with lock:
                for msg in list(held.values()):
                    try:
                        renewed = await queue.update_message(msg.id, msg.pop_receipt,
                                                             visibility_timeout=max(1, int(self.lease_seconds)))
                    except Exception:  # lost (e.g. expired and taken by another receiver): the delivery says so
                        log.warning("could not renew the lease of message %s", msg.id, exc_info=True)
                        continue
                    msg.pop_receipt = renewed.pop_receipt
                    msg.next_visible_on = renewed.next_visible_on

    async def _deliver(self, fn: Function, queue: Any, poison: Any, msg: Any, b64: bool, max_dequeue: int,
                       visibility: float, held: dict[str, Any], lock: asyncio.Lock) -> None:
        body = base64.b64decode(msg.content) if b64 else msg.content.encode()
        message = QueueMessage(id=msg.id, body=body, dequeue_count=msg.dequeue_count,
                               pop_receipt=msg.pop_receipt, insertion_time=msg.inserted_on,
                               expiration_time=msg.expires_on, time_next_visible=msg.next_visible_on)
        self.invocations[fn.name] = self.invocations.get(fn.name, 0) + 1
        log.info("executing %s: message %s of %s (dequeue count %d)", fn.name, msg.id, queue.queue_name,
                 msg.dequeue_count)
        started = time.monotonic()
        try:
            await invoke(fn, message)
        except Exception:
            async with lock:  # no longer renewed: its pop receipt is final
                held.pop(msg.id, None)
            log.warning("queue function %s failed (dequeue %d of %d)", fn.name, msg.dequeue_count, max_dequeue,
                        exc_info=True)
            log.info("executed %s: message %s failed (%d ms)", fn.name, msg.id, (time.monotonic() - started) * 1000)
            try:
                if msg.dequeue_count >= max_dequeue:
                    await poison.send_message(msg.content)
                    await queue.delete_message(msg.id, msg.pop_receipt)
                    log.error("message %s moved to %s-poison", msg.id, queue.queue_name)
                else:
                    await queue.update_message(msg.id, msg.pop_receipt, visibility_timeout=round(visibility))
            except Exception:  # its lease was lost: it is visible again already (the poller goes on)
                log.warning("could not hand back message %s", msg.id, exc_info=True)
            return
        log.info("executed %s: message %s succeeded (%d ms)", fn.name, msg.id, (time.monotonic() - started) * 1000)
        async with lock:
            held.pop(msg.id, None)
        try:
            await queue.delete_message(msg.id, msg.pop_receipt)
        except Exception:  # its lease was lost: it will be delivered again (at least once, as on Azure)
            log.warning("could not delete message %s after its function succeeded", msg.id, exc_info=True)
