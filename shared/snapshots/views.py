"""Reading snapshots back: the stored ones, their history and time series, the live status, and bootstrap (what
a UI needs in one call). Empty tables are a valid state: every answer is well-formed before any data exists."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors import KINDS, status_info, status_rank
from shared import VERSION
from shared.errors import Invalid, field_error
from shared.events import EventType
from shared.manage.history import parse_time
from shared.manage.monitors import kinds
from shared.snapshots.build import display_name, iso
from shared.snapshots.metrics import metric_catalog, metric_names, unknown_metric
from shared.storage.keys import snapshot_column
from shared.storage.snapshots import snapshot_body

if TYPE_CHECKING:
    from shared.storage import Store

SNAPSHOT_SCHEDULE = "0 */15 * * * *"  # NCRONTAB (sec min hour day month weekday): every 15 minutes
MAX_POINTS = 10_000  # points per /timeseries answer


def _utcnow() -> datetime:
    return datetime.now(UTC)


def snapshot_of(entity: dict[str, Any]) -> dict[str, Any]:
    """A stored snapshot row back to the snapshot (its explanation JSON)."""
    try:
        body = snapshot_body(entity)
        snapshot = json.loads(body) if body else {}
    except ValueError:
        snapshot = {}
    snapshot.setdefault("id", entity.get("RowKey"))
    snapshot.setdefault("taken_at", iso(entity.get("taken_at")))
    snapshot["id"] = snapshot.get("id") or entity.get("RowKey")
    snapshot["persisted"] = True
    snapshot.setdefault("metrics", row_metrics(entity))
    return snapshot


def row_metrics(entity: dict[str, Any]) -> dict[str, float | None]:
    return {name: _number(entity.get(snapshot_column(name))) for name in metric_names()}


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


async def stored(store: Store, key: str) -> dict[str, Any] | None:
    entity = await store.get_snapshot(key)
    return snapshot_of(entity) if entity else None


async def latest(store: Store) -> dict[str, Any] | None:
    key = await store.latest_snapshot_key()
    return await stored(store, key) if key else None


async def history(store: Store, limit: int = 20, before: datetime | None = None, full: bool = False) -> dict:
    select = None if full else ["RowKey", "taken_at", "period_from", "build_ms",
                                *(snapshot_column(n) for n in metric_names())]
    rows = await store.list_snapshots(limit=limit, before=before, select=select)
    items = []
    for row in rows:
        item = {"id": row["RowKey"], "taken_at": iso(row.get("taken_at")),
                "period_from": iso(row.get("period_from")), "build_ms": row.get("build_ms"),
                "metrics": row_metrics(row)}
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
        raise Invalid("at most 20 metrics", field_error("metric", "at most 20 names"))
    known = set(metric_names())
    bad = [{"field": "metric", "message": unknown_metric(n)} for n in names if n not in known]
    if bad:
        raise Invalid("unknown metric", bad)
    return list(dict.fromkeys(names))


async def timeseries(store: Store, metric: str | None, start: str | None, end: str | None) -> dict[str, Any]:
    names = parse_metrics(metric)
    to = parse_time(end, "to") or _utcnow()
    frm = parse_time(start, "from") or to - timedelta(hours=24)
    if frm >= to:
        raise Invalid("from must be before to", field_error("from", "must be before to"))
    if to - frm > timedelta(days=400):
        raise Invalid("at most 400 days at once", field_error("from", "range longer than 400 days"))
    rows = await store.list_snapshots(limit=MAX_POINTS, before=to + timedelta(microseconds=1), since=frm,
                                      select=["RowKey", "taken_at", *(snapshot_column(n) for n in names)])
    rows.reverse()  # oldest first
    units = {m["name"]: m["unit"] for m in metric_catalog()}
    return {"from": frm.isoformat(), "to": to.isoformat(), "metrics": names, "count": len(rows),
            "truncated": len(rows) >= MAX_POINTS,
            "series": [{"metric": n, "unit": units[n],
                        "points": [[iso(r.get("taken_at")), _number(r.get(snapshot_column(n)))] for r in rows]}
                       for n in names]}


async def live_states(store: Store) -> list[dict[str, Any]]:
    """Every monitor with its current state (state table; one partition query per kind)."""
    entities = sorted(await store.list_monitors(), key=lambda e: (e.get("name", "").lower(), e["RowKey"]))
    present = sorted({str(e["kind"]) for e in entities if e.get("kind") in KINDS})
    states: dict[str, Any] = {}
    for rows, _ in await asyncio.gather(*(store.load_states(k) for k in present)):
        states.update(rows)
    out = []
    for entity in entities:
        row = states.get(entity["RowKey"])
        data = row.data if row else {}
        out.append({"id": entity["RowKey"], "name": display_name(entity, data), "kind": entity.get("kind"),
                    "enabled": entity.get("enabled", True), "status": (row.status if row else "") or "PENDING",
                    "since": data.get("since"), "entity": entity, "state": data,
                    "checked": row is not None})  # no state row: never settled a check, so no result either
    return out


def overall(statuses: list[str]) -> str:
    """empty / ok / degraded / down for a set of (enabled monitors') statuses."""
    if not statuses:
        return "empty"
    if any(status_info(s).red for s in statuses):
        return "down"
    if any(not status_info(s).healthy and s != "PENDING" for s in statuses):
        return "degraded"
    return "ok"


async def status(store: Store) -> dict[str, Any]:
    now = _utcnow()
    from shared.rules.service import list_rules

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
                 "by_status": dict(sorted(counts.items(), key=lambda kv: status_rank(kv[0]))),
                 "items": [{k: m[k] for k in ("id", "name", "kind", "enabled", "status", "since")} for m in monitors]},
        "snapshot": summary,
        "changed_since_snapshot": changed,
        "alert_rules": {"total": len(rules), "firing": firing},
    }


async def bootstrap(store: Store) -> dict[str, Any]:
    from shared.rules.model import OPERATORS
    from shared.rules.service import list_rules

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
