"""What is due: the one rule the timers select monitors by, and the `next_check_at` the API shows from it.

The kind timers tick once a minute (shared/triggers/timers.py). A tick at `now` covers (window_start, now] — from
the previous tick — and checks every monitor with a scheduled slot in it (`due_slot`). A monitor never checked is
due at once; an open circuit breaker stretches the period. `next_check_at` asks `due_slot` which tick comes next,
so what the API promises is what the timer does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors import KINDS
from monitors.base import latest_slot, next_slot

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from shared.storage import StateRow

TICK = timedelta(seconds=60)  # the kind timers' period (shared/triggers/timers.py EVERY_MINUTE)


def minute(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


def _stretched(cfg: MonitorBase, state: dict[str, Any]) -> int | None:
    kind = KINDS[cfg.kind]
    return kind.breaker_interval(cfg) if kind.breaker_open(cfg, state) else None


def due_slot(cfg: MonitorBase, state: dict[str, Any] | None, window_start: datetime,
             now: datetime) -> datetime | None:
    """The slot a timer tick at `now`, covering (window_start, now], checks `cfg` for; None: not due then.
    `state`: the monitor's stored state (None: never checked, due at once)."""
    if state is None:
        return minute(now)
    slot = latest_slot(cfg, now, _stretched(cfg, state))
    return slot if slot > window_start else None


def due_monitors(monitors: list[MonitorBase], states: dict[str, StateRow], window_start: datetime,
                 now: datetime) -> list[tuple[MonitorBase, datetime]]:
    """Monitors with a scheduled slot in (window_start, now], each with that slot."""
    due = []
    for cfg in monitors:
        row = states.get(cfg.id or "")
        slot = due_slot(cfg, row.data if row is not None else None, window_start, now)
        if slot is not None:
            due.append((cfg, slot))
    return due


def next_check_at(cfg: MonitorBase, state: dict[str, Any] | None, now: datetime | None = None) -> datetime:
    """When a timer tick will next check `cfg` (enabled, its kind not paused): the first minute tick after `now`
    for which `due_slot` says due. The tick is looked for from the monitor's first slot after the current minute
    (there is none before it), so this costs one or two `due_slot` calls, not a walk over every minute."""
    now = now or datetime.now(UTC)
    tick = minute(now) + TICK
    if state is not None and due_slot(cfg, state, tick - TICK, tick) is None:
        first = next_slot(cfg, minute(now), _stretched(cfg, state))
        tick = max(tick, minute(first) + (TICK if first != minute(first) else timedelta(0)))
    for _ in range(24 * 60):  # a tick with a slot in its window; the loop only guards the step above
        if due_slot(cfg, state, tick - TICK, tick) is not None:
            return tick
        tick += TICK
    return tick
