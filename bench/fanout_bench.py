#!/usr/bin/env python
"""Fan-out benchmark: a timer tick handing its due monitors to the checks queue, and queue workers checking them.

Not a test: run it by hand and read the numbers (see bench/README.md, section fanout_bench.py).

    python bench/fanout_bench.py            # full run (~11 minutes on 2 cores)
    python bench/fanout_bench.py --quick    # a short run of every part (~3.5 minutes)

1. Scale-out: N website monitors against one loopback farm process answering after --delay-ms, FANOUT_THRESHOLD=1;
   a timer tick (`engine.run_kind(..., trigger="timer")`) dispatches them, then 1, 2 and 4 worker processes
   (bench/fanout_worker.py: receive, `fanout.run_batch`, delete, as the Functions host) drain the queue, each
   with the same cap (messages in parallel x CHECK_CONCURRENCY); every run a fresh tick slot.
2. Dispatcher cost: the dispatching tick's CPU and storage requests per monitor against a check's in the workers,
   for each FANOUT_BATCH_SIZE of --batch-sizes.
3. Headroom: the largest N whose one-minute tick completes within 60 s, inline and fanned out (bench/fanout_parts.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fanout_parts as fp  # bench/ is not a package: its directory is on sys.path
import fanout_worker as fw
import website_bench as wb

TARGET_2 = 1.9  # throughput with 2 workers ÷ with 1
TARGET_4 = 3.5
TARGET_DISPATCH = 0.05  # the dispatcher's CPU / requests per monitor ÷ a check's in the workers


@dataclass
class Drain:
    """A dispatched tick and the run that checked it."""

    dispatch: fp.Tick
    run: fw.RunStats
    batch: int
    blocks: tuple[int, int] = (0, 0)  # entities and bytes its checks added to `blocks`

    @property
    def checks(self) -> int:
        return max(self.run.checks, 1)

    def worker_cpu_ms(self) -> float:
        return sum(self.run.cpu) * 1000 / self.checks

    def worker_req(self) -> tuple[float, float]:
        """(table, queue) requests per check in the workers; queue: the receives that got messages and the deletes
        (a worker's empty polls, which the host sends whether or not there is work, are counted apart)."""
        r = self.run
        queue = r.total("queue_requests") - r.total("empty")
        return r.total("table_requests") / self.checks, queue / self.checks

    def dispatch_cpu_ms(self) -> float:
        return self.dispatch.cpu * 1000 / self.dispatch.n

    def dispatch_req(self) -> float:
        return self.dispatch.requests / self.dispatch.n


@dataclass
class ScaleOut:
    n: int
    cap: int
    runs: list[Drain] = field(default_factory=list)
    sizes: list[Drain] = field(default_factory=list)
    inline: fp.Tick | None = None
    inline_blocks: tuple[int, int] = (0, 0)
    full_read: tuple[float, float, int] = (0.0, 0.0, 0)  # wall s, CPU s, requests of a full state read
    notes: list[str] = field(default_factory=list)


def line(d: Drain, label: str, delay_s: float, cap: int) -> str:
    r = d.run
    table, queue = d.worker_req()
    ideal = r.workers * cap / delay_s
    busy = [c / r.wall if r.wall else 0.0 for c in r.cpu]
    per = max(r.total("messages"), 1)
    return (f"{label:<22} {fp.describe(r)} ({r.rate / ideal:.0%} of the latency bound {ideal:,.0f}/s) | workers' CPU "
            + " + ".join(f"{c:.1f} s ({b:.0%})" for c, b in zip(r.cpu, busy, strict=True))
            + f" = {d.worker_cpu_ms():.3f} ms/check | farm {r.farm_cpu:.1f} s, Azurite {r.azurite_cpu:.1f} s | "
            f"{table:.4f} table + {queue:.4f} queue req/check (+ {r.total('empty'):.0f} empty polls) | "
            f"dispatch {d.dispatch.wall:.2f} s, "
            f"{d.dispatch_cpu_ms() * 1000:.1f} µs CPU and {d.dispatch_req():.4f} req per monitor, "
            f"{d.dispatch.summary.dispatched} messages | a batch took {r.total('batch_seconds') / per:.2f} s "
            f"(check phase {r.total('check_seconds') / per:.2f} s), a delete "
            f"{r.total('delete_seconds') * 1000 / per:.0f} ms | other processes on the machine: {r.others():.2f} cores")


async def drain(store: Any, settings: Any, clock: fp.Clock, pool: fw.Pool, workers: int,
                procs: tuple[list, list]) -> Drain:
    await fp.reset_blocks(settings.storage_connection.get_secret_value())
    await wb.quiesce([*procs[0], *procs[1]])
    await fp.warm(store, pool)
    d = await fp.tick(store, settings, clock)
    if d.summary.dispatched == 0:
        raise RuntimeError(f"the tick dispatched nothing ({d.summary.checked} checked inline)")
    run = await pool.run(workers, d.summary.dispatched, procs)
    left = await store.queue_depth(fp.QUEUE)
    if left:
        print(f"  WARNING: {left} messages left on the queue", flush=True)
    return Drain(d, run, settings.fanout_batch_size)


async def scale_out(args: argparse.Namespace, children: wb.Children) -> ScaleOut:
    from shared.storage import Store

    conn, azurite = wb.start_azurite(children)
    farm_url, farm = wb.start_farm(children, 1, args.delay_ms, args.backlog)
    procs = (farm, [azurite])
    cap = args.messages_per_worker * args.concurrency
    settings = fp.settings_for(conn, args.concurrency, fanout_threshold=1, fanout_batch_size=args.batch)
    out, clock = ScaleOut(args.monitors, cap), fp.Clock()
    pool = fw.Pool(conn, fp.QUEUE, max(args.workers), 1, args.messages_per_worker - 1, args.concurrency)
    print(f"\n=== scale-out: N = {args.monitors:,} monitors, farm {args.delay_ms:g} ms, FANOUT_BATCH_SIZE "
          f"{args.batch}, per worker {args.messages_per_worker} messages x CHECK_CONCURRENCY {args.concurrency} = "
          f"{cap} checks in flight; load average {wb.loadavg()} ===", flush=True)
    async with Store.open(settings) as store:
        try:
            t0 = time.monotonic()
            await asyncio.gather(fp.add_monitors(store, farm_url, 0, args.monitors), pool.start())
            print(f"setup: {args.monitors:,} monitors and {pool.count} workers in {time.monotonic() - t0:.1f} s "
                  f"(worker logs: {pool.logs})", flush=True)
            cold = await drain(store, settings, clock, pool, pool.count, procs)
            print(line(cold, "cold (states created)", args.delay_ms / 1000, cap), flush=True)
            end = max(s["last_delete"] or 0 for s in cold.run.stats)
            t1, c1, r1 = time.monotonic(), time.process_time(), store.request_count
            states, _ = await store.load_states(fp.KIND)
            out.full_read = (time.monotonic() - t1, time.process_time() - c1, store.request_count - r1)
            await asyncio.sleep(max(0.0, end + fp.SKEW_WAIT - time.monotonic()))
            if not args.no_inline_baseline:
                await fp.reset_blocks(conn)
                await wb.quiesce([*farm, azurite])
                inline = settings.model_copy(update={"fanout_threshold": 0, "check_concurrency": cap})
                await fp.warm(store)
                out.inline = t = await fp.tick(store, inline, clock, [*farm, azurite])
                out.inline_blocks = await fp.blocks_size(store)
                print(f"{'inline, same cap':<22} {t.summary.checked:,} checks in {t.wall:.2f} s = "
                      f"{t.summary.checked / t.wall:,.0f} checks/s with {cap} in flight | CPU "
                      f"{t.cpu * 1000 / max(t.summary.checked, 1):.3f} ms/check | {t.requests} requests | other "
                      f"processes on the machine: {t.others:.2f} cores", flush=True)
            for k in args.workers:
                d = await drain(store, settings, clock, pool, k, procs)
                out.runs.append(d)
                print(line(d, f"{k} worker(s)", args.delay_ms / 1000, cap) + f" | load {wb.loadavg()}", flush=True)
            for b in args.batch_sizes:
                sized = settings.model_copy(update={"fanout_batch_size": b})
                d = await drain(store, sized, clock, pool, pool.count, procs)
                d.blocks = await fp.blocks_size(store)  # drain() started it empty
                out.sizes.append(d)
                print(line(d, f"batch {b}", args.delay_ms / 1000, cap), flush=True)
            out.notes.append(f"a full read of the {len(states):,} state rows (every FULL_EVERY = 10 min per process, "
                             f"else only changed rows): {out.full_read[0]:.2f} s, {out.full_read[1]:.2f} s CPU, "
                             f"{out.full_read[2]} requests")
        finally:
            await pool.close()
            children.stop([*farm, azurite])
    return out


# ============================================================================================== report


def report(args: argparse.Namespace, so: ScaleOut | None, hr: fp.Headroom | None) -> list[str]:
    ok = lambda cond: "met" if cond else "MISSED"  # noqa: E731
    lines = []
    if so and so.runs:
        base = so.runs[0].run.rate
        print(f"\n## Scale-out ({so.n:,} monitors, farm {args.delay_ms:g} ms, FANOUT_BATCH_SIZE {args.batch}, "
              f"{so.cap} checks in flight per worker)\n")
        print("| workers | checks/s | × 1 worker | wall s | workers' CPU s (share of a core) | CPU ms/check | "
              "farm CPU s | Azurite CPU s | table + queue req/check | others' cores |")
        print("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
        for d in so.runs:
            r = d.run
            table, queue = d.worker_req()
            print(f"| {r.workers} | {r.rate:,.0f} | {r.rate / base:.2f} | {r.wall:.2f} | "
                  + ", ".join(f"{c:.1f} ({c / r.wall:.0%})" for c in r.cpu)
                  + f" | {d.worker_cpu_ms():.3f} | {r.farm_cpu:.1f} | {r.azurite_cpu:.1f} | "
                  f"{table:.4f} + {queue:.4f} | {r.others():.2f} |")
        if so.inline:
            t = so.inline
            print(f"| inline, same cap | {t.summary.checked / t.wall:,.0f} | | {t.wall:.2f} | {t.cpu:.1f} | "
                  f"{t.cpu * 1000 / max(t.summary.checked, 1):.3f} | | | {t.requests / t.n:.4f} | {t.others:.2f} |")
        by = {d.run.workers: d.run.rate / base for d in so.runs}
        cores = os.cpu_count() or 1
        top = max((d.run for d in so.runs), key=lambda r: r.workers)
        total = (sum(top.cpu) + top.farm_cpu + top.azurite_cpu) / top.wall if top.wall else 0
        busy = max(d.run.others() for d in so.runs)
        if busy > 0.2:
            lines.append(f"- WARNING: other processes used up to {busy:.2f} cores during the scale-out runs: the "
                         "ratios measure this machine's contention, not the fan-out; run again on a quiet machine")
        lines.append(f"- latency-bound, not CPU-bound: with {top.workers} workers the busiest worker used "
                     f"{max(top.cpu) / top.wall:.0%} of a core and every process together {total:.2f} of {cores} "
                     f"cores" + ("" if total < 0.75 * cores else " - CLOSE TO CPU-BOUND: lower --concurrency"))
        if 2 in by:
            lines.append(f"- 2 workers: {by[2]:.2f}x 1 worker (target >= {TARGET_2}) {ok(by[2] >= TARGET_2)}")
        if 4 in by:
            lines.append(f"- 4 workers: {by[4]:.2f}x 1 worker (target >= {TARGET_4}) {ok(by[4] >= TARGET_4)}")
    if so and so.sizes:
        print(f"\n## Dispatcher cost by FANOUT_BATCH_SIZE ({so.n:,} monitors, {max(args.workers)} workers)\n")
        print("| batch | messages | dispatch CPU µs/monitor | dispatch req/monitor | workers' CPU ms/check | "
              "workers' table + queue req/check | dispatch ÷ check: CPU | requests | blocks entities (B) per check |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for d in so.sizes:
            table, queue = d.worker_req()
            per = max(d.run.total("messages"), 1)
            cpu_share, req_share = d.dispatch_cpu_ms() / d.worker_cpu_ms(), d.dispatch_req() / (table + queue)
            print(f"| {d.batch} | {d.dispatch.summary.dispatched} | {d.dispatch_cpu_ms() * 1000:.1f} | "
                  f"{d.dispatch_req():.4f} | {d.worker_cpu_ms():.3f} | {table:.4f} + {queue:.4f} | {cpu_share:.1%} | "
                  f"{req_share:.1%} | {d.blocks[0] / d.checks:.3f} ({d.blocks[1] / d.checks:.0f}) |")
            lines.append(f"- batch {d.batch}: dispatcher CPU {cpu_share:.1%} of a check's (target < "
                         f"{TARGET_DISPATCH:.0%}) {ok(cpu_share < TARGET_DISPATCH)}; requests {req_share:.1%} "
                         f"{ok(req_share < TARGET_DISPATCH)}; per batch the workers sent "
                         f"{table * d.checks / per:.2f} table and {queue * d.checks / per:.2f} queue requests "
                         f"(+ {d.run.total('empty'):.0f} empty polls in all)")
        if so.inline:
            n, size = max(so.inline.summary.checked, 1), so.inline_blocks
            print(f"| inline | | | | {so.inline.cpu * 1000 / n:.3f} | {so.inline.requests / n:.4f} | | | "
                  f"{size[0] / n:.3f} ({size[1] / n:.0f}) |")
        for note in so.notes:
            print(f"\nNote: {note}")
    if hr:
        print("\n## Headroom: the largest N whose one-minute tick completes within 60 s "
              f"(farm {args.fast_delay_ms:g} ms)\n")
        print("| mode | N | tick s | checked | CPU ms/check | within 60 s | others' cores |")
        print("|---|---:|---:|---:|---:|---|---:|")
        for tr in sorted(hr.trials, key=lambda tr: (tr.mode, tr.n)):
            print(f"| {tr.mode} | {tr.n:,} | {tr.wall:.2f} | {tr.checked:,} | {tr.cpu_ms:.3f} | "
                  f"{'yes' if tr.ok else 'no'} | {tr.others:.2f} |")
        for mode in ("inline", "fanned out"):
            best, bad, ext = hr.best(mode), hr.failed(mode), hr.extrapolate(mode)
            found = (f"{best.n:,} ({best.wall:.1f} s)" if best else "none") + (
                f", {bad.n:,} took {bad.wall:.1f} s" if bad else f" - the largest tried; not reached by "
                f"--headroom-max {args.headroom_max:,}")
            extra = (f"; at the slope of the two largest trials ({ext[0]:.2f} s per 1,000 monitors) 60 s comes at "
                     f"~{ext[1]:,} (an extrapolation)" if ext and not bad else "")
            lines.append(f"- headroom {mode}{'' if mode == 'inline' else f' (1 dispatcher + {hr.workers} workers)'}: "
                         f"{found}{extra}")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small N everywhere (a few minutes)")
    p.add_argument("--monitors", type=int, default=6400,
                   help="scale-out and dispatcher-cost N (6,400: 64 batches of 100, 8 a round for 4 workers x 2)")
    p.add_argument("--delay-ms", type=float, default=100, help="scale-out farm's answer delay")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts of the scale-out runs")
    p.add_argument("--messages-per-worker", type=int, default=2, help="messages a worker checks at once")
    p.add_argument("--concurrency", type=int, default=8,
                   help="CHECK_CONCURRENCY of a scale-out worker (2 x 8 = 16 in flight: 4 workers at their latency "
                        "bound need under half of 2 cores)")
    p.add_argument("--batch", type=int, default=100, help="FANOUT_BATCH_SIZE of scale-out and headroom")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[50, 100, 250, 500], help="dispatcher-cost sizes")
    p.add_argument("--no-inline-baseline", action="store_true", help="skip the inline tick at the same cap")
    p.add_argument("--fast-delay-ms", type=float, default=30, help="headroom farm's answer delay")
    p.add_argument("--inline-concurrency", type=int, default=500, help="CHECK_CONCURRENCY of the inline ticks")
    p.add_argument("--worker-concurrency", type=int, default=100, help="CHECK_CONCURRENCY of a headroom worker")
    p.add_argument("--headroom-workers", type=int, default=2)
    p.add_argument("--headroom-start", type=int, default=6000, help="first N of the doubling")
    p.add_argument("--headroom-max", type=int, default=24000, help="largest N of the doubling (Azurite's set-up "
                   "cost grows with the square of N)")
    p.add_argument("--bisect", type=int, default=2, help="bisection steps after the doubling")
    p.add_argument("--skip-scale-out", action="store_true")
    p.add_argument("--skip-headroom", action="store_true")
    p.add_argument("--backlog", type=int, default=4096, help="farm listen backlog")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    if args.quick:  # what was not given on the command line
        for name, value in (("monitors", 1600), ("batch_sizes", [100, 500]), ("headroom_start", 1000),
                            ("headroom_max", 4000)):
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    return args


async def run(args: argparse.Namespace, children: wb.Children) -> list[str]:
    so = None if args.skip_scale_out else await scale_out(args, children)
    hr = None if args.skip_headroom else await fp.headroom(args, children)
    return report(args, so, hr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))  # asyncio.run cancels cleanly
    nofile = wb.raise_nofile(16_384)
    started = time.monotonic()
    print(f"fanout bench: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, RLIMIT_NOFILE {nofile}, load "
          f"average {wb.loadavg()}; code under {wb.ROOT}", flush=True)
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]), flush=True)
    children = wb.Children()
    try:
        verdicts = asyncio.run(run(args, children))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the workers, farm and Azurite", file=sys.stderr)
        return 130
    finally:
        children.cleanup()
    print("\n" + "\n".join(verdicts))
    print(f"\nbench time {time.monotonic() - started:.0f} s; load average at end {wb.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
