"""When delivery gives up (the host moved a message to the poison queue, or a message cannot be read): tell the
operator once, mark the event failed and close the audience's delivery records."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from shared.events import Event
from shared.notify.channel import Channel, Notification, PermanentError, TransientError
from shared.notify.pipeline import (
    DeliveryDeferred,
    dedupe,
    email_channel,
    lease_seconds,
    parse,
    recipients_for,
    send_with_retry,
    statuses,
)
from shared.notify.render import MAX_DEQUEUE_COUNT, render_poison
from shared.settings import Settings
from shared.storage import Claim

if TYPE_CHECKING:
    from shared.storage import Store

log = logging.getLogger("shared.mailer")



def body_ref(body: str) -> str:
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
    await give_up(body, event, settings, store, reason=reason, channel=channel)


async def give_up(body: str, event: Event | None, settings: Settings, store: Store, reason: str,
                   channel: Channel | None) -> None:
    ref = event.id if event is not None else body_ref(body)
    prefix = f"{channel.name if channel is not None else 'email'}:"
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
            if claim == Claim.CLAIMED:
                await store.finish_delivery(event.id, key, "failed", f"abandoned: {reason}")
            elif claim == Claim.BUSY:
                log.warning("event %s: a send to one recipient is in progress; not closing its record", event.id)
        records = await statuses(store, event.id, prefix, audience)
        served = [r for r in audience if records.get(r, {}).get("status") == "sent"]
        unserved = [r for r in audience if r not in served]
        await store.mark_event(event.model_dump(mode="json"), "partial" if served else "failed",
                               f"{reason}" + (f"; last error: {last_error}" if last_error else ""))
        audience = unserved

    admins = dedupe(settings.admin_recipients)
    what = f"event {ref}" + (f" ({event.type.value}, monitor {event.monitor_id})" if event is not None else "")
    if not settings.email_enabled or not admins:
        log.error("%s could not be delivered (%s); no operator e-mail: %s", what, reason,
                  "e-mail is disabled" if not settings.email_enabled else "ADMIN_EMAIL_RECIPIENTS is empty")
        return
    log.error("%s could not be delivered (%s); e-mailing the operator", what, reason)

    channel = channel or email_channel(settings)
    rendered = render_poison(event, settings, reason, ref, audience, last_error)
    lease = lease_seconds(settings)
    retry: list[str] = []
    for admin in admins:
        key = f"admin-poison:{admin}"
        if await store.claim_delivery(ref, key, lease) != Claim.CLAIMED:
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
