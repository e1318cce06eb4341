"""The public status page (HTML, no script): every monitor marked `public: true` (opt-in: a monitor is hidden unless
marked) with its status, 90 days of daily uptime bars, a sparkline of recent checks, and the incidents going on.

It tells the truth at a glance: the uptime figure says what period it covers ("100% since 1 Dec" when the data
starts inside the window), failed checks are marked on the sparkline even when none succeeded, and monitors with
a problem come first (in their group, and their group before the others). Monitors are grouped by their `group`
field, or else by kind; the title (STATUS_PAGE_TITLE) and a logo (STATUS_PAGE_LOGO_URL: https or a path on this
site, put in an <img> for the visitor's browser; never fetched by the app) are settings.

Anonymous, so it shows only what a visitor of a public status page may see: a monitor's name, kind, group, status,
uptime per day, response times, and — where its kind has a public URL and the monitor does not hide it — that URL
reduced to scheme, host and path (no user info, no query, no fragment). Never headers, request bodies, error texts,
resource ids, product ids or any other setting. A monitor not marked public does not exist for it. The page
refreshes itself with a meta tag and is cached in-process for PAGE_CACHE_SECONDS (single flight); a page still
waiting for first checks only for UNSETTLED_CACHE_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from monitors import KINDS, from_entity, kind_of
from shared import uptime as uptimes
from shared.aio import gather_bounded
from shared.engine.located import Where
from shared.manage.monitors import kind_states, located_view
from shared.settings import get_settings
from shared.snapshots.views import live_states
from shared.text import ago, duration
from shared.web.cache import cached
from shared.web.page_parts import (
    day_label,
    day_tone,
    display_url,
    first_day_with_data,
    look,
    maintenance,
    pct,
    period,
    problem,
    sparkline,
)

if TYPE_CHECKING:
    from shared.storage import Store

log = logging.getLogger("monitor.web")
TEMPLATES = Path(__file__).resolve().parent / "templates"
env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                  autoescape=select_autoescape(enabled_extensions=("html", "svg"), default=True),
                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

DAYS = 90
SPARK_POINTS = 48
PAGE_CACHE_SECONDS = 30.0
UNSETTLED_CACHE_SECONDS = 5.0  # no public monitor yet, or one still waiting for its first check
TITLE = "System status"
MAINTENANCE_DAYS = 7  # upcoming maintenance shown this far ahead


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _page_look() -> tuple[str, str | None]:
    """(title, logo URL) from the settings (validated there: the logo is https or a path on this site)."""
    from shared.settings import get_settings

    settings = get_settings()
    return settings.status_page_title or TITLE, settings.status_page_logo_url


async def _monitor_row(store: Store, m: dict[str, Any], cfg: Any, first_day: datetime, now: datetime,
                       rolled_until: datetime | None, where: Where | None = None) -> dict[str, Any]:
    days, recent = await asyncio.gather(
        uptimes.tallies(store, m["id"], first_day, rolled_until, bucket=lambda at: at.strftime("%Y-%m-%d")),
        uptimes.results_of(store, m["id"], SPARK_POINTS))
    bars, checks, up = [], 0, 0
    for n in range(DAYS):
        day = first_day + timedelta(days=n)
        acc = days.get(day.strftime("%Y-%m-%d")) or uptimes.Tally()
        checks += acc.checks
        up += acc.up
        percent = 100.0 * acc.up / acc.checks if acc.checks else None
        bars.append({"tone": day_tone(percent),
                     "title": f"{day_label(day)}: {pct(percent)} up ({acc.checks:,} checks)" if acc.checks
                     else f"{day_label(day)}: no data"})
    created = m["entity"].get("created_at")
    covers, covers_long = period(first_day_with_data(days, first_day, DAYS), first_day, DAYS, now,
                                 created if isinstance(created, datetime) else None)
    label, tone = look(m["status"], m["enabled"])
    last = recent[0] if recent else None
    last_at = (last or {}).get("checked_at") or (last or {}).get("ts")
    url = kind_of(cfg.kind).public_url(cfg)
    return {"id": m["id"], "name": m["name"], "kind": m["kind"], "status": m["status"], "label": label,
            "tone": tone, "url": display_url(url), "bars": bars, "group": getattr(cfg, "group", None),
            "uptime": pct(100.0 * up / checks if checks else None), "uptime_text": covers,
            "uptime_title": f"share of successful checks {covers_long}" + (f" ({checks:,} checks)" if checks else ""),
            "spark": sparkline(recent), "problem": problem(m["status"], m["enabled"]),
            "pending": m["enabled"] and m["status"] == "PENDING",
            "checked": ago((now - last_at).total_seconds() if last_at else None),
            "down_since": m["state"].get("down_since") if m["enabled"] else None,
            "error_since": m["state"].get("since") if m["enabled"] and m["status"] == "ERROR" else None,
            "locations": _locations(m, cfg, where)}


def _locations(m: dict[str, Any], cfg: Any, where: Where | None) -> list[dict[str, Any]]:
    """Several locations: what each sees, for the line under the monitor's name (a stale one says so)."""
    if where is None or not where.covers(kind_of(cfg.kind)) or not m["enabled"]:
        return []
    out = []
    for name, seen in located_view(cfg, m["state"], where).items():
        label, tone = ("no recent checks", "grey") if seen["stale"] else look(seen["status"], True)
        out.append({"name": name, "label": label, "tone": tone,
                    "title": "its checks stopped: left out of the verdict" if seen["stale"] else label})
    return out


def _first_problems(items: list[dict[str, Any]], severity: Any) -> list[dict[str, Any]]:
    """Items with a problem first, worst first; the others after them, in the order they came (stable)."""
    return sorted(items, key=lambda item: (0, -severity(item)) if severity(item) is not None else (1, 0))


def _groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Monitors by their `group`, else by their kind's title: named groups (alphabetically), then the kinds (in
    registry order); groups with a problem first, and in each group the monitors with a problem first."""
    named = sorted({r["group"] for r in rows if r["group"]}, key=str.casefold)
    kinds = [*KINDS, *sorted({str(r["kind"]) for r in rows} - set(KINDS))]
    titles: dict[str, str] = {}
    for kind in kinds:
        title = KINDS[kind].title if kind in KINDS else ""
        titles[kind] = title or str(kind).title()
    order = [*named, *(titles[k] for k in kinds if titles[k] not in named)]
    members: dict[str, list[dict[str, Any]]] = {title: [] for title in order}
    for row in rows:
        members.setdefault(row["group"] or titles[str(row["kind"])], []).append(row)
    groups = []
    for title, monitors in members.items():
        if monitors:
            ordered = _first_problems(monitors, lambda r: r["problem"])
            worst = max((r["problem"] for r in monitors if r["problem"] is not None), default=None)
            groups.append({"title": title, "monitors": ordered, "problem": worst})
    return _first_problems(groups, lambda g: g["problem"])


def _incidents(rows: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
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
    return incidents


async def _maintenance(store: Store, shown: list[tuple[dict[str, Any], Any]], now: datetime) -> list[dict[str, Any]]:
    """Active and upcoming (MAINTENANCE_DAYS) maintenance of the public monitors; nothing when the windows cannot
    be read (the page still shows the monitors)."""
    from shared.windows import Windows

    try:
        windows = await Windows.load(store)
    except Exception:  # the status page must not fail for the maintenance section
        log.warning("status page: maintenance windows could not be read", exc_info=True)
        return []
    public = [(m["name"], cfg) for m, cfg in shown]
    return maintenance(windows.current(now), windows.upcoming(now, timedelta(days=MAINTENANCE_DAYS)), windows,
                       public)


def _banner(rows: list[dict[str, Any]]) -> tuple[str, str]:
    tones = [r["tone"] for r in rows if r["status"] != "PENDING" and r["label"] != "Paused"]
    if not rows:
        return "grey", "No public monitors yet"
    if "down" in tones:
        return "down", "All systems are down" if all(t == "down" for t in tones) else "Some systems are down"
    if "warn" in tones:
        return "warn", "Some systems are degraded"
    if tones:
        return "ok", "All systems operational"
    return "grey", "Waiting for the first checks"


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
    wheres = (await kind_states(store, {cfg.kind for _, cfg in shown}))[1] if get_settings().locations else {}
    rows = await gather_bounded(shown, lambda item: _monitor_row(store, *item, first_day, now, rolled_until,
                                                                 wheres.get(item[1].kind)))
    planned = await _maintenance(store, shown, now)
    tone, text = _banner(rows)
    settled = bool(rows) and not any(r["pending"] for r in rows)
    title, logo = _page_look()
    return {"title": title, "logo_url": logo, "banner": {"tone": tone, "text": text},
            "incidents": _incidents(rows, now), "maintenance": planned, "groups": _groups(rows), "days": DAYS,
            "updated": now.strftime("%Y-%m-%d %H:%M UTC"), "settled": settled,
            "refresh": int(max(PAGE_CACHE_SECONDS, 60)) if settled else int(PAGE_CACHE_SECONDS)}


def render_status_page(model: dict[str, Any]) -> str:
    return env.get_template("status_page.html").render(model)


async def status_page(store: Store) -> str:
    async def make() -> tuple[str, bool]:
        model = await status_page_model(store)
        return render_status_page(model), bool(model["settled"])

    html, _ = await cached(("page",), lambda value: PAGE_CACHE_SECONDS if value[1] else UNSETTLED_CACHE_SECONDS,
                           make)
    return str(html)
