#!/usr/bin/env python
"""Website-check throughput benchmark: the engine's `run_kind` against a bare aiohttp fetch loop.

Not a test: run it by hand and read the numbers (see bench/README.md).

    python bench/website_bench.py --monitors 1000 10000 --concurrency 500 --delay-ms 100 --ticks 2

For every N it starts a fresh Azurite (unless --connection-string is given), creates N website monitors in
storage, then measures
  * bare   - one aiohttp ClientSession + semaphore, GET each of the N URLs once (before every tick, and after);
  * cold   - the first `run_kind(..., trigger="manual")`: first results, every state row created;
  * steady - `--ticks` more manual ticks: every monitor checked, UP -> UP; only results should be written.
A tick is split into its check phase (`shared.engine.run.process`: the checks, each settled as it finishes - state
commits when something changed, result rows in batches - timed by wrapping it for the run; the engine code is not
changed), what comes before (loading monitors/states, parsing) and after (recording the tick).

The loopback "farm" the monitors point at runs in separate processes (aiohttp.web, SO_REUSEPORT): every request
sleeps --delay-ms and answers 200 with a small body. Client CPU is `time.process_time()` of this process only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import io
import logging
import os
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

TARGET_RATIO = 0.8      # engine check phase >= 0.8 x bare fetch rate
TARGET_CPU_MS = 1.0     # <= 1 ms client CPU per check, storage included (steady tick)
TARGET_REQ = 0.05       # <= 0.05 storage requests per check on the steady path


# ============================================================================================ the farm


def farm_main(port: int, delay_ms: float, backlog: int) -> None:
    """One farm worker (several may share the port through SO_REUSEPORT)."""
    from aiohttp import web

    delay = delay_ms / 1000
    body = b"ok - benchmark farm\n"

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(body=body, content_type="text/plain")

    async def watch_parent(app: web.Application) -> Any:
        parent = os.getppid()

        async def watch() -> None:  # belt and braces next to PR_SET_PDEATHSIG
            while os.getppid() == parent:
                await asyncio.sleep(1)
            os.kill(os.getpid(), signal.SIGTERM)

        task = asyncio.get_running_loop().create_task(watch())
        yield
        task.cancel()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    app.cleanup_ctx.append(watch_parent)
    web.run_app(app, host="127.0.0.1", port=port, backlog=backlog, reuse_port=True, access_log=None,
                print=None, shutdown_timeout=1, handle_signals=True)


# ====================================================================================== child processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode} before opening port {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when this process dies, even by SIGKILL (Linux)."""
    os.setpgrp()  # not in our process group: Ctrl-C reaches only us, and we stop the children in order
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Children:
    """Processes this benchmark started; stop() terminates each by its pid (then kills stragglers)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[str] = []

    def start(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen] | None = None) -> None:
        procs = list(self.procs if procs is None else procs)
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
            if proc in self.procs:
                self.procs.remove(proc)

    def cleanup(self) -> None:
        self.stop()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


def azurite_bin() -> str:
    for cand in (os.environ.get("AZURITE_BIN"), str(ROOT / "node_modules/.bin/azurite"), shutil.which("azurite")):
        if cand and Path(cand).exists():
            return cand
    raise SystemExit("Azurite not found: run `bash scripts/setup` (npm install), set AZURITE_BIN, "
                     "or pass --connection-string")


def start_azurite(children: Children) -> tuple[str, subprocess.Popen]:
    data = tempfile.mkdtemp(prefix="bench-azurite-")
    children.dirs.append(data)
    blob, queue, table = free_port(), free_port(), free_port()
    proc = children.start([azurite_bin(), "--silent", "--location", data, "--skipApiVersionCheck", "--loose",
                           "--disableTelemetry",
                           "--blobPort", str(blob), "--queuePort", str(queue), "--tablePort", str(table)])
    for port in (queue, table):
        wait_port(port, proc=proc)
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{blob}/devstoreaccount1;"
            f"QueueEndpoint=http://127.0.0.1:{queue}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{table}/devstoreaccount1;")
    return conn, proc


def start_farm(children: Children, workers: int, delay_ms: float, backlog: int) -> tuple[str, list]:
    port = free_port()
    procs = [children.start([sys.executable, str(Path(__file__).resolve()), "--serve-farm", "--farm-port",
                             str(port), "--delay-ms", str(delay_ms), "--backlog", str(backlog)])
             for _ in range(workers)]
    wait_port(port, proc=procs[0])
    time.sleep(0.3)  # let every worker bind before the first burst
    for proc in procs:
        if proc.poll() is not None:
            raise RuntimeError(f"a farm worker exited with {proc.returncode}")
    return f"http://127.0.0.1:{port}", procs


def proc_cpu_seconds(procs: list[subprocess.Popen]) -> float:
    """utime + stime of the given processes from /proc (0 where unavailable)."""
    total = 0.0
    for proc in procs:
        try:
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            pass
    return total


def raise_nofile(wanted: int) -> str:
    try:
        import resource
    except ImportError:
        return "n/a"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(max(soft, wanted), hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"{soft} (hard {hard})"


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return "n/a"


# ========================================================================================= measurement


@dataclass
class Sample:
    """One measured phase: counts, wall/CPU seconds, storage requests, other processes' CPU."""

    n: int
    label: str
    checks: int
    wall: float
    cpu: float
    requests: int = 0
    farm_cpu: float = 0.0
    azurite_cpu: float = 0.0
    errors: int = 0
    ratio: float | None = None
    load: str = ""

    @property
    def rate(self) -> float:
        return self.checks / self.wall if self.wall else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.cpu * 1000 / self.checks if self.checks else 0.0

    @property
    def req(self) -> float:
        return self.requests / self.checks if self.checks else 0.0

    def line(self) -> str:
        parts = [f"{self.label:<22}", f"checks {self.checks:>6}", f"wall {self.wall:7.3f} s",
                 f"{self.rate:8.0f} checks/s", f"client CPU {self.cpu_ms:6.3f} ms/check",
                 f"storage {self.req:6.4f} req/check ({self.requests})"]
        if self.farm_cpu:
            parts.append(f"farm CPU {self.farm_cpu * 1000 / max(self.checks, 1):.3f} ms/check")
        if self.azurite_cpu:
            parts.append(f"Azurite CPU {self.azurite_cpu:.2f} s")
        if self.errors:
            parts.append(f"ERRORS {self.errors}")
        if self.ratio is not None:
            parts.append(f"ratio {self.ratio:.2f}x bare")
        return " | ".join(parts)


class Meter:
    """Wall, process CPU, storage requests and the other processes' CPU between start() and stop()."""

    def __init__(self, store: Any, farm: list, azurite: list) -> None:
        self.store, self.farm, self.azurite = store, farm, azurite

    def snap(self) -> tuple[float, float, int, float, float]:
        return (time.perf_counter(), time.process_time(), self.store.request_count if self.store else 0,
                proc_cpu_seconds(self.farm), proc_cpu_seconds(self.azurite))

    def sample(self, before: tuple, after: tuple, n: int, label: str, checks: int) -> Sample:
        return Sample(n, label, checks, after[0] - before[0], after[1] - before[1], after[2] - before[2],
                      after[3] - before[3], after[4] - before[4], load=loadavg())


async def bare_fetch(urls: list[str], concurrency: int, meter: Meter, n: int, label: str) -> Sample:
    """The floor: one session, TCPConnector(limit=concurrency), semaphore, GET + read each URL once."""
    import aiohttp

    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(url: str) -> None:
            nonlocal errors
            async with semaphore:
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors += 1
                except Exception:
                    errors += 1

        before = meter.snap()
        await asyncio.gather(*(one(u) for u in urls))
        after = meter.snap()
    sample = meter.sample(before, after, n, label, len(urls))
    sample.errors = errors
    return sample


class CheckPhaseProbe:
    """Wraps shared.engine.run.process for the duration of a tick (module attribute; engine code unchanged)."""

    def __init__(self, meter: Meter) -> None:
        import shared.engine.run as engine

        self.engine = engine
        self.meter = meter
        self.original = engine.process
        self.spans: list[tuple[tuple, tuple, int]] = []

    async def _wrapped(self, *args: Any, **kwargs: Any) -> None:
        before = self.meter.snap()
        try:
            await self.original(*args, **kwargs)
        finally:
            self.spans.append((before, self.meter.snap(), len(args[3])))

    def __enter__(self) -> CheckPhaseProbe:
        self.spans.clear()
        self.engine.process = self._wrapped
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.process = self.original


async def engine_tick(store: Any, settings: Any, meter: Meter, n: int, label: str,
                      profile: cProfile.Profile | None = None) -> tuple[Sample, Sample, Sample, Sample, Any]:
    """One run_kind tick: (whole tick, check phase, before checks, after checks, summary)."""
    from shared.engine import run_kind

    with CheckPhaseProbe(meter) as probe:
        before = meter.snap()
        if profile is not None:
            profile.enable()
        try:
            summary = await run_kind(store, settings, "website", trigger="manual")
        finally:
            if profile is not None:
                profile.disable()
        after = meter.snap()
    checks = summary.checked
    whole = meter.sample(before, after, n, f"{label} tick", checks)
    whole.errors = summary.errors
    if len(probe.spans) != 1:
        raise RuntimeError(f"expected one check phase in the tick, saw {len(probe.spans)}")
    c0, c1, _ = probe.spans[0]
    check = meter.sample(c0, c1, n, f"{label} check phase", checks)
    pre = meter.sample(before, c0, n, f"{label} load (pre)", checks)
    post = meter.sample(c1, after, n, f"{label} record", checks)
    return whole, check, pre, post, summary


def describe_outcomes(summary: Any) -> str:
    statuses: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for o in summary.outcomes:
        statuses[o.status or "?"] = statuses.get(o.status or "?", 0) + 1
        outcomes[o.result.outcome] = outcomes.get(o.result.outcome, 0) + 1
    errors = [o.result.error for o in summary.outcomes if o.result.error][:3]
    text = f"outcomes {outcomes}, statuses {statuses}, events {summary.events}, errors {summary.errors}"
    return text + (f", first errors: {errors}" if errors else "")


# ========================================================================================= per N


async def wipe(conn: str) -> None:
    from azure.data.tables.aio import TableServiceClient
    from azure.storage.queue.aio import QueueServiceClient

    async with TableServiceClient.from_connection_string(conn) as tables:
        async for table in tables.list_tables():
            await tables.delete_table(table.name)
    async with QueueServiceClient.from_connection_string(conn) as queues:
        async for queue in queues.list_queues():
            await queues.delete_queue(queue.name)


async def create_monitors(store: Any, farm_url: str, n: int, parallel: int) -> list[str]:
    import monitors

    semaphore = asyncio.Semaphore(parallel)
    urls = [f"{farm_url}/m/{i}" for i in range(n)]

    async def one(i: int) -> None:
        mid = uuid.uuid4().hex
        name = f"bench site {i}"
        cfg = monitors.parse_spec({"kind": "website", "id": mid, "name": name, "url": urls[i],
                                   "interval_seconds": 60, "attempts": 1})
        async with semaphore:
            await store.insert_monitor({"RowKey": mid, "kind": "website", "name": name, "enabled": True,
                                        "spec": monitors.to_entity_spec(cfg)}, [])

    await asyncio.gather(*(one(i) for i in range(n)))
    return urls


def configure(conn: str, concurrency: int) -> Any:
    from shared.settings import get_settings
    from shared.storage import Store

    for name in list(os.environ):
        if name.startswith(("SMTP_", "ADMIN_EMAIL", "DEFAULT_EMAIL", "AzureWebJobsStorage")):
            del os.environ[name]
    os.environ["AzureWebJobsStorage"] = conn  # noqa: SIM112 - the Functions host's name for it
    os.environ["CHECK_CONCURRENCY"] = str(concurrency)
    os.environ["OUTBOUND_ALLOW_CIDRS"] = "127.0.0.1/32"  # the farm listens on loopback; the guard refuses it otherwise
    os.environ["GLOBAL_EMAIL_NOTIFICATIONS_ENABLED"] = "false"
    get_settings.cache_clear()
    Store.forget_created_tables()
    return get_settings()


def merge(parts: list[Sample], n: int, label: str) -> Sample:
    """Several runs of a phase as one: totals, so rate = all checks / all wall time."""
    merged = Sample(n, label, sum(p.checks for p in parts), sum(p.wall for p in parts),
                    sum(p.cpu for p in parts), sum(p.requests for p in parts), sum(p.farm_cpu for p in parts),
                    sum(p.azurite_cpu for p in parts), sum(p.errors for p in parts), load=loadavg())
    return merged


async def quiesce(procs: list, idle_cpu: float = 0.1, window: float = 0.5, max_wait: float = 30.0) -> None:
    """Wait until the farm and Azurite use less than `idle_cpu` of a core (Azurite persists its database in
    the background after big writes), so that work is not billed to the next measured phase."""
    if not procs:
        return
    started = time.monotonic()
    while time.monotonic() - started < max_wait:
        before = proc_cpu_seconds(procs)
        await asyncio.sleep(window)
        if proc_cpu_seconds(procs) - before < idle_cpu * window:
            break
    waited = time.monotonic() - started
    if waited > 2 * window + 0.2:
        print(f"  (waited {waited:.1f} s for Azurite/farm to go idle)", flush=True)


async def bench_one(n: int, args: argparse.Namespace, conn: str, farm_url: str, farm_procs: list,
                    azurite_procs: list) -> list[Sample]:
    from shared.storage import Store

    print(f"\n=== N = {n} website monitors, concurrency {args.concurrency}, delay {args.delay_ms:g} ms, "
          f"load average {loadavg()} ===", flush=True)
    if args.connection_string:
        await wipe(conn)
    settings = configure(conn, args.concurrency)
    samples: list[Sample] = []
    async with Store.open(settings) as store:
        meter = Meter(store, farm_procs, azurite_procs)
        t0, r0 = time.perf_counter(), store.request_count
        urls = await create_monitors(store, farm_url, n, args.insert_parallel)
        print(f"setup: {n} monitors inserted in {time.perf_counter() - t0:.1f} s "
              f"({store.request_count - r0} storage requests)", flush=True)

        quiet = [*farm_procs, *azurite_procs]

        async def bare_run(k: int) -> Sample:
            await quiesce(quiet)
            sample = await bare_fetch(urls, args.concurrency, meter, n, f"bare fetch #{k}")
            print(sample.line(), flush=True)
            return sample

        # a bare run before every tick and one after the last: each tick's ratio uses its two neighbours,
        # so a machine that gets busier or quieter during the run skews the ratio as little as possible
        bare_runs: list[Sample] = []
        ticks: list[tuple[Sample, ...]] = []
        for t in range(args.ticks + 1):
            bare_runs.append(await bare_run(t + 1))
            label = "cold" if t == 0 else f"steady {t}"
            await quiesce(quiet)
            whole, check, pre, post, summary = await engine_tick(store, settings, meter, n, label)
            ticks.append((whole, check, pre, post))
            for s in (whole, check, pre, post):
                print(s.line(), flush=True)
            print(f"  {label}: {describe_outcomes(summary)}; load average {loadavg()}", flush=True)
            if t == 0 and args.settle_seconds:
                # the cold tick wrote every state row; a run re-reads rows written within CLOCK_SKEW of its previous
                # read (shared/storage/state.py), so a tick right after a change wave is not a steady tick
                print(f"  waiting {args.settle_seconds:g} s: state rows older than the state read's clock-skew "
                      "margin, as between steady ticks", flush=True)
                await asyncio.sleep(args.settle_seconds)
            if summary.checked != n:
                print(f"  WARNING: {summary.checked} of {n} monitors checked", flush=True)
        bare_runs.append(await bare_run(len(bare_runs) + 1))

        for t, tick in enumerate(ticks):
            neighbours = merge(bare_runs[t:t + 2], n, "bare")
            tick[1].ratio = tick[1].rate / neighbours.rate if neighbours.rate else None
        bare = merge(bare_runs, n, "bare aiohttp loop")
        samples.append(bare)
        print(f"bare (all runs): {bare.rate:.0f} fetches/s, {bare.cpu_ms:.3f} ms CPU/fetch; check phase / "
              f"neighbouring bare runs: " + ", ".join(f"{tk[1].label} {tk[1].ratio:.2f}" for tk in ticks),
              flush=True)

        samples += [ticks[0][0], ticks[0][1], ticks[0][2], ticks[0][3]]
        steady = ticks[1:]
        if steady:
            for i, name in enumerate(("steady tick", "steady check phase", "steady load (pre)",
                                      "steady record")):
                merged = merge([tk[i] for tk in steady], n, name)
                if i == 1:
                    ratios = [tk[1].ratio for tk in steady if tk[1].ratio is not None]
                    merged.ratio = statistics.mean(ratios) if ratios else None
                samples.append(merged)

        if args.profile:
            await profile_tick(store, settings, meter, n, args)
    return samples


async def profile_tick(store: Any, settings: Any, meter: Meter, n: int, args: argparse.Namespace) -> None:
    """One extra steady tick under cProfile (after the measured ones, so they are not slowed down)."""
    # default (wall) timer: a CPU-time timer costs a syscall per event and slows the tick down 7x; on a busy
    # machine wall times include being descheduled, so read the profile for proportions
    profile = cProfile.Profile()
    whole, check, pre, post, _ = await engine_tick(store, settings, meter, n, "profiled", profile)
    path = Path(args.profile_dir) / f"website_bench_{n}.prof"
    path.parent.mkdir(parents=True, exist_ok=True)
    profile.dump_stats(str(path))
    print(f"\n--- cProfile of one steady tick (N={n}; wall-clock timer; profiler overhead inflates times) -> {path}")
    for s in (whole, check, pre, post):
        print(s.line())
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(key).print_stats(args.profile_top)
        listing = "\n".join(line for line in out.getvalue().splitlines() if line.strip())
        print(f"\n[top {args.profile_top} by {key}]\n{listing}", flush=True)


# ============================================================================================= report


def table(samples: list[Sample]) -> str:
    rows = ["| N | phase | checks/s | client CPU ms/check | storage req/check | check rate / bare |",
            "|---:|---|---:|---:|---:|---:|"]
    for s in samples:
        ratio = f"{s.ratio:.2f}" if s.ratio is not None else ""
        req = "" if s.label.startswith("bare") else f"{s.req:.4f}"
        rows.append(f"| {s.n:,} | {s.label} | {s.rate:,.0f} | {s.cpu_ms:.3f} | {req} | {ratio} |")
    return "\n".join(rows)


def verdicts(samples: list[Sample]) -> list[str]:
    out = []
    for n in sorted({s.n for s in samples}):
        by = {s.label: s for s in samples if s.n == n}
        check, tick = by.get("steady check phase"), by.get("steady tick")
        if check is None or tick is None:
            continue
        ratio = check.ratio or 0.0
        ok = lambda cond: "met" if cond else "MISSED"  # noqa: E731
        out.append(f"- N={n:,}: check phase {ratio:.2f}x bare (target >= {TARGET_RATIO}) {ok(ratio >= TARGET_RATIO)}; "
                   f"steady tick {tick.cpu_ms:.3f} ms CPU/check (target <= {TARGET_CPU_MS}) "
                   f"{ok(tick.cpu_ms <= TARGET_CPU_MS)}; {tick.req:.4f} storage req/check (target <= {TARGET_REQ}) "
                   f"{ok(tick.req <= TARGET_REQ)}")
    return out


async def run(args: argparse.Namespace, children: Children) -> list[Sample]:
    farm_url, farm_procs = start_farm(children, args.farm_workers, args.delay_ms, args.backlog)
    print(f"farm: {args.farm_workers} worker process(es) on {farm_url} (pids "
          f"{', '.join(str(p.pid) for p in farm_procs)}), delay {args.delay_ms:g} ms", flush=True)
    # warm the farm up (imports, first accept) so the first measured run does not pay for it
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(farm_url + "/warmup") as resp:
        await resp.read()
    samples: list[Sample] = []
    for n in args.monitors:
        azurite: list = []
        if args.connection_string:
            conn = args.connection_string
        else:
            conn, proc = start_azurite(children)
            azurite = [proc]
        try:
            samples += await bench_one(n, args, conn, farm_url, farm_procs, azurite)
        finally:
            if azurite:
                children.stop(azurite)
    return samples


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--monitors", type=int, nargs="+", default=[1000, 10000], help="N values to run")
    p.add_argument("--concurrency", type=int, default=500, help="CHECK_CONCURRENCY and the bare loop's limit")
    p.add_argument("--delay-ms", type=float, default=100, help="farm response delay")
    p.add_argument("--ticks", type=int, default=2, help="steady ticks after the cold one")
    p.add_argument("--settle-seconds", type=float, default=31.0,
                   help="wait after the cold tick (> shared/storage/state.py CLOCK_SKEW), 0: none")
    p.add_argument("--connection-string", help="use this storage instead of starting Azurite; "
                   "ALL ITS TABLES AND QUEUES ARE DELETED before each N")
    p.add_argument("--farm-workers", type=int, default=1, help="farm processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--backlog", type=int, default=4096, help="farm listen backlog (capped by somaxconn)")
    p.add_argument("--insert-parallel", type=int, default=64, help="concurrent monitor inserts during setup")
    p.add_argument("--profile", action="store_true", help="profile one extra steady tick per N with cProfile")
    p.add_argument("--profile-dir", default=tempfile.gettempdir(), help="where the .prof files go")
    p.add_argument("--profile-top", type=int, default=30, help="rows of each profile listing")
    p.add_argument("--log-level", default="WARNING")
    # internal: run as one farm worker
    p.add_argument("--serve-farm", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--farm-port", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_farm:
        farm_main(args.farm_port, args.delay_ms, args.backlog)
        return 0
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)

    def on_term(signum: int, frame: Any) -> None:  # SIGTERM -> SIGINT: asyncio.run cancels the run cleanly
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, on_term)
    nofile = raise_nofile(max(10_000 + 2 * args.concurrency, 16_384))
    print(f"website bench: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, RLIMIT_NOFILE {nofile}, "
          f"load average {loadavg()}", flush=True)
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]), flush=True)
    children = Children()
    try:
        samples = asyncio.run(run(args, children))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping farm and Azurite", file=sys.stderr)
        return 130
    finally:
        children.cleanup()

    print(f"\n## Website checks: engine vs bare aiohttp (concurrency {args.concurrency}, "
          f"farm delay {args.delay_ms:g} ms, {os.cpu_count()} CPUs, load average at end {loadavg()})"
          + "\n")
    print(table(samples))
    print("\nSteady rows: all steady ticks together. Bare: all bare runs together (one before each tick, one after "
          "the last); the ratio compares each tick's check phase with the bare runs just before and after it.")
    print(f"\nTargets: check phase >= {TARGET_RATIO}x bare rate; <= {TARGET_CPU_MS:g} ms client CPU per check "
          f"including storage (steady tick); <= {TARGET_REQ} storage requests per check on the steady path.")
    print("\n".join(verdicts(samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
