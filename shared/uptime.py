"""The one home of uptime: hourly rollups up to the rollup watermark, raw results after it (normally under two
hours of them). The API's uptime, the snapshots, the status page's day bars and the badges all count here.

A checker error (outcome "error") says nothing about the target and is not counted; degraded counts as up; the
latency figures are of successful checks only.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.storage import Store

ROLLUP_META = "_rollup"  # meta row: `rolled_until`, the end of the last hour folded into rollups


@dataclass
class Tally:
    checks: int = 0
    up: int = 0
    degraded: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0
    latency_min: float | None = None
    latency_max: float | None = None

    def add_rollup(self, row: dict[str, Any]) -> None:
        """Fold in a rollup row (or a rollup_of() dict)."""
        self.checks += int(row.get("count", 0))
        self.up += int(row.get("up", 0))
        self.degraded += int(row.get("degraded", 0))
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
                "latency_max": self.latency_max or 0.0}

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
