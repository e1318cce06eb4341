#!/usr/bin/env python
"""Steady-state benchmark: the website tick and every periodic job over a simulated window, in CPU, storage
requests and billed bytes per check.

Not a test: run it by hand and read the numbers (see bench/README.md, section steady_bench.py).

    python bench/steady_bench.py --monitors 1000 10000

For every N, on a fresh Azurite: N 60 s website monitors against the loopback farm (bench/website_bench.py), a
cold timer tick at H-0:01, then `--minutes` simulated minutes from an hour boundary H: a `run_kind(...,
trigger="timer", now=T)` tick every minute and every other timer of the app (shared/triggers/*.py) at its
schedule, each through its service with `now=T` where it takes one; the retention purge once at the end. Billed
bytes (shared.storage.entity_size of every entity) are counted before the first tick of H and after the purge.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import steady_jobs as sj  # bench/ is not a package: its directory is on sys.path
import website_bench as wb

TARGET_TICK_CPU_MS = 0.3  # steady tick, storage included
TARGET_BYTES = 60  # billed bytes per steady check (transient tables excluded)
TARGET_REQ = 0.005  # storage requests per check, steady tick
TARGET_WINDOW_CPU_MS = 0.4  # the 30-minute window figure
ROLLUP_SHARE_OF_TIMEOUT = 0.1  # "far below" functionTimeout: at most a tenth of it


class Bench:
    """One N: the store, the meter and the simulated clock."""

    def __init__(self, args: argparse.Namespace, out: sj.Outcome, store: Any, settings: Any, meter: wb.Meter) -> None:
        self.args, self.out, self.store, self.settings, self.meter = args, out, store, settings, meter

    async def measured(self, work: Callable[[], Awaitable[Any]], profile: bool = False,
                       title: str = "") -> tuple[Any, tuple, tuple]:
        profiler = cProfile.Profile() if profile else None
        before = self.meter.snap()
        if profiler is not None:
            profiler.enable()
        try:
            result = await work()
        finally:
            if profiler is not None:
                profiler.disable()
        after = self.meter.snap()
        if profiler is not None:
            sj.print_profile(profiler, title, self.args.profile_top)
        return result, before, after

    async def tick(self, now: datetime, label: str, profile: bool = False) -> tuple[wb.Sample, wb.Sample | None]:
        """One website timer tick at `now`: the whole tick and its check phase."""
        from shared.engine import run_kind

        n = self.out.n
        with wb.CheckPhaseProbe(self.meter) as probe, sj.check_clock(now):
            summary, before, after = await self.measured(
                lambda: run_kind(self.store, self.settings, "website", trigger="timer", now=now, due_at=now),
                profile, f"website_timer tick at {sj.clock(now, self.out.hour)}")
        whole = self.meter.sample(before, after, n, label, summary.checked)
        whole.errors = summary.errors
        check = self.meter.sample(probe.spans[0][0], probe.spans[0][1], n, label + " check phase",
                                  summary.checked) if len(probe.spans) == 1 else None
        if summary.checked != n or summary.errors or (summary.events and label != "cold"):
            note = (f"{label} tick at {sj.clock(now, self.out.hour)}: {summary.checked} of {n} checked, "
                    f"{summary.errors} errors, {summary.events} events; {wb.describe_outcomes(summary)}")
            print("  WARNING: " + note, flush=True)
            self.out.notes.append(note)
        return whole, check

    async def job(self, job: sj.Job, now: datetime, profile: bool = False, variant: str | None = None,
                  quiet: bool = False) -> sj.Run:
        with sj.check_clock(now):
            result, before, after = await self.measured(lambda: job.call(self.store, self.settings, now), profile,
                                                        f"{job.name} at {sj.clock(now, self.out.hour)}")
        described, text = job.describe(result)
        run = sj.Run(job.name, now, after[1] - before[1], after[0] - before[0], after[2] - before[2],
                     after[4] - before[4], variant if variant is not None else described, text, profile)
        job.runs.append(run)
        if quiet and not profile:
            return run
        print(f"  [{sj.clock(now, self.out.hour)}] {job.name:<16} CPU {run.cpu:8.3f} s | wall {run.wall:8.3f} s | "
              f"storage {run.requests:>6} req | Azurite CPU {run.azurite_cpu:6.2f} s"
              f"{' | ' + run.variant if run.variant else ''}{' | PROFILED' if profile else ''} | {text}", flush=True)
        return run


async def bench_one(n: int, args: argparse.Namespace, conn: str, farm_url: str, farm_procs: list,
                    azurite_procs: list) -> sj.Outcome:
    from shared import manage
    from shared.storage import Store

    hour = (datetime.now(UTC) - timedelta(minutes=args.minutes + 60)).replace(minute=0, second=0, microsecond=0)
    out = sj.Outcome(n, hour, wb.loadavg())
    print(f"\n=== N = {n} website monitors, concurrency {args.concurrency}, delay {args.delay_ms:g} ms; simulated "
          f"H = {hour:%Y-%m-%d %H:%M} UTC, {args.minutes} minutes; load average {out.load_start} ===", flush=True)
    if args.connection_string:
        await wb.wipe(conn)
    settings = wb.configure(conn, args.concurrency)
    jobs, unknown = sj.build_jobs()
    out.jobs = jobs
    if unknown:
        out.notes.append("timers not simulated (unknown to this benchmark): " + ", ".join(unknown))
    out.notes += [f"{j.name}: {j.note}" for j in jobs if j.note]
    quiet = [*farm_procs, *azurite_procs]
    async with Store.open(settings) as store:
        meter = wb.Meter(store, farm_procs, azurite_procs)
        bench = Bench(args, out, store, settings, meter)
        urls = await wb.create_monitors(store, farm_url, n, args.insert_parallel)
        if not args.no_digest_channel:
            await sj.create_digest_channel(store, farm_url, hour - timedelta(minutes=30))
        print(f"setup: {n} monitors{'' if args.no_digest_channel else ' and a daily webhook digest channel'}; "
              f"timers: {', '.join(f'{j.name} [{j.schedule.text}]' for j in jobs)}", flush=True)
        await sj.until_idle(quiet, max_wait=30)
        bare = [await wb.bare_fetch(urls, args.concurrency, meter, n, "bare fetch #1")]
        print(bare[0].line(), flush=True)

        # before the window, outside the byte count: the cold tick at H-0:01 (every state row created), the
        # other kinds' first ticks, a first snapshot (its tables created), and hour H's first scheduled rollup run
        # ahead of time: it compacts the cold hour H-1 (an hour ends compacted only some minutes after it ends), so
        # the window's bytes hold hour H's compaction alone
        warm = hour - timedelta(minutes=1)
        every_minute = {j.name for j in jobs if j.schedule.runs_per_day(hour) >= 1440}
        out.cold, _ = await bench.tick(warm, "cold", profile=args.profile_job == "cold")
        print(out.cold.line(), flush=True)
        for job in jobs:
            if job.name in every_minute or job.name == "snapshot_timer":
                await job.call(store, settings, warm)
        rollup = out.job("rollup_timer")
        ahead = next((hour + timedelta(minutes=m) for m in range(60)
                      if rollup and rollup.schedule.matches(hour + timedelta(minutes=m))), hour)
        print(f"  rollup ahead of the window (now={sj.clock(ahead, hour)}): "
              f"{sj.short(await manage.rollup(store, **sj.rollup_kwargs(settings, ahead, horizon_days=1)))}")
        out.notes.append(f"rollup_timer's run at {sj.clock(ahead, hour)} (the cold hour's compaction) ran before "
                         "the window, not in it")
        print(f"  (waited {await sj.until_idle(quiet, max_wait=60):.1f} s for Azurite to go idle; counting bytes)",
              flush=True)
        out.before = await sj.table_bytes(conn)
        for job in jobs:
            job.runs.clear()

        profiled: set[str] = set()
        purge = out.job("retention_timer")
        for k in range(args.minutes):
            now = hour + timedelta(minutes=k)
            want = args.profile_job == "website_timer" and k == args.minutes // 2
            whole, check = await bench.tick(now, f"steady {sj.clock(now, hour)}", profile=want)
            out.profiled_tick = k if want else out.profiled_tick
            out.ticks.append(whole)
            out.tick_times.append(now)
            if check is not None:
                out.checks.append(check)
            for job in jobs:
                if job is purge or not job.schedule.matches(now) or (job is rollup and now == ahead):
                    continue
                variant = None
                if job.name == "rollup_timer":  # the first run once hour H is complete compacts it
                    done = any(r.variant == "compaction" for r in job.runs)
                    variant = "compaction" if now >= hour + timedelta(hours=1) and not done else "idle"
                profile = args.profile_job == job.name and job.name not in profiled and variant != "idle"
                if profile:
                    profiled.add(job.name)
                await bench.job(job, now, profile, variant, quiet=job.name in every_minute)
            if (k + 1) % 15 == 0 or k + 1 == args.minutes:
                part = wb.merge(out.ticks[-15:], n, f"ticks to {sj.clock(now, hour)}")
                others = [r for j in jobs if j.name in every_minute for r in j.runs[-15:]]
                print(f"  {part.line()} | load {wb.loadavg()}", flush=True)
                print(f"  {'':<22} | every-minute timers ({', '.join(sorted(every_minute))}): "
                      f"{sum(r.cpu for r in others) * 1000 / max(len(others), 1):.1f} ms CPU and "
                      f"{sum(r.requests for r in others) / max(len(others), 1):.1f} storage requests per run",
                      flush=True)
        end = hour + timedelta(minutes=args.minutes)
        if purge is not None:
            await sj.until_idle(quiet, max_wait=30)
            await bench.job(purge, end, args.profile_job == purge.name)
            out.notes.append(f"retention_timer [{purge.schedule.text}] was called once, at the end "
                             f"({sj.clock(end, hour)}), not at its schedule")
        print(f"  (waited {await sj.until_idle(quiet, max_wait=60):.1f} s for Azurite to go idle; counting bytes)",
              flush=True)
        out.after = await sj.table_bytes(conn)
        await sj.until_idle(quiet, max_wait=30)
        bare.append(await wb.bare_fetch(urls, args.concurrency, meter, n, "bare fetch #2"))
        print(bare[1].line(), flush=True)
        out.bare = wb.merge(bare, n, "bare aiohttp loop")
    out.load_end = wb.loadavg()
    return out


def report_one(out: sj.Outcome) -> None:
    n = out.n
    print(f"\n--- N = {n}: results (simulated H = {out.hour:%Y-%m-%d %H:%M} UTC; load average {out.load_start} at "
          f"start, {out.load_end} at end)")
    if out.bare:
        print(f"1. bare aiohttp loop: {out.bare.cpu_ms:.3f} ms CPU/fetch, {out.bare.rate:,.0f} fetches/s (2 runs)")
    steady, checks = out.steady(), out.steady_checks()
    if out.cold:
        print(f"2. cold tick: {out.cold.line()}")
    if steady:
        tick = wb.merge(steady, n, "steady tick (all)")
        cpu = sorted(s.cpu_ms for s in steady)
        print(f"   steady ticks ({len(steady)}): {tick.cpu_ms:.3f} ms CPU/check (min {cpu[0]:.3f}, median "
              f"{cpu[len(cpu) // 2]:.3f}, max {cpu[-1]:.3f}), {tick.req:.4f} storage req/check, wall "
              f"{tick.wall / len(steady):.2f} s/tick, {tick.rate:,.0f} checks/s")
        if checks:
            phase = wb.merge(checks, n, "check phase")
            print(f"   check phase alone: {phase.cpu_ms:.3f} ms CPU/check, {phase.req:.4f} storage req/check, "
                  f"{phase.rate:,.0f} checks/s" + (f" = {phase.rate / out.bare.rate:.2f}x bare" if out.bare else ""))
        short = [f"{sj.clock(t, out.hour)}: {s.checks}" for t, s in zip(out.tick_times, out.ticks, strict=True)
                 if s.checks != n]
        print("   every tick checked all N monitors" if not short else f"   WARNING: ticks short of N: {short}")
    print("3. jobs (CPU s, wall s, storage requests per run):")
    for job in out.jobs:
        if len(job.runs) > 5:
            runs = job.runs
            print(f"   {job.name:<16} x{len(runs)} (mean)  CPU {sum(r.cpu for r in runs) / len(runs):8.3f} s"
                  f"  wall {sum(r.wall for r in runs) / len(runs):8.3f} s  "
                  f"{sum(r.requests for r in runs) / len(runs):7.1f} req")
        for run in job.runs if len(job.runs) <= 5 else []:
            print(f"   {job.name:<16} {sj.clock(run.at, out.hour):>7} {run.variant:<10} CPU {run.cpu:8.3f} s  wall "
                  f"{run.wall:8.3f} s  {run.requests:>7} req{'  (profiled)' if run.profiled else ''}")
        if not job.runs:
            print(f"   {job.name:<16} no run in the window (schedule {job.schedule.text})")
    cpu_ms, req = sj.window_figure(out)
    print("   30-minute window: " + " + ".join(f"{w:g} x {what} ({c * 1000:.1f} ms, {r} req)"
                                                for what, w, c, r in sj.window_parts(out)))
    print(f"   = {cpu_ms:.3f} CPU-ms per check, {req:.5f} storage requests per check")
    b = sj.byte_figures(out)
    print(f"4. bytes stored ({b['checks']:,} checks in the window; growth from before H+0:00 to after the purge):")
    print("   | table | entities before | after | Δ entities | Δ bytes | bytes/check |")
    print("   |---|---:|---:|---:|---:|---:|")
    for table, (d_count, d_bytes) in b["growth"].items():
        print(f"   | {table}{' (transient)' if table in sj.TRANSIENT_TABLES else ''} | "
              f"{out.before.get(table, (0, 0))[0]:,} | {out.after.get(table, (0, 0))[0]:,} | {d_count:+,} | "
              f"{d_bytes:+,} | {d_bytes / max(b['checks'], 1):.1f} |")
    print(f"   bytes per steady check: {b['incl']:.1f} including transient tables, {b['excl']:.1f} excluding "
          f"({', '.join(sj.TRANSIENT_TABLES)})")
    for table in sj.TRANSIENT_TABLES:
        left = out.after.get(table)
        if left is None:
            print(f"   no `{table}` table (today's code writes none)")
        elif left[0]:
            per_tick = b["growth"].get(table, (0, 0))[0] / max(len(out.ticks), 1) or 1
            tail = sum(t >= out.hour + timedelta(hours=1) for t in out.tick_times)
            print(f"   the purge did not empty `{table}`: {left[0]:,} entities ({left[1]:,} bytes) remain, "
                  f"~{left[0] / per_tick:.0f} ticks' worth at {per_tick:.0f} a tick; {tail} ticks are in the hour "
                  "not compacted yet, the others' blocks (if they remain) are kept by the purge")
    print(f"   results entities per check {b['results']:.3f}; rollup entities per check {b['rollups']:.4f}")
    print(f"5. load average: {out.load_start} at start, {out.load_end} at end")
    for note in out.notes:
        print(f"   note: {note}")


def table(outs: list[sj.Outcome]) -> str:
    rows = ["| N | phase / job | CPU ms/check or CPU s | wall s | storage req/check | bytes/check |",
            "|---:|---|---:|---:|---:|---:|"]
    for out in outs:
        def row(what: str, cpu: str, wall: str = "", req: str = "", size: str = "", n: int = out.n) -> None:
            rows.append(f"| {n:,} | {what} | {cpu} | {wall} | {req} | {size} |")

        if out.bare:
            row(f"bare aiohttp loop ({out.bare.rate:,.0f} fetches/s)", f"{out.bare.cpu_ms:.3f} ms",
                f"{out.bare.wall / 2:.2f}")
        if out.cold:
            row("cold tick", f"{out.cold.cpu_ms:.3f} ms", f"{out.cold.wall:.2f}", f"{out.cold.req:.4f}")
        b = sj.byte_figures(out)
        steady, checks = out.steady(), out.steady_checks()
        if steady:
            tick = wb.merge(steady, out.n, "")
            row(f"steady tick (mean of {len(steady)})", f"{tick.cpu_ms:.3f} ms", f"{tick.wall / len(steady):.2f}",
                f"{tick.req:.4f}", f"{b['incl']:.1f} / {b['excl']:.1f} excl. transient")
        if checks:
            phase = wb.merge(checks, out.n, "")
            row("steady check phase", f"{phase.cpu_ms:.3f} ms", f"{phase.wall / len(checks):.2f}", f"{phase.req:.4f}")
        for job in out.jobs:
            for variant in sorted({r.variant for r in job.runs}):
                runs = [r for r in job.runs if r.variant == variant]
                label = f"{job.name}{' ' + variant if variant else ''} (×{len(runs)})"
                row(label, f"{sum(r.cpu for r in runs) / len(runs):.3f} s",
                    f"{sum(r.wall for r in runs) / len(runs):.2f}",
                    f"{round(sum(r.requests for r in runs) / len(runs))} req/run")
        cpu_ms, req = sj.window_figure(out)
        row("**30-minute window**", f"{cpu_ms:.3f} ms", "", f"{req:.5f}")
    return "\n".join(rows)


def verdicts(outs: list[sj.Outcome]) -> list[str]:
    ok = lambda cond: "met" if cond else "MISSED"  # noqa: E731
    timeout = sj.function_timeout()
    lines = []
    for out in outs:
        steady = out.steady()
        if not steady:
            continue
        tick = wb.merge(steady, out.n, "")
        b = sj.byte_figures(out)
        cpu_ms, _ = sj.window_figure(out)
        rollup = out.job("rollup_timer")
        runs = [r for r in (rollup.runs if rollup else []) if r.variant == "compaction"]
        if runs:
            at_10k = runs[0].wall * 10_000 / out.n
            limit = ROLLUP_SHARE_OF_TIMEOUT * timeout
            roll = (f"rollup (compaction) wall {runs[0].wall:.1f} s" + ("" if out.n == 10_000 else
                    f", {at_10k:.1f} s scaled to 10,000") + f" (target <= {limit:g} s = "
                    f"{ROLLUP_SHARE_OF_TIMEOUT:g} x functionTimeout {timeout:g} s) {ok(at_10k <= limit)}")
        else:
            roll = "rollup: no compaction run in the window (--minutes too short)"
        lines.append(f"- N={out.n:,}: steady tick {tick.cpu_ms:.3f} ms CPU/check (target <= {TARGET_TICK_CPU_MS}) "
                     f"{ok(tick.cpu_ms <= TARGET_TICK_CPU_MS)}; {b['excl']:.1f} bytes/check excl. transient "
                     f"({b['incl']:.1f} incl.; target <= {TARGET_BYTES}) {ok(b['excl'] <= TARGET_BYTES)}; "
                     f"{tick.req:.4f} storage req/check (target <= {TARGET_REQ}) {ok(tick.req <= TARGET_REQ)}; "
                     f"30-minute window {cpu_ms:.3f} CPU-ms/check (target <= {TARGET_WINDOW_CPU_MS}) "
                     f"{ok(cpu_ms <= TARGET_WINDOW_CPU_MS)}; {roll}")
    return lines


async def run(args: argparse.Namespace, children: wb.Children) -> list[sj.Outcome]:
    import aiohttp

    farm_url, farm_procs = wb.start_farm(children, args.farm_workers, args.delay_ms, args.backlog)
    print(f"farm: {args.farm_workers} worker(s) on {farm_url}, delay {args.delay_ms:g} ms", flush=True)
    async with aiohttp.ClientSession() as session, session.get(farm_url + "/warmup") as resp:
        await resp.read()
    outs = []
    for n in args.monitors:
        azurite: list = []
        if args.connection_string:
            conn = args.connection_string
        else:
            conn, proc = wb.start_azurite(children)
            azurite = [proc]
        try:
            outs.append(await bench_one(n, args, conn, farm_url, farm_procs, azurite))
            report_one(outs[-1])
        finally:
            if azurite:
                children.stop(azurite)
    return outs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--monitors", type=int, nargs="+", default=[1000, 10000], help="N values to run")
    p.add_argument("--concurrency", type=int, default=500, help="CHECK_CONCURRENCY and the bare loop's limit")
    p.add_argument("--delay-ms", type=float, default=100, help="farm response delay")
    p.add_argument("--minutes", type=int, default=75, help="simulated minutes from H (a tick each)")
    p.add_argument("--connection-string", help="use this storage instead of starting Azurite; "
                   "ALL ITS TABLES AND QUEUES ARE DELETED before each N")
    p.add_argument("--profile-job", metavar="NAME", help="cProfile one run of this job and print its top rows: "
                   "website_timer (the middle tick), cold, rollup_timer (the compaction), snapshot_timer, "
                   "retention_timer, digest_timer, stock_timer, …")
    p.add_argument("--profile-top", type=int, default=30, help="rows of each profile listing")
    p.add_argument("--no-digest-channel", action="store_true", help="no digest channel (the digest timer idles)")
    p.add_argument("--farm-workers", type=int, default=1, help="farm processes sharing the port")
    p.add_argument("--backlog", type=int, default=4096, help="farm listen backlog")
    p.add_argument("--insert-parallel", type=int, default=64, help="concurrent monitor inserts during setup")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))  # asyncio.run cancels cleanly
    nofile = wb.raise_nofile(max(10_000 + 2 * args.concurrency, 16_384))
    print(f"steady bench: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, RLIMIT_NOFILE {nofile}, "
          f"load average {wb.loadavg()}; code under {wb.ROOT}", flush=True)
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]), flush=True)
    children = wb.Children()
    try:
        outs = asyncio.run(run(args, children))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping farm and Azurite", file=sys.stderr)
        return 130
    finally:
        children.cleanup()
    print(f"\n## Steady path and periodic jobs (concurrency {args.concurrency}, farm delay {args.delay_ms:g} ms, "
          f"{args.minutes} simulated minutes, {os.cpu_count()} CPUs, load average at end {wb.loadavg()})\n")
    print(table(outs))
    print("\nJobs: CPU s and wall s per run (mean of the runs of that variant), storage requests per run. Bytes: "
          "billed size growth over the window ÷ its checks, including / excluding transient tables.")
    print(f"\nTargets: steady tick <= {TARGET_TICK_CPU_MS} ms CPU/check incl. storage; <= {TARGET_BYTES} bytes per "
          f"steady check; <= {TARGET_REQ} storage requests per check; 30-minute window <= {TARGET_WINDOW_CPU_MS} "
          f"CPU-ms per check; rollup wall time at 10,000 monitors far below functionTimeout.")
    print("\n".join(verdicts(outs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
