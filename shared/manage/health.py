"""GET /health: storage reachability and every kind's timer (last run, next run, gaps in the last 24 h)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from croniter import croniter

from monitors import KINDS
from shared import VERSION
from shared.manage.monitors import iso

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store

TIMER_PERIOD = timedelta(minutes=1)  # every kind's timer runs each minute (see shared/triggers/timers.py)


def timer_gaps(ticks: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Periods of the last 24 h with no timer run for more than two timer periods."""
    times = sorted(t["started_at"] for t in ticks if t.get("trigger") == "timer")
    gaps = []
    limit = 2 * TIMER_PERIOD
    for a, b in zip(times, [*times[1:], now], strict=False):  # no runs: no gaps to list here
        if b - a > limit:
            gaps.append({"from": a.isoformat(), "to": b.isoformat(), "missed_runs":
                         int((b - a) / TIMER_PERIOD) - 1, "ongoing": b is now})
    return gaps


async def health(store: Store, settings: Settings) -> tuple[bool, dict[str, Any]]:
    now = datetime.now(UTC)
    body: dict[str, Any] = {"status": "ok", "version": VERSION, "time": now.isoformat(), "storage": "ok",
                            "email_enabled": settings.email_enabled, "timers": {}}
    try:
        await store.ping()
    except Exception as error:  # noqa: BLE001 - reported, never raised
        body["status"] = "degraded"
        body["storage"] = f"unreachable: {type(error).__name__}"
        return False, body
    for kind in sorted(KINDS):
        meta = await store.get_kind_meta(kind)
        ticks = await store.list_ticks(kind, now - timedelta(hours=24))
        last = max((t for t in ticks if t.get("trigger") == "timer"), key=lambda t: t["started_at"], default=None)
        nxt = croniter("* * * * *", now).get_next(datetime)
        body["timers"][kind] = {
            "paused": bool(meta.get("paused")),
            "last_run": {k: iso(last.get(k)) for k in ("due_at", "started_at", "finished_at", "duration_ms",
                                                       "monitors", "checked", "errors", "events")}
            if last else None,
            "next_due": nxt.isoformat(),
            "runs_24h": sum(1 for t in ticks if t.get("trigger") == "timer"),
            "gaps_24h": timer_gaps(ticks, now) if ticks else [],
        }
    return True, body
