"""The one engine every check type runs on.

    select due monitors → check (I/O, bounded concurrency) → evaluate (pure) → persist (ETag) → publish

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
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors import KINDS, from_entity, kind_of
from monitors.base import latest_slot
from monitors.contract import CheckContext, CheckResult
from shared.engine.outbox import publish
from shared.engine.settle import Outcome, evaluate, result_row, settle, unchanged
from shared.text import clip

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from monitors.contract import Evaluation, Kind
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
    outcomes: list[Outcome] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        finished = self.finished_at or self.started_at
        return {"trigger": self.trigger, "due_at": self.due_at or self.started_at, "started_at": self.started_at,
                "finished_at": finished, "duration_ms": round((finished - self.started_at).total_seconds() * 1000),
                "monitors": self.monitors, "checked": self.checked, "errors": self.errors, "events": self.events,
                "paused": self.paused, "storage_requests": self.storage_requests}


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


# ------------------------------------------------------------------------------------------- checks


async def check_all(kind: Kind[Any], items: list[tuple[MonitorBase, datetime]],
                    ctx: CheckContext) -> list[tuple[CheckResult, datetime]]:
    """Check every due monitor through the kind's check_batch; a broken batch is an ERROR for each."""
    started = _utcnow()
    try:
        by_id = await kind.check_batch([cfg for cfg, _ in items], ctx)
    except Exception as error:
        log.exception("check_batch failed for %s", kind.name)
        failure = CheckResult("error", error=clip(f"checker failed: {type(error).__name__}: {error}", 1000))
        return [(failure, started) for _ in items]
    out = []
    for cfg, _ in items:
        result = by_id.get(cfg.id or "") or CheckResult("error", error="checker returned no result")
        if result.error:
            result.error = clip(result.error, 1000)
        out.append((result, result.checked_at or started))
    return out


# ------------------------------------------------------------------------------------------- a tick


@asynccontextmanager
async def check_context(settings: Settings, store: Store | None) -> AsyncIterator[CheckContext]:
    """What the checks of one run share: the guarded and the trusted HTTP session, the settings and a read-only
    port to the app's storage (none without a store)."""
    from shared.outbound.guard import Guard
    from shared.outbound.http import sessions

    guard = Guard.from_settings(settings)
    async with sessions(settings.check_concurrency, guard) as (guarded, trusted):
        port: Any = AppStoragePort(store) if store is not None else None
        yield CheckContext(guarded, trusted, settings, port, settings.check_concurrency, guard)


async def _process(store: Store, settings: Settings, kind: Kind[Any], due: list[tuple[MonitorBase, datetime]],
                   states: dict[str, StateRow], trigger: str, summary: TickSummary) -> None:
    async with check_context(settings, store) as ctx:
        checked = await check_all(kind, due, ctx)
    summary.checked = len(checked)
    semaphore = asyncio.Semaphore(16)

    async def write(cfg: MonitorBase, slot: datetime, result: CheckResult, checked_at: datetime,
                    evaluation: Evaluation) -> tuple[Outcome, list[OutboxRow]]:
        async with semaphore:
            try:
                return await settle(store, kind, cfg, states.get(cfg.id or ""), result, slot, checked_at, evaluation)
            except Exception as error:
                log.exception("could not store the state of monitor %s", cfg.id)
                summary.errors += 1
                result.error = result.error or clip(f"state not stored: {error}", 1000)
                return Outcome(cfg.id or "", cfg.name, slot, result, status="ERROR", checked_at=checked_at), []

    # Evaluate everything in this task (pure and cheap); only monitors whose state changed get a write task.
    settled: list[tuple[Outcome, list[OutboxRow]]] = []
    pending = []
    for (cfg, slot), (result, checked_at) in zip(due, checked, strict=True):
        try:
            evaluation, prev = evaluate(kind, cfg, states.get(cfg.id or ""), result, checked_at)
        except Exception:
            log.exception("evaluate failed for monitor %s", cfg.id)
            summary.errors += 1
            settled.append((Outcome(cfg.id or "", cfg.name, slot, result, status="ERROR", checked_at=checked_at),
                            []))
            continue
        if unchanged(evaluation, prev):
            settled.append((Outcome(cfg.id or "", cfg.name, slot, result, status=evaluation.status,
                                    checked_at=checked_at), []))
        else:
            pending.append(write(cfg, slot, result, checked_at, evaluation))
    settled += await asyncio.gather(*pending)
    rows: list[OutboxRow] = []
    results = []
    for outcome, outbox in settled:
        summary.outcomes.append(outcome)
        rows += outbox
        if outcome.result.outcome == "error":
            summary.errors += 1
        if not outcome.duplicate:
            results.append(result_row(store, outcome, trigger))
    try:
        await store.write_results(results)
    except Exception:
        log.exception("writing %d results failed", len(results))
        summary.errors += 1
    summary.events += await publish(store, rows)


# ---------------------------------------------------------------------------------------- services


def due_monitors(monitors: list[MonitorBase], states: dict[str, StateRow], window_start: datetime,
                 now: datetime) -> list[tuple[MonitorBase, datetime]]:
    """Monitors with a scheduled slot in (window_start, now]; a never-checked monitor is due at once."""
    due = []
    for cfg in monitors:
        row = states.get(cfg.id or "")
        if row is None:
            due.append((cfg, now.replace(second=0, microsecond=0)))
            continue
        kind = KINDS[cfg.kind]
        slot = latest_slot(cfg, now, kind.breaker_interval(cfg) if kind.breaker_open(cfg, row.data) else None)
        if slot > window_start:
            due.append((cfg, slot))
    return due


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
def _gc_paused() -> Iterator[None]:
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
    with _gc_paused():
        return await _run_kind(store, settings, kind_of(kind), trigger=trigger, now=now, due_at=due_at)


async def _run_kind(store: Store, settings: Settings, kind: Kind[Any], *, trigger: str,
                    now: datetime | None, due_at: datetime | None) -> TickSummary:
    now = now or _utcnow()
    clock = time.perf_counter()
    requests_before = store.request_count
    summary = TickSummary(kind.name, trigger, started_at=now, due_at=due_at)
    meta = await store.get_kind_meta(kind.name)
    if trigger == "timer" and meta.get("paused"):
        summary.paused = True
    else:
        entities = [e for e in await store.list_monitors(kind.name, engine_fields=True) if e.get("enabled", True)]
        states, outbox = await store.load_states(kind.name)
        orphans = [row for row in outbox if row.written_at is None or row.written_at <= now - OUTBOX_GRACE]
        if orphans:
            summary.events += await publish(store, orphans)  # left over from a crashed cycle
        configs, broken = load_configs(entities)
        summary.monitors = len(entities)
        summary.errors += len(broken)
        if trigger == "timer":
            last = meta.get("last_tick_at")
            window_start = max(last, now - MAX_CATCH_UP) if last else now - FIRST_WINDOW
            due = due_monitors(configs, states, window_start, now)
        else:
            due = [(cfg, now) for cfg in configs]
        await _process(store, settings, kind, due, states, trigger, summary)
    summary.finished_at = summary.started_at + timedelta(seconds=time.perf_counter() - clock)
    summary.storage_requests = store.request_count - requests_before
    try:
        await store.record_tick(kind.name, summary.record())
        if trigger == "timer":
            await store.set_kind_meta(kind.name, last_tick_at=now, last_finished_at=summary.finished_at)
    except Exception:
        log.exception("could not record the %s tick", kind.name)
    log.info("%s %s tick: %d due of %d, %d errors, %d events, %d ms, %d storage requests", kind.name, trigger,
             summary.checked, summary.monitors, summary.errors, summary.events,
             (summary.finished_at - summary.started_at).total_seconds() * 1000, summary.storage_requests)
    return summary


class MonitorNotFound(LookupError):
    pass


async def run_monitor(store: Store, settings: Settings, monitor_id: str) -> Outcome:
    """Check one monitor now (enabled or not), store and publish like a timer run would."""
    entity = await store.get_monitor(monitor_id)
    if entity is None:
        raise MonitorNotFound(monitor_id)
    kind = kind_of(entity["kind"])
    cfg = from_entity(entity)
    row = await store.get_state(kind.name, monitor_id)
    now = _utcnow()
    summary = TickSummary(kind.name, "manual", started_at=now)
    await _process(store, settings, kind, [(cfg, now)], {monitor_id: row} if row else {}, "manual", summary)
    return summary.outcomes[0]


def known_kinds() -> list[str]:
    return sorted(KINDS)
