"""Text for people and for storage: the one home of how long (durations, outage windows, day counts), clipping,
compact JSON."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DAY = 86400


def duration(seconds: float | int | None) -> str:
    """42 s, 4 min 12 s, 48 min, 1 h 30 min, 3 days 4 h — the one way every message, page and e-mail says how
    long. Seconds are given up to 10 minutes, where they still matter to a reader."""
    if seconds is None:
        return "unknown"
    s = max(0, round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 600:
        minutes, rest = divmod(s, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    minutes = round(s / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} days" + (f" {hours} h" if hours else "")


def timestamp(dt: datetime) -> str:
    """A moment in full, for a table of facts: 2024-12-01 09:14:03 UTC."""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(dt: datetime) -> str:
    """A moment in a sentence: 09:14 UTC."""
    return dt.astimezone(UTC).strftime("%H:%M UTC")


def date(dt: datetime) -> str:
    """A day in a sentence: 4 Dec 2024."""
    dt = dt.astimezone(UTC)
    return f"{dt.day} {dt:%b %Y}"


def span(start: datetime, end: datetime) -> str:
    """From-to in a sentence: 09:14-09:18 UTC; 09:14:03-09:14:09 UTC within one minute; with the days when they
    differ: 30 Nov 23:50 - 1 Dec 00:10 UTC. ASCII only, so a subject carrying it is folded cleanly (Python's
    e-mail folding doubles the space before an encoded word, such as one an en dash would need)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if start.date() != end.date():
        return f"{start.day} {start:%b %H:%M} - {end.day} {end:%b %H:%M} UTC"
    if start.replace(second=0, microsecond=0) == end.replace(second=0, microsecond=0):
        return f"{start:%H:%M:%S}-{end:%H:%M:%S} UTC"
    return f"{start:%H:%M}-{end:%H:%M} UTC"


@dataclass(frozen=True)
class Window:
    """A stretch of time (an outage, a slow spell) as every part of a message says it, so the subject, the first
    line and the table of facts agree: "after 4 min 12 s (down 09:14-09:18 UTC)"."""

    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return max(0.0, (self.end - self.start).total_seconds())

    @property
    def length(self) -> str:
        return duration(self.seconds)

    @property
    def span(self) -> str:
        return span(self.start, self.end)

    def after(self, word: str = "down") -> str:
        return f"after {self.length} ({word} {self.span})"


def days_left(expiry: datetime, now: datetime) -> int:
    """Whole days until `expiry` counted as a person counts them: any part of a day is a day (2.97 days left is
    3, 0.2 days is 1); 0 or less once it has passed."""
    return math.ceil((expiry - now).total_seconds() / DAY)


def expires_in(days: int) -> str:
    """"expires in 3 days", "expires in 1 day", "has expired" (for days_left's count)."""
    return f"expires in {plural(days, 'day')}" if days > 0 else "has expired"


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
