"""Run now: one monitor checked on request (the HTTP API and the CLI), through the same stages as a tick."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from monitors import from_entity, kind_of
from monitors.contract import CHECK_DEADLINE, CheckResult
from shared.engine.located import where_now
from shared.engine.run import TickSummary, process
from shared.engine.settle import Outcome
from shared.storage.keys import series_id

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from shared.settings import Settings
    from shared.storage import Store


class MonitorNotFound(LookupError):
    pass


def _utcnow() -> datetime:
    return datetime.now(UTC)


_running: dict[str, asyncio.Future[Outcome]] = {}  # monitor id → the run-now in progress in this process
RUN_LEASE_SECONDS = CHECK_DEADLINE + 30


async def run_monitor(store: Store, settings: Settings, monitor_id: str) -> Outcome:
    """Check one monitor now (enabled or not), store and publish like a timer run would.

    Concurrent requests for one monitor share one check: in this process they await the same run; across
    instances a short lease (`run-{id}`) lets one run and the others wait for it and answer with its result. So a
    burst of run-nows is one check, never a burst of consecutive failures."""
    running = _running.get(monitor_id)
    if running is not None:
        return await asyncio.shield(running)
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    _running[monitor_id] = future
    try:
        outcome = await _run_once(store, settings, monitor_id)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as error:
        future.set_exception(error)
        future.exception()  # retrieved: the waiters get it
        raise
    finally:
        del _running[monitor_id]
    future.set_result(outcome)
    return outcome


async def _run_once(store: Store, settings: Settings, monitor_id: str) -> Outcome:
    entity = await store.get_monitor(monitor_id)
    if entity is None:
        raise MonitorNotFound(monitor_id)
    kind = kind_of(entity["kind"])
    cfg = from_entity(entity)
    lease_name, owner = f"run-{monitor_id}", uuid.uuid4().hex
    etag = await store.acquire_lease(lease_name, owner, RUN_LEASE_SECONDS)
    if etag is None:  # another instance is checking it right now: its result is ours
        return await _result_of_other_run(store, cfg, lease_name)
    try:
        now = _utcnow()
        where = await where_now(store, settings, kind.name, now)
        ids = [monitor_id] if where is None else [monitor_id, series_id(monitor_id, where.here)]
        states = {i: row for i in ids if (row := await store.get_state(kind.name, i)) is not None}
        summary = TickSummary(kind.name, "manual", started_at=now)
        await process(store, settings, kind, [(cfg, now)], states, "manual", summary, where=where)
        return summary.outcomes[0]
    finally:
        await asyncio.shield(store.release_lease(lease_name, etag))


async def _result_of_other_run(store: Store, cfg: MonitorBase, lease_name: str) -> Outcome:
    deadline = time.monotonic() + RUN_LEASE_SECONDS
    while time.monotonic() < deadline and await store.get_lease(lease_name) is not None:
        await asyncio.sleep(0.25)
    rows = await store.query_results(cfg.id or "", limit=1)
    if not rows:
        raise MonitorNotFound(cfg.id or "")
    row = rows[0]
    fields = {k: v for k, v in row.items() if k not in ("PartitionKey", "RowKey", "monitor_id", "ts", "outcome",
                                                         "latency_ms", "error", "checked_at", "trigger", "status")}
    result = CheckResult(row.get("outcome", "error"), row.get("latency_ms"), row.get("error"), fields,
                         row.get("checked_at"))
    return Outcome(cfg.id or "", cfg.name, row["ts"], result, status=row.get("status"),
                   checked_at=row.get("checked_at"))
