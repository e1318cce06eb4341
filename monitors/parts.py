"""Parts lists against InvenTree (seed 002): can we build `kits` of this list, or of this assembly's BOM, now?

One check resolves every line in InvenTree (by pk, IPN, or exact name + revision), reads its stock
(INVENTREE_AVAILABLE_FIELD) and computes per line required = quantity × kits, missing = max(0, required −
available), and overall: lines, lines short, total missing, kits buildable now (min over lines of
floor(available / quantity)) and warnings (not found, ambiguous, inactive).

The InvenTree client below is plain aiohttp on the engine's shared session, not the `inventree` PyPI client
(README, "Parts lists" says why): token auth, at most MAX_IN_FLIGHT requests at once for the whole run
(`check_batch`: every parts monitor of a run shares one client, so common parts are fetched once), retries
with backoff for 5xx / timeouts / refused connections, and both reply shapes of InvenTree's list endpoints
(a plain array without `limit`, a `{count, next, previous, results}` envelope with it).

How a run becomes e-mails (the seed's sequence diagram on this engine):
- InvenTree unreachable after the retries, refusing the token, or not configured → outcome "error" → the
  shared ERROR policy (monitors/policy.py `error_policy`): MONITOR_ERROR to the operator once, and
  MONITOR_ERROR_CLEARED when it works again. That run's report is "critical" (it has no data).
- `notify_condition` "always" → a PARTS_REPORT event every run; "on_change" → only when the report's
  significance hash differs from the state's `last_hash`.
- `last_hash` is written by the mail path only (shared/mailer.py → Store.confirm_last_hash), once SMTP accepted
  the report for at least one recipient; evaluate only reads it. So a report that could not be e-mailed is
  sent again by the next run, and with the global e-mail switch off nothing is confirmed.

The significance hash covers what a person acts on: which lines are short and by how much, the kits buildable
capped at the kits wanted (stock moving above the requirement changes nothing), and the critical state.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitors.base import CheckResult, Evaluation, MonitorBase
from monitors.policy import error_policy
from shared.events import Event, EventType
from shared.storage import clip

KIND = "parts"
MAX_IN_FLIGHT = 8  # requests to InvenTree at once, for all parts monitors of one run together
RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0)  # waits between the tries of one request (3 tries)
PAGE_SIZE = 100
MAX_PAGES = 200
REPORT_BUDGET = 24_000  # JSON characters of a PARTS_REPORT's details (queue message ≤ 64 KiB; events row)
DETAIL_BUDGET = 16_000  # JSON characters of a result row's `detail` (a property holds 64 KiB of UTF-16)
MAX_WARNINGS = 50

log = logging.getLogger("monitor.parts")


# ------------------------------------------------------------------------------------------------ config


class PartRef(BaseModel):
    """One InvenTree part: exactly one of pk, ipn or name; `version` (InvenTree's `revision`) with ipn or name."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    pk: int | None = Field(None, ge=1, le=2**31 - 1, description="InvenTree part id.")
    ipn: str | None = Field(None, min_length=1, max_length=100, description="Internal part number (exact, any "
                            "case).")
    name: str | None = Field(None, min_length=1, max_length=200, description="Exact part name.")
    version: str | None = Field(None, max_length=100, description="The part's `revision` in InvenTree (\"\" = no "
                                "revision); picks one of several revisions sharing a name or IPN.")

    @model_validator(mode="after")
    def _one_key(self) -> "PartRef":
        given = [key for key in ("pk", "ipn", "name") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of pk, ipn or name")
        if self.pk is not None and self.version is not None:
            raise ValueError("version goes with ipn or name; a pk names one revision already")
        return self

    def label(self) -> str:
        if self.pk is not None:
            return f"pk {self.pk}"
        base = f"IPN {self.ipn}" if self.ipn is not None else str(self.name)
        return base + (f" rev {self.version}" if self.version else "")


class PartLine(PartRef):

    quantity: float = Field(..., gt=0, le=1e9, description="Needed per kit.")


class Config(MonitorBase):
    kind: Literal["parts"] = "parts"
    parts: list[PartLine] | None = Field(None, min_length=1, max_length=500,
                                         description="The parts list: [{pk | ipn | name, quantity, version?}]. "
                                         "Give this or `assembly`.")
    assembly: PartRef | None = Field(None, description="An assembly part whose BOM is read from InvenTree on "
                                     "every check, instead of `parts`.")
    kits: int = Field(1, ge=1, le=1_000_000, description="How many to build: required = quantity × kits.")
    notify_condition: Literal["on_change", "always"] = Field(
        "on_change", description="on_change: e-mail a report when shortages or buildable kits change; always: "
        "every run.")
    include_optional: bool = Field(True, description="Assembly mode: count BOM lines marked optional.")

    @model_validator(mode="after")
    def _one_source(self) -> "Config":
        if (self.parts is None) == (self.assembly is None):
            raise ValueError("give either parts (a list) or assembly (its BOM is read from InvenTree), not both")
        return self


# ------------------------------------------------------------------------------------------------ client


class InvenTreeError(Exception):
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


def _detail(body: bytes) -> str:
    """The gist of an error body: DRF's `detail`, else the JSON or text, short."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:  # e.g. a proxy's HTML error page
        return clip(" ".join(re.sub(r"<[^>]*>", " ", text).split()), 200) or ""
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return clip(data["detail"], 200) or ""
    return clip(json.dumps(data, separators=(",", ":")), 200) or ""


def _regex_escape(text: str) -> str:
    """Escape only what is special in Python's, PostgreSQL's and MySQL's regular expressions (not spaces)."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)


class InvenTree:
    """A small InvenTree REST client on a shared aiohttp session. Lookups are memoised for the client's life
    (one run), so lines and monitors asking for the same part share one request."""

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
        self.requests = 0

    @classmethod
    def from_settings(cls, http: aiohttp.ClientSession, settings: Any) -> "InvenTree":
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
        """GET {url}/api{path} → the parsed JSON, or None for 404. Transient failures (5xx, 408, 429, timeouts,
        connection errors) are retried after RETRY_DELAYS; 401/403 is AccessRefused, not retried."""
        self._fail_fast()
        problem = ""
        for delay in (*RETRY_DELAYS, None):
            try:
                async with self._gate:
                    self._fail_fast()
                    self.requests += 1
                    async with self.http.get(f"{self.url}/api{path}", params=params, headers=self._headers,
                                             timeout=self._timeout) as resp:
                        status, body = resp.status, await resp.read()
            except (asyncio.TimeoutError, TimeoutError):
                problem = f"no answer within {self._seconds:g} s"
            except aiohttp.ClientConnectorError as error:
                reason = error.os_error.strerror if error.os_error and error.os_error.strerror else str(error)
                problem = f"cannot connect to {error.host}:{error.port}: {reason}"
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if status in (401, 403):
                    self._fatal = AccessRefused(f"InvenTree refused the API token (INVENTREE_TOKEN): HTTP {status} "
                                                f"{_detail(body)}")
                    self._fail_fast()
                if status == 404:
                    return None
                if status >= 500 or status in (408, 429):
                    problem = f"HTTP {status} {_detail(body)}".strip()
                elif status >= 300:
                    raise BadReply(f"HTTP {status} for {path}: {_detail(body)}")
                else:
                    try:
                        return json.loads(body)
                    except ValueError:
                        raise BadReply(f"{path} did not answer JSON: is INVENTREE_URL ({self.url}) the InvenTree "
                                       "server?") from None
            if delay is not None:
                await asyncio.sleep(delay)
        self._fatal = Unreachable(f"InvenTree at {self.url} unreachable after {len(RETRY_DELAYS) + 1} tries: "
                                  f"{problem}")
        self._fail_fast()

    async def list(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
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

    async def parts_by_ipn(self, ipn: str) -> list[dict[str, Any]]:
        return await self._once(("ipn", ipn.casefold()), lambda: self.list("/part/", {"IPN": ipn}))

    async def parts_by_name(self, name: str) -> list[dict[str, Any]]:
        # `?name=` is not a filter in InvenTree (it is ignored: every part comes back); name_regex is, and is
        # case-insensitive. The exact comparison is made here.
        return await self._once(("name", name.casefold()),
                                lambda: self.list("/part/", {"name_regex": f"^{_regex_escape(name)}$"}))

    async def bom(self, pk: int) -> list[dict[str, Any]]:
        return await self._once(("bom", pk), lambda: self.list("/bom/", {"part": pk}))


# -------------------------------------------------------------------------------------------- resolution


@dataclass(slots=True)
class Found:
    part: dict[str, Any] | None
    status: Literal["ok", "not_found", "ambiguous"]
    warning: str | None = None


def describe(part: dict[str, Any], flag_inactive: bool = True) -> str:
    """'pk 7 Widget PCB rev A (inactive)'."""
    rev = str(part.get("revision") or "")
    return f"pk {part.get('pk')} {part.get('name')}" + (f" rev {rev}" if rev else "") \
        + ("" if part.get("active", True) or not flag_inactive else " (inactive)")


def choose(ref: PartRef, candidates: list[dict[str, Any]]) -> Found:
    """The one part `ref` means among `candidates`, compared here exactly (the server's filters are only a
    first cut): IPN any case, name exact (any case only when no exact match), revision any case."""
    label = ref.label()
    if ref.ipn is not None:
        candidates = [p for p in candidates if str(p.get("IPN") or "").casefold() == ref.ipn.casefold()]
    if ref.name is not None:
        candidates = [p for p in candidates if p.get("name") == ref.name] or \
            [p for p in candidates if str(p.get("name") or "").casefold() == ref.name.casefold()]
    named = candidates
    if ref.version is not None:
        candidates = [p for p in candidates if str(p.get("revision") or "").casefold() == ref.version.casefold()]
    if not candidates:
        if named:
            revisions = ", ".join(sorted({str(p.get("revision") or "") or "(none)" for p in named}))
            return Found(None, "not_found", f"{label}: no such revision in InvenTree (there: {revisions})")
        return Found(None, "not_found", f"{label}: not found in InvenTree")
    if len(candidates) > 1:
        listed = "; ".join(describe(p) for p in candidates[:5]) + (" …" if len(candidates) > 5 else "")
        return Found(None, "ambiguous", f"{label}: {len(candidates)} parts match in InvenTree ({listed}); "
                                        "give `version`, or the `pk`")
    part = candidates[0]
    if not part.get("active", True):
        return Found(part, "ok", f"{describe(part, flag_inactive=False)} is inactive in InvenTree")
    return Found(part, "ok")


async def resolve(client: InvenTree, ref: PartRef) -> Found:
    if ref.pk is not None:
        part = await client.part(ref.pk)
        return choose(ref, [part]) if part is not None else Found(None, "not_found", f"{ref.label()}: no such "
                                                                                     "part in InvenTree")
    if ref.ipn is not None:
        return choose(ref, await client.parts_by_ipn(ref.ipn))
    return choose(ref, await client.parts_by_name(ref.name or ""))


async def _all(awaitables: list[Awaitable[Any]]) -> list[Any]:
    """gather, but every failure is retrieved (no 'exception never retrieved') and the first one raised."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for item in results:
        if isinstance(item, BaseException):
            raise item
    return results


# ----------------------------------------------------------------------------------------- calculation


def _round(value: float) -> float:
    return round(value + 0.0, 6)


def _stock(part: dict[str, Any], field: str) -> float:
    value = part.get(field)
    try:
        number = float(value)  # lenient: InvenTree sends 25.0 here and "25.000000" there
    except (TypeError, ValueError):
        raise BadReply(f"part pk {part.get('pk')} has no number in {field!r} (INVENTREE_AVAILABLE_FIELD)") \
            from None
    return max(0.0, number) if math.isfinite(number) else 0.0


def line_of(ref: PartRef, quantity: float, kits: int, found: Found, field: str,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One report line. An unresolved line counts as short by all it needs: nobody can build without it."""
    extra = extra or {}
    required = _round(quantity * kits)
    notes = [n for n in (extra.get("reference"), "optional" if extra.get("optional") else None) if n]
    part = found.part
    if part is None:
        notes.insert(0, "not found in InvenTree" if found.status == "not_found" else "ambiguous: see warnings")
        return {"part": ref.label(), "pk": None, "ipn": ref.ipn or "", "version": ref.version or "",
                "quantity": quantity, "required": required, "available": None, "missing": required, "kits": 0,
                "status": found.status, "note": ", ".join(notes), "key": f"ref:{ref.label().casefold()}"}
    available = _stock(part, field)
    missing = _round(max(0.0, required - available))
    if not part.get("active", True):
        notes.insert(0, "inactive")
    return {"part": str(part.get("name") or ref.label()), "pk": part.get("pk"), "ipn": str(part.get("IPN") or ""),
            "version": str(part.get("revision") or ""), "quantity": quantity, "required": required,
            "available": _round(available), "missing": missing,
            "kits": math.floor(available / quantity + 1e-9), "status": "short" if missing > 0 else "ok",
            "note": ", ".join(notes), "key": f"pk:{part.get('pk')}"}


def summarize(cfg: Config, lines: list[dict[str, Any]], warnings: list[str], source: str) -> dict[str, Any]:
    short = [line for line in lines if line["missing"] > 0]
    return {"kits": cfg.kits, "source": source, "lines": len(lines), "lines_short": len(short),
            "total_missing": _round(sum(line["missing"] for line in short)),
            "kits_buildable": min((line["kits"] for line in lines), default=0), "critical": False,
            "critical_reason": None, "warnings": [clip(w, 300) or "" for w in warnings],
            "inventree_url": None, "available_field": None,
            "rows": short + [line for line in lines if line["missing"] <= 0]}  # shortfalls first, else in order


def critical_report(cfg: Config, reason: str) -> dict[str, Any]:
    return {"kits": cfg.kits, "source": _source(cfg), "lines": None, "lines_short": 0, "total_missing": 0.0,
            "kits_buildable": None, "critical": True, "critical_reason": reason, "warnings": [],
            "inventree_url": None, "available_field": None, "rows": []}


def _source(cfg: Config) -> str:
    return f"BOM of {cfg.assembly.label()}" if cfg.assembly is not None else "parts list"


async def build_report(cfg: Config, client: InvenTree, field: str) -> dict[str, Any]:
    warnings: list[str] = []
    wanted: list[tuple[PartRef, float, dict[str, Any]]] = []
    if cfg.assembly is not None:
        found = await resolve(client, cfg.assembly)
        if found.warning:
            warnings.append(found.warning)
        if found.part is None:
            return summarize(cfg, [], warnings, _source(cfg))
        source = f"BOM of {describe(found.part, flag_inactive=False)}"
        bom = await client.bom(int(found.part["pk"]))
        if not bom:
            warnings.append(f"{describe(found.part, flag_inactive=False)} has no BOM lines in InvenTree")
        for item in bom:
            if item.get("optional") and not cfg.include_optional:
                continue
            quantity = float(item.get("quantity") or 0)
            if quantity <= 0:
                warnings.append(f"BOM line {item.get('pk')} (sub-part pk {item.get('sub_part')}) has quantity "
                                f"{item.get('quantity')}; skipped")
                continue
            wanted.append((PartRef(pk=int(item["sub_part"])), quantity,
                           {"reference": str(item.get("reference") or ""), "optional": bool(item.get("optional"))}))
    else:
        source = "parts list"
        wanted = [(line, line.quantity, {}) for line in cfg.parts or []]
    founds = await _all([resolve(client, ref) for ref, _, _ in wanted])
    lines = []
    for (ref, quantity, extra), found in zip(wanted, founds):
        if found.warning:
            warnings.append(found.warning)
        lines.append(line_of(ref, quantity, cfg.kits, found, field, extra))
    return summarize(cfg, lines, warnings, source)


def significance_hash(report: dict[str, Any], kits: int) -> str:
    """What a person acts on: which lines are short and by how much, the kits buildable up to the kits wanted
    (stock moving above the requirement is not news), and whether InvenTree could be asked at all."""
    if report["critical"]:
        basis: dict[str, Any] = {"critical": True}
    else:
        basis = {"critical": False,
                 "short": sorted([row["key"], row["missing"], row["status"]] for row in report["rows"]
                                 if row["missing"] > 0),
                 "kits": min(int(report["kits_buildable"] or 0), kits)}
    return hashlib.sha256(json.dumps(basis, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary_line(report: dict[str, Any]) -> str:
    """'2 parts short, 3 kits buildable' (the subject says it all)."""
    if report["critical"]:
        return f"{report['critical_reason']}, no data"
    lines, short = report["lines"] or 0, report["lines_short"]
    if not lines:
        head = "no parts to check"
    elif short:
        head = f"{_plural(short, 'part')} short"
    else:
        head = "the part is available" if lines == 1 else f"all {lines} parts available"
    text = f"{head}, {_plural(int(report['kits_buildable'] or 0), 'kit')} buildable"
    if report["warnings"]:
        text += f", {_plural(len(report['warnings']), 'warning')}"
    return text


def _capped(warnings: list[str]) -> list[str]:
    """At most MAX_WARNINGS (for the e-mail and the result row; the count stays whole)."""
    if len(warnings) <= MAX_WARNINGS:
        return warnings
    return warnings[:MAX_WARNINGS] + [f"… and {len(warnings) - MAX_WARNINGS} more warnings"]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "key"}


def _fit(rows: list[dict[str, Any]], base: dict[str, Any], budget: int) -> tuple[list[dict[str, Any]], int]:
    """As many rows (from the front: shortfalls come first) as fit in `budget` JSON characters with `base`."""
    size = len(json.dumps(base, separators=(",", ":"), default=str)) + 40
    kept = []
    for row in rows:
        size += len(json.dumps(row, separators=(",", ":"), default=str)) + 1
        if size > budget:
            break
        kept.append(row)
    return kept, len(rows) - len(kept)


def result_data(report: dict[str, Any]) -> dict[str, Any]:
    """The result row's summary (scalars) and a `detail` JSON of the short lines and warnings, within budget."""
    short = [{k: row[k] for k in ("part", "pk", "version", "required", "available", "missing", "status")}
             for row in report["rows"] if row["missing"] > 0]
    detail: dict[str, Any] = {"warnings": _capped(report["warnings"])}
    if report["critical"]:
        detail["critical_reason"] = report["critical_reason"]
    detail["short"], omitted = _fit(short, detail, DETAIL_BUDGET)
    if omitted:
        detail["short_omitted"] = omitted
    return {"lines": report["lines"], "lines_short": report["lines_short"], "total_missing": report["total_missing"],
            "kits_buildable": report["kits_buildable"], "critical": report["critical"],
            "warnings": len(report["warnings"]), "detail": json.dumps(detail, separators=(",", ":"))}


# ---------------------------------------------------------------------------------------------- checking


@dataclass(slots=True)
class PartsResult(CheckResult):
    """A CheckResult that also carries the whole report to evaluate (`data` holds its scalar summary)."""

    report: dict[str, Any] | None = None


def _failed(cfg: Config, error: Exception, latency: float | None, reason: str) -> PartsResult:
    report = critical_report(cfg, reason)
    return PartsResult("error", latency, clip(str(error), 1000), result_data(report), report=report)


async def check_batch(configs: list[Config], ctx: Any) -> dict[str, CheckResult]:
    """Every due parts monitor of a run against one client: shared lookups, MAX_IN_FLIGHT requests at once."""
    settings = ctx.settings
    try:
        client = InvenTree.from_settings(ctx.http, settings)
    except NotConfigured as error:
        return {cfg.id or "": _failed(cfg, error, None, error.reason) for cfg in configs}
    field = settings.inventree_available_field

    async def one(cfg: Config) -> tuple[str, CheckResult]:
        started = time.perf_counter()
        try:
            report = await build_report(cfg, client, field)
        except InvenTreeError as error:
            return cfg.id or "", _failed(cfg, error, _ms(started), error.reason)
        except Exception as error:  # noqa: BLE001 - a bug in us: this monitor is ERROR, the others go on
            log.exception("parts check of monitor %s (%s) failed", cfg.id, cfg.name)
            return cfg.id or "", _failed(cfg, RuntimeError(f"checker failed: {type(error).__name__}: {error}"),
                                         _ms(started), "the check failed")
        report["inventree_url"] = client.url
        report["available_field"] = field
        return cfg.id or "", PartsResult("down" if report["lines_short"] else "up", _ms(started), None,
                                         result_data(report), report=report)

    return dict(await asyncio.gather(*(one(cfg) for cfg in configs)))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


# -------------------------------------------------------------------------------------------- evaluating


def report_event(cfg: Config, report: dict[str, Any], digest: str, now: datetime) -> Event:
    title = f"{cfg.name} ×{cfg.kits}"
    summary = summary_line(report)
    severity = "critical" if report["critical"] else ("warning" if report["lines_short"] else "info")
    details: dict[str, Any] = {"hash": digest, "title": title, "summary": summary,
                               "notify_condition": cfg.notify_condition,
                               **{k: v for k, v in report.items() if k != "rows"},
                               "warnings": _capped(report["warnings"])}
    details["rows"], details["omitted_rows"] = _fit([_public(r) for r in report["rows"]], details, REPORT_BUDGET)
    return Event(type=EventType.PARTS_REPORT, kind=KIND, monitor_id=cfg.id or "", monitor_name=cfg.name,
                 severity=severity, occurred_at=now, message=f"{title}: {summary}", details=details)


def evaluate(cfg: Config, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
    # `last_slot` is the engine's bookkeeping: leaving it out keeps an unchanged state equal (no write).
    state = {k: v for k, v in prev.items() if k != "last_slot"} if prev else {"status": "PENDING"}
    before = state.get("status")
    events: list[Event] = []
    report = getattr(result, "report", None)
    if report is None:  # an ERROR the engine made (the checker crashed) carries no report
        report = critical_report(cfg, "the check failed")
    if not error_policy(cfg, KIND, state, result, now, events):
        state["status"] = "SHORT" if report["lines_short"] else "OK"
    if state["status"] != before:
        state["since"] = now.isoformat()
    digest = significance_hash(report, cfg.kits)
    # last_hash is the hash of the last report SMTP accepted (the mail path writes it), never set here.
    if cfg.notify_condition == "always" or digest != state.get("last_hash"):
        events.append(report_event(cfg, report, digest, now))
    return Evaluation(state, state["status"], events)
