"""The one home of uptime: hourly rollups up to the rollup watermark, the blocks after it (every check of the hours
not compacted yet: at most about 70 minutes of them; shared/storage/packing.py). The API's uptime, the snapshots,
the status page's day bars, the badges, the digests and Prometheus all count here.

A checker error (outcome "error") says nothing about the target and is not counted; degraded counts as up; the
latency figures are of successful checks only. A check during maintenance (its result row says `maintenance`:
shared/engine/gate.py) is not counted either, only tallied apart (`maintenance`), so the answers can say so.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.storage import keys
from shared.storage.blocks import COMPACTION_META
from shared.storage.blockset import latency, slot_of, template
from shared.storage.packing import MAINTENANCE, Entry, best, rebuild

if TYPE_CHECKING:
    from shared.storage import Store

_HOUR = timedelta(hours=1)
ROLLUP_META = COMPACTION_META  # meta row: `rolled_until`, the end of the last hour folded into rollups
MAINTENANCE_NOTE = "checks during maintenance are not counted"


@dataclass
class Tally:
    checks: int = 0
    up: int = 0
    degraded: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0
    latency_min: float | None = None
    latency_max: float | None = None
    maintenance: int = 0  # checks during maintenance: not in `checks`

    def add_rollup(self, row: dict[str, Any]) -> None:
        """Fold in a rollup row (or a rollup_of() dict)."""
        self.checks += int(row.get("count", 0))
        self.up += int(row.get("up", 0))
        self.degraded += int(row.get("degraded", 0))
        self.maintenance += int(row.get("maintenance", 0))
        count = int(row.get("latency_count", 0))
        if count:
            self.latency_sum += float(row.get("latency_sum", 0.0))
            self.latency_count += count
            lo, hi = float(row["latency_min"]), float(row["latency_max"])
            self.latency_min = lo if self.latency_min is None else min(self.latency_min, lo)
            self.latency_max = hi if self.latency_max is None else max(self.latency_max, hi)

    def add(self, other: Tally) -> None:
        self.add_rollup(other.as_rollup())

    def as_rollup(self) -> dict[str, Any]:
        """The rollup row's fields (what the hourly rollup stores)."""
        return {"count": self.checks, "up": self.up, "degraded": self.degraded, "latency_sum": self.latency_sum,
                "latency_count": self.latency_count, "latency_min": self.latency_min or 0.0,
                "latency_max": self.latency_max or 0.0, "maintenance": self.maintenance}

    @property
    def percent(self) -> float | None:
        return round(100.0 * self.up / self.checks, 3) if self.checks else None

    @property
    def avg_latency(self) -> float | None:
        return round(self.latency_sum / self.latency_count, 1) if self.latency_count else None


def tally_of(rows: list[dict[str, Any]]) -> Tally:
    """The tally of raw results."""
    tally = Tally()
    for r in rows:
        outcome = r.get("outcome")
        if r.get("maintenance"):
            tally.maintenance += 1  # planned: out of uptime
            continue
        if outcome == "error":
            continue  # a checker error says nothing about the site
        tally.checks += 1
        tally.up += outcome in ("up", "degraded")
        tally.degraded += outcome == "degraded"
        lat = r.get("latency_ms")
        if lat is not None and outcome != "down":
            tally.latency_min = lat if tally.latency_min is None else min(tally.latency_min, lat)
            tally.latency_max = lat if tally.latency_max is None else max(tally.latency_max, lat)
            tally.latency_sum += lat
            tally.latency_count += 1
    return tally


def tally_of_entries(entries: list[Entry] | Any) -> Tally:
    """The tally of checks in blocks (the same rules as tally_of)."""
    tally = Tally()
    for entry in entries:
        if entry.code & MAINTENANCE:
            tally.maintenance += 1
            continue
        outcome = entry.code & 0x0F
        if outcome == 3:  # error
            continue
        tally.checks += 1
        tally.up += outcome <= 1
        tally.degraded += outcome == 1
        lat = entry.latency
        if lat is not None and outcome != 2:
            tally.latency_min = lat if tally.latency_min is None else min(tally.latency_min, lat)
            tally.latency_max = lat if tally.latency_max is None else max(tally.latency_max, lat)
            tally.latency_sum += lat
            tally.latency_count += 1
    return tally


def entry_of_row(row: dict[str, Any]) -> Entry:
    """A stored row as a block entry (checks written before blocks: the compaction and readers merge them)."""
    from shared.storage.packing import CODE, ROW

    checked = row.get("checked_at")
    dt = round((checked - row["ts"]) / timedelta(microseconds=1)) if checked else 0
    code = CODE.get(row.get("outcome") or "error", 3) | ROW | (MAINTENANCE if row.get("maintenance") else 0)
    return Entry(row.get("monitor_id") or "", row["ts"], dt, row.get("latency_ms"), code, None)


def rollup_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """count / up / degraded / latency aggregates of raw results: one rollup row's fields."""
    return tally_of(rows).as_rollup()


async def watermark(store: Store) -> datetime | None:
    return (await store.compaction_marks())[0]


async def _legacy(store: Store, tail_from: datetime) -> bool:
    """Whether the tail from `tail_from` reaches back to hours written before blocks (rows only)."""
    since = await store.blocks_since()
    return since is None or tail_from < since + _HOUR


async def tail_entries(store: Store, monitor_id: str, tail_from: datetime) -> list[Entry]:
    """One monitor's checks since `tail_from` that are not in rollups yet: its blocks, and rows written before
    blocks existed — one entry per slot."""
    entries = await store.block_entries(tail_from, datetime.now(UTC) + timedelta(hours=1), monitor_id)
    if await _legacy(store, tail_from):
        rows = await store.stored_results(monitor_id, 100_000, None, tail_from)
        entries += [entry_of_row(r) for r in rows if "fold_n" not in r]
    return [e for e in best(entries).values() if e.slot >= tail_from]


def series(monitor_id: str) -> list[str]:
    """Every id a monitor's checks are stored under: its own, and with several CHECK_LOCATIONS one per location
    (keys.series_id); uptime counts every location's checks."""
    from shared.settings import get_settings

    return keys.series_ids(monitor_id, get_settings().locations)


async def tallies(store: Store, monitor_id: str, since: datetime, rolled_until: datetime | None,
                  bucket: Callable[[datetime], Hashable] = lambda _: None) -> dict[Hashable, Tally]:
    """Tallies of one monitor since `since` (every location's checks), per `bucket(hour or result time)`
    (default: one bucket, None)."""
    out: dict[Hashable, Tally] = {}
    for sid in series(monitor_id):
        for key, tally in (await _tallies_of(store, sid, since, rolled_until, bucket)).items():
            out.setdefault(key, Tally()).add(tally)
    return out


async def _tallies_of(store: Store, monitor_id: str, since: datetime, rolled_until: datetime | None,
                      bucket: Callable[[datetime], Hashable]) -> dict[Hashable, Tally]:
    out: dict[Hashable, Tally] = {}
    tail_from = since
    if rolled_until and rolled_until > since:
        first_whole = keys.hour_floor(since) if keys.hour_floor(since) == since else keys.hour_floor(since) + _HOUR
        for row in await store.query_rollups(monitor_id, since):
            if first_whole <= row["hour"] < rolled_until:  # the query starts at the hour of `since`
                out.setdefault(bucket(row["hour"]), Tally()).add_rollup(row)
        if first_whole > since:  # the part of since's hour after it: its checks (rows and fold rows), exactly
            part = await store.query_results(monitor_id, limit=100_000, before=min(first_whole, rolled_until),
                                             since=since)
            for row in part:
                out.setdefault(bucket(row["ts"]), Tally()).add(tally_of([row]))
        tail_from = rolled_until
    by_key: dict[Hashable, list[Entry]] = {}
    for entry in await tail_entries(store, monitor_id, tail_from):
        by_key.setdefault(bucket(entry.slot), []).append(entry)
    for key, entries in by_key.items():
        out.setdefault(key, Tally()).add(tally_of_entries(entries))
    return out


async def tally_since(store: Store, monitor_id: str, since: datetime, rolled_until: datetime | None) -> Tally:
    return (await tallies(store, monitor_id, since, rolled_until)).get(None) or Tally()


async def tally_of_series(store: Store, series_id: str, since: datetime, rolled_until: datetime | None) -> Tally:
    """One location's checks of a monitor (keys.series_id)."""
    return (await _tallies_of(store, series_id, since, rolled_until, lambda _: None)).get(None) or Tally()


# ------------------------------------------------------------------------------------------- every monitor

@dataclass
class Everyone:
    """Every monitor's tally since a time, and its newest check of the tail (None: not in the tail)."""

    tallies: dict[str, Tally]
    newest: dict[str, Entry]
    bulk: bool = True  # False: read one monitor after another (the window reaches hours from before blocks)

    def tally(self, monitor_id: str) -> Tally:
        return self.tallies.get(monitor_id) or Tally()


async def everyone(store: Store, since: datetime, ids: list[str]) -> Everyone:
    """The tallies of many monitors at once, in O(what changed): the rollups from the hour summaries (each read
    once per process: they never change) and one pass over the blocks since the watermark. Falls back to one read
    per monitor while the window reaches hours from before blocks (the first day after the upgrade). With several
    locations a monitor's tally counts every location's checks, and its newest check is the newest of them."""
    by_series = {sid: mid for mid in ids for sid in series(mid)}
    if len(by_series) == len(ids):
        return await _everyone(store, since, ids)
    found = await _everyone(store, since, list(by_series))
    out = Everyone({mid: Tally() for mid in ids}, {}, found.bulk)
    for sid, tally in found.tallies.items():
        out.tallies[by_series[sid]].add(tally)
    for sid, entry in found.newest.items():
        known = out.newest.get(by_series[sid])
        if known is None or entry.slot > known.slot:
            out.newest[by_series[sid]] = entry
    return out


async def _everyone(store: Store, since: datetime, ids: list[str]) -> Everyone:
    rolled_until = await watermark(store)
    tail_from = max(since, rolled_until) if rolled_until else since
    hours = []
    hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while rolled_until and hour < rolled_until:
        hours.append(hour)
        hour += timedelta(hours=1)
    summaries = await store.summaries(hours)
    if len(summaries) < len(hours) or await _legacy(store, tail_from):
        return await _one_by_one(store, since, ids, rolled_until)
    out = {i: Tally() for i in ids}
    for hour in hours:
        for mid, rollup in summaries[hour].items():
            if mid in out:
                out[mid].add_rollup(rollup)
    found = await store.block_set(tail_from, datetime.now(UTC) + _HOUR, since=tail_from)
    accs, last = found.tallies()
    for mid, a in accs.items():
        if mid in out:
            out[mid].add(Tally(int(a[0]), int(a[1]), int(a[2]), a[4], int(a[5]), a[6] if a[5] else None,
                               a[7] if a[5] else None, int(a[3])))
    newest = {mid: Entry(mid, slot_of(block, i), block.dt[i], latency(block, i), block.code[i], template(block, i))
              for mid, (_, block, i) in last.items()}
    return Everyone(out, newest)


async def _one_by_one(store: Store, since: datetime, ids: list[str], rolled_until: datetime | None) -> Everyone:
    from shared.aio import gather_bounded

    found = await gather_bounded(ids, lambda i: tally_since(store, i, since, rolled_until), 16)
    return Everyone(dict(zip(ids, found, strict=True)), {}, bulk=False)


async def results_of(store: Store, monitor_id: str, limit: int,
                     before: datetime | None = None) -> list[dict[str, Any]]:
    """A monitor's results, newest first: with several locations every location's, merged."""
    ids = series(monitor_id)
    if len(ids) == 1:
        return await store.query_results(monitor_id, limit=limit, before=before)
    rows = [row for sid in ids for row in await store.query_results(sid, limit=limit, before=before)]
    return sorted(rows, key=lambda r: (r["ts"], r.get("location") or ""), reverse=True)[:limit]


async def latest_result(store: Store, monitor_id: str, known: Everyone | None = None) -> dict[str, Any] | None:
    """A monitor's newest result: rebuilt from the tail when it is a folded steady check, else read."""
    entry = known.newest.get(monitor_id) if known else None
    if entry is not None and entry.template is not None:
        from shared.storage.results import template_fields

        return rebuild(monitor_id, entry.slot, entry.dt_us, entry.latency, template_fields(entry.template))
    rows = [row for sid in series(monitor_id) for row in await store.query_results(sid, limit=1)]
    return max(rows, key=lambda r: (r["ts"], r.get("checked_at") or r["ts"])) if rows else None
