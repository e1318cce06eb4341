"""The public status page (HTML, no script): every monitor marked `public: true` (opt-in: a monitor is hidden unless
marked) with its status, 90 days of daily uptime bars, a sparkline of recent response times, and the incidents going
on.

Anonymous, so it shows only what a visitor of a public status page may see: a monitor's name, kind, status,
uptime per day, response times, and — where its kind has a public URL and the monitor does not hide it — that URL
reduced to scheme, host and path (no user info, no query, no fragment). Never headers, request bodies, error texts,
resource ids, product ids or any setting. A monitor not marked public does not exist for it. The page refreshes
itself with a meta tag and is cached in-process for PAGE_CACHE_SECONDS (single flight).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from monitors import KINDS, from_entity, kind_of, status_info
from shared import uptime as uptimes
from shared.aio import gather_bounded
from shared.snapshots.views import live_states
from shared.text import ago, duration
from shared.web.cache import cached

if TYPE_CHECKING:
    from shared.storage import Store

TEMPLATES = Path(__file__).resolve().parent / "templates"
env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                  autoescape=select_autoescape(enabled_extensions=("html", "svg"), default=True),
                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

DAYS = 90
SPARK_POINTS = 48
PAGE_CACHE_SECONDS = 30.0
TITLE = "System status"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def look(status: str, enabled: bool = True) -> tuple[str, str]:
    """(label, tone) of a status for visitors; tones: ok, warn, down, grey."""
    if not enabled:
        return "Paused", "grey"
    info = status_info(status)
    return info.label, info.tone


def display_url(url: str | None) -> str | None:
    """scheme://host[:port]/path — never user info, query or fragment (they may hold credentials). An IPv6 address
    keeps its brackets (`urlsplit().hostname` drops them: http://[2001:db8::1]:8080/ would read 2001:db8::1:8080)."""
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
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def pct(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return "100%"
    return f"{math.floor(value * 100) / 100:.2f}%"


def day_tone(percent: float | None) -> str:
    if percent is None:
        return "none"
    if percent >= 99.9:
        return "ok"
    if percent >= 99.0:
        return "minor"
    if percent >= 95.0:
        return "warn"
    return "down"


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
    monitors = await live_states(store)
    rolled_until = await uptimes.watermark(store)
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
        days, recent = await asyncio.gather(
            uptimes.tallies(store, m["id"], first_day, rolled_until, bucket=lambda at: at.strftime("%Y-%m-%d")),
            store.query_results(m["id"], limit=SPARK_POINTS))
        bars, checks, up = [], 0, 0
        for n in range(DAYS):
            day = first_day + timedelta(days=n)
            key = day.strftime("%Y-%m-%d")
            acc = days.get(key) or uptimes.Tally()
            checks += acc.checks
            up += acc.up
            percent = 100.0 * acc.up / acc.checks if acc.checks else None
            label = day.strftime("%b %d").replace(" 0", " ")
            bars.append({"tone": day_tone(percent),
                         "title": f"{label}: {pct(percent)} up ({acc.checks:,} checks)" if acc.checks
                         else f"{label}: no data"})
        label, tone = look(m["status"], m["enabled"])
        last = recent[0] if recent else None
        last_at = (last or {}).get("checked_at") or (last or {}).get("ts")
        url = kind_of(cfg.kind).public_url(cfg)
        return {"id": m["id"], "name": m["name"], "kind": m["kind"], "status": m["status"], "label": label,
                "tone": tone, "url": display_url(url), "bars": bars,
                "uptime": pct(100.0 * up / checks if checks else None), "spark": sparkline(recent),
                "checked": ago((now - last_at).total_seconds() if last_at else None),
                "down_since": m["state"].get("down_since") if m["enabled"] else None,
                "error_since": m["state"].get("since") if m["enabled"] and m["status"] == "ERROR" else None}

    rows = await gather_bounded(shown, one)
    incidents = []
    for row in rows:
        if row["down_since"]:
            started = datetime.fromisoformat(row["down_since"])
            incidents.append({"tone": "down", "title": f"{row['name']} is down",
                              "text": f"Since {started:%b %d, %H:%M} UTC ({duration((now - started).total_seconds())})",
                              "at": started})
        elif row["error_since"]:
            started = datetime.fromisoformat(row["error_since"])
            incidents.append({"tone": "grey", "title": f"{row['name']}: monitoring interrupted",
                              "text": f"We cannot check it right now, since {started:%b %d, %H:%M} UTC",
                              "at": started})
    incidents.sort(key=lambda i: str(i["at"]), reverse=True)
    groups = []
    for kind in [*KINDS, *sorted({r["kind"] for r in rows} - set(KINDS))]:
        members = [r for r in rows if r["kind"] == kind]
        if members:
            title = KINDS[kind].title if kind in KINDS else ""
            groups.append({"title": title or str(kind).title(), "monitors": members})
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


def render_status_page(model: dict[str, Any]) -> str:
    return env.get_template("status_page.html").render(model)


async def status_page(store: Store) -> str:
    async def make() -> str:
        return render_status_page(await status_page_model(store))

    return str(await cached(("page",), PAGE_CACHE_SECONDS, make))
