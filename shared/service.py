"""Management services: what the HTTP API and the CLI both call. No HTTP or terminal concerns here.

Errors are typed so each front end can render them: Invalid (422, with field details), Duplicate (409),
NotFound (404).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from croniter import croniter
from pydantic import ValidationError

from monitors import KINDS, from_entity, kind_module, parse_spec, to_entity_spec
from monitors.base import MonitorBase, next_slot
from monitors.policy import breaker_open
from shared import engine
from shared.settings import Settings
from shared.storage import Conflict, Store, hour_floor, unique_row

VERSION = "0.1.0"
WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30), "90d": timedelta(days=90)}
TIMER_PERIOD = timedelta(minutes=1)  # every kind's timer runs each minute (see shared/blueprints/timers.py)


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class Invalid(ServiceError):
    status = 422
    code = "validation_error"


class Duplicate(ServiceError):
    status = 409
    code = "conflict"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


def validation_details(error: ValidationError) -> list[dict[str, Any]]:
    out = []
    for item in error.errors(include_url=False):
        loc = [str(p) for p in item.get("loc", ())]
        # drop the discriminator's tag (e.g. "website") from union locations
        if loc and loc[0] in KINDS:
            loc = loc[1:]
        out.append({"field": ".".join(loc) or "(body)",
                    "message": str(item.get("msg", "invalid")).removeprefix("Value error, "),
                    "type": item.get("type")})
    return out


def _to_iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _clean(entity: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: _to_iso(v) for k, v in entity.items() if k not in ("PartitionKey", "RowKey", *drop)}


# -------------------------------------------------------------------------------------------- monitors


def _view(cfg: MonitorBase, entity: dict[str, Any], state: dict[str, Any] | None, status: str | None) -> dict:
    data = cfg.public_view() if hasattr(cfg, "public_view") else cfg.model_dump(mode="json")
    data["created_at"] = _to_iso(entity.get("created_at"))
    data["updated_at"] = _to_iso(entity.get("updated_at"))
    state = state or {}
    if not data.get("name") and state.get("name"):  # a kind may leave `name` empty and show what it found
        data["name"] = state["name"]  # (stock: the product's name in WHMCS)
    data["state"] = {
        "status": status or "PENDING",
        "since": state.get("since"),
        "consecutive_failures": state.get("fails", 0),
        "down_since": state.get("down_since"),
        "circuit_open": breaker_open(cfg, state),
        "error": state.get("error"),
        "next_check_at": next_slot(cfg, datetime.now(timezone.utc), breaker_open(cfg, state)).isoformat()
        if cfg.enabled else None,
    }
    return data


def _parse(payload: Any) -> MonitorBase:
    if not isinstance(payload, dict):
        raise Invalid("the body must be a JSON object", [{"field": "(body)", "message": "expected an object"}])
    if "kind" not in payload:
        raise Invalid("kind is required", [{"field": "kind", "message": f"one of: {', '.join(sorted(KINDS))}"}])
    if payload["kind"] not in KINDS:
        raise Invalid("unknown kind", [{"field": "kind", "message": f"one of: {', '.join(sorted(KINDS))}"}])
    try:
        return parse_spec(payload)
    except ValidationError as error:
        raise Invalid("invalid monitor", validation_details(error)) from None


def _entity(cfg: MonitorBase, created_at: datetime) -> dict[str, Any]:
    return {"RowKey": cfg.id, "kind": cfg.kind, "name": cfg.name, "enabled": cfg.enabled,  # type: ignore[attr-defined]
            "spec": to_entity_spec(cfg), "created_at": created_at, "updated_at": datetime.now(timezone.utc)}


def _duplicate(cfg: MonitorBase, key: str | None) -> Duplicate:
    field = getattr(kind_module(cfg.kind), "UNIQUE_FIELD",  # type: ignore[attr-defined]
                    "url" if cfg.kind == "website" else "(unique key)")  # type: ignore[attr-defined]
    return Duplicate(f"another {cfg.kind} monitor already uses this {field}",  # type: ignore[attr-defined]
                     [{"field": field, "message": "must be unique"}])


async def create_monitor(store: Store, payload: dict[str, Any]) -> dict[str, Any]:
    if isinstance(payload, dict) and payload.get("id") is not None:
        raise Invalid("id is assigned by the server", [{"field": "id", "message": "must not be given"}])
    cfg = _parse(payload)
    cfg.id = uuid.uuid4().hex
    keys = [unique_row(cfg.kind, k) for k in cfg.unique_keys()]  # type: ignore[attr-defined]
    entity = _entity(cfg, datetime.now(timezone.utc))
    try:
        await store.insert_monitor(entity, keys)
    except Conflict as conflict:
        raise _duplicate(cfg, conflict.key) from None
    return _view(cfg, entity, None, None)


async def _load(store: Store, monitor_id: str) -> tuple[dict[str, Any], MonitorBase]:
    entity = await store.get_monitor(monitor_id) if _looks_like_id(monitor_id) else None
    if entity is None:
        raise NotFound(f"no monitor {monitor_id}")
    return entity, from_entity(entity)


def _looks_like_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


async def get_monitor(store: Store, monitor_id: str) -> dict[str, Any]:
    entity, cfg = await _load(store, monitor_id)
    row = await store.get_state(entity["kind"], monitor_id)
    return _view(cfg, entity, row.data if row else None, row.status if row else None)


async def list_monitors(store: Store, kind: str | None = None) -> list[dict[str, Any]]:
    if kind is not None and kind not in KINDS:
        raise Invalid("unknown kind", [{"field": "kind", "message": f"one of: {', '.join(sorted(KINDS))}"}])
    entities = await store.list_monitors(kind)
    states: dict[str, Any] = {}
    for k in {e["kind"] for e in entities}:
        states.update((await store.load_states(k))[0])
    out = []
    for entity in sorted(entities, key=lambda e: (e.get("name", "").lower(), e["RowKey"])):
        row = states.get(entity["RowKey"])
        try:
            cfg = from_entity(entity)
        except Exception:  # noqa: BLE001 - one unreadable definition must not hide the others
            out.append({"id": entity["RowKey"], "kind": entity.get("kind"), "name": entity.get("name", "?"),
                        "enabled": entity.get("enabled"), "state": {"status": "ERROR",
                                                                    "error": "stored definition is unreadable"}})
            continue
        out.append(_view(cfg, entity, row.data if row else None, row.status if row else None))
    return out


async def update_monitor(store: Store, monitor_id: str, patch: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise Invalid("the body must be a JSON object", [{"field": "(body)", "message": "expected an object"}])
    if patch.get("id", monitor_id) != monitor_id:
        raise Invalid("id cannot be changed", [{"field": "id", "message": "read-only"}])
    entity, cfg = await _load(store, monitor_id)
    if "kind" in patch and patch["kind"] != entity["kind"]:
        raise Invalid("kind cannot be changed", [{"field": "kind", "message": "read-only"}])
    merged = {**cfg.model_dump(mode="json"), **patch, "id": monitor_id, "kind": entity["kind"]}
    if "cron" in patch and patch["cron"] and "interval_seconds" not in patch:
        merged["interval_seconds"] = None
    if "interval_seconds" in patch and patch["interval_seconds"] and "cron" not in patch:
        merged["cron"] = None
    new = _parse(merged)
    old_keys = {unique_row(cfg.kind, k) for k in cfg.unique_keys()}  # type: ignore[attr-defined]
    new_keys = {unique_row(new.kind, k) for k in new.unique_keys()}  # type: ignore[attr-defined]
    new_entity = _entity(new, entity.get("created_at") or datetime.now(timezone.utc))
    try:
        await store.update_monitor(new_entity, entity.metadata["etag"], old_keys - new_keys, new_keys - old_keys)
    except Conflict as conflict:
        if conflict.key:
            raise _duplicate(new, conflict.key) from None
        raise Duplicate("the monitor was changed by someone else at the same time; retry",
                        [{"field": "(monitor)", "message": "concurrent update"}]) from None
    row = await store.get_state(entity["kind"], monitor_id)
    return _view(new, new_entity, row.data if row else None, row.status if row else None)


async def set_enabled(store: Store, monitor_id: str, enabled: bool) -> dict[str, Any]:
    return await update_monitor(store, monitor_id, {"enabled": enabled})


async def delete_monitor(store: Store, monitor_id: str) -> None:
    entity, cfg = await _load(store, monitor_id)
    keys = [unique_row(cfg.kind, k) for k in cfg.unique_keys()]  # type: ignore[attr-defined]
    await store.delete_monitor(monitor_id, entity["kind"], keys)


# ---------------------------------------------------------------------------------------- history


def parse_time(value: str | None, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise Invalid(f"{field} must be an ISO-8601 time", [{"field": field, "message": "invalid datetime"}]) \
            from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def parse_limit(value: str | int | None, default: int = 50, maximum: int = 1000) -> int:
    if value in (None, ""):
        return default
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise Invalid("limit must be a whole number", [{"field": "limit", "message": "not an integer"}]) from None
    if not 1 <= limit <= maximum:
        raise Invalid(f"limit must be 1–{maximum}", [{"field": "limit", "message": f"between 1 and {maximum}"}])
    return limit


async def results(store: Store, monitor_id: str, limit: int = 50, before: datetime | None = None) -> dict:
    await _load(store, monitor_id)
    rows = await store.query_results(monitor_id, limit=limit, before=before)
    items = [_clean(r, drop=("monitor_id",)) for r in rows]
    return {"items": items, "next_before": items[-1]["ts"] if len(items) == limit else None}


async def downtimes(store: Store, monitor_id: str, limit: int = 100) -> dict:
    await _load(store, monitor_id)
    items = []
    now = datetime.now(timezone.utc)
    for row in await store.list_downtimes(monitor_id, limit):
        item = _clean(row)
        end = row.get("ended_at")
        item["open"] = end is None
        item["duration_seconds"] = round(((end or now) - row["started_at"]).total_seconds())
        items.append(item)
    return {"items": items}


def _aggregate(rows: list[dict[str, Any]], out: dict[str, float]) -> None:
    for row in rows:
        out["checks"] += row.get("count", 0)
        out["up"] += row.get("up", 0)
        out["latency_sum"] += row.get("latency_sum", 0.0)
        out["latency_count"] += row.get("latency_count", 0)
        if row.get("latency_count"):
            out["min"] = min(out["min"], row["latency_min"])
            out["max"] = max(out["max"], row["latency_max"])


def rollup_of(rows: list[dict[str, Any]]) -> dict[str, float]:
    """count / up / latency aggregates of raw results (used for rollups and the not-yet-rolled-up tail)."""
    agg = {"count": 0, "up": 0, "degraded": 0, "latency_sum": 0.0, "latency_count": 0,
           "latency_min": 0.0, "latency_max": 0.0}
    for r in rows:
        if r.get("outcome") == "error":
            continue  # a checker error says nothing about the site
        agg["count"] += 1
        agg["up"] += r.get("outcome") in ("up", "degraded")
        agg["degraded"] += r.get("outcome") == "degraded"
        lat = r.get("latency_ms")
        if lat is not None and r.get("outcome") != "down":
            agg["latency_min"] = lat if agg["latency_count"] == 0 else min(agg["latency_min"], lat)
            agg["latency_max"] = max(agg["latency_max"], lat)
            agg["latency_sum"] += lat
            agg["latency_count"] += 1
    return agg


async def uptime(store: Store, monitor_id: str, window: str = "24h") -> dict[str, Any]:
    if window not in WINDOWS:
        raise Invalid("window must be one of 24h, 7d, 30d, 90d",
                      [{"field": "window", "message": f"one of: {', '.join(WINDOWS)}"}])
    await _load(store, monitor_id)
    now = datetime.now(timezone.utc)
    since = now - WINDOWS[window]
    meta = await store.get_kind_meta("_rollup")
    rolled_until: datetime | None = meta.get("rolled_until")
    acc = {"checks": 0, "up": 0, "latency_sum": 0.0, "latency_count": 0, "min": float("inf"), "max": 0.0}
    tail_from = since
    if rolled_until and rolled_until > since:
        rows = [r for r in await store.query_rollups(monitor_id, since) if r["hour"] < rolled_until]
        _aggregate(rows, acc)
        tail_from = rolled_until
    # the hours not rolled up yet (normally under two) come from raw results
    tail = await store.query_results(monitor_id, limit=100000, since=tail_from)
    _aggregate([rollup_of(tail)], acc)
    checks = int(acc["checks"])
    return {
        "window": window, "from": since.isoformat(), "to": now.isoformat(), "checks": checks,
        "up": int(acc["up"]),
        "uptime_percent": round(100.0 * acc["up"] / checks, 3) if checks else None,
        "avg_latency_ms": round(acc["latency_sum"] / acc["latency_count"], 1) if acc["latency_count"] else None,
        "min_latency_ms": acc["min"] if acc["latency_count"] else None,
        "max_latency_ms": acc["max"] if acc["latency_count"] else None,
        "rolled_up_until": rolled_until.isoformat() if rolled_until else None,
    }


async def events(store: Store, limit: int = 50, before: datetime | None = None, monitor_id: str | None = None,
                 type_: str | None = None) -> dict[str, Any]:
    rows = await store.list_events(limit=limit, before=before, monitor_id=monitor_id, type_=type_)
    items = []
    for row in rows:
        item = _clean(row, drop=("event_id",))
        item["id"] = row["event_id"]
        item["details"] = json.loads(row.get("details") or "{}")
        items.append(item)
    return {"items": items, "next_before": items[-1]["occurred_at"] if len(items) == limit else None}


async def resource_metrics(store: Store) -> dict[str, Any]:
    """GET /metrics (seed 004) from stored results only — nothing is measured here: each resource monitor's latest
    result (its metrics, their statuses, when), the same flattened as "{monitor}/{metric}", and `overall`, the
    worst status of the enabled monitors (OK < WARNING < ERROR < ALERT; never-checked ones do not count; UNKNOWN
    when none counts)."""
    import asyncio

    from monitors import resource

    entities = sorted(await store.list_monitors(resource.KIND), key=lambda e: (e.get("name", "").lower(), e["RowKey"]))
    checked = (await store.load_states(resource.KIND))[0]  # a monitor without a state row has no result either

    async def latest_of(monitor_id: str) -> list[dict[str, Any]]:
        return await store.query_results(monitor_id, limit=1) if monitor_id in checked else []

    latest = await asyncio.gather(*(latest_of(e["RowKey"]) for e in entities))
    names = [e.get("name") or e["RowKey"] for e in entities]
    rank = {"OK": 0, "WARNING": 1, "ERROR": 2, "ALERT": 3}
    items, metrics, statuses, counted = [], {}, {}, []
    for entity, name, rows in zip(entities, names, latest):
        view = resource.result_view(rows[0] if rows else None)
        try:
            source = json.loads(entity.get("spec") or "{}").get("source", {}).get("type")
        except (ValueError, AttributeError):
            source = None
        item = {"id": entity["RowKey"], "name": name, "source": source, "enabled": entity.get("enabled", True), **view}
        items.append(item)
        if item["enabled"] and view["status"] in rank:
            counted.append(view["status"])
        label = name if names.count(name) == 1 else f"{name} ({entity['RowKey'][:8]})"
        for metric, value in view["metrics"].items():
            metrics[f"{label}/{metric}"] = value
            statuses[f"{label}/{metric}"] = view["statuses"][metric]
    overall = max(counted, key=rank.__getitem__) if counted else "UNKNOWN"
    stamps = [item["last_updated"] for item in items if item["last_updated"]]
    return {"metrics": metrics, "statuses": {**statuses, "overall": overall}, "overall": overall,
            "last_updated": max(stamps) if stamps else None, "monitors": items}


# ----------------------------------------------------------------------------------------- running


def outcome_view(outcome: engine.Outcome) -> dict[str, Any]:
    r = outcome.result
    return {"monitor_id": outcome.monitor_id, "name": outcome.name, "ts": outcome.slot.isoformat(),
            "outcome": r.outcome, "status": outcome.status, "latency_ms": r.latency_ms, "error": r.error,
            "events": outcome.events, **{k: _to_iso(v) for k, v in r.data.items()}}


async def run_monitor(store: Store, settings: Settings, monitor_id: str) -> dict[str, Any]:
    await _load(store, monitor_id)
    return outcome_view(await engine.run_monitor(store, settings, monitor_id))


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise NotFound(f"no kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    return kind


async def run_kind(store: Store, settings: Settings, kind: str, trigger: str = "manual") -> dict[str, Any]:
    summary = await engine.run_kind(store, settings, _kind(kind), trigger=trigger)
    record = {k: _to_iso(v) for k, v in summary.record().items()}
    return {"kind": kind, **record, "results": [outcome_view(o) for o in summary.outcomes]}


async def set_paused(store: Store, kind: str, paused: bool) -> dict[str, Any]:
    await store.set_kind_meta(_kind(kind), paused=paused)
    return {"kind": kind, "paused": paused}


# ------------------------------------------------------------------------------------------- health


def _timer_gaps(ticks: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Periods of the last 24 h with no timer run for more than two timer periods."""
    times = sorted(t["started_at"] for t in ticks if t.get("trigger") == "timer")
    gaps = []
    limit = 2 * TIMER_PERIOD
    for a, b in zip(times, times[1:] + [now]):
        if b - a > limit:
            gaps.append({"from": a.isoformat(), "to": b.isoformat(), "missed_runs":
                         int((b - a) / TIMER_PERIOD) - 1, "ongoing": b is now})
    return gaps


async def health(store: Store, settings: Settings) -> tuple[bool, dict[str, Any]]:
    now = datetime.now(timezone.utc)
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
            "last_run": {k: _to_iso(last.get(k)) for k in ("due_at", "started_at", "finished_at", "duration_ms",
                                                           "monitors", "checked", "errors", "events")}
            if last else None,
            "next_due": nxt.isoformat(),
            "runs_24h": sum(1 for t in ticks if t.get("trigger") == "timer"),
            "gaps_24h": _timer_gaps(ticks, now) if ticks else [],
        }
    return True, body


# ------------------------------------------------------------------------------------ maintenance


async def rollup(store: Store, now: datetime | None = None, horizon_days: int = 90) -> dict[str, Any]:
    """Fold completed hours of raw results into hourly rollups (idempotent: an hour is recomputed whole).

    Starts where the last run stopped (the `_rollup` watermark); the first run reaches back to the raw-result
    retention horizon, so uptime never misses hours that exist only as raw rows."""
    now = now or datetime.now(timezone.utc)
    meta = await store.get_kind_meta("_rollup")
    end = hour_floor(now)
    start = hour_floor(meta.get("rolled_until") or end - timedelta(days=horizon_days))
    if start >= end:
        return {"hours": 0, "monitors": 0}
    entities = await store.list_monitors()
    written = 0
    for entity in entities:
        monitor_id = entity["RowKey"]
        rows = await store.query_results(monitor_id, limit=1_000_000, before=end, since=start)
        by_hour: dict[datetime, list[dict[str, Any]]] = {}
        for row in rows:
            by_hour.setdefault(hour_floor(row["ts"]), []).append(row)
        if by_hour:
            await store.write_rollups(monitor_id, {h: rollup_of(rs) for h, rs in by_hour.items()})
            written += len(by_hour)
    await store.set_kind_meta("_rollup", rolled_until=end)
    return {"from": start.isoformat(), "to": end.isoformat(), "monitors": len(entities), "rollups": written}


async def purge(store: Store, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Retention: raw results, events and ticks older than RESULT_RETENTION_DAYS; rollups after
    ROLLUP_RETENTION_DAYS. Partitions are month-bounded, so only a few are ever looked at."""
    from shared.storage import SHARDS, months_back

    now = now or datetime.now(timezone.utc)
    raw_cut = now - timedelta(days=settings.result_retention_days)
    roll_cut = now - timedelta(days=settings.rollup_retention_days)
    raw_months = months_back(raw_cut, raw_cut - timedelta(days=400))
    done = {
        "results": await store.purge("results", [f"{s}-{m}" for s in range(SHARDS) for m in raw_months],
                                     raw_cut, "ts"),
        "events": await store.purge("events", raw_months, raw_cut, "occurred_at"),
        "ticks": await store.purge("ticks", [f"{k}-{m}" for k in KINDS for m in raw_months], raw_cut,
                                   "started_at"),
        "rollups": await store.purge("rollups", [f"{s}-{y}" for s in range(SHARDS)
                                                 for y in range(roll_cut.year - 2, roll_cut.year + 1)],
                                     roll_cut, "hour"),
    }
    return done


def kinds() -> list[dict[str, Any]]:
    return [{"kind": k, "schema": kind_module(k).Config.model_json_schema()} for k in sorted(KINDS)]
