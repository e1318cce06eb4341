"""The public face: the status page (HTML), status and uptime badges (SVG), and Prometheus metrics (text).

Status page and badges are anonymous, so they show only what a visitor of a public status page may see: a
monitor's name, kind, status, uptime per day, response times, and — for a website without `hide_url` — its URL
reduced to scheme, host and path (no user info, no query, no fragment). Never headers, request bodies, error
texts, resource ids, product ids or any setting. A monitor with `public: false` does not exist for them (its badge
is the same 404 as an unknown id). The page needs no script (it refreshes itself with a meta tag) and is cached
in-process for PAGE_CACHE_SECONDS, so a busy page costs the storage account little.

Prometheus (function key, like the rest of /api/v1) exposes every monitor: its status, latency, uptime over 24 h
(from the latest snapshot, so up to 15 minutes old), certificate days left, stock quantity, parts short, resource
metric values; in the text exposition format 0.0.4.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from monitors import KINDS, from_entity
from shared import snapshots
from shared.service import WINDOWS, rollup_of
from shared.storage import Store

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                   autoescape=select_autoescape(enabled_extensions=("html", "svg"), default=True),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

DAYS = 90
SPARK_POINTS = 48
PAGE_CACHE_SECONDS = 30.0
BADGE_CACHE_SECONDS = 60.0
TITLE = "System status"
KIND_LABELS = {"website": "Websites", "stock": "Stock", "parts": "Parts lists", "resource": "Resources"}

# status → (label, tone); tones: ok, warn, down, grey
STATUS_LOOK = {
    "UP": ("Operational", "ok"), "OK": ("Operational", "ok"),
    "DEGRADED": ("Degraded", "warn"), "WARNING": ("Warning", "warn"), "LOW": ("Low stock", "warn"),
    "HIGH": ("High stock", "warn"), "SHORT": ("Parts short", "warn"),
    "DOWN": ("Down", "down"), "ALERT": ("Alert", "down"),
    "ERROR": ("No data", "grey"), "PENDING": ("Pending", "grey"),
}
BADGE_COLORS = {"ok": "#4c1", "warn": "#dfb317", "down": "#e05d44", "grey": "#9f9f9f"}

_cache: dict[Any, tuple[float, Any]] = {}


def clear_cache() -> None:
    _cache.clear()


async def _cached(key: Any, seconds: float, make: Any) -> Any:
    hit = _cache.get(key)
    now = time.monotonic()
    if hit and hit[0] > now:
        return hit[1]
    value = await make()
    if seconds > 0:
        if len(_cache) > 2000:
            _cache.clear()
        _cache[key] = (now + seconds, value)
    return value


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def look(status: str, enabled: bool = True) -> tuple[str, str]:
    if not enabled:
        return "Paused", "grey"
    return STATUS_LOOK.get(status, (status.title(), "warn"))


def display_url(url: str | None) -> str | None:
    """scheme://host[:port]/path — never user info, query or fragment (they may hold credentials)."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return None
    if not host:
        return None
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    if s < 60:
        return "just now"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def pct(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return "100%"
    return f"{math.floor(value * 100) / 100:.2f}%"


def _day_tone(percent: float | None) -> str:
    if percent is None:
        return "none"
    if percent >= 99.9:
        return "ok"
    if percent >= 99.0:
        return "minor"
    if percent >= 95.0:
        return "warn"
    return "down"


# --------------------------------------------------------------------------------------------- the page


async def daily_uptime(store: Store, monitor_id: str, first_day: datetime, rolled_until: datetime | None,
                       ) -> dict[str, dict[str, float]]:
    """{"YYYY-MM-DD": {checks, up}} from `first_day`: hourly rollups before the watermark, raw results after."""
    days: dict[str, dict[str, float]] = {}

    def add(day: str, row: dict[str, Any]) -> None:
        acc = days.setdefault(day, {"checks": 0, "up": 0})
        acc["checks"] += row.get("count", 0)
        acc["up"] += row.get("up", 0)

    tail_from = first_day
    if rolled_until and rolled_until > first_day:
        for row in await store.query_rollups(monitor_id, first_day):
            if first_day <= row["hour"] < rolled_until:
                add(row["hour"].strftime("%Y-%m-%d"), row)
        tail_from = rolled_until
    by_day: dict[str, list[dict[str, Any]]] = {}
    for row in await store.query_results(monitor_id, limit=100_000, since=tail_from):
        by_day.setdefault(row["ts"].strftime("%Y-%m-%d"), []).append(row)
    for day, rows in by_day.items():
        add(day, rollup_of(rows))
    return days


def sparkline(rows: list[dict[str, Any]], width: int = 160, height: int = 36) -> dict[str, Any] | None:
    """Inline-SVG geometry of recent response times (oldest → newest); failed checks are marked red."""
    rows = list(reversed(rows))  # results come newest first
    if len(rows) < 2:
        return None
    lat = [r.get("latency_ms") if r.get("outcome") in ("up", "degraded") else None for r in rows]
    values = [v for v in lat if v is not None]
    if not values:
        return None
    top = max(values) * 1.15 or 1.0
    step = width / (len(rows) - 1)
    pad = 3

    def y(v: float) -> float:
        return round(height - pad - (height - 2 * pad) * v / top, 1)

    points = [(round(i * step, 1), y(v)) for i, v in enumerate(lat) if v is not None]
    line = " ".join(f"{x},{yy}" for x, yy in points)
    area = f"{points[0][0]},{height} {line} {points[-1][0]},{height}"
    fails = [round(i * step, 1) for i, r in enumerate(rows) if r.get("outcome") == "down"]
    avg = sum(values) / len(values)
    return {"width": width, "height": height, "line": line, "area": area, "fails": fails,
            "last": f"{values[-1]:.0f} ms", "avg": f"{avg:.0f} ms",
            "title": f"Response time of the last {len(rows)} checks: avg {avg:.0f} ms, min {min(values):.0f} ms, "
                     f"max {max(values):.0f} ms"}


async def status_page_model(store: Store, now: datetime | None = None) -> dict[str, Any]:
    now = now or _utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=DAYS - 1)
    monitors = await snapshots.live_states(store)
    rolled_until = (await store.get_kind_meta("_rollup")).get("rolled_until")
    shown = []
    for m in monitors:
        try:
            cfg = from_entity(m["entity"])
        except Exception:  # noqa: BLE001 - an unreadable definition is not shown publicly
            continue
        if cfg.public:
            shown.append((m, cfg))

    async def one(item: tuple[dict[str, Any], Any]) -> dict[str, Any]:
        m, cfg = item
        days, recent = await asyncio.gather(daily_uptime(store, m["id"], first_day, rolled_until),
                                            store.query_results(m["id"], limit=SPARK_POINTS))
        bars, checks, up = [], 0, 0
        for n in range(DAYS):
            day = first_day + timedelta(days=n)
            key = day.strftime("%Y-%m-%d")
            acc = days.get(key) or {"checks": 0, "up": 0}
            checks += acc["checks"]
            up += acc["up"]
            percent = 100.0 * acc["up"] / acc["checks"] if acc["checks"] else None
            label = day.strftime("%b %d").replace(" 0", " ")
            bars.append({"tone": _day_tone(percent),
                         "title": f"{label}: {pct(percent)} up ({int(acc['checks']):,} checks)" if acc["checks"]
                         else f"{label}: no data"})
        label, tone = look(m["status"], m["enabled"])
        last = recent[0] if recent else None
        last_at = (last or {}).get("checked_at") or (last or {}).get("ts")
        url = getattr(cfg, "url", None) if not cfg.hide_url else None
        return {"id": m["id"], "name": m["name"], "kind": m["kind"], "status": m["status"], "label": label,
                "tone": tone, "url": display_url(url), "bars": bars,
                "uptime": pct(100.0 * up / checks if checks else None), "spark": sparkline(recent),
                "checked": ago((now - last_at).total_seconds() if last_at else None),
                "down_since": m["state"].get("down_since") if m["enabled"] else None,
                "error_since": m["state"].get("since") if m["enabled"] and m["status"] == "ERROR" else None}

    rows = await snapshots._gather(shown, one)
    incidents = []
    for row in rows:
        if row["down_since"]:
            started = datetime.fromisoformat(row["down_since"])
            incidents.append({"tone": "down", "title": f"{row['name']} is down",
                              "text": f"Since {started:%b %d, %H:%M} UTC ({_duration(now - started)})",
                              "at": started})
        elif row["error_since"]:
            started = datetime.fromisoformat(row["error_since"])
            incidents.append({"tone": "grey", "title": f"{row['name']}: monitoring interrupted",
                              "text": f"We cannot check it right now, since {started:%b %d, %H:%M} UTC",
                              "at": started})
    incidents.sort(key=lambda i: i["at"], reverse=True)
    groups = []
    for kind in [*sorted(KINDS, key=lambda k: list(KIND_LABELS).index(k) if k in KIND_LABELS else 99),
                 *sorted({r["kind"] for r in rows} - set(KINDS))]:
        members = [r for r in rows if r["kind"] == kind]
        if members:
            groups.append({"title": KIND_LABELS.get(kind, str(kind).title()), "monitors": members})
    tones = [r["tone"] for r in rows if r["status"] != "PENDING" and r["label"] != "Paused"]
    if not rows:
        banner = ("grey", "No public monitors yet")
    elif "down" in tones:
        banner = ("down", "All systems are down" if all(t == "down" for t in tones) else "Some systems are down")
    elif "warn" in tones:
        banner = ("warn", "Some systems are degraded")
    elif tones:
        banner = ("ok", "All systems operational")
    else:
        banner = ("grey", "Waiting for the first checks")
    return {"title": TITLE, "banner": {"tone": banner[0], "text": banner[1]}, "incidents": incidents,
            "groups": groups, "days": DAYS, "updated": now.strftime("%Y-%m-%d %H:%M UTC"),
            "refresh": int(max(PAGE_CACHE_SECONDS, 60))}


def _duration(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    if s < 3600:
        return f"{max(1, s // 60)} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} days"


def render_status_page(model: dict[str, Any]) -> str:
    return _env.get_template("status_page.html").render(model)


async def status_page(store: Store) -> str:
    async def make() -> str:
        return render_status_page(await status_page_model(store))

    return await _cached(("page",), PAGE_CACHE_SECONDS, make)


# ------------------------------------------------------------------------------------------------ badges

_NARROW = set("fijlrtI.,:;!|'() ")
_WIDE = set("mwMW%@")


def _text_width(text: str) -> int:
    """Approximate width of Verdana 11 px text (what shields.io-style badges use)."""
    return int(sum(4 if c in _NARROW else 10 if c in _WIDE else 8 if c.isupper() else 7 for c in text)) + 10


def badge_svg(label: str, message: str, color: str) -> str:
    left, right = _text_width(label), _text_width(message)
    return _env.get_template("badge.svg").render(label=label, message=message, color=color, left=left,
                                                 right=right, width=left + right)


def not_found_badge(label: str = "status") -> tuple[int, str]:
    return 404, badge_svg(label, "not found", BADGE_COLORS["grey"])


async def _public_monitor(store: Store, monitor_id: str) -> tuple[dict[str, Any], Any] | None:
    if not snapshots._looks_like_id(monitor_id):
        return None
    entity = await store.get_monitor(monitor_id)
    if entity is None:
        return None
    try:
        cfg = from_entity(entity)
    except Exception:  # noqa: BLE001 - unreadable: not shown
        return None
    return (entity, cfg) if cfg.public else None


async def status_badge(store: Store, monitor_id: str) -> tuple[int, str]:
    async def make() -> tuple[int, str]:
        found = await _public_monitor(store, monitor_id)
        if found is None:
            return not_found_badge()
        entity, cfg = found
        row = await store.get_state(entity["kind"], monitor_id)
        label, tone = look((row.status if row else "") or "PENDING", cfg.enabled)
        return 200, badge_svg("status", label.lower(), BADGE_COLORS[tone])

    return await _cached(("status", monitor_id), BADGE_CACHE_SECONDS, make)


async def uptime_badge(store: Store, monitor_id: str, window: str) -> tuple[int, str]:
    if window not in WINDOWS:
        return 422, badge_svg("uptime", f"window: {', '.join(WINDOWS)}", BADGE_COLORS["grey"])

    async def make() -> tuple[int, str]:
        found = await _public_monitor(store, monitor_id)
        if found is None:
            return not_found_badge("uptime")
        rolled_until = (await store.get_kind_meta("_rollup")).get("rolled_until")
        acc = await snapshots.uptime_since(store, monitor_id, _utcnow() - WINDOWS[window], rolled_until)
        percent = 100.0 * acc["up"] / acc["checks"] if acc["checks"] else None
        tone = {"ok": "ok", "minor": "ok", "warn": "warn", "down": "down", "none": "grey"}[_day_tone(percent)]
        color = "#97ca00" if _day_tone(percent) == "minor" else BADGE_COLORS[tone]
        return 200, badge_svg(f"uptime {window}", pct(percent) if percent is not None else "no data", color)

    return await _cached(("uptime", monitor_id, window), BADGE_CACHE_SECONDS, make)


# -------------------------------------------------------------------------------------------- prometheus


def escape_label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(value: float) -> str:
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)


class Exposition:
    """Families in the text format: # HELP, # TYPE, then every sample of the family together."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def family(self, name: str, type_: str, help_: str) -> None:
        self._families.setdefault(name, (type_, help_, []))

    def add(self, name: str, labels: dict[str, Any], value: Any) -> None:
        if value is None:
            return
        try:
            number = float(value)
        except (TypeError, ValueError):
            return
        text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        self._families[name][2].append(f"{name}{{{text}}} {_value(number)}" if text else f"{name} {_value(number)}")

    def text(self) -> str:
        out = []
        for name, (type_, help_, samples) in self._families.items():
            out.append(f"# HELP {name} {_escape_help(help_)}")
            out.append(f"# TYPE {name} {type_}")
            out.extend(samples)
        return "\n".join(out) + "\n"


FAMILIES = [
    ("monitor_status", "Current status of a monitor: 1 for the series whose status label is the monitor's status."),
    ("monitor_healthy", "1 when the monitor is UP or OK, 0 when not (PENDING and disabled monitors are left out)."),
    ("monitor_enabled", "1 when the monitor is enabled."),
    ("monitor_latency_seconds", "Duration of the monitor's latest check."),
    ("monitor_last_check_timestamp_seconds", "When the monitor was last checked (Unix time)."),
    ("monitor_uptime_24h_ratio", "Share of successful checks over 24 h, from the latest snapshot (every 15 min)."),
    ("website_certificate_days_left", "Days until the website's TLS certificate expires."),
    ("website_http_status_code", "HTTP status of the website's latest check."),
    ("stock_quantity", "Stock level of the WHMCS product, from the latest check."),
    ("parts_lines_short", "Lines of the parts list that are short."),
    ("parts_total_missing", "Units missing over all lines of the parts list."),
    ("parts_kits_buildable", "Kits buildable now from the parts list."),
    ("resource_metric_value", "Latest value of a resource metric (unit in the unit label)."),
    ("resource_metric_level", "Level of a resource metric: 0 OK, 1 WARNING, 2 ALERT."),
    ("monitors", "Enabled monitors by kind and status."),
    ("alert_rule_firing", "1 while the alert rule fires."),
    ("snapshot_timestamp_seconds", "When the latest stored snapshot was taken (Unix time)."),
]


async def prometheus_text(store: Store) -> str:
    monitors, snap, rules = await asyncio.gather(snapshots.live_states(store), snapshots.latest(store),
                                                 snapshots.list_rules(store))
    latest = await snapshots._gather(monitors, lambda m: store.query_results(m["id"], limit=1))
    uptime: dict[str, float] = {}
    for view in ((snap or {}).get("kinds") or {}).values():
        for item in (view.get("uptime_24h") or {}).get("monitors", []):
            if item.get("checks"):
                uptime[item["id"]] = item["up"] / item["checks"]
    out = Exposition()
    for name, help_ in FAMILIES:
        out.family(name, "gauge", help_)
    counts: dict[tuple[str, str], int] = {}
    for m, rows in zip(monitors, latest):
        labels = {"id": m["id"], "name": m["name"], "kind": m["kind"]}
        out.add("monitor_status", {**labels, "status": m["status"]}, 1)
        out.add("monitor_enabled", labels, 1 if m["enabled"] else 0)
        if m["enabled"]:
            counts[(m["kind"], m["status"])] = counts.get((m["kind"], m["status"]), 0) + 1
            if m["status"] != "PENDING":
                out.add("monitor_healthy", labels, 1 if m["status"] in snapshots.OK_STATUSES else 0)
        if m["id"] in uptime:
            out.add("monitor_uptime_24h_ratio", labels, uptime[m["id"]])
        row = rows[0] if rows else None
        if row is None:
            continue
        if row.get("latency_ms") is not None:
            out.add("monitor_latency_seconds", labels, float(row["latency_ms"]) / 1000)
        checked = row.get("checked_at") or row.get("ts")
        if isinstance(checked, datetime):
            out.add("monitor_last_check_timestamp_seconds", labels, checked.timestamp())
        if m["kind"] == "website":
            out.add("website_certificate_days_left", labels, row.get("cert_days_left"))
            out.add("website_http_status_code", labels, row.get("status_code"))
        elif m["kind"] == "stock":
            out.add("stock_quantity", labels, row.get("quantity"))
        elif m["kind"] == "parts":
            for field in ("lines_short", "total_missing", "kits_buildable"):
                out.add(f"parts_{field}", labels, row.get(field))
        elif m["kind"] == "resource":
            try:
                metrics = json.loads(row.get("metrics") or "[]")
            except (TypeError, ValueError):
                metrics = []
            for metric in metrics if isinstance(metrics, list) else []:
                if not isinstance(metric, dict) or "name" not in metric:
                    continue
                mlabels = {**labels, "metric": metric["name"], "unit": metric.get("unit") or ""}
                out.add("resource_metric_value", mlabels, metric.get("value"))
                level = {"OK": 0, "WARNING": 1, "ALERT": 2}.get(metric.get("status"))
                out.add("resource_metric_level", mlabels, level)
    for (kind, status), count in sorted(counts.items()):
        out.add("monitors", {"kind": kind, "status": status}, count)
    for rule in rules:
        out.add("alert_rule_firing", {"id": rule["id"], "name": rule["name"], "metric": rule["metric"],
                                      "severity": rule["severity"]}, 1 if rule["state"]["firing"] else 0)
    if snap:
        out.add("snapshot_timestamp_seconds", {}, datetime.fromisoformat(snap["taken_at"]).timestamp())
    return out.text()
