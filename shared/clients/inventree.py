"""A small InvenTree REST client on the run's trusted aiohttp session.

Token auth; at most MAX_IN_FLIGHT requests at once for the whole run (every parts monitor of a run shares one
client, and lookups are memoised for its life, so common parts are fetched once); transient failures (5xx, 408,
429, timeouts, refused connections) retried by the shared policy; both reply shapes of InvenTree's list endpoints
(a plain array without `limit`, a `{count, next, previous, results}` envelope with it). Once InvenTree is
unreachable or refuses the token, every later call of the run fails at once.

Few requests: IPNs and names are looked up in bulk, up to BULK_KEYS a request, with InvenTree's `IPN_regex` and
`name_regex` filters (case-insensitive regular expressions, `^(A|B|…)$`; `?IPN=` folds case in ASCII only on
SQLite, so the caller compares every script with casefold); every part of an assembly's BOM (with substitutes and
variants) comes with its stock from one paged `/part/?in_bom_for=<pk>`. InvenTree 1.4 has no filter for a list of
pks (`exclude_id` only excludes), so a part given by pk is one `/part/<pk>/` request, shared by the run.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote

import aiohttp

from shared.outbound.body import read_capped
from shared.outbound.errors import PermanentError, TransientError, describe, is_transient
from shared.outbound.retry import INVENTREE
from shared.text import clip

MAX_IN_FLIGHT = 8  # requests to InvenTree at once, for all parts monitors of one run together
PAGE_SIZE = 100
MAX_PAGES = 200
MAX_REPLY_BYTES = 16 * 1024 * 1024
BULK_KEYS = 50  # IPNs or names in one bulk lookup
BULK_URL_CHARS = 3000  # ... and at most this much of the URL for its pattern (a proxy may cap the request line)


class InvenTreeError(PermanentError):
    """InvenTree could not answer: the check is an ERROR (operator) and its report is critical."""

    reason = "InvenTree could not be queried"  # what the report's audience is told (no details for them)


class NotConfigured(InvenTreeError):
    reason = "InvenTree is not configured"


class AccessRefused(InvenTreeError):
    reason = "InvenTree refused access"


class Unreachable(InvenTreeError):
    reason = "InvenTree unreachable"


class BadReply(InvenTreeError):
    reason = "InvenTree gave an unexpected answer"


class Unresolved(InvenTreeError):
    """The assembly to check is not one part in InvenTree (not found, ambiguous, no BOM): nothing to report."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def detail(body: bytes) -> str:
    """The gist of an error body: DRF's `detail`, else the JSON or text, short."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:  # e.g. a proxy's HTML error page
        return clip(" ".join(re.sub(r"<[^>]*>", " ", text).split()), 200) or ""
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return clip(data["detail"], 200) or ""
    return clip(json.dumps(data, separators=(",", ":")), 200) or ""


def regex_escape(text: str) -> str:
    """Escape only what is special in Python's, PostgreSQL's and MySQL's regular expressions (not spaces)."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)


class InvenTree:
    def __init__(self, http: aiohttp.ClientSession, url: str, token: str, timeout: float,
                 concurrency: int = MAX_IN_FLIGHT) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        self._seconds = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._gate = asyncio.Semaphore(concurrency)
        self._memo: dict[tuple[Any, ...], asyncio.Future[Any]] = {}
        self._fatal: InvenTreeError | None = None  # once unreachable or refused, every later call fails at once
        self._tasks: set[asyncio.Future[Any]] = set()  # bulk lookups under way (kept from the collector)
        self.requests = 0

    @classmethod
    def from_settings(cls, http: aiohttp.ClientSession, settings: Any) -> InvenTree:
        if not settings.inventree_url:
            raise NotConfigured("INVENTREE_URL is not set")
        if settings.inventree_token is None:
            raise NotConfigured("INVENTREE_TOKEN is not set")
        return cls(http, settings.inventree_url, settings.inventree_token.get_secret_value(),
                   settings.inventree_timeout_seconds)

    def _fail_fast(self) -> None:
        if self._fatal is not None:
            raise type(self._fatal)(str(self._fatal))

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET {url}/api{path} → the parsed JSON, or None for 404. Transient failures are retried; 401/403 is
        AccessRefused, not retried."""
        self._fail_fast()
        tries = 0
        try:
            async for attempt in INVENTREE.tries(is_transient, f"InvenTree GET {path}"):
                with attempt:
                    tries = attempt.num
                    return await self._get_once(path, params)
        except TransientError as error:
            self._fatal = Unreachable(f"InvenTree at {self.url} unreachable after {tries} tries: {error}")
            self._fail_fast()
        raise AssertionError("unreachable")

    async def _get_once(self, path: str, params: dict[str, Any] | None) -> Any:
        async with self._gate:
            self._fail_fast()
            self.requests += 1
            try:
                async with self.http.get(f"{self.url}/api{path}", params=params, headers=self._headers,
                                         timeout=self._timeout) as resp:
                    status = resp.status
                    body, cut = await read_capped(resp, MAX_REPLY_BYTES)
            except Exception as error:
                text = describe(error, self._seconds)
                if text is None:
                    raise
                raise TransientError(text) from None
        if status in (401, 403):
            self._fatal = AccessRefused(f"InvenTree refused the API token set in INVENTREE_TOKEN: HTTP {status} "
                                        f"{detail(body)}")
            self._fail_fast()
        if status == 404:
            return None
        if status >= 500 or status in (408, 429):
            raise TransientError(f"HTTP {status} {detail(body)}".strip())
        if status >= 300:
            raise BadReply(f"HTTP {status} for {path}: {detail(body)}")
        if cut:
            raise BadReply(f"{path}: the reply is larger than {MAX_REPLY_BYTES // 2**20} MiB")
        try:
            return json.loads(body)
        except ValueError:
            raise BadReply(f"{path} did not answer JSON: is INVENTREE_URL ({self.url}) the InvenTree server?") \
                from None

    async def list_all(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a list endpoint. Asks for pages of PAGE_SIZE; a server that ignores `limit` (or an
        older one) answers a plain array of everything, which is taken as is."""
        items: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            query = {**params, "limit": PAGE_SIZE, **({"offset": len(items)} if items else {})}
            page = await self.get(path, query)
            if page is None:
                raise BadReply(f"{path} not found (HTTP 404): is INVENTREE_URL ({self.url}) the InvenTree server?")
            if isinstance(page, list):
                return items + page
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                raise BadReply(f"{path}: neither a list nor a page of results")
            items += page["results"]
            if not page.get("next") or not page["results"]:
                return items
        raise BadReply(f"{path}: more than {MAX_PAGES} pages")

    def _once(self, key: tuple[Any, ...], make: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        task = self._memo.get(key)
        if task is None:
            task = self._memo[key] = asyncio.ensure_future(make())
        return task

    async def part(self, pk: int) -> dict[str, Any] | None:
        return await self._once(("pk", pk), lambda: self.get(f"/part/{pk}/"))

    async def parts_by_ipns(self, ipns: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """{IPN casefolded: the parts whose IPN is that in any case}, in bulk (`IPN_regex`)."""
        return await self._bulk("ipn", "IPN_regex", "IPN", ipns)

    async def parts_by_names(self, names: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """{name casefolded: the parts of that name in any case}, in bulk. `?name=` is not a filter in InvenTree
        (it is ignored: every part comes back); name_regex is, and is case-insensitive. The exact comparison is
        the caller's."""
        return await self._bulk("name", "name_regex", "name", names)

    async def parts_by_ipn(self, ipn: str) -> list[dict[str, Any]]:
        return (await self.parts_by_ipns([ipn]))[ipn.casefold()]

    async def parts_by_name(self, name: str) -> list[dict[str, Any]]:
        return (await self.parts_by_names([name]))[name.casefold()]

    async def parts_in_bom(self, pk: int) -> list[dict[str, Any]]:
        """Every part that can go into the BOM of `pk` (sub-parts, their substitutes and allowed variants, inherited
        lines), with its stock: one paged list."""
        return await self._once(("in_bom_for", pk), lambda: self.list_all("/part/", {"in_bom_for": pk}))

    async def bom(self, pk: int, substitutes: bool = False) -> list[dict[str, Any]]:
        """The BOM lines of `pk`, each with InvenTree's own stock figures (`available_stock`,
        `available_substitute_stock`, `available_variant_stock`); `substitutes` adds each line's substitute parts."""
        params: dict[str, Any] = {"part": pk, **({"substitutes": "true"} if substitutes else {})}
        return await self._once(("bom", pk, substitutes), lambda: self.list_all("/bom/", params))

    async def _bulk(self, kind: str, param: str, field: str, keys: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        keys = list(keys)
        wanted = list(dict.fromkeys(key.casefold() for key in keys))
        originals = {key.casefold(): key for key in reversed(keys)}  # the first spelling asks
        loop = asyncio.get_running_loop()
        fresh: dict[str, asyncio.Future[Any]] = {}
        for folded in wanted:
            if (kind, folded) not in self._memo:
                fresh[folded] = self._memo[(kind, folded)] = loop.create_future()
        chunk: list[str] = []
        size = 0
        for folded in fresh:
            text = regex_escape(originals.get(folded, folded))
            cost = len(quote(text, safe="")) + 3
            if chunk and (len(chunk) >= BULK_KEYS or size + cost > BULK_URL_CHARS):
                self._spawn(self._fill(param, field, chunk, fresh, originals))
                chunk, size = [], 0
            chunk.append(folded)
            size += cost
        if chunk:
            self._spawn(self._fill(param, field, chunk, fresh, originals))
        answers = await asyncio.gather(*(self._memo[(kind, folded)] for folded in wanted), return_exceptions=True)
        found: dict[str, list[dict[str, Any]]] = {}
        for folded, answer in zip(wanted, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            found[folded] = answer
        return found

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fill(self, param: str, field: str, chunk: list[str], futures: dict[str, asyncio.Future[Any]],
                    originals: dict[str, str]) -> None:
        """One bulk request for `chunk`; each key's future gets the parts whose `field` is that key in any case."""
        pattern = "^(" + "|".join(regex_escape(originals.get(folded, folded)) for folded in chunk) + ")$"
        try:
            found = await self.list_all("/part/", {param: pattern})
        except BaseException as error:  # every waiter learns it (and a future nobody awaits logs nothing)
            for folded in chunk:
                if not futures[folded].done():
                    futures[folded].set_exception(error)
                    futures[folded].exception()
            if not isinstance(error, Exception):
                raise
            return
        by_key: dict[str, list[dict[str, Any]]] = {folded: [] for folded in chunk}
        for item in found:
            if isinstance(item, dict):
                bucket = by_key.get(str(item.get(field) or "").casefold())
                if bucket is not None:
                    bucket.append(item)
        for folded in chunk:
            if not futures[folded].done():
                futures[folded].set_result(by_key[folded])
