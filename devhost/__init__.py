"""A small local host for machines without Azure Functions Core Tools (development and end-to-end tests).

It imports `function_app`, asks the app for its functions and bindings (`app.get_functions()` — there is no
second list), and drives them:
- HTTP triggers on 127.0.0.1:7071 under host.json's routePrefix, with route parameters, methods and auth
  level, strict where Azure is: once a key is set (DEVHOST_FUNCTION_KEY, DEVHOST_MASTER_KEY), a function-level
  route takes the function key or the master key, an admin-level route and the admin API only the master key, as
  `x-functions-key` or `?code=`; with neither set everything is open (local development without keys);
- 404 (no such route), 405 (wrong method) and 401 (no or a wrong key) answer the API's JSON error body
  `{"error": {"code", "message", "details"}}`;
- timer triggers on their six-field NCRONTAB schedules (`%SETTING%` resolved from the environment),
  `run_on_startup` honoured, `past_due` set when a run starts late;
- `POST /admin/functions/{name}` runs a timer or queue function at once, like the host's admin API;
- queue triggers polling Azurite (devhost/queues.py): host.json's visibilityTimeout, batchSize, maxPollingInterval,
  messageEncoding and maxDequeueCount. A received message is held invisible while it waits and runs (a lease of
  DEVHOST_QUEUE_LEASE_SECONDS, default 60, renewed), so a host that goes away gives it back within the lease; a
  failure makes it visible again after visibilityTimeout; a message whose handler keeps failing goes to
  `<queue>-poison`, as the host does;
- `AzureWebJobs.<FunctionName>.Disabled` (or `AzureWebJobs_<FunctionName>_Disabled`) "true" or "1": a disabled
  timer or queue function is not started, a disabled HTTP function answers 404 unless it is called with the master
  key; the admin API still runs a disabled function, as on Azure (devhost/core.py reads the settings).

It is a development tool: production runs on the Functions host. See docs/LOCAL.md for what it does
not reproduce.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
from aiohttp import web
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from croniter import croniter

from devhost.core import LEASE_SECONDS, Function, disabled_by, invoke, queue_lease_seconds, renew_seconds, resolve
from devhost.queues import QueueTriggers

__all__ = ["LEASE_SECONDS", "Function", "LocalHost", "PortInUse", "discover", "invoke", "load_local_settings",
           "read_host_json", "resolve"]

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("devhost")

KEY_HINT = "send it as the x-functions-key header or as ?code= in the query string"


def load_local_settings(path: Path | None = None) -> None:
    """Put local.settings.json's Values into the environment (what is set already wins, as with Core Tools): the
    same reader as the CLI's (shared/settings.py). A file that cannot be used ends the process with one line."""
    from shared.settings import SettingsError
    from shared.settings import load_local_settings as load

    try:
        load(path or ROOT / "local.settings.json")
    except SettingsError as error:
        raise SystemExit(f"error: {error}") from None


class PortInUse(SystemExit):
    """The HTTP port is taken (most likely by the app already running). A SystemExit carrying one line, so
    `python -m devhost` ends with that line and a non-zero status instead of a traceback."""

    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} is in use: is the app already running?")
        self.port = port


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


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The API's documented error body (shared/triggers/http.py), as application/json."""
    return web.json_response({"error": {"code": code, "message": message, "details": []}}, status=status,
                             headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """aiohttp's own 404/405 answers (no route matched, or not with this method) as the JSON error body."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPMethodNotAllowed as error:
        allowed = ", ".join(sorted(error.allowed_methods))
        return error_response(405, "method_not_allowed",
                              f"{request.method} is not allowed on {request.path}; allowed: {allowed}",
                              headers={"Allow": allowed})
    except web.HTTPNotFound:
        return error_response(404, "not_found", f"no function answers {request.method} {request.path}")
    return response


class LocalHost(QueueTriggers):
    def __init__(self, app: func.FunctionApp, host_json: dict[str, Any], port: int = 7071,
                 function_key: str | None = None, master_key: str | None = None) -> None:
        self.functions = discover(app)
        self.host_json = host_json
        self.port = port
        self.function_key = function_key
        self.master_key = master_key
        self.lease_seconds: float = queue_lease_seconds()  # DEVHOST_QUEUE_LEASE_SECONDS (BadSetting if unusable)
        self.renew_seconds = renew_seconds(self.lease_seconds)
        self.disabled: dict[str, str] = {}  # function name → the app setting that disables it (read at start)
        self.invocations: dict[str, int] = {}
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None
        self._routes: list[tuple[str, ...]] = []  # logged once the port is ours (a port in use is one line)

    # -- http -------------------------------------------------------------------------------------------

    def _http_app(self) -> web.Application:
        prefix = self.host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api").strip("/")
        app = web.Application(client_max_size=4 * 1024 * 1024, middlewares=[_json_errors])
        self._routes = []
        for fn in self.functions:
            if fn.trigger["type"] != "httpTrigger":
                continue
            route = "/" + "/".join(p for p in (prefix, resolve(fn.trigger["route"]).strip("/")) if p)
            route = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", route)  # {id:int} constraints are not checked
            methods = [m.upper() for m in fn.trigger.get("methods") or ["GET", "POST", "PUT", "PATCH", "DELETE"]]
            for method in methods:
                app.router.add_route(method, route, self._http_handler(fn))
            self._routes.append(("http  %-7s %s -> %s", ",".join(methods), route, fn.name))
        app.router.add_post("/admin/functions/{name}", self._admin_invoke)
        return app

    def _refused(self, request: web.Request, level: str) -> web.Response | None:
        """None when the request may call a route of this auth level; else the 401. As on Azure: a function-level
        route takes the function key or the master key, an admin-level one (and the admin API) the master key only.
        With no key set at all, everything is open (local development)."""
        if level == "anonymous" or not (self.function_key or self.master_key):
            return None
        if self._carries(request, [self.master_key] if level == "admin" else [self.function_key, self.master_key]):
            return None
        if level != "admin":
            message = ("No or a wrong key: this route needs the function key (DEVHOST_FUNCTION_KEY) or the master key; "
                       + KEY_HINT)
        elif self.master_key:
            message = ("No or a wrong key: this route needs the master key (DEVHOST_MASTER_KEY), a function key is "
                       f"not accepted; {KEY_HINT}")
        else:
            message = ("This route needs the master key, and DEVHOST_MASTER_KEY is not set: set it and " + KEY_HINT +
                       " (a function key is not accepted)")
        return error_response(401, "unauthorized", message)

    @staticmethod
    def _carries(request: web.Request, keys: list[str | None]) -> bool:
        """Whether the request sends one of `keys` (those set) as x-functions-key or ?code=."""
        given = request.headers.get("x-functions-key") or request.query.get("code") or ""
        return bool(given) and any(key and hmac.compare_digest(given.encode(), key.encode()) for key in keys)

    async def _admin_invoke(self, request: web.Request) -> web.Response:
        """POST /admin/functions/{name} {"input": "..."}: run a non-HTTP function now, as the real host's
        admin API does (used to fire a timer by hand, and by the end-to-end test). Master key only; a disabled
        function runs too, as on Azure."""
        refused = self._refused(request, "admin")
        if refused is not None:
            return refused
        name = request.match_info["name"]
        fn = next((f for f in self.functions if f.name == name), None)
        if fn is None or fn.trigger["type"] == "httpTrigger":
            return error_response(404, "not_found", f"no timer or queue function is named {name!r}")
        if fn.trigger["type"] == "timerTrigger":
            await self._fire(fn, past_due=False)
        else:
            try:
                payload = await request.json() if request.can_read_body else {}
            except ValueError:
                return error_response(400, "bad_request", 'the body must be JSON: {"input": "..."}')
            if not isinstance(payload, dict):
                return error_response(400, "bad_request", 'the body must be a JSON object: {"input": "..."}')
            await invoke(fn, QueueMessage(id="admin", body=str(payload.get("input", "")).encode(), dequeue_count=1))
        return web.Response(status=202)

    def _http_handler(self, fn: Function) -> Callable[[web.Request], Any]:
        level = str(fn.trigger.get("authLevel", "FUNCTION")).lower()

        async def handle(request: web.Request) -> web.StreamResponse:
            setting = self.disabled.get(fn.name)
            if setting and not self._carries(request, [self.master_key]):  # as on Azure: only the master key runs it
                return error_response(404, "not_found", f"no function answers {request.method} {request.path}: "
                                      f"{fn.name} is disabled ({setting})")
            refused = self._refused(request, level)
            if refused is not None:
                return refused
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

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.disabled = {fn.name: setting for fn in self.functions if (setting := disabled_by(fn.name))}
        self._runner = web.AppRunner(self._http_app(), access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        except OSError as error:
            await self.stop()
            if error.errno == errno.EADDRINUSE:
                raise PortInUse(self.port) from None
            raise
        for route in self._routes:
            log.info(*route)
        for fn in self.functions:
            if fn.name in self.disabled:
                log.info("%s is disabled (%s): %s", fn.name, self.disabled[fn.name],
                         "it answers 404 (unless called with the master key)" if fn.trigger["type"] == "httpTrigger"
                         else "not started")
            elif fn.trigger["type"] == "timerTrigger":
                self._tasks.append(asyncio.create_task(self._timer_loop(fn), name=fn.name))
            elif fn.trigger["type"] == "queueTrigger":
                self._tasks.append(asyncio.create_task(self._queue_loop(fn), name=fn.name))
            elif fn.trigger["type"] != "httpTrigger":
                log.warning("%s: trigger type %s is not supported by the local host", fn.name, fn.trigger["type"])
        log.info("local host listening on http://127.0.0.1:%d", self.port)

    async def stop(self) -> None:
        """Cancel the timers and queue pollers (a message being processed keeps its lease until it runs out) and
        close the HTTP listener. Stopping twice is a no-op."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def read_host_json() -> dict[str, Any]:
    return json.loads((ROOT / "host.json").read_text())
