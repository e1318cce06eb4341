"""When delivery itself breaks: the host moved a message to `monitor-events-poison` (the delivery function raised
maxDequeueCount times — our storage failing, a bug), or a message cannot be read at all. The operator is told once
(a DELIVERY_FAILED notice through the normal delivery path), the event is marked failed, and the audience's
delivery records are closed so a stray redelivery cannot reach them later.

The poison handler never raises: a message it raised on would land in `monitor-events-poison-poison`, which nothing
reads. What it cannot hand on is logged at CRITICAL and counted for /health (shared/notify/operator.py).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from shared.events import DeliveryStatus, EventType
from shared.notify import operator
from shared.notify.pipeline import QueueMessage, statuses
from shared.notify.routing import targets_for
from shared.notify.send import lease_seconds
from shared.settings import Settings
from shared.storage import Claim

if TYPE_CHECKING:
    from shared.events import Event
    from shared.storage import Store

log = logging.getLogger("shared.mailer")


def body_ref(body: str) -> str:
    return "msg-" + hashlib.sha256(body.encode("utf-8", "replace")).hexdigest()[:32]


async def handle_poison(body: str, settings: Settings, store: Store) -> None:
    """The host gave up on a message: tell the operator once, mark the event failed. Never raises."""
    try:
        try:
            msg = QueueMessage.parse(body)
        except ValueError as error:
            await unreadable(body, str(error), store)
            return
        await _abandon(msg.event, settings, store, "the delivery function failed on it repeatedly (see its logs); "
                                                   "moved to the poison queue")
    except Exception as error:  # noqa: BLE001 - raising would move it to a queue nothing reads
        await operator.record_lost(store, None, f"poison message {body_ref(body)} could not be handled: {error}")


async def unreadable(body: str, reason: str, store: Store) -> None:
    """A queue message that is not an event: the operator hears about it, nobody else."""
    log.error("queue message %s is unusable (%s); telling the operator", body_ref(body), reason)
    told = operator.notice(EventType.DELIVERY_FAILED, None, body_ref(body),
                           f"A queue message could not be read: {reason}", message_ref=body_ref(body), reason=reason)
    try:
        await operator.publish_notice(store, told)
    except Exception as error:  # noqa: BLE001 - nothing else to tell
        await operator.record_lost(store, None, f"unreadable message {body_ref(body)} ({reason}): {error}")


async def _abandon(event: Event, settings: Settings, store: Store, reason: str) -> None:
    targets = await targets_for(event, settings, store) or []
    keys = {t.label: t.key for t in targets}
    recipients = list(keys)
    lease = lease_seconds(settings)
    for key in keys.values():  # closed, so a stray redelivery of the original message cannot reach them now
        claim = await store.claim_delivery(event.id, key, lease)
        if claim == Claim.CLAIMED:
            await store.finish_delivery(event.id, key, "failed", f"abandoned: {reason}")
        elif claim == Claim.BUSY:
            log.warning("event %s: a send to one recipient is in progress; not closing its record", event.id)
    records = await statuses(store, event.id, keys)
    served = [r for r in recipients if records.get(r, {}).get("status") == "sent"]
    missed = [r for r in recipients if r not in served]
    await store.mark_event(event.model_dump(mode="json"),
                           DeliveryStatus.PARTIAL.value if served else DeliveryStatus.FAILED.value, reason)
    log.error("event %s (%s, monitor %s) abandoned: %s", event.id, event.type.value, event.monitor_id, reason)
    await operator.delivery_failed(store, settings, event, missed, reason, 0)
