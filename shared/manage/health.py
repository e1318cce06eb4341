"""GET /health: storage reachability and every kind's timer (last run, next run, gaps in the last 24 h).

A paused kind's timer still runs every minute and records a tick row with `paused: true` that checks nothing: such
a run proves the timer ran (it is no gap), but it is not the kind's last run and not counted in runs_24h."""

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
EARLY = timedelta(seconds=2)  # a run starts at its slot or after it (seconds, or more when late); allow skew before


def _slot(at: datetime, early: timedelta = EARLY) -> int:
    """The number of the schedule slot a run started at `at` belongs to: slots are the whole periods since the epoch
    (the schedule fires at second 0 of every minute). A run belongs to the slot it started in, or to the next one
    when it started at most `early` before it."""
    return int((at.timestamp() + early.total_seconds()) // TIMER_PERIOD.total_seconds())


def timer_gaps(ticks: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Periods of the last 24 h in which scheduled timer runs are missing: between two runs, the slots strictly
    between theirs (runs at 10:00:01 and 10:03:00.5 missed 10:01 and 10:02); after the last run, the slots strictly
    between its slot and now's (the run of the current minute may still be going on: it is not missed yet)."""
    times = sorted(t["started_at"] for t in ticks if t.get("trigger") == "timer")
    gaps = []
    for a, b in zip(times, [*times[1:], now], strict=False):  # no runs: no gaps to list here
        missed = _slot(b, timedelta(0) if b is now else EARLY) - _slot(a) - 1
        if missed > 0:
            gaps.append({"from": a.isoformat(), "to": b.isoformat(), "missed_runs": missed, "ongoing": b is now})
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
    from shared.notify.operator import delivery_health

    body["delivery"] = await delivery_health(store)
    if body["delivery"]["status"] != "ok":
        body["status"] = "degraded"
    for kind in sorted(KINDS):
        meta = await store.get_kind_meta(kind)
        ticks = await store.list_ticks(kind, now - timedelta(hours=24))
        here = [t for t in ticks if t.get("location") == (settings.check_location if settings.locations else None)]
        body["timers"][kind] = {"paused": bool(meta.get("paused")), **_runs(here, now)}
        if settings.locations:  # every location's timer of the kind, this app's above
            body["timers"][kind]["locations"] = {loc: _runs([t for t in ticks if t.get("location") == loc], now)
                                                 for loc in settings.locations}
    return True, body


def _runs(ticks: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    ran = [t for t in ticks if t.get("trigger") == "timer" and not t.get("paused")]  # not paused no-ops
    last = max(ran, key=lambda t: t["started_at"], default=None)
    return {
        "last_run": {k: iso(last.get(k)) for k in ("due_at", "started_at", "finished_at", "duration_ms",
                                                   "monitors", "checked", "errors", "events")} if last else None,
        "next_due": croniter("* * * * *", now).get_next(datetime).isoformat(),
        "runs_24h": len(ran),
        "gaps_24h": timer_gaps(ticks, now) if ticks else [],  # paused runs too: the timer ran
    }
