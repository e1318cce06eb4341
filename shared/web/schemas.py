"""The response bodies of the HTTP API as pydantic models — what shared/web/openapi.py documents. The services build
plain dicts; these models describe them (tests/test_openapi.py checks real answers against the document).

Conventions: a field that is always present has no default (`x: T`, `x: T | None` when it may be null); a field
that may be absent has the default None and `Absent` (`x: T | Absent = None`: not required, never null). `Strict`
bodies allow no other fields; `Open` ones do (a kind's own fields, structures that grow). Imported by
shared.web.openapi.document() only: `monitor_models()` imports every kind's module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache, reduce
from operator import or_
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model
from pydantic.json_schema import SkipJsonSchema

from monitors import KINDS
from shared.events import DeliveryStatus, EventType, Severity
from shared.manage.history import WINDOWS

Absent = SkipJsonSchema[None]  # `x: T | Absent = None`: the field may be missing, and is never null
Outcome = Literal["up", "degraded", "down", "error"]
KindName = Annotated[str, Field(description="A monitor kind.", json_schema_extra={"enum": sorted(KINDS)})]
WindowName = Annotated[str, Field(json_schema_extra={"enum": list(WINDOWS)})]


class Strict(BaseModel):
    """A body with exactly these fields."""

    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """A body with these fields and possibly others."""

    model_config = ConfigDict(extra="allow")


def title(kind: str) -> str:
    """The component-name stem of a kind: website → Website, some_kind → SomeKind."""
    return kind.title().replace("_", "")


# ------------------------------------------------------------------------------------------------ errors


class ErrorDetail(Strict):
    field: str = Field(description='The field at fault ("a.b" for nested ones), or "(body)", "(monitor)", ….')
    message: str
    type: str | Absent = Field(None, description="pydantic's error type, for validation errors.")


class ErrorBody(Strict):
    code: str = Field(description="bad_request, validation_error, not_found, conflict, snapshot_in_progress, "
                                  "internal_error, …")
    message: str
    details: list[ErrorDetail]


class Error(Strict):
    """Every error answer of the API."""

    error: ErrorBody


# ------------------------------------------------------------------------------------------------ health


class TimerGap(Strict):
    from_: datetime = Field(alias="from")
    to: datetime
    missed_runs: int
    ongoing: bool


class TimerRun(Strict):
    """The kind's latest timer run (a tick record)."""

    due_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    monitors: int | None
    checked: int | None
    errors: int | None
    events: int | None


class LocationTimer(Strict):
    last_run: TimerRun | None
    next_due: datetime
    runs_24h: int
    gaps_24h: list[TimerGap]


class Timer(LocationTimer):
    paused: bool
    locations: dict[str, LocationTimer] | Absent = Field(None, description="Several locations: each one's timer.")


_timers: dict[str, Any] = {kind: (Timer, ...) for kind in sorted(KINDS)}  # kind names only: no module imported
Timers = create_model("Timers", __base__=Strict, __doc__="Every kind's timer.", **_timers)


class ChannelProblem(Strict):
    error: str
    since: datetime | None


class DeliveryHealth(Strict):
    """Delivery's own health: channels refusing everything, operator notices lost, poison-queue depths."""

    status: Literal["ok", "degraded"]
    channels_failing: dict[str, ChannelProblem]
    notices_lost: int
    last_lost_at: datetime | None
    last_lost: str | None
    poison_queues: dict[str, int]


class HealthFields(Strict):
    status: Literal["ok", "degraded"] = Field(description="degraded: storage answers, but delivery has a problem")
    version: str
    time: datetime
    storage: Literal["ok"]
    email_enabled: bool
    delivery: DeliveryHealth


Health = create_model("Health", __base__=HealthFields, __doc__="Storage is reachable: every kind's timer.",
                      timers=(Timers, ...))


class HealthDegraded(Strict):
    """Storage is unreachable (HTTP 503): no timers."""

    status: Literal["degraded"]
    version: str
    time: datetime
    storage: str = Field(pattern=r"^unreachable: ")
    email_enabled: bool
    timers: dict[str, Timer] = Field(json_schema_extra={"maxProperties": 0})


# ---------------------------------------------------------------------------------------------- monitors


class LocationSeen(Strict):
    status: str
    error: str | None
    stale: bool = Field(description="Its timer has not run for 3 of the monitor's periods: left out of the quorum.")


class MonitorState(Strict):
    """What the engine knows about a monitor now (`status` is one of its kind's statuses)."""

    status: str
    since: datetime | None = Field(description="When the monitor got its current status (null: never checked, or "
                                   "in this status since before the app recorded it for every status).")
    consecutive_failures: int
    down_since: datetime | None
    circuit_open: bool
    error: str | None
    next_check_at: datetime | None = Field(description="The timer tick that will check it next (the same rule the "
                                           "timers select by); null while the monitor is disabled or its kind "
                                           "paused.")
    locations: dict[str, LocationSeen] | Absent = Field(None, description="Several locations: what each one sees.")


class ViewFields(BaseModel):
    """What a monitor view adds to its kind's definition."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)  # model_dump writes every field

    target: str = Field(description="What the monitor watches, in a few words.")
    created_at: datetime
    updated_at: datetime


class UnreadableState(Strict):
    status: Literal["ERROR"]
    error: str


class UnreadableMonitor(Strict):
    """A stored definition that no longer parses (listed so it can be seen and deleted)."""

    id: str
    kind: str | None
    name: str
    enabled: bool | None
    state: UnreadableState


@dataclass(frozen=True)
class MonitorModels:
    requests: dict[str, type[BaseModel]]  # kind → its Config, named "<Kind>Monitor"
    views: dict[str, type[BaseModel]]  # kind → "<Kind>MonitorView": the Config + target, times and state
    spec: type[BaseModel]  # MonitorSpec: the request body of POST /monitors (discriminated by `kind`)
    view: type[BaseModel]  # MonitorView: any kind's view (discriminated by `kind`)
    listing: type[BaseModel]  # MonitorList


def _discriminated(name: str, doc: str, models: list[type[BaseModel]]) -> type[BaseModel]:
    union: Any = reduce(or_, models) if len(models) > 1 else models[0]
    root: Any = RootModel[Annotated[union, Field(discriminator="kind")]] if len(models) > 1 else RootModel[union]
    return type(name, (root,), {"__doc__": doc, "__module__": __name__})


@lru_cache(maxsize=1)
def monitor_models() -> MonitorModels:
    """The per-kind models, generated from `KINDS` (imports every kind's module)."""
    requests: dict[str, type[BaseModel]] = {}
    views: dict[str, type[BaseModel]] = {}
    for kind in sorted(KINDS):
        plugin, stem = KINDS[kind], title(kind)
        config = plugin.model
        requests[kind] = type(f"{stem}Monitor", (config,), {"__doc__": config.__doc__ or f"A {kind} monitor.",
                                                            "__module__": __name__})
        status: Any = Annotated[str, Field(json_schema_extra={"enum": list(plugin.statuses)})]
        state = create_model(f"{stem}MonitorState", __base__=MonitorState, __module__=__name__, status=(status, ...))
        fields: dict[str, Any] = {"id": (str, Field(pattern=r"^[0-9a-f]{32}$")), "state": (state, ...)}
        views[kind] = create_model(f"{stem}MonitorView", __base__=(config, ViewFields), __module__=__name__,
                                   __doc__=f"A {kind} monitor as the API shows it (secrets masked).", **fields)
    spec = _discriminated("MonitorSpec", "A monitor definition; `kind` says which.", list(requests.values()))
    view = _discriminated("MonitorView", "A monitor with its state; `kind` says which.", list(views.values()))
    items: Any = list.__class_getitem__(view | UnreadableMonitor)
    listing = create_model("MonitorList", __base__=Strict, __module__=__name__, items=(items, ...))
    return MonitorModels(requests, views, spec, view, listing)


# ------------------------------------------------------------------------------------------------ history


SLOT = ("The scheduled time the result belongs to: the minute of the timer tick that checked it (a check it "
        "caught up on later keeps its own), or the time of a run by hand.")
CHECKED_AT = "When the check ran (null only for results stored by versions that did not record it)."


class ResultRow(Open):
    """One stored check result; the kind's own fields (status_code, quantity, metrics, …) come with it."""

    slot: datetime = Field(description=SLOT)
    checked_at: datetime | None = Field(description=CHECKED_AT)
    ts: datetime = Field(description="The same as `slot` (the result's key; `next_before` pages by it).")
    outcome: Outcome
    status: str | Absent = Field(None, description="The monitor's status after this result.")
    latency_ms: float | None = Field(description="Null when the check got no answer to time.")
    error: str | None = Field(description="What went wrong, in plain words; null when nothing did.")
    trigger: str | Absent = Field(None, description="timer or manual.")
    maintenance: bool | Absent = Field(None, description="Checked during a maintenance window: not counted in uptime.")
    maintenance_window: str | Absent = Field(None, description="That window's id.")


class ResultsPage(Strict):
    items: list[ResultRow]
    next_before: datetime | None = Field(description="Pass as `before` for the next page; null on the last one.")


class Downtime(Strict):
    started_at: datetime
    ended_at: datetime | Absent = Field(None, description="Missing while the window is open.")
    reason: str | Absent = None
    open: bool
    duration_seconds: int = Field(description="So far, for an open window.")


class DowntimesPage(Strict):
    items: list[Downtime]


class LocationUptime(Strict):
    checks: int
    up: int
    uptime_percent: float | None
    avg_latency_ms: float | None


class Uptime(Strict):
    window: WindowName
    from_: datetime = Field(alias="from")
    to: datetime
    checks: int
    up: int
    uptime_percent: float | None
    avg_latency_ms: float | None
    min_latency_ms: float | None
    max_latency_ms: float | None
    rolled_up_until: datetime | None
    maintenance_checks: int = Field(description="Checks during maintenance windows in the period: not counted "
                                    "in `checks`, `up` or `uptime_percent`.")
    note: str | Absent = Field(None, description='"checks during maintenance are not counted" when there were any.')
    by_location: dict[str, LocationUptime] | Absent = Field(None, description="Several locations: each one's checks.")


class EventRow(Strict):
    """An event as stored, with its delivery status."""

    id: str
    type: EventType
    kind: str = Field(description='The monitor\'s kind, or "alert_rule".')
    monitor_id: str
    monitor_name: str
    severity: Severity
    occurred_at: datetime
    message: str
    details: dict[str, Any]
    delivery: DeliveryStatus
    delivery_error: str | Absent = Field(None, description='"" once delivered without error.')
    next_try_at: datetime | Absent = Field(None, description="While delivery is pending: when it is tried again.")
    attempts: int | Absent = Field(None, description="While delivery is pending: the tries so far.")
    replaces: str | Absent = Field(None, description='A newer event of the monitor with this key makes this one moot '
                                   'if it has not gone out yet ("" or missing: none).')
    held: str | Absent = Field(None, description='Why it was not sent (delivery "held"): "maintenance: <window>" or '
                               '"depends on <parent> which is down".')


class EventsPage(Strict):
    items: list[EventRow]
    next_before: datetime | None = Field(description="Pass as `before` for the next page; null on the last one.")


# ------------------------------------------------------------------------------------------------ running


class RunResult(Open):
    """The result of checking one monitor now, with the kind's own fields."""

    monitor_id: str
    name: str
    slot: datetime = Field(description=SLOT)
    checked_at: datetime | None = Field(description="When the check ran.")
    ts: datetime = Field(description="The same as `slot`.")
    outcome: Outcome
    status: str | None
    latency_ms: float | None
    error: str | None
    events: list[EventType] = Field(description="The events this result caused.")


class KindRun(Strict):
    """Every monitor of a kind checked now."""

    kind: KindName
    trigger: str
    due_at: datetime
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    monitors: int
    checked: int
    errors: int
    events: int
    paused: bool
    storage_requests: int
    location: str | Absent = Field(None, description="Several locations: the one that ran.")
    dispatched: int = Field(description="Batches handed to the checks queue (a fanned-out timer tick; 0 for a run "
                                        "now, which checks everything itself).")
    not_checked: int = Field(description="Due, but not started before the run's time budget ran out.")
    results: list[RunResult]


class Paused(Strict):
    kind: KindName
    paused: bool


# ---------------------------------------------------------------------------------------------- readings


class MonitorReadings(Open):
    """A monitor's latest metric readings (from its latest stored result)."""

    id: str
    name: str
    source: str | None
    enabled: bool
    status: str
    last_updated: datetime | None
    error: str | None
    metrics: dict[str, float]
    statuses: dict[str, str]
    details: list[dict[str, Any]]


@lru_cache(maxsize=1)
def readings_model() -> type[BaseModel]:
    """GET /metrics; `overall` is a status of a kind with readings (imports the kinds' modules)."""
    statuses = {s for k in KINDS if KINDS[k].readings(None) is not None for s in KINDS[k].statuses} - {"PENDING"}
    overall = Annotated[str, Field(json_schema_extra={"enum": [*sorted(statuses), "UNKNOWN"]},
                                   description="The worst status of the enabled, checked monitors (UNKNOWN: none).")]
    return create_model(
        "Readings", __base__=Strict, __module__=__name__,
        metrics=(dict[str, float], Field(description='"{monitor}/{metric}" → latest value')),
        statuses=(dict[str, str], Field(description='"{monitor}/{metric}" → its status; "overall" → `overall`')),
        overall=(overall, ...), last_updated=(datetime | None, ...), monitors=(list[MonitorReadings], ...))
