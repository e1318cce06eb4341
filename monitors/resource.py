"""Resources (seed 004): local disk / memory / CPU, Azure Monitor metrics and log queries, and application
metrics (a Storage queue's depth, the entities of a table matching a filter), against warn / alert thresholds.

A monitor watches one `source`; a source yields one or more metrics, each OK / WARNING / ALERT, and the monitor's
status is the worst of them (ERROR when the check itself fails: throttled, refused, a malformed reply, an unknown
metric, an empty series, a missing queue — the operator hears once, through the shared error policy).

- Checks run as one batch per cycle (`check_batch`): one Azure credential and one storage session for every
  resource monitor due, closed at the end. psutil runs in a worker thread (CPU % blocks for its interval); the
  Azure SDK clients (async) ride on the engine's aiohttp session and are closed after each check.
- `evaluate` is pure in the engine's sense (same inputs, same evaluation): one event per tick in which any metric's
  status changes (RESOURCE_ALERT / RESOURCE_WARNING / RESOURCE_RECOVERED), a reminder every `renotify_minutes`
  while not OK, nothing on a steady tick. Disks get a projected time to full from a small sample history kept in
  the state, sampled at most every SAMPLE_EVERY, so a steady monitor writes its state at most that often; like
  the stock kind, it writes that projection into `result.data` too (recomputed on every call), so the stored
  result carries it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Union

import psutil
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from monitors.base import CheckResult, Evaluation, MonitorBase
from monitors.policy import error_policy
from shared.events import Event, EventType
from shared.storage import StorageError, Store, clip

log = logging.getLogger("monitor.resource")

KIND = "resource"
LEVELS = {"OK": 0, "WARNING": 1, "ALERT": 2}
OUTCOMES = {"OK": "up", "WARNING": "degraded", "ALERT": "down"}  # for results and uptime rollups

# Disk projection: a sample of each disk's used bytes at most every SAMPLE_EVERY, the last MAX_SAMPLES kept (3 h);
# a projection needs MIN_SAMPLES points (the current one included) spanning at least MIN_SPAN.
SAMPLE_EVERY = timedelta(minutes=10)
MAX_SAMPLES = 18
MIN_SAMPLES = 3
MIN_SPAN = timedelta(minutes=30)
MAX_PROJECTION = timedelta(days=365)
LOCAL_TIMEOUT = 20.0  # seconds psutil may take (a hung network file system), plus the CPU interval

# Where the Azure SDK clients go: Azure's public cloud. The metrics endpoint is regional (the resource's region,
# "global" for global resources). Deliberately not monitor fields: nobody with a function key may send the app's
# token to a host of their choosing. Tests point these at a local stand-in (tests/azure_monitor_fake.py).
METRICS_ENDPOINT = "https://{region}.metrics.monitor.azure.com"
LOGS_ENDPOINT = "https://api.loganalytics.io"
METRICS_AUDIENCE = "https://metrics.monitor.azure.com"  # the tokens' audiences (the logs client would otherwise
LOGS_AUDIENCE = "https://api.loganalytics.io"           # derive its own from the endpoint)
CONNECTION_VERIFY: bool | str = True  # or a CA bundle path
RETRIES = 2  # per request: connection errors, 500/503/504, and any answer with a short Retry-After
MAX_RETRY_AFTER = 10.0  # seconds; a longer Retry-After ends the check (ERROR), the next check tries again
ROLE_METRICS = "Monitoring Reader on the resource"
ROLE_LOGS = "Log Analytics Reader on the workspace"

_AZURE_UNITS = {"Percent": "%", "Count": "", "Bytes": "B", "Seconds": "s", "MilliSeconds": "ms",
                "CountPerSecond": "/s", "BytesPerSecond": "B/s", "BitsPerSecond": "bit/s", "Unspecified": ""}
_GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_RESOURCE_ID = re.compile(r"^/subscriptions/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                          r"/resourceGroups/[^/]+/providers/([^/]+)/(.+)$", re.I)


# -------------------------------------------------------------------------------------------- config


class ResourceLimits(BaseModel):
    """Thresholds of one metric: WARNING from `warn`, ALERT from `alert` (at or above; at or below when
    `direction` is "below", for metrics where low is bad, such as availability)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    warn: float = Field(..., allow_inf_nan=False, description="WARNING from this value on.")
    alert: float = Field(..., allow_inf_nan=False, description="ALERT from this value on.")
    direction: Literal["above", "below"] = Field("above", description="above: high is bad; below: low is bad.")

    @model_validator(mode="after")
    def _order(self) -> "ResourceLimits":
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
                             description="Absolute paths whose file systems' usage % is watched.")
    disk: ResourcePercentLimits = Field(default_factory=ResourcePercentLimits)
    memory: ResourcePercentLimits | None = Field(default_factory=ResourcePercentLimits,
                                                 description="Memory usage %; null = not watched.")
    cpu: ResourcePercentLimits | None = Field(None, description="CPU usage %; null (default) = not watched.")
    cpu_interval_seconds: float = Field(1.0, ge=0.1, le=10, description="How long CPU usage is measured.")

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
    queue: str = Field(..., pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", description="Queue name.")

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str) -> str:
        if "--" in value:
            raise ValueError("a queue name cannot hold two hyphens in a row")
        return value


class ResourceTableCountSource(ResourceLimits):
    """The number of entities matching an OData filter in a table of the app's storage account (the seed's
    "active chunks": `status eq 'processing'`). Counting reads keys only, up to `max_count`."""

    type: Literal["table_count"]
    table: str = Field(..., pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$", description="Table name.")
    filter: str | None = Field(None, max_length=2000, description="OData filter; empty = every entity.")
    max_count: int = Field(10000, ge=1, le=1_000_000, description="Counting stops here (the value is then ≥ it).")

    @model_validator(mode="after")
    def _cap(self) -> "ResourceTableCountSource":
        if self.direction == "above" and self.max_count <= self.alert:
            raise ValueError(f"max_count ({self.max_count}) must be above alert ({self.alert:g})")
        return self


Source = Annotated[Union[ResourceLocalSource, ResourceAzureMetricSource, ResourceAzureLogSource,
                         ResourceQueueDepthSource, ResourceTableCountSource], Field(discriminator="type")]


class Config(MonitorBase):
    kind: Literal["resource"] = "resource"
    source: Source = Field(..., description="What is measured: local, azure_metric, azure_log, queue_depth or "
                                            "table_count.")


# --------------------------------------------------------------------------------------------- check


class CheckError(Exception):
    """The check could not measure: its message is the ERROR the operator reads."""


def make_credential(settings: Any) -> Any:
    """The Azure credential of one check cycle: the app's managed identity in Azure (the user-assigned one of
    AzureWebJobsStorage__clientId, or AZURE_CLIENT_ID), a developer's login locally. Tests replace this."""
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=getattr(settings, "storage_client_id", None))


def metrics_endpoint(region: str) -> str:
    return METRICS_ENDPOINT.format(region=region)


class _Cycle:
    """What the checks of one cycle share: the engine's HTTP session, one credential and one storage session,
    opened on first use and closed by `close`."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self._credential: Any = None
        self._store: Store | None = None

    def credential(self) -> Any:
        if self._credential is None:
            self._credential = make_credential(self.ctx.settings)
        return self._credential

    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.ctx.settings)
        return self._store

    async def close(self) -> None:
        for thing in (self._credential, self._store):
            if thing is not None:
                try:
                    await thing.close()
                except Exception:  # noqa: BLE001 - closing must not turn results into errors
                    log.warning("closing %s failed", type(thing).__name__, exc_info=True)

    async def check(self, cfg: Config) -> CheckResult:
        src = cfg.source
        started = time.perf_counter()
        try:
            if isinstance(src, ResourceLocalSource):
                metrics = await _local(src)
            elif isinstance(src, ResourceAzureMetricSource):
                metrics = [await _azure_metric(src, self)]
            elif isinstance(src, ResourceAzureLogSource):
                metrics = [await _azure_log(src, self)]
            elif isinstance(src, ResourceQueueDepthSource):
                metrics = [await _queue_depth(src, self)]
            else:
                metrics = [await _table_count(src, self)]
        except CheckError as error:
            return CheckResult("error", _ms(started), clip(str(error), 1000), {"source": src.type})
        except Exception as error:  # noqa: BLE001 - a bug in us: one monitor's ERROR, never the cycle's
            log.exception("check of resource monitor %s (%s) failed", cfg.id, cfg.name)
            return CheckResult("error", _ms(started), clip(f"checker failed: {type(error).__name__}: {error}", 1000),
                               {"source": src.type})
        return _result(src, metrics, _ms(started))


async def check(cfg: Config, ctx: Any) -> CheckResult:
    cycle = _Cycle(ctx)
    try:
        return await cycle.check(cfg)
    finally:
        await cycle.close()


async def check_batch(configs: list[Config], ctx: Any) -> dict[str, CheckResult]:
    """Every resource monitor due in this cycle, at most CHECK_CONCURRENCY at once, sharing one credential and
    one storage session."""
    cycle = _Cycle(ctx)
    semaphore = asyncio.Semaphore(max(1, int(getattr(ctx.settings, "check_concurrency", 16))))

    async def one(cfg: Config) -> CheckResult:
        async with semaphore:
            return await cycle.check(cfg)

    try:
        results = await asyncio.gather(*(one(cfg) for cfg in configs))
    finally:
        await cycle.close()
    return {cfg.id or "": result for cfg, result in zip(configs, results)}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _metric(name: str, value: float, unit: str, limits: ResourceLimits, **extra: Any) -> dict[str, Any]:
    value = round(float(value), 4)
    return {"name": name, "value": value, "unit": unit, "status": limits.level(value),
            "warn": limits.warn, "alert": limits.alert, "direction": limits.direction, **extra}


def _result(src: Any, metrics: list[dict[str, Any]], latency: float) -> CheckResult:
    overall = worst(m["status"] for m in metrics)
    data: dict[str, Any] = {"source": src.type, "overall": overall, "metrics": _encode(metrics),
                            "summary": summary(metrics)}
    if not isinstance(src, ResourceLocalSource):  # one metric
        data["value"] = metrics[0]["value"]
        data["unit"] = metrics[0]["unit"]
    else:  # the seed's scalar fields
        disks = [m["value"] for m in metrics if m.get("path")]
        data["disk_pct"] = max(disks) if disks else None
        for m in metrics:
            if m["name"] in ("memory", "cpu"):
                data[f"{m['name']}_pct"] = m["value"]
    return CheckResult(OUTCOMES[overall], latency, None, {k: v for k, v in data.items() if v is not None})


# -- local (psutil)


def _measure_local(src: ResourceLocalSource) -> list[dict[str, Any]]:
    metrics = []
    for path in src.paths:
        try:
            usage = psutil.disk_usage(path)
        except OSError as error:
            raise CheckError(f"disk {path}: {error.strerror or error}") from None
        metrics.append(_metric(f"disk {path}", usage.percent, "%", src.disk, path=path, used_bytes=usage.used,
                               free_bytes=usage.free, total_bytes=usage.total))
    if src.memory is not None:
        memory = psutil.virtual_memory()
        metrics.append(_metric("memory", memory.percent, "%", src.memory, available_bytes=memory.available,
                               total_bytes=memory.total))
    if src.cpu is not None:
        metrics.append(_metric("cpu", psutil.cpu_percent(interval=src.cpu_interval_seconds), "%", src.cpu))
    return metrics


async def _local(src: ResourceLocalSource) -> list[dict[str, Any]]:
    """psutil in a worker thread: CPU % sleeps for its interval and a hung file system can block statvfs."""
    limit = LOCAL_TIMEOUT + (src.cpu_interval_seconds if src.cpu is not None else 0)
    try:
        return await asyncio.wait_for(asyncio.to_thread(_measure_local, src), timeout=limit)
    except (asyncio.TimeoutError, TimeoutError):
        raise CheckError(f"psutil did not answer within {limit:g} s (a hung file system?)") from None


# -- Azure Monitor


def _retry_policy() -> Any:
    from azure.core.pipeline.policies import AsyncRetryPolicy

    class ShortRetryAfter(AsyncRetryPolicy):
        """azure-core's retries, but a Retry-After longer than MAX_RETRY_AFTER is not waited for inside a check:
        the throttling becomes this check's ERROR and the next scheduled check asks again."""

        def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
            after = self.get_retry_after(response)
            if after is not None and after > MAX_RETRY_AFTER:
                return False
            return super().is_retry(settings, response)

    return ShortRetryAfter(retry_total=RETRIES, retry_backoff_factor=0.5, retry_backoff_max=4)


def _client_options(cycle: _Cycle, timeout: float) -> dict[str, Any]:
    from azure.core.pipeline.transport import AioHttpTransport

    transport = AioHttpTransport(session=cycle.ctx.http, session_owner=False, connection_verify=CONNECTION_VERIFY,
                                 connection_timeout=timeout, read_timeout=timeout)
    return {"transport": transport, "retry_policy": _retry_policy()}


def _error_detail(error: Any) -> str:
    odata = getattr(error, "error", None)
    code, message = getattr(odata, "code", None), getattr(odata, "message", None)
    if message:
        return f"{code}: {message}" if code else str(message)
    text = str(getattr(error, "message", None) or error)
    return " ".join(text.split())


def _describe_azure(error: BaseException, service: str, role: str) -> str:
    """An SDK failure as the operator should read it (`role`: what the app's identity needs); raises what is
    neither an Azure nor a reply problem."""
    from azure.core.exceptions import (ClientAuthenticationError, DecodeError, HttpResponseError,
                                       ServiceRequestError, ServiceResponseError)

    if isinstance(error, DecodeError):
        return f"malformed reply from {service}: {_error_detail(error)}"
    if isinstance(error, HttpResponseError):
        status = error.status_code
        detail = clip(_error_detail(error), 600)
        if status is None:
            if isinstance(error, ClientAuthenticationError):
                return f"no Azure credential for {service}: {detail}"
            return f"{service} failed: {detail}"
        if status == 429:
            after = error.response.headers.get("Retry-After") if error.response is not None else None
            return f"throttled by {service} (HTTP 429" + (f", retry after {after} s" if after else "") + f"): {detail}"
        if status == 401:
            return f"{service} refused the app's token (HTTP 401): {detail}"
        if status == 403:
            return f"not authorized by {service} (HTTP 403): the app's identity needs {role}: {detail}"
        if status == 400:
            return f"{service} rejected the query (HTTP 400): {detail}"
        if status == 404:
            return f"{service} does not know the target (HTTP 404): {detail}"
        return f"{service} answered HTTP {status}: {detail}"
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return f"cannot reach {service}: {_error_detail(error)}"
    if isinstance(error, (KeyError, TypeError, ValueError, AttributeError, IndexError)):
        return f"malformed reply from {service}: {type(error).__name__}: {error}"
    raise error


def _points(metric: Any, aggregation: str) -> list[list[tuple[datetime, float]]]:
    """Per time series, its (time, value) points that have a value for `aggregation` (Azure leaves the newest
    grain empty until it is ingested)."""
    series = []
    for element in metric.timeseries or []:
        points = []
        for point in element.data or []:
            value = getattr(point, aggregation)
            if value is not None:
                points.append((point.timestamp, float(value)))
        if points:
            series.append(sorted(points, key=lambda p: p[0]))
    return series


def _reduce(points: list[tuple[datetime, float]], how: str) -> float:
    values = [v for _, v in points]
    if how == "latest":
        return values[-1]
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    return sum(values) / len(values)


async def _azure_metric(src: ResourceAzureMetricSource, cycle: _Cycle) -> dict[str, Any]:
    from azure.monitor.querymetrics.aio import MetricsClient

    service = "Azure Monitor metrics"
    window = timedelta(minutes=src.window_minutes)
    client = MetricsClient(metrics_endpoint(src.region), cycle.credential(), audience=METRICS_AUDIENCE,
                           **_client_options(cycle, src.timeout_seconds))
    async with client:
        try:
            results = await client.query_resources(
                resource_ids=[src.resource_id], metric_namespace=src.metric_namespace, metric_names=[src.metric],
                timespan=window, granularity=timedelta(minutes=src.granularity_minutes),
                aggregations=[src.aggregation], filter=src.filter)
        except Exception as error:  # noqa: BLE001 - classified; anything else is re-raised
            raise CheckError(_describe_azure(error, service, ROLE_METRICS)) from None
    try:
        if len(results) != 1:
            raise ValueError(f"{len(results)} results for one resource")
        found = [m for m in results[0].metrics if str(m.name or "").lower() == src.metric.lower()]
        if not found:
            names = ", ".join(repr(m.name) for m in results[0].metrics) or "none"
            raise CheckError(f"{service} returned no metric {src.metric!r} for {src.resource_id} (metrics returned: "
                             f"{names}): unknown metric name or namespace {src.metric_namespace!r}?")
        metric = found[0]
        series = _points(metric, src.aggregation)
        unit = str(metric.unit or "")
    except CheckError:
        raise
    except Exception as error:  # noqa: BLE001 - the reply's shape was not what the SDK's models describe
        raise CheckError(_describe_azure(error, service, ROLE_METRICS)) from None
    if not series:
        raise CheckError(f"{service}: no {src.aggregation} data for {src.metric!r} of {src.resource_id} in the last "
                         f"{src.window_minutes} min (empty series): is the resource running and emitting it?")
    values = [_reduce(points, src.reduce) for points in series]
    value = min(values) if src.direction == "below" else max(values)
    latest = max(points[-1][0] for points in series)
    return _metric(src.metric, value, _AZURE_UNITS.get(unit, unit), src, aggregation=src.aggregation,
                   reduce=src.reduce, series=len(series),
                   at=latest.isoformat() if isinstance(latest, datetime) else str(latest))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # int, float, Decimal, or KQL's decimal as a string
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


async def _azure_log(src: ResourceAzureLogSource, cycle: _Cycle) -> dict[str, Any]:
    from azure.monitor.query import LogsQueryStatus
    from azure.monitor.query.aio import LogsQueryClient

    service = "Azure Monitor Logs"
    client = LogsQueryClient(cycle.credential(), endpoint=LOGS_ENDPOINT, audience=LOGS_AUDIENCE,
                             **_client_options(cycle, src.timeout_seconds))
    async with client:
        try:
            response = await client.query_workspace(
                src.workspace_id, src.query,
                timespan=timedelta(minutes=src.window_minutes) if src.window_minutes else None,
                server_timeout=max(1, int(src.timeout_seconds)))
        except Exception as error:  # noqa: BLE001 - classified; anything else is re-raised
            raise CheckError(_describe_azure(error, service, ROLE_LOGS)) from None
    try:
        if response.status == LogsQueryStatus.PARTIAL:
            partial = response.partial_error
            raise CheckError(f"{service}: the query returned a partial result: "
                             f"{getattr(partial, 'code', '')}: {getattr(partial, 'message', partial)}")
        tables = response.tables
        if not tables or not tables[0].rows:
            raise CheckError(f"{service}: the query returned no rows; end it with `| count` or `| summarize …` so "
                             "that it yields one number")
        table = tables[0]
        if len(table.rows) > 1:
            raise CheckError(f"{service}: the query returned {len(table.rows)} rows; it must yield one number")
        columns = list(table.columns)
        if src.column is not None:
            if src.column not in columns:
                raise CheckError(f"{service}: the query has no column {src.column!r} (columns: {', '.join(columns)})")
            index = columns.index(src.column)
        elif len(columns) == 1:
            index = 0
        else:
            raise CheckError(f"{service}: the query returned {len(columns)} columns ({', '.join(columns)}); name "
                             "the one to compare in `column`")
        raw = table.rows[0][index]
    except CheckError:
        raise
    except Exception as error:  # noqa: BLE001 - the reply's shape was not what the SDK's models describe
        raise CheckError(_describe_azure(error, service, ROLE_LOGS)) from None
    value = _number(raw)
    if value is None:
        raise CheckError(f"{service}: the query's result {clip(repr(raw), 100)} in column {columns[index]!r} is not "
                         "a number")
    return _metric(src.label, value, "", src, column=columns[index])


# -- application metrics (the app's storage account)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


async def _queue_depth(src: ResourceQueueDepthSource, cycle: _Cycle) -> dict[str, Any]:
    try:
        count = await cycle.store().queue_depth(src.queue)
    except LookupError as error:
        raise CheckError(str(error)) from None
    except StorageError as error:
        raise CheckError(f"queue {src.queue}: {_one_line(error)}") from None
    return _metric(f"queue {src.queue}", count, "messages", src)


async def _table_count(src: ResourceTableCountSource, cycle: _Cycle) -> dict[str, Any]:
    try:
        count = await cycle.store().count_entities(src.table, src.filter, src.max_count)
    except LookupError as error:
        raise CheckError(str(error)) from None
    except StorageError as error:
        raise CheckError(f"table {src.table}: {_one_line(error)}") from None
    return _metric(f"table {src.table}", count, "entities", src, capped=count >= src.max_count)


# ------------------------------------------------------------------------------------------ evaluate


def worst(statuses: Any) -> str:
    return max(statuses, key=lambda s: LEVELS.get(s, 0), default="OK")


def _encode(metrics: list[dict[str, Any]]) -> str:
    return json.dumps(metrics, separators=(",", ":"))


def decode_metrics(raw: Any) -> list[dict[str, Any]]:
    """The `metrics` field of a result (a JSON list) back to dicts; [] when absent or unreadable."""
    if isinstance(raw, list):
        return raw
    try:
        value = json.loads(raw) if raw else []
    except (TypeError, ValueError):
        return []
    return value if isinstance(value, list) else []


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def _ts(dt: datetime) -> int:
    return int(dt.timestamp())


def duration_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def value_text(metric: dict[str, Any]) -> str:
    value, unit = float(metric["value"]), metric.get("unit") or ""
    if unit == "%":
        return f"{value:.1f} %"
    number = str(int(value)) if value.is_integer() else f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"
    return f"{number} {unit}".strip()


def _threshold_text(metric: dict[str, Any], level: str) -> str:
    limit = metric["alert"] if level == "ALERT" else metric["warn"]
    word = "alert" if level == "ALERT" else "warning"
    return f"{word} at {value_text({**metric, 'value': limit})}" if metric.get("direction", "above") == "above" \
        else f"{word} at or below {value_text({**metric, 'value': limit})}"


def project_full(samples: list[list[int]], current: tuple[int, int], free: int) -> float | None:
    """Seconds until a disk is full at the rate its used bytes grew over the samples (least squares over the
    samples and the current point); None without enough history or when it is not growing."""
    points = [(float(t), float(u)) for t, u in samples if t < current[0]] + [(float(current[0]), float(current[1]))]
    if len(points) < MIN_SAMPLES or points[-1][0] - points[0][0] < MIN_SPAN.total_seconds():
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_u = sum(u for _, u in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var <= 0:
        return None
    slope = sum((t - mean_t) * (u - mean_u) for t, u in points) / var  # bytes per second
    if slope <= 0:
        return None
    seconds = max(0.0, free) / slope
    return round(seconds) if seconds <= MAX_PROJECTION.total_seconds() else None


def _disks(state: dict[str, Any], metrics: list[dict[str, Any]], now: datetime) -> float | None:
    """Keep each disk's sample history in `state` (a sample at most every SAMPLE_EVERY, MAX_SAMPLES kept) and put
    its projected time to full into its metric; returns the soonest."""
    history: dict[str, list[list[int]]] = state.get("samples") or {}
    kept: dict[str, list[list[int]]] = {}
    soonest: float | None = None
    stamp = _ts(now)
    for metric in metrics:
        path = metric.get("path")
        metric.pop("full_in_seconds", None)
        if not path or metric.get("used_bytes") is None:
            continue
        samples = [list(s) for s in history.get(path, [])]
        if not samples or stamp - samples[-1][0] >= SAMPLE_EVERY.total_seconds():
            samples = [*samples, [stamp, int(metric["used_bytes"])]][-MAX_SAMPLES:]
        kept[path] = samples
        seconds = project_full(samples, (stamp, int(metric["used_bytes"])), int(metric.get("free_bytes") or 0))
        if seconds is not None:
            metric["full_in_seconds"] = seconds
            soonest = seconds if soonest is None else min(soonest, seconds)
    if kept:
        state["samples"] = kept
    else:
        state.pop("samples", None)
    return soonest


def _change_text(metric: dict[str, Any], before: str, since: str | None, now: datetime) -> str:
    name, after = metric["name"], metric["status"]
    if after == "OK":
        text = f"{name} back to OK at {value_text(metric)}"
        if since:
            text += f" after {duration_text((now - datetime.fromisoformat(since)).total_seconds())}"
    elif LEVELS[after] < LEVELS.get(before, 0):
        text = f"{name} down to {after} at {value_text(metric)} ({_threshold_text(metric, 'ALERT')})"
    else:
        text = f"{name} at {value_text(metric)} ({_threshold_text(metric, after)})"
    if metric.get("full_in_seconds") is not None and after != "OK":
        text += f", projected full in about {duration_text(metric['full_in_seconds'])}"
    return text


def _metric_line(metric: dict[str, Any]) -> str:
    line = f"{value_text(metric)} — {metric['status']} (warning {value_text({**metric, 'value': metric['warn']})}, " \
           f"alert {value_text({**metric, 'value': metric['alert']})}"
    line += ", lower is worse)" if metric.get("direction") == "below" else ")"
    if metric.get("full_in_seconds") is not None:
        line += f"; full in about {duration_text(metric['full_in_seconds'])}"
    return line


def summary(metrics: list[dict[str, Any]]) -> str:
    """The metrics that are not OK, worst first (or "all OK")."""
    bad = sorted((m for m in metrics if m["status"] != "OK"), key=lambda m: -LEVELS[m["status"]])
    if not bad:
        return "all OK"
    return "; ".join(f"{m['name']} {value_text(m)} ({m['status']})" for m in bad)


def evaluate(cfg: Config, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
    """Events when a metric's status changes (one per tick, naming every change), reminders while not OK."""
    # `last_slot` is the engine's bookkeeping, not ours: leaving it out keeps an unchanged state equal.
    state = {k: v for k, v in prev.items() if k != "last_slot"} if prev else {"status": "PENDING"}
    events: list[Event] = []
    if error_policy(cfg, KIND, state, result, now, events):
        return Evaluation(state, state["status"], events)

    metrics = decode_metrics(result.data.get("metrics"))
    soonest = _disks(state, metrics, now)
    result.data["metrics"] = _encode(metrics)
    result.data.pop("disk_full_in_seconds", None)
    if soonest is not None:
        result.data["disk_full_in_seconds"] = soonest

    before_status = state.get("status", "PENDING")
    old: dict[str, list[Any]] = state.get("metrics") or {}
    levels: dict[str, list[Any]] = {}
    changes: list[tuple[dict[str, Any], str, str | None]] = []
    for metric in metrics:  # per metric: [status, since when it has not been OK]
        was, since = (old.get(metric["name"]) or ["OK", None])[:2]
        status = metric["status"]
        if status != was:
            changes.append((metric, was, since))
            since = None if status == "OK" else since if was != "OK" else _iso(now)
        levels[metric["name"]] = [status, since]
    state["metrics"] = levels
    overall = worst(m["status"] for m in metrics)

    def event(type_: EventType, severity: str, message: str, **extra: Any) -> None:
        details: dict[str, Any] = {"status": overall, "previous_status": before_status, "source": cfg.source.type}
        details.update({m["name"]: _metric_line(m) for m in metrics})
        if soonest is not None:
            disk = next(m["name"] for m in metrics if m.get("full_in_seconds") == soonest)
            details["projected_full_in"] = f"about {duration_text(soonest)} ({disk}, at its recent growth rate)"
        details.update(extra)
        events.append(Event(type=type_, kind=KIND, monitor_id=cfg.id or "", monitor_name=cfg.name,
                            severity=severity, occurred_at=now, message=message, details=details))

    if changes:
        changes.sort(key=lambda c: -LEVELS[c[0]["status"]])
        texts = [_change_text(m, was, since, now) for m, was, since in changes]
        changed = {m["name"] for m, _, _ in changes}
        still = [f"{m['name']} still {m['status']} at {value_text(m)}" for m in metrics
                 if m["status"] != "OK" and m["name"] not in changed]
        message = "; ".join(texts + still)
        new_levels = {m["status"] for m, _, _ in changes}
        if "ALERT" in new_levels:
            event(EventType.RESOURCE_ALERT, "critical", message)
        elif "WARNING" in new_levels:
            event(EventType.RESOURCE_WARNING, "warning", message)
        else:
            event(EventType.RESOURCE_RECOVERED, "info", message)
        if overall != "OK":
            state["notified_at"] = _iso(now)
    elif overall != "OK" and cfg.renotify_minutes:
        last = state.get("notified_at")
        if last is None or (now - datetime.fromisoformat(last)).total_seconds() >= cfg.renotify_minutes * 60:
            state["notified_at"] = _iso(now)
            bad = sorted((m for m in metrics if m["status"] != "OK"), key=lambda m: -LEVELS[m["status"]])
            message = "Still " + "; ".join(_change_text(m, m["status"], None, now) for m in bad)
            if overall == "ALERT":
                event(EventType.RESOURCE_ALERT, "critical", message, reminder=True, since=state.get("since"))
            else:
                event(EventType.RESOURCE_WARNING, "warning", message, reminder=True, since=state.get("since"))
    if overall == "OK":
        state.pop("notified_at", None)
    if overall != before_status:
        state["since"] = _iso(now)
    state["status"] = overall
    return Evaluation(state, overall, events)


# ------------------------------------------------------------------------------------------- /metrics


def result_view(row: dict[str, Any] | None) -> dict[str, Any]:
    """A stored result (the latest of a monitor) as GET /api/v1/metrics shows it; None = never checked."""
    if row is None:
        return {"status": "PENDING", "last_updated": None, "error": None, "metrics": {}, "statuses": {},
                "details": []}
    metrics = decode_metrics(row.get("metrics"))
    status = row.get("status") or row.get("overall") or ("ERROR" if row.get("outcome") == "error" else "PENDING")
    checked = row.get("checked_at") or row.get("ts")
    return {"status": status,
            "last_updated": checked.isoformat() if isinstance(checked, datetime) else checked,
            "error": row.get("error"),
            "metrics": {m["name"]: m["value"] for m in metrics},
            "statuses": {m["name"]: m["status"] for m in metrics},
            "details": metrics}
