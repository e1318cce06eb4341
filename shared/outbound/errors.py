"""The one error model of outbound I/O, and the one way a network failure is put into words for an operator.

Every client of another system (WHMCS, InvenTree, SMTP, webhooks, chat services) raises one of two kinds:

- `PermanentError`: retrying cannot help (credentials refused, a mailbox that does not exist, a 4xx that means
  "wrong request"); the caller records it and never retries.
- `TransientError`: it may work later (refused connection, timeout, 5xx, 429); the caller retries.

`scope` says whether the failure concerns one recipient or the whole channel/service, so a caller need not try
every other recipient against a server that is down. `describe` turns aiohttp, asyncio, ssl and OS errors into
plain words ("cannot connect to shop.example:443: connection refused", "no answer within 10 s").
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from typing import Literal

Scope = Literal["recipient", "channel"]

_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)")


class OutboundError(Exception):
    transient = False

    def __init__(self, message: str, scope: Scope = "recipient", code: int | None = None) -> None:
        from shared.secrets import scrub

        super().__init__(scrub(message))
        self.scope: Scope = scope
        self.code = code


class PermanentError(OutboundError):
    """Do not retry: the same request would fail the same way."""


class TransientError(OutboundError):
    """Retry later: the failure may go away on its own."""

    transient = True


def is_transient(error: BaseException) -> bool:
    """What a retry policy retries: transient outbound errors."""
    return isinstance(error, OutboundError) and error.transient


def os_reason(error: BaseException) -> str:
    """An OSError in words: "connection refused", not "Connect call failed ('10.0.0.1', 80)"."""
    if isinstance(error, OSError) and error.errno:
        try:
            return os.strerror(error.errno).lower()
        except ValueError:
            pass
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return _SSL_LOCATION.sub("", " ".join(str(text).split()))


def tls_reason(error: BaseException) -> str:
    """An ssl error in words, with OpenSSL's code: "certificate has expired (CERTIFICATE_VERIFY_FAILED)", without
    "(_ssl.c:1006)"."""
    words = getattr(error, "verify_message", None)
    code = getattr(error, "reason", None)
    if words:
        return f"{words} ({code})" if code else str(words)
    text = _SSL_LOCATION.sub("", " ".join(str(code or error).split()))
    return text.replace("_", " ").lower() if text.isupper() else text


def describe(error: BaseException, timeout: float | None = None) -> str | None:
    """A network failure as an operator should read it; None when `error` is not a network failure (a bug)."""
    import aiohttp

    from shared.outbound.guard import OutboundRefused

    if isinstance(error, OutboundRefused):
        return str(error)
    if isinstance(error, (asyncio.TimeoutError, TimeoutError, aiohttp.ServerTimeoutError)):
        return f"no answer within {timeout:g} s" if timeout is not None else "no answer in time"
    if isinstance(error, aiohttp.TooManyRedirects):
        return "too many redirects (redirect loop?)"
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate rejected: {tls_reason(error.certificate_error)}"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host {error.host}"
    if isinstance(error, aiohttp.ClientSSLError):
        return f"TLS failed with {error.host}:{error.port}: {tls_reason(error.os_error)}"
    if isinstance(error, aiohttp.ClientConnectorError):
        cause = error.os_error
        if isinstance(cause, OutboundRefused):
            return str(cause)
        return f"cannot connect to {error.host}:{error.port}: {os_reason(cause)}"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the response was cut short"
    if isinstance(error, aiohttp.InvalidURL):
        return f"invalid URL: {error}"
    if isinstance(error, aiohttp.ClientError):
        return f"{type(error).__name__}: {error}"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {tls_reason(error)}"
    if isinstance(error, OSError):
        return os_reason(error)
    return None
