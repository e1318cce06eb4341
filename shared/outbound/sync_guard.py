"""The outbound guard for blocking clients (Apprise → requests → urllib3, smtplib): the same rules as the aiohttp
guard (shared/outbound/guard.py), for code that opens its sockets itself.

urllib3 opens every connection through `urllib3.util.connection.create_connection` (looked up at call time), and
smtplib, http.client and most other blocking clients through `socket.create_connection`. `install()` wraps both,
once. The wrapper is inert unless a guard is active in the current context (`with guarded(guard): ...`): then it
resolves the host itself, drops the addresses the guard refuses (`Guard.allowed`; `Guard.check_host` for literal
addresses and the app's own storage endpoints), raises `SyncRefused` (an `OutboundRefused` that is also an OSError,
so the client reports it as a failed connection instead of crashing) when none is left, and connects only to an
address it checked — a DNS answer that changes between check and connect (rebinding) cannot slip through.
Outside `guarded(...)` both functions behave exactly as the originals (they *are* the originals, called through).

The active guard is a ContextVar, not a threading.local: Apprise 2.x runs a service in its own worker thread under
a copy of the caller's context (`submit_with_context`), which a thread-local would not reach. Each thread and each
asyncio task still has its own: a guard set in one send never applies to another. Whatever was refused is recorded
on the `Guarding` object `guarded` yields, so the caller can say which address was refused even when the client
swallowed the exception (Apprise's plugins log a connection error and return False).
"""

from __future__ import annotations

import contextvars
import inspect
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from shared.outbound.errors import os_reason
from shared.outbound.guard import Guard, OutboundRefused, literal_address


class SyncRefused(OutboundRefused, OSError):
    """A blocking client tried to reach an address the guard does not allow (the message says which and why)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "refused by the outbound guard"


@dataclass
class Guarding:
    """One `guarded(...)` block: its guard, what it refused and which connections failed (messages, in order:
    the client that swallowed the exception may have logged only "a connection error occurred")."""

    guard: Guard
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # connections that failed for other reasons, in words


_active: contextvars.ContextVar[Guarding | None] = contextvars.ContextVar("outbound_sync_guard", default=None)
_lock = threading.Lock()
_originals: dict[str, Callable[..., socket.socket]] = {}
_UNSET: Any = object()  # "no timeout given": the caller's own default stands


@contextmanager
def guarded(guard: Guard) -> Iterator[Guarding]:
    """Every blocking connection opened in this context (and in contexts copied from it) goes through `guard`."""
    install()
    state = Guarding(guard)
    token = _active.set(state)
    try:
        yield state
    finally:
        _active.reset(token)


def install() -> None:
    """Wrap urllib3's and the socket module's create_connection (idempotent, thread-safe)."""
    with _lock:
        if _originals:
            return
        import urllib3.util.connection as u3

        _originals["urllib3"] = u3.create_connection
        _originals["socket"] = socket.create_connection
        u3.create_connection = _wrap("urllib3")
        socket.create_connection = _wrap("socket")


def _wrap(which: str) -> Callable[..., socket.socket]:
    original = _originals[which]
    signature = inspect.signature(original)

    def create_connection(*args: Any, **kwargs: Any) -> socket.socket:
        state = _active.get()
        if state is None:
            return original(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        given = bound.arguments
        timeout = given.get("timeout")
        if timeout is _default_timeout(which):
            timeout = _UNSET
        return _connect(state, given["address"], timeout, given.get("source_address"), given.get("socket_options"))

    create_connection.__wrapped__ = original  # type: ignore[attr-defined]
    create_connection.__doc__ = original.__doc__
    return create_connection


def _default_timeout(which: str) -> Any:
    """The sentinel each original takes for "no timeout given" (the socket's default stands)."""
    if which == "urllib3":
        from urllib3.util.timeout import _DEFAULT_TIMEOUT

        return _DEFAULT_TIMEOUT
    return getattr(socket, "_GLOBAL_DEFAULT_TIMEOUT", _UNSET)


def _refuse(state: Guarding, message: str) -> SyncRefused:
    state.refused.append(message)
    return SyncRefused(message)


def checked_addresses(guard: Guard, host: str, port: int) -> list[tuple[Any, ...]]:
    """getaddrinfo's answers for host:port that the guard allows (SyncRefused when none is)."""
    host = host.strip("[]")
    try:
        guard.check_host(host, port)  # the app's own storage endpoints; a refused literal address
    except OutboundRefused as refused:
        raise SyncRefused(str(refused)) from None
    infos = socket.getaddrinfo(host, port, _family(), socket.SOCK_STREAM)
    kept = []
    for info in infos:
        ip = literal_address(str(info[4][0]))
        if ip is not None and guard.allowed(ip):
            kept.append(info)
    if not kept:
        first = literal_address(str(infos[0][4][0])) if infos else None
        reason = guard.refusal(first) if first is not None else "nothing"
        raise SyncRefused(reason if literal_address(host) is not None else f"{host} resolves to {reason}")
    return kept


def _family() -> int:
    try:
        from urllib3.util.connection import allowed_gai_family

        return int(allowed_gai_family())
    except ImportError:  # pragma: no cover - urllib3 is always there with requests
        return socket.AF_UNSPEC


def _connect(state: Guarding, address: tuple[str, int], timeout: Any, source_address: Any,
             options: Sequence[tuple[int, int, Any]] | None) -> socket.socket:
    host, port = str(address[0]), int(address[1])
    try:
        infos = checked_addresses(state.guard, host, port)
    except SyncRefused as refused:
        raise _refuse(state, str(refused)) from None
    except OSError as error:  # the name does not resolve
        state.failed.append(f"cannot resolve {host}: {os_reason(error)}")
        raise
    last: OSError | None = None
    for family, type_, proto, _, sockaddr in infos:
        ip = literal_address(str(sockaddr[0]))
        try:
            # the exact address connected to, checked again (own storage endpoints by address too)
            state.guard.check_host(str(ip), port)
        except OutboundRefused as refused:
            raise _refuse(state, str(refused)) from None
        sock = socket.socket(family, type_, proto)
        try:
            for option in options or ():
                sock.setsockopt(*option)
            if timeout is not _UNSET:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as error:
            last = error
            sock.close()
    if last is not None:
        words = "no answer in time" if isinstance(last, TimeoutError) else os_reason(last)
        state.failed.append(f"cannot connect to {host}:{port}: {words}")
    raise last or OSError(f"cannot connect to {host}:{port}")
