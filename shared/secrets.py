"""Secrets never leave the process: the one place that blanks them out of text.

Every value that must never be shown back is *registered* here — each `SecretStr` setting (when a Settings is
made), each masked header value of a monitor and the credentials in its URL (when its definition is parsed),
and whatever a channel adds (the SMTP password in its AUTH encodings). `scrub` replaces every registered value,
URL credentials (`user:pass@`) and secret-looking query values (`?token=…`) with ***. It is applied where text
from the outside world enters what we keep or show: every check result (the engine), every stored event and
delivery error, every channel error, and every log record (a record factory, so third-party loggers too).

Matching uses RE2 (linear time, one pass for any number of secrets).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import traceback
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import re2

MASK = "***"
# Shorter values would blank ordinary words; a 3-character secret is not one. A registered value is blanked wherever
# it appears for the life of the process: a header value that is an ordinary word blanks that word in logs too.
MIN_LENGTH = 4
# Names (of headers, query parameters, settings) whose values are secrets.
SENSITIVE_NAME = re.compile(r"auth|token|key|secret|cookie|passw|pwd|session|signature|\bsig\b|credential|code",
                            re.I)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@'\"<>]+@")
_QUERY_SECRET = re.compile(r"(?i)([?&;][a-z0-9_.\-]*(?:auth|token|key|secret|passw|pwd|session|signature|sig|"
                           r"credential|code)[a-z0-9_.\-]*=)[^&#\s'\"<>]+")

_lock = threading.Lock()
_values: set[str] = set()
_pattern: Any = None  # the compiled alternation of _values (None: nothing registered, or to be rebuilt)
_dirty = False


def forms(value: str) -> set[str]:
    """The ways a secret shows up in text: as is, URL-encoded, base64 (a Basic or PLAIN login), and the token of
    an `Authorization: Bearer <token>` style value."""
    out = {value, quote(value, safe=""), quote_plus(value), base64.b64encode(value.encode()).decode()}
    scheme, _, token = value.partition(" ")
    if token and scheme.isalpha():
        out.add(token.strip())
    return {form for form in out if len(form) >= MIN_LENGTH}


def register(*values: str | None) -> None:
    """Make these values (and their encodings) scrubbed from now on, in this process."""
    new: set[str] = set()
    for value in values:
        if value and len(value) >= MIN_LENGTH:
            new |= forms(value)
    global _dirty
    with _lock:
        if not new <= _values:
            _values.update(new)
            _dirty = True


def register_settings(settings: Any) -> None:
    """Every SecretStr field of a settings object, and the keys inside a storage connection string."""
    from pydantic import SecretStr

    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            register(secret, *_connection_string_secrets(secret))


def _connection_string_secrets(value: str) -> list[str]:
    parts = dict(part.split("=", 1) for part in value.split(";") if "=" in part)
    return [parts[k] for k in ("AccountKey", "SharedAccessSignature", "SharedAccessKey") if parts.get(k)]


def url_secrets(url: str) -> list[str]:
    """The credentials a URL carries: its password and its secret-looking query values."""
    try:
        split = urlsplit(url)
        out = [split.password] if split.password else []
    except ValueError:
        return []
    for pair in split.query.split("&"):
        name, _, value = pair.partition("=")
        if value and SENSITIVE_NAME.search(name):
            out.append(value)
    return [value for value in out if value]


def mask_url(url: str) -> str:
    """The URL as it may be shown: credentials and secret query values replaced by ***."""
    try:
        split = urlsplit(url)
        netloc = split.netloc
        if "@" in netloc:
            netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
        query = "&".join(f"{n}={MASK}" if v and SENSITIVE_NAME.search(n) else (f"{n}={v}" if e else n)
                         for n, e, v in (pair.partition("=") for pair in split.query.split("&"))) \
            if split.query else ""
        return urlunsplit((split.scheme, netloc, split.path, query, split.fragment))
    except ValueError:
        return scrub(url)


def _compiled() -> Any:
    global _pattern, _dirty
    if _dirty:
        with _lock:
            if _dirty:
                ordered = sorted(_values, key=len, reverse=True)
                _pattern = re2.compile("|".join(re2.escape(v) for v in ordered)) if ordered else None
                _dirty = False
    return _pattern


def scrub(text: str) -> str:
    """`text` with every registered secret, URL credential and secret query value replaced by ***."""
    if not text:
        return text
    pattern = _compiled()
    if pattern is not None and pattern.search(text):
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
    return text


T = TypeVar("T")


def scrub_obj(value: T) -> T:
    """Every string inside a JSON-like value (dicts, lists, tuples), scrubbed; other values as they are."""
    if isinstance(value, str):
        return scrub(value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {k: scrub_obj(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_obj(v) for v in value)
    return value


# ------------------------------------------------------------------------------------------------- logging

_installed = False


def install_log_scrubbing() -> None:
    """Scrub every log record this process makes, whoever logs it (idempotent). The message is formatted and
    scrubbed when the record is made, and an exception's traceback is formatted and scrubbed into exc_text."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the logging module's to report
            return record
        clean = scrub(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)
