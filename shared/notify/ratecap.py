"""The per channel-recipient rate cap: at most ALERT_RATE_LIMIT_PER_HOUR messages an hour to one address or
channel, then one summary at the end of the hour instead of the rest.

A flapping site, or a storm of changes nobody grouped, must not send a phone hundreds of SMS an hour (Uptime Kuma
users report 28,000 from one outage). Per channel-recipient — a delivery target's `key` ("email:{address}",
"c.{channel id}:{address or -}") — and per clock hour (UTC), a row of the `alerting` table (pk "rate") counts the
messages let through; every target's message counts, operator notices too.

- `admit`: under the cap, the message goes (True). Beyond it, it is *folded* (False): the row counts it by change
  (down / up / alert / recovered / other) and keeps the first SHOWN_NAMES monitor names; the pipeline records the
  delivery as "folded". The first fold of the hour schedules the "summary" task at the end of the hour.
- `flush` (the "summary" task) sends ONE message to that target: "[SUMMARY] 14 more changes in the last hour",
  "14 more changes: 9 down, 5 up — Shop, API (+3 more)". The summary is written to the row (its outbox) before it
  is sent, and the row records that it went out: a redelivered task sends nothing more. The summary itself is not
  counted.
- Every change of a row is an ETag-guarded read-modify-write; the ids of the events the row has seen are kept
  (the last SEEN_KEEP of each decision), so an event tried again after a crash gets the same answer and is not
  counted twice.
- ALERT_RATE_LIMIT_PER_HOUR = 0: no cap (no rows are written).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.events import EventType
from shared.storage import keys
from shared.storage.base import Conflict, etag_of
from shared.text import clip

if TYPE_CHECKING:
    from shared.events import Event
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("shared.mailer")

PK = "rate"
TRIES = 60
SHOWN_NAMES = 20  # monitor names a summary lists
SEEN_KEEP = 200  # event ids remembered per decision (admitted / folded)
DISTINCT_KEEP = 2000  # monitors told apart per hour for "(+N more)"
GRACE = timedelta(seconds=5)  # the summary runs this long after the hour ends

CHANGES = ("down", "up", "alert", "recovered", "other")
_CHANGE_OF: dict[EventType, str] = {
    EventType.MONITOR_DOWN: "down",
    EventType.MONITOR_UP: "up",
    **{t: "alert" for t in (EventType.MONITOR_DEGRADED, EventType.CERTIFICATE_EXPIRING, EventType.MONITOR_ERROR,
                            EventType.DELIVERY_FAILED, EventType.RECIPIENT_REFUSED, EventType.CHANNEL_FAILING,
                            EventType.THRESHOLD_BREACH_LOW, EventType.THRESHOLD_BREACH_HIGH,
                            EventType.STOCKOUT_FORECAST, EventType.RESOURCE_WARNING, EventType.RESOURCE_ALERT,
                            EventType.ALERT_RULE_FIRING)},
    **{t: "recovered" for t in (EventType.MONITOR_RECOVERED_FROM_DEGRADED, EventType.MONITOR_ERROR_CLEARED,
                                EventType.THRESHOLD_CLEARED, EventType.RESOURCE_RECOVERED,
                                EventType.ALERT_RULE_RESOLVED)},
}


def change_of(event: Event) -> str:
    """Which count of the summary an event adds to."""
    return _CHANGE_OF.get(event.type, "other")


def _now() -> datetime:
    return datetime.now(UTC)


def row_key(key: str, hour: datetime) -> str:
    return keys.alerting_row(f"{key}\n{hour.isoformat()}")


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _list(row: dict[str, Any], field: str) -> list[Any]:
    try:
        value = json.loads(row.get(field) or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _counts(row: dict[str, Any]) -> dict[str, int]:
    try:
        value = json.loads(row.get("counts") or "{}")
    except ValueError:
        value = {}
    return {c: int(value.get(c) or 0) for c in CHANGES} if isinstance(value, dict) else dict.fromkeys(CHANGES, 0)


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))  # jittered, growing: contenders spread out


# ------------------------------------------------------------------------------------------------- admit


async def admit(store: Store, settings: Settings, key: str, label: str, event: Event, *,
                now: datetime | None = None) -> bool:
    """Whether this event may go to this channel-recipient now (False: it was folded into the hour's summary).
    `now`: the clock (for tests; default the current time)."""
    cap = settings.alert_rate_limit_per_hour
    if cap <= 0:
        return True
    hour = keys.hour_floor(now or _now())
    rk = row_key(key, hour)
    ident = _short(event.id)
    for attempt in range(TRIES):
        row = await store.get_row(PK, rk)
        etag = etag_of(row) if row is not None else None
        entity: dict[str, Any] = dict(row) if row is not None else {
            "PartitionKey": PK, "RowKey": rk, "key": key, "hour": hour, "sent": 0, "folded": 0, "told": 0,
            "scheduled": False}
        entity["label"] = clip(label, 500) or key
        admitted, folded = _list(entity, "admitted"), _list(entity, "folded_ids")
        if ident in admitted:
            return True  # tried again after a crash: the same answer, counted once
        if ident in folded:
            if not entity.get("scheduled"):
                await _schedule(store, entity, hour, rk)
            return False
        if int(entity.get("sent") or 0) < cap:
            entity["sent"] = int(entity.get("sent") or 0) + 1
            entity["admitted"] = json.dumps([*admitted, ident][-SEEN_KEEP:])
            decision = True
        else:
            _fold(entity, event, folded, ident)
            decision = False
        try:
            await store.put_row(entity, etag=etag, create=etag is None)
        except Conflict:
            await _backoff(attempt)
            continue
        if not decision:
            log.info("event %s to %s folded: %d messages this hour already (ALERT_RATE_LIMIT_PER_HOUR=%d)",
                     event.id, entity["label"], cap, cap)
            if not entity.get("scheduled"):
                await _schedule(store, entity, hour, rk)
        return decision
    raise Conflict(f"rate row {rk}: too many concurrent changes")


def _fold(entity: dict[str, Any], event: Event, folded: list[Any], ident: str) -> None:
    """Count a folded event into the row: by change, its monitor's name among the first SHOWN_NAMES."""
    counts = _counts(entity)
    counts[change_of(event)] += 1
    names = _list(entity, "names")
    distinct = _list(entity, "distinct")
    who = _short(event.monitor_id or event.monitor_name)
    if who not in distinct:
        if len(distinct) < DISTINCT_KEEP:
            distinct.append(who)
        else:
            entity["untracked"] = int(entity.get("untracked") or 0) + 1
        name = clip(event.monitor_name, 120) or event.monitor_id
        if len(names) < SHOWN_NAMES and name not in names:
            names.append(name)
    entity.update(folded=int(entity.get("folded") or 0) + 1, counts=json.dumps(counts),
                  names=json.dumps(names, ensure_ascii=False), distinct=json.dumps(distinct),
                  folded_ids=json.dumps([*folded, ident][-SEEN_KEEP:]))


async def _schedule(store: Store, entity: dict[str, Any], hour: datetime, rk: str) -> None:
    """The summary task at the end of the hour; the row records that it is scheduled (best effort: a failure
    to record it schedules it again with the next fold, and the flush is idempotent)."""
    from shared.notify import tasks

    delay = int((hour + timedelta(hours=1) + GRACE - _now()).total_seconds())
    await tasks.schedule(store, "summary", max(1, delay), row=rk, key=entity["key"])
    for attempt in range(TRIES):
        row = await store.get_row(PK, rk)
        if row is None or row.get("scheduled"):
            return
        try:
            await store.put_row(dict(row, scheduled=True), etag=etag_of(row))
            return
        except Conflict:
            await _backoff(attempt)


# ------------------------------------------------------------------------------------------------- flush


def summary_text(count: int, counts: dict[str, int], names: list[str], monitors: int) -> tuple[str, str]:
    """(subject, one line): "[SUMMARY] 14 more changes in the last hour", "14 more changes: 9 down, 5 up — Shop,
    API (+3 more)"."""
    noun = "change" if count == 1 else "changes"
    parts = []
    for change in CHANGES:
        n = counts.get(change, 0)
        if n:
            parts.append(f"{n} {change}" + ("s" if change == "alert" and n != 1 else ""))
    line = f"{count} more {noun}: {', '.join(parts)}"
    if names:
        more = monitors - len(names)
        line += f" — {', '.join(names)}" + (f" (+{more} more)" if more > 0 else "")
    return f"[SUMMARY] {count} more {noun} in the last hour", line


def _summary(entity: dict[str, Any], cap: int) -> dict[str, Any]:
    """What the summary says about the changes folded since the last summary."""
    count = int(entity.get("folded") or 0) - int(entity.get("told") or 0)
    counts, names = _counts(entity), [str(n) for n in _list(entity, "names")]
    monitors = len(_list(entity, "distinct")) + int(entity.get("untracked") or 0)
    subject, line = summary_text(count, counts, names, monitors)
    hour = entity.get("hour")
    start = hour if isinstance(hour, datetime) else _now()
    span = f"{start:%Y-%m-%d %H:%M}–{start + timedelta(hours=1):%H:%M} UTC"
    text = (f"{line}\n\n{entity.get('label') or entity.get('key')} reached ALERT_RATE_LIMIT_PER_HOUR ({cap} "
            f"messages) between {span}; these changes were not sent one by one. GET /events shows each of them "
            f"(delivery \"folded\").\n\n-- \nSent by the monitoring service.\n")
    seq = int(entity.get("summaries") or 0) + 1
    return {"subject": subject, "text": text, "short": line, "count": count, "counts": counts, "monitors": names,
            "hour": start.isoformat(), "seq": seq}


async def flush(store: Store, settings: Settings, task: dict[str, Any]) -> str:
    """The "summary" task: one message to the target with what was folded since its last summary; nothing when
    nothing was (a redelivered task, a summary already sent)."""
    rk = str(task.get("row") or "")
    for attempt in range(TRIES):
        row = await store.get_row(PK, rk) if rk else None
        if row is None:
            return "nothing to summarise"
        entity = dict(row)
        if entity.get("outbox"):  # written, maybe not sent (an earlier run died): send it now
            return await _send(store, settings, rk, json.loads(str(entity["outbox"])), str(entity["key"]))
        if int(entity.get("folded") or 0) <= int(entity.get("told") or 0):
            return "nothing to summarise"
        summary = _summary(entity, settings.alert_rate_limit_per_hour)
        entity.update(told=int(entity.get("folded") or 0), summaries=summary["seq"], counts="{}", names="[]",
                      distinct="[]", untracked=0, scheduled=False, outbox=json.dumps(summary, ensure_ascii=False))
        try:
            await store.put_row(entity, etag=etag_of(row))
        except Conflict:
            await _backoff(attempt)
            continue
        return await _send(store, settings, rk, summary, str(entity["key"]))
    raise Conflict(f"rate row {rk}: too many concurrent changes")


async def _send(store: Store, settings: Settings, rk: str, summary: dict[str, Any], key: str) -> str:
    """Send the summary in the outbox, then record that it went out (empty the outbox). A permanent refusal is
    logged and the summary dropped; a transient failure raises, so the queue tries the task again."""
    from shared.notify.channel import Notification, PermanentError
    from shared.notify.routing import target_by_key
    from shared.notify.send import send_message

    target = await target_by_key(key, settings, store)
    status = "target gone"
    if target is not None:
        body = {"version": 1, "type": "SUMMARY", "subject": summary["subject"], "text": summary["short"],
                "count": summary["count"], "counts": summary["counts"], "monitors": summary["monitors"],
                "hour": summary["hour"]}
        note = Notification(target.recipient, summary["subject"], summary["text"], None,
                            ref=f"summary.{rk}.{summary['seq']}", short=summary["short"], body=body)
        try:
            await send_message(target, note)
            status = f"summary of {summary['count']} sent to {target.label}"
        except PermanentError as error:
            log.error("the rate-cap summary to %s was refused for good: %s", target.label, error)
            status = f"summary refused: {error}"
    else:
        log.warning("the rate-cap summary of %s is not sent: the channel or recipient is gone", key)
    for attempt in range(TRIES):
        row = await store.get_row(PK, rk)
        if row is None or not row.get("outbox"):
            break
        try:
            await store.put_row(dict(row, outbox="", summarised_at=_now()), etag=etag_of(row))
            break
        except Conflict:
            await _backoff(attempt)
    return status
