"""The pieces of the public status page that are pure functions of stored values: how a status looks, the URL a
visitor may see, percentages, day tones, the response-time sparkline and the words for the period uptime covers."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from monitors import status_info


def look(status: str, enabled: bool = True) -> tuple[str, str]:
    """(label, tone) of a status for visitors; tones: ok, warn, down, grey."""
    if not enabled:
        return "Paused", "grey"
    info = status_info(status)
    return info.label, info.tone


def problem(status: str, enabled: bool = True) -> int | None:
    """The severity of a status that is a problem a visitor should see first (None: healthy, pending, paused)."""
    if not enabled or status == "PENDING":
        return None
    info = status_info(status)
    return None if info.healthy else info.severity


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


def day_label(day: datetime) -> str:
    """1 Dec"""
    return f"{day.day} {day:%b}"


def period(first_day: datetime | None, window_start: datetime, days: int, now: datetime,
           created_at: datetime | None) -> tuple[str, str]:
    """What the uptime figure covers: (for the page, for its tooltip). Data over the whole window: "uptime, 90
    days"; data since a day inside it: "uptime since 1 Dec"; since today: "uptime since 14:37 UTC" (the monitor's
    creation, or midnight when it is older)."""
    if first_day is None:
        return "no checks yet", "no checks yet"
    if first_day <= window_start:
        return f"uptime, {days} days", f"over the last {days} days"
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if first_day >= today:
        since = max(today, created_at) if created_at is not None and created_at <= now else today
        return f"uptime since {since:%H:%M} UTC", f"since today {since:%H:%M} UTC"
    return f"uptime since {day_label(first_day)}", f"since {day_label(first_day)} {first_day.year}, the first day " \
                                                    "with checks"


def sparkline(rows: list[dict[str, Any]], width: int = 160, height: int = 36) -> dict[str, Any] | None:
    """Inline-SVG geometry of recent checks (oldest → newest): the response times of successful checks as a line,
    failed checks as red marks (full height when no check succeeded) and checker errors as grey ones."""
    rows = list(reversed(rows))  # results come newest first
    if not rows:
        return None
    n, pad, mark = len(rows), 3, 2.5

    def x(i: int) -> float:
        return round(i * (width - mark) / (n - 1), 1) if n > 1 else round(width - mark, 1)

    lat = [r.get("latency_ms") if r.get("outcome") in ("up", "degraded") else None for r in rows]
    values = [float(v) for v in lat if v is not None]
    top = (max(values) * (2.0 if len(values) == 1 else 1.15) or 1.0) if values else 1.0  # one point: mid-height

    def y(v: float) -> float:
        return round(height - pad - (height - 2 * pad) * v / top, 1)

    points = [(round(x(i) + mark / 2, 1), y(float(v))) for i, v in enumerate(lat) if v is not None]
    line = " ".join(f"{px},{py}" for px, py in points) if len(points) >= 2 else ""
    area = f"{points[0][0]},{height} {line} {points[-1][0]},{height}" if line else ""
    dots = [{"x": px, "y": py} for px, py in points] if len(points) == 1 else []
    tall = height if not values else 6  # nothing else drawn: the failures are the picture
    marks = [{"cls": "fail", "x": x(i), "y": height - tall, "h": tall, "fill": "#dc2626"}
             for i, r in enumerate(rows) if r.get("outcome") == "down"]
    errors = [{"cls": "error", "x": x(i), "y": height - 6, "h": 6, "fill": "#9ca3af"}
              for i, r in enumerate(rows) if r.get("outcome") == "error"]
    fails = len(marks)
    checks = f"the last {n} checks" if n > 1 else "the last check"
    if values:
        avg = sum(values) / len(values)
        summary = f"avg {avg:.0f} ms · last {values[-1]:.0f} ms"
        title = f"Response time of {checks}: avg {avg:.0f} ms, min {min(values):.0f} ms, max {max(values):.0f} ms"
        if fails:
            title += f"; {fails} failed"
    elif fails:
        summary = ("the last check failed" if n == 1 else f"all {n} checks failed" if fails == n
                   else f"{fails} of {n} checks failed")
        title = f"No response times: {summary}"
    else:
        summary = "not checked"
        title = f"No response times: {checks} could not be checked"
    if errors and (values or fails):
        title += f"; {len(errors)} could not be checked"
    return {"width": width, "height": height, "line": line, "area": area, "dots": dots, "marks": marks + errors,
            "fails": fails, "summary": summary, "title": title}


def first_day_with_data(days: dict[Any, Any], window_start: datetime, count: int) -> datetime | None:
    """The first day of the window whose tally has checks (days: "YYYY-MM-DD" → Tally)."""
    for n in range(count):
        day = window_start + timedelta(days=n)
        acc = days.get(day.strftime("%Y-%m-%d"))
        if acc is not None and acc.checks:
            return day
    return None


def maintenance(current: list[Any], upcoming: list[Any], windows: Any,
                public: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The "active and upcoming maintenance" entries: per window, its running occurrence or else its next one
    (with how many more follow in the period). Only windows covering at least one public monitor, naming only the
    public monitors they cover (`public`: (name, config) of the monitors the page shows); times in UTC with the
    window's own zone named. The window's description is never shown (it is for operators)."""
    from zoneinfo import ZoneInfo

    entries: dict[str, dict[str, Any]] = {}
    for occ, active in [*((o, True) for o in current), *((o, False) for o in upcoming)]:
        if occ.window_id in entries:
            entries[occ.window_id]["more"] += 0 if active else 1
            continue
        names = sorted({name for name, cfg in public if windows.applies(occ.window_id, cfg)}, key=str.casefold)
        window = windows.window(occ.window_id)
        if not names or window is None:
            continue
        zone = window.timezone
        local = ZoneInfo(zone)
        when = f"{occ.start:%a %d %b, %H:%M} – {occ.end:%a %d %b, %H:%M} UTC"
        if zone != "UTC":
            start, end = occ.start.astimezone(local), occ.end.astimezone(local)
            when += f" ({start:%H:%M} – {end:%H:%M} {zone})"
        entries[occ.window_id] = {"name": occ.name, "active": active, "when": when, "monitors": names,
                                  "start": occ.start, "more": 0, "tone": "maint" if active else "planned",
                                  "state": "In progress" if active else "Scheduled"}
    return sorted(entries.values(), key=lambda e: (not e["active"], e["start"], e["name"]))
