"""The hourly rollup and the daily retention purge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors import KINDS
from shared.storage import keys
from shared.uptime import ROLLUP_META, rollup_of

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store


async def rollup(store: Store, now: datetime | None = None, horizon_days: int = 90) -> dict[str, Any]:
    """Fold completed hours of raw results into hourly rollups (idempotent: an hour is recomputed whole). Checks
during maintenance are counted apart (`maintenance`), not in `count` (shared/uptime.py).

    Starts where the last run stopped (the `_rollup` watermark); the first run reaches back to the raw-result
    retention horizon, so uptime never misses hours that exist only as raw rows."""
    now = now or datetime.now(UTC)
    meta = await store.get_kind_meta(ROLLUP_META)
    end = keys.hour_floor(now)
    start = keys.hour_floor(meta.get("rolled_until") or end - timedelta(days=horizon_days))
    if start >= end:
        return {"hours": 0, "monitors": 0}
    entities = await store.list_monitors()
    written = 0
    for entity in entities:
        monitor_id = entity["RowKey"]
        rows = await store.query_results(monitor_id, limit=1_000_000, before=end, since=start)
        by_hour: dict[datetime, list[dict[str, Any]]] = {}
        for row in rows:
            by_hour.setdefault(keys.hour_floor(row["ts"]), []).append(row)
        if by_hour:
            await store.write_rollups(monitor_id, {h: rollup_of(rs) for h, rs in by_hour.items()})
            written += len(by_hour)
    await store.set_kind_meta(ROLLUP_META, rolled_until=end)
    return {"from": start.isoformat(), "to": end.isoformat(), "monitors": len(entities), "rollups": written}


async def purge(store: Store, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Retention: raw results, events and ticks older than RESULT_RETENTION_DAYS; rollups after
    ROLLUP_RETENTION_DAYS. Partitions are month-bounded, so only a few are ever looked at."""
    now = now or datetime.now(UTC)
    raw_cut = now - timedelta(days=settings.result_retention_days)
    roll_cut = now - timedelta(days=settings.rollup_retention_days)
    raw_months = keys.months_back(raw_cut, raw_cut - timedelta(days=400))
    return {
        "results": await store.purge("results", keys.all_results_partitions(raw_months), raw_cut, "ts"),
        "events": await store.purge("events", raw_months, raw_cut, "occurred_at"),
        "ticks": await store.purge("ticks", keys.ticks_partitions(sorted(KINDS), raw_months), raw_cut, "started_at"),
        "rollups": await store.purge("rollups", keys.all_rollup_partitions(range(roll_cut.year - 2,
                                                                                 roll_cut.year + 1)),
                                     roll_cut, "hour"),
    }
