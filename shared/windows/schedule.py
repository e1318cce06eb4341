"""When maintenance windows are: their occurrences, and which one covers a monitor at an instant.

Occurrences are computed in the window's local wall time (naive) and only then converted with zoneinfo, so
"02:00 Europe/Berlin" is 02:00 local on both sides of a DST change. A start in a spring-forward gap moves to the first
valid instant after it (the transition); an ambiguous autumn time is its first (fold=0) instant. Duration is elapsed
time: the end is start + duration in UTC.

The engine asks `Windows.active(cfg, at)` once per check, so that must be O(1) (Uptime Kuma's recurring maintenance
burned CPU generating slots, uptime-kuma#2889): each window caches its answer around `at` and reuses it while `at` is
inside [previous end, next start) (or the current occurrence); `Windows` also caches the intersection of those
intervals and the list of windows active in it, so a check outside maintenance costs two comparisons. A search never
iterates from a rule's first occurrence: an rrule is re-rooted at a period boundary shortly before `at` (aligned to
`starts_on` for INTERVAL > 1; model.py spells out the day parts RFC 5545 would take from DTSTART, so BYDAY=1WE or
BYMONTHDAY rules mean the same whatever the root), a cron expression is walked with croniter from just around `at`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from croniter import croniter
from dateutil.rrule import rrulestr

from shared.windows.model import MaintenanceWindow, anchored_rule, rule_parts

if TYPE_CHECKING:
    from monitors.base import MonitorBase

log = logging.getLogger("monitor.windows")
MARGIN = timedelta(hours=3)  # more than any zone's offset change: local and UTC order agree outside it
FAR = datetime.max.replace(tzinfo=UTC) - timedelta(days=2)
EPOCH = date(2000, 1, 3)  # a Monday: the anchor of rules that need none (INTERVAL=1, a day part given)
WEEKDAY_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
PERIOD_DAYS = {"HOURLY": 1 / 24, "DAILY": 1, "WEEKLY": 7, "MONTHLY": 31, "YEARLY": 366}


@dataclass(frozen=True)
class Occurrence:
    window_id: str
    name: str
    start: datetime  # aware UTC
    end: datetime  # aware UTC, exclusive


class Scoped(Protocol):
    id: str | None
    kind: str
    tags: list[str]


def to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """A naive wall-clock time in `tz` as an aware UTC instant: fold=0 when ambiguous; in a gap, the first valid
    instant after it (the transition)."""
    instant = local.replace(tzinfo=tz).astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local:
        return instant
    # In a gap: fold=0 reads it with the offset before the change (at or after the transition), fold=1 with the one
    # after (before the transition); the transition is the first instant whose wall time is past `local`.
    lo = int(local.replace(tzinfo=tz, fold=1).astimezone(UTC).timestamp())
    hi = int(instant.timestamp())
    lo, hi = min(lo, hi), max(lo, hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) > local:
            hi = mid
        else:
            lo = mid + 1
    return datetime.fromtimestamp(lo, UTC)


def local_of(instant: datetime, tz: ZoneInfo) -> datetime:
    return utc(instant).astimezone(tz).replace(tzinfo=None)


def utc(instant: datetime) -> datetime:
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


class Compiled:
    """One window, ready to answer: its scope as sets, its rule parsed once, and its cached slot."""

    def __init__(self, window: MaintenanceWindow) -> None:
        self.window = window
        self.id = window.id or ""
        self.name = window.name
        self.tz = ZoneInfo(window.timezone)
        self.monitors = frozenset(window.monitors)
        self.tags = frozenset(window.tags)
        self.kinds = frozenset(window.kinds)
        self.all = window.all
        if window.start is not None and window.end is not None:
            self.duration = window.end - window.start
        else:
            self.duration = timedelta(minutes=window.duration_minutes or 0)
        self.first = datetime.combine(window.starts_on, time()) if window.starts_on else None
        self.last = datetime.combine(window.ends_on, time.max) if window.ends_on else None
        self.rule = anchored_rule(window.rrule, window.starts_on) if window.rrule else None
        self.parts = rule_parts(self.rule) if self.rule else {}
        self.at = time.fromisoformat(window.at) if window.at else time()
        self.interval = int(self.parts.get("INTERVAL") or 1)
        self.lookahead = timedelta(days=min(50 * 366, max(731, 2 * self.interval * PERIOD_DAYS.get(
            self.parts.get("FREQ", "DAILY"), 1))))
        self._slot: tuple[datetime, datetime, Occurrence | None] | None = None

    # -- scope ---------------------------------------------------------------------------------------------------

    def applies(self, cfg: Scoped) -> bool:
        return (self.all or cfg.id in self.monitors or cfg.kind in self.kinds
                or (bool(self.tags) and any(tag in self.tags for tag in cfg.tags)))

    # -- the slot around an instant ------------------------------------------------------------------------------

    def slot(self, at: datetime) -> tuple[datetime, datetime, Occurrence | None]:
        """(lo, hi, occurrence): the answer for every instant in [lo, hi); computed only when `at` leaves it."""
        cached = self._slot
        if cached is not None and cached[0] <= at < cached[1]:
            return cached
        prev, nxt, limit = self.around(at)
        fresh: tuple[datetime, datetime, Occurrence | None]
        if prev is not None and at < prev + self.duration:
            occ = self.occurrence(prev)
            fresh = (prev, min(occ.end, nxt or limit), occ)
        else:
            fresh = (prev + self.duration if prev is not None else at, nxt or limit, None)
        self._slot = fresh
        return fresh

    def occurrence(self, start: datetime) -> Occurrence:
        if self.window.end is not None and not self.window.recurring:
            return Occurrence(self.id, self.name, start, utc(self.window.end))
        return Occurrence(self.id, self.name, start, start + self.duration)

    def around(self, at: datetime) -> tuple[datetime | None, datetime | None, datetime]:
        """(latest start <= at, or None when none can still be running; earliest start > at, or None when none
        comes before `limit`; limit)."""
        if self.window.start is not None:
            start = utc(self.window.start)
            return (start, None, FAR) if start <= at else (None, start, FAR)
        local = local_of(at, self.tz)
        limit_local = local + self.lookahead
        if self.last is not None:
            limit_local = min(limit_local, self.last)
        if self.last is not None and limit_local <= local:  # past ends_on: no start ever again
            limit = FAR
        else:
            limit = max(to_utc(limit_local, self.tz), at + timedelta(minutes=1))
        prev = nxt = None
        if self.window.cron:  # walk from `at` both ways: a frequent expression never costs `duration` of steps
            prev = self._cron_prev(local, at)
            since = local - MARGIN
        else:
            since = local - self.duration - MARGIN
        for start in self.starts(since, limit_local):
            if start <= at:
                prev = start
            else:
                nxt = start
                break
        return prev, nxt, limit

    def _cron_prev(self, local: datetime, at: datetime) -> datetime | None:
        """croniter walking back from just past `at` (the forward walk only starts `duration` before it)."""
        lower = local - self.duration - MARGIN
        top = min(local + MARGIN, self.last) if self.last else local + MARGIN
        walker = croniter(self.window.cron, top)
        for _ in range(10_000):
            candidate = walker.get_prev(datetime)
            if candidate < lower or (self.first is not None and candidate < self.first):
                return None
            start = to_utc(candidate, self.tz)
            if start <= at:
                return start
        return None

    def starts(self, since_local: datetime, until_local: datetime) -> Any:
        """Occurrence starts (aware UTC, ascending) whose local time is in [since_local, until_local], within
        starts_on/ends_on."""
        if self.first is not None:
            since_local = max(since_local, self.first)
        if self.last is not None:
            until_local = min(until_local, self.last)
        if since_local > until_local:
            return
        if self.window.cron:
            walker = croniter(self.window.cron, since_local - timedelta(microseconds=1))
            while True:
                candidate = walker.get_next(datetime)
                if candidate > until_local:
                    return
                yield to_utc(candidate, self.tz)
        else:
            root = self.root(since_local)
            for candidate in rrulestr(self.rule or "", dtstart=root):
                if candidate > until_local:
                    return
                if candidate >= since_local:
                    yield to_utc(candidate, self.tz)

    def root(self, point: datetime) -> datetime:
        """A dtstart for the rrule at a period boundary at or before `point` - one unit (a day; an hour for HOURLY),
        in phase with INTERVAL counted from starts_on: the rule yields the same occurrences from there on as it
        would from its real first one."""
        freq, n = self.parts.get("FREQ", "DAILY"), self.interval
        anchor = self.window.starts_on or EPOCH
        if freq == "HOURLY":
            base = datetime.combine(anchor, time(self.at.hour))
            hours = int((point - timedelta(hours=1) - base).total_seconds() // 3600)
            return base + timedelta(hours=hours // n * n, minutes=self.at.minute)
        day = (point - timedelta(days=1)).date()
        if freq == "DAILY":
            start = anchor + timedelta(days=(day - anchor).days // n * n)
        elif freq == "WEEKLY":
            wkst = WEEKDAY_CODES.index(self.parts.get("WKST", "MO"))
            first = anchor - timedelta(days=(anchor.weekday() - wkst) % 7)
            week = day - timedelta(days=(day.weekday() - wkst) % 7)
            start = first + timedelta(weeks=(week - first).days // 7 // n * n)
        elif freq == "MONTHLY":
            months = (day.year - anchor.year) * 12 + day.month - anchor.month
            year, month = divmod(anchor.year * 12 + anchor.month - 1 + months // n * n, 12)
            start = date(year, month + 1, 1)
        else:  # YEARLY
            start = date(anchor.year + (day.year - anchor.year) // n * n, 1, 1)
        return datetime.combine(start, self.at)

    # -- views ---------------------------------------------------------------------------------------------------

    def current_and_next(self, at: datetime) -> tuple[Occurrence | None, Occurrence | None]:
        prev, nxt, _ = self.around(at)
        current = self.occurrence(prev) if prev is not None and at < prev + self.duration else None
        return current, self.occurrence(nxt) if nxt is not None else None

    def upcoming(self, at: datetime, horizon: timedelta, cap: int = 1000) -> list[Occurrence]:
        """Occurrences starting in [at, at + horizon)."""
        end = at + horizon
        if self.window.start is not None:
            start = utc(self.window.start)
            return [self.occurrence(start)] if at <= start < end else []
        out: list[Occurrence] = []
        for start in self.starts(local_of(at, self.tz) - MARGIN, local_of(end, self.tz) + MARGIN):
            if start >= end or len(out) >= cap:
                break
            if start >= at and (not out or out[-1].start != start):
                out.append(self.occurrence(start))
        return out


class Windows:
    """The maintenance windows, loaded once (one query of the windows table) for a tick of checks."""

    def __init__(self, windows: list[MaintenanceWindow]) -> None:
        self.by_id = {w.id or "": Compiled(w) for w in windows}
        self.live = [c for c in self.by_id.values() if c.window.enabled]
        self._lo = self._hi = FAR
        self._now: list[Occurrence] = []
        self._scope: list[Compiled] = []

    @classmethod
    async def load(cls, store: Any, version: str | None = None) -> Windows:
        """The stored windows (kept between runs while their version stays: shared/storage/base.py)."""
        from shared.windows.service import from_entity

        windows = []
        for entity in await store.cached_definitions("windows", version):
            try:
                windows.append(from_entity(entity))
            except Exception as error:  # noqa: BLE001 - one unreadable definition must not stop the checks
                log.warning("maintenance window %s is unreadable, ignored: %s", entity.get("RowKey"), error)
        return cls(windows)

    def _refresh(self, at: datetime) -> None:
        lo, hi = datetime.min.replace(tzinfo=UTC), FAR
        now, scope = [], []
        for compiled in self.live:
            s_lo, s_hi, occ = compiled.slot(at)
            lo, hi = max(lo, s_lo), min(hi, s_hi)
            if occ is not None:
                now.append(occ)
                scope.append(compiled)
        self._lo, self._hi, self._now, self._scope = lo, hi, now, scope

    def active(self, cfg: MonitorBase | Scoped, at: datetime) -> Occurrence | None:
        """The window covering `cfg` at `at` (start inclusive, end exclusive); of several, the one ending last."""
        at = utc(at)
        if not self._lo <= at < self._hi:
            self._refresh(at)
        best = None
        for compiled, occ in zip(self._scope, self._now, strict=True):
            if compiled.applies(cfg) and (best is None or occ.end > best.end):
                best = occ
        return best

    def current(self, at: datetime) -> list[Occurrence]:
        """Every enabled window's occurrence running at `at`."""
        at = utc(at)
        if not self._lo <= at < self._hi:
            self._refresh(at)
        return list(self._now)

    def upcoming(self, at: datetime, horizon: timedelta) -> list[Occurrence]:
        """Occurrences of enabled windows starting within [at, at + horizon), by start."""
        at = utc(at)
        out = [occ for c in self.live for occ in c.upcoming(at, horizon)]
        return sorted(out, key=lambda o: (o.start, o.name, o.window_id))

    def applies(self, window_id: str, cfg: MonitorBase | Scoped) -> bool:
        compiled = self.by_id.get(window_id)
        return compiled is not None and compiled.applies(cfg)

    def window(self, window_id: str) -> MaintenanceWindow | None:
        compiled = self.by_id.get(window_id)
        return compiled.window if compiled else None
