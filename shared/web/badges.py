"""Status and uptime badges (SVG, anonymous, shields.io-style) of public monitors: an unknown or non-public
monitor gets the same 404 badge."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitors import from_entity
from shared import uptime as uptimes
from shared.manage.history import WINDOWS
from shared.manage.monitors import looks_like_id
from shared.web.cache import cached
from shared.web.page_parts import day_tone, look, pct
from shared.web.status_page import env

if TYPE_CHECKING:
    from shared.storage import Store

BADGE_CACHE_SECONDS = 60.0
BADGE_COLORS = {"ok": "#4c1", "warn": "#dfb317", "down": "#e05d44", "grey": "#9f9f9f"}


_NARROW = set("fijlrtI.,:;!|'() ")
_WIDE = set("mwMW%@")


def _text_width(text: str) -> int:
    """Approximate width of Verdana 11 px text (what shields.io-style badges use)."""
    return int(sum(4 if c in _NARROW else 10 if c in _WIDE else 8 if c.isupper() else 7 for c in text)) + 10


def badge_svg(label: str, message: str, color: str) -> str:
    left, right = _text_width(label), _text_width(message)
    return env.get_template("badge.svg").render(label=label, message=message, color=color, left=left,
                                                 right=right, width=left + right)


def not_found_badge(label: str = "status") -> tuple[int, str]:
    return 404, badge_svg(label, "not found", BADGE_COLORS["grey"])


async def _public_monitor(store: Store, monitor_id: str) -> tuple[dict[str, Any], Any] | None:
    if not looks_like_id(monitor_id):
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

    return await cached(("status", monitor_id), BADGE_CACHE_SECONDS, make)


async def uptime_badge(store: Store, monitor_id: str, window: str) -> tuple[int, str]:
    if window not in WINDOWS:
        return 422, badge_svg("uptime", f"window: {', '.join(WINDOWS)}", BADGE_COLORS["grey"])

    async def make() -> tuple[int, str]:
        found = await _public_monitor(store, monitor_id)
        if found is None:
            return not_found_badge("uptime")
        rolled_until = await uptimes.watermark(store)
        acc = await uptimes.tally_since(store, monitor_id, datetime.now(UTC) - WINDOWS[window], rolled_until)
        percent = 100.0 * acc.up / acc.checks if acc.checks else None
        tone = {"ok": "ok", "minor": "ok", "warn": "warn", "down": "down", "none": "grey"}[day_tone(percent)]
        color = "#97ca00" if day_tone(percent) == "minor" else BADGE_COLORS[tone]
        return 200, badge_svg(f"uptime {window}", pct(percent) if percent is not None else "no data", color)

    return await cached(("uptime", monitor_id, window), BADGE_CACHE_SECONDS, make)
