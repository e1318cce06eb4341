"""Real HTTP(S) servers on 127.0.0.1 for the website check and the engine tests to point monitors at.

Each `Target` is an http.server in its own thread (so it works whatever event loop a test runs in), and
is switchable at runtime: `site.set(status=500)`, `site.set(delay=1.5)`, `site.set(fail_next=2)`,
`site.set(redirect="loop")`, … It counts the requests it gets (`site.hits`, `site.paths`).

Use it from a test module with `from targets import targets, ...  # noqa: F401` (the fixtures must be
imported into the module for pytest to find them; tests/ is not a package, pytest puts it on sys.path).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme

KEYWORD = "All systems operational"
PAGE = f"<html><head><title>Status</title></head><body><h1>{KEYWORD}</h1><p>build 4711</p></body></html>"

_SETTABLE = {"status", "body", "content_type", "delay", "fail_next", "fail_status", "redirect", "headers",
             "down_for"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def setup(self) -> None:
        if self.server.tls is not None:  # TLS handshake in the handler thread, not in accept()
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.server.tls is not None:
                self.request.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.target._serve(self, send_body=True)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.target._serve(self, send_body=True)

    def do_HEAD(self) -> None:
        self.server.target._serve(self, send_body=False)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a slow handler still sleeping must not hold up the test's teardown

    def __init__(self, target: Target, tls: ssl.SSLContext | None) -> None:
        self.target = target
        self.tls = tls
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out, reject our certificate or hang up are the point of some tests


class Target:
    """A programmable web site. Behaviour (all switchable at runtime with `set`):

    status        the status code of a normal answer (200)
    body          the body of a normal answer (a page containing KEYWORD); str is sent as UTF-8
    content_type  the Content-Type of a normal answer
    delay         seconds to wait before answering
    fail_next     answer the next N requests with `fail_status` (500), then behave normally again
    redirect      None, "once" (302 to /landed, which answers normally) or "loop" (/a → /b → /a → …)
    headers       extra response headers
    down_for      locations (the `location/<name>` a check's User-Agent carries) answered with `fail_status`
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._lock = threading.Lock()
        self.scheme = "https" if tls is not None else "http"
        self.paths: list[str] = []
        self.reset()
        self._server = _Server(self, tls)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"target-{self.port}", daemon=True)
        self._thread.start()

    # -- control ----------------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.status = 200
            self.body = PAGE
            self.content_type = "text/html; charset=utf-8"
            self.delay = 0.0
            self.fail_next = 0
            self.fail_status = 500
            self.redirect: str | None = None
            self.headers: dict[str, str] = {}
            self.down_for: set[str] = set()
            self.agents: list[str] = []
            self.paths = []

    def set(self, **behaviour: Any) -> Target:
        unknown = set(behaviour) - _SETTABLE
        if unknown:
            raise TypeError(f"unknown target behaviour: {', '.join(sorted(unknown))}")
        with self._lock:
            for name, value in behaviour.items():
                setattr(self, name, value)
        return self

    @property
    def url(self) -> str:
        return self.url_for("/")

    def url_for(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    @property
    def hits(self) -> int:
        """Requests received so far (redirect hops and retries each count)."""
        with self._lock:
            return len(self.paths)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- serving ----------------------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler, send_body: bool) -> None:
        path = handler.path.split("?")[0]
        agent = handler.headers.get("User-Agent") or ""
        with self._lock:
            self.paths.append(path)
            self.agents.append(agent)
            delay = self.delay
            failing = self.fail_next > 0 or any(f"location/{loc}" in agent.split() for loc in self.down_for)
            if self.fail_next > 0:
                self.fail_next -= 1
            status, body, ctype = self.status, self.body, self.content_type
            redirect, extra = self.redirect, dict(self.headers)
        if delay:
            time.sleep(delay)
        location = None
        if failing:
            status, body, ctype = self.fail_status, "<h1>Internal Server Error</h1>", "text/html; charset=utf-8"
        elif redirect == "loop":
            status, body, location = 302, "", "/b" if path == "/a" else "/a"
        elif redirect == "once" and path != "/landed":
            status, body, location = 302, "", "/landed"
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        bodiless = status in (204, 304) or 100 <= status < 200
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        if not bodiless:
            handler.send_header("Content-Length", str(len(data)))
        if location:
            handler.send_header("Location", location)
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        if send_body and not bodiless:
            handler.wfile.write(data)


# ---------------------------------------------------------------------------------------------- TLS

_CA = trustme.CA()


def expiring_tls_context(days: float = 3) -> ssl.SSLContext:
    """A server context whose certificate (for 127.0.0.1 and localhost, signed by a CA nobody trusts,
    i.e. as good as self-signed for the client) expires `days` from now."""
    now = datetime.now(UTC)
    cert = _CA.issue_cert("127.0.0.1", "localhost", not_before=now - timedelta(days=1),
                          not_after=now + timedelta(days=days))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


# ---------------------------------------------------------------------------------------------- fixtures


class Targets:
    """Starts targets on demand and stops them all at the end of the test."""

    def __init__(self) -> None:
        self._started: list[Target] = []

    def http(self, **behaviour: Any) -> Target:
        target = Target()
        self._started.append(target)
        return target.set(**behaviour)

    def https(self, days_valid: float = 3, **behaviour: Any) -> Target:
        target = Target(tls=expiring_tls_context(days_valid))
        self._started.append(target)
        return target.set(**behaviour)

    def close(self) -> None:
        for target in self._started:
            target.close()


@pytest.fixture
def targets() -> Iterator[Targets]:
    started = Targets()
    yield started
    started.close()


@pytest.fixture
def site(targets: Targets) -> Target:
    """An HTTP site answering 200 with a page that contains KEYWORD."""
    return targets.http()


@pytest.fixture
def tls_site(targets: Targets) -> Target:
    """An HTTPS site whose untrusted certificate expires in 3 days."""
    return targets.https(days_valid=3)


def refused_port() -> int:
    """A port nobody listens on: bound to find a free one, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def refused_url() -> str:
    return f"http://127.0.0.1:{refused_port()}/"


@pytest.fixture
def unresolvable_url() -> str:
    return "http://nonexistent.invalid/"  # .invalid never resolves (RFC 6761)
