"""The one error model of outbound I/O, and the one way a network failure is put into words for an operator.

Every client of another system (WHMCS, InvenTree, SMTP, webhooks, chat services) raises one of two kinds:

- `PermanentError`: retrying cannot help (credentials refused, a mailbox that does not exist, a 4xx that means
  "wrong request"); the caller records it and never retries.
- `TransientError`: it may work later (refused connection, timeout, 5xx, 429); the caller retries.

`scope` says whether the failure concerns one recipient or the whole channel/service, so a caller need not try
every other recipient against a server that is down.

This is also the one place that puts a failure into words, for results, the API and e-mails alike: `describe`
turns aiohttp, asyncio, ssl and OS errors into plain words ("cannot connect to shop.example:443: connection
refused", "no answer within 10 s", "TLS certificate rejected: certificate has expired", "cannot resolve
shop.example: name not found"), `http_status` names an HTTP answer ("HTTP 503 Service Unavailable"), and `plain`
cleans what older versions stored ("[Errno 111] Connect call failed ('10.0.0.1', 80)", "(_ssl.c:1006)").
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
from http import HTTPStatus
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import aiohttp

Scope = Literal["recipient", "channel"]

_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)")
_OPENSSL_CODE = re.compile(r"\s*\((?:[A-Z0-9]+_)+[A-Z0-9]+\)")  # "(CERTIFICATE_VERIFY_FAILED)"
_SSL_TAG = re.compile(r"\[SSL(?:: [A-Z0-9_]+)?\]\s*")
_VERIFY_FAILED = re.compile(r"certificate verify failed:\s*", re.I)
_ERRNO = re.compile(r"\[Errno (-?\d+)\]\s*(Connect call failed \([^)]*\)|[^,\[\]]*)")
_MULTIPLE = re.compile(r"^Multiple exceptions:\s*", re.I)

# getaddrinfo's failures (socket.gaierror) as a person says them
_DNS = {socket.EAI_NONAME: "name not found", socket.EAI_AGAIN: "temporary DNS failure",
        socket.EAI_FAIL: "DNS server failure", getattr(socket, "EAI_NODATA", -5): "the name has no address"}
# OpenSSL's verify codes (X509_V_ERR_*) a site's certificate commonly fails with
_VERIFY = {9: "certificate is not yet valid", 10: "certificate has expired",
           18: "self-signed certificate (not trusted)", 19: "self-signed certificate in the chain (not trusted)",
           20: "certificate issued by an unknown authority (not trusted)",
           21: "incomplete certificate chain (the server does not send its intermediate certificate)",
           23: "certificate has been revoked", 62: "certificate is not valid for this host name"}


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


def http_status(code: int) -> str:
    """An HTTP answer in words: "HTTP 503 Service Unavailable" (the standard phrase, never the server's own)."""
    try:
        return f"HTTP {code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"


def _strerror(number: int) -> str:
    if number in _DNS and number < 0:
        return _DNS[number]
    try:
        return os.strerror(number).lower()
    except ValueError:
        return f"error {number}"


def _errno_words(match: re.Match[str]) -> str:
    number, words = int(match[1]), match[2].strip()
    if number < 0 or not words or words.startswith("Connect call"):
        return _strerror(number)
    return words.lower()


def plain(text: str | None) -> str:
    """Free error text in plain words: without "(_ssl.c:1006)", "[SSL: CODE]", "(CODE_NAME)", "[Errno 111]
    Connect call failed ('10.0.0.1', 80)" (→ "connection refused") or a repeated "Multiple exceptions: …"."""
    if not text:
        return ""
    text = " ".join(str(text).split())
    text = _VERIFY_FAILED.sub("", _SSL_TAG.sub("", _OPENSSL_CODE.sub("", _SSL_LOCATION.sub("", text))))
    multiple = bool(_MULTIPLE.match(text))
    text = _ERRNO.sub(_errno_words, _MULTIPLE.sub("", text))
    if multiple:  # asyncio's "one per address tried": say each reason once
        text = ", ".join(dict.fromkeys(part.strip() for part in text.split(", ")))
    return text.strip()


def os_reason(error: BaseException) -> str:
    """An OSError in words: "connection refused", not "Connect call failed ('10.0.0.1', 80)"; "name not found"
    for a name that does not resolve."""
    if isinstance(error, socket.gaierror) and error.errno in _DNS:
        return _DNS[error.errno]
    if isinstance(error, OSError) and error.errno:
        return _strerror(error.errno)
    text = getattr(error, "strerror", None) or str(error)
    return plain(text) or type(error).__name__


def tls_reason(error: BaseException) -> str:
    """An ssl error in words: "certificate has expired", "certificate issued by an unknown authority (not
    trusted)", "wrong version number" — without OpenSSL's codes or "(_ssl.c:1006)"."""
    code = getattr(error, "verify_code", None)
    if code in _VERIFY:
        return _VERIFY[code]
    words = getattr(error, "verify_message", None)
    if words:
        return plain(str(words))
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason.isupper():
        return reason.replace("_", " ").lower()
    return plain(str(error)) or type(error).__name__


def describe(error: BaseException, timeout: float | None = None) -> str | None:
    """A network failure as a person should read it; None when `error` is not a network failure (a bug)."""
    import aiohttp

    from shared.outbound.guard import OutboundRefused

    if isinstance(error, OutboundRefused):
        return str(error)
    if isinstance(error, (asyncio.TimeoutError, TimeoutError, aiohttp.ServerTimeoutError)):
        return f"no answer within {timeout:g} s" if timeout is not None else "no answer in time"
    if isinstance(error, aiohttp.ClientConnectorError):
        return _connecting(error)
    if isinstance(error, aiohttp.ClientError):
        return _answering(error)
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {tls_reason(error)}"
    if isinstance(error, OSError):
        return os_reason(error)
    return None


def _connecting(error: aiohttp.ClientConnectorError) -> str:
    """What went wrong before a request could be sent: the name, the connection, TLS."""
    import aiohttp

    from shared.outbound.guard import OutboundRefused

    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate rejected: {tls_reason(error.certificate_error)}"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {error.host}: {os_reason(error.os_error)}"
    if isinstance(error, aiohttp.ClientSSLError):
        return f"TLS failed with {error.host}:{error.port}: {tls_reason(error.os_error)}"
    if isinstance(error.os_error, OutboundRefused):
        return str(error.os_error)
    return f"cannot connect to {error.host}:{error.port}: {os_reason(error.os_error)}"


def _answering(error: aiohttp.ClientError) -> str:
    """What went wrong once connected: redirects, the answer cut short or malformed, the connection lost."""
    import aiohttp

    if isinstance(error, aiohttp.TooManyRedirects):
        return "too many redirects (redirect loop?)"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the response was cut short"
    if isinstance(error, aiohttp.InvalidURL):
        return f"invalid URL: {error}"
    if isinstance(error, aiohttp.ClientResponseError):  # an answer that is not HTTP, or a malformed one
        return f"invalid HTTP answer: {plain(error.message) or error.status}"
    if isinstance(error, aiohttp.ClientOSError):
        return os_reason(error)
    return plain(str(error)) or f"the connection failed ({type(error).__name__})"
