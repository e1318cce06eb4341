"""A small local host for machines without Azure Functions Core Tools (development and end-to-end tests).

It imports `function_app`, asks the app for its functions and bindings (`app.get_functions()` — there is no
second list), and drives them:
- HTTP triggers on 127.0.0.1:7071 under host.json's routePrefix, with route parameters, methods and auth
  level (function/admin routes need DEVHOST_FUNCTION_KEY as `x-functions-key` or `?code=` when it is set);
- timer triggers on their six-field NCRONTAB schedules (`%SETTING%` resolved from the environment),
  `run_on_startup` honoured, `past_due` set when a run starts late;
- `POST /admin/functions/{name}` runs a timer or queue function at once, like the host's admin API;
- queue triggers polling Azurite: host.json's visibilityTimeout, batchSize, maxPollingInterval, messageEncoding
  and maxDequeueCount; a message whose handler keeps failing goes to `<queue>-poison`, as the host does.

It is a development tool: production runs on the Functions host. See README, "Local host", for what it does
not reproduce.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
from aiohttp import web
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from croniter import croniter

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("devhost")


def load_local_settings(path: Path | None = None) -> None:
    """Put local.settings.json's Values into the environment (what is set already wins, as with Core Tools)."""
    path = path or ROOT / "local.settings.json"
    if not path.exists():
        return
    for name, value in json.loads(path.read_text()).get("Values", {}).items():
        os.environ.setdefault(name, str(value))


def resolve(value: str) -> str:
    """`%NAME%` app-setting expressions, as the host resolves them in binding attributes."""
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise KeyError(f"binding expression %{name}% names a setting that is not set")
        return os.environ[name]

    return re.sub(r"%([^%]+)%", sub, value)


@dataclass
class Function:
    name: str
    handler: Callable[..., Any]
    trigger: dict[str, Any]
    arg: str


_discovered: dict[int, list[Function]] = {}


def discover(app: func.FunctionApp) -> list[Function]:
    """Every function of the app with its trigger binding. azure-functions lets get_functions() run once per
    app (it validates names against what it saw before), so the answer is kept."""
    if id(app) in _discovered:
        return _discovered[id(app)]
    out = []
    for fn in app.get_functions():
        bindings = [json.loads(raw) for raw in fn.get_raw_bindings()]  # exactly what the host is given
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        out.append(Function(fn.get_function_name() or "", fn.get_user_function(), trigger, trigger["name"]))
    _discovered[id(app)] = out
    return out


async def invoke(fn: Function, value: Any) -> Any:
    result = fn.handler(**{fn.arg: value})
    if inspect.isawaitable(result):
        result = await result
    return result


class LocalHost:
    def __init__(self, app: func.FunctionApp, host_json: dict[str, Any], port: int = 7071,
                 function_key: str | None = None) -> None:
        self.functions = discover(app)
        self.host_json = host_json
        self.port = port
        self.function_key = function_key
        self.invocations: dict[str, int] = {}
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None

    # -- http -------------------------------------------------------------------------------------------

    def _http_app(self) -> web.Application:
        prefix = self.host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api").strip("/")
        app = web.Application(client_max_size=4 * 1024 * 1024)
        for fn in self.functions:
            if fn.trigger["type"] != "httpTrigger":
                continue
            route = "/" + "/".join(p for p in (prefix, resolve(fn.trigger["route"]).strip("/")) if p)
            route = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", route)  # {id:int} constraints are not checked
            methods = [m.upper() for m in fn.trigger.get("methods") or ["GET", "POST", "PUT", "PATCH", "DELETE"]]
            for method in methods:
                app.router.add_route(method, route, self._http_handler(fn))
            log.info("http  %-7s %s -> %s", ",".join(methods), route, fn.name)
        app.router.add_post("/admin/functions/{name}", self._admin_invoke)
        return app

    async def _admin_invoke(self, request: web.Request) -> web.Response:
        """POST /admin/functions/{name} {"input": "..."}: run a non-HTTP function now, as the real host's
        admin API does (used to fire a timer by hand, and by the end-to-end test)."""
        if self.function_key and request.headers.get("x-functions-key") != self.function_key:
            return web.Response(status=401)
        fn = next((f for f in self.functions if f.name == request.match_info["name"]), None)
        if fn is None or fn.trigger["type"] == "httpTrigger":
            return web.Response(status=404)
        if fn.trigger["type"] == "timerTrigger":
            await self._fire(fn, past_due=False)
        else:
            payload = await request.json() if request.can_read_body else {}
            await invoke(fn, QueueMessage(id="admin", body=str(payload.get("input", "")).encode(), dequeue_count=1))
        return web.Response(status=202)

    def _http_handler(self, fn: Function) -> Callable[[web.Request], Any]:
        level = str(fn.trigger.get("authLevel", "FUNCTION")).lower()

        async def handle(request: web.Request) -> web.StreamResponse:
            if level != "anonymous" and self.function_key:
                given = request.headers.get("x-functions-key") or request.query.get("code")
                if given != self.function_key:
                    return web.Response(status=401, text="")
            req = func.HttpRequest(request.method, str(request.url), headers=dict(request.headers),
                                   params=dict(request.query), route_params=dict(request.match_info),
                                   body=await request.read())
            self.invocations[fn.name] = self.invocations.get(fn.name, 0) + 1
            try:
                resp: func.HttpResponse = await invoke(fn, req)
            except Exception:
                log.exception("function %s failed", fn.name)
                return web.Response(status=500)
            headers = {k: v for k, v in resp.headers.items() if k.lower() != "content-length"}
            if resp.mimetype and "content-type" not in {k.lower() for k in headers}:
                headers["Content-Type"] = resp.mimetype + (f"; charset={resp.charset}" if resp.charset else "")
            return web.Response(status=resp.status_code, body=resp.get_body(), headers=headers)

        return handle

    # -- timers -----------------------------------------------------------------------------------------

    async def _timer_loop(self, fn: Function) -> None:
        schedule = resolve(fn.trigger["schedule"])
        if len(schedule.split()) != 6:
            raise ValueError(f"{fn.name}: NCRONTAB needs six fields (seconds first), got {schedule!r}")
        log.info("timer %s -> %s", schedule, fn.name)
        if fn.trigger.get("runOnStartup"):
            await self._fire(fn, past_due=False)
        it = croniter(schedule, datetime.now(UTC), second_at_beginning=True)
        while True:
            due = it.get_next(datetime)
            await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
            late = datetime.now(UTC) - due > timedelta(seconds=5)
            await self._fire(fn, past_due=late)
            if late:  # skip the slots we missed, as the host does
                it = croniter(schedule, datetime.now(UTC), second_at_beginning=True)

    async def _fire(self, fn: Function, past_due: bool) -> None:
        self.invocations[fn.name] = self.invocations.get(fn.name, 0) + 1
        try:
            await invoke(fn, TimerRequest(past_due=past_due))
        except Exception:
            log.exception("timer function %s failed", fn.name)

    # -- queues -----------------------------------------------------------------------------------------

    async def _queue_loop(self, fn: Function) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue.aio import QueueClient

        opts = self.host_json.get("extensions", {}).get("queues", {})
        max_dequeue = int(opts.get("maxDequeueCount", 5))
        visibility = _seconds(opts.get("visibilityTimeout", "00:00:00"))
        batch = int(opts.get("batchSize", 16))
        max_poll = _seconds(opts.get("maxPollingInterval", "00:00:02")) or 2.0
        base64_encoded = opts.get("messageEncoding", "base64").lower() == "base64"
        name = resolve(fn.trigger["queueName"])
        conn = os.environ[fn.trigger.get("connection") or "AzureWebJobsStorage"]
        from shared.storage import expand_dev_storage  # the same Azurite shorthand handling as the app

        conn = expand_dev_storage(conn)
        queue = QueueClient.from_connection_string(conn, name)
        poison = QueueClient.from_connection_string(conn, f"{name}-poison")
        for client in (queue, poison):
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
        log.info("queue %s -> %s", name, fn.name)
        idle = 0.1
        async with queue, poison:
            while True:
                got = 0
                # hidden while it runs (the host renews a 10-minute lease); a failure shows it again after
                # host.json's visibilityTimeout
                async for msg in queue.receive_messages(messages_per_page=batch, max_messages=batch,
                                                        visibility_timeout=600):
                    got += 1
                    await self._deliver(fn, queue, poison, msg, base64_encoded, max_dequeue, visibility)
                idle = 0.1 if got else min(idle * 2, max_poll)
                await asyncio.sleep(0 if got else idle)

    async def _deliver(self, fn: Function, queue: Any, poison: Any, msg: Any, b64: bool, max_dequeue: int,
                       visibility: float) -> None:
        body = base64.b64decode(msg.content) if b64 else msg.content.encode()
        message = QueueMessage(id=msg.id, body=body, dequeue_count=msg.dequeue_count,
                                          pop_receipt=msg.pop_receipt, insertion_time=msg.inserted_on,
                                          expiration_time=msg.expires_on, time_next_visible=msg.next_visible_on)
        self.invocations[fn.name] = self.invocations.get(fn.name, 0) + 1
        try:
            await invoke(fn, message)
        except Exception:
            log.warning("queue function %s failed (dequeue %d of %d)", fn.name, msg.dequeue_count, max_dequeue,
                        exc_info=True)
            if msg.dequeue_count >= max_dequeue:
                await poison.send_message(msg.content)
                await queue.delete_message(msg.id, msg.pop_receipt)
                log.error("message %s moved to %s-poison", msg.id, queue.queue_name)
            else:
                await queue.update_message(msg.id, msg.pop_receipt, visibility_timeout=int(visibility))
            return
        await queue.delete_message(msg.id, msg.pop_receipt)

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._runner = web.AppRunner(self._http_app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        for fn in self.functions:
            if fn.trigger["type"] == "timerTrigger":
                self._tasks.append(asyncio.create_task(self._timer_loop(fn), name=fn.name))
            elif fn.trigger["type"] == "queueTrigger":
                self._tasks.append(asyncio.create_task(self._queue_loop(fn), name=fn.name))
            elif fn.trigger["type"] != "httpTrigger":
                log.warning("%s: trigger type %s is not supported by the local host", fn.name, fn.trigger["type"])
        log.info("local host listening on http://127.0.0.1:%d", self.port)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()


def _seconds(value: Any) -> float:
    """host.json TimeSpan "hh:mm:ss" (or a number of seconds)."""
    if isinstance(value, (int, float)):
        return float(value)
    h, m, s = str(value).split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def read_host_json() -> dict[str, Any]:
    return json.loads((ROOT / "host.json").read_text())
