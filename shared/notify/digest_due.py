"""When a channel's digest is due, and sending it.

A channel with `digest` "daily" or "weekly" has one scheduled time per period: `digest_at` wall-clock time in
`digest_timezone` (every day, or on `digest_weekday`), so 08:00 Europe/Berlin stays 08:00 across a DST change.
The period is named by that local date ("2024-03-31"). The hourly timer (shared/triggers/digests.py) sends a
channel's digest when the latest scheduled time is past and the channel's watermark (the `alerting` table,
PartitionKey "digest", RowKey the channel id: the last period sent and until when it counted) names an older
period. A missed hour (the app was down) sends it late, once; a period is never sent twice: each target is claimed
like an event's delivery (`claim_delivery("digest.{channel id}.{period}", target key)`), and the watermark moves
only once every target is done (sent, or refused for good). A transient failure leaves the rest for the next hour.

The digest covers the time since the previous one (the watermark's `until`), the first one the last day or week.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from shared.notify.definitions import WEEKDAYS
from shared.notify.digest import DAY, WEEK, build_digest
from shared.notify.digest_render import render_digest, webhook_body

if TYPE_CHECKING:
    from shared.notify.definitions import ChannelBase
    from shared.notify.routing import Target
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("monitor.digest")

WATERMARK_PK = "digest"
MAX_PERIOD = timedelta(days=35)  # a digest after a long silence covers at most this much


@dataclass(frozen=True)
class Slot:
    """One scheduled digest: its period's name (the local date) and when it was due (UTC)."""

    period: str
    at: datetime
    day: date


def latest_slot(defn: ChannelBase, now: datetime) -> Slot | None:
    """The latest scheduled time of a channel's digest at or before `now`; None when it has no digest."""
    if defn.digest not in ("daily", "weekly"):
        return None
    zone = ZoneInfo(defn.digest_timezone)
    day = now.astimezone(zone).date()
    for _ in range(9):
        if defn.digest == "daily" or WEEKDAYS[day.weekday()] == defn.digest_weekday:
            # wall-clock time; a time that does not exist that day (spring forward) falls an hour later
            at = datetime.combine(day, defn.digest_time(), tzinfo=zone).astimezone(UTC)
            if at <= now:
                return Slot(day.isoformat(), at, day)
        day -= timedelta(days=1)
    return None  # pragma: no cover - a week back always has the weekday


def due(defn: ChannelBase, watermark: dict[str, Any] | None, now: datetime) -> Slot | None:
    """The slot to send now, or None (no digest, not yet, or this period was sent)."""
    if not defn.enabled:
        return None
    slot = latest_slot(defn, now)
    if slot is None or (watermark and str(watermark.get("period") or "") >= slot.period):
        return None
    return slot


@dataclass
class Outcome:
    """What one digest's sending did, per target label."""

    sent: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # sent (or refused) by an earlier run of this period
    failed: dict[str, str] = field(default_factory=dict)  # refused for good: not tried again
    retry: dict[str, str] = field(default_factory=dict)  # failed for now, or another run is sending it

    @property
    def complete(self) -> bool:
        return not self.retry


def _ref(defn: ChannelBase, period: str | None) -> str:
    return f"digest.{defn.id}.{period or 'now'}"


async def send_digest(store: Store, settings: Settings, defn: ChannelBase, since: datetime, until: datetime,
                      period: str | None = None, day: date | None = None) -> Outcome:
    """Build, render and send one digest to the channel's targets. With a `period`, each target is claimed
    (idempotent per channel × period × target); without (the CLI's --send), it is simply sent."""
    from shared.notify.channel import Notification, NotifyError, PermanentError
    from shared.notify.routing import targets_of
    from shared.notify.send import lease_seconds, send_message
    from shared.storage import Claim

    digest = await build_digest(store, settings, since, until, title="Weekly digest" if defn.digest == "weekly"
                                else "Daily digest" if defn.digest == "daily" else None)
    rendered = render_digest(digest, day)
    ref = _ref(defn, period)
    body = webhook_body(digest, ref, rendered.subject, rendered.short)
    outcome = Outcome()
    lease = lease_seconds(settings)
    targets: list[Target] = targets_of(defn, settings)
    for target in targets:
        if period is not None:
            claim = await store.claim_delivery(ref, target.key, lease)
            if claim == Claim.DONE:
                outcome.done.append(target.label)
                continue
            if claim == Claim.BUSY:
                outcome.retry[target.label] = "another run is sending it"
                continue
        note = Notification(target.recipient, rendered.subject, rendered.text, rendered.html, ref=ref,
                            short=rendered.short, body=body)
        try:
            await send_message(target, note)
        except PermanentError as error:
            outcome.failed[target.label] = str(error)
            status, text = "failed", str(error)
        except NotifyError as error:  # transient, after the retries: the next hour tries again
            outcome.retry[target.label] = str(error)
            status, text = "released", None
        except BaseException:
            if period is not None:
                await asyncio.shield(store.finish_delivery(ref, target.key, "released"))
            raise
        else:
            outcome.sent.append(target.label)
            status, text = "sent", None
        if period is not None:
            await store.finish_delivery(ref, target.key, status, text)
    if outcome.failed or outcome.retry:
        log.warning("digest of channel %s (%s): failed %s, retry %s", defn.name, period or "now",
                    sorted(outcome.failed), sorted(outcome.retry))
    return outcome


async def send_due_digests(store: Store, settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """Every enabled channel whose digest is due: send it (the hourly timer)."""
    from shared.notify.routing import stored_channels

    now = now or datetime.now(UTC)
    summary: dict[str, Any] = {"sent": [], "pending": [], "errors": []}
    for defn in await stored_channels(store):
        if not defn.enabled or defn.digest == "off" or not defn.id:
            continue
        try:
            watermark = await store.get_row(WATERMARK_PK, defn.id)
            slot = due(defn, watermark, now)
            if slot is None:
                continue
            since = (watermark or {}).get("until") or now - (WEEK if defn.digest == "weekly" else DAY)
            since = max(since, now - MAX_PERIOD)
            outcome = await send_digest(store, settings, defn, since, now, slot.period, slot.day)
            entry = {"channel": defn.name, "period": slot.period, "sent": outcome.sent, "failed": outcome.failed,
                     "retry": outcome.retry}
            if outcome.complete:
                await store.put_row({"PartitionKey": WATERMARK_PK, "RowKey": defn.id, "period": slot.period,
                                     "until": now, "sent_at": now, "targets": len(outcome.sent) + len(outcome.done)})
                summary["sent"].append(entry)
            else:
                summary["pending"].append(entry)
        except Exception as error:  # one channel's problem is not the others'
            log.exception("digest of channel %s failed", defn.name)
            summary["errors"].append({"channel": defn.name, "error": f"{type(error).__name__}: {error}"})
    return summary
