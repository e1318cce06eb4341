"""What a resource monitor watches (its `source`) and the thresholds of its metrics."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from monitors.base import MonitorBase

if TYPE_CHECKING:
    from shared.settings import Settings

_GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_RESOURCE_ID = re.compile(r"^/subscriptions/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                          r"/resourceGroups/[^/]+/providers/([^/]+)/(.+)$", re.I)


# ------------------------------------------------------------------------- application metrics: what may be read

AppMetric = Literal["table", "queue"]
SETTING: dict[AppMetric, str] = {"table": "APP_METRICS_TABLES", "queue": "APP_METRICS_QUEUES"}


@lru_cache(maxsize=2)
def own_names(what: AppMetric) -> frozenset[str]:
    """The app's own tables (lower case: table names are case-insensitive) or queues, with the -poison queues the
    Functions host makes. Never readable through a monitor: definitions hold (masked) secrets, and a filter such as
    `spec ge '…'` would tell them one character at a time."""
    from shared.storage import EVENTS_QUEUE, POISON_QUEUE, TABLES

    if what == "table":
        return frozenset(name.lower() for name in TABLES)
    queues = (EVENTS_QUEUE, POISON_QUEUE)
    return frozenset(queues) | {f"{name}-poison" for name in queues}


def listed(setting: str | None) -> frozenset[str]:
    """The names of an APP_METRICS_* setting (comma-separated; lower case)."""
    return frozenset(part.strip().lower() for part in (setting or "").replace(";", ",").split(",") if part.strip())


def allowed_by(settings: Settings, what: AppMetric) -> frozenset[str]:
    """What the settings let `what` sources read (before the app's own names are taken out)."""
    return listed(settings.app_metrics_tables if what == "table" else settings.app_metrics_queues)


def refusal(what: AppMetric, name: str, allowed: frozenset[str] | None) -> str | None:
    """Why a source may not read table/queue `name`, or None when it may. `allowed`: the operator's list (None when
    the settings are unknown: then only the app's own names are refused)."""
    if name.lower() in own_names(what):
        return (f"{what} {name!r} is one of the app's own {what}s: monitors can never read it (listing it in "
                f"{SETTING[what]} does not change that)")
    if allowed is not None and name.lower() not in allowed:
        return (f"{what} {name!r} is not listed in {SETTING[what]}: add it to that setting (comma-separated names) "
                "to let resource monitors read it")
    return None


def _check_allowed(what: AppMetric, name: str, info: ValidationInfo) -> str:
    """The validator of `table` / `queue` when a definition is written (create, update). A stored definition keeps
    loading whatever the lists say now; its check refuses it (sources.py)."""
    if (info.context or {}).get("stored"):
        return name
    from shared.settings import SettingsError, get_settings

    try:
        allowed: frozenset[str] | None = allowed_by(get_settings(), what)
    except SettingsError:  # parsed outside an app (a script, a unit test): the lists are unknown
        allowed = None
    problem = refusal(what, name, allowed)
    if problem:
        raise ValueError(problem)
    return name


# -------------------------------------------------------------------------------------------- config


class ResourceLimits(BaseModel):
    """Thresholds of one metric: WARNING from `warn`, ALERT from `alert` (at or above; at or below when
    `direction` is "below", for metrics where low is bad, such as availability)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    warn: float = Field(..., allow_inf_nan=False, description="WARNING from this value on.")
    alert: float = Field(..., allow_inf_nan=False, description="ALERT from this value on.")
    direction: Literal["above", "below"] = Field("above", description="above: high is bad; below: low is bad.")

    @model_validator(mode="after")
    def _order(self) -> ResourceLimits:
        if self.direction == "above" and not self.warn < self.alert:
            raise ValueError(f"warn ({self.warn:g}) must be below alert ({self.alert:g})")
        if self.direction == "below" and not self.warn > self.alert:
            raise ValueError(f"with direction below, warn ({self.warn:g}) must be above alert ({self.alert:g})")
        return self

    def level(self, value: float) -> str:
        if self.direction == "below":
            return "ALERT" if value <= self.alert else "WARNING" if value <= self.warn else "OK"
        return "ALERT" if value >= self.alert else "WARNING" if value >= self.warn else "OK"


class ResourcePercentLimits(ResourceLimits):
    """Thresholds in percent (defaults 80 / 90)."""

    warn: float = Field(80.0, ge=0, le=100, allow_inf_nan=False, description="WARNING from this % on.")
    alert: float = Field(90.0, ge=0, le=100, allow_inf_nan=False, description="ALERT from this % on.")
    direction: Literal["above"] = "above"


class ResourceLocalSource(BaseModel):
    """The machine the app runs on (in Azure: the instance that runs the check), with psutil."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: Literal["local"]
    paths: list[str] = Field(default_factory=lambda: ["/"], min_length=1, max_length=20,
                             description="Absolute paths whose file systems' usage % is watched (with `disk`).")
    disk: ResourcePercentLimits | None = Field(default_factory=ResourcePercentLimits,
                                               description="Disk usage % of each of `paths`; null = not watched.")
    memory: ResourcePercentLimits | None = Field(default_factory=ResourcePercentLimits,
                                                 description="Memory usage %; null = not watched.")
    cpu: ResourcePercentLimits | None = Field(None, description="CPU usage %; null (default) = not watched.")
    cpu_interval_seconds: float = Field(1.0, ge=0.1, le=10, description="How long CPU usage is measured.")

    @model_validator(mode="after")
    def _watches_something(self) -> ResourceLocalSource:
        if self.disk is None and self.memory is None and self.cpu is None:
            # one error per field, so a 422 names all three
            error = PydanticCustomError("nothing_watched", "nothing to watch: disk, memory and cpu are all null "
                                        "(give thresholds for at least one)")
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type=error, loc=(name,), input=None) for name in ("disk", "memory", "cpu")])
        return self

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for path in value:
            if not path or len(path) > 1000 or not os.path.isabs(path) or "\x00" in path:
                raise ValueError(f"{path!r} is not an absolute path")
            if path not in out:
                out.append(path)
        return out


class ResourceAzureMetricSource(ResourceLimits):
    """A platform metric of any Azure resource (azure-monitor-querymetrics, the regional metrics endpoint)."""

    type: Literal["azure_metric"]
    resource_id: str = Field(..., max_length=1000, description="/subscriptions/…/resourceGroups/…/providers/…")
    region: str = Field(..., pattern=r"^[a-z0-9]{2,40}$",
                        description="The resource's region, e.g. westeurope (global resources: global).")
    metric: str = Field(..., min_length=1, max_length=200, description='e.g. "Percentage CPU".')
    namespace: str | None = Field(None, max_length=200,
                                  description="Metric namespace; default: the resource type from resource_id.")
    aggregation: Literal["average", "minimum", "maximum", "total", "count"] = "average"
    window_minutes: int = Field(15, ge=1, le=1440, description="How far back the series is read.")
    granularity_minutes: Literal[1, 5, 15, 30, 60, 360, 720, 1440] = Field(1, description="Time grain.")
    reduce: Literal["latest", "max", "min", "mean"] = Field(
        "latest", description="From the series to one value: the latest point with data (default), or max/min/mean.")
    filter: str | None = Field(None, max_length=1000, description="Dimension filter, e.g. \"LUN eq '0'\"; with "
                               "several series the worst one counts.")
    timeout_seconds: float = Field(30.0, gt=0, le=120)

    @field_validator("resource_id")
    @classmethod
    def _resource_id(cls, value: str) -> str:
        match = _RESOURCE_ID.match(value)
        if not match or len(match.group(3).strip("/").split("/")) % 2:
            raise ValueError("must be a resource id: /subscriptions/{guid}/resourceGroups/{group}/providers/"
                             "{namespace}/{type}/{name}")
        return value.rstrip("/")

    @property
    def metric_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        match = _RESOURCE_ID.match(self.resource_id)
        assert match is not None  # validated
        types = match.group(3).strip("/").split("/")[0::2]
        return "/".join([match.group(2), *types])


class ResourceAzureLogSource(ResourceLimits):
    """A KQL query against a Log Analytics workspace whose single numeric result is compared (azure-monitor-query)."""

    type: Literal["azure_log"]
    workspace_id: str = Field(..., pattern=_GUID, description="The workspace id (a GUID).")
    query: str = Field(..., min_length=1, max_length=10000,
                       description="KQL yielding one row, e.g. `AppRequests | where Success == false | count`.")
    column: str | None = Field(None, max_length=200, description="The column to compare when there are several.")
    label: str = Field("query result", min_length=1, max_length=100, description="The metric's name.")
    window_minutes: int | None = Field(60, ge=1, le=43200,
                                       description="Time range of the query; null = the query's own.")
    timeout_seconds: float = Field(30.0, gt=0, le=120)


class ResourceQueueDepthSource(ResourceLimits):
    """The approximate message count of a queue in the app's storage account (e.g. a work backlog)."""

    type: Literal["queue_depth"]
    queue: str = Field(..., pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
                       description="Queue name; must be listed in APP_METRICS_QUEUES (the app's own queues are "
                                   "never readable).")

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str, info: ValidationInfo) -> str:
        if "--" in value:
            raise ValueError("a queue name cannot hold two hyphens in a row")
        return _check_allowed("queue", value, info)


class ResourceTableCountSource(ResourceLimits):
    """The number of entities matching an OData filter in a table of the app's storage account (e.g.
    "active chunks": `status eq 'processing'`). Counting reads keys only, up to `max_count`."""

    type: Literal["table_count"]
    table: str = Field(..., pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$",
                       description="Table name; must be listed in APP_METRICS_TABLES (the app's own tables are "
                                   "never readable).")
    filter: str | None = Field(None, max_length=2000, description="OData filter; empty = every entity.")
    max_count: int = Field(10000, ge=1, le=1_000_000, description="Counting stops here (the value is then ≥ it).")

    @field_validator("table")
    @classmethod
    def _table(cls, value: str, info: ValidationInfo) -> str:
        return _check_allowed("table", value, info)

    @model_validator(mode="after")
    def _cap(self) -> ResourceTableCountSource:
        if self.direction == "above" and self.max_count <= self.alert:
            raise ValueError(f"max_count ({self.max_count}) must be above alert ({self.alert:g})")
        return self


Source = Annotated[ResourceLocalSource | ResourceAzureMetricSource | ResourceAzureLogSource
                   | ResourceQueueDepthSource | ResourceTableCountSource, Field(discriminator="type")]


class Config(MonitorBase):
    kind: Literal["resource"] = "resource"
    source: Source = Field(..., description="What is measured: local, azure_metric, azure_log, queue_depth or "
                                            "table_count.")
