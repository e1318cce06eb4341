"""What happened: results, downtime windows, uptime, events, and the latest metric readings."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors import KINDS, kind_of, status_info
from shared import uptime as uptimes
from shared.errors import Invalid, field_error
from shared.events import EventType
from shared.manage.monitors import iso, load_entity, looks_like_id
from shared.storage import event_details

if TYPE_CHECKING:
    from shared.storage import Store

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30), "90d": timedelta(days=90)}


def clean(entity: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: iso(v) for k, v in entity.items() if k not in ("PartitionKey", "RowKey", *drop)}


# RFC 3339 (`T`, `t` or a space between date and time; the offset may be left out: UTC). A "+" that arrived
# unencoded in a query string reads as a space: " 00:00" at the end is the offset "+00:00".
_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)?")
YEARS = (2000, 2999)  # times outside are no cursor or range this app has; near 1 or 9999 they overflow the keys
TIME_HINT = f"an RFC 3339 time such as 2024-05-01T12:00:00Z (years {YEARS[0]}–{YEARS[1]})"
_DIGITS = re.compile(r"[0-9]{1,9}")


def parse_time(value: str | None, field: str) -> datetime | None:
    """An optional time from a query parameter: RFC 3339, in years 2000–2999 (422 naming `field` otherwise)."""
    if value in (None, ""):
        return None
    assert value is not None
    text = re.sub(r" (\d\d:\d\d)$", r"+\1", value)
    try:
        if not _TIME.fullmatch(text):
            raise ValueError(text)
        dt = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"{field} must be {TIME_HINT}", field_error(field, "invalid date-time")) from None
    if not YEARS[0] <= dt.year <= YEARS[1]:
        raise Invalid(f"{field} must be {TIME_HINT}", field_error(field, f"year {dt.year} is outside "
                                                                         f"{YEARS[0]}–{YEARS[1]}"))
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_limit(value: str | int | None, default: int = 50, maximum: int = 1000, field: str = "limit") -> int:
    """An optional page size: plain decimal digits only (" 5 ", "1_0", "5.0" or "٥" are 422 naming `field`)."""
    if value in (None, ""):
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        limit = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        limit = int(value)
    else:
        raise Invalid(f"{field} must be a whole number", field_error(field, "not an integer (digits 0-9 only)"))
    if not 1 <= limit <= maximum:
        raise Invalid(f"{field} must be 1–{maximum}", field_error(field, f"between 1 and {maximum}"))
    return limit


def event_type(value: str | None) -> str | None:
    """`?type=` of GET /events: empty (any) or one of the event types (422 listing them)."""
    if value in (None, ""):
        return None
    known = [t.value for t in EventType]
    if value not in known:
        raise Invalid("unknown event type", field_error("type", f"one of: {', '.join(known)}"))
    return value


def monitor_filter(value: str | None) -> str | None:
    """`?monitor_id=` of GET /events: empty (any), or a monitor's (or an alert rule's) id — 32 hex digits."""
    if value in (None, ""):
        return None
    assert value is not None
    if not looks_like_id(value):
        raise Invalid("monitor_id must be a monitor's id", field_error("monitor_id", "32 hex digits"))
    return value


async def results(store: Store, monitor_id: str, limit: int = 50, before: datetime | None = None) -> dict:
    entity = await load_entity(store, monitor_id)  # the id is enough: an unreadable definition keeps its history
    name = entity.get("kind")
    result_view = KINDS[name].result_view if isinstance(name, str) and name in KINDS else dict
    rows = await uptimes.results_of(store, monitor_id, limit, before)  # several locations: all, merged
    items = [result_item(clean(result_view(r), drop=("monitor_id",))) for r in rows]
    return {"items": items, "next_before": items[-1]["ts"] if len(items) == limit else None}


def result_item(item: dict[str, Any]) -> dict[str, Any]:
    """A stored result with its two times side by side: `slot`, the scheduled time it belongs to (its key; `ts`
    is the same, for older clients and as the paging cursor), and `checked_at`, when the check ran."""
    return {"slot": item.get("ts"), "checked_at": item.pop("checked_at", None),
            "latency_ms": None, "error": None, **item}  # Table Storage keeps no nulls: the same fields as run-now


async def downtimes(store: Store, monitor_id: str, limit: int = 100) -> dict:
    await load_entity(store, monitor_id)
    items = []
    now = datetime.now(UTC)
    for row in await store.list_downtimes(monitor_id, limit):
        item = clean(row)
        end = row.get("ended_at")
        item["open"] = end is None
        item["duration_seconds"] = round(((end or now) - row["started_at"]).total_seconds())
        items.append(item)
    return {"items": items}


async def uptime(store: Store, monitor_id: str, window: str = "24h", now: datetime | None = None) -> dict[str, Any]:
    if window not in WINDOWS:
        raise Invalid("window must be one of 24h, 7d, 30d, 90d", field_error("window", f"one of: {', '.join(WINDOWS)}"))
    await load_entity(store, monitor_id)
    now = now or datetime.now(UTC)
    since = now - WINDOWS[window]
    rolled_until = await uptimes.watermark(store)
    tally = await uptimes.tally_since(store, monitor_id, since, rolled_until)
    located = await _by_location(store, monitor_id, since, rolled_until)
    return {
        **({"by_location": located} if located else {}),
        "window": window, "from": since.isoformat(), "to": now.isoformat(), "checks": tally.checks,
        "up": tally.up, "uptime_percent": tally.percent, "avg_latency_ms": tally.avg_latency,
        "min_latency_ms": tally.latency_min, "max_latency_ms": tally.latency_max,
        "rolled_up_until": rolled_until.isoformat() if rolled_until else None,
        "maintenance_checks": tally.maintenance,
        **({"note": uptimes.MAINTENANCE_NOTE} if tally.maintenance else {}),
    }


async def _by_location(store: Store, monitor_id: str, since: datetime,
                       rolled_until: datetime | None) -> dict[str, Any]:
    """Several locations: each one's checks and uptime in the window."""
    from shared.settings import get_settings
    from shared.storage import keys

    out = {}
    for location in get_settings().locations:
        tally = await uptimes.tally_of_series(store, keys.series_id(monitor_id, location), since, rolled_until)
        out[location] = {"checks": tally.checks, "up": tally.up, "uptime_percent": tally.percent,
                         "avg_latency_ms": tally.avg_latency}
    return out


async def events(store: Store, limit: int = 50, before: datetime | None = None, monitor_id: str | None = None,
                 type_: str | None = None) -> dict[str, Any]:
    rows = await store.list_events(limit=limit, before=before, monitor_id=monitor_filter(monitor_id),
                                   type_=event_type(type_))
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
