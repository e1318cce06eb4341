"""Measuring a resource monitor's source: local disk/memory/CPU (psutil), Azure Monitor metrics and log queries,
and application metrics (a queue's depth, the entities of a table matching a filter).

Checks run as one batch per tick (`check_batch`): one Azure credential for every resource monitor due, closed at
the end. psutil runs in a worker thread (CPU % blocks for its interval); the Azure SDK clients (async) ride on the
run's trusted aiohttp session and are closed after each check; the app's storage is read through the read-only
`ctx.app_storage` port.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import datetime, timedelta
from typing import Any

from monitors.contract import CheckContext, CheckResult
from monitors.resource.config import (
    Config,
    ResourceAzureLogSource,
    ResourceAzureMetricSource,
    ResourceLimits,
    ResourceLocalSource,
    ResourceQueueDepthSource,
    ResourceTableCountSource,
)
from monitors.resource.evaluate import OUTCOMES, encode_metrics, summary, worst
from shared.errors import StorageError
from shared.text import clip, one_line

log = logging.getLogger("monitor.resource")

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


class Cycle:
    """What the checks of one tick share: the run's sessions and storage port, and one Azure credential, made on
    first use and closed by `close`."""

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self._credential: Any = None

    def credential(self) -> Any:
        if self._credential is None:
            self._credential = make_credential(self.ctx.settings)
        return self._credential

    async def close(self) -> None:
        if self._credential is not None:
            try:
                await self._credential.close()
            except Exception:
                log.warning("closing the Azure credential failed", exc_info=True)

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
        except Exception as error:
            log.exception("check of resource monitor %s (%s) failed", cfg.id, cfg.name)
            return CheckResult("error", _ms(started), clip(f"checker failed: {type(error).__name__}: {error}", 1000),
                               {"source": src.type})
        return result_of(src, metrics, _ms(started))


async def check(cfg: Config, ctx: CheckContext) -> CheckResult:
    cycle = Cycle(ctx)
    try:
        return await cycle.check(cfg)
    finally:
        await cycle.close()


async def check_batch(configs: list[Config], ctx: CheckContext) -> dict[str, CheckResult]:
    """Every resource monitor due in this tick, at most `ctx.concurrency` at once, sharing one credential."""
    cycle = Cycle(ctx)
    semaphore = asyncio.Semaphore(max(1, ctx.concurrency))

    async def one(cfg: Config) -> CheckResult:
        async with semaphore:
            return await cycle.check(cfg)

    try:
        results = await asyncio.gather(*(one(cfg) for cfg in configs))
    finally:
        await cycle.close()
    return {cfg.id or "": result for cfg, result in zip(configs, results, strict=True)}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def make_metric(name: str, value: float, unit: str, limits: ResourceLimits, **extra: Any) -> dict[str, Any]:
    value = round(float(value), 4)
    return {"name": name, "value": value, "unit": unit, "status": limits.level(value),
            "warn": limits.warn, "alert": limits.alert, "direction": limits.direction, **extra}


def result_of(src: Any, metrics: list[dict[str, Any]], latency: float) -> CheckResult:
    overall = worst(m["status"] for m in metrics)
    data: dict[str, Any] = {"source": src.type, "overall": overall, "metrics": encode_metrics(metrics),
                            "summary": summary(metrics)}
    if not isinstance(src, ResourceLocalSource):  # one metric
        data["value"] = metrics[0]["value"]
        data["unit"] = metrics[0]["unit"]
    else:  # the scalar fields of the local source (disk_pct, memory_pct, cpu_pct)
        disks = [m["value"] for m in metrics if m.get("path")]
        data["disk_pct"] = max(disks) if disks else None
        for m in metrics:
            if m["name"] in ("memory", "cpu"):
                data[f"{m['name']}_pct"] = m["value"]
    return CheckResult(OUTCOMES[overall], latency, None, {k: v for k, v in data.items() if v is not None})


# -- local (psutil)


def _measure_local(src: ResourceLocalSource) -> list[dict[str, Any]]:
    import psutil

    metrics = []
    for path in src.paths:
        try:
            usage = psutil.disk_usage(path)
        except OSError as error:
            raise CheckError(f"disk {path}: {error.strerror or error}") from None
        metrics.append(make_metric(f"disk {path}", usage.percent, "%", src.disk, path=path, used_bytes=usage.used,
                               free_bytes=usage.free, total_bytes=usage.total))
    if src.memory is not None:
        memory = psutil.virtual_memory()
        metrics.append(make_metric("memory", memory.percent, "%", src.memory, available_bytes=memory.available,
                               total_bytes=memory.total))
    if src.cpu is not None:
        metrics.append(make_metric("cpu", psutil.cpu_percent(interval=src.cpu_interval_seconds), "%", src.cpu))
    return metrics


async def _local(src: ResourceLocalSource) -> list[dict[str, Any]]:
    """psutil in a worker thread: CPU % sleeps for its interval and a hung file system can block statvfs."""
    limit = LOCAL_TIMEOUT + (src.cpu_interval_seconds if src.cpu is not None else 0)
    try:
        return await asyncio.wait_for(asyncio.to_thread(_measure_local, src), timeout=limit)
    except TimeoutError:
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


def _client_options(cycle: Cycle, timeout: float) -> dict[str, Any]:
    from azure.core.pipeline.transport import AioHttpTransport

    transport = AioHttpTransport(session=cycle.ctx.trusted_http, session_owner=False,
                                 connection_verify=CONNECTION_VERIFY, connection_timeout=timeout, read_timeout=timeout)
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
    from azure.core.exceptions import (
        ClientAuthenticationError,
        DecodeError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

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
            response: Any = error.response
            after = response.headers.get("Retry-After") if response is not None else None
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


async def _azure_metric(src: ResourceAzureMetricSource, cycle: Cycle) -> dict[str, Any]:
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
    return make_metric(src.metric, value, _AZURE_UNITS.get(unit, unit), src, aggregation=src.aggregation,
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


async def _azure_log(src: ResourceAzureLogSource, cycle: Cycle) -> dict[str, Any]:
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
    return make_metric(src.label, value, "", src, column=columns[index])


# -- application metrics (the app's storage account)


async def _queue_depth(src: ResourceQueueDepthSource, cycle: Cycle) -> dict[str, Any]:
    try:
        count = await cycle.ctx.app_storage.queue_depth(src.queue)
    except LookupError as error:
        raise CheckError(str(error)) from None
    except StorageError as error:
        raise CheckError(f"queue {src.queue}: {one_line(str(error), 1000)}") from None
    return make_metric(f"queue {src.queue}", count, "messages", src)


async def _table_count(src: ResourceTableCountSource, cycle: Cycle) -> dict[str, Any]:
    try:
        count = await cycle.ctx.app_storage.count_entities(src.table, src.filter, src.max_count)
    except LookupError as error:
        raise CheckError(str(error)) from None
    except StorageError as error:
        raise CheckError(f"table {src.table}: {one_line(str(error), 1000)}") from None
    return make_metric(f"table {src.table}", count, "entities", src, capped=count >= src.max_count)
