"""Fan-out over several processes loses and duplicates nothing, even when a worker is killed mid-batch.

Three local hosts (`python -m devhost`, separate processes on one Azurite, as instances of one app share a storage
account) run only their queue functions: every timer is disabled with the host's own `AzureWebJobs.<name>.Disabled`
setting (both spellings). The test process runs one timer tick that hands 60 website monitors to the checks queue
in 12 batches; the targets answer slowly, so batches are in flight when one worker gets SIGKILL. Its messages come
back after its lease (DEVHOST_QUEUE_LEASE_SECONDS=5) and the others check them: in the end every monitor has one
result at the tick's slot, each failing monitor one DOWN, and more than one worker did the work.

Also here, in-process: what a disabled function does on the local host (not started; 404 unless the master key).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import azure.functions as func
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue.aio import QueueClient
from conftest import free_port
from helpers import add_monitor, events_of, stop_process, timer_names
from targets import Target

from shared import engine
from shared.storage import Store

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "monitor-checks"
WORKERS, MONITORS, FAILING, BATCH = 3, 60, 6, 5
DELAY = 1.5  # seconds each target takes to answer: a batch is in flight for that long
LEASE = 5
YEARLY = "0 0 1 1 *"  # due at once (never checked), then not again: a later tick checks nothing

EXECUTING = re.compile(rf"executing check_batch: message (\S+) of {QUEUE} \(dequeue count (\d+)\)")
EXECUTED = re.compile(r"executed check_batch: message (\S+) (?:succeeded|failed)")
CHECKED = re.compile(r"checks message (\S+) \(dequeue count (\d+)\): (\d+) checked of (\d+)")


@dataclass
class Worker:
    n: int
    proc: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def open_messages(self) -> set[str]:
        """Messages it started and did not finish."""
        text = self.text()
        return {m[0] for m in EXECUTING.findall(text)} - set(EXECUTED.findall(text))

    def checked(self) -> list[tuple[str, int, int]]:
        """(message id, dequeue count, monitors checked) of every batch it finished."""
        return [(mid, int(count), int(n)) for mid, count, n, _ in CHECKED.findall(self.text())]


class TracedTarget(Target):
    """A target that knows the client ports of the requests it is still answering (to tell whose checks are in
    flight)."""

    def __init__(self, **behaviour: Any) -> None:
        self.answering: set[int] = set()
        super().__init__()
        self.set(**behaviour)

    def _serve(self, handler: Any, send_body: bool) -> None:
        port = handler.client_address[1]
        with self._lock:
            self.answering.add(port)
        try:
            super()._serve(handler, send_body)
        finally:
            with self._lock:
                self.answering.discard(port)


def tcp_ports(pid: int) -> set[int]:
    """The local ports of the IPv4 TCP sockets process `pid` holds (Linux /proc: its socket fds → net/tcp)."""
    inodes, ports = set(), set()
    with contextlib.suppress(OSError):  # gone: it holds nothing
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def worker_env() -> dict[str, str]:
    """The test's settings (Azurite, BASE_ENV), every timer disabled, a short lease, no SMTP sink, no keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVHOST_", "PYTHONPATH"))
           and not k.lower().startswith("azurewebjobs.")}
    env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", SMTP_HOST="", CHECKS_QUEUE=QUEUE,
               OUTBOUND_ALLOW_CIDRS="127.0.0.1/32", GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="false",
               DEVHOST_QUEUE_LEASE_SECONDS=str(LEASE))
    for i, name in enumerate(timer_names()):  # the portal's spelling, the Linux one; "true", "1", any case
        setting = f"AzureWebJobs.{name}.Disabled" if i % 2 == 0 else f"AzureWebJobs_{name}_Disabled"
        env[setting] = ("true", "1", "TRUE")[i % 3]
    return env


async def wait_for(predicate: Any, timeout: float, what: str, workers: list[Worker]) -> Any:
    """Poll `predicate` (sync or async) until it is truthy; on timeout fail with every worker's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    tails = "\n".join(f"---- worker {w.n} (exit {w.proc.poll()}) ----\n{w.text()[-3000:]}" for w in workers)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tails}")


async def queue_empty(conn: str) -> bool:
    """No message left on the checks queue, visible or held (the approximate count includes both)."""
    from shared.storage import expand_dev_storage

    async with QueueClient.from_connection_string(expand_dev_storage(conn), QUEUE) as queue:
        return (await queue.get_queue_properties()).approximate_message_count == 0


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="tells whose checks are in flight from Linux /proc")
async def test_three_workers_one_killed_mid_batch_lose_and_duplicate_nothing(storage, env, tmp_path):
    env(FANOUT_THRESHOLD="1", FANOUT_BATCH_SIZE=str(BATCH))
    from shared.settings import get_settings

    settings = get_settings()
    timers, spawn_env = timer_names(), worker_env()
    workers: list[Worker] = []
    good, bad = TracedTarget(delay=DELAY), TracedTarget(status=500, delay=DELAY)
    try:
        for n in range(WORKERS):
            log = tmp_path / f"worker{n}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(free_port()), "--no-demo"],
                                        cwd=ROOT, env=spawn_env, stdout=out, stderr=subprocess.STDOUT)
            workers.append(Worker(n, proc, log))

        def all_polling() -> bool:
            for w in workers:
                assert w.proc.poll() is None, f"worker {w.n} exited {w.proc.returncode}:\n{w.text()}"
            return all(f"queue {QUEUE} -> check_batch (lease {LEASE} s" in w.text() for w in workers)

        await wait_for(all_polling, 120, "every worker to poll the checks queue", workers)
        for w in workers:  # only the queue functions run: each timer said once that it is not started
            text = w.text()
            assert all(re.search(rf"{name} is disabled \((?i:azurewebjobs)[._]{name}[._]Disabled\): not started", text)
                       for name in timers), text
            assert not re.search(r"\btimer \S+ \S+ \S+ \S+ \S+ \S+ -> ", text), text

        async with Store.open(settings) as store:
            ups = [await add_monitor(store, good.url_for(f"/up{i}"), name=f"up{i}", cron=YEARLY, timeout_seconds=15)
                   for i in range(MONITORS - FAILING)]
            downs = [await add_monitor(store, bad.url_for(f"/down{i}"), name=f"down{i}", cron=YEARLY,
                                       timeout_seconds=15, failure_threshold=1) for i in range(FAILING)]
            slot = datetime.now(UTC).replace(second=0, microsecond=0)
            tick = await engine.run_kind(store, settings, "website", trigger="timer", now=slot)
            assert (tick.dispatched, tick.checked) == (MONITORS // BATCH, 0)  # 12 messages, nothing checked here

            # the work is spread (two workers' checks waiting for the targets at once); one of them is mid-batch (a
            # message started, not finished): SIGKILL, no goodbye
            def mid_batch() -> tuple[Worker, list[Worker]] | None:
                with good._lock, bad._lock:
                    answering = good.answering | bad.answering
                checking = [w for w in workers if answering & tcp_ports(w.proc.pid)]
                victim = next((w for w in checking if w.open_messages()), None)
                return (victim, checking) if victim is not None and len(checking) >= 2 else None

            victim, checking = await wait_for(mid_batch, 60, "two workers checking at once, one mid-batch", workers)
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(10)
            cut_off = victim.open_messages()  # started, never finished: back on the queue within the lease
            survivors = [w for w in workers if w is not victim]
            assert cut_off

            async def settled() -> bool:
                done = {mid for w in workers for mid, _, _ in w.checked()}
                if len(done) < tick.dispatched or not cut_off <= {m for w in survivors for m, _, _ in w.checked()}:
                    return False
                for cfg in ups + downs:
                    if not await store.query_results(cfg.id or "", limit=1):
                        return False
                return await queue_empty(storage)

            took = time.monotonic()
            await wait_for(settled, 120, "every batch to be checked and every monitor to have its result", workers)
            took = time.monotonic() - took

            # the next timer tick publishes what a worker killed between commit and publish left in the outbox
            later = await engine.run_kind(store, settings, "website", trigger="timer",
                                          now=datetime.now(UTC) + engine.OUTBOX_GRACE + timedelta(seconds=1))
            assert (later.dispatched, later.checked) == (0, 0)  # nothing is due twice

            for cfg in ups + downs:  # exactly one result each, at the tick's slot
                rows = await store.query_results(cfg.id or "", limit=10)
                assert [r["ts"] for r in rows] == [slot], cfg.name
            down_events = [e for e in await events_of(store) if e["type"] == "MONITOR_DOWN"]
            assert sorted(e["monitor_name"] for e in down_events) == sorted(c.name for c in downs)  # one each
            states = (await store.load_states("website"))[0]
            assert {states[c.id or ""].status for c in ups} == {"UP"}
            assert {states[c.id or ""].status for c in downs} == {"DOWN"}
            assert (await store.engine_states("website"))[1] == []  # no outbox row left behind

            # every monitor was checked; the killed worker's batches again, by the others (a later delivery)
            assert {f"/up{i}" for i in range(len(ups))} <= set(good.paths)
            assert {f"/down{i}" for i in range(len(downs))} <= set(bad.paths)
            assert good.hits + bad.hits > MONITORS  # the killed worker's checks in flight were done again
            again = {mid: count for w in survivors for mid, count, n in w.checked() if n}
            assert all(again.get(mid, 0) >= 2 for mid in cut_off), (cut_off, again)

            # the work ran only as queue runs (the timers of the workers never ticked), on more than one worker
            busy = {w.n for w in workers if any(n for _, _, n in w.checked())}
            assert len(busy | {w.n for w in checking}) >= 2 and busy - {victim.n}, (busy, [w.n for w in checking])
            runs = await store.list_ticks("website", since=slot - timedelta(minutes=1))
            assert sorted(r["trigger"] for r in runs if r["trigger"] != "queue") == ["timer", "timer"]  # ours
            queue_runs = [r for r in runs if r["trigger"] == "queue"]
            assert len(queue_runs) >= tick.dispatched and sum(r["checked"] for r in queue_runs) >= MONITORS
        print(f"workers {[w.n for w in checking]} checking at once; killed worker {victim.n} with {len(cut_off)} "
              f"open message(s); settled {took:.1f} s later; batches checked per worker: "
              f"{[len(w.checked()) for w in workers]}; target hits {good.hits + bad.hits}; events published by the "
              f"later tick: {later.events}")
    finally:
        for w in workers:
            if w.proc.poll() is None:
                stop_process(w.proc)
        good.close()
        bad.close()


# ------------------------------------------------------------------------------------- disabled functions

RAN: dict[str, int] = {}


def _disabled_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    for name in ("page_on", "page_off"):
        @app.function_name(name)
        @app.route(route=name, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
        async def page(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse("here", mimetype="text/plain")

    for name in ("tick_on", "tick_off"):
        def timer(name: str = name) -> None:
            @app.function_name(name)
            @app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
            async def tick(timer: func.TimerRequest) -> None:
                RAN[name] = RAN.get(name, 0) + 1

        timer()

    for name in ("queue_on", "queue_off"):
        @app.function_name(name)
        @app.queue_trigger(arg_name="msg", queue_name=f"devhost-{name.replace('_', '-')}",
                           connection="AzureWebJobsStorage")
        async def handle(msg: func.QueueMessage) -> None:
            pass

    return app


DISABLED_APP = _disabled_app()


async def test_a_disabled_function_is_not_started_and_its_route_answers_404(storage, monkeypatch, caplog):
    """As on Azure: `AzureWebJobs.<name>.Disabled` (or `AzureWebJobs_<name>_Disabled`, any case of the name) "true"
    or "1" keeps a timer or queue function from starting and makes an HTTP function answer 404 — unless called
    with the master key, which also still runs a disabled timer through the admin API. "false" disables nothing."""
    from devhost import LocalHost
    from shared.storage import expand_dev_storage

    monkeypatch.setenv("AzureWebJobs.page_off.Disabled", "TRUE")
    monkeypatch.setenv("AzureWebJobs_tick_off_Disabled", "1")
    monkeypatch.setenv("azurewebjobs.queue_off.disabled", "true")
    monkeypatch.setenv("AzureWebJobs.tick_on.Disabled", "false")
    RAN.clear()
    port, master = free_port(), "disabled-test-master"
    host = LocalHost(DISABLED_APP, {"extensions": {"http": {"routePrefix": "api"}, "queues": {
        "maxPollingInterval": "00:00:00.2", "messageEncoding": "base64"}}}, port, master_key=master)
    caplog.set_level("INFO", logger="devhost")
    await host.start()
    try:
        conn = expand_dev_storage(storage)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.get("/api/page_on") as resp:
                assert (resp.status, await resp.text()) == (200, "here")
            async with http.get("/api/page_off") as resp:
                body = await resp.json()
                assert resp.status == 404 and body["error"]["code"] == "not_found"
                assert "AzureWebJobs.page_off.Disabled" in body["error"]["message"], body
            async with http.get("/api/page_off", headers={"x-functions-key": master}) as resp:
                assert (resp.status, await resp.text()) == (200, "here")

            async def exists(name: str) -> bool:
                async with QueueClient.from_connection_string(conn, name) as queue:
                    try:
                        await queue.get_queue_properties()
                    except ResourceNotFoundError:
                        return False
                    return True

            deadline = time.monotonic() + 30
            while not (RAN.get("tick_on") and await exists("devhost-queue-on")):  # the enabled ones started
                assert time.monotonic() < deadline, (RAN, caplog.text)
                await asyncio.sleep(0.05)
            assert "tick_off" not in RAN  # run_on_startup, yet not run: not started
            assert not await exists("devhost-queue-off")  # its poller (which creates the queue) never started
            lines = [r.getMessage() for r in caplog.records if "is disabled" in r.getMessage()]
            assert sorted(lines) == ["page_off is disabled (AzureWebJobs.page_off.Disabled): it answers 404 (unless "
                                     "called with the master key)",
                                     "queue_off is disabled (azurewebjobs.queue_off.disabled): not started",
                                     "tick_off is disabled (AzureWebJobs_tick_off_Disabled): not started"]

            async with http.post("/admin/functions/tick_off", headers={"x-functions-key": master}) as resp:
                assert resp.status == 202
            assert RAN["tick_off"] == 1  # run by hand with the master key, as on Azure
    finally:
        await host.stop()


def test_an_unusable_lease_setting_stops_the_local_host_with_one_line(monkeypatch):
    from devhost import LocalHost

    for raw in ("abc", "0", "2.5"):
        monkeypatch.setenv("DEVHOST_QUEUE_LEASE_SECONDS", raw)
        with pytest.raises(SystemExit) as stopped:
            LocalHost(DISABLED_APP, {}, free_port())
        assert str(stopped.value) == (f"error: DEVHOST_QUEUE_LEASE_SECONDS={raw!r}: give whole seconds from 1 to "
                                      "604800 (default 60)")
