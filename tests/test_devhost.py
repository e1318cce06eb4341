"""The local host (devhost) is strict where Azure is: keys (the admin API takes only the master key), the JSON error
body of 404/405/401, and when a received queue message becomes visible again.

Each test starts a LocalHost in-process on a free loopback port, with a small app of its own (an anonymous, a
function-level and an admin-level route, a timer, a queue function), and calls it with aiohttp.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import azure.functions as func
import pytest
from conftest import free_port
from helpers import stop_process

ROOT = Path(__file__).resolve().parent.parent
FUNCTION_KEY = "devhost-function-key"
MASTER_KEY = "devhost-master-key"
QUEUE = "devhost-held"


@dataclass
class Run:
    dequeue_count: int
    started: float
    ended: float | None = None
    outcome: str = "running"


@dataclass
class Calls:
    ticks: int = 0
    runs: list[Run] = field(default_factory=list)
    # what the queue function does on its n-th delivery (1-based): an async callable; default: succeed at once
    plan: dict[int, Callable[[], Any]] = field(default_factory=dict)


CALLS = Calls()


def _make_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.function_name("ping")
    @app.route(route="ping", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse('{"pong": true}', mimetype="application/json")

    @app.function_name("secret")
    @app.route(route="secret", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
    async def secret(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("secret", mimetype="text/plain")

    @app.function_name("admin_only")
    @app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
    async def admin_only(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("admin", mimetype="text/plain")

    @app.function_name("tick")
    @app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=False)
    async def tick(timer: func.TimerRequest) -> None:
        CALLS.ticks += 1

    @app.function_name("held")
    @app.queue_trigger(arg_name="msg", queue_name=QUEUE, connection="AzureWebJobsStorage")
    async def held(msg: func.QueueMessage) -> None:
        run = Run(msg.dequeue_count, time.monotonic())
        CALLS.runs.append(run)
        try:
            step = CALLS.plan.get(len(CALLS.runs))
            if step is not None:
                await step()
        except BaseException as error:
            run.outcome = type(error).__name__
            raise
        else:
            run.outcome = "ok"
        finally:
            run.ended = time.monotonic()

    return app


APP = _make_app()


def host_json(visibility: str = "00:00:00") -> dict[str, Any]:
    return {"version": "2.0", "extensions": {"http": {"routePrefix": "api"}, "queues": {
        "maxDequeueCount": 5, "visibilityTimeout": visibility, "maxPollingInterval": "00:00:00.2", "batchSize": 4,
        "messageEncoding": "base64"}}}


@pytest.fixture(autouse=True)
def fresh_calls():
    CALLS.ticks, CALLS.runs, CALLS.plan = 0, [], {}
    yield


@pytest.fixture
async def start(storage) -> AsyncIterator[Callable[..., Any]]:
    """start(**LocalHost kwargs) → (LocalHost, base URL); every host started is stopped at the end."""
    from devhost import LocalHost

    started: list[Any] = []

    async def run(visibility: str = "00:00:00", lease: int | None = None, renew: float | None = None,
                  **keys: str | None) -> tuple[Any, str]:
        port = free_port()
        host = LocalHost(APP, host_json(visibility), port, **keys)
        if lease is not None:
            host.lease_seconds, host.renew_seconds = lease, renew
        await host.start()
        started.append(host)
        return host, f"http://127.0.0.1:{port}"

    yield run
    for host in started:
        await host.stop()  # again for a host the test stopped already: a no-op


async def answer(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any, str]:
    async with http.request(method, url, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body, resp.content_type


def error_of(status: int, body: Any, content_type: str, expect_status: int, code: str) -> str:
    """The message of a documented JSON error body (after checking its shape)."""
    assert (status, content_type) == (expect_status, "application/json"), (status, content_type, body)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code and body["error"]["details"] == [], body
    return str(body["error"]["message"])


# --------------------------------------------------------------------------------------------------- keys


async def test_the_admin_api_takes_only_the_master_key(start):
    _, base = await start(function_key=FUNCTION_KEY, master_key=MASTER_KEY)
    admin = f"{base}/admin/functions/tick"
    async with aiohttp.ClientSession() as http:
        for headers, params in (({}, {}), ({"x-functions-key": FUNCTION_KEY}, {}), ({}, {"code": FUNCTION_KEY}),
                                ({"x-functions-key": "wrong"}, {})):
            message = error_of(*await answer(http, "POST", admin, headers=headers, params=params), 401,
                               "unauthorized")
            assert "master key" in message and "x-functions-key" in message and "?code=" in message, message
        assert CALLS.ticks == 0
        assert (await answer(http, "POST", admin, headers={"x-functions-key": MASTER_KEY}))[0] == 202
        assert (await answer(http, "POST", admin, params={"code": MASTER_KEY}))[0] == 202
        assert CALLS.ticks == 2
        error_of(*await answer(http, "POST", f"{base}/admin/functions/nope", params={"code": MASTER_KEY}), 404,
                 "not_found")

        # routes: function level takes either key, admin level only the master key, anonymous no key
        for key, secret, admin_only in ((None, 401, 401), (FUNCTION_KEY, 200, 401), (MASTER_KEY, 200, 200)):
            headers = {"x-functions-key": key} if key else {}
            assert (await answer(http, "GET", f"{base}/api/secret", headers=headers))[0] == secret, key
            assert (await answer(http, "GET", f"{base}/api/admin-only", headers=headers))[0] == admin_only, key
        assert (await answer(http, "GET", f"{base}/api/secret", params={"code": FUNCTION_KEY}))[0] == 200
        assert (await answer(http, "GET", f"{base}/api/ping"))[0] == 200


async def test_without_a_master_key_the_admin_api_is_closed_once_a_function_key_is_set(start):
    _, keyed = await start(function_key=FUNCTION_KEY)
    _, open_ = await start()  # neither key: local development without keys stays open
    async with aiohttp.ClientSession() as http:
        for headers, params in (({"x-functions-key": FUNCTION_KEY}, {}), ({}, {"code": FUNCTION_KEY}), ({}, {})):
            message = error_of(*await answer(http, "POST", f"{keyed}/admin/functions/tick", headers=headers,
                                             params=params), 401, "unauthorized")
            assert "DEVHOST_MASTER_KEY" in message, message
        assert CALLS.ticks == 0
        assert (await answer(http, "GET", f"{keyed}/api/secret", headers={"x-functions-key": FUNCTION_KEY}))[0] == 200
        assert (await answer(http, "POST", f"{open_}/admin/functions/tick"))[0] == 202
        assert (await answer(http, "GET", f"{open_}/api/secret"))[0] == 200
        assert (await answer(http, "GET", f"{open_}/api/admin-only"))[0] == 200
    assert CALLS.ticks == 1


async def test_python_m_devhost_reads_the_master_key_from_the_environment(storage):
    """`python -m devhost` passes DEVHOST_MASTER_KEY to the host the way it passes DEVHOST_FUNCTION_KEY."""
    port = free_port()
    env = {**os.environ, "DEVHOST_FUNCTION_KEY": FUNCTION_KEY, "DEVHOST_MASTER_KEY": MASTER_KEY,
           "SMTP_HOST": "", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(port), "--no-demo"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                try:
                    if (await answer(http, "GET", f"{base}/api/v1/health"))[0] == 200:
                        break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "python -m devhost did not answer /health"
                await asyncio.sleep(0.2)
            error_of(*await answer(http, "POST", f"{base}/admin/functions/website_timer",
                                   headers={"x-functions-key": FUNCTION_KEY}), 401, "unauthorized")
            status, _, _ = await answer(http, "POST", f"{base}/admin/functions/website_timer",
                                        headers={"x-functions-key": MASTER_KEY})
            assert status == 202
    finally:
        stop_process(proc)


# ----------------------------------------------------------------------------------------- error bodies


async def test_404_405_and_401_answer_the_json_error_body(start):
    _, base = await start(function_key=FUNCTION_KEY, master_key=MASTER_KEY)
    async with aiohttp.ClientSession() as http:
        assert "/api/nope" in error_of(*await answer(http, "GET", f"{base}/api/nope"), 404, "not_found")
        error_of(*await answer(http, "GET", f"{base}/elsewhere"), 404, "not_found")
        async with http.delete(f"{base}/api/ping") as resp:
            body = await resp.json()
            assert resp.headers["Allow"] == "GET"
            message = error_of(resp.status, body, resp.content_type, 405, "method_not_allowed")
        assert "DELETE" in message and "GET" in message, message
        error_of(*await answer(http, "GET", f"{base}/admin/functions/tick"), 405, "method_not_allowed")
        for headers, params in (({}, {}), ({"x-functions-key": "wrong"}, {}), ({}, {"code": "wrong"})):
            message = error_of(*await answer(http, "GET", f"{base}/api/secret", headers=headers, params=params),
                               401, "unauthorized")
            assert "x-functions-key" in message and "?code=" in message, message
        # what worked keeps working: the function's own answer, untouched
        assert await answer(http, "GET", f"{base}/api/ping") == (200, {"pong": True}, "application/json")


# -------------------------------------------------------------------------------------------- queue leases


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}: runs={CALLS.runs}")


async def test_a_received_message_is_held_while_it_runs_and_visible_again_after_a_failure_or_a_lost_host(start,
                                                                                                       storage):
    """Held (lease 1 s, renewed) while the function runs for longer than the lease; after a failure visible again
    after host.json's visibilityTimeout (2 s here); when the host goes away mid-run, visible again within the lease —
    never only after the old hard-coded 600 s."""
    from azure.storage.queue.aio import QueueClient

    from shared.storage import expand_dev_storage

    async def slow_then_fail() -> None:
        await asyncio.sleep(2.5)  # 2.5 leases: renewed meanwhile, nobody else gets the message
        raise RuntimeError("the first delivery fails")

    async def forever() -> None:
        await asyncio.Event().wait()  # until the host stops

    async def slow_then_succeed() -> None:
        await asyncio.sleep(2.5)  # the delete afterwards needs the pop receipt of the last renewal

    CALLS.plan = {1: slow_then_fail, 2: forever, 3: slow_then_succeed}
    first, _ = await start(visibility="00:00:02", lease=1, renew=0.3)
    conn = expand_dev_storage(storage)
    async with QueueClient.from_connection_string(conn, QUEUE) as queue:
        await queue.send_message(base64.b64encode(b'{"n": 1}').decode())

        await wait_until(lambda: CALLS.runs and CALLS.runs[0].ended, 10, "the first run to end")
        assert [r.outcome for r in CALLS.runs] == ["RuntimeError"]  # held: not delivered again while it ran
        second = await wait_until(lambda: len(CALLS.runs) >= 2 and CALLS.runs[1], 8, "the retry")
        waited = second.started - CALLS.runs[0].ended
        assert 1.7 <= waited <= 3.5, waited  # visibilityTimeout (2 s) after the failure, plus the polling
        assert second.dequeue_count == 2

        await asyncio.sleep(2.5)  # the second run goes on for 2.5 leases: still held
        assert len(CALLS.runs) == 2 and CALLS.runs[1].outcome == "running"
        await first.stop()  # the host goes away while the function runs (the lease is no longer renewed)
        lost = time.monotonic()
        assert CALLS.runs[1].outcome == "CancelledError"

        await start(visibility="00:00:02", lease=1, renew=0.3)  # another host
        third = await wait_until(lambda: len(CALLS.runs) >= 3 and CALLS.runs[2], 8, "the message to come back")
        assert third.started - lost <= 2.5, third.started - lost  # within the 1 s lease (+ polling), not 600 s
        assert third.dequeue_count == 3
        await wait_until(lambda: CALLS.runs[2].outcome == "ok", 8, "the third run to succeed")
        await asyncio.sleep(0.5)
        assert await queue.peek_messages(max_messages=32) == []  # deleted with the renewed receipt
        props = await queue.get_queue_properties()
        assert props.approximate_message_count == 0
    await asyncio.sleep(1.5)  # more than a lease: nothing comes back
    assert len(CALLS.runs) == 3
