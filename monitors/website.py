"""Website checks: status, latency, body assertions, TLS expiry, on the up/down policy.

aiohttp does the I/O: at 500 concurrent requests it spends ~0.2 ms CPU per request, where requests with
threads spends ~0.9 ms and httpx ~13 ms (see docs/BENCHMARKS.md). Every request goes through the outbound guard.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import re2
from pydantic import Field, ValidationInfo, field_validator, model_validator

from monitors.base import UpDownPolicy
from monitors.contract import CHECK_DEADLINE, CheckContext, CheckResult, Evaluation, Sample
from monitors.policy import UpDownKind
from monitors.website_alerts import certificate_warning, remember_spells
from shared.outbound.body import decode, read_capped
from shared.outbound.errors import describe, http_status
from shared.outbound.guard import OutboundRefused
from shared.outbound.http import peer_cert
from shared.outbound.retry import WEBSITE
from shared.secrets import MASK, mask_url, url_secrets
from shared.text import days_left

KIND = "website"
MAX_BODY_BYTES = 1024 * 1024
REGEX_INLINE_CHARS = 64 * 1024  # body_regex searches of longer bodies run in a worker thread
SENSITIVE_HEADER = re.compile(r"auth|token|key|secret|cookie|password|session", re.I)
_STATUS_ITEM = re.compile(r"^(?:([1-5])xx|(\d{3})(?:-(\d{3}))?)$")
_FORBIDDEN_HEADER_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # aiohttp refuses to send these


class Config(UpDownPolicy):
    kind: Literal["website"] = "website"
    url: str = Field(..., max_length=2048, description="http:// or https:// URL to check.")
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers (values of auth-like "
                                    "headers are never shown back).")
    body: str | None = Field(None, max_length=16384, description="Request body (POST).")
    expected_status: list[str] = Field(default_factory=lambda: ["200-399"], min_length=1, max_length=20,
                                       description='Accepted codes: "200", "200-299" or "2xx".')
    keyword: str | None = Field(None, min_length=1, max_length=500, description="Text the body must contain.")
    keyword_absent: bool = Field(False, description="Invert `keyword`: the body must NOT contain it.")
    body_regex: str | None = Field(None, max_length=500, description="Regular expression the body must match "
                                   "(RE2 syntax, linear-time: no backreferences or lookarounds).")
    max_response_ms: int | None = Field(None, ge=1, le=600000, description="Slower than this → DEGRADED.")
    timeout_seconds: float = Field(15.0, gt=0, le=CHECK_DEADLINE, description="Seconds each try may take.")
    attempts: int = Field(3, ge=1, le=10, description="Tries within one check before it counts as failed; "
                          f"attempts × timeout_seconds must fit in {CHECK_DEADLINE:g} s (one check per tick).")
    follow_redirects: bool = True
    verify_tls: bool = True
    cert_warning_days: int = Field(14, ge=0, le=365, description="Warn when the certificate expires sooner.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        if not parts.hostname:
            raise ValueError("must name a host")
        try:
            parts.hostname.encode("idna")  # what getaddrinfo does; "a..b" would make every check crash
        except UnicodeError:
            raise ValueError("has an invalid host name") from None
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value

    @field_validator("expected_status")
    @classmethod
    def _statuses(cls, value: list[str]) -> list[str]:
        for item in value:
            match = _STATUS_ITEM.match(str(item).strip())
            if not match:
                raise ValueError(f"{item!r} is not a status code, range (200-299) or class (2xx)")
            if match.group(3) and int(match.group(3)) < int(match.group(2)):
                raise ValueError(f"{item!r}: range end is below its start")
        return [str(v).strip() for v in value]

    @field_validator("body_regex")
    @classmethod
    def _regex(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Compiled with RE2 now, so a pattern it cannot run is refused when written. A stored definition from
        # before RE2 keeps loading; its check is an ERROR saying why (see _once).
        if value is not None and not (info.context or {}).get("stored"):
            body_pattern(value)
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 50:
            raise ValueError("at most 50 headers")
        for name, val in value.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}", name):
                raise ValueError(f"invalid header name {name!r}")
            if _FORBIDDEN_HEADER_CHARS.search(val) or len(val) > 4096:
                raise ValueError(f"invalid value for header {name!r}")
        return value

    @model_validator(mode="after")
    def _fits_a_tick(self, info: ValidationInfo) -> Config:
        # Stored definitions from before this limit keep loading; the engine ends their checks at the deadline.
        if not (info.context or {}).get("stored") and self.attempts * self.timeout_seconds > CHECK_DEADLINE:
            raise ValueError(f"attempts × timeout_seconds is {self.attempts * self.timeout_seconds:g} s; one check "
                             f"must fit in {CHECK_DEADLINE:g} s (lower attempts or timeout_seconds)")
        return self

    @model_validator(mode="after")
    def _head_has_no_body(self) -> Config:
        if self.method == "HEAD" and (self.keyword is not None or self.body_regex is not None):
            raise ValueError("keyword and body_regex need a body: use GET or POST, not HEAD")
        if "@" in urlsplit(self.url).netloc and any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("give the login either in the URL (user:password@) or as an Authorization header, "
                             "not both")
        return self

    def unique_keys(self) -> list[str]:
        """What is checked, written one way: only a monitor that checks exactly this is a duplicate (409), so one
        URL may be watched in two ways. The URL (scheme and host in any case, the default port, "" as "/"), its
        login, the method, the headers (names in any case), the body and every assertion — status codes (as
        ranges: "2xx" is "200-299"), keyword, body_regex, max_response_ms —, redirects and TLS verification; not
        the name, schedule, audience, tries, timeouts or alert policy."""
        login = urlsplit(self.url.strip()).netloc.rpartition("@")[0]
        what = {"url": normalize_url(self.url), "login": login, "method": self.method,
                "headers": sorted((name.lower(), value) for name, value in self.headers.items()),
                "body": self.body or None, "status": status_ranges(tuple(self.expected_status)),
                "keyword": [self.keyword, self.keyword_absent] if self.keyword is not None else None,
                "body_regex": self.body_regex, "max_response_ms": self.max_response_ms,
                "follow_redirects": self.follow_redirects, "verify_tls": self.verify_tls}
        return [json.dumps(what, sort_keys=True, separators=(",", ":"))]


def normalize_url(url: str) -> str:
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}[parts.scheme.lower()]
    netloc = host if parts.port in (None, default) else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


@lru_cache(maxsize=256)
def status_ranges(items: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """`expected_status` as sorted, merged ranges of codes ("2xx", "300-399" → [(200, 399)])."""
    ranges = []
    for item in items:
        m = _STATUS_ITEM.match(item)
        assert m is not None  # validated
        if m.group(1):
            base = int(m.group(1)) * 100
            ranges.append((base, base + 99))
        else:
            ranges.append((int(m.group(2)), int(m.group(3) or m.group(2))))
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return tuple(merged)


@lru_cache(maxsize=256)
def _status_matcher(items: tuple[str, ...]) -> Callable[[int], bool]:
    ranges = status_ranges(items)
    return lambda code: any(lo <= code <= hi for lo, hi in ranges)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the user's 422, not a line on the worker's stderr


@lru_cache(maxsize=1024)
def body_pattern(pattern: str) -> Any:
    """`body_regex` compiled by RE2, once per pattern. RE2 matches in time linear in the body: Python's backtracking
    `re` let `(a+)+$` against a 26-byte page block the event loop (and every other check) for 5 s. Raises ValueError
    saying what is wrong, or what RE2 does not support."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        detail = error.args[0] if error.args else error
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                re.compile(pattern)  # only to tell "not supported" from "invalid"; never used to match
        except Exception:  # noqa: BLE001 - re.error, or a pattern Python cannot even parse
            raise ValueError(f"invalid regular expression: {detail}") from None
        raise ValueError(f"not supported ({detail}): body_regex uses RE2, which matches in linear time and so has "
                         "no backreferences (\\1, (?P=name)), lookarounds ((?=…), (?!…), (?<=…), (?<!…)), "
                         "possessive or atomic groups, conditionals or the (?x) flag") from None


@lru_cache(maxsize=1024)
def _cert_expiry(der: bytes) -> datetime:
    from cryptography import x509

    return x509.load_der_x509_certificate(der).not_valid_after_utc


async def _once(cfg: Config, http: aiohttp.ClientSession) -> CheckResult:
    data: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        async with http.request(cfg.method, cfg.url, headers=cfg.headers or None, data=cfg.body,
                                allow_redirects=cfg.follow_redirects, max_redirects=10,
                                ssl=bool(cfg.verify_tls),
                                timeout=aiohttp.ClientTimeout(total=cfg.timeout_seconds)) as resp:
            der = peer_cert(resp)
            body = (await read_capped(resp, MAX_BODY_BYTES))[0] if cfg.method != "HEAD" else b""
            latency = (time.perf_counter() - started) * 1000
            data["status_code"] = resp.status
            if resp.history:
                data["final_url"] = str(resp.url)[:1000]
    except OutboundRefused as error:  # the target is not allowed: the operator's problem, not the site's
        return CheckResult("error", None, str(error), data)
    except Exception as error:
        text = describe(error, cfg.timeout_seconds)
        if text is None:
            raise  # not a site failure: a bug in us, reported as ERROR by the engine
        if isinstance(getattr(error, "os_error", None), OutboundRefused):
            return CheckResult("error", None, text, data)
        return CheckResult("down", round((time.perf_counter() - started) * 1000, 1), text, data)
    if der is not None:
        expiry = _cert_expiry(der)
        data["cert_expires_at"] = expiry
        data["cert_days_left"] = days_left(expiry, datetime.now(UTC))
    latency = round(latency, 1)
    if not _status_matcher(tuple(cfg.expected_status))(resp.status):
        return CheckResult("down", latency, f"{http_status(resp.status)} (expected {', '.join(cfg.expected_status)})",
                           data)
    if cfg.keyword is not None or cfg.body_regex is not None:
        text = decode(body, resp.charset)
        if cfg.keyword is not None and (cfg.keyword in text) == cfg.keyword_absent:
            verb = "contains" if cfg.keyword_absent else "does not contain"
            return CheckResult("down", latency, f'response {verb} "{cfg.keyword}"', data)
        if cfg.body_regex is not None:
            try:
                pattern = body_pattern(cfg.body_regex)
            except ValueError as refused:  # a stored definition from before RE2
                return CheckResult("error", latency, f"body_regex {cfg.body_regex}: {refused}", data)
            # Linear in the body (at most MAX_BODY_BYTES), yet up to ~0.3 s of CPU for 1 MiB and a pattern whose
            # DFA RE2 must give up on: a large body is searched in a worker thread (RE2 releases the GIL), so
            # the event loop, and every other check of the tick, keeps running.
            found = await asyncio.to_thread(pattern.search, text) if len(text) > REGEX_INLINE_CHARS \
                else pattern.search(text)
            if not found:
                return CheckResult("down", latency, f"response does not match /{cfg.body_regex}/", data)
    if cfg.max_response_ms is not None and latency > cfg.max_response_ms:
        return CheckResult("degraded", latency, f"responded in {latency:.0f} ms (limit {cfg.max_response_ms} ms)",
                           data)
    return CheckResult("up", latency, None, data)


class Website(UpDownKind[Config]):
    name = KIND
    model = Config
    title = "Websites"
    unique_field = "url"
    unique_means = "checks this url the same way (the same method, headers, body and assertions)"
    metrics: ClassVar[dict[str, str]] = {
        "website_certificate_days_left": "Days until the website's TLS certificate expires.",
        "website_http_status_code": "HTTP status of the website's latest check."}

    def deadline(self, cfg: Config) -> float:
        """Every try with its timeout, and the waits between them."""
        waits = sum(min(WEBSITE.wait_max, WEBSITE.wait_initial * 2 ** n) + WEBSITE.jitter
                    for n in range(cfg.attempts - 1))
        return cfg.attempts * cfg.timeout_seconds + waits + 1

    async def check(self, cfg: Config, ctx: CheckContext) -> CheckResult:
        """Up to `attempts` tries with a short backoff; the last try's result stands."""
        async def attempt(n: int) -> CheckResult:
            result = await _once(cfg, ctx.http)
            result.data["attempts"] = n
            return result

        return await WEBSITE.until(attempt, lambda r: r.outcome != "down", f"website check {cfg.id}", cfg.attempts)

    def evaluate(self, cfg: Config, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
        """The up/down policy, each event told with the URL and the outage's or slow spell's times, and the
        certificate warnings."""
        ev = super().evaluate(cfg, prev, result, now)
        url = mask_url(cfg.url)
        remember_spells(ev, prev, result, now)
        warning = certificate_warning(cfg, ev.state, result, now, url)
        if warning is not None:
            ev.events.append(warning)
        for event in ev.events:
            event.details.setdefault("url", url)
        return ev

    def outbound_targets(self, cfg: Config) -> dict[str, str]:
        return {"url": cfg.url}

    def secrets(self, cfg: Config) -> list[str]:
        return [v for k, v in cfg.headers.items() if SENSITIVE_HEADER.search(k)] + url_secrets(cfg.url)

    def public_view(self, cfg: Config) -> dict[str, Any]:
        data = cfg.model_dump(mode="json")
        data["headers"] = {k: (MASK if SENSITIVE_HEADER.search(k) else v) for k, v in cfg.headers.items()}
        data["url"] = mask_url(cfg.url)
        return data

    def target(self, cfg: Config) -> str:
        return mask_url(cfg.url)

    def public_url(self, cfg: Config) -> str | None:
        return None if cfg.hide_url else mask_url(cfg.url)

    def samples(self, row: dict[str, Any]) -> list[Sample]:
        return [Sample("website_certificate_days_left", row.get("cert_days_left")),
                Sample("website_http_status_code", row.get("status_code"))]


PLUGIN = Website()
check = PLUGIN.check
evaluate = PLUGIN.evaluate
