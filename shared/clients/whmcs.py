"""A WHMCS API client: one `GetProducts` request for many products, with the reply shapes WHMCS really sends.

Errors are `TransientError` (no answer, refused connection, 5xx, 429: retried) or `PermanentError` (refused
credentials or IP, a redirect, a reply that is not WHMCS's); the WHMCS secret and access key never appear in them.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import aiohttp

from shared.outbound.body import read_capped
from shared.outbound.errors import OutboundError, PermanentError, TransientError, describe, is_transient
from shared.outbound.retry import WHMCS
from shared.secrets import scrub
from shared.text import clip

MAX_REPLY_BYTES = 32 * 1024 * 1024


def as_int(value: Any) -> int | None:
    """WHMCS sends numbers as numbers or as strings ("12", "12.00"); anything else is None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,12}(?:\.0*)?\s*", value):
        return int(float(value))
    return None


def products_of(reply: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """{pid: product} from a GetProducts reply. `products.product` comes in three shapes: a list, one object when
    there is a single product (XML-style replies), or an object keyed "0", "1", … (a PHP array serialised as an
    object); `products` is missing or "" when nothing matched."""
    products = reply.get("products")
    if products in (None, "", [], {}):
        return {}
    if not isinstance(products, dict):
        raise PermanentError(f"unexpected GetProducts reply: 'products' is a {type(products).__name__}")
    items = products.get("product")
    if items in (None, "", [], {}):
        return {}
    if isinstance(items, dict):
        items = list(items.values()) if _keyed_list(items) else [items]
    if not isinstance(items, list):
        raise PermanentError(f"unexpected GetProducts reply: 'products.product' is a {type(items).__name__}")
    out: dict[int, dict[str, Any]] = {}
    for item in items:
        pid = as_int(item.get("pid")) if isinstance(item, dict) else None
        if pid is not None:
            out[pid] = item
    return out


def _keyed_list(items: dict[str, Any]) -> bool:
    """A PHP list serialised as an object: every key a whole number (a product has named fields: pid, name, …)."""
    return all(isinstance(k, str) and k.isascii() and k.isdigit() for k in items)


def _hint(message: str) -> str:
    text = message.lower()
    if "authentication" in text:
        return " (check WHMCS_IDENTIFIER and WHMCS_SECRET)"
    if "invalid ip" in text or "ip address" in text:
        return " (allow this app's outbound IP under API IP Access Restriction in WHMCS, or set WHMCS_ACCESS_KEY)"
    return ""


async def _request(http: aiohttp.ClientSession, settings: Any, form: dict[str, str]) -> dict[int, dict[str, Any]]:
    timeout = settings.whmcs_timeout_seconds
    try:
        # No redirects: a POST would be turned into a GET (losing the form) or re-sent with the secret elsewhere.
        async with http.post(settings.whmcs_api_url, data=form, allow_redirects=False,
                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body, cut = await read_capped(resp, MAX_REPLY_BYTES, chunk=256 * 1024)
            status, content_type = resp.status, resp.content_type
    except Exception as error:
        text = describe(error, timeout)
        if text is None:
            raise
        raise TransientError(f"WHMCS: {text}") from None

    reply: Any = None
    with contextlib.suppress(ValueError):
        reply = json.loads(body.decode("utf-8-sig"))
    if isinstance(reply, dict) and reply.get("result") == "error":
        message = clip(" ".join(str(reply.get("message") or "no reason given").split()), 300) or ""
        where = "" if status == 200 else f" (HTTP {status})"
        error_type = TransientError if status >= 500 or status == 429 else PermanentError
        raise error_type(f"WHMCS refused GetProducts{where}: {message}{_hint(message)}")
    if status >= 500 or status == 429:
        raise TransientError(f"WHMCS answered HTTP {status}")
    if 300 <= status < 400:
        raise PermanentError(f"WHMCS answered HTTP {status} (a redirect): set WHMCS_API_URL to the final URL of "
                             "includes/api.php")
    if status >= 400:
        raise PermanentError(f"WHMCS answered HTTP {status}" + (" (is WHMCS_API_URL …/includes/api.php?)"
                                                                 if status == 404 else ""))
    if cut:
        raise PermanentError(f"WHMCS's reply is larger than {MAX_REPLY_BYTES // 2**20} MiB")
    if not isinstance(reply, dict):
        raise PermanentError(f"WHMCS answered with something that is not a JSON object ({content_type or 'no type'}"
                             f", {len(body)} bytes): is WHMCS_API_URL the URL of includes/api.php?")
    if reply.get("result") != "success":
        raise PermanentError(f"unexpected GetProducts reply (result={clip(str(reply.get('result')), 40)!r})")
    return products_of(reply)


def not_configured(settings: Any) -> list[str]:
    return [name for name, value in (("WHMCS_API_URL", settings.whmcs_api_url),
                                     ("WHMCS_IDENTIFIER", settings.whmcs_identifier),
                                     ("WHMCS_SECRET", settings.whmcs_secret)) if not value]


async def get_products(http: aiohttp.ClientSession, settings: Any, pids: list[int]) -> tuple[dict[int, dict], int]:
    """One GetProducts request for all `pids` (retried on transient failures); ({pid: product}, tries).
    Raises OutboundError (with `attempts` set) when it failed for good."""
    form = {"action": "GetProducts", "identifier": settings.whmcs_identifier or "",
            "secret": settings.whmcs_secret.get_secret_value() if settings.whmcs_secret else "",
            "responsetype": "json", "pid": ",".join(str(p) for p in pids)}
    if settings.whmcs_access_key is not None and settings.whmcs_access_key.get_secret_value():
        form["accesskey"] = settings.whmcs_access_key.get_secret_value()
    tries = 0
    try:
        async for attempt in WHMCS.tries(is_transient, "WHMCS GetProducts"):
            with attempt:
                tries = attempt.num
                try:
                    return await _request(http, settings, form), tries
                except OutboundError as error:
                    error.args = (scrub(str(error)),)  # before the retry log line sees it
                    raise
    except OutboundError as error:
        error.attempts = tries  # type: ignore[attr-defined]
        raise
    raise AssertionError("unreachable")
