"""Resource monitors end to end: psutil for real, Azure Monitor through a local stand-in that speaks the
SDKs' wire formats over TLS (tests/azure_monitor_fake.py), queue depth and table counts against Azurite, e-mails
through the real mail function to the real SMTP test server, and GET /api/v1/metrics from stored results.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from apphelp import call, functions
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueClient
from azure_monitor_fake import SUBSCRIPTION, VM, WORKSPACE, FakeCredential, azure_ca, azure_monitor  # noqa: F401
from pydantic import ValidationError
from test_email import Host, Run

import monitors
from monitors import resource
from monitors.base import CheckResult
from monitors.resource import azure, sources
from shared import manage
from shared.engine import check_context
from shared.events import EventType
from shared.settings import get_settings
from shared.storage import EVENTS_QUEUE, Store
from shared.web import openapi
from tests.smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures

ALICE, OPS = "alice@example.org", "ops@example.org"
VM_NS = "Microsoft.Compute/virtualMachines"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GB = 1024 ** 3


@pytest.fixture
async def store(settings):
    async with Store.open(settings) as opened:
        yield opened


@pytest.fixture
async def ctx(settings, store):
    """What the engine hands a check: its HTTP sessions, the settings and the app-storage port."""
    async with check_context(settings, store) as made:
        yield made


# ------------------------------------------------------------------------------------------------ helpers


async def add(store: Store, source: dict[str, Any], name: str = "Server", **fields: Any) -> str:
    """Create a resource monitor the way the API does."""
    view = await manage.create_monitor(store, {"kind": "resource", "name": name, "recipients": [ALICE],
                                                "source": source, **fields})
    return view["id"]


async def run(store: Store, mid: str) -> dict[str, Any]:
    return await manage.run_monitor(store, get_settings(), mid)


async def events_of(store: Store, mid: str) -> list[dict[str, Any]]:
    rows = await store.list_events(limit=100, monitor_id=mid)
    return sorted(rows, key=lambda e: e["occurred_at"])


def types(rows: list[dict[str, Any]]) -> list[str]:
    return [r["type"] for r in rows]


def metrics_of(result: dict[str, Any] | CheckResult) -> dict[str, dict[str, Any]]:
    """A check's metrics (stored as a JSON string) or an API answer's (JSON: a list of objects), by name."""
    data = result.data if isinstance(result, CheckResult) else result
    raw = data["metrics"]
    return {m["name"]: m for m in (json.loads(raw) if isinstance(result, CheckResult) else raw)}


def spec(source: dict[str, Any], **fields: Any) -> resource.Config:
    return monitors.parse_spec({"kind": "resource", "id": "f" * 32, "name": "Server", "source": source, **fields})


def queue_cfg(**fields: Any) -> resource.Config:
    return spec({"type": "queue_depth", "queue": "chunks", "warn": 10, "alert": 20}, **fields)


def observed(cfg: resource.Config, *values: float, **extra: Any) -> CheckResult:
    """What a check of `cfg` returns when it measured `values` (one metric per value)."""
    src = cfg.source
    names = ["queue chunks", "second"]
    return sources.result_of(src, [sources.make_metric(names[i], v, "messages", src, **extra)
                                  for i, v in enumerate(values)], 1.0)


def disk_result(cfg: resource.Config, used: int, total: int = 100 * GB) -> CheckResult:
    src = cfg.source
    free = total - used
    return sources.result_of(src, [sources.make_metric("disk /", 100 * used / total, "%", src.disk, path="/",
                                                   used_bytes=used, free_bytes=free, total_bytes=total)], 1.0)


def steady(evaluation: Any, prev: dict[str, Any]) -> bool:
    """What the engine checks before writing: the same state (its own `last_slot` aside) and nothing to send."""
    return evaluation.state == {k: v for k, v in prev.items() if k != "last_slot"} and not evaluation.events


async def deliver(storage: str) -> list[Run]:
    return await Host(storage).drain(EVENTS_QUEUE, "send_event_email")


# --------------------------------------------------------------------------------------------- definitions


@pytest.mark.parametrize(("source", "message"), [
    ({"type": "local", "disk": {"warn": 90, "alert": 80}}, "warn (90) must be below alert (80)"),
    ({"type": "local", "memory": {"warn": 80, "alert": 120}}, "less than or equal to 100"),
    ({"type": "local", "paths": ["data"]}, "'data' is not an absolute path"),
    ({"type": "queue_depth", "queue": "a--b", "warn": 1, "alert": 2}, "two hyphens"),
    ({"type": "queue_depth", "queue": "Chunks", "warn": 1, "alert": 2}, "should match pattern"),
    ({"type": "queue_depth", "queue": "chunks", "warn": 5, "alert": 5}, "warn (5) must be below alert (5)"),
    ({"type": "table_count", "table": "chunks", "warn": 5, "alert": 50, "max_count": 50}, "max_count (50) must"),
    ({"type": "azure_metric", "resource_id": "/subscriptions/x/vm", "region": "westeurope", "metric": "CPU",
      "warn": 1, "alert": 2}, "must be a resource id"),
    ({"type": "azure_metric", "resource_id": VM, "region": "West Europe", "metric": "CPU", "warn": 1, "alert": 2},
     "should match pattern"),
    ({"type": "azure_metric", "resource_id": VM, "region": "westeurope", "metric": "Availability", "warn": 99,
      "alert": 99.9, "direction": "below"}, "with direction below, warn (99) must be above alert (99.9)"),
    ({"type": "azure_log", "workspace_id": "not-a-guid", "query": "x", "warn": 1, "alert": 2},
     "should match pattern"),
    ({"type": "snmp"}, "does not match any of the expected tags"),
])
def test_definitions_are_validated(source, message):
    with pytest.raises(ValidationError) as raised:
        spec(source)
    assert message in str(raised.value)


async def test_an_invalid_definition_is_a_422_with_the_field(settings):
    status, body = await call("monitors", "POST", "v1/monitors", {
        "kind": "resource", "name": "Server", "source": {"type": "local", "disk": {"warn": 95, "alert": 90}}})
    assert status == 422
    (detail,) = body["error"]["details"]
    assert detail["field"].startswith("source.local.disk") and "must be below alert" in detail["message"]


def test_defaults_and_the_metric_namespace_from_the_resource_id():
    local = spec({"type": "local"}).source
    assert local.paths == ["/"] and (local.disk.warn, local.disk.alert) == (80, 90)
    assert local.memory is not None and local.cpu is None
    metric = spec({"type": "azure_metric", "resource_id": VM, "region": "westeurope", "metric": "Percentage CPU",
                   "warn": 80, "alert": 90}).source
    assert metric.metric_namespace == VM_NS and metric.aggregation == "average" and metric.window_minutes == 15
    nested = spec({"type": "azure_metric", "region": "westeurope", "metric": "QueueMessageCount", "warn": 1,
                   "alert": 2, "resource_id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/"
                                              "Microsoft.Storage/storageAccounts/shop/queueServices/default"}).source
    assert nested.metric_namespace == "Microsoft.Storage/storageAccounts/queueServices"
    assert azure.metrics_endpoint("westeurope") == "https://westeurope.metrics.monitor.azure.com"


# ------------------------------------------------------------------------------------------- local (psutil)


async def test_local_disk_and_memory_for_real_warning_and_alert(store, settings):
    disk_now = psutil.disk_usage("/").percent
    if disk_now >= 99.9:
        pytest.skip("the root file system is full; the thresholds below could not give WARNING")
    mid = await add(store, {"type": "local", "paths": ["/"], "disk": {"warn": 0.1, "alert": 99.9},
                            "memory": {"warn": 0.1, "alert": 0.2}})
    first = await run(store, mid)
    assert first["outcome"] == "down" and first["status"] == "ALERT" and first["overall"] == "ALERT"
    measured = metrics_of(first)
    assert set(measured) == {"disk /", "memory"}
    assert measured["disk /"]["status"] == "WARNING" and abs(measured["disk /"]["value"] - disk_now) < 1
    assert measured["disk /"]["total_bytes"] == psutil.disk_usage("/").total
    assert measured["memory"]["status"] == "ALERT" and 0 < measured["memory"]["value"] <= 100
    assert first["disk_pct"] == measured["disk /"]["value"] and first["memory_pct"] == measured["memory"]["value"]
    assert first["events"] == ["RESOURCE_ALERT"]
    (event,) = await events_of(store, mid)
    assert event["severity"] == "critical"
    assert event["message"].startswith("memory at ") and "(alert at 0.2 %)" in event["message"]
    assert "; disk / at " in event["message"] and "(warning at 0.1 %)" in event["message"]

    # the same statuses again: no event, and the state is not even written
    before = await store.get_state("resource", mid)
    second = await run(store, mid)
    assert second["status"] == "ALERT" and second["events"] == []
    assert (await store.get_state("resource", mid)).etag == before.etag
    assert len(await store.query_results(mid)) == 2  # but every check is a result


async def test_cpu_is_measured_in_a_thread_not_on_the_event_loop():
    cfg = spec({"type": "local", "memory": None, "cpu": {"warn": 99.9, "alert": 100}, "cpu_interval_seconds": 0.5})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    result = await resource.check(cfg, SimpleNamespace(http=None, settings=None))
    elapsed = time.perf_counter() - started
    task.cancel()
    assert result.outcome in ("up", "degraded", "down") and elapsed >= 0.5
    cpu = metrics_of(result)["cpu"]["value"]
    assert 0 <= cpu <= 100 and result.data["cpu_pct"] == cpu
    assert ticks >= 10  # the loop kept running while psutil slept for half a second


async def test_a_missing_path_is_a_checker_error():
    result = await resource.check(spec({"type": "local", "paths": ["/no/such/dir"]}),
                                  SimpleNamespace(http=None, settings=None))
    assert result.outcome == "error" and result.error == "disk /no/such/dir: No such file or directory"


async def test_a_forced_disk_alert_sends_one_email_and_one_recovery_email(storage, env, smtp):
    env(**smtp.settings(), ADMIN_EMAIL_RECIPIENTS=OPS, PUBLIC_BASE_URL="https://monitor.example.org")
    settings = get_settings()
    async with Store.open(settings) as store:
        mid = await add(store, {"type": "local", "disk": {"warn": 0.1, "alert": 0.2}, "memory": None},
                        name="Build server")
        statuses = [(await run(store, mid))["status"] for _ in range(3)]
        assert statuses == ["ALERT"] * 3
        assert await deliver(storage) == [Run("ok", 1)]
        (alert,) = smtp.messages
        assert alert.rcpt_tos == [ALICE]
        assert alert.subject.startswith("[RESOURCE ALERT] Build server: disk / at ")
        assert alert.subject.endswith(" % (alert at 0.2 %)")
        for part in (alert.part("plain"), alert.part("html")):
            assert "resource" in part and "critical" in part and "Disk /" in part
            assert "/api/v1/" not in part  # a private monitor's mail links to no page that needs a key

        await manage.update_monitor(store, mid, {"source": {"type": "local", "disk": {"warn": 99.98, "alert": 99.99},
                                                             "memory": None}})
        assert [(await run(store, mid))["status"] for _ in range(2)] == ["OK", "OK"]
        assert await deliver(storage) == [Run("ok", 1)]
        assert types(await events_of(store, mid)) == ["RESOURCE_ALERT", "RESOURCE_RECOVERED"]
    alert, recovered = smtp.messages
    assert recovered.rcpt_tos == [ALICE] and recovered.subject.startswith("[RESOURCE RECOVERED] Build server: disk / "
                                                                          "back to OK at ")
    assert " after " in recovered.subject and "info" in recovered.part("plain")
    assert not smtp.to(OPS)  # nothing for the operator: the checker never failed


# ---------------------------------------------------------------------------------------------- evaluation


def test_status_changes_give_one_event_each_steady_ticks_none_and_reminders_follow_renotify():
    cfg = queue_cfg(renotify_minutes=30)
    prev: dict[str, Any] = {}
    seen = []

    def step(value: float, at: datetime, expect_steady: bool = False) -> Any:
        nonlocal prev
        evaluation = resource.evaluate(cfg, prev, observed(cfg, value), at)
        assert steady(evaluation, prev) == expect_steady, (value, at, evaluation)
        seen.extend((e.type, e.severity, e.message, e.details) for e in evaluation.events)
        prev = {**evaluation.state, "last_slot": at.isoformat()}
        return evaluation

    assert step(5, T0).status == "OK" and not seen  # first check, OK: nothing to say
    assert step(5, T0 + timedelta(minutes=1), expect_steady=True).status == "OK"
    assert step(12, T0 + timedelta(minutes=2)).status == "WARNING"
    step(13, T0 + timedelta(minutes=3), expect_steady=True)  # the value moves, the status does not
    assert step(25, T0 + timedelta(minutes=4)).status == "ALERT"
    step(26, T0 + timedelta(minutes=20), expect_steady=True)
    step(26, T0 + timedelta(minutes=34))  # 30 minutes after the ALERT: a reminder
    step(26, T0 + timedelta(minutes=40), expect_steady=True)
    assert step(15, T0 + timedelta(minutes=41)).status == "WARNING"
    assert step(3, T0 + timedelta(minutes=50)).status == "OK"
    step(3, T0 + timedelta(minutes=120), expect_steady=True)  # OK: no reminders

    assert [(t.value, s) for t, s, _, _ in seen] == [
        ("RESOURCE_WARNING", "warning"), ("RESOURCE_ALERT", "critical"), ("RESOURCE_ALERT", "critical"),
        ("RESOURCE_WARNING", "warning"), ("RESOURCE_RECOVERED", "info")]
    messages = [m for _, _, m, _ in seen]
    assert messages[0] == "queue chunks at 12 messages (warning at 10 messages)"
    assert messages[1] == "queue chunks at 25 messages (alert at 20 messages)"
    assert messages[2] == "Still queue chunks at 26 messages (alert at 20 messages)"
    assert messages[3] == "queue chunks down to WARNING at 15 messages (alert at 20 messages)"
    assert messages[4] == "queue chunks back to OK at 3 messages after 48 min"  # since the first WARNING
    details = [d for _, _, _, d in seen]
    assert details[2]["reminder"] is True and details[2]["since"] == (T0 + timedelta(minutes=4)).isoformat()
    assert details[1]["queue chunks"] == "25 messages — ALERT (warning 10 messages, alert 20 messages)"
    assert details[1]["status"] == "ALERT" and details[1]["previous_status"] == "WARNING"


def test_several_metrics_changing_in_one_check_make_one_event_worst_first():
    cfg = queue_cfg()
    first = resource.evaluate(cfg, {}, observed(cfg, 1, 1), T0)
    both = resource.evaluate(cfg, first.state, observed(cfg, 15, 30), T0 + timedelta(minutes=1))
    (event,) = both.events
    assert event.type == EventType.RESOURCE_ALERT and both.status == "ALERT"
    assert event.message == "second at 30 messages (alert at 20 messages); queue chunks at 15 messages (warning at " \
                            "10 messages)"
    mixed = resource.evaluate(cfg, both.state, observed(cfg, 1, 30), T0 + timedelta(minutes=2))
    (event,) = mixed.events
    assert event.type == EventType.RESOURCE_RECOVERED and mixed.status == "ALERT"
    assert event.message == "queue chunks back to OK at 1 messages after 60 s; second still ALERT at 30 messages"


def test_a_checker_error_goes_to_the_operator_once_and_the_statuses_survive_it():
    cfg = queue_cfg()
    alert = resource.evaluate(cfg, {}, observed(cfg, 25), T0)
    broken = CheckResult("error", 3.0, "throttled by Azure Monitor metrics (HTTP 429, retry after 60 s): slow down")
    first = resource.evaluate(cfg, alert.state, broken, T0 + timedelta(minutes=1))
    again = resource.evaluate(cfg, first.state, broken, T0 + timedelta(minutes=2))
    back = resource.evaluate(cfg, again.state, observed(cfg, 25), T0 + timedelta(minutes=3))
    assert [e.type for e in first.events] == [EventType.MONITOR_ERROR] and first.status == "ERROR"
    assert first.events[0].audience == "operator" and "retry after 60 s" in first.events[0].message
    assert again.events == [] and again.state == first.state
    assert [e.type for e in back.events] == [EventType.MONITOR_ERROR_CLEARED] and back.status == "ALERT"


def test_disk_samples_are_kept_sparse_and_bounded_and_project_the_time_to_full():
    cfg = spec({"type": "local", "memory": None, "disk": {"warn": 70, "alert": 90}})
    prev: dict[str, Any] = {}
    used = 50 * GB
    results = []
    for minute in range(0, 45, 5):  # +1 GB every 10 minutes, checked every 5
        result = disk_result(cfg, used + (minute // 10) * GB)
        evaluation = resource.evaluate(cfg, prev, result, T0 + timedelta(minutes=minute))
        assert steady(evaluation, prev) == (minute % 10 == 5 and minute > 0)  # only a new sample writes the state
        prev = evaluation.state
        results.append(result)
    assert [s[0] for s in prev["samples"]["/"]] == [int((T0 + timedelta(minutes=m)).timestamp())
                                                    for m in range(0, 45, 10)]
    assert "disk_full_in_seconds" not in results[3].data  # 15 min of history: not enough yet
    # at 40 minutes: 54 GB used, 46 GB free, growing 1 GB / 10 min → 460 minutes
    final = results[-1]
    assert final.data["disk_full_in_seconds"] == pytest.approx(460 * 60, rel=0.01)
    assert metrics_of(final)["disk /"]["full_in_seconds"] == final.data["disk_full_in_seconds"]

    # it fills up: the ALERT says when it will be full, in the message and in the details
    alert = resource.evaluate(cfg, prev, disk_result(cfg, 95 * GB), T0 + timedelta(minutes=50))
    (event,) = alert.events
    assert event.type == EventType.RESOURCE_ALERT and "projected full in about " in event.message
    assert event.details["projected_full_in"].startswith("about ") and "full in about" in event.details["disk /"]

    for minute in range(60, 60 + 10 * (resource.MAX_SAMPLES + 5), 10):
        alert = resource.evaluate(cfg, alert.state, disk_result(cfg, 95 * GB), T0 + timedelta(minutes=minute))
    assert len(alert.state["samples"]["/"]) == resource.MAX_SAMPLES
    flat = disk_result(cfg, 95 * GB)
    resource.evaluate(cfg, alert.state, flat, T0 + timedelta(hours=9))
    assert "disk_full_in_seconds" not in flat.data  # not growing: no projection


def test_projection_math():
    hour = 3600
    assert resource.project_full([[0, 10], [hour, 20]], (2 * hour, 30), 100) == 10 * hour
    assert resource.project_full([[0, 10]], (2 * hour, 30), 100) is None  # too few points
    assert resource.project_full([[0, 10], [600, 20]], (1200, 30), 100) is None  # too short a span
    assert resource.project_full([[0, 30], [hour, 20]], (2 * hour, 10), 100) is None  # shrinking


# ------------------------------------------------------------------------------------------- Azure Monitor


def metric_source(**extra: Any) -> dict[str, Any]:
    return {"type": "azure_metric", "resource_id": VM, "region": "westeurope", "metric": "Percentage CPU",
            "warn": 80, "alert": 90, **extra}


async def test_azure_metric_speaks_the_batch_wire_format(azure_monitor, store, settings):
    azure_monitor.add_metric(VM, VM_NS, "Percentage CPU", [40, 60, 85, None])  # the newest grain not in yet
    mid = await add(store, metric_source(), name="web-1")
    result = await run(store, mid)
    assert result["status"] == "WARNING" and result["value"] == 85 and result["unit"] == "%"
    measured = metrics_of(result)["Percentage CPU"]
    assert measured["aggregation"] == "average" and measured["series"] == 1

    (seen,) = azure_monitor.metric_requests()
    assert seen.method == "POST" and seen.path == f"/subscriptions/{SUBSCRIPTION}/metrics:getBatch"
    assert seen.body == {"resourceids": [VM]}
    assert seen.headers["Authorization"] == "Bearer fake-azure-token"
    query = seen.query
    assert query["api-version"] == "2024-02-01" and query["metricnamespace"] == VM_NS
    assert query["metricnames"] == "Percentage CPU" and query["aggregation"] == "average"
    assert query["interval"] == "PT1M" and "filter" not in query
    start, end = (datetime.fromisoformat(query[k].replace("Z", "+00:00")) for k in ("starttime", "endtime"))
    assert end - start == timedelta(minutes=15) and abs((datetime.now(UTC) - end).total_seconds()) < 60
    (credential,) = azure_monitor.credentials
    assert credential.scopes == ["https://metrics.monitor.azure.com/.default"] and credential.closed
    assert types(await events_of(store, mid)) == ["RESOURCE_WARNING"]


@pytest.mark.parametrize(("extra", "value", "status"), [
    ({"reduce": "max"}, 95, "ALERT"),
    ({"reduce": "min"}, 40, "OK"),
    ({"reduce": "mean", "aggregation": "maximum", "window_minutes": 5, "granularity_minutes": 5}, 63.75, "OK"),
    ({"warn": 50, "alert": 30, "direction": "below"}, 45, "WARNING"),  # availability-like: low is bad
])
async def test_azure_metric_reductions_and_direction(azure_monitor, ctx, extra, value, status):
    azure_monitor.add_metric(VM, VM_NS, "Percentage CPU", [40, 95, 75, 45, None])
    result = await resource.check(spec(metric_source(**extra)), ctx)
    assert (result.data["value"], result.data["overall"]) == (value, status)
    assert azure_monitor.metric_requests()[0].query["aggregation"] == extra.get("aggregation", "average")


async def test_several_series_the_worst_counts(azure_monitor, ctx):
    azure_monitor.add_metric(VM, VM_NS, "Percentage CPU", [90, 95], series=3)  # 95, 47.5, 31.7
    result = await resource.check(spec(metric_source(filter="instance eq '*'")), ctx)
    assert result.data["value"] == 95 and metrics_of(result)["Percentage CPU"]["series"] == 3
    assert azure_monitor.metric_requests()[0].query["filter"] == "instance eq '*'"
    low = await resource.check(spec(metric_source(filter="instance eq '*'", warn=50, alert=20, direction="below")), ctx)
    assert round(low.data["value"], 2) == 31.67 and low.data["overall"] == "WARNING"


async def test_throttling_a_short_retry_after_is_waited_for_a_long_one_is_an_error(azure_monitor, ctx):
    azure_monitor.add_metric(VM, VM_NS, "Percentage CPU", [12])
    throttled = {"error": {"code": "TooManyRequests", "message": "Rate limit exceeded"}}
    azure_monitor.fail_next(429, throttled, {"Retry-After": "1"})
    started = time.perf_counter()
    result = await resource.check(spec(metric_source()), ctx)
    assert result.outcome == "up" and result.data["value"] == 12
    assert len(azure_monitor.metric_requests()) == 2 and time.perf_counter() - started >= 1.0

    azure_monitor.fail_next(429, throttled, {"Retry-After": "120"})
    started = time.perf_counter()
    result = await resource.check(spec(metric_source()), ctx)
    assert time.perf_counter() - started < 5 and len(azure_monitor.metric_requests()) == 3  # not waited for
    assert result.outcome == "error"
    assert result.error == "throttled by Azure Monitor metrics (HTTP 429, retry after 120 s): TooManyRequests: " \
                           "Rate limit exceeded"


@pytest.mark.parametrize(("arrange", "expected"), [
    (lambda fake: fake.fail_next(403, {"error": {"code": "AuthorizationFailed", "message": "The client does not "
                                                 "have authorization to perform action"}}),
     "not authorized by Azure Monitor metrics (HTTP 403): the app's identity needs Monitoring Reader"),
    (lambda fake: fake.fail_next(401, {"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}),
     "Azure Monitor metrics refused the app's token (HTTP 401): InvalidAuthenticationToken: expired"),
    (lambda fake: fake.fail_next(200, "<html>gateway says hi</html>"), "malformed reply from Azure Monitor metrics"),
    (lambda fake: fake.fail_next(200, {"values": "nope"}), "malformed reply from Azure Monitor metrics"),
    (lambda fake: fake.fail_next(200, {"values": [{"value": [{"name": "Percentage CPU", "timeseries": []}]}]}),
     "malformed reply from Azure Monitor metrics"),  # a name that is not a LocalizableString
    (lambda fake: fake.fail_next(503, {"error": {"code": "ServiceUnavailable", "message": "try later"}}, times=3),
     "Azure Monitor metrics answered HTTP 503: ServiceUnavailable: try later"),  # after 2 retries
    (lambda fake: fake.add_metric(VM, VM_NS, "Disk Read Bytes", [1.0]),
     "Azure Monitor metrics rejected the query (HTTP 400): BadRequest: Failed to find metric configuration for "
     "provider: Microsoft.Compute, resource Type: virtualMachines, metric: Percentage CPU, Valid metrics: Disk Read "
     "Bytes"),
    (lambda fake: fake.add_metric(VM, "Microsoft.Compute/virtualMachineScaleSets", "Percentage CPU", [1.0]),
     "Azure Monitor metrics rejected the query (HTTP 400): BadRequest: Failed to find metric configuration"),
    (lambda fake: fake.add_metric(VM, VM_NS, "Percentage CPU", [None, None, None]),
     "Azure Monitor metrics: no average data for 'Percentage CPU' of " + VM + " in the last 15 min (empty series)"),
])
async def test_failures_are_checker_errors_with_clear_messages(azure_monitor, ctx, arrange, expected):
    arrange(azure_monitor)
    result = await resource.check(spec(metric_source()), ctx)
    assert result.outcome == "error" and result.error.startswith(expected), result.error
    assert azure_monitor.credentials[0].closed


async def test_no_credential_and_unreachable_endpoints_are_checker_errors(ctx, monkeypatch):
    from azure.identity import CredentialUnavailableError

    class Unavailable(FakeCredential):
        async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token")

    monkeypatch.setattr(azure, "make_credential", lambda settings: Unavailable())
    result = await resource.check(spec(metric_source()), ctx)
    assert result.error.startswith("no Azure credential for Azure Monitor metrics: DefaultAzureCredential failed")

    monkeypatch.setattr(azure, "make_credential", lambda settings: FakeCredential())
    monkeypatch.setattr(azure, "METRICS_ENDPOINT", "https://127.0.0.1:9")  # nothing listens there
    result = await resource.check(spec(metric_source()), ctx)
    assert result.outcome == "error" and result.error.startswith("cannot reach Azure Monitor metrics")


async def test_a_checker_error_reaches_the_operator_once_and_its_end_too(azure_monitor, storage, env, smtp):
    env(**smtp.settings(), ADMIN_EMAIL_RECIPIENTS=OPS)
    async with Store.open(get_settings()) as store:
        mid = await add(store, metric_source(), name="web-1")
        azure_monitor.fail_next(403, {"error": {"code": "AuthorizationFailed", "message": "no role"}}, times=3)
        assert [(await run(store, mid))["status"] for _ in range(3)] == ["ERROR"] * 3
        azure_monitor.add_metric(VM, VM_NS, "Percentage CPU", [10])
        assert (await run(store, mid))["status"] == "OK"
        assert types(await events_of(store, mid)) == ["MONITOR_ERROR", "MONITOR_ERROR_CLEARED"]
        await deliver(storage)
    assert not smtp.to(ALICE)  # the audience does not hear about our problems
    error, cleared = sorted(smtp.to(OPS), key=lambda m: m.subject)
    assert error.subject.startswith("[CHECKER ERROR] web-1: not authorized by Azure Monitor metrics (HTTP 403)")
    assert cleared.subject == "[CHECKER OK] web-1: the checker works again"


def log_source(**extra: Any) -> dict[str, Any]:
    return {"type": "azure_log", "workspace_id": WORKSPACE, "query": "AppRequests | where Success == false | count",
            "warn": 10, "alert": 50, **extra}


async def test_log_query_speaks_the_query_wire_format(azure_monitor, store, settings):
    azure_monitor.set_query_result(WORKSPACE, [("Count", "long")], [[64]])
    mid = await add(store, log_source(label="failed requests"), name="shop logs")
    result = await run(store, mid)
    assert result["status"] == "ALERT" and result["value"] == 64
    assert metrics_of(result)["failed requests"]["column"] == "Count"
    (seen,) = azure_monitor.log_requests()
    assert seen.method == "POST" and seen.path == f"/v1/workspaces/{WORKSPACE}/query"
    assert seen.body["query"] == "AppRequests | where Success == false | count" and seen.body["timespan"] == "PT3600.0S"
    assert seen.headers["Authorization"] == "Bearer fake-azure-token" and seen.headers["Prefer"] == "wait=30"
    assert azure_monitor.credentials[0].scopes == ["https://api.loganalytics.io/.default"]
    (event,) = await events_of(store, mid)
    assert event["type"] == "RESOURCE_ALERT" and event["message"] == "failed requests at 64 (alert at 50)"


@pytest.mark.parametrize(("columns", "rows", "extra", "expected"), [
    ([("Count", "long")], [[3]], {}, 3.0),
    ([("avg_ms", "real")], [[12.5]], {}, 12.5),
    ([("n", "decimal")], [["7.25"]], {}, 7.25),
    ([("Region", "string"), ("p95", "real")], [["eu", 61.0]], {"column": "p95"}, 61.0),
    ([("Count", "long")], [], {}, "the query returned no rows; end it with `| count`"),
    ([("Count", "long")], [[1], [2]], {}, "the query returned 2 rows; it must yield one number"),
    ([("Region", "string"), ("p95", "real")], [["eu", 61.0]], {},
     "the query returned 2 columns (Region, p95); name the one"),
    ([("Count", "long")], [[1]], {"column": "p99"}, "the query has no column 'p99' (columns: Count)"),
    ([("Region", "string")], [["eu"]], {}, "the query's result 'eu' in column 'Region' is not a number"),
    ([("Count", "long")], [[None]], {}, "the query's result None in column 'Count' is not a number"),
])
async def test_log_query_results(azure_monitor, ctx, columns, rows, extra, expected):
    azure_monitor.set_query_result(WORKSPACE, columns, rows)
    result = await resource.check(spec(log_source(**extra)), ctx)
    if isinstance(expected, float):
        assert result.data["value"] == expected and result.outcome != "error"
    else:
        assert result.outcome == "error" and result.error.startswith("Azure Monitor Logs: " + expected), result.error


@pytest.mark.parametrize(("status", "body", "expected"), [
    (400, {"error": {"code": "BadArgumentError", "message": "The request had some invalid properties",
                     "innererror": {"code": "SemanticError", "message": "'AppRequestz' not found"}}},
     "Azure Monitor Logs rejected the query (HTTP 400): BadArgumentError: The request had some invalid properties"),
    (403, {"error": {"code": "InsufficientAccessError", "message": "The provided credentials have insufficient "
                     "access"}}, "not authorized by Azure Monitor Logs (HTTP 403)"),
    (200, {"tables": [{"name": "PrimaryResult", "columns": [{"name": "Count", "type": "long"}], "rows": [[5]]}],
           "error": {"code": "PartialError", "message": "There were some errors when processing your query."}},
     "Azure Monitor Logs: the query returned a partial result: PartialError: There were some errors"),
    (200, {"tables": "nope"}, "malformed reply from Azure Monitor Logs"),
])
async def test_log_query_failures(azure_monitor, ctx, status, body, expected):
    azure_monitor.set_query_result(WORKSPACE, [("Count", "long")], [[1]])
    azure_monitor.fail_next(status, body)
    result = await resource.check(spec(log_source()), ctx)
    assert result.outcome == "error" and result.error.startswith(expected), result.error


async def test_an_unknown_workspace_is_a_checker_error(azure_monitor, ctx):
    result = await resource.check(spec(log_source()), ctx)
    assert result.error == f"Azure Monitor Logs does not know the target (HTTP 404): PathNotFoundError: The " \
                           f"requested path does not exist: workspace {WORKSPACE}"


# ------------------------------------------------------------------------ application metrics (Azurite)


async def test_queue_depth_against_azurite_crosses_the_thresholds(store, storage, env):
    env(APP_METRICS_QUEUES="chunks")
    mid = await add(store, {"type": "queue_depth", "queue": "chunks", "warn": 3, "alert": 6}, name="chunk backlog")
    missing = await run(store, mid)
    assert missing["status"] == "ERROR"
    assert missing["error"] == "queue 'chunks' does not exist in the app's storage account"
    async with QueueClient.from_connection_string(storage, "chunks") as queue:
        await queue.create_queue()
        statuses = []
        for count in (0, 3, 6, 2):
            props = await queue.get_queue_properties()
            for _ in range(count - props.approximate_message_count):
                await queue.send_message("chunk")
            excess = props.approximate_message_count - count
            if excess > 0:
                async for message in queue.receive_messages(max_messages=excess):
                    await queue.delete_message(message)
            result = await run(store, mid)
            assert result["value"] == count
            statuses.append(result["status"])
    assert statuses == ["OK", "WARNING", "ALERT", "OK"]
    assert types(await events_of(store, mid)) == ["MONITOR_ERROR", "MONITOR_ERROR_CLEARED", "RESOURCE_WARNING",
                                                  "RESOURCE_ALERT", "RESOURCE_RECOVERED"]


async def test_table_count_against_azurite_with_a_filter(store, storage, env):
    env(APP_METRICS_TABLES="chunks,chunkz")  # chunkz: listed by mistake, so the check finds no such table
    async with TableServiceClient.from_connection_string(storage) as tables:
        table = await tables.create_table("chunks")
        for i in range(12):
            await table.create_entity({"PartitionKey": "job", "RowKey": f"{i:03}",
                                       "status": "processing" if i < 7 else "done"})
    mid = await add(store, {"type": "table_count", "table": "chunks", "filter": "status eq 'processing'",
                            "warn": 5, "alert": 8}, name="active chunks")
    result = await run(store, mid)
    assert (result["value"], result["status"]) == (7, "WARNING")
    assert metrics_of(result)["table chunks"]["capped"] is False

    everything = await add(store, {"type": "table_count", "table": "chunks", "warn": 5, "alert": 8, "max_count": 10},
                           name="all chunks")
    result = await run(store, everything)
    assert (result["value"], result["status"]) == (10, "ALERT") and metrics_of(result)["table chunks"]["capped"]

    typo = await add(store, {"type": "table_count", "table": "chunkz", "warn": 5, "alert": 8}, name="typo")
    result = await run(store, typo)
    assert result["status"] == "ERROR" and result["error"] == "table 'chunkz' does not exist in the app's storage " \
                                                              "account"
    bad = await add(store, {"type": "table_count", "table": "chunks", "filter": "status eq", "warn": 5, "alert": 8},
                    name="bad filter")
    result = await run(store, bad)
    assert result["status"] == "ERROR" and result["error"].startswith("table chunks: cannot count entities of table")
    async with TableServiceClient.from_connection_string(storage) as tables:
        assert "chunkz" not in [t.name async for t in tables.list_tables()]  # a typo creates nothing


async def test_the_timer_checks_every_kind_of_source_in_one_batch(store, storage, env, azure_monitor):
    env(APP_METRICS_QUEUES="chunks")
    settings = get_settings()
    azure_monitor.add_metric(VM, VM_NS, "Percentage CPU", [10])
    async with QueueClient.from_connection_string(storage, "chunks") as queue:
        await queue.create_queue()
    azure_monitor.set_query_result(WORKSPACE, [("Count", "long")], [[1]])
    ids = {await add(store, {"type": "queue_depth", "queue": "chunks", "warn": 3, "alert": 6}, name="backlog"),
           await add(store, {"type": "local", "memory": None}, name="disk"),
           await add(store, metric_source(), name="web-1"),
           await add(store, log_source(), name="shop logs")}
    summary = await manage.run_kind(store, settings, "resource", trigger="timer")
    assert summary["checked"] == 4 and summary["errors"] == 0
    assert {r["monitor_id"] for r in summary["results"]} == ids
    assert len(azure_monitor.requests) == 2
    assert len(azure_monitor.credentials) == 1 and azure_monitor.credentials[0].closed  # one per cycle, closed


# ----------------------------------------------------------------------------------------- GET /metrics


async def test_metrics_endpoint_serves_stored_results_and_is_valid_when_empty(store, env, monkeypatch):
    env(APP_METRICS_QUEUES="chunks")
    assert await call("metrics", "GET", "v1/metrics") == (200, {
        "metrics": {}, "statuses": {"overall": "UNKNOWN"}, "overall": "UNKNOWN", "last_updated": None,
        "monitors": []})

    server = await add(store, {"type": "local", "paths": ["/"], "disk": {"warn": 99.98, "alert": 99.99},
                               "memory": {"warn": 0.1, "alert": 0.2}}, name="server")
    await add(store, {"type": "queue_depth", "queue": "chunks", "warn": 3, "alert": 6}, name="backlog")
    checked = await run(store, server)
    await add(store, {"type": "local"}, name="never checked")

    def no_measuring(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("GET /metrics must not measure")

    monkeypatch.setattr(psutil, "disk_usage", no_measuring)
    monkeypatch.setattr(psutil, "virtual_memory", no_measuring)
    status, body = await call("metrics", "GET", "v1/metrics")
    assert status == 200
    measured = metrics_of(checked)
    assert body["metrics"] == {"server/disk /": measured["disk /"]["value"],
                               "server/memory": measured["memory"]["value"]}
    assert body["statuses"] == {"server/disk /": "OK", "server/memory": "ALERT", "overall": "ALERT"}
    stored = (await store.query_results(server, limit=1))[0]
    assert body["overall"] == "ALERT" and body["last_updated"] == stored["checked_at"].isoformat()
    by_name = {m["name"]: m for m in body["monitors"]}
    assert list(by_name) == ["backlog", "never checked", "server"]
    assert by_name["server"]["status"] == "ALERT" and by_name["server"]["source"] == "local"
    assert by_name["server"]["statuses"] == {"disk /": "OK", "memory": "ALERT"}
    assert by_name["server"]["details"][0]["total_bytes"] > 0
    assert by_name["backlog"]["status"] == "PENDING" and by_name["backlog"]["metrics"] == {}


def test_the_kind_is_wired_everywhere(settings):
    names = set(functions())
    assert {"resource_timer", "metrics"} <= names
    doc = openapi.document()
    assert "/api/v1/metrics" in doc["paths"] and "ResourceMonitor" in doc["components"]["schemas"]
    assert {"RESOURCE_WARNING", "RESOURCE_ALERT", "RESOURCE_RECOVERED"} <= set(EventType.__members__)
