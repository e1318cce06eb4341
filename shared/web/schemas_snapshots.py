"""The response bodies of snapshots, status, history, time series, bootstrap and alert rules (shared/snapshots,
shared/rules) as pydantic models — see shared/web/schemas.py for the conventions.

A stored snapshot's member lists may be cut to fit its row (shared/snapshots/service.py `fit`): a cut list's
parent then says how many were left out (`monitors_omitted`, `items_omitted`); the counts stay exact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from shared.events import EventType, Severity
from shared.rules.model import AlertRule, Operator
from shared.snapshots.metrics import metric_names
from shared.web.schemas import Absent, KindName, Open, Strict

MetricName = Annotated[str, Field(json_schema_extra={"enum": metric_names()})]
Metrics = Annotated[dict[str, float | None], Field(description="metric name → value (null: unknown).")]
Omitted = Annotated[int | Absent, Field(description="Members left out to fit the stored snapshot.")]


# ----------------------------------------------------------------------------------------------- members


class StatusMember(Strict):
    id: str
    name: str
    kind: str


class KindStatusMember(Strict):
    id: str
    name: str


class DisabledMember(Strict):
    id: str
    name: str
    kind: str
    status: str


class EventMember(Strict):
    id: str | None
    name: str | None
    kind: str | None


class StatusBucket(Strict):
    count: int
    monitors: list[StatusMember]
    monitors_omitted: Omitted = None


class KindStatusBucket(Strict):
    count: int
    monitors: list[KindStatusMember]
    monitors_omitted: Omitted = None


class DisabledBucket(Strict):
    count: int
    monitors: list[DisabledMember]
    monitors_omitted: Omitted = None


class EventBucket(Strict):
    count: int
    monitors: list[EventMember]
    monitors_omitted: Omitted = None


class OpenDowntime(Strict):
    id: str
    name: str
    kind: str
    started_at: datetime
    duration_seconds: int
    reason: str | None
    window_stored: bool = Field(description="false: the state says DOWN but its window is not stored (yet).")


class Breach(Strict):
    id: str
    name: str
    kind: str
    status: str
    since: datetime | None


class CheckerError(Strict):
    id: str
    name: str
    kind: str
    since: datetime | None
    error: str | None
    status_before_error: str | None


class StaleKind(Strict):
    kind: str
    reason: str
    last_run_at: datetime | None
    enabled_monitors: int


class OpenDowntimes(Strict):
    count: int
    items: list[OpenDowntime]
    items_omitted: Omitted = None


class Breaches(Strict):
    count: int
    items: list[Breach]
    items_omitted: Omitted = None


class CheckerErrors(Strict):
    count: int
    items: list[CheckerError]
    items_omitted: Omitted = None


class StaleKinds(Strict):
    count: int
    items: list[StaleKind]
    items_omitted: Omitted = None


# ---------------------------------------------------------------------------------------------- snapshot


class Period(Strict):
    from_: datetime = Field(alias="from")
    to: datetime
    previous_snapshot: str | None


class MonitorCounts(Strict):
    total: int
    enabled: int
    disabled: DisabledBucket


class KindUptimeMember(Strict):
    id: str
    name: str
    checks: int
    up: int
    percent: float | None


class KindUptime(Strict):
    percent: float | None
    checks: int
    up: int
    avg_latency_ms: float | None
    monitors: list[KindUptimeMember]
    monitors_omitted: Omitted = None


class NewestResult(Strict):
    at: datetime | None
    age_seconds: int | None
    trigger: str | None


class KindTimer(Strict):
    paused: bool
    last_run_at: datetime | None
    age_seconds: int | None
    stale: bool
    reason: str | None


class KindView(Strict):
    monitors: int
    enabled: int
    by_status: dict[str, KindStatusBucket]
    uptime_24h: KindUptime
    newest_result: NewestResult
    timer: KindTimer


class SnapshotEvents(Strict):
    count: int
    truncated: bool
    by_type: dict[str, EventBucket] = Field(description="event type → count and monitors")


class SnapshotUptime(Strict):
    percent: float | None
    checks: int
    up: int
    rolled_up_until: datetime | None


class RuleHit(Strict):
    id: str
    name: str
    event_id: str


class RulesRun(Strict):
    """The alert rules evaluated on a stored snapshot."""

    evaluated: int
    fired: list[RuleHit]
    resolved: list[RuleHit]
    error: str | Absent = None


class Snapshot(Open):
    """The whole system at one moment; every number names what it counted. Later schema versions may add fields."""

    schema_version: int
    id: str | None = Field(description="The stored row's key; null when not stored.")
    taken_at: datetime
    persisted: bool
    coalesced: bool | Absent = Field(None, description="Built by a concurrent build this one waited for.")
    period: Period
    monitors: MonitorCounts
    by_status: dict[str, StatusBucket] = Field(description="status → the enabled monitors in it")
    kinds: dict[str, KindView]
    open_downtimes: OpenDowntimes
    threshold_breaches: Breaches
    checker_errors: CheckerErrors
    stale_kinds: StaleKinds
    events: SnapshotEvents
    uptime_24h: SnapshotUptime
    metrics: Metrics
    build_ms: int
    alert_rules: RulesRun | Absent = Field(None, description="Only when built with persist=true.")


class HistoryItem(Strict):
    id: str
    taken_at: datetime
    period_from: datetime | None
    build_ms: int | None
    metrics: Metrics
    snapshot: Snapshot | Absent = Field(None, description="With full=true.")


class History(Strict):
    items: list[HistoryItem]
    next_before: datetime | None = Field(description="Pass as `before` for the next page; null on the last one.")


class Series(Strict):
    metric: MetricName
    unit: str
    points: list[tuple[datetime, float | None]] = Field(description="[taken_at, value] pairs, oldest first.")


class TimeSeries(Strict):
    from_: datetime = Field(alias="from")
    to: datetime
    metrics: list[MetricName]
    count: int = Field(description="Snapshots in the range (points per series).")
    truncated: bool
    series: list[Series]


# ------------------------------------------------------------------------------------------------- status


class LiveMonitor(Strict):
    id: str
    name: str
    kind: str | None
    enabled: bool
    status: str
    since: datetime | None


class Live(Strict):
    monitors: int
    enabled: int
    by_status: dict[str, int]
    items: list[LiveMonitor]


class SnapshotSummary(Strict):
    id: str
    taken_at: datetime
    age_seconds: int
    metrics: Metrics
    open_downtimes: OpenDowntimes
    threshold_breaches: Breaches
    checker_errors: CheckerErrors
    stale_kinds: StaleKinds


class Changed(Strict):
    id: str
    name: str
    kind: str | None
    snapshot_status: str | None
    live_status: str


class FiringRule(Strict):
    id: str
    name: str
    metric: str
    severity: Severity
    since: datetime | None
    value: float | None


class StatusRules(Strict):
    total: int
    firing: list[FiringRule]


class Status(Strict):
    time: datetime
    overall: Literal["empty", "ok", "degraded", "down"]
    live: Live
    snapshot: SnapshotSummary | None = Field(description="The latest stored snapshot; null before the first.")
    changed_since_snapshot: list[Changed]
    alert_rules: StatusRules


# -------------------------------------------------------------------------------------------- alert rules


class RuleState(Strict):
    firing: bool
    consecutive: int = Field(description="Consecutive breaching snapshots.")
    since: datetime | None
    value: float | None = Field(description="The metric in the latest stored snapshot.")


class AlertRuleView(AlertRule):
    """An alert rule with its state."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    name: str = Field(description="The rule's name, or '<metric> <operator> <threshold>'.")
    created_at: datetime
    updated_at: datetime
    state: RuleState


class AlertRuleList(Strict):
    items: list[AlertRuleView]


# ---------------------------------------------------------------------------------------------- bootstrap


class KindSchema(Strict):
    kind: KindName
    schema_: dict[str, Any] = Field(alias="schema", description="The kind's definition as JSON Schema.")


class MetricInfo(Strict):
    name: MetricName
    unit: str
    explained_by: str
    description: str


class Links(Strict):
    status: str
    snapshot: str
    history: str
    timeseries: str
    alert_rules: str
    status_page: str
    prometheus: str
    openapi: str


class Bootstrap(Strict):
    """What a UI needs in one call."""

    version: str
    time: datetime
    kinds: list[KindSchema]
    metrics: list[MetricInfo]
    operators: list[Operator]
    severities: list[Severity]
    event_types: list[EventType]
    snapshot_schedule: str = Field(description="NCRONTAB (with seconds) of the snapshot timer.")
    latest_snapshot: Snapshot | None
    alert_rules: list[AlertRuleView]
    links: Links
