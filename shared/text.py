"""Text for people and for storage: one duration formatter for every message, clipping, compact JSON."""

from __future__ import annotations

import json
from typing import Any


def duration(seconds: float | int | None) -> str:
    """42 s, 48 min, 1 h 30 min, 3 days 4 h — the one way every message, page and e-mail says how long."""
    if seconds is None:
        return "unknown"
    s = max(0, round(seconds))
    if s < 90:
        return f"{s} s"
    minutes = round(s / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} days" + (f" {hours} h" if hours else "")


def ago(seconds: float | None) -> str:
    """How long ago, for a page: "just now", "5 min ago", "never"."""
    if seconds is None:
        return "never"
    if seconds < 60:
        return "just now"
    return f"{duration(seconds)} ago"


def clip(text: str | None, limit: int = 2000) -> str | None:
    """Clip free text (error messages, body excerpts) so it can never break an entity limit."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def one_line(text: str, limit: int = 250) -> str:
    """No line breaks (header injection) and a sane length."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quantity(value: Any) -> str:
    """A quantity for people: 4.0 → 4, 0.25 → 0.25, 2/3 → 0.667; None (unknown) → -."""
    if value is None:
        return "-"
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:.3f}".rstrip("0").rstrip(".")


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
