"""What a tick writes about its checks, while it settles.

Every check goes into the tick's blocks (packed per hour and shard: shared/storage/packing.py) — what uptime counts.
A steady success (nothing changed, outcome up) is kept there whole: its fields are a template shared with the
monitor's other steady checks, and the hourly compaction folds it into a fold row. Every other check (a failure, a
change, degraded, during a state write, or one whose fields a template cannot carry) also gets a row of its own in
`results`, as before.

Rows wait per partition; a partition with a full transaction (MAX_BATCH_ENTITIES rows) is sent at once, and the rest
— rows and blocks — goes when the oldest waiting check has waited FLUSH_SECONDS (a timer: nothing waits for a slow
check) or at the end. A steady tick of N monitors so costs one transaction per hour it touches (the blocks of
BLOCK_SHARDS shards), whatever N; order does not matter (slot-keyed upserts; blocks carry their run).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.engine.settle import result_fields, result_row
from shared.storage import keys
from shared.storage.limits import MAX_BATCH_ENTITIES
from shared.storage.packing import CODE, MAINTENANCE, MAX_ENTRIES, ROW, BlockBuilder, template_of

if TYPE_CHECKING:
    from shared.engine.run import TickSummary
    from shared.engine.settle import Outcome
    from shared.storage import Store

log = logging.getLogger("monitor.engine")

_US = timedelta(microseconds=1)


class ResultWriter:
    FLUSH_SECONDS = 3.0  # a normal tick writes its results at its end; a slow one, every few seconds

    def __init__(self, store: Store, summary: TickSummary, tick: datetime) -> None:
        self.store, self.summary, self.tick = store, summary, tick
        self.run = uuid.uuid4().hex[:8]
        self.seq = 0
        self.waiting: dict[str, list[dict[str, Any]]] = {}
        self.blocks: dict[tuple[datetime, int], BlockBuilder] = {}
        self.full: list[dict[str, Any]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.flushing: set[asyncio.Task[None]] = set()
        self._templates: dict[tuple[Any, ...], str | None] = {}

    def add(self, outcome: Outcome, trigger: str) -> None:
        r = outcome.result
        slot = outcome.slot
        hour = keys.hour_floor(slot)
        shard = keys.block_shard(outcome.stored_as)
        builder = self.blocks.get((hour, shard))
        if builder is None:
            builder = self.blocks[(hour, shard)] = BlockBuilder(hour)
        slot_us = round((slot - hour) / _US)
        checked = outcome.checked_at or slot
        dt_us = round((checked - slot) / _US)
        code = CODE.get(r.outcome, CODE["error"]) | (MAINTENANCE if outcome.maintenance else 0)
        template = self._template(outcome, trigger) if outcome.steady and r.outcome == "up" and not r.error else None
        if template is None or not builder.add(outcome.stored_as, slot_us, dt_us, r.latency_ms, code, template):
            builder.add(outcome.stored_as, slot_us, dt_us, r.latency_ms, code | ROW, None)
            self._row(result_row(self.store, outcome, trigger))
        if len(builder) >= MAX_ENTRIES:
            self.full.append(self._entity(self.blocks.pop((hour, shard)), shard))
        if self.timer is None and (self.waiting or self.blocks or self.full):
            self.timer = asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self._flush)

    def _template(self, outcome: Outcome, trigger: str) -> str | None:
        r = outcome.result
        try:
            key = (r.outcome, r.latency_ms is None, outcome.checked_at is None, trigger, outcome.status,
                   outcome.maintenance, outcome.location, tuple(r.data.items()))
            hash(key)
        except TypeError:  # a kind's list or dict field: no shortcut
            return template_of(result_fields(outcome, trigger))
        found = self._templates.get(key, "")
        if found == "":
            found = self._templates[key] = template_of(result_fields(outcome, trigger))
        return found

    def _entity(self, builder: BlockBuilder, shard: int) -> dict[str, Any]:
        self.seq += 1
        return builder.entity(keys.block_pk(builder.hour), keys.block_row(shard, self.tick, self.run, self.seq))

    def _row(self, row: dict[str, Any]) -> None:
        rows = self.waiting.setdefault(row["PartitionKey"], [])
        rows.append(row)
        if len(rows) >= MAX_BATCH_ENTITIES:
            self._send(self.store.write_results, self.waiting.pop(row["PartitionKey"]), "results")

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        rows = [row for group in self.waiting.values() for row in group]
        self.waiting = {}
        self._send(self.store.write_results, rows, "results")
        blocks = self.full + [self._entity(b, shard) for (_, shard), b in self.blocks.items()]
        self.blocks, self.full = {}, []
        self._send(self.store.write_blocks, blocks, "blocks")

    def _send(self, write: Any, items: list[dict[str, Any]], what: str) -> None:
        if items:
            task = asyncio.create_task(self._write(write, items, what))
            self.flushing.add(task)
            task.add_done_callback(self.flushing.discard)

    async def _write(self, write: Any, items: list[dict[str, Any]], what: str) -> None:
        try:
            await write(items)
        except Exception:
            log.exception("writing %d %s failed", len(items), what)
            self.summary.errors += 1

    async def close(self) -> None:
        self._flush()
        if self.flushing:
            await asyncio.gather(*self.flushing)
