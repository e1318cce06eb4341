"""What the operator hears about delivery itself, and what /health shows of it.

Notices are events for the operator (DELIVERY_FAILED, RECIPIENT_REFUSED, CHANNEL_FAILING), published like any other
event (stored, queued, delivered with retries to ADMIN_EMAIL_RECIPIENTS). A notice that itself cannot be delivered
does not make another one: that second-level failure is logged at CRITICAL and counted in the `_delivery` meta row,
which /health shows with the channel-wide problem (if any) and the poison queues' depth.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.events import NOTICE_TYPES, DeliveryStatus, Event, EventType
from shared.text import clip

if TYPE_CHECKING:
    from shared.notify.channel import NotifyError
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("shared.mailer")

DELIVERY_META = "_delivery"  # meta row: lost notices, the channel-wide problem, when each was last told
CHANNEL_NOTICE_EVERY = timedelta(hours=1)


def _now() -> datetime:
    return datetime.now(UTC)


async def publish_notice(store: Store, told: Event) -> None:
    ev = told.model_dump(mode="json")
    await store.save_event(ev, delivery=DeliveryStatus.QUEUED.value)
    await store.send_event_message({"event": ev})


def notice(type_: EventType, about: Event | None, ref: str, message: str, **details: Any) -> Event:
    """An operator notice. Its id derives from `ref` (what it is about), so telling the same thing twice — a
    redelivered message, a second poison copy — is one event and one e-mail."""
    return Event(id=hashlib.sha256(f"{type_.value}:{ref}".encode()).hexdigest()[:32], type=type_,
                 kind=about.kind if about else "delivery", monitor_id=about.monitor_id if about else "",
                 monitor_name=about.monitor_name if about else "(delivery)", severity="critical", message=message,
                 details={k: v for k, v in details.items() if v is not None})


async def delivery_failed(store: Store, settings: Settings, event: Event, missed: list[str], reason: str,
                          tries: int) -> None:
    """An event did not reach (some of) its recipients for good: tell the operator — unless it was for the
    operator already, then it is a second-level failure."""
    if event.type in NOTICE_TYPES or event.audience == "operator":
        await record_lost(store, event, reason)
        return
    told = notice(EventType.DELIVERY_FAILED, event, event.id,
                     f"{event.type.value} of {event.monitor_name} did not reach {', '.join(missed) or 'anyone'}: "
                     f"{reason}", event_id=event.id, event_type=event.type.value, event_message=event.message,
                     occurred_at=event.occurred_at.isoformat(), not_notified=", ".join(missed) or None,
                     last_error=clip(reason, 1000), tries=tries,
                     max_age_hours=settings.delivery_max_age_hours)
    await _publish_safely(store, told, event)


async def report_refusals(store: Store, event: Event, channel: str, failed: dict[str, str],
                          channel_failure: NotifyError | None) -> None:
    """Permanent refusals this round: one RECIPIENT_REFUSED per refused address (which monitor, which address,
    the server's words); a channel-wide one as CHANNEL_FAILING, at most once an hour."""
    if event.type in NOTICE_TYPES:
        if failed:
            await record_lost(store, event, "; ".join(f"{r}: {t}" for r, t in failed.items()))
        return
    if channel_failure is not None and not channel_failure.transient:
        await _channel_failing(store, event, channel, str(channel_failure))
        return
    for rcpt, words in failed.items():
        told = notice(EventType.RECIPIENT_REFUSED, event, f"{event.id}:{rcpt}",
                         f"{channel} to {rcpt} was refused for good ({event.monitor_name}): {words}",
                         recipient=rcpt, channel=channel, server_said=clip(words, 1000), event_id=event.id,
                         event_type=event.type.value)
        await _publish_safely(store, told, event)


async def _channel_failing(store: Store, event: Event, channel: str, words: str) -> None:
    meta = await store.get_kind_meta(DELIVERY_META)
    now = _now()
    key = f"told_{channel}_at"
    await store.set_kind_meta(DELIVERY_META, **{f"failing_{channel}": clip(words, 1000),
                                                f"failing_{channel}_since": meta.get(f"failing_{channel}_since")
                                                or now})
    last = meta.get(key)
    if isinstance(last, datetime) and now - last < CHANNEL_NOTICE_EVERY:
        log.error("%s refuses every message (%s); the operator was told at %s", channel, words, last.isoformat())
        return
    await store.set_kind_meta(DELIVERY_META, **{key: now})
    told = notice(EventType.CHANNEL_FAILING, event, f"{channel}:{now.isoformat()}",
                  f"{channel} refuses every message: {words}", channel=channel,
                  server_said=clip(words, 1000), event_id=event.id, event_type=event.type.value,
                  since=(meta.get(f"failing_{channel}_since") or now).isoformat())
    await _publish_safely(store, told, event)


async def channel_works(store: Store, channel: str) -> None:
    """A send went through: a channel-wide problem recorded for /health is over."""
    meta = await store.get_kind_meta(DELIVERY_META)
    if meta.get(f"failing_{channel}"):
        await store.set_kind_meta(DELIVERY_META, **{f"failing_{channel}": "", f"failing_{channel}_since": ""})


async def record_lost(store: Store, event: Event | None, reason: str) -> None:
    """A notice for the operator could not be delivered either: log it loudly and count it for /health."""
    what = f"event {event.id} ({event.type.value}, {event.monitor_name})" if event else "a queue message"
    log.critical("LOST: %s could not be delivered to the operator: %s", what, reason)
    try:
        meta = await store.get_kind_meta(DELIVERY_META)
        await store.set_kind_meta(DELIVERY_META, lost=int(meta.get("lost") or 0) + 1, last_lost_at=_now(),
                                  last_lost=clip(f"{what}: {reason}", 1000))
    except Exception:
        log.critical("LOST: could not record the loss in storage either", exc_info=True)


async def _publish_safely(store: Store, told: Event, about: Event) -> None:
    try:
        await publish_notice(store, told)
    except Exception as error:  # noqa: BLE001 - the notice itself is lost
        await record_lost(store, about, f"the {told.type.value} notice could not be queued: {error}")


async def delivery_health(store: Store) -> dict[str, Any]:
    """/health's view of delivery: channel-wide problems, notices lost, messages in the poison queues."""
    from shared.storage import POISON_QUEUE

    meta = await store.get_kind_meta(DELIVERY_META)
    failing = {k.removeprefix("failing_"): {"error": v, "since": _iso(meta.get(f"{k}_since")) or None}
               for k, v in meta.items() if k.startswith("failing_") and not k.endswith("_since") and v}
    poison = {}
    for name in (POISON_QUEUE, f"{POISON_QUEUE}-poison"):
        try:
            poison[name] = await store.queue_depth(name)
        except LookupError:
            poison[name] = 0
    lost = int(meta.get("lost") or 0)
    ok = not failing and not lost and not any(poison.values())
    return {"status": "ok" if ok else "degraded", "channels_failing": failing, "notices_lost": lost,
            "last_lost_at": _iso(meta.get("last_lost_at")), "last_lost": meta.get("last_lost") or None,
            "poison_queues": poison}


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
