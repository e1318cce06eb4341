"""What happened: results, downtime windows, uptime, events, and the latest metric readings."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors import KINDS, kind_of, status_info
from shared import uptime as uptimes
from shared.errors import Invalid, field_error
from shared.manage.monitors import iso, load
from shared.storage import event_details

if TYPE_CHECKING:
    from shared.storage import Store

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30), "90d": timedelta(days=90)}


def clean(entity: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: iso(v) for k, v in entity.items() if k not in ("PartitionKey", "RowKey", *drop)}


def parse_time(value: str | None, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    assert value is not None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise Invalid(f"{field} must be an ISO-8601 time", field_error(field, "invalid datetime")) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_limit(value: str | int | None, default: int = 50, maximum: int = 1000) -> int:
    if value in (None, ""):
        return default
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise Invalid("limit must be a whole number", field_error("limit", "not an integer")) from None
    if not 1 <= limit <= maximum:
        raise Invalid(f"limit must be 1–{maximum}", field_error("limit", f"between 1 and {maximum}"))
    return limit


async def results(store: Store, monitor_id: str, limit: int = 50, before: datetime | None = None) -> dict:
    entity, _ = await load(store, monitor_id)
    kind = kind_of(entity["kind"])
    rows = await store.query_results(monitor_id, limit=limit, before=before)
    items = [clean(kind.result_view(r), drop=("monitor_id",)) for r in rows]
    return {"items": items, "next_before": items[-1]["ts"] if len(items) == limit else None}


async def downtimes(store: Store, monitor_id: str, limit: int = 100) -> dict:
    await load(store, monitor_id)
    items = []
    now = datetime.now(UTC)
    for row in await store.list_downtimes(monitor_id, limit):
        item = clean(row)
        end = row.get("ended_at")
        item["open"] = end is None
        item["duration_seconds"] = round(((end or now) - row["started_at"]).total_seconds())
        items.append(item)
    return {"items": items}


async def uptime(store: Store, monitor_id: str, window: str = "24h") -> dict[str, Any]:
    if window not in WINDOWS:
        raise Invalid("window must be one of 24h, 7d, 30d, 90d", field_error("window", f"one of: {', '.join(WINDOWS)}"))
    await load(store, monitor_id)
    now = datetime.now(UTC)
    since = now - WINDOWS[window]
    rolled_until = await uptimes.watermark(store)
    tally = await uptimes.tally_since(store, monitor_id, since, rolled_until)
    return {
        "window": window, "from": since.isoformat(), "to": now.isoformat(), "checks": tally.checks,
        "up": tally.up, "uptime_percent": tally.percent, "avg_latency_ms": tally.avg_latency,
        "min_latency_ms": tally.latency_min, "max_latency_ms": tally.latency_max,
        "rolled_up_until": rolled_until.isoformat() if rolled_until else None,
    }


async def events(store: Store, limit: int = 50, before: datetime | None = None, monitor_id: str | None = None,
                 type_: str | None = None) -> dict[str, Any]:
    rows = await store.list_events(limit=limit, before=before, monitor_id=monitor_id, type_=type_)
    items = []
    for row in rows:
        item = clean(row, drop=("event_id",))
        item["id"] = row["event_id"]
        item["details"] = event_details(row)
        items.append(item)
    return {"items": items, "next_before": items[-1]["occurred_at"] if len(items) == limit else None}


async def readings(store: Store) -> dict[str, Any]:
    """GET /metrics from stored results only — nothing is measured here: every monitor of a kind that has metric
    readings (resources), its latest result (metrics, their statuses, when), the same flattened as
    "{monitor}/{metric}", and `overall`, the worst status of the enabled monitors (never-checked ones do not count;
    UNKNOWN when none counts)."""
    entities = []
    for name, kind in KINDS.items():
        if kind.readings(None) is not None:
            entities += await store.list_monitors(name)
    entities.sort(key=lambda e: (e.get("name", "").lower(), e["RowKey"]))
    checked: set[str] = set()
    for name in {e["kind"] for e in entities}:
        checked |= set((await store.load_states(name))[0])  # a monitor without a state row has no result either

    async def latest_of(monitor_id: str) -> list[dict[str, Any]]:
        return await store.query_results(monitor_id, limit=1) if monitor_id in checked else []

    latest = await asyncio.gather(*(latest_of(e["RowKey"]) for e in entities))
    names = [e.get("name") or e["RowKey"] for e in entities]
    items, metrics, statuses, counted = [], {}, {}, []
    for entity, name, rows in zip(entities, names, latest, strict=True):
        view = kind_of(entity["kind"]).readings(rows[0] if rows else None) or {}
        try:
            source = json.loads(entity.get("spec") or "{}").get("source", {}).get("type")
        except (ValueError, AttributeError):
            source = None
        item = {"id": entity["RowKey"], "name": name, "source": source, "enabled": entity.get("enabled", True), **view}
        items.append(item)
        if item["enabled"] and view.get("status") not in (None, "PENDING"):
            counted.append(view["status"])
        label = name if names.count(name) == 1 else f"{name} ({entity['RowKey'][:8]})"
        for metric, value in view.get("metrics", {}).items():
            metrics[f"{label}/{metric}"] = value
            statuses[f"{label}/{metric}"] = view["statuses"][metric]
    overall = max(counted, key=lambda s: status_info(s).severity) if counted else "UNKNOWN"
    stamps = [item["last_updated"] for item in items if item.get("last_updated")]
    return {"metrics": metrics, "statuses": {**statuses, "overall": overall}, "overall": overall,
            "last_updated": max(stamps) if stamps else None, "monitors": items}
