"""The hourly compaction (rollups, fold rows, hour summaries) and the daily retention purge."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors import KINDS
from shared.storage import keys
from shared.storage.blockset import BlockSet, latency, template
from shared.storage.packing import Check, Entry, best, fold_fields, slot_us
from shared.uptime import ROLLUP_META, entry_of_row, tally_of_entries

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("monitor.maintenance")

# An hour is compacted once every run that could still write into it is over: a timer tick's slots are never after
# its start, and no invocation outlives host.json's functionTimeout (10 minutes; a test keeps them in step).
COMPACT_LAG = timedelta(minutes=11)
BLOCKS_KEPT = timedelta(days=1)  # compacted blocks stay a day (a reader that saw the old watermark still finds them)
_HOUR = timedelta(hours=1)


async def rollup(store: Store, now: datetime | None = None, horizon_days: int = 90) -> dict[str, Any]:
    """Compact every complete hour since the last run (the `_rollup` watermark): one read of the hour's blocks, then
    per monitor a fold row of its steady checks and a rollup of all its checks, and one summary of the hour for
    every monitor. Idempotent: an hour is recomputed whole, and the watermark moves after each hour.

    Hours from before blocks existed (the version before; `blocks_since` marks the first hour with blocks) are rolled
    up from their rows, as that version did; the first run reaches back to the raw-result retention horizon."""
    now = now or datetime.now(UTC)
    rolled_until, _ = await store.compaction_marks()
    blocks_since = await store.blocks_since()
    end = keys.hour_floor(now - COMPACT_LAG)
    start = keys.hour_floor(rolled_until or end - timedelta(days=horizon_days))
    if start >= end:
        return {"hours": 0, "monitors": 0}
    if blocks_since is None:
        blocks_since = await store.oldest_block_hour()
        if blocks_since is not None:
            await store.set_kind_meta(ROLLUP_META, blocks_since=blocks_since)
    legacy_end = min(end, blocks_since + _HOUR) if blocks_since else end
    legacy = await _legacy_rows(store, start, legacy_end) if start < legacy_end else {}
    written = folded = 0
    monitors: set[str] = set()
    legacy = {h: rows for h, rows in legacy.items() if start <= h < end}
    for h in list(legacy) + ([] if blocks_since is None else [blocks_since]):
        legacy.setdefault(h, [])  # the hours of the switch: merged whole, rows and blocks
    hour = start
    while hour < end:
        if hour in legacy:  # an hour written partly before blocks: rows and blocks merged, as entries
            rollups, folds = _from_entries(hour, await store.block_entries(hour, hour) + legacy[hour])
        else:
            rollups, folds = _from_blocks(hour, await store.block_set(hour, hour))
        await store.write_folds(folds)
        await store.write_rollup_rows([store.rollup_entity(mid, hour, agg) for mid, agg in rollups.items()])
        await store.write_summary(hour, rollups)
        await store.set_kind_meta(ROLLUP_META, rolled_until=hour + _HOUR)
        written += len(rollups)
        folded += sum(len(parts) for _, _, parts in folds)
        monitors |= set(rollups)
        hour += _HOUR
    return {"from": start.isoformat(), "to": end.isoformat(), "hours": int((end - start) / _HOUR),
            "monitors": len(monitors), "rollups": written, "fold_rows": folded}


Folds = list[tuple[str, datetime, list[dict[str, Any]]]]


def _from_blocks(hour: datetime, found: BlockSet) -> tuple[dict[str, dict[str, Any]], Folds]:
    """Per monitor: the rollup of all its checks of the hour, and the fold row of its steady ones."""
    accs, _ = found.tallies()
    rollups = {mid: {"count": int(a[0]), "up": int(a[1]), "degraded": int(a[2]), "latency_sum": a[4],
                     "latency_count": int(a[5]), "latency_min": a[6] if a[5] else 0.0,
                     "latency_max": a[7] if a[5] else 0.0, "maintenance": int(a[3])} for mid, a in accs.items()}
    folds = []
    for mid, mine in found.per_monitor().items():
        steady: list[Check] = []
        for block, i in mine:
            text = template(block, i)
            if text is not None:
                steady.append((block.hour_us - hour_us(hour) + block.slot[i], block.dt[i], latency(block, i), text))
        if steady:
            folds.append((mid, hour, fold_fields(hour, steady)))
    return rollups, folds


def _from_entries(hour: datetime, entries: list[Entry]) -> tuple[dict[str, dict[str, Any]], Folds]:
    per: dict[str, list[Entry]] = {}
    for entry in best(entries).values():
        per.setdefault(entry.monitor_id, []).append(entry)
    rollups = {mid: tally_of_entries(mine).as_rollup() for mid, mine in per.items()}
    folds = [(mid, hour, fold_fields(hour, [(slot_us(hour, e.slot), e.dt_us, e.latency, e.template)
                                            for e in mine if e.template is not None]))
             for mid, mine in per.items() if any(e.template is not None for e in mine)]
    return rollups, folds


def hour_us(hour: datetime) -> int:
    return (hour - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


async def _legacy_rows(store: Store, start: datetime, end: datetime) -> dict[datetime, list[Entry]]:
    """The rows of hours written before blocks, per hour: one range read per monitor (as the version before)."""
    out: dict[datetime, list[Entry]] = {}
    for entity in await store.list_monitors():
        rows = await store.stored_results(entity["RowKey"], 1_000_000, end, start)
        for row in rows:
            if "fold_n" not in row:
                out.setdefault(keys.hour_floor(row["ts"]), []).append(entry_of_row({**row,
                                                                                    "monitor_id": entity["RowKey"]}))
    return out


async def purge(store: Store, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Retention: raw results (rows and fold rows), events and ticks older than RESULT_RETENTION_DAYS; rollups and
    hour summaries after ROLLUP_RETENTION_DAYS; blocks a day after their hour was compacted. Partitions are
    time-bounded, so only a few are ever looked at."""
    now = now or datetime.now(UTC)
    raw_cut = now - timedelta(days=settings.result_retention_days)
    roll_cut = now - timedelta(days=settings.rollup_retention_days)
    raw_months = keys.months_back(raw_cut, raw_cut - timedelta(days=400))
    rolled_until, _ = await store.compaction_marks()
    years = range(roll_cut.year - 2, roll_cut.year + 1)
    return {
        "results": await store.purge("results", keys.all_results_partitions(raw_months), raw_cut, "ts"),
        "events": await store.purge("events", raw_months, raw_cut, "occurred_at"),
        "ticks": await store.purge("ticks", keys.ticks_partitions(sorted(KINDS), raw_months), raw_cut, "started_at"),
        "rollups": await store.purge("rollups", [*keys.all_rollup_partitions(years),
                                                 *(keys.summary_pk(datetime(y, 1, 1, tzinfo=UTC)) for y in years)],
                                     roll_cut, "hour"),
        "blocks": await store.purge_blocks(min(rolled_until, now) - BLOCKS_KEPT) if rolled_until else 0,
    }
