"""The alert gate: between a kind's evaluation and its commit, it holds a monitor's alerts while the monitor is in
a maintenance window or while a monitor it depends on (`depends_on`) is down, and tells the one thing that matters
when the hold ends.

Pure (no I/O), and generic over kinds: the kind's evaluation runs as always (DOWN is DOWN, its state evolves);
only what is told changes.

- While held, every event of the evaluation (audience events and checker errors alike) is returned as `held`
  (stored with delivery `held` and its reason, never queued). The gate keeps, in the state under `_gate`, the
  status the audience last heard (`announced`), the latest held event that came with a status change (`event`),
  the reason, and during maintenance the window (`maint`).
- When the hold ends (the first check without one): if the status differs from `announced`, exactly one alert
  says so — this check's own status-change events if it has any, else the held event re-stamped now ("still down
  after maintenance …"); if it does not differ (it went down and recovered meanwhile), nothing is told.
- Maintenance also takes the period out of downtime: an open window (`down_since`, the up/down policy's
  convention) is closed at the maintenance start, the kind's downtime operations are dropped meanwhile, and at its
  end a monitor still down gets a window opened at the end (`down_since` moved there), so the downtime reported
  afterwards excludes maintenance. A dependency hold leaves downtime alone: the child really is unreachable.

`_gate` exists only while something is held (or a maintenance window had to be accounted for), so a monitor that
is steady — inside maintenance too — produces an identical state and the engine writes nothing.

`Holds` (the one part with I/O) is what a run reads for the gate: the maintenance windows, one query per run (a
failure to read them is logged and the run goes on without), and the state of each monitor a due monitor depends
on, once per run per parent — and only for monitors that have `depends_on`, so the others cost no request.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from monitors.contract import CloseDowntime, DowntimeOp, Evaluation, OpenDowntime
from shared.events import Event, EventType

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from shared.storage import StateRow, Store

log = logging.getLogger("monitor.engine")

GATE = "_gate"  # the gate's key in a monitor's state


class OccurrenceLike(Protocol):
    """One occurrence of a maintenance window (shared/windows/schedule.py `Occurrence`): times aware UTC."""

    @property
    def window_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...


class WindowsLike(Protocol):
    """shared/windows/schedule.py `Windows`: the maintenance windows, loaded once."""

    def active(self, cfg: MonitorBase, at: datetime) -> OccurrenceLike | None: ...


@dataclass(frozen=True)
class Held:
    """An event the gate did not let out, and why (stored with delivery `held`)."""

    event: Event
    reason: str


@dataclass(frozen=True)
class Hold:
    """What may hold a monitor's alerts at one check: the maintenance occurrence it is in, the names of the
    monitors it depends on that are down, and the time they were decided for (the check's slot: the gate's clock,
    so a window's start and end are where the schedule says)."""

    occurrence: OccurrenceLike | None = None
    parents_down: tuple[str, ...] = ()
    at: datetime | None = None


NO_HOLD = Hold()


@dataclass
class Gated:
    evaluation: Evaluation
    held: list[Held] = field(default_factory=list)


def hold_reason(occurrence: OccurrenceLike | None, parents_down: list[str]) -> str | None:
    """Why alerts are held now (maintenance first), None when they are not."""
    if occurrence is not None:
        return f"maintenance: {occurrence.name}"
    if parents_down:
        verb = "is" if len(parents_down) == 1 else "are"
        return f"depends on {', '.join(parents_down)} which {verb} down"
    return None


def gate(cfg: MonitorBase, prev: dict[str, Any], evaluation: Evaluation, occurrence: OccurrenceLike | None,
         parents_down: list[str], now: datetime) -> Gated:
    """The evaluation as it may be told, and the events held back. `prev` is the previous state (with `_gate`
    if it had one; its `status` is what the monitor had before this check)."""
    before = prev.get(GATE)
    reason = hold_reason(occurrence, parents_down)
    if reason is None and before is None:
        return Gated(evaluation)  # the common case: nothing held, nothing to release
    state = {k: v for k, v in evaluation.state.items() if k != GATE}
    g: dict[str, Any] = dict(before) if before else {"announced": prev.get("status", "PENDING")}
    ops = _downtime(g, prev, state, evaluation.ops, occurrence, now)
    changed = evaluation.status != prev.get("status", "PENDING")
    if reason is not None:
        held = [Held(e, reason) for e in evaluation.events]
        if changed and evaluation.events:
            told = [e for e in evaluation.events if e.audience == "monitor"] or evaluation.events
            g["event"] = told[-1].model_dump(mode="json")
        if before is None and not held and not ops:
            return Gated(Evaluation(state, evaluation.status, [], []))  # nothing to remember: steady, or quiet
        g["reason"] = reason
        if occurrence is None:
            g["parents"] = list(parents_down)
        return Gated(Evaluation({**state, GATE: g}, evaluation.status, [], ops), held)
    # released: one alert if the status is not what the audience last heard
    if evaluation.status == g.get("announced"):
        if not changed:  # e.g. a certificate warning of this very check still goes out
            return Gated(Evaluation(state, evaluation.status, evaluation.events, ops))
        note = f"{g.get('reason', 'held')} (released: the status is what was last told)"
        return Gated(Evaluation(state, evaluation.status, [], ops), [Held(e, note) for e in evaluation.events])
    if changed and evaluation.events:
        return Gated(Evaluation(state, evaluation.status, evaluation.events, ops))
    events = list(evaluation.events)
    if g.get("event"):
        events.insert(0, _restamped(cfg, g, state, now))
    return Gated(Evaluation(state, evaluation.status, events, ops))


def _downtime(g: dict[str, Any], prev: dict[str, Any], state: dict[str, Any], kind_ops: list[DowntimeOp],
              occurrence: OccurrenceLike | None, now: datetime) -> list[DowntimeOp]:
    """The downtime operations to commit, maintenance taken out; updates `g` (its `maint`) and `state`
    (`down_since`) in place."""
    if occurrence is not None:
        ops: list[DowntimeOp] = []
        if "maint" not in g and prev.get("down_since"):  # an open window: closed at the maintenance start
            started = datetime.fromisoformat(prev["down_since"])
            ops.append(CloseDowntime(started, max(started, min(occurrence.start, now))))
        g["maint"] = {"id": occurrence.window_id, "name": occurrence.name, "end": occurrence.end.isoformat()}
        return ops  # no downtime window opens or closes during maintenance
    maint = g.pop("maint", None)
    if maint is None:
        return list(kind_ops)
    g["after"] = maint["name"]  # the maintenance the released alert names
    if not state.get("down_since"):  # recovered (its window was closed at the start, or never opened)
        return []
    end = min(datetime.fromisoformat(maint["end"]), now)
    since = max(datetime.fromisoformat(state["down_since"]), end)
    state["down_since"] = since.isoformat()
    return [OpenDowntime(since, state.get("down_reason") or f"still down after maintenance {maint['name']}")]


def _restamped(cfg: MonitorBase, g: dict[str, Any], state: dict[str, Any], now: datetime) -> Event:
    """The latest held event, told now: a new id and time, and for a monitor still down the words that say so."""
    event = Event.model_validate(g["event"])
    after = g.get("after")
    details = {**event.details, "held": g.get("reason"), "held_at": event.occurred_at.isoformat()}
    message = event.message
    if event.type == EventType.MONITOR_DOWN:
        details.pop("reminder", None)
        if state.get("down_since"):
            details["since"] = state["down_since"]
        parents = g.get("parents") or []
        message = (f"{cfg.name} is still down after maintenance {after}." if after
                   else f"{cfg.name} is still down (its alerts were held while {', '.join(parents)} "
                        f"{'was' if len(parents) == 1 else 'were'} down).")
        if details.get("error"):
            message = f"{message} {details['error']}"
    elif after:
        message = f"{message} (after maintenance {after})"
    return event.model_copy(update={"id": uuid.uuid4().hex, "occurred_at": now, "message": message,
                                    "details": details, "replaces": None})


# --------------------------------------------------------------------------------- what a run reads for it


_parents: dict[str, tuple[str, str]] = {}  # monitor id → (kind, name) of monitors depended on, across runs
MAX_PARENTS = 10_000


class Holds:
    """What may hold alerts during one run: its maintenance windows, and the parents' statuses (cached).

    A parent checked in the same run counts with its status after this run's check (`expect` / `settled`): when a
    router and the sites behind it fail in the same tick, the sites' alerts are held already. Its children wait
    for it (in their own tasks, never in the check stream); a parent not checked, or a cycle (refused on write, but
    two concurrent writes could still make one), is released by `settled(id, None)` / `finish` and then counts
    with its stored state. `blocked` says how many children are waiting right now."""

    def __init__(self, store: Store, kind: str, states: dict[str, StateRow], windows: WindowsLike | None) -> None:
        self.store, self.kind, self.states, self.windows = store, kind, states, windows
        self._down: dict[str, str | None] = {}  # parent id → its name when it is down, None when it is not
        self._fresh: dict[str, asyncio.Future[str | None]] = {}  # parents checked in this run → their status
        self._names: dict[str, str] = {}
        self.blocked = 0

    @classmethod
    async def load(cls, store: Store, kind: str, states: dict[str, StateRow], version: str | None = None) -> Holds:
        windows: WindowsLike | None = None
        try:
            from shared.windows.schedule import Windows

            windows = await Windows.load(store, version)
        except Exception:
            log.exception("could not load the maintenance windows: this %s run holds no alert for them", kind)
        return cls(store, kind, states, windows)

    def expect(self, due: list[MonitorBase]) -> None:
        """The monitors of this run: those some other one of them depends on are waited for."""
        ids = {cfg.id: cfg.name for cfg in due if cfg.id}
        loop = asyncio.get_running_loop()
        for cfg in due:
            for parent in cfg.depends_on:
                if parent in ids and parent != cfg.id and parent not in self._fresh:
                    self._fresh[parent] = loop.create_future()
                    self._names[parent] = ids[parent]

    def waits(self, cfg: MonitorBase) -> bool:
        """Whether the hold of `cfg` may have to wait for a parent checked in this run."""
        return any(p in self._fresh and not self._fresh[p].done() for p in cfg.depends_on)

    def settled(self, monitor_id: str, status: str | None) -> None:
        future = self._fresh.get(monitor_id)
        if future is not None and not future.done():
            future.set_result(status)

    def finish(self) -> None:
        for future in self._fresh.values():
            if not future.done():
                future.set_result(None)

    async def drain(self, settling: set[asyncio.Task[None]]) -> None:
        """Wait for a run's settling tasks (the check stream has ended). When every task left waits for a parent
        that waits too (a cycle), the waits end and stored states decide."""
        while settling:
            if self.blocked and self.blocked >= len(settling):
                self.finish()
            await asyncio.wait(set(settling), timeout=0.1)
        self.finish()

    async def of(self, cfg: MonitorBase, at: datetime) -> Hold:
        """The hold of one check at `at` (its slot)."""
        occurrence = None
        if self.windows is not None:
            try:
                occurrence = self.windows.active(cfg, at)
            except Exception:
                log.exception("maintenance windows of monitor %s could not be worked out: none held", cfg.id)
        if not cfg.depends_on:
            return Hold(occurrence, at=at)
        down = [name for name in [await self._parent_down(p) for p in cfg.depends_on] if name]
        return Hold(occurrence, tuple(down), at)

    async def _parent_down(self, parent_id: str) -> str | None:
        from monitors import KINDS

        if parent_id in self._down:
            return self._down[parent_id]
        future = self._fresh.get(parent_id)
        status = None
        if future is not None:
            self.blocked += 1
            try:
                status = await future
            finally:
                self.blocked -= 1
        if status is not None:
            down = self._names[parent_id] if KINDS[self.kind].statuses.of(status).red else None
        else:
            try:
                down = await self._read(parent_id)
            except Exception:
                log.exception("could not read the state of monitor %s (a parent): taken as not down", parent_id)
                down = None
        self._down[parent_id] = down
        return down

    async def _read(self, parent_id: str) -> str | None:
        from monitors import KINDS

        known = _parents.get(parent_id)
        if known is None:
            entity = await self.store.get_monitor(parent_id)
            if entity is None:
                return None  # deleted: nothing to wait for
            if len(_parents) >= MAX_PARENTS:
                _parents.clear()
            known = _parents[parent_id] = (entity["kind"], entity.get("name") or parent_id)
        kind, name = known
        row = self.states.get(parent_id) if kind == self.kind else None
        if row is None:
            row = await self.store.get_state(kind, parent_id)
        if row is None or kind not in KINDS:
            return None
        return name if KINDS[kind].statuses.of(row.status).red else None
