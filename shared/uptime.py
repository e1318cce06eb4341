"""The one home of uptime: hourly rollups up to the rollup watermark, raw results after it (normally under two
hours of them). The API's uptime, the snapshots, the status page's day bars and the badges all count here.

A checker error (outcome "error") says nothing about the target and is not counted; degraded counts as up; the
latency figures are of successful checks only. A check during maintenance (its result row says `maintenance`:
shared/engine/gate.py) is not counted either, only tallied apart (`maintenance`), so the answers can say so.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.storage import Store

ROLLUP_META = "_rollup"  # meta row: `rolled_until`, the end of the last hour folded into rollups
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


def rollup_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """count / up / degraded / latency aggregates of raw results: one rollup row's fields."""
    return tally_of(rows).as_rollup()


async def watermark(store: Store) -> datetime | None:
    return (await store.get_kind_meta(ROLLUP_META)).get("rolled_until")


async def tallies(store: Store, monitor_id: str, since: datetime, rolled_until: datetime | None,
                  bucket: Callable[[datetime], Hashable] = lambda _: None) -> dict[Hashable, Tally]:
    """Tallies of one monitor since `since`, per `bucket(hour or result time)` (default: one bucket, None)."""
    out: dict[Hashable, Tally] = {}
    tail_from = since
    if rolled_until and rolled_until > since:
        for row in await store.query_rollups(monitor_id, since):
            if row["hour"] < rolled_until:  # the query starts at the hour of `since`
                out.setdefault(bucket(row["hour"]), Tally()).add_rollup(row)
        tail_from = rolled_until
    by_key: dict[Hashable, list[dict[str, Any]]] = {}
    for row in await store.query_results(monitor_id, limit=100_000, since=tail_from):
        by_key.setdefault(bucket(row["ts"]), []).append(row)
    for key, rows in by_key.items():
        out.setdefault(key, Tally()).add(tally_of(rows))
    return out


async def tally_since(store: Store, monitor_id: str, since: datetime, rolled_until: datetime | None) -> Tally:
    return (await tallies(store, monitor_id, since, rolled_until)).get(None) or Tally()


@dataclass(frozen=True)
class _Recent:
    """What one monitor's last current-uptime read learnt: the rollup part (fixed until the watermark or the hour of
    the window's start moves) and the raw results before `cut` (settled: no check writes that far back)."""

    watermark: datetime
    hour: datetime
    rolled: Tally
    cut: datetime
    tail: Tally


_recent: dict[str, _Recent] = {}
LATE_WRITES = timedelta(minutes=5)  # a result row lands at most a check's deadline (55 s) + a batch after its slot
MAX_RECENT = 20_000


def _sum(*parts: Tally) -> Tally:
    total = Tally()
    for part in parts:
        total.add(part)
    return total


async def tally_and_latest(store: Store, monitor_id: str, since: datetime, rolled_until: datetime | None,
                           now: datetime | None = None) -> tuple[Tally, dict[str, Any] | None]:
    """The tally since `since` as of now (rollups up to the watermark + every raw result after it) and the monitor's
    newest result. For frequent readers (Prometheus scrapes): the rollup part and the settled raw results are kept
    in-process, so a read costs one query of the results since the previous read (minus LATE_WRITES); the rollup
    part is read again when the watermark or the hour of `since` moves."""
    now = now or datetime.now(UTC)
    if not rolled_until or rolled_until <= since:  # no usable rollups: the raw results of the whole window
        rows = await store.query_results(monitor_id, limit=100_000, since=since)
        latest = rows[0] if rows else next(iter(await store.query_results(monitor_id, limit=1)), None)
        return tally_of(rows), latest
    hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    known = _recent.get(monitor_id)
    entry = known
    if entry is None or entry.watermark != rolled_until or entry.hour != hour:
        rolled = Tally()
        for row in await store.query_rollups(monitor_id, since):
            if row["hour"] < rolled_until:  # the query starts at the hour of `since`
                rolled.add_rollup(row)
        same_tail = entry is not None and entry.watermark == rolled_until  # only the window's hour moved
        entry = _Recent(rolled_until, hour, rolled, entry.cut if same_tail and entry else rolled_until,
                        entry.tail if same_tail and entry else Tally())
    rows = await store.query_results(monitor_id, limit=100_000, since=entry.cut)  # newest first
    cut = max(entry.cut, now - LATE_WRITES)
    settled = tally_of([r for r in rows if r["ts"] < cut])
    if _recent.get(monitor_id) is known:  # nobody stored a newer one meanwhile (that would count rows twice)
        if len(_recent) >= MAX_RECENT:
            _recent.clear()
        _recent[monitor_id] = _Recent(entry.watermark, entry.hour, entry.rolled, cut, _sum(entry.tail, settled))
    latest = rows[0] if rows else next(iter(await store.query_results(monitor_id, limit=1)), None)
    return _sum(entry.rolled, entry.tail, tally_of(rows)), latest
