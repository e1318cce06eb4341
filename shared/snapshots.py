"""Snapshots of the whole system (seed 003), their history and time series, and alert rules over their metrics.

A snapshot is one aggregate, built from the engine's tables and nothing else:
- monitors by kind and status (enabled ones; disabled ones are listed apart), open downtime windows, active
  threshold breaches (stock LOW/HIGH, resource WARNING/ALERT, parts SHORT), checker errors (ERROR states);
- per kind: uptime over 24 h (hourly rollups up to the rollup watermark, raw results after it — the approach of
  shared.service.uptime, per monitor, added up per kind), the newest result's age (from the `ticks` records) and
  the kind's timer (its last run in `meta`: a kind with enabled monitors whose timer has not run for
  STALE_AFTER is *stale* — its timer stopped);
- the events since the previous stored snapshot, by type.

Every number is explainable: each bucket names the monitors (id, name) it counted, and METRICS says for every
metric where in the snapshot its members are. `metrics` is the flat {name: number | null} view that alert rules
and /timeseries use; the names are fixed (METRICS), so rules and charts can name metrics before data exists.

One build at a time: a stored snapshot is built under the `snapshot` lease (Table Storage, with expiry, renewed
while building). A build that finds the lease taken waits up to `wait` seconds; if the holder stores a snapshot
meanwhile, that snapshot is the answer (`coalesced: true`) — so two concurrent "build and store" calls store
exactly one snapshot; if the wait runs out first, Busy (HTTP 409, code snapshot_in_progress). Previews
(persist=false) take the lease too, so a preview never overlaps a stored build's load either.

Alert rules (the seed's monitoring_alert_rules): definitions in the `alertrules` table; evaluated on every stored
snapshot, under the same lease. A rule fires after `for_snapshots` consecutive breaching snapshots
(ALERT_RULE_FIRING) and resolves on the first snapshot that does not breach (ALERT_RULE_RESOLVED). Its state and
events go through the engine's transactional outbox (`state` table, partition "alert_rule", ETag-guarded), and
shared.engine.publish stores each event and queues it for the mail function, which sends it to the rule's
recipients (in the event's details) — a crash between commit and publish is published by the next evaluation.

The scheduler holds no logic (seed 003, "Scheduler ≠ API"): the timer and the HTTP endpoints call take_snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import operator as op
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator

from monitors import KINDS
from shared import engine
from shared.events import Event, EventType
from shared.service import (VERSION, Duplicate, Invalid, NotFound, ServiceError, kinds, parse_time, rollup_of,
                            validation_details)
from shared.settings import Settings
from shared.storage import (SNAPSHOT_META, Conflict, OutboxRow, Store, clip, inverted, months_back,
                            snapshot_column)

log = logging.getLogger("monitor.snapshots")

SCHEMA_VERSION = 1
SNAPSHOT_SCHEDULE = "0 */15 * * * *"  # NCRONTAB (sec min hour day month weekday): every 15 minutes
SNAPSHOT_PERIOD = timedelta(minutes=15)  # the period of the first snapshot (no previous one to start from)
LEASE = "snapshot"
LEASE_SECONDS = 120.0  # renewed every third of it while a build runs
WAIT_SECONDS = 10.0  # default wait of an HTTP build for a running one (?wait=0…30)
TIMER_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.25
STALE_AFTER = timedelta(minutes=3)  # three timer periods (kind timers run every minute)
RULE_KIND = "alert_rule"  # the rules' partition of the `state` table, and the `kind` of their events
MAX_RULES = 200
UPTIME_WINDOW = timedelta(hours=24)
CONCURRENCY = 16  # storage reads in flight while building
MAX_EVENTS = 5000  # events counted per snapshot (beyond: `truncated`)
BODY_BUDGET = 600_000  # bytes of UTF-16 for the stored explanation; longer member lists are cut (counts stay)
MAX_POINTS = 10_000  # points per /timeseries answer

OK_STATUSES = {"UP", "OK"}
BREACH_STATUSES = {"LOW", "HIGH", "SHORT", "WARNING", "ALERT"}  # stock, parts, resource thresholds
RED_STATUSES = {"DOWN", "ALERT"}
STATUS_ORDER = ["DOWN", "ALERT", "ERROR", "SHORT", "LOW", "HIGH", "WARNING", "DEGRADED", "PENDING", "OK", "UP"]

OPERATORS = {">": op.gt, ">=": op.ge, "<": op.lt, "<=": op.le, "==": op.eq, "!=": op.ne}
Operator = Literal[">", ">=", "<", "<=", "==", "!="]


class Busy(ServiceError):
    status = 409
    code = "snapshot_in_progress"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


# ------------------------------------------------------------------------------------------- metrics


def metric_catalog() -> list[dict[str, Any]]:
    """Every snapshot metric: name, unit, description and `explained_by` (where its members are listed)."""
    out = [
        {"name": "monitors_total", "unit": "monitors", "explained_by": "monitors",
         "description": "Monitors defined (enabled or not)."},
        {"name": "monitors_enabled", "unit": "monitors", "explained_by": "by_status",
         "description": "Enabled monitors (the ones every other status count is about)."},
        {"name": "monitors_ok", "unit": "monitors", "explained_by": "by_status.UP + by_status.OK",
         "description": "Enabled monitors that are UP (websites) or OK (stock, parts, resources)."},
        {"name": "monitors_degraded", "unit": "monitors", "explained_by": "by_status.DEGRADED",
         "description": "Enabled monitors that are DEGRADED (slow websites)."},
        {"name": "monitors_down", "unit": "monitors", "explained_by": "by_status.DOWN",
         "description": "Enabled monitors that are DOWN."},
        {"name": "monitors_pending", "unit": "monitors", "explained_by": "by_status.PENDING",
         "description": "Enabled monitors never checked yet."},
        {"name": "checker_errors", "unit": "monitors", "explained_by": "checker_errors.items",
         "description": "Enabled monitors in ERROR: the check itself could not run (the operator is told)."},
        {"name": "threshold_breaches", "unit": "monitors", "explained_by": "threshold_breaches.items",
         "description": "Active threshold breaches: stock LOW/HIGH, resource WARNING/ALERT, parts SHORT."},
        {"name": "open_downtimes", "unit": "windows", "explained_by": "open_downtimes.items",
         "description": "Open downtime windows of enabled monitors."},
        {"name": "stale_kinds", "unit": "kinds", "explained_by": "stale_kinds.items",
         "description": "Kinds with enabled monitors whose timer has not run for three minutes (not paused)."},
        {"name": "events_in_period", "unit": "events", "explained_by": "events.by_type",
         "description": "Events since the previous stored snapshot."},
        {"name": "uptime_24h_percent", "unit": "%", "explained_by": "kinds.*.uptime_24h",
         "description": "Uptime of all checks of the last 24 h (null without checks)."},
    ]
    for kind in sorted(KINDS):
        out += [
            {"name": f"{kind}_monitors", "unit": "monitors", "explained_by": f"kinds.{kind}.by_status",
             "description": f"Enabled {kind} monitors."},
            {"name": f"{kind}_problems", "unit": "monitors", "explained_by": f"kinds.{kind}.by_status",
             "description": f"Enabled {kind} monitors neither UP/OK nor PENDING."},
            {"name": f"{kind}_uptime_24h_percent", "unit": "%", "explained_by": f"kinds.{kind}.uptime_24h.monitors",
             "description": f"Uptime of the {kind} checks of the last 24 h (null without checks)."},
            {"name": f"{kind}_newest_result_age_seconds", "unit": "s", "explained_by": f"kinds.{kind}.newest_result",
             "description": f"Age of the newest {kind} result (null: none in two months)."},
        ]
    return out


def metric_names() -> list[str]:
    return [m["name"] for m in metric_catalog()]


def _unknown_metric(name: str) -> str:
    return f"unknown metric {name!r}; one of: {', '.join(metric_names())}"


# --------------------------------------------------------------------------------------------- build


def _display_name(entity: dict[str, Any], state: dict[str, Any] | None) -> str:
    return entity.get("name") or (state or {}).get("name") or entity["RowKey"]


def _bucket() -> dict[str, Any]:
    return {"count": 0, "monitors": []}


def _add(bucket: dict[str, Any], member: dict[str, Any]) -> None:
    bucket["count"] += 1
    bucket["monitors"].append(member)


async def _gather(items: list[Any], fn: Any, limit: int = CONCURRENCY) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(item: Any) -> Any:
        async with semaphore:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


def _acc() -> dict[str, float]:
    return {"checks": 0, "up": 0, "latency_sum": 0.0, "latency_count": 0}


def _fold(acc: dict[str, float], row: dict[str, Any]) -> None:
    acc["checks"] += row.get("count", 0)
    acc["up"] += row.get("up", 0)
    acc["latency_sum"] += row.get("latency_sum", 0.0)
    acc["latency_count"] += row.get("latency_count", 0)


def _percent(acc: dict[str, float]) -> float | None:
    return round(100.0 * acc["up"] / acc["checks"], 3) if acc["checks"] else None


async def uptime_since(store: Store, monitor_id: str, since: datetime, rolled_until: datetime | None) -> dict:
    """checks / up / latency of one monitor since `since`: rollups before the watermark, raw results after it
    (shared.service.uptime's approach)."""
    acc = _acc()
    tail_from = since
    if rolled_until and rolled_until > since:
        for row in await store.query_rollups(monitor_id, since):
            if row["hour"] < rolled_until:
                _fold(acc, row)
        tail_from = rolled_until
    _fold(acc, rollup_of(await store.query_results(monitor_id, limit=100_000, since=tail_from)))
    return acc


def _member(entity: dict[str, Any], state: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    return {"id": entity["RowKey"], "name": _display_name(entity, state), "kind": entity.get("kind"), **extra}


async def build(store: Store, now: datetime | None = None) -> dict[str, Any]:
    """One snapshot of the whole system (nothing is written)."""
    clock = time.perf_counter()
    now = now or _utcnow()
    snap_meta = await store.get_kind_meta(SNAPSHOT_META)
    previous_at: datetime | None = snap_meta.get("latest_at")
    period_from = previous_at if previous_at and previous_at < now else now - SNAPSHOT_PERIOD
    entities = sorted(await store.list_monitors(), key=lambda e: (e.get("name", "").lower(), e["RowKey"]))
    present = sorted({e.get("kind") for e in entities if e.get("kind") in KINDS})
    states: dict[str, Any] = {}
    for rows, _ in await asyncio.gather(*(store.load_states(k) for k in present)):
        states.update(rows)
    rolled_until: datetime | None = (await store.get_kind_meta("_rollup")).get("rolled_until")

    by_status: dict[str, dict[str, Any]] = {}
    kind_view: dict[str, dict[str, Any]] = {
        k: {"monitors": 0, "enabled": 0, "by_status": {}, "uptime_24h": {}, "newest_result": {}, "timer": {}}
        for k in sorted(KINDS)}
    disabled = _bucket()
    breaches: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    down_candidates: list[tuple[dict[str, Any], dict[str, Any]]] = []
    enabled: list[dict[str, Any]] = []
    for entity in entities:
        kind = entity.get("kind")
        row = states.get(entity["RowKey"])
        data = row.data if row else {}
        status = (row.status if row else "") or "PENDING"
        view = kind_view.setdefault(kind, {"monitors": 0, "enabled": 0, "by_status": {}, "uptime_24h": {},
                                           "newest_result": {}, "timer": {}})
        view["monitors"] += 1
        if not entity.get("enabled", True):
            _add(disabled, _member(entity, data, status=status))
            continue
        enabled.append(entity)
        view["enabled"] += 1
        member = _member(entity, data)
        _add(by_status.setdefault(status, _bucket()), member)
        _add(view["by_status"].setdefault(status, _bucket()), {k: v for k, v in member.items() if k != "kind"})
        if status in BREACH_STATUSES:
            breaches.append({**member, "status": status, "since": data.get("since")})
        if status == "ERROR":
            errors.append({**member, "since": data.get("since"), "error": clip(data.get("error"), 500),
                           "status_before_error": data.get("before_error")})
        if data.get("down_since"):
            down_candidates.append((entity, data))

    async def open_window(item: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any] | None:
        entity, data = item
        rows = await store.list_downtimes(entity["RowKey"], limit=1)
        window = rows[0] if rows and rows[0].get("ended_at") is None else None
        started = window["started_at"] if window else datetime.fromisoformat(data["down_since"])
        return {**_member(entity, data), "started_at": started.isoformat(),
                "duration_seconds": max(0, round((now - started).total_seconds())),
                "reason": clip((window or {}).get("reason") or None, 500), "window_stored": window is not None}

    downtimes = [w for w in await _gather(down_candidates, open_window) if w]

    since = now - UPTIME_WINDOW
    uptimes = await _gather(enabled, lambda e: uptime_since(store, e["RowKey"], since, rolled_until))
    per_kind: dict[str, dict[str, Any]] = {}
    total = _acc()
    for entity, acc in zip(enabled, uptimes):
        kind_acc = per_kind.setdefault(entity.get("kind"), {"acc": _acc(), "monitors": []})
        for key in total:
            kind_acc["acc"][key] += acc[key]
            total[key] += acc[key]
        if acc["checks"]:
            row = states.get(entity["RowKey"])
            kind_acc["monitors"].append({"id": entity["RowKey"], "name": _display_name(entity, row.data if row
                                                                                         else None),
                                         "checks": int(acc["checks"]), "up": int(acc["up"]),
                                         "percent": _percent(acc)})

    async def kind_records(kind: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return await store.get_kind_meta(kind), await store.newest_tick(kind)

    records = dict(zip(sorted(KINDS), await asyncio.gather(*(kind_records(k) for k in sorted(KINDS)))))
    stale: list[dict[str, Any]] = []
    for kind, view in kind_view.items():
        meta, tick = records.get(kind, ({}, None))
        acc_kind = per_kind.get(kind, {"acc": _acc(), "monitors": []})
        acc = acc_kind["acc"]
        view["uptime_24h"] = {"percent": _percent(acc), "checks": int(acc["checks"]), "up": int(acc["up"]),
                              "avg_latency_ms": round(acc["latency_sum"] / acc["latency_count"], 1)
                              if acc["latency_count"] else None, "monitors": acc_kind["monitors"]}
        newest = (tick or {}).get("finished_at") or (tick or {}).get("started_at")
        view["newest_result"] = {"at": _iso(newest), "age_seconds": round((now - newest).total_seconds())
                                 if newest else None, "trigger": (tick or {}).get("trigger")}
        last_run: datetime | None = meta.get("last_tick_at")
        paused = bool(meta.get("paused"))
        reason = None
        if view["enabled"] and not paused:
            if last_run is None:
                reason = "its timer has never run"
            elif now - last_run > STALE_AFTER:
                reason = f"its timer last ran {round((now - last_run).total_seconds())} s ago"
        view["timer"] = {"paused": paused, "last_run_at": _iso(last_run),
                         "age_seconds": round((now - last_run).total_seconds()) if last_run else None,
                         "stale": reason is not None, "reason": reason}
        if reason:
            stale.append({"kind": kind, "reason": reason, "last_run_at": _iso(last_run),
                          "enabled_monitors": view["enabled"]})
        view["by_status"] = dict(sorted(view["by_status"].items(), key=lambda kv: _status_rank(kv[0])))

    events = await store.list_events_between(period_from, now, limit=MAX_EVENTS,
                                             select=["type", "monitor_id", "monitor_name", "kind"])
    by_type: dict[str, dict[str, Any]] = {}
    for event in events:
        bucket = by_type.setdefault(event.get("type") or "?", {"count": 0, "monitors": []})
        bucket["count"] += 1
        member = {"id": event.get("monitor_id"), "name": event.get("monitor_name"), "kind": event.get("kind")}
        if member not in bucket["monitors"]:
            bucket["monitors"].append(member)

    snapshot: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": None,
        "taken_at": now.isoformat(),
        "persisted": False,
        "period": {"from": period_from.isoformat(), "to": now.isoformat(),
                   "previous_snapshot": snap_meta.get("latest_key")},
        "monitors": {"total": len(entities), "enabled": len(enabled), "disabled": disabled},
        "by_status": dict(sorted(by_status.items(), key=lambda kv: _status_rank(kv[0]))),
        "kinds": kind_view,
        "open_downtimes": {"count": len(downtimes), "items": downtimes},
        "threshold_breaches": {"count": len(breaches), "items": breaches},
        "checker_errors": {"count": len(errors), "items": errors},
        "stale_kinds": {"count": len(stale), "items": stale},
        "events": {"count": len(events), "truncated": len(events) >= MAX_EVENTS,
                   "by_type": dict(sorted(by_type.items()))},
        "uptime_24h": {"percent": _percent(total), "checks": int(total["checks"]), "up": int(total["up"]),
                       "rolled_up_until": _iso(rolled_until)},
        "metrics": {},
        "build_ms": 0,
    }
    snapshot["metrics"] = compute_metrics(snapshot)
    snapshot["build_ms"] = round((time.perf_counter() - clock) * 1000)
    return snapshot


def _status_rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def compute_metrics(snapshot: dict[str, Any]) -> dict[str, float | None]:
    """The flat metrics of a snapshot, every catalog name present (null when unknown)."""
    count = {status: bucket["count"] for status, bucket in snapshot["by_status"].items()}
    metrics: dict[str, float | None] = {
        "monitors_total": snapshot["monitors"]["total"],
        "monitors_enabled": snapshot["monitors"]["enabled"],
        "monitors_ok": count.get("UP", 0) + count.get("OK", 0),
        "monitors_degraded": count.get("DEGRADED", 0),
        "monitors_down": count.get("DOWN", 0),
        "monitors_pending": count.get("PENDING", 0),
        "checker_errors": snapshot["checker_errors"]["count"],
        "threshold_breaches": snapshot["threshold_breaches"]["count"],
        "open_downtimes": snapshot["open_downtimes"]["count"],
        "stale_kinds": snapshot["stale_kinds"]["count"],
        "events_in_period": snapshot["events"]["count"],
        "uptime_24h_percent": snapshot["uptime_24h"]["percent"],
    }
    for kind in sorted(KINDS):
        view = snapshot["kinds"].get(kind) or {}
        statuses = view.get("by_status", {})
        metrics[f"{kind}_monitors"] = view.get("enabled", 0)
        metrics[f"{kind}_problems"] = sum(b["count"] for s, b in statuses.items()
                                          if s not in OK_STATUSES and s != "PENDING")
        metrics[f"{kind}_uptime_24h_percent"] = (view.get("uptime_24h") or {}).get("percent")
        metrics[f"{kind}_newest_result_age_seconds"] = (view.get("newest_result") or {}).get("age_seconds")
    return metrics


def explain(snapshot: dict[str, Any], metric: str) -> list[str]:
    """Names of the monitors (or kinds, event types) a metric counted, for alert e-mails."""
    def names(bucket: dict[str, Any] | None) -> list[str]:
        return [m.get("name") or m.get("id") or "?" for m in (bucket or {}).get("monitors", [])]

    statuses = snapshot.get("by_status", {})
    simple = {"monitors_ok": ["UP", "OK"], "monitors_degraded": ["DEGRADED"], "monitors_down": ["DOWN"],
              "monitors_pending": ["PENDING"], "monitors_enabled": list(statuses)}
    if metric in simple:
        return [n for s in simple[metric] for n in names(statuses.get(s))]
    if metric in ("checker_errors", "threshold_breaches", "open_downtimes"):
        return [m.get("name") or m["id"] for m in snapshot.get(metric, {}).get("items", [])]
    if metric == "stale_kinds":
        return [s["kind"] for s in snapshot.get("stale_kinds", {}).get("items", [])]
    if metric == "events_in_period":
        return [f"{t} ×{b['count']}" for t, b in snapshot.get("events", {}).get("by_type", {}).items()]
    for kind, view in snapshot.get("kinds", {}).items():
        if metric in (f"{kind}_monitors", f"{kind}_problems"):
            return [n for s, b in view.get("by_status", {}).items()
                    if metric.endswith("_monitors") or (s not in OK_STATUSES and s != "PENDING") for n in names(b)]
        if metric == f"{kind}_uptime_24h_percent":
            return [f"{m['name']} {m['percent']:g} %" for m in view.get("uptime_24h", {}).get("monitors", [])]
    return []


def _fit(snapshot: dict[str, Any], budget: int = BODY_BUDGET) -> str:
    """The snapshot as JSON within `budget` bytes of UTF-16: member lists are cut (and say how many were left
    out) at 1000, 200, 50, 10 and finally 0 members, the counts stay exact."""
    text = json.dumps(snapshot, separators=(",", ":"), default=str)
    for cap in (1000, 200, 50, 10, 0):
        if len(text.encode("utf-16-le")) <= budget:
            return text
        trimmed = json.loads(text)
        _cut(trimmed, cap)
        text = json.dumps(trimmed, separators=(",", ":"), default=str)
    return text


def _cut(node: Any, cap: int) -> None:
    if isinstance(node, dict):
        for key in ("monitors", "items"):
            value = node.get(key)
            if isinstance(value, list) and len(value) > cap:
                node[f"{key}_omitted"] = node.get(f"{key}_omitted", 0) + len(value) - cap
                node[key] = value[:cap]
        for value in node.values():
            _cut(value, cap)
    elif isinstance(node, list):
        for value in node:
            _cut(value, cap)


# --------------------------------------------------------------------------------------------- lease


class _Held:
    def __init__(self, store: Store, owner: str, etag: str) -> None:
        self.store, self.owner, self.etag, self.lost = store, owner, etag, False

    async def keep(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            etag = await self.store.renew_lease(LEASE, self.owner, self.etag, LEASE_SECONDS)
            if etag is None:
                self.lost = True
                log.error("the snapshot lease expired and was taken over while building")
                return
            self.etag = etag


@asynccontextmanager
async def _holding(store: Store, held: _Held) -> AsyncIterator[_Held]:
    renew = asyncio.create_task(held.keep())
    try:
        yield held
    finally:
        renew.cancel()
        try:
            await renew
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - only the renewal loop
            pass
        if not held.lost:
            await asyncio.shield(store.release_lease(LEASE, held.etag))


async def _stored(store: Store, key: str) -> dict[str, Any] | None:
    entity = await store.get_snapshot(key)
    return snapshot_of(entity) if entity else None


async def take_snapshot(store: Store, settings: Settings, persist: bool, wait: float = WAIT_SECONDS) -> dict:
    """Build a snapshot under the lease (and store it, evaluate the alert rules, purge old ones when `persist`).
    While another build holds the lease, wait up to `wait` seconds: a snapshot it stores meanwhile is returned
    (`coalesced: true`); when the wait runs out, Busy."""
    owner = uuid.uuid4().hex
    seen = await store.latest_snapshot_key()  # read before trying, so a snapshot stored meanwhile is noticed
    deadline = time.monotonic() + max(0.0, wait)
    waited = False
    while True:
        etag = await store.acquire_lease(LEASE, owner, LEASE_SECONDS)
        if etag is not None:
            break
        waited = True
        latest = await store.latest_snapshot_key()
        if latest and latest != seen:
            found = await _stored(store, latest)
            if found:
                return {**found, "coalesced": True}
        if time.monotonic() >= deadline:
            lease = await store.get_lease(LEASE) or {}
            raise Busy("a snapshot is being built right now; retry in a few seconds",
                       [{"field": "(snapshot)", "message": "another build holds the snapshot lease since "
                         f"{_iso(lease.get('acquired_at'))} (until {_iso(lease.get('expires_at'))} at the latest)"}])
        await asyncio.sleep(POLL_SECONDS)
    async with _holding(store, _Held(store, owner, etag)) as held:
        if waited:  # the holder we waited for may have stored one just before releasing
            latest = await store.latest_snapshot_key()
            if latest and latest != seen:
                found = await _stored(store, latest)
                if found:
                    return {**found, "coalesced": True}
        snapshot = await build(store)
        if not persist:
            return {**snapshot, "coalesced": False}
        if held.lost:
            raise RuntimeError("the snapshot lease was lost while building; nothing stored")
        taken_at = datetime.fromisoformat(snapshot["taken_at"])
        snapshot["id"] = inverted(taken_at)  # the row's key
        snapshot["persisted"] = True
        key = await store.save_snapshot(taken_at, snapshot["metrics"], _fit(snapshot),
                                        period_from=datetime.fromisoformat(snapshot["period"]["from"]),
                                        build_ms=snapshot["build_ms"], schema_version=SCHEMA_VERSION)
        log.info("snapshot %s stored: %s", key, json.dumps(snapshot["metrics"], separators=(",", ":")))
        try:
            snapshot["alert_rules"] = await evaluate_rules(store, snapshot)
        except Exception:  # noqa: BLE001 - the snapshot is stored; the rules run again on the next one
            log.exception("alert rules could not be evaluated on snapshot %s", key)
            snapshot["alert_rules"] = {"evaluated": 0, "fired": [], "resolved": [], "error": "see the logs"}
        try:
            await _purge(store, settings, taken_at)
        except Exception:  # noqa: BLE001 - retention is retried on the next build
            log.exception("old snapshots could not be purged")
        return {**snapshot, "coalesced": False}


async def _purge(store: Store, settings: Settings, now: datetime) -> int:
    """Snapshots older than RESULT_RETENTION_DAYS; only the months around the cut (builds purge continuously)."""
    cut = now - timedelta(days=settings.result_retention_days)
    return await store.purge("snapshots", months_back(cut, cut - timedelta(days=62)), cut, "taken_at")


# ---------------------------------------------------------------------------------------- read views


def snapshot_of(entity: dict[str, Any]) -> dict[str, Any]:
    """A stored snapshot row back to the snapshot (its explanation JSON)."""
    parts = int(entity.get("body_parts") or 0)
    body = "".join(entity.get(f"body_{n}") or "" for n in range(parts))
    try:
        snapshot = json.loads(body) if body else {}
    except ValueError:
        snapshot = {}
    snapshot.setdefault("id", entity.get("RowKey"))
    snapshot.setdefault("taken_at", _iso(entity.get("taken_at")))
    snapshot["id"] = snapshot.get("id") or entity.get("RowKey")
    snapshot["persisted"] = True
    snapshot.setdefault("metrics", _row_metrics(entity))
    return snapshot


def _row_metrics(entity: dict[str, Any]) -> dict[str, float | None]:
    return {name: _number(entity.get(snapshot_column(name))) for name in metric_names()}


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


async def latest(store: Store) -> dict[str, Any] | None:
    key = await store.latest_snapshot_key()
    return await _stored(store, key) if key else None


async def history(store: Store, limit: int = 20, before: datetime | None = None, full: bool = False) -> dict:
    select = None if full else ["RowKey", "taken_at", "period_from", "build_ms",
                                *(snapshot_column(n) for n in metric_names())]
    rows = await store.list_snapshots(limit=limit, before=before, select=select)
    items = []
    for row in rows:
        item = {"id": row["RowKey"], "taken_at": _iso(row.get("taken_at")),
                "period_from": _iso(row.get("period_from")), "build_ms": row.get("build_ms"),
                "metrics": _row_metrics(row)}
        if full:
            item["snapshot"] = snapshot_of(row)
        items.append(item)
    return {"items": items, "next_before": items[-1]["taken_at"] if len(items) == limit else None}


def parse_metrics(value: str | None) -> list[str]:
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    if not names:
        raise Invalid("metric is required", [{"field": "metric", "message": "one or more metric names, comma-"
                                              "separated (GET /api/v1/bootstrap lists them)"}])
    if len(names) > 20:
        raise Invalid("at most 20 metrics", [{"field": "metric", "message": "at most 20 names"}])
    known = set(metric_names())
    bad = [{"field": "metric", "message": _unknown_metric(n)} for n in names if n not in known]
    if bad:
        raise Invalid("unknown metric", bad)
    return list(dict.fromkeys(names))


async def timeseries(store: Store, metric: str | None, start: str | None, end: str | None) -> dict[str, Any]:
    names = parse_metrics(metric)
    to = parse_time(end, "to") or _utcnow()
    frm = parse_time(start, "from") or to - timedelta(hours=24)
    if frm >= to:
        raise Invalid("from must be before to", [{"field": "from", "message": "must be before to"}])
    if to - frm > timedelta(days=400):
        raise Invalid("at most 400 days at once", [{"field": "from", "message": "range longer than 400 days"}])
    rows = await store.list_snapshots(limit=MAX_POINTS, before=to + timedelta(microseconds=1), since=frm,
                                      select=["RowKey", "taken_at", *(snapshot_column(n) for n in names)])
    rows.reverse()  # oldest first
    units = {m["name"]: m["unit"] for m in metric_catalog()}
    return {"from": frm.isoformat(), "to": to.isoformat(), "metrics": names, "count": len(rows),
            "truncated": len(rows) >= MAX_POINTS,
            "series": [{"metric": n, "unit": units[n],
                        "points": [[_iso(r.get("taken_at")), _number(r.get(snapshot_column(n)))] for r in rows]}
                       for n in names]}


async def live_states(store: Store) -> list[dict[str, Any]]:
    """Every monitor with its current state (state table; one partition query per kind)."""
    entities = sorted(await store.list_monitors(), key=lambda e: (e.get("name", "").lower(), e["RowKey"]))
    present = sorted({e.get("kind") for e in entities if e.get("kind") in KINDS})
    states: dict[str, Any] = {}
    for rows, _ in await asyncio.gather(*(store.load_states(k) for k in present)):
        states.update(rows)
    out = []
    for entity in entities:
        row = states.get(entity["RowKey"])
        data = row.data if row else {}
        out.append({"id": entity["RowKey"], "name": _display_name(entity, data), "kind": entity.get("kind"),
                    "enabled": entity.get("enabled", True), "status": (row.status if row else "") or "PENDING",
                    "since": data.get("since"), "entity": entity, "state": data})
    return out


def overall(statuses: list[str]) -> str:
    """empty / ok / degraded / down for a set of (enabled monitors') statuses."""
    if not statuses:
        return "empty"
    if any(s in RED_STATUSES for s in statuses):
        return "down"
    if any(s not in OK_STATUSES and s != "PENDING" for s in statuses):
        return "degraded"
    return "ok"


async def status(store: Store) -> dict[str, Any]:
    now = _utcnow()
    monitors, snap, rules = await asyncio.gather(live_states(store), latest(store), list_rules(store))
    live_enabled = [m for m in monitors if m["enabled"]]
    counts: dict[str, int] = {}
    for m in live_enabled:
        counts[m["status"]] = counts.get(m["status"], 0) + 1
    changed = []
    summary = None
    if snap:
        then = {member["id"]: s for s, b in snap.get("by_status", {}).items() for member in b.get("monitors", [])}
        changed = [{"id": m["id"], "name": m["name"], "kind": m["kind"], "snapshot_status": then.get(m["id"]),
                    "live_status": m["status"]} for m in live_enabled if then.get(m["id"]) != m["status"]]
        taken = datetime.fromisoformat(snap["taken_at"])
        summary = {"id": snap.get("id"), "taken_at": snap["taken_at"],
                   "age_seconds": round((now - taken).total_seconds()), "metrics": snap.get("metrics", {}),
                   **{k: snap.get(k, {"count": 0, "items": []}) for k in
                      ("open_downtimes", "threshold_breaches", "checker_errors", "stale_kinds")}}
    firing = [{"id": r["id"], "name": r["name"], "metric": r["metric"], "severity": r["severity"],
               "since": r["state"]["since"], "value": r["state"]["value"]} for r in rules if r["state"]["firing"]]
    return {
        "time": now.isoformat(),
        "overall": overall([m["status"] for m in live_enabled]),
        "live": {"monitors": len(monitors), "enabled": len(live_enabled),
                 "by_status": dict(sorted(counts.items(), key=lambda kv: _status_rank(kv[0]))),
                 "items": [{k: m[k] for k in ("id", "name", "kind", "enabled", "status", "since")} for m in monitors]},
        "snapshot": summary,
        "changed_since_snapshot": changed,
        "alert_rules": {"total": len(rules), "firing": firing},
    }


async def bootstrap(store: Store) -> dict[str, Any]:
    snap, rules = await asyncio.gather(latest(store), list_rules(store))
    return {
        "version": VERSION,
        "time": _utcnow().isoformat(),
        "kinds": kinds(),
        "metrics": metric_catalog(),
        "operators": list(OPERATORS),
        "severities": ["info", "warning", "critical"],
        "event_types": [t.value for t in EventType],
        "snapshot_schedule": SNAPSHOT_SCHEDULE,
        "latest_snapshot": snap,
        "alert_rules": rules,
        "links": {"status": "/api/v1/status", "snapshot": "/api/v1/snapshot", "history": "/api/v1/history",
                  "timeseries": "/api/v1/timeseries", "alert_rules": "/api/v1/alert-rules",
                  "status_page": "/api/status-page", "prometheus": "/api/v1/metrics/prometheus",
                  "openapi": "/api/v1/openapi.json"},
    }


# --------------------------------------------------------------------------------------- alert rules


class AlertRule(BaseModel):
    """A rule over one snapshot metric: fires after `for_snapshots` consecutive snapshots where
    `value <operator> threshold`, resolves on the first one where it does not (a null value never breaches)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str | None = Field(None, description="Assigned by the server.", pattern=r"^[0-9a-f]{32}$")
    name: str = Field("", max_length=200, description="Empty: '<metric> <operator> <threshold>'.")
    metric: str = Field(..., description="A snapshot metric (GET /api/v1/bootstrap → metrics).",
                        json_schema_extra={"enum": metric_names()})
    operator: Operator
    threshold: float = Field(..., allow_inf_nan=False)
    for_snapshots: int = Field(1, ge=1, le=100, description="Consecutive breaching snapshots before it fires.")
    severity: Literal["info", "warning", "critical"] = "warning"
    recipients: list[EmailStr] = Field(default_factory=list, max_length=50,
                                       description="Who is e-mailed; empty = DEFAULT_EMAIL_RECIPIENTS.")
    enabled: bool = True

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in metric_names():
            raise ValueError(_unknown_metric(value))
        return value

    def title(self) -> str:
        return self.name or f"{self.metric} {self.operator} {self.threshold:g}"


def _parse_rule(payload: Any) -> AlertRule:
    if not isinstance(payload, dict):
        raise Invalid("the body must be a JSON object", [{"field": "(body)", "message": "expected an object"}])
    try:
        return AlertRule.model_validate(payload)
    except ValidationError as error:
        raise Invalid("invalid alert rule", validation_details(error)) from None


def _rule_of(entity: dict[str, Any]) -> AlertRule:
    return AlertRule.model_validate_json(entity["spec"])


def _rule_entity(rule: AlertRule, created_at: datetime) -> dict[str, Any]:
    return {"RowKey": rule.id, "name": rule.title(), "enabled": rule.enabled, "spec": rule.model_dump_json(),
            "created_at": created_at, "updated_at": _utcnow()}


def _rule_view(rule: AlertRule, entity: dict[str, Any], state: dict[str, Any] | None,
               value: float | None) -> dict[str, Any]:
    state = state or {}
    return {**rule.model_dump(mode="json"), "name": rule.title(), "created_at": _iso(entity.get("created_at")),
            "updated_at": _iso(entity.get("updated_at")),
            "state": {"firing": bool(state.get("firing")), "consecutive": int(state.get("consecutive", 0)),
                      "since": state.get("since"), "value": value}}


async def _latest_metrics(store: Store) -> dict[str, Any]:
    key = await store.latest_snapshot_key()
    entity = await store.get_snapshot(key) if key else None
    return _row_metrics(entity) if entity else {}


def _looks_like_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


async def list_rules(store: Store) -> list[dict[str, Any]]:
    entities, (states, _), values = await asyncio.gather(store.list_alert_rules(), store.load_states(RULE_KIND),
                                                         _latest_metrics(store))
    out = []
    for entity in sorted(entities, key=lambda e: (e.get("name", "").lower(), e["RowKey"])):
        rule = _rule_of(entity)
        row = states.get(entity["RowKey"])
        out.append(_rule_view(rule, entity, row.data if row else None, values.get(rule.metric)))
    return out


async def _load_rule(store: Store, rule_id: str) -> tuple[dict[str, Any], AlertRule]:
    entity = await store.get_alert_rule(rule_id) if _looks_like_id(rule_id) else None
    if entity is None:
        raise NotFound(f"no alert rule {rule_id}")
    return entity, _rule_of(entity)


async def get_rule(store: Store, rule_id: str) -> dict[str, Any]:
    entity, rule = await _load_rule(store, rule_id)
    row, values = await asyncio.gather(store.get_state(RULE_KIND, rule_id), _latest_metrics(store))
    return _rule_view(rule, entity, row.data if row else None, values.get(rule.metric))


async def create_rule(store: Store, payload: Any) -> dict[str, Any]:
    if isinstance(payload, dict) and payload.get("id") is not None:
        raise Invalid("id is assigned by the server", [{"field": "id", "message": "must not be given"}])
    rule = _parse_rule(payload)
    if len(await store.list_alert_rules()) >= MAX_RULES:
        raise Invalid(f"at most {MAX_RULES} alert rules", [{"field": "(rules)", "message": "delete one first"}])
    rule.id = uuid.uuid4().hex
    entity = _rule_entity(rule, _utcnow())
    await store.insert_alert_rule(entity)
    return _rule_view(rule, entity, None, (await _latest_metrics(store)).get(rule.metric))


async def update_rule(store: Store, rule_id: str, patch: Any) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise Invalid("the body must be a JSON object", [{"field": "(body)", "message": "expected an object"}])
    if patch.get("id", rule_id) != rule_id:
        raise Invalid("id cannot be changed", [{"field": "id", "message": "read-only"}])
    entity, rule = await _load_rule(store, rule_id)
    new = _parse_rule({**rule.model_dump(mode="json"), **patch, "id": rule_id})
    new_entity = _rule_entity(new, entity.get("created_at") or _utcnow())
    try:
        await store.replace_alert_rule(new_entity, entity.metadata["etag"])
    except Conflict:
        raise Duplicate("the rule was changed by someone else at the same time; retry",
                        [{"field": "(rule)", "message": "concurrent update"}]) from None
    return await get_rule(store, rule_id)


async def delete_rule(store: Store, rule_id: str) -> None:
    await _load_rule(store, rule_id)
    await store.delete_alert_rule(rule_id, RULE_KIND)


def step(rule: AlertRule, prev: dict[str, Any], value: float | None, snapshot: dict[str, Any],
         now: datetime) -> tuple[dict[str, Any], list[Event]]:
    """Pure: a rule's next state and events for one stored snapshot."""
    state = {"consecutive": int(prev.get("consecutive", 0)), "firing": bool(prev.get("firing"))}
    if prev.get("since"):
        state["since"] = prev["since"]
    breach = value is not None and OPERATORS[rule.operator](value, rule.threshold)
    events: list[Event] = []
    title = rule.title()
    details: dict[str, Any] = {"rule_id": rule.id, "metric": rule.metric, "operator": rule.operator,
                               "threshold": rule.threshold, "value": value, "for_snapshots": rule.for_snapshots,
                               "snapshot_id": snapshot.get("id"), "snapshot_taken_at": snapshot.get("taken_at"),
                               "recipients": list(rule.recipients)}
    shown = f"{value:g}" if value is not None else "unknown"
    if breach:
        state["consecutive"] = min(state["consecutive"] + 1, rule.for_snapshots)
        if not state["firing"] and state["consecutive"] >= rule.for_snapshots:
            state["firing"] = True
            state["since"] = now.isoformat()
            counted = explain(snapshot, rule.metric)
            events.append(Event(
                type=EventType.ALERT_RULE_FIRING, kind=RULE_KIND, monitor_id=rule.id or "", monitor_name=title,
                severity=rule.severity, occurred_at=now,
                message=f"{rule.metric} is {shown} ({rule.operator} {rule.threshold:g}) in {rule.for_snapshots} "
                        f"consecutive snapshot{'s' if rule.for_snapshots != 1 else ''}.",
                details={**details, "counted": clip(", ".join(counted), 2000) or None}))
    else:
        state["consecutive"] = 0
        if state["firing"]:
            started = datetime.fromisoformat(state.pop("since")) if state.get("since") else None
            state["firing"] = False
            seconds = round((now - started).total_seconds()) if started else None
            events.append(Event(
                type=EventType.ALERT_RULE_RESOLVED, kind=RULE_KIND, monitor_id=rule.id or "", monitor_name=title,
                severity="info", occurred_at=now,
                message=f"{rule.metric} is {shown}: no longer {rule.operator} {rule.threshold:g}.",
                details={**details, "firing_seconds": seconds}))
        state.pop("since", None)
    return state, events


async def evaluate_rules(store: Store, snapshot: dict[str, Any]) -> dict[str, Any]:
    """Every enabled rule on a stored snapshot: state + events committed together (outbox), then published."""
    now = datetime.fromisoformat(snapshot["taken_at"])
    entities, (states, outbox) = await asyncio.gather(store.list_alert_rules(), store.load_states(RULE_KIND))
    if outbox:  # left by a build that crashed between commit and publish (we hold the lease: nobody else does)
        await engine.publish(store, outbox)
    fired, resolved, evaluated = [], [], 0
    rows: list[OutboxRow] = []
    for entity in entities:
        try:
            rule = _rule_of(entity)
        except ValidationError:
            log.exception("alert rule %s is unreadable (a metric that no longer exists?)", entity["RowKey"])
            continue
        if not rule.enabled:
            continue
        evaluated += 1
        row = states.get(rule.id or "")
        prev = row.data if row else {}
        new, events = step(rule, prev, snapshot["metrics"].get(rule.metric), snapshot, now)
        if new == prev and not events:
            continue  # the steady path writes nothing
        payloads = [{"id": e.id, "event": e.model_dump(mode="json"), "ops": []} for e in events]
        try:
            rows += await store.commit_state(RULE_KIND, rule.id or "", new, "FIRING" if new["firing"] else "OK",
                                             row.etag if row else None, payloads)
        except Conflict:
            log.warning("alert rule %s state changed concurrently; evaluated again on the next snapshot", rule.id)
            continue
        for event in events:
            (fired if event.type == EventType.ALERT_RULE_FIRING else resolved).append(
                {"id": rule.id, "name": rule.title(), "event_id": event.id})
    await engine.publish(store, rows)
    return {"evaluated": evaluated, "fired": fired, "resolved": resolved}
