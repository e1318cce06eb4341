"""Azure Monitor sources of resource monitors: platform metrics (azure-monitor-querymetrics, the regional batch
endpoint) and log queries (azure-monitor-query), on the run's trusted session with the app's credential."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from monitors.resource.config import ResourceAzureLogSource, ResourceAzureMetricSource
from monitors.resource.sources import CheckError, Cycle, make_metric
from shared.text import clip

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

def make_credential(settings: Any) -> Any:
    """The Azure credential of one check cycle: the app's managed identity in Azure (the user-assigned one of
    AzureWebJobsStorage__clientId, or AZURE_CLIENT_ID), a developer's login locally. Tests replace this."""
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=getattr(settings, "storage_client_id", None))


def metrics_endpoint(region: str) -> str:
    return METRICS_ENDPOINT.format(region=region)


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


async def azure_metric(src: ResourceAzureMetricSource, cycle: Cycle) -> dict[str, Any]:
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


async def azure_log(src: ResourceAzureLogSource, cycle: Cycle) -> dict[str, Any]:
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
