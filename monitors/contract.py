"""The kind contract: what a check type is, in code.

A kind is one module with one `Kind` subclass and one line in the registry (monitors/__init__.py). The engine,
the API, the CLI, the OpenAPI document, the snapshots, the status page and Prometheus know kinds only through
this class — never by name:

- `name`, `model` (the kind's `Config`: a pydantic `MonitorBase` with `kind: Literal[name]`), `title` (plural,
  for pages);
- `check(cfg, ctx)` for one monitor, or `check_batch(cfgs, ctx)` for every due monitor of a tick at once (the
  default runs `check` with at most `ctx.concurrency` in flight; a kind that asks one service for many monitors
  overrides it);
- `evaluate(cfg, state, result, now)`: pure; the new state, status, events and downtime operations;
- `statuses`: the kind's status vocabulary (which are healthy, breaches, down; what a visitor reads);
- hooks for what shared code shows or checks: `outbound_targets`, `public_view`, `target`, `public_url`,
  `result_view`, `result_columns` (the CLI's result tables), `readings` (for /metrics), `samples`
  (Prometheus), `breaker_open`/`breaker_interval`, and `email_templates`; the Config's `unique_keys` with the
  kind's `unique_field`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    import aiohttp

    from monitors.base import MonitorBase
    from shared.events import Event, EventType
    from shared.outbound.guard import Guard
    from shared.settings import Settings

log = logging.getLogger("monitor.kinds")

# The most one check may take (every try included): the kind timers run every minute, and a check must fit a tick.
CHECK_DEADLINE = 55.0

Outcome = Literal["up", "degraded", "down", "error"]
Tone = Literal["ok", "warn", "down", "grey"]


# ------------------------------------------------------------------------------------------ vocabulary


class Common(StrEnum):
    """The statuses every kind has."""

    PENDING = "PENDING"  # never checked
    ERROR = "ERROR"  # the check itself could not run (the operator is told)


@dataclass(frozen=True)
class StatusInfo:
    """How shared code treats one status: healthy (counted as OK), a threshold breach, red (the system is down),
    its severity (for ordering, worst first) and what a visitor of the status page reads."""

    label: str
    tone: Tone
    severity: int
    healthy: bool = False
    breach: bool = False
    red: bool = False


def healthy(label: str = "Operational") -> StatusInfo:
    return StatusInfo(label, "ok", 0, healthy=True)


def warning(label: str, severity: int = 30, breach: bool = False) -> StatusInfo:
    return StatusInfo(label, "warn", severity, breach=breach)


def red(label: str, severity: int = 100, breach: bool = False) -> StatusInfo:
    return StatusInfo(label, "down", severity, breach=breach, red=True)


COMMON: dict[str, StatusInfo] = {
    Common.PENDING.value: StatusInfo("Pending", "grey", 10),
    Common.ERROR.value: StatusInfo("No data", "grey", 70),
}


class Vocabulary:
    """A kind's statuses: its own enum members plus PENDING and ERROR."""

    def __init__(self, statuses: type[StrEnum], info: dict[str, StatusInfo]) -> None:
        missing = {m.value for m in statuses} - set(info) - set(COMMON)
        if missing:
            raise ValueError(f"no StatusInfo for {sorted(missing)}")
        self.enum = statuses
        self.info = {**COMMON, **info}

    def __contains__(self, status: object) -> bool:
        return status in self.info

    def __iter__(self) -> Iterator[str]:
        return iter(self.info)

    def of(self, status: str) -> StatusInfo:
        return self.info.get(status) or StatusInfo(status.title(), "warn", 50)


# ------------------------------------------------------------------------------------- check and evaluate


@dataclass(slots=True)
class CheckResult:
    """What one check observed. `data` holds the kind's own scalar fields (stored as table properties)."""

    outcome: Outcome
    latency_ms: float | None = None
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    checked_at: datetime | None = None  # when this check started (default: when the batch started)


@dataclass(frozen=True, slots=True)
class OpenDowntime:
    """Open the monitor's downtime window that starts at `started_at` (idempotent: keyed by its start)."""

    started_at: datetime
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class CloseDowntime:
    started_at: datetime
    ended_at: datetime


DowntimeOp = OpenDowntime | CloseDowntime


@dataclass(slots=True)
class Evaluation:
    """What evaluate() decided: the new state, the events to publish and side effects (downtime windows)."""

    state: dict[str, Any]
    status: str
    events: list[Event] = field(default_factory=list)
    ops: list[DowntimeOp] = field(default_factory=list)


class AppStorage(Protocol):
    """The read-only port to the app's own storage account a check may use (application metrics)."""

    async def queue_depth(self, name: str) -> int: ...

    async def count_entities(self, table: str, flt: str | None, limit: int) -> int: ...


@dataclass
class CheckContext:
    """What a check may use: one HTTP session for targets named by monitor definitions (behind the outbound
    guard), one for endpoints named in the operator's settings (WHMCS, InvenTree, Azure), the guard itself (for
    other protocols: shared/outbound/tcp.py), the settings, and a read-only look at the app's storage."""

    http: aiohttp.ClientSession
    trusted_http: aiohttp.ClientSession
    settings: Settings
    app_storage: AppStorage
    concurrency: int = 100
    guard: Guard | None = None


@dataclass(frozen=True)
class Sample:
    """One Prometheus sample a kind contributes: family (declared in `Kind.metrics`), extra labels, value."""

    family: str
    value: float | int | None
    labels: dict[str, str] = field(default_factory=dict)


def as_text(value: Any) -> str:
    """A value for a table cell: "" for None, numbers without a needless ".0"."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


C = TypeVar("C", bound="MonitorBase")


class Kind(Generic[C]):
    """A check type. Subclass it once per kind and register an instance in monitors/__init__.py."""

    name: ClassVar[str]
    model: ClassVar[type[MonitorBase]]  # the kind's Config: its definition, validated
    statuses: ClassVar[Vocabulary]
    title: ClassVar[str] = ""  # plural, for the status page's groups ("Websites")
    unique_field: ClassVar[str | None] = None  # the field a 409 names when unique_keys collide
    unique_means: ClassVar[str | None] = None  # what the 409 says the other monitor does (default "uses this <field>")
    metrics: ClassVar[dict[str, str]] = {}  # Prometheus families this kind adds: name → help
    email_templates: ClassVar[dict[EventType, str]] = {}  # event type → template name (monitors/templates)
    # With several CHECK_LOCATIONS (shared/engine/located.py): the status a monitor has while some of its locations
    # are down but fewer than its quorum (a regional issue); None: the kind is checked from the first location only.
    regional_status: ClassVar[str | None] = None

    def quorum_config(self, cfg: C) -> C:
        """The config the combined verdict of several locations is evaluated with (regional_status set): each
        location's own results were already judged by `evaluate` with `cfg` (its thresholds), so the verdict
        should not be held back a second time."""
        return cfg

    # -- checking ---------------------------------------------------------------------------------------

    async def check(self, cfg: C, ctx: CheckContext) -> CheckResult:
        raise NotImplementedError(f"{self.name}: implement check or check_batch")

    def deadline(self, cfg: C) -> float:
        """Seconds one check may take, all its tries included; the engine ends it there (`timed_out`)."""
        return CHECK_DEADLINE

    def timed_out(self, cfg: C, seconds: float) -> CheckResult:
        """The result of a check the engine ended at its deadline."""
        return CheckResult("error", error=f"the check did not finish within {seconds:g} s")

    async def _one(self, cfg: C, ctx: CheckContext) -> CheckResult:
        started = datetime.now(UTC)
        limit = min(self.deadline(cfg), CHECK_DEADLINE)
        try:
            result = await asyncio.wait_for(self.check(cfg, ctx), limit)
        except TimeoutError:
            result = self.timed_out(cfg, limit)
        except Exception as error:
            log.exception("check of %s monitor %s (%s) failed", self.name, cfg.id, cfg.name)
            result = CheckResult("error", error=f"checker failed: {type(error).__name__}: {error}")
        result.checked_at = result.checked_at or started
        return result

    async def check_batch(self, cfgs: list[C], ctx: CheckContext) -> dict[str, CheckResult]:
        """Every due monitor of a tick at once. By default `check` for each, at most `ctx.concurrency` in flight,
        each ended at its deadline; an exception is that monitor's ERROR result, never the others'. A kind that
        asks one service for many monitors overrides this."""
        return {cfg.id or "": result async for cfg, result in self.check_stream(cfgs, ctx) if result is not None}

    async def check_stream(self, cfgs: list[C], ctx: CheckContext,
                           stop_at: float | None = None) -> AsyncIterator[tuple[C, CheckResult | None]]:
        """(monitor, result) as each check finishes, so the engine settles them as they come. No check starts
        after `stop_at` (time.monotonic()): those come back with None ("not checked"). A kind that overrides
        check_batch is asked once, within the time left."""
        if type(self).check_batch is not Kind.check_batch:
            left = (stop_at - time.monotonic()) if stop_at is not None else CHECK_DEADLINE * 4
            started = datetime.now(UTC)
            try:
                by_id = await asyncio.wait_for(self.check_batch(cfgs, ctx), max(1.0, left))
            except TimeoutError:
                by_id = {c.id or "": CheckResult("error", error=f"the checks did not finish within {left:.0f} s")
                         for c in cfgs}
            for cfg in cfgs:
                result = by_id.get(cfg.id or "") or CheckResult("error", error="checker returned no result")
                result.checked_at = result.checked_at or started
                yield cfg, result
            return
        gate = asyncio.Semaphore(max(1, ctx.concurrency))

        async def one(cfg: C) -> tuple[C, CheckResult | None]:
            async with gate:
                if stop_at is not None and time.monotonic() >= stop_at:
                    return cfg, None
                return cfg, await self._one(cfg, ctx)

        for finished in asyncio.as_completed([one(cfg) for cfg in cfgs]):
            yield await finished

    def evaluate(self, cfg: C, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
        raise NotImplementedError

    def breaker_open(self, cfg: C, state: dict[str, Any] | None) -> bool:
        """While True the monitor is checked at its breaker interval (up/down kinds)."""
        return False

    def breaker_interval(self, cfg: C) -> int | None:
        return None

    # -- what shared code shows ---------------------------------------------------------------------------

    def outbound_targets(self, cfg: C) -> dict[str, str]:
        """field → URL of what the check will connect to (refused at create time when it names an address the
        outbound guard does not allow)."""
        return {}

    def secrets(self, cfg: C) -> list[str]:
        """Values of the definition that are never shown back (masked in public_view): registered with
        shared.secrets when the definition is parsed, so no result, event, e-mail or log line carries them."""
        return []

    def public_view(self, cfg: C) -> dict[str, Any]:
        """The definition as the API shows it (secrets masked)."""
        return cfg.model_dump(mode="json")

    def target(self, cfg: C) -> str:
        """What the monitor watches, in a few words (CLI tables)."""
        return ""

    def public_url(self, cfg: C) -> str | None:
        """A URL a visitor of the status page may see (None: none)."""
        return None

    def result_view(self, row: dict[str, Any]) -> dict[str, Any]:
        """A stored result as the API shows it (the kind may decode its own fields)."""
        return row

    def result_columns(self, row: dict[str, Any]) -> dict[str, str]:
        """The kind's own columns of a result (as `result_view` shows it) in the CLI's `results` and `run` tables,
        column → text. By default the latency, and the HTTP status code when the result has one."""
        latency = row.get("latency_ms")
        columns = {"latency": f"{latency:.0f} ms" if isinstance(latency, (int, float)) else ""}
        if row.get("status_code") is not None:
            columns["http"] = as_text(row["status_code"])
        return columns

    def readings(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        """The metric readings of a latest result for GET /api/v1/metrics; None: this kind has none."""
        return None

    def samples(self, row: dict[str, Any]) -> list[Sample]:
        """Prometheus samples of the monitor's latest result (families from `metrics`)."""
        return []
