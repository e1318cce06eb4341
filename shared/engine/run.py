"""The one engine every check type runs on.

    select due monitors → check (I/O, bounded concurrency) → evaluate (pure) → gate (pure) → persist (ETag) → publish

The gate (shared/engine/gate.py) holds alerts of monitors in maintenance or whose parents (`depends_on`) are down;
what it needs is read once per run (`Holds`: the windows in one query, each parent's state once).

Timers, HTTP "run now" and the CLI all come through `run_kind` / `run_monitor`.

Exactly-once where it matters:
- A result's RowKey is the monitor's scheduled slot, so two runs of the same tick upsert one row, never two.
- State is written only when it changes, with its ETag, together with its outbox rows (events + downtime
  operations) in one table transaction (shared/engine/settle.py).
- Outbox rows are published after the commit and deleted last; rows left behind by a crash are published by the
  first cycle of that kind that starts OUTBOX_GRACE after they were written (sooner, a concurrent run could still
  be publishing them).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors import KINDS, from_entity, kind_of
from monitors.contract import CheckContext, CheckResult
from shared.engine.due import due_monitors
from shared.engine.gate import Hold, Holds
from shared.engine.located import Where, series_of, settle_located
from shared.engine.outbox import publish
from shared.engine.settle import Outcome, evaluate, settle, unchanged
from shared.engine.writer import ResultWriter
from shared.secrets import scrub, scrub_obj
from shared.storage import keys
from shared.text import clip

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from monitors.contract import Evaluation, Kind
    from shared.engine.gate import Held
    from shared.settings import Settings
    from shared.storage import OutboxRow, StateRow, Store

log = logging.getLogger("monitor.engine")

MAX_CATCH_UP = timedelta(hours=1)
FIRST_WINDOW = timedelta(seconds=60)
# A live run publishes its outbox rows seconds after writing them; only rows older than this are orphans of a
# crashed run. Without the wait, a run starting while another is publishing would send its events again.
# Shorter than the timer period, so the next tick still publishes a crashed tick's events before its own.
OUTBOX_GRACE = timedelta(seconds=30)


@dataclass
class TickSummary:
    kind: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None = None
    due_at: datetime | None = None
    monitors: int = 0
    checked: int = 0
    errors: int = 0
    events: int = 0
    paused: bool = False
    storage_requests: int = 0
    dispatched: int = 0  # messages handed to the checks queue (a fanned-out tick checks nothing itself)
    location: str | None = None  # several locations: the one that ran
    outcomes: list[Outcome] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)  # due, but not started before the tick's budget ran out

    def record(self) -> dict[str, Any]:
        finished = self.finished_at or self.started_at
        return {"trigger": self.trigger, "due_at": self.due_at or self.started_at, "started_at": self.started_at,
                "finished_at": finished, "duration_ms": round((finished - self.started_at).total_seconds() * 1000),
                "monitors": self.monitors, "checked": self.checked, "errors": self.errors, "events": self.events,
                "paused": self.paused, "storage_requests": self.storage_requests, "dispatched": self.dispatched,
                "not_checked": len(self.not_checked), **({"location": self.location} if self.location else {})}


class AppStoragePort:
    """The read-only look at the app's storage that checks get (CheckContext.app_storage)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def queue_depth(self, name: str) -> int:
        return await self._store.queue_depth(name)

    async def count_entities(self, table: str, flt: str | None, limit: int) -> int:
        return await self._store.count_entities(table, flt, limit)


def _utcnow() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------------------- a tick


@asynccontextmanager
async def check_context(settings: Settings, store: Store | None) -> AsyncIterator[CheckContext]:
    """What the checks of one run share: the guarded and the trusted HTTP session, the settings and a read-only
    port to the app's storage (none without a store)."""
    from shared.outbound.guard import Guard
    from shared.outbound.http import sessions, user_agent

    guard = Guard.from_settings(settings)
    agent = user_agent(settings.check_location if settings.locations else None)
    async with sessions(settings.check_concurrency, guard, agent) as (guarded, trusted):
        port: Any = AppStoragePort(store) if store is not None else None
        yield CheckContext(guarded, trusted, settings, port, settings.check_concurrency, guard)


async def process(store: Store, settings: Settings, kind: Kind[Any], due: list[tuple[MonitorBase, datetime]],
                   states: dict[str, StateRow], trigger: str, summary: TickSummary,
                   stop_at: float | None = None, holds: Holds | None = None, where: Where | None = None) -> None:
    """Check, then settle each result as it comes: its state and events are committed and published at once, its
    result row goes out in the next batch — a slow or hanging target delays nobody else's alert. Whether a
    check's alerts are held is decided at its slot (maintenance windows, parents' states: `holds`, read here
    when not given). With several locations (`where`) a kind they cover is settled by shared/engine/located.py."""
    if holds is None:
        holds = await Holds.load(store, kind.name, states)
    located = where if where is not None and where.covers(kind) else None
    slots = {cfg.id or "": slot for cfg, slot in due}
    order = {cfg.id or "": n for n, (cfg, _) in enumerate(due)}
    writer = ResultWriter(store, summary, summary.started_at)
    gate = asyncio.Semaphore(16)
    settling: set[asyncio.Task[None]] = set()
    spawned: list[asyncio.Task[None]] = []

    async def commit(cfg: MonitorBase, slot: datetime, result: CheckResult, evaluation: Evaluation | None,
                     held: list[Held], hold: Hold) -> None:
        checked_at = result.checked_at or slot
        async with gate:
            try:
                outcome, rows = await (settle_located(store, kind, cfg, located, states, result, slot, checked_at,
                                                      hold) if located is not None else
                                       settle(store, kind, cfg, states.get(cfg.id or ""), result, slot, checked_at,
                                              evaluation, held, hold))
            except Exception as error:
                log.exception("could not store the state of monitor %s", cfg.id)
                summary.errors += 1
                result.error = result.error or clip(f"state not stored: {error}", 1000)
                outcome, rows = Outcome(cfg.id or "", cfg.name, slot, result, status="ERROR", checked_at=checked_at,
                                        maintenance=hold.occurrence.window_id if hold.occurrence else None), []
        summary.events += await publish(store, rows)
        _done(outcome)

    def _done(outcome: Outcome) -> None:
        summary.outcomes.append(outcome)
        holds.settled(outcome.monitor_id, outcome.status)
        if outcome.result.outcome == "error":
            summary.errors += 1
        if not outcome.duplicate:
            writer.add(outcome, trigger)

    def spawn(work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        settling.add(task)
        spawned.append(task)
        task.add_done_callback(settling.discard)

    def decide(cfg: MonitorBase, slot: datetime, result: CheckResult, hold: Hold) -> None:
        # several locations: both of its rows are compared in the commit (which writes nothing when steady)
        decided: Outcome | tuple[Evaluation | None, list[Held]] = (None, []) if located is not None else \
            _decide(kind, cfg, states.get(cfg.id or ""), result, slot, summary, hold)
        if isinstance(decided, Outcome):
            decided.maintenance = hold.occurrence.window_id if hold.occurrence else None
            _done(decided)
        else:
            spawn(commit(cfg, slot, result, *decided, hold))

    async def after_parents(cfg: MonitorBase, slot: datetime, result: CheckResult) -> None:
        decide(cfg, slot, result, await holds.of(cfg, slot))

    holds.expect([cfg for cfg, _ in due])
    async with check_context(settings, store) as ctx:
        async for cfg, result in kind.check_stream([cfg for cfg, _ in due], ctx, stop_at):
            slot = slots[cfg.id or ""]
            if result is None:
                summary.not_checked.append(cfg.id or "")
                holds.settled(cfg.id or "", None)
                continue
            summary.checked += 1
            scrub_result(result)
            if holds.waits(cfg):  # a parent checked in this run: decided once its result is in
                spawn(after_parents(cfg, slot, result))
            else:
                decide(cfg, slot, result, await holds.of(cfg, slot))
        await holds.drain(settling)
        await asyncio.gather(*spawned)  # all done: raises what one of them raised
    await writer.close()
    summary.outcomes.sort(key=lambda o: order.get(o.monitor_id, 0))


def scrub_result(result: CheckResult) -> None:
    """No secret (a setting's, a masked header's, a URL's credentials) in what a check reports, whichever kind
    it is: an echoing server's error body must not carry a token into results, state, events or e-mails."""
    if result.error:
        result.error = clip(scrub(result.error), 1000)
    for name, value in result.data.items():
        if isinstance(value, (str, list, dict)):
            result.data[name] = scrub_obj(value)


def _decide(kind: Kind[Any], cfg: MonitorBase, row: StateRow | None, result: CheckResult, slot: datetime,
            summary: TickSummary, hold: Hold) -> Outcome | tuple[Evaluation, list[Held]]:
    """The outcome when nothing is to be written (the steady path — in maintenance too —, a slot already applied,
    a broken evaluate); otherwise the gated evaluation to commit and the events it holds."""
    checked_at = result.checked_at or slot
    if row is not None and row.data.get("last_slot") == slot.isoformat():
        # This slot is in the state already (a run that died before writing its results, or a concurrent one):
        # applying it again would count one failure twice. Only its result row is written.
        return Outcome(cfg.id or "", cfg.name, slot, result, status=row.status, checked_at=checked_at)
    try:
        evaluation, held, prev = evaluate(kind, cfg, row, result, checked_at, hold)
    except Exception:
        log.exception("evaluate failed for monitor %s", cfg.id)
        summary.errors += 1
        return Outcome(cfg.id or "", cfg.name, slot, result, status="ERROR", checked_at=checked_at)
    if unchanged(evaluation, prev, held):
        return Outcome(cfg.id or "", cfg.name, slot, result, status=evaluation.status, checked_at=checked_at,
                       steady=True)
    return evaluation, held


# ---------------------------------------------------------------------------------------- services


_parsed: dict[str, tuple[str, MonitorBase]] = {}  # monitor id → (stored spec, its Config), across runs


def load_configs(entities: list[dict[str, Any]]) -> tuple[list[MonitorBase], list[str]]:
    """Configs of stored definitions. A definition is parsed again only when its stored spec changed (the
    engine never mutates a Config; the management services parse their own copies)."""
    configs, broken = [], []
    for entity in entities:
        try:
            cached = _parsed.get(entity["RowKey"])
            if cached is None or cached[0] != entity["spec"]:
                cached = _parsed[entity["RowKey"]] = (entity["spec"], from_entity(entity))
            configs.append(cached[1])
        except Exception:
            log.exception("monitor %s has an unreadable definition", entity.get("RowKey"))
            broken.append(entity.get("RowKey", "?"))
    return configs, broken


_gc_pauses = 0


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a run. A run allocates a few objects per monitor, nearly all
    freed by reference counting; with thousands of monitors alive the collector's generation-2 passes cost
    ~0.25 ms CPU per check (measured by bench/website_bench.py). Nested or concurrent runs share the pause;
    the collector resumes when the last one ends."""
    global _gc_pauses
    if _gc_pauses == 0:
        gc.disable()
    _gc_pauses += 1
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0:
            gc.enable()


async def run_kind(store: Store, settings: Settings, kind: str, *, trigger: str = "timer",
                   now: datetime | None = None, due_at: datetime | None = None) -> TickSummary:
    """One cycle of a kind. trigger="timer" runs what is due (and honours pause); "manual" runs every
    enabled monitor of the kind now."""
    with gc_paused():
        return await _run_kind(store, settings, kind_of(kind), trigger=trigger, now=now, due_at=due_at)


async def _run_kind(store: Store, settings: Settings, kind: Kind[Any], *, trigger: str,
                    now: datetime | None, due_at: datetime | None) -> TickSummary:
    from shared.engine import fanout

    now = now or _utcnow()
    clock, started = time.perf_counter(), time.monotonic()
    requests_before = store.request_count
    summary = TickSummary(kind.name, trigger, started_at=now, due_at=due_at)
    meta, versions = await store.kind_meta_and_defs(kind.name)
    located: Where | None = None
    if trigger == "timer" and meta.get("paused"):
        summary.paused = True
    else:
        # a version that was never stamped reads as "-" (kept too: the first write of that table stamps one)
        where = Where.of(settings, meta, now)
        summary.location = where.here if where is not None else None
        if where is not None and not where.covers(kind) and not where.primary:
            return summary  # a kind checked from one place: the first location's
        stored = await store.engine_monitors(kind.name, versions.get("monitors") or "-")
        entities = [e for e in stored if e.get("enabled", True)]
        states, outbox = await store.engine_states(kind.name)
        known = {e["RowKey"] for e in stored}
        if where is not None:
            known |= {sid for mid in list(known) for sid in series_of(mid, where.everywhere)}
        outbox = await _sweep_deleted(store, kind.name, known, states, outbox)
        orphans = [row for row in outbox if row.written_at is None or row.written_at <= now - OUTBOX_GRACE]
        if orphans:
            summary.events += await publish(store, orphans)  # left over from a crashed cycle (or queue worker)
        configs, broken = load_configs(entities)
        summary.monitors = len(entities)
        summary.errors += len(broken)
        located = where if where is not None and where.covers(kind) else None
        if located is not None:  # this location's monitors, due by their own (this location's) state
            configs = [cfg for cfg in configs if located.checks(cfg)]
        if trigger == "timer":
            last = (meta.get("locations", {}).get(located.here, {}) if located else meta).get("last_tick_at")
            window_start = max(last, now - MAX_CATCH_UP) if last else now - FIRST_WINDOW
            own = states if located is None else {cfg.id or "": states[sid] for cfg in configs
                                                  if (sid := keys.series_id(cfg.id or "", located.here)) in states}
            due = due_monitors(configs, own, window_start, now)
        else:
            due = [(cfg, now) for cfg in configs]
        if fanout.wanted(settings, len(due), trigger):
            summary.dispatched = await fanout.dispatch(store, settings, kind.name, now, due)
        else:
            await check_due(store, settings, kind, due, states, trigger, summary, versions, started, where)
    meta_row = keys.located_meta(kind.name, located.here) if located is not None else kind.name
    await finish(store, kind, summary, clock, requests_before, last_tick_at=now if trigger == "timer" else None,
                 meta_row=meta_row)
    return summary


async def check_due(store: Store, settings: Settings, kind: Kind[Any], due: list[tuple[MonitorBase, datetime]],
                    states: dict[str, StateRow], trigger: str, summary: TickSummary, versions: dict[str, Any],
                    started: float | None = None, where: Where | None = None) -> None:
    """Check and settle `due` within the tick's budget (TICK_BUDGET_SECONDS from `started`, default now)."""
    stop_at = (started if started is not None else time.monotonic()) + settings.tick_budget_seconds
    holds = await Holds.load(store, kind.name, states, versions.get("windows") or "-")
    await process(store, settings, kind, due, states, trigger, summary, stop_at, holds, where)
    if summary.not_checked:
        log.error("%s %s: %d due monitors not checked: the budget (TICK_BUDGET_SECONDS=%d) ran out", kind.name,
                  trigger, len(summary.not_checked), settings.tick_budget_seconds)


async def finish(store: Store, kind: Kind[Any], summary: TickSummary, clock: float, requests_before: int,
                 last_tick_at: datetime | None = None, meta_row: str | None = None) -> None:
    """Record a run (the ticks table) and, for a timer tick, move the kind's window on; then log it."""
    summary.finished_at = summary.started_at + timedelta(seconds=time.perf_counter() - clock)
    summary.storage_requests = store.request_count - requests_before
    try:
        await store.record_tick(kind.name, summary.record())
        if last_tick_at is not None:
            await store.set_kind_meta(meta_row or kind.name, last_tick_at=last_tick_at,
                                      last_finished_at=summary.finished_at)
    except Exception:
        log.exception("could not record the %s tick", kind.name)
    log.info("%s %s run: %d due of %d, %d dispatched, %d errors, %d events, %d ms, %d storage requests", kind.name,
             summary.trigger, summary.checked, summary.monitors, summary.dispatched, summary.errors, summary.events,
             (summary.finished_at - summary.started_at).total_seconds() * 1000, summary.storage_requests)


async def _sweep_deleted(store: Store, kind: str, known: set[str], states: dict[str, StateRow],
                         outbox: list[OutboxRow]) -> list[OutboxRow]:
    """Remove the state and outbox rows of monitors that no longer exist (a run that was still settling when its
    monitor was deleted writes them after the delete); returns the outbox rows that remain. An owner missing from
    this tick's listing is looked up once more first: it may have been created after the listing."""
    owners = ({owner for owner in states if owner not in known}
              | {row.owner_id for row in outbox if row.owner_id not in known})
    gone = set()
    for owner in owners:
        if await store.get_monitor(owner) is None:
            gone.add(owner)
    if not gone:
        return outbox
    for row in outbox:
        if row.owner_id in gone:
            log.info("dropping %s outbox row %s of deleted monitor %s", kind, row.row_key, row.owner_id)
            await store.delete_outbox(row)
    for owner in gone:
        if owner in states:
            await store.delete_state(kind, owner)
            del states[owner]
    return [row for row in outbox if row.owner_id not in gone]


def known_kinds() -> list[str]:
    return sorted(KINDS)
