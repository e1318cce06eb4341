#!/usr/bin/env python
"""The checks-queue workers of bench/fanout_bench.py: each a Python process that takes batches off CHECKS_QUEUE as
the Functions host runs `check_batch` (shared/triggers/checks.py), and the pool that drives them from the bench.

A worker receives like the host's queue listener (host.json `queues`): up to `--batch-size` messages per receive,
with a visibility timeout; a new receive once the messages in flight drop to `--new-batch-threshold` (so at most
batch size + threshold at once); an empty receive backs off from 0.1 s to `--max-poll` (maxPollingInterval). Each
message: `fanout.run_batch(store, settings, text)`, then the message is deleted (a BadBatch is deleted too, as the
function returns without raising; any other exception leaves it to reappear, as the host would retry it).

It talks to the bench through stdin/stdout, one JSON object a line: commands `warm`, `run`, `stop`, `quit`; answers
`ready`, `warm`, `done` (one per deleted message) and `stats` (after `stop`). Table requests are the Store's
`request_count`; queue requests go through a client of its own with its own counter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import website_bench as wb  # bench/ is not a package: its directory is on sys.path

KIND = "website"


class Counter:
    """A raw_request_hook: counts the queue requests a worker sends (receives, deletes)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request: Any) -> None:
        self.count += 1


async def warm(store: Any) -> dict[str, Any]:
    """What a process keeps between runs, read now rather than inside a measured run: the kind's definitions (read
    again whenever their version changes), parsed; the states (in full every FULL_EVERY, else what changed)."""
    from shared.engine.run import load_configs

    before, clock = store.request_count, time.process_time()
    _, versions = await store.kind_meta_and_defs(KIND)
    stored = await store.engine_monitors(KIND, versions.get("monitors") or "-")
    configs, _ = load_configs([e for e in stored if e.get("enabled", True)])
    states, _ = await store.engine_states(KIND)
    return {"monitors": len(configs), "states": len(states), "requests": store.request_count - before,
            "cpu": time.process_time() - clock}


class CheckPhase:
    """Times shared.engine.run.process (the checks and their settling) by wrapping the module attribute for the
    worker's life, as website_bench.CheckPhaseProbe does for a tick; the engine code is not changed."""

    def __init__(self) -> None:
        import shared.engine.run as engine

        self.seconds, self.original = 0.0, engine.process

        async def timed(*args: Any, **kwargs: Any) -> None:
            started = time.monotonic()
            try:
                await self.original(*args, **kwargs)
            finally:
                self.seconds += time.monotonic() - started

        engine.process = timed


@dataclass
class Tally:
    messages: int = 0
    checked: int = 0
    monitors: int = 0
    errors: int = 0
    events: int = 0
    not_checked: int = 0
    bad: int = 0
    failed: int = 0
    receives: int = 0
    empty: int = 0
    batch_seconds: float = 0.0  # run_batch, summed over messages
    check_seconds: float = 0.0  # of which the check phase (shared.engine.run.process: checks and settling)
    delete_seconds: float = 0.0
    first_receive: float | None = None
    last_delete: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)


async def serve(args: argparse.Namespace) -> None:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import TextBase64DecodePolicy
    from azure.storage.queue.aio import QueueClient

    from shared.engine import fanout
    from shared.storage import Store

    settings = wb.configure(args.conn, args.concurrency).model_copy(update={"checks_queue": args.queue})
    probe = CheckPhase()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(**message: Any) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    counter = Counter()
    async with Store.open(settings) as store, QueueClient.from_connection_string(
            args.conn, args.queue, message_decode_policy=TextBase64DecodePolicy(), raw_request_hook=counter) as q:
        tally, stop = Tally(), asyncio.Event()
        marks: dict[str, float] = {}

        async def handle(message: Any) -> None:
            checked, started = 0, time.monotonic()
            try:
                summary = await fanout.run_batch(store, settings, message.content)
            except fanout.BadBatch:
                tally.bad += 1
            except Exception:
                logging.exception("batch %s failed: left for redelivery", message.id)
                tally.failed += 1
                return
            else:
                checked = summary.checked
                tally.checked += checked
                tally.monitors += summary.monitors
                tally.errors += summary.errors
                tally.events += summary.events
                tally.not_checked += len(summary.not_checked)
                for outcome in summary.outcomes:
                    tally.statuses[outcome.status or "?"] = tally.statuses.get(outcome.status or "?", 0) + 1
            deleting = time.monotonic()
            tally.batch_seconds += deleting - started
            await q.delete_message(message)
            tally.messages += 1
            tally.last_delete = time.monotonic()
            tally.delete_seconds += tally.last_delete - deleting
            say(done=1, checked=checked)

        async def drain() -> None:
            inflight: set[asyncio.Task[None]] = set()
            delay = 0.1
            while not stop.is_set():
                inflight = {t for t in inflight if not t.done()}
                if len(inflight) > args.new_batch_threshold:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                pages = q.receive_messages(messages_per_page=args.batch_size,
                                           visibility_timeout=args.visibility).by_page()
                try:
                    got = [m async for m in await pages.__anext__()]
                except (StopAsyncIteration, ResourceNotFoundError):  # empty, or not created yet (no tick sent one)
                    got = []
                tally.receives += 1
                if got:
                    tally.first_receive = tally.first_receive or time.monotonic()
                    for message in got:
                        task = asyncio.create_task(handle(message))
                        inflight.add(task)
                    delay = 0.1
                    continue
                tally.empty += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, args.max_poll)
            if inflight:
                await asyncio.gather(*inflight)

        running: asyncio.Task[None] | None = None
        say(ready=os.getpid())
        while line := await reader.readline():
            command = json.loads(line)["cmd"]
            if command == "warm":
                probe.seconds = 0.0
                say(warm=await warm(store))
            elif command == "run":
                tally, marks = Tally(), {"cpu": time.process_time(), "table": store.request_count,
                                         "queue": counter.count}
                stop.clear()
                running = asyncio.create_task(drain())
            elif command == "stop" and running is not None:
                stop.set()
                await running
                running = None
                tally.check_seconds, probe.seconds = probe.seconds, 0.0
                stats = dict(tally.__dict__, cpu=time.process_time() - marks["cpu"],
                             table_requests=store.request_count - marks["table"],
                             queue_requests=counter.count - marks["queue"])
                say(stats=stats)
            elif command == "quit":
                break


# ============================================================================================= the pool


def cpu_of(procs: list[Any]) -> float:
    """utime + stime of these processes (anything with a pid: Popen or asyncio's Process)."""
    return wb.proc_cpu_seconds(procs)


def machine_busy() -> float:
    """CPU seconds every process on the machine has used (/proc/stat: all but idle and iowait), to tell how much
    of a run's machine someone else had (another session's tests share these cores)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(fields[:8]) - fields[3] - fields[4]) / wb.CLK_TCK


@dataclass
class RunStats:
    """One drain: every worker's tally, their CPU (from /proc) and the window from first receive to last delete."""

    workers: int
    stats: list[dict[str, Any]]
    cpu: list[float]
    farm_cpu: float
    azurite_cpu: float
    complete: bool
    machine_cpu: float = 0.0  # every process on the machine, over the same time
    own_cpu: float = 0.0  # the bench process itself
    seconds: float = 0.0  # from start_run to the stop

    def others(self) -> float:
        """Cores (mean) used by processes not part of this run: another session's work on the machine."""
        ours = sum(self.cpu) + self.farm_cpu + self.azurite_cpu + self.own_cpu
        return max(0.0, self.machine_cpu - ours) / self.seconds if self.seconds else 0.0

    def total(self, key: str) -> float:
        return sum(s[key] for s in self.stats)

    @property
    def wall(self) -> float:
        firsts = [s["first_receive"] for s in self.stats if s["first_receive"] is not None]
        lasts = [s["last_delete"] for s in self.stats if s["last_delete"] is not None]
        return max(lasts) - min(firsts) if firsts and lasts else 0.0

    @property
    def checks(self) -> int:
        return int(self.total("checked"))

    @property
    def rate(self) -> float:
        return self.checks / self.wall if self.wall else 0.0

    def statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.stats:
            for k, v in s["statuses"].items():
                out[k] = out.get(k, 0) + v
        return out


class Pool:
    """Worker processes started by the bench (stopped by their own pids at the end)."""

    def __init__(self, conn: str, queue: str, count: int, batch_size: int, threshold: int, concurrency: int,
                 visibility: int = 300, max_poll: float = 2.0) -> None:
        self.argv = [sys.executable, str(Path(__file__).resolve()), "--conn", conn, "--queue", queue,
                     "--batch-size", str(batch_size), "--new-batch-threshold", str(threshold),
                     "--concurrency", str(concurrency), "--visibility", str(visibility), "--max-poll", str(max_poll)]
        self.count, self.concurrency = count, concurrency
        self.in_flight = (batch_size + threshold) * concurrency  # checks at most in flight in one worker
        self.messages_at_once = batch_size + threshold
        self.procs: list[asyncio.subprocess.Process] = []
        self.events: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        self.readers: list[asyncio.Task[None]] = []
        self.logs = tempfile.mkdtemp(prefix="fanout-workers-")
        self.chosen: list[int] = []
        self.before: list[float] = []
        self.others: tuple[list, list] = ([], [])
        self.before_others = (0.0, 0.0)
        self.marks = (0.0, 0.0, 0.0)

    async def start(self) -> None:
        for i in range(self.count):
            log = open(Path(self.logs) / f"worker{i}.log", "wb")  # noqa: SIM115 - the child keeps it open
            proc = await asyncio.create_subprocess_exec(*self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                        stderr=log, preexec_fn=wb._die_with_parent)
            log.close()
            self.procs.append(proc)
            self.readers.append(asyncio.create_task(self._read(i, proc)))
        await self.replies("ready", range(self.count), timeout=120)

    async def _read(self, i: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            self.events.put_nowait((i, json.loads(line)))
        self.events.put_nowait((i, {"exited": proc.returncode}))

    def send(self, workers: range | list[int], cmd: str) -> None:
        for i in workers:
            stdin = self.procs[i].stdin
            assert stdin is not None
            stdin.write((json.dumps({"cmd": cmd}) + "\n").encode())

    async def replies(self, key: str, workers: range | list[int], timeout: float = 600) -> dict[int, Any]:
        wanted, got = set(workers), dict[int, Any]()
        async with asyncio.timeout(timeout):
            while wanted - set(got):
                i, event = await self.events.get()
                if "exited" in event:
                    raise RuntimeError(f"worker {i} exited (log: {self.logs}/worker{i}.log)")
                if key in event:
                    got[i] = event[key]
        return got

    async def warm(self, workers: range | list[int] | None = None) -> dict[int, Any]:
        workers = range(self.count) if workers is None else workers
        self.send(workers, "warm")
        return await self.replies("warm", workers)

    def start_run(self, workers: range | list[int], others: tuple[list, list]) -> None:
        """The chosen workers start taking messages; CPU of each (and of the farm, Azurite) counted from now."""
        self.chosen = list(workers)
        self.others = others
        self.before = [cpu_of([self.procs[i]]) for i in self.chosen]
        self.before_others = (cpu_of(others[0]), cpu_of(others[1]))
        self.marks = (machine_busy(), time.process_time(), time.monotonic())
        self.send(self.chosen, "run")

    async def finish_run(self, messages: int, timeout: float = 600) -> RunStats:
        """Wait until `messages` were deleted (or `timeout`), stop the workers, collect their tallies."""
        done, complete = 0, True
        try:
            async with asyncio.timeout(timeout):
                while done < messages:
                    i, event = await self.events.get()
                    if "exited" in event:
                        raise RuntimeError(f"worker {i} exited (log: {self.logs}/worker{i}.log)")
                    done += event.get("done", 0)
        except TimeoutError:
            complete = False
        self.send(self.chosen, "stop")
        stats = await self.replies("stats", self.chosen)
        cpu = [cpu_of([self.procs[i]]) - self.before[n] for n, i in enumerate(self.chosen)]
        return RunStats(len(self.chosen), [stats[i] for i in self.chosen], cpu,
                        cpu_of(self.others[0]) - self.before_others[0],
                        cpu_of(self.others[1]) - self.before_others[1], complete, machine_busy() - self.marks[0],
                        time.process_time() - self.marks[1], time.monotonic() - self.marks[2])

    async def run(self, workers: int, messages: int, others: tuple[list, list], timeout: float = 600) -> RunStats:
        """Drain `messages` (already on the queue) with the first `workers` workers."""
        self.start_run(range(workers), others)
        return await self.finish_run(messages, timeout)

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.write(b'{"cmd": "quit"}\n')
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self.readers:
            task.cancel()
        logs = list(Path(self.logs).glob("*.log"))
        if all(proc.returncode == 0 for proc in self.procs) and not any(f.stat().st_size for f in logs):
            shutil.rmtree(self.logs, ignore_errors=True)  # kept when a worker failed or logged anything


def main() -> int:
    p = argparse.ArgumentParser(description="one checks-queue worker of bench/fanout_bench.py")
    p.add_argument("--conn", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--batch-size", type=int, default=8, help="messages per receive (host.json batchSize)")
    p.add_argument("--new-batch-threshold", type=int, default=4, help="host.json newBatchThreshold")
    p.add_argument("--concurrency", type=int, default=100, help="CHECK_CONCURRENCY")
    p.add_argument("--visibility", type=int, default=300, help="visibility timeout of a received message, s")
    p.add_argument("--max-poll", type=float, default=2.0, help="host.json maxPollingInterval, s")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    wb.raise_nofile(16_384)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
