"""Building a snapshot of the whole system, from the engine's tables and nothing else:

- monitors by kind and status (enabled ones; disabled ones are listed apart), open downtime windows, active
  threshold breaches (each kind declares which of its statuses are breaches), checker errors (ERROR states);
- per kind: uptime over 24 h (shared/uptime.py, per monitor, added up per kind), the newest result's age (from the
  `ticks` records) and the kind's timer (its last run in `meta`: a kind with enabled monitors whose timer has not run
  for STALE_AFTER is *stale* — its timer stopped);
- the events since the previous stored snapshot, by type.

Every number is explainable: each bucket names the monitors (id, name) it counted.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors import KINDS, status_info, status_rank
from shared import uptime as uptimes
from shared.aio import gather_bounded
from shared.snapshots.metrics import compute_metrics
from shared.storage import SNAPSHOT_META
from shared.text import clip
from shared.uptime import Tally

if TYPE_CHECKING:
    from shared.storage import StateRow, Store

SCHEMA_VERSION = 1
SNAPSHOT_PERIOD = timedelta(minutes=15)  # the period of the first snapshot (no previous one to start from)
STALE_AFTER = timedelta(minutes=3)  # three timer periods (kind timers run every minute)
UPTIME_WINDOW = timedelta(hours=24)
CONCURRENCY = 16  # storage reads in flight while building
MAX_EVENTS = 5000  # events counted per snapshot (beyond: `truncated`)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def display_name(entity: dict[str, Any], state: dict[str, Any] | None) -> str:
    return entity.get("name") or (state or {}).get("name") or entity["RowKey"]


def _bucket() -> dict[str, Any]:
    return {"count": 0, "monitors": []}


def _add(bucket: dict[str, Any], member: dict[str, Any]) -> None:
    bucket["count"] += 1
    bucket["monitors"].append(member)


def _member(entity: dict[str, Any], state: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    return {"id": entity["RowKey"], "name": display_name(entity, state), "kind": entity.get("kind"), **extra}


def _kind_view() -> dict[str, Any]:
    return {"monitors": 0, "enabled": 0, "by_status": {}, "uptime_24h": {}, "newest_result": {}, "timer": {}}


@dataclass
class _Census:
    """Monitors by status and kind, with the breaches, checker errors and open outages among them."""

    by_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    kinds: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: _kind_view() for k in sorted(KINDS)})
    disabled: dict[str, Any] = field(default_factory=_bucket)
    breaches: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    down: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    enabled: list[dict[str, Any]] = field(default_factory=list)

    def count(self, entity: dict[str, Any], row: StateRow | None) -> None:
        data = row.data if row else {}
        status = (row.status if row else "") or "PENDING"
        view = self.kinds.setdefault(entity.get("kind") or "", _kind_view())
        view["monitors"] += 1
        if not entity.get("enabled", True):
            _add(self.disabled, _member(entity, data, status=status))
            return
        self.enabled.append(entity)
        view["enabled"] += 1
        member = _member(entity, data)
        _add(self.by_status.setdefault(status, _bucket()), member)
        _add(view["by_status"].setdefault(status, _bucket()), {k: v for k, v in member.items() if k != "kind"})
        if status_info(status).breach:
            self.breaches.append({**member, "status": status, "since": data.get("since")})
        if status == "ERROR":
            self.errors.append({**member, "since": data.get("since"), "error": clip(data.get("error"), 500),
                                "status_before_error": data.get("before_error")})
        if data.get("down_since"):
            self.down.append((entity, data))


async def _open_downtimes(store: Store, census: _Census, now: datetime) -> list[dict[str, Any]]:
    async def open_window(item: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any] | None:
        entity, data = item
        rows = await store.list_downtimes(entity["RowKey"], limit=1)
        window = rows[0] if rows and rows[0].get("ended_at") is None else None
        started = window["started_at"] if window else datetime.fromisoformat(data["down_since"])
        return {**_member(entity, data), "started_at": started.isoformat(),
                "duration_seconds": max(0, round((now - started).total_seconds())),
                "reason": clip((window or {}).get("reason") or None, 500), "window_stored": window is not None}

    return [w for w in await gather_bounded(census.down, open_window, CONCURRENCY) if w]


async def _uptimes(store: Store, census: _Census, states: dict[str, StateRow], since: datetime) -> Tally:
    """Each enabled monitor's uptime since `since`, added up per kind (into the kind views) and in all."""
    known = await uptimes.everyone(store, since, [e["RowKey"] for e in census.enabled])
    tallies = [known.tally(e["RowKey"]) for e in census.enabled]
    per_kind: dict[str, tuple[Tally, list[dict[str, Any]]]] = {}
    total = Tally()
    for entity, tally in zip(census.enabled, tallies, strict=True):
        kind_total, members = per_kind.setdefault(entity.get("kind") or "", (Tally(), []))
        kind_total.add(tally)
        total.add(tally)
        if tally.checks:
            row = states.get(entity["RowKey"])
            members.append({"id": entity["RowKey"], "name": display_name(entity, row.data if row else None),
                            "checks": tally.checks, "up": tally.up, "percent": tally.percent})
    for kind, view in census.kinds.items():
        acc, members = per_kind.get(kind, (Tally(), []))
        view["uptime_24h"] = {"percent": acc.percent, "checks": acc.checks, "up": acc.up,
                              "avg_latency_ms": acc.avg_latency, "monitors": members}
    return total


async def _timers(store: Store, census: _Census, now: datetime) -> list[dict[str, Any]]:
    """Each kind's newest result and timer; the kinds whose timer stopped (stale)."""
    async def kind_records(kind: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return await store.get_kind_meta(kind), await store.newest_tick(kind)

    names = sorted(KINDS)
    records = dict(zip(names, await asyncio.gather(*(kind_records(k) for k in names)), strict=True))
    stale: list[dict[str, Any]] = []
    for kind, view in census.kinds.items():
        meta, tick = records.get(kind, ({}, None))
        newest = (tick or {}).get("finished_at") or (tick or {}).get("started_at")
        view["newest_result"] = {"at": iso(newest), "age_seconds": round((now - newest).total_seconds())
                                 if newest else None, "trigger": (tick or {}).get("trigger")}
        last_run: datetime | None = meta.get("last_tick_at")
        paused = bool(meta.get("paused"))
        reason = None
        if view["enabled"] and not paused:
            if last_run is None:
                reason = "its timer has never run"
            elif now - last_run > STALE_AFTER:
                reason = f"its timer last ran {round((now - last_run).total_seconds())} s ago"
        view["timer"] = {"paused": paused, "last_run_at": iso(last_run),
                         "age_seconds": round((now - last_run).total_seconds()) if last_run else None,
                         "stale": reason is not None, "reason": reason}
        if reason:
            stale.append({"kind": kind, "reason": reason, "last_run_at": iso(last_run),
                          "enabled_monitors": view["enabled"]})
        view["by_status"] = dict(sorted(view["by_status"].items(), key=lambda kv: status_rank(kv[0])))
    return stale


async def _events(store: Store, period_from: datetime, now: datetime) -> dict[str, Any]:
    events = await store.list_events_between(period_from, now, limit=MAX_EVENTS,
                                             select=["type", "monitor_id", "monitor_name", "kind"])
    by_type: dict[str, dict[str, Any]] = {}
    for event in events:
        bucket = by_type.setdefault(event.get("type") or "?", {"count": 0, "monitors": []})
        bucket["count"] += 1
        member = {"id": event.get("monitor_id"), "name": event.get("monitor_name"), "kind": event.get("kind")}
        if member not in bucket["monitors"]:
            bucket["monitors"].append(member)
    return {"count": len(events), "truncated": len(events) >= MAX_EVENTS, "by_type": dict(sorted(by_type.items()))}


async def build(store: Store, now: datetime | None = None) -> dict[str, Any]:
    """One snapshot of the whole system (nothing is written)."""
    clock = time.perf_counter()
    now = now or _utcnow()
    snap_meta = await store.get_kind_meta(SNAPSHOT_META)
    previous_at: datetime | None = snap_meta.get("latest_at")
    period_from = previous_at if previous_at and previous_at < now else now - SNAPSHOT_PERIOD
    entities = sorted(await store.list_monitors(), key=lambda e: (e.get("name", "").lower(), e["RowKey"]))
    present = sorted({str(e["kind"]) for e in entities if e.get("kind") in KINDS})
    states: dict[str, StateRow] = {}
    for rows, _ in await asyncio.gather(*(store.load_states(k) for k in present)):
        states.update(rows)
    rolled_until = await uptimes.watermark(store)

    census = _Census()
    for entity in entities:
        census.count(entity, states.get(entity["RowKey"]))
    downtimes = await _open_downtimes(store, census, now)
    total = await _uptimes(store, census, states, now - UPTIME_WINDOW)
    stale = await _timers(store, census, now)
    snapshot: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": None,
        "taken_at": now.isoformat(),
        "persisted": False,
        "period": {"from": period_from.isoformat(), "to": now.isoformat(),
                   "previous_snapshot": snap_meta.get("latest_key")},
        "monitors": {"total": len(entities), "enabled": len(census.enabled), "disabled": census.disabled},
        "by_status": dict(sorted(census.by_status.items(), key=lambda kv: status_rank(kv[0]))),
        "kinds": census.kinds,
        "open_downtimes": {"count": len(downtimes), "items": downtimes},
        "threshold_breaches": {"count": len(census.breaches), "items": census.breaches},
        "checker_errors": {"count": len(census.errors), "items": census.errors},
        "stale_kinds": {"count": len(stale), "items": stale},
        "events": await _events(store, period_from, now),
        "uptime_24h": {"percent": total.percent, "checks": total.checks, "up": total.up,
                       "rolled_up_until": iso(rolled_until)},
        "metrics": {},
        "build_ms": 0,
    }
    snapshot["metrics"] = compute_metrics(snapshot)
    snapshot["build_ms"] = round((time.perf_counter() - clock) * 1000)
    return snapshot
