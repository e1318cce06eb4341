"""The one engine every check type runs on.

    select due monitors → check (I/O, bounded concurrency) → evaluate (pure) → persist (ETag) → publish

Timers, HTTP "run now" and the CLI all come through `run_kind` / `run_monitor`.

Exactly-once where it matters:
- A result's RowKey is the monitor's scheduled slot, so two runs of the same tick upsert one row, never two.
- State is written only when it changes, with its ETag, together with its outbox rows (events + downtime
  operations) in one table transaction. A run that loses the ETag race re-reads; if the winner already
  applied the same slot it drops its result, otherwise it re-evaluates on top of the winner's state. So a
  timer run and a "run now" at the same moment can never open two downtime windows.
- Outbox rows are published after the commit (downtime window written, event stored, queue message sent)
  and deleted last; rows left behind by a crash are published by the first cycle of that kind that starts
  OUTBOX_GRACE after they were written (sooner, a concurrent run could still be publishing them).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Iterator

import aiohttp

from monitors import KINDS, from_entity, kind_module
from monitors.base import CheckResult, MonitorBase, latest_slot
from monitors.policy import breaker_open
from shared.events import Event
from shared.settings import Settings
from shared.storage import Conflict, OutboxRow, StateRow, Store, clip

log = logging.getLogger("monitor.engine")

USER_AGENT = "azure-monitor-functions/0.1 (+https://github.com/)"
MAX_CATCH_UP = timedelta(hours=1)
FIRST_WINDOW = timedelta(seconds=60)
# A live run publishes its outbox rows seconds after writing them; only rows older than this are orphans of a
# crashed run. Without the wait, a run starting while another is publishing would send its events again.
# Shorter than the timer period, so the next tick still publishes a crashed tick's events before its own.
OUTBOX_GRACE = timedelta(seconds=30)


@dataclass
class CheckContext:
    """What a check may use: one shared HTTP session for the cycle, and the settings."""

    http: aiohttp.ClientSession
    settings: Settings


@dataclass
class Outcome:
    monitor_id: str
    name: str
    slot: datetime
    result: CheckResult
    status: str | None = None
    events: list[str] = field(default_factory=list)
    duplicate: bool = False


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
        return {"trigger": self.trigger, "due_at": self.due_at or self.started_at, "started_at": self.started_at,
                "finished_at": self.finished_at or self.started_at,
                "duration_ms": round(((self.finished_at or self.started_at) - self.started_at).total_seconds()
                                     * 1000),
                "monitors": self.monitors, "checked": self.checked, "errors": self.errors, "events": self.events,
                "paused": self.paused, "storage_requests": self.storage_requests}


class PeerCertResponse(aiohttp.ClientResponse):
    """A response that remembers the server's TLS certificate (DER) in `peer_cert`.

    aiohttp releases `response.connection` as soon as the whole body has arrived, which for small bodies
    and HEAD requests happens before the caller gets the response (aio-libs/aiohttp#2205), so the
    certificate must be taken when the response starts.
    """

    peer_cert: bytes | None = None

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        transport = connection.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is not None:
            self.peer_cert = ssl_object.getpeercert(binary_form=True)
        return await super().start(connection)


@asynccontextmanager
async def http_session(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=settings.check_concurrency, limit_per_host=0, ttl_dns_cache=300,
                                     enable_cleanup_closed=True)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     headers={"User-Agent": USER_AGENT}, trust_env=False,
                                     response_class=PeerCertResponse) as session:
        yield session


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ------------------------------------------------------------------------------------------- checks


async def _check_all(module: Any, items: list[tuple[MonitorBase, datetime]], ctx: CheckContext,
                     concurrency: int) -> list[tuple[CheckResult, datetime]]:
    """Run every check with at most `concurrency` in flight; an exception becomes an ERROR result."""
    if hasattr(module, "check_batch"):  # kinds that fetch many monitors in one request (e.g. WHMCS)
        started = _utcnow()
        try:
            by_id = await module.check_batch([cfg for cfg, _ in items], ctx)
        except Exception as error:  # noqa: BLE001 - one broken batch must not stop the cycle
            log.exception("check_batch failed for %s", module.KIND)
            by_id = {}
            failure = CheckResult("error", error=clip(f"checker failed: {type(error).__name__}: {error}", 1000))
            return [(failure, started) for _ in items]
        missing = CheckResult("error", error="checker returned no result")
        return [(by_id.get(cfg.id, missing), started) for cfg, _ in items]

    semaphore = asyncio.Semaphore(concurrency)

    async def one(cfg: MonitorBase) -> tuple[CheckResult, datetime]:
        async with semaphore:
            started = _utcnow()
            try:
                result = await module.check(cfg, ctx)
            except Exception as error:  # noqa: BLE001 - a failing monitor never stops the others
                log.exception("check of monitor %s (%s) failed", cfg.id, cfg.name)
                result = CheckResult("error", error=clip(f"checker failed: {type(error).__name__}: {error}", 1000))
            if result.error:
                result.error = clip(result.error, 1000)
            return result, started

    return list(await asyncio.gather(*(one(cfg) for cfg, _ in items)))


# --------------------------------------------------------------------------------------- persistence


def _payloads(events: list[Event], ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [{"id": e.id, "event": e.model_dump(mode="json"), "ops": []} for e in events]
    if ops:
        if out:
            out[0]["ops"] = ops
        else:
            out.append({"id": uuid.uuid4().hex, "event": None, "ops": ops})
    return out


def _evaluate(module: Any, cfg: MonitorBase, row: StateRow | None, result: CheckResult,
              now: datetime) -> tuple[Any, dict[str, Any]]:
    """Run the kind's pure evaluate on the stored state (without the engine's own `last_slot` bookkeeping)."""
    prev = {k: v for k, v in row.data.items() if k != "last_slot"} if row else {}
    return module.evaluate(cfg, prev, result, now), prev


def _unchanged(evaluation: Any, prev: dict[str, Any]) -> bool:
    return evaluation.state == prev and not evaluation.events and not evaluation.ops


async def _settle(store: Store, module: Any, cfg: MonitorBase, row: StateRow | None, result: CheckResult,
                  slot: datetime, now: datetime, evaluation: Any = None) -> tuple[Outcome, list[OutboxRow]]:
    """Evaluate and commit one monitor's result, retrying on ETag conflicts. Pure evaluate, ETag-guarded write."""
    kind = module.KIND
    slot_key = slot.isoformat()
    outcome = Outcome(cfg.id or "", cfg.name, slot, result)
    for _ in range(6):
        if evaluation is None:
            evaluation, prev = _evaluate(module, cfg, row, result, now)
            if _unchanged(evaluation, prev):
                outcome.status = evaluation.status
                return outcome, []  # the steady path: nothing to write
        outcome.status = evaluation.status
        try:
            rows = await store.commit_state(kind, cfg.id or "", {**evaluation.state, "last_slot": slot_key},
                                            evaluation.status, row.etag if row else None,
                                            _payloads(evaluation.events, evaluation.ops))
            outcome.events = [e.type.value for e in evaluation.events]
            return outcome, rows
        except Conflict:
            row = await store.get_state(kind, cfg.id or "")
            evaluation = None
            if row is not None and row.data.get("last_slot") == slot_key:
                outcome.duplicate = True  # another run already applied this very slot
                outcome.status = row.status
                return outcome, []
    raise RuntimeError(f"state of monitor {cfg.id} kept changing; gave up after 6 attempts")


async def publish(store: Store, rows: list[OutboxRow]) -> int:
    """Apply outbox rows: downtime windows, stored events, queue messages; delete each row last."""
    sent = 0
    for row in rows:
        payload = row.payload
        monitor_id = row.row_key.split("|ob|")[0]
        try:
            for op in payload.get("ops", []):
                started = datetime.fromisoformat(op["started_at"])
                if op["op"] == "open_downtime":
                    await store.open_downtime(monitor_id, started, op.get("reason"))
                elif op["op"] == "close_downtime":
                    await store.close_downtime(monitor_id, started, datetime.fromisoformat(op["ended_at"]))
            event = payload.get("event")
            if event:
                audience = Event.model_validate(event).audience
                await store.save_event(event, delivery="queued" if audience != "none" else "none")
                if audience != "none":
                    await store.send_event_message({"event": event})
                    sent += 1
            await store.delete_outbox(row)
        except Exception:  # noqa: BLE001 - left in the outbox; the next cycle publishes it
            log.exception("publishing outbox row %s failed; will retry next cycle", row.row_key)
    return sent


def _result_row(store: Store, outcome: Outcome, checked_at: datetime, trigger: str) -> dict[str, Any]:
    r = outcome.result
    fields = {"outcome": r.outcome, "latency_ms": r.latency_ms, "error": r.error, "checked_at": checked_at,
              "trigger": trigger, "status": outcome.status, **r.data}
    return store.result_entity(outcome.monitor_id, outcome.slot, {k: v for k, v in fields.items() if v is not None})


async def _process(store: Store, settings: Settings, module: Any, due: list[tuple[MonitorBase, datetime]],
                   states: dict[str, StateRow], trigger: str, summary: TickSummary) -> None:
    async with http_session(settings) as http:
        checked = await _check_all(module, due, CheckContext(http, settings), settings.check_concurrency)
    summary.checked = len(checked)
    semaphore = asyncio.Semaphore(16)

    async def settle(cfg: MonitorBase, slot: datetime, result: CheckResult, checked_at: datetime,
                     evaluation: Any):  # noqa: ANN202
        async with semaphore:
            try:
                return await _settle(store, module, cfg, states.get(cfg.id or ""), result, slot, checked_at,
                                     evaluation), checked_at
            except Exception as error:  # noqa: BLE001 - our storage failing for one monitor
                log.exception("could not store the state of monitor %s", cfg.id)
                summary.errors += 1
                failed = Outcome(cfg.id or "", cfg.name, slot, result, status="ERROR")
                failed.result.error = failed.result.error or clip(f"state not stored: {error}", 1000)
                return (failed, []), checked_at

    # Evaluate everything in this task (pure and cheap); only monitors whose state changed get a write task.
    settled: list[tuple[tuple[Outcome, list[OutboxRow]], datetime]] = []
    pending = []
    for (cfg, slot), (result, checked_at) in zip(due, checked):
        try:
            evaluation, prev = _evaluate(module, cfg, states.get(cfg.id or ""), result, checked_at)
        except Exception:  # noqa: BLE001 - a bug in one kind's evaluate must not stop the cycle
            log.exception("evaluate failed for monitor %s", cfg.id)
            summary.errors += 1
            settled.append(((Outcome(cfg.id or "", cfg.name, slot, result, status="ERROR"), []), checked_at))
            continue
        if _unchanged(evaluation, prev):
            settled.append(((Outcome(cfg.id or "", cfg.name, slot, result, status=evaluation.status), []),
                            checked_at))
        else:
            pending.append(settle(cfg, slot, result, checked_at, evaluation))
    settled += await asyncio.gather(*pending)
    rows: list[OutboxRow] = []
    results = []
    for (outcome, outbox), checked_at in settled:
        summary.outcomes.append(outcome)
        rows += outbox
        if outcome.result.outcome == "error":
            summary.errors += 1
        if not outcome.duplicate:
            results.append(_result_row(store, outcome, checked_at, trigger))
    try:
        await store.write_results(results)
    except Exception:  # noqa: BLE001 - results lost for this tick, but state/events still go out
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
        slot = latest_slot(cfg, now, breaker_open(cfg, row.data))
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
        except Exception:  # noqa: BLE001 - a definition we cannot read is reported, the rest run
            log.exception("monitor %s has an unreadable definition", entity.get("RowKey"))
            broken.append(entity.get("RowKey", "?"))
    return configs, broken


async def run_kind(store: Store, settings: Settings, kind: str, *, trigger: str = "timer",
                   now: datetime | None = None, due_at: datetime | None = None) -> TickSummary:
    """One cycle of a kind. trigger="timer" runs what is due (and honours pause); "manual" runs every
    enabled monitor of the kind now."""
    with _gc_paused():
        return await _run_kind(store, settings, kind, trigger=trigger, now=now, due_at=due_at)


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


async def _run_kind(store: Store, settings: Settings, kind: str, *, trigger: str,
                    now: datetime | None, due_at: datetime | None) -> TickSummary:
    module = kind_module(kind)
    now = now or _utcnow()
    clock = time.perf_counter()
    requests_before = store.request_count
    summary = TickSummary(kind, trigger, started_at=now, due_at=due_at)
    meta = await store.get_kind_meta(kind)
    if trigger == "timer" and meta.get("paused"):
        summary.paused = True
    else:
        entities = [e for e in await store.list_monitors(kind, engine_fields=True) if e.get("enabled", True)]
        states, outbox = await store.load_states(kind)
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
        await _process(store, settings, module, due, states, trigger, summary)
    summary.finished_at = summary.started_at + timedelta(seconds=time.perf_counter() - clock)
    summary.storage_requests = store.request_count - requests_before
    try:
        await store.record_tick(kind, summary.record())
        if trigger == "timer":
            await store.set_kind_meta(kind, last_tick_at=now, last_finished_at=summary.finished_at)
    except Exception:  # noqa: BLE001 - a missing tick record shows up as a gap in /health
        log.exception("could not record the %s tick", kind)
    log.info("%s %s tick: %d due of %d, %d errors, %d events, %d ms, %d storage requests", kind, trigger,
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
    module = kind_module(entity["kind"])
    cfg = from_entity(entity)
    row = await store.get_state(module.KIND, monitor_id)
    now = _utcnow()
    summary = TickSummary(module.KIND, "manual", started_at=now)
    await _process(store, settings, module, [(cfg, now)], {monitor_id: row} if row else {}, "manual", summary)
    return summary.outcomes[0]


def known_kinds() -> list[str]:
    return sorted(KINDS)
