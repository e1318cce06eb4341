"""Pieces of bench/fanout_bench.py: settings, monitors in bulk, the tick clock, a measured dispatch, and the headroom
search (inline against fanned out, within the one-minute tick).

Monitors are inserted as website_bench.create_monitors makes them (the same entity `Store.insert_monitor` writes)
but 100 to a transaction, and the definitions' version is stamped once: on Azurite every operation on a partition
costs more the more entities it holds, so inserting one by one is what limits how many monitors a run can set up.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import fanout_worker as fw
import website_bench as wb

KIND = fw.KIND
QUEUE = "monitor-checks"
SKEW_WAIT = 31.0  # > shared/storage/state.py CLOCK_SKEW: a state row is read again by every read within 30 s of it


def settings_for(conn: str, concurrency: int, **update: Any) -> Any:
    """The app's settings against this Azurite (website_bench.configure), with `update` (fanout_threshold, …)."""
    return wb.configure(conn, concurrency).model_copy(update={"checks_queue": QUEUE, **update})


async def add_monitors(store: Any, farm_url: str, start: int, count: int) -> list[str]:
    """`count` 60 s website monitors (farm_url/m/<i>), 100 a transaction; their ids."""
    import monitors
    from shared.storage import keys
    from shared.storage.limits import check_entity

    ops, ids = [], []
    for i in range(start, start + count):
        mid, name = uuid.uuid4().hex, f"bench site {i}"
        cfg = monitors.parse_spec({"kind": KIND, "id": mid, "name": name, "url": f"{farm_url}/m/{i}",
                                   "interval_seconds": 60, "attempts": 1})
        ops.append(("create", check_entity({"PartitionKey": keys.MONITORS_PK, "RowKey": mid, "kind": KIND,
                                            "name": name, "enabled": True, "spec": monitors.to_entity_spec(cfg)})))
        ids.append(mid)
    await store.batch("monitors", ops)
    await store.touch_definitions("monitors")
    return ids


async def set_enabled(store: Any, ids: list[str], enabled: bool) -> None:
    from azure.data.tables import UpdateMode

    from shared.storage import keys

    await store.batch("monitors", [("update", {"PartitionKey": keys.MONITORS_PK, "RowKey": mid, "enabled": enabled},
                                    {"mode": UpdateMode.MERGE}) for mid in ids])
    await store.touch_definitions("monitors")


class Clock:
    """Tick times: the wall clock's minute, or the minute after the previous tick if that is later (each run gets a
    fresh slot; a slot a few minutes ahead of the wall clock is fine, one more than MAX_AGE behind is not)."""

    def __init__(self) -> None:
        self.last = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)

    def next(self) -> datetime:
        self.last = max(datetime.now(UTC).replace(second=0, microsecond=0), self.last + timedelta(minutes=1))
        return self.last


@dataclass
class Tick:
    """One measured run_kind in this process."""

    summary: Any
    wall: float
    cpu: float
    requests: int
    started: float  # time.monotonic() at its start
    others: float = 0.0  # cores (mean) other processes used meanwhile (this one, the farm and Azurite excluded)

    @property
    def n(self) -> int:
        return max(self.summary.monitors, 1)


async def tick(store: Any, settings: Any, clock: Clock, procs: list | None = None, trigger: str = "timer") -> Tick:
    """A run_kind in this process; `procs` (farm, Azurite): what else is ours, for the machine's other load."""
    from shared.engine import run_kind

    started, cpu, requests = time.monotonic(), time.process_time(), store.request_count
    machine, helpers = fw.machine_busy(), fw.cpu_of(procs or [])
    summary = await run_kind(store, settings, KIND, trigger=trigger, now=clock.next())
    wall, cpu = time.monotonic() - started, time.process_time() - cpu
    others = fw.machine_busy() - machine - cpu - (fw.cpu_of(procs or []) - helpers)
    return Tick(summary, wall, cpu, store.request_count - requests, started, max(0.0, others) / wall if wall else 0)


async def warm(store: Any, pool: fw.Pool | None = None) -> None:
    """This process's caches (and the workers') read outside the measured run (fanout_worker.warm)."""
    await fw.warm(store)
    if pool is not None:
        await pool.warm()


async def reset_blocks(conn: str) -> None:
    """Drop and create the `blocks` table again. On Azurite an upsert costs more the more entities its partition
    holds, and a fanned-out tick writes a block per shard and batch, all into the hour's partition: without this,
    each run would find a larger partition than the one before and be slower for it (Table Storage is not)."""
    from azure.data.tables.aio import TableServiceClient

    async with TableServiceClient.from_connection_string(conn) as tables:
        await tables.delete_table("blocks")
        await tables.create_table("blocks")


async def blocks_size(store: Any) -> tuple[int, int]:
    """(entities, billed bytes) of the `blocks` table."""
    from shared.storage.limits import entity_size

    rows = await store.query("blocks", "PartitionKey ge @lo", {"lo": ""})
    return len(rows), sum(entity_size(dict(r)) for r in rows)


def describe(run: fw.RunStats) -> str:
    parts = [f"{run.checks:,} checks by {run.workers} worker(s) in {run.wall:.2f} s = {run.rate:,.0f} checks/s",
             f"statuses {run.statuses()}"]
    for key in ("errors", "events", "not_checked", "bad", "failed"):
        if run.total(key):
            parts.append(f"{key} {run.total(key):.0f}")
    if not run.complete:
        parts.append("INCOMPLETE (timed out)")
    return ", ".join(parts)


# ============================================================================================= headroom


@dataclass
class Trial:
    mode: str  # "inline" or "fanned out"
    n: int
    wall: float
    checked: int
    cpu_ms: float  # per check: this process (inline) or the workers (+ the dispatcher)
    note: str = ""
    others: float = 0.0  # cores other processes on the machine used meanwhile

    @property
    def ok(self) -> bool:
        return self.checked >= self.n and self.wall <= 60.0


@dataclass
class Headroom:
    workers: int
    trials: list[Trial] = field(default_factory=list)
    setup_seconds: float = 0.0

    def best(self, mode: str) -> Trial | None:
        passed = [t for t in self.trials if t.mode == mode and t.ok]
        return max(passed, key=lambda t: t.n) if passed else None

    def failed(self, mode: str) -> Trial | None:
        failed = [t for t in self.trials if t.mode == mode and not t.ok]
        return min(failed, key=lambda t: t.n) if failed else None

    def extrapolate(self, mode: str) -> tuple[float, int] | None:
        """(seconds per 1,000 monitors, N at 60 s) from the slope between this mode's two largest complete trials
        (the marginal cost: it grows with N on Azurite, so a straight line from the origin would promise more)."""
        pts = sorted({t.n: t.wall for t in self.trials if t.mode == mode and t.checked >= t.n}.items())
        if len(pts) < 2:
            return None
        (n1, w1), (n2, w2) = pts[-2], pts[-1]
        slope = (w2 - w1) / (n2 - n1)
        return (slope * 1000, round(n2 + (60 - w2) / slope)) if slope > 0 else None


async def _inline(store: Any, settings: Any, clock: Clock, n: int, procs: tuple[list, list]) -> Trial:
    await reset_blocks(settings.storage_connection.get_secret_value())
    await warm(store)
    t = await tick(store, settings, clock, [*procs[0], *procs[1]])
    checked = t.summary.checked
    return Trial("inline", n, t.wall, checked, t.cpu * 1000 / max(checked, 1),
                 f"{t.requests} storage requests, {len(t.summary.not_checked)} not checked; other processes "
                 f"{t.others:.2f} cores", t.others)


async def _fanned(store: Any, settings: Any, clock: Clock, pool: fw.Pool, n: int, procs: tuple[list, list]) -> Trial:
    await reset_blocks(settings.storage_connection.get_secret_value())
    await warm(store, pool)
    pool.start_run(range(pool.count), procs)  # workers poll from the start, as instances do
    t = await tick(store, settings, clock)
    run = await pool.finish_run(t.summary.dispatched)
    end = max((s["last_delete"] for s in run.stats if s["last_delete"] is not None), default=t.started)
    cpu_ms = (sum(run.cpu) + t.cpu) * 1000 / max(run.checks, 1)
    return Trial("fanned out", n, end - t.started, run.checks, cpu_ms,
                 f"dispatch {t.wall:.2f} s, {t.summary.dispatched} messages; {describe(run)}; workers' CPU "
                 + " + ".join(f"{c:.1f}" for c in run.cpu) + f" s, Azurite {run.azurite_cpu:.1f} s, farm "
                 f"{run.farm_cpu:.1f} s; other processes {run.others():.2f} cores",
                 run.others())


async def headroom(args: argparse.Namespace, children: wb.Children) -> Headroom:
    """Doubling N from --headroom-start to --headroom-max, then bisecting (--bisect steps) where a mode first took
    longer than 60 s: the inline tick (FANOUT_THRESHOLD=0, CHECK_CONCURRENCY --inline-concurrency) and the fanned-out
    tick (dispatch + --headroom-workers workers at host.json's batchSize/newBatchThreshold and CHECK_CONCURRENCY
    --worker-concurrency), both against a farm answering after --fast-delay-ms."""
    from shared.storage import Store

    t0 = time.monotonic()
    conn, azurite = wb.start_azurite(children)
    farm_url, farm = wb.start_farm(children, 1, args.fast_delay_ms, args.backlog)
    inline = settings_for(conn, args.inline_concurrency, fanout_threshold=0, fanout_batch_size=args.batch)
    fanned = inline.model_copy(update={"fanout_threshold": 1})
    out, clock, ids = Headroom(args.headroom_workers), Clock(), list[str]()
    pool = fw.Pool(conn, QUEUE, args.headroom_workers, 8, 4, args.worker_concurrency)
    procs = (farm, [azurite])
    print(f"\n=== headroom: farm answers after {args.fast_delay_ms:g} ms; inline CHECK_CONCURRENCY "
          f"{args.inline_concurrency}; fanned out: 1 dispatcher + {args.headroom_workers} workers, each up to 8 + 4 "
          f"messages (host.json) x CHECK_CONCURRENCY {args.worker_concurrency}, FANOUT_BATCH_SIZE {args.batch} ===",
          flush=True)
    async with Store.open(inline) as store:
        starting = asyncio.create_task(pool.start())
        try:
            n, setup = args.headroom_start, 0.0
            while n <= args.headroom_max:
                s0, new = time.monotonic(), n - len(ids)
                ids += await add_monitors(store, farm_url, len(ids), new)
                cold = await tick(store, inline, clock)  # the new monitors' first check: their states are created
                if not starting.done():
                    await starting
                await asyncio.sleep(max(0.0, cold.started + cold.wall + SKEW_WAIT - time.monotonic()))
                setup += time.monotonic() - s0
                print(f"  N={n:,}: {new:,} monitors added ({time.monotonic() - s0:.0f} s with the cold tick of "
                      f"{cold.wall:.1f} s, {cold.requests} requests, and the wait for its state rows to age)",
                      flush=True)
                for trial in (await _inline(store, inline, clock, n, procs),
                              await _fanned(store, fanned, clock, pool, n, procs)):
                    out.trials.append(trial)
                    print(f"  {trial.mode:<10} N={n:>7,}: tick {trial.wall:6.2f} s, {trial.checked:,} checked, "
                          f"{trial.cpu_ms:.3f} CPU-ms/check - {'within' if trial.ok else 'NOT within'} 60 s; "
                          f"{trial.note}", flush=True)
                if out.failed("inline") and out.failed("fanned out"):
                    break
                n *= 2
            for mode in ("inline", "fanned out"):
                setup += await _bisect(args, out, mode, store, inline if mode == "inline" else fanned, clock, pool,
                                       ids, procs)
        finally:
            await pool.close()
            children.stop([*farm, azurite])
    out.setup_seconds = setup
    print(f"  headroom phase: {time.monotonic() - t0:.0f} s ({setup:.0f} s of it setting up and waiting)", flush=True)
    return out


async def _bisect(args: argparse.Namespace, out: Headroom, mode: str, store: Any, settings: Any, clock: Clock,
                  pool: fw.Pool, ids: list[str], procs: tuple[list, list]) -> float:
    """Between the largest N within 60 s and the smallest beyond it, --bisect times (disabling the monitors above
    the N tried, enabling them again afterwards)."""
    spent, enabled = 0.0, len(ids)
    for _ in range(args.bisect):
        good, bad = out.best(mode), out.failed(mode)
        if bad is None:
            break
        lo = good.n if good else 0
        mid = (lo + bad.n) // 2
        if bad.n - lo < max(500, bad.n // 20):
            break
        s0 = time.monotonic()
        if mid < enabled:
            await set_enabled(store, ids[mid:enabled], False)
        else:
            await set_enabled(store, ids[enabled:mid], True)
        enabled = mid
        spent += time.monotonic() - s0
        trial = await (_inline(store, settings, clock, mid, procs) if mode == "inline"
                       else _fanned(store, settings, clock, pool, mid, procs))
        out.trials.append(trial)
        print(f"  {mode:<10} N={mid:>7,} (bisect): tick {trial.wall:6.2f} s - "
              f"{'within' if trial.ok else 'NOT within'} 60 s; {trial.note}", flush=True)
    if enabled < len(ids):
        await set_enabled(store, ids[enabled:], True)
    return spent
