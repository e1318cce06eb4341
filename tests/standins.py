"""Local stand-ins for the services channels talk to: real aiohttp.web servers on a loopback address speaking each
service's wire format as Apprise 2.3.0 sends it (apprise/plugins/{ntfy,gotify,mattermost,custom_json}.py), and a
webhook receiver that verifies X-Signature-256 itself, the way a receiver of ours must.

Each stand-in records what it accepted (`.received`: path, headers, raw body, parsed JSON) and can be told to fail
(`.fail_next(500)`, `.fail_next(401, times=2)`). They run on one event loop in a background thread, so blocking
senders (Apprise, called from a test or a worker thread) and async ones (the webhook channel) reach them alike.

Use the fixtures from a test module (`from standins import ntfy_server, webhook_server  # noqa: F401`), or
`serve(Ntfy, host="127.0.0.2")` for one bound elsewhere (to prove the outbound guard refused before connecting).

    ntfy://127.0.0.1:PORT/topic         POST /  {"topic", "title", "message"}             (ntfy's JSON publish)
    gotify://127.0.0.1:PORT/TOKEN       POST /message, X-Gotify-Key: TOKEN                 {"title", "message", ...}
    mmost://127.0.0.1:PORT/TOKEN        POST /hooks/TOKEN                                  {"text", "username", ...}
    json://127.0.0.1:PORT/path          POST /path                                         {"title", "message", ...}
    webhook  http://127.0.0.1:PORT/hook POST, X-Signature-256: sha256=HMAC(secret, body)   the versioned body
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)
    query_string: str = ""

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class _Loop:
    """One event loop in a daemon thread for every stand-in of the test session."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="standins", daemon=True).start()
                cls._loop = loop
            return cls._loop

    @classmethod
    def run(cls, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, cls.get()).result(10)


class StandIn:
    """A service on host:port; subclasses route requests and say what an accepted request is answered."""

    scheme = "http"

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.received: list[Received] = []
        self.refused: list[Received] = []  # requests it answered with an error (a failure it was told, bad auth)
        self._fail: list[tuple[int, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None

    # -- control -----------------------------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next `times` requests with `status` (in the service's own error format), with `headers`
        (Retry-After, Location)."""
        with self._lock:
            self._fail.extend([(status, dict(headers or {}))] * times)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, *args: Any, **kwargs: Any) -> str:
        raise NotImplementedError

    # -- server ------------------------------------------------------------------------------------------

    def start(self) -> StandIn:
        _Loop.run(self._start())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            _Loop.run(self._runner.cleanup())
            self._runner = None

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        got = Received(request.method, request.path, dict(request.headers), await request.read(),
                       dict(request.query), request.query_string)
        with self._lock:
            failing = self._fail.pop(0) if self._fail else None
        if failing is None:
            problem = self.check(got)
            if problem is not None:
                self.refused.append(got)
                return problem
            self.received.append(got)
            return self.accept(got)
        self.refused.append(got)
        status, headers = failing
        answer = self.error(status, got)
        answer.headers.update(headers)
        return answer

    # -- the service's own format ------------------------------------------------------------------------

    def check(self, got: Received) -> web.Response | None:
        """An error answer when the request is not one the service accepts (wrong path, token, signature)."""
        return None

    def accept(self, got: Received) -> web.Response:
        return web.json_response({"ok": True})

    def error(self, status: int, got: Received | None = None) -> web.Response:
        return web.json_response({"error": _phrase(status)}, status=status)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


class Ntfy(StandIn):
    """ntfy: Apprise publishes as JSON to the server's root ({"topic", "title", "message"}); errors are ntfy's
    JSON ({"code": 40101, "http": 401, "error": "unauthorized"})."""

    def url(self, topic: str = "alerts") -> str:
        return f"ntfy://{self.host}:{self.port}/{topic}"

    def check(self, got: Received) -> web.Response | None:
        if got.method not in ("POST", "PUT") or got.path.count("/") != 1:
            return web.json_response({"code": 40401, "http": 404, "error": "page not found"}, status=404)
        body = got.json
        if got.path == "/" and not (isinstance(body, dict) and body.get("topic")):
            return web.json_response({"code": 40024, "http": 400, "error": "invalid request: topic invalid"},
                                     status=400)
        return None

    def accept(self, got: Received) -> web.Response:
        body = got.json or {}
        return web.json_response({"id": secrets.token_hex(6), "time": 1700000000, "event": "message",
                                  "topic": body.get("topic"), "title": body.get("title"),
                                  "message": body.get("message")})

    def error(self, status: int, got: Received | None = None) -> web.Response:
        return web.json_response({"code": status * 100 + 1, "http": status, "error": _phrase(status).lower()},
                                 status=status)


class Gotify(StandIn):
    """Gotify: POST /message with the application token in X-Gotify-Key (or ?token=); 401 for another token."""

    def __init__(self, host: str = "127.0.0.1", token: str | None = None) -> None:
        super().__init__(host)
        self.token = token or "A" + secrets.token_hex(8)

    def url(self, token: str | None = None) -> str:
        return f"gotify://{self.host}:{self.port}/{token or self.token}"

    def check(self, got: Received) -> web.Response | None:
        if got.method != "POST" or got.path != "/message":
            return self.error(404)
        if self.token not in (got.headers.get("X-Gotify-Key"), got.query.get("token")):
            return self.error(401)
        return None

    def accept(self, got: Received) -> web.Response:
        body = got.json or {}
        return web.json_response({"id": len(self.received), "appid": 1, "title": body.get("title"),
                                  "message": body.get("message"), "priority": body.get("priority"),
                                  "date": "2024-01-01T00:00:00Z"})

    def error(self, status: int, got: Received | None = None) -> web.Response:
        words = {401: "you need to provide a valid access token or user credentials to access this api"}
        return web.json_response({"error": _phrase(status), "errorCode": status,
                                  "errorDescription": words.get(status, _phrase(status).lower())}, status=status)


class Mattermost(StandIn):
    """Mattermost incoming webhook: POST /hooks/TOKEN {"text", "username", ...}; the answer is "ok"."""

    def __init__(self, host: str = "127.0.0.1", token: str | None = None) -> None:
        super().__init__(host)
        self.token = token or secrets.token_hex(13)

    def url(self, token: str | None = None) -> str:
        return f"mmost://{self.host}:{self.port}/{token or self.token}"

    def check(self, got: Received) -> web.Response | None:
        if got.method != "POST" or got.path != f"/hooks/{self.token}":
            return self.error(400)
        return None

    def accept(self, got: Received) -> web.Response:
        return web.Response(text="ok")

    def error(self, status: int, got: Received | None = None) -> web.Response:
        return web.json_response({"id": "web.incoming_webhook.error", "message": _phrase(status),
                                  "status_code": status}, status=status)


class Json(StandIn):
    """Apprise's json:// (a generic JSON POST): {"version": "1.0", "title", "message", "attachments", "type"}."""

    def url(self, path: str = "/notify") -> str:
        return f"json://{self.host}:{self.port}/{path.lstrip('/')}"


class WebhookReceiver(StandIn):
    """A receiver of our signed webhooks: verifies X-Signature-256 with the shared secret (constant time) and
    records the parsed bodies of the ones that verify (`.bodies`); others are answered 401 and kept in `.refused`."""

    def __init__(self, host: str = "127.0.0.1", secret: str | None = None) -> None:
        super().__init__(host)
        self.secret = secret or "whsec-" + secrets.token_hex(16)

    def url(self, path: str = "/hook") -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def verifies(self, body: bytes, signature: str | None) -> bool:
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return signature is not None and hmac.compare_digest(expected, signature)

    def check(self, got: Received) -> web.Response | None:
        if got.method != "POST":
            return web.Response(status=405, text="POST only")
        if not self.verifies(got.body, got.headers.get("X-Signature-256")):
            return web.Response(status=401, text="bad signature")
        if got.headers.get("Content-Type", "").split(";")[0] != "application/json" or got.json is None:
            return web.Response(status=415, text="JSON expected")
        return None

    def accept(self, got: Received) -> web.Response:
        return web.Response(text=f"received {got.headers.get('X-Monitor-Delivery', '')}".strip())

    def error(self, status: int, got: Received | None = None) -> web.Response:
        # like many servers, it names what was asked for (a token in the path must not reach our errors)
        where = f" for {got.path}{'?' + got.query_string if got and got.query else ''}" if got else ""
        return web.Response(status=status, text=f"{_phrase(status)}{where} (stand-in)")

    @property
    def bodies(self) -> list[Any]:
        return [got.json for got in self.received]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on (for "connection refused")."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(kind: type[StandIn], host: str = "127.0.0.1", **kwargs: Any) -> Iterator[Any]:
    server = kind(host, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ntfy_server() -> Iterator[Ntfy]:
    with serve(Ntfy) as server:
        yield server


@pytest.fixture
def gotify_server() -> Iterator[Gotify]:
    with serve(Gotify) as server:
        yield server


@pytest.fixture
def mattermost_server() -> Iterator[Mattermost]:
    with serve(Mattermost) as server:
        yield server


@pytest.fixture
def json_server() -> Iterator[Json]:
    with serve(Json) as server:
        yield server


@pytest.fixture
def webhook_server() -> Iterator[WebhookReceiver]:
    with serve(WebhookReceiver) as server:
        yield server
