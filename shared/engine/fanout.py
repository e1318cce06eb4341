"""Fan-out: a timer tick with many due monitors hands them to the checks queue instead of checking them itself.

    timer tick (dispatcher): select due → batches of FANOUT_BATCH_SIZE → one message each on CHECKS_QUEUE
    queue worker (check_batch, any instance): its batch → the engine's `process`, as an inline tick does

The platform scales the queue worker out (the queue scale controller; Flex Consumption scales each queue function
on its own), so a tick is no longer bound to one instance. A message holds only the kind, the tick and each
monitor's id and slot — never a definition or a secret; the worker reads the definitions and states itself (the
same process caches as a tick: one request each when nothing changed).

Everything the engine guarantees holds across workers, because they settle exactly as a tick does: results are
keyed by slot (a redelivered message writes the same rows and blocks), a state is written only with its ETag and
a slot is applied once (`last_slot`), events leave through the transactional outbox (the next timer tick
publishes what a killed worker left). A monitor and the monitors it depends on (`depends_on`) travel in one batch,
so the alert gate still sees a parent's result of the same tick.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from shared.storage import keys

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from shared.engine.run import TickSummary
    from shared.settings import Settings
    from shared.storage import Store

MESSAGE_VERSION = 1
# A batch that waited longer than this (a backlog: workers could not keep up) is not checked: its slots are long
# past and newer ticks have queued the same monitors again. It is recorded as not checked.
MAX_AGE = timedelta(minutes=10)


class BadBatch(ValueError):
    """A message on the checks queue that is not a batch this version can read (it is dropped, not retried)."""


def wanted(settings: Settings, due_count: int, trigger: str) -> bool:
    """Whether a tick hands its due monitors to the queue: timer ticks at or above FANOUT_THRESHOLD (0: never)."""
    return trigger == "timer" and 0 < settings.fanout_threshold <= due_count


def batches(due: list[tuple[MonitorBase, datetime]], size: int) -> list[list[tuple[MonitorBase, datetime]]]:
    """Due monitors in batches of about `size`; a monitor and its due parents (depends_on, through any number of
    levels) always share a batch, which may then hold more than `size`."""
    index = {cfg.id or "": n for n, (cfg, _) in enumerate(due)}
    root = list(range(len(due)))

    def find(n: int) -> int:
        while root[n] != n:
            root[n] = root[root[n]]
            n = root[n]
        return n

    for n, (cfg, _) in enumerate(due):
        for parent in cfg.depends_on:
            if parent in index:
                root[find(n)] = find(index[parent])
    groups: dict[int, list[tuple[MonitorBase, datetime]]] = {}
    for n, item in enumerate(due):
        groups.setdefault(find(n), []).append(item)
    out: list[list[tuple[MonitorBase, datetime]]] = []
    current: list[tuple[MonitorBase, datetime]] = []
    # in the order of their block shard (keys.block_shard): a batch writes one block per shard it touches, so a
    # batch of whole shards writes a few large blocks, not one small block in each of the 64
    for group in sorted(groups.values(), key=lambda g: keys.block_shard(g[0][0].id or "")):
        if current and len(current) + len(group) > size:
            out.append(current)
            current = []
        current.extend(group)
    if current:
        out.append(current)
    return out


def encode(kind: str, tick: datetime, batch: list[tuple[MonitorBase, datetime]]) -> str:
    """{"v", "k": kind, "t": tick, "s": {slot: [monitor ids]}} — a few KB for hundreds of monitors."""
    slots: dict[str, list[str]] = {}
    for cfg, slot in batch:
        slots.setdefault(slot.isoformat(), []).append(cfg.id or "")
    return json.dumps({"v": MESSAGE_VERSION, "k": kind, "t": tick.isoformat(), "s": slots}, separators=(",", ":"))


def decode(text: str) -> tuple[str, datetime, dict[str, datetime]]:
    """(kind, tick, {monitor id: slot}) of a message; BadBatch when it is not one."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != MESSAGE_VERSION:
            raise BadBatch(f"not a version {MESSAGE_VERSION} batch")
        kind, tick = str(data["k"]), _aware(datetime.fromisoformat(data["t"]))
        slots = {str(mid): _aware(datetime.fromisoformat(at)) for at, ids in data["s"].items() for mid in ids}
    except BadBatch:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BadBatch(f"unreadable batch: {error}") from None
    return kind, tick, slots


def _aware(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError("a time without a zone")
    return dt.astimezone(UTC)


async def dispatch(store: Store, settings: Settings, kind: str, tick: datetime,
                   due: list[tuple[MonitorBase, datetime]]) -> int:
    """Send the tick's due monitors to the checks queue; returns the number of messages."""
    from shared.aio import gather_bounded

    texts = [encode(kind, tick, batch) for batch in batches(due, settings.fanout_batch_size)]
    await gather_bounded(texts, lambda text: store.send_check_batch(settings.checks_queue, text), 16)
    return len(texts)


async def run_batch(store: Store, settings: Settings, text: str, now: datetime | None = None) -> TickSummary:
    """Check one batch, as the tick that dispatched it would have: the monitors still enabled and of the batch's
    kind, each at its slot. BadBatch for a message that is not a batch (the caller drops it)."""
    from shared.engine.run import gc_paused

    with gc_paused():
        return await _run_batch(store, settings, text, now)


async def _run_batch(store: Store, settings: Settings, text: str, now: datetime | None) -> TickSummary:
    import time

    from monitors import KINDS
    from shared.engine.located import Where
    from shared.engine.run import TickSummary, check_due, finish, load_configs, log

    kind_name, tick, slots = decode(text)
    kind = KINDS.get(kind_name)
    if kind is None:
        raise BadBatch(f"no kind named {kind_name!r}")
    now = now or datetime.now(UTC)
    clock, started = time.perf_counter(), time.monotonic()
    requests_before = store.request_count
    summary = TickSummary(kind.name, "queue", started_at=now, due_at=tick, monitors=len(slots),
                          location=settings.check_location if settings.locations else None)
    meta, versions = await store.kind_meta_and_defs(kind.name)
    if now - tick > MAX_AGE:
        log.error("%s batch of the tick at %s waited %s in the queue: not checked (newer ticks have queued these "
                  "monitors again)", kind.name, tick.isoformat(), now - tick)
        summary.not_checked = list(slots)
    elif meta.get("paused"):
        summary.paused = True
    else:
        stored = await store.engine_monitors(kind.name, versions.get("monitors") or "-")
        entities = [e for e in stored if e["RowKey"] in slots and e.get("enabled", True)]
        states, _ = await store.engine_states(kind.name)  # its outbox rows are the timer's (it publishes orphans)
        configs, broken = load_configs(entities)
        summary.errors += len(broken)
        due = [(cfg, slots[cfg.id or ""]) for cfg in configs]
        await check_due(store, settings, kind, due, states, "queue", summary, versions, started,
                        Where.of(settings, meta, now))
    await finish(store, kind, summary, clock, requests_before)
    return summary
