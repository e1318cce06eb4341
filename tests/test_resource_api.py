"""Resource monitors through the HTTP functions (real azure.functions requests), the CLI (a real subprocess), psutil
for real and Azurite (issue 13, items 13–14):

- `disk: null` means "not watched": a memory-only local monitor can be made, from the API and the CLI, and checked;
- `metrics` is JSON (a list of objects) in every answer that carries a result — run-now, a kind run, the results
  pages, GET /metrics — never a JSON string inside JSON, although Table Storage keeps it as one string.
"""

from __future__ import annotations

import json
import os
from typing import Any

from apphelp import call, functions, post_monitor, request, results, run_now
from prometheus_client.parser import text_string_to_metric_families
from test_cli import monitors_cli

from shared.storage import Store

METRIC_FIELDS = {"name", "value", "unit", "status", "warn", "alert", "direction"}


def metric_list(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`metrics` of an answer: a JSON list of metric objects (by name), never a string."""
    metrics = answer["metrics"]
    assert isinstance(metrics, list), f"metrics is a {type(metrics).__name__}: {metrics!r}"
    assert all(isinstance(m, dict) and set(m) >= METRIC_FIELDS for m in metrics), metrics
    return {m["name"]: m for m in metrics}


# ------------------------------------------------------------------------------------- 13: disk: null


async def test_a_memory_only_local_monitor_is_made_and_checked(settings):
    status, made = await post_monitor({"kind": "resource", "name": "Memory", "source": {
        "type": "local", "disk": None, "memory": {"warn": 0.1, "alert": 99.99}}})
    assert status == 201, made
    assert made["source"]["disk"] is None and made["source"]["memory"] == {"warn": 0.1, "alert": 99.99,
                                                                          "direction": "above"}
    mid = made["id"]

    ran = await run_now(mid)
    assert ran["outcome"] == "degraded" and ran["status"] == "WARNING"  # memory in use is above 0.1 %
    measured = metric_list(ran)
    assert list(measured) == ["memory"] and 0 < measured["memory"]["value"] <= 100
    assert ran["memory_pct"] == measured["memory"]["value"] and "disk_pct" not in ran
    assert ran["summary"].startswith("memory ") and "disk" not in ran["summary"]
    [stored] = await results(mid)
    assert metric_list(stored) == measured

    status, readings = await call("metrics", "GET", "v1/metrics")
    assert status == 200 and readings["metrics"] == {"Memory/memory": measured["memory"]["value"]}
    assert readings["statuses"] == {"Memory/memory": "WARNING", "overall": "WARNING"}


async def test_a_local_source_must_watch_something(settings):
    status, body = await post_monitor({"kind": "resource", "name": "Nothing", "source": {
        "type": "local", "disk": None, "memory": None}})  # cpu is null by default
    assert status == 422, body
    details = body["error"]["details"]
    assert sorted(d["field"] for d in details) == ["source.local.cpu", "source.local.disk", "source.local.memory"]
    assert all(d["message"].startswith("nothing to watch") for d in details)
    # cpu alone is something
    status, made = await post_monitor({"kind": "resource", "name": "CPU", "source": {
        "type": "local", "disk": None, "memory": None, "cpu": {"warn": 99, "alert": 100},
        "cpu_interval_seconds": 0.1}})
    assert status == 201, made
    assert list(metric_list(await run_now(made["id"]))) == ["cpu"]


async def test_a_change_can_stop_watching_the_disk(settings):
    status, made = await post_monitor({"kind": "resource", "name": "Server", "source": {"type": "local"}})
    assert status == 201, made
    mid = made["id"]
    assert set(metric_list(await run_now(mid))) == {"disk /", "memory"}
    status, changed = await call("monitor", "PATCH", f"v1/monitors/{mid}",
                                 {"source": {"type": "local", "disk": None}}, route={"monitor_id": mid})
    assert status == 200 and changed["source"]["disk"] is None, changed
    assert set(metric_list(await run_now(mid))) == {"memory"}


def test_the_cli_makes_and_checks_a_memory_only_monitor(storage, tmp_path):
    def cli(*args: str) -> Any:
        done = monitors_cli(*args, cwd=tmp_path, env={**os.environ})
        assert done.returncode == 0, done.stderr
        return done

    made = cli("--json", "add", "resource", "name=Memory only", 'source={"type": "local", "disk": null}')
    view = json.loads(made.stdout)
    assert view["source"]["disk"] is None and view["source"]["memory"] == {"warn": 80.0, "alert": 90.0,
                                                                          "direction": "above"}
    ran = json.loads(cli("--json", "run", view["id"]).stdout)
    assert list(metric_list(ran)) == ["memory"] and ran["status"] in ("OK", "WARNING", "ALERT")
    stored = json.loads(cli("--json", "results", view["id"]).stdout)["items"]
    assert metric_list(stored[0]) == metric_list(ran)


# -------------------------------------------------------------------------- 14: metrics is JSON everywhere


async def test_metrics_are_json_in_every_answer_and_a_string_only_in_storage(settings, storage, env):
    from azure.storage.queue.aio import QueueClient

    env(APP_METRICS_QUEUES="chunks")
    async with QueueClient.from_connection_string(storage, "chunks") as queue:
        await queue.create_queue()
        for _ in range(4):
            await queue.send_message("chunk")
    ids = {}
    for name, source in (("Server", {"type": "local", "disk": {"warn": 99.98, "alert": 99.99}}),
                         ("Backlog", {"type": "queue_depth", "queue": "chunks", "warn": 3, "alert": 6})):
        status, made = await post_monitor({"kind": "resource", "name": name, "source": source})
        assert status == 201, made
        ids[name] = made["id"]

    ran = await run_now(ids["Backlog"])  # run-now
    assert metric_list(ran)["queue chunks"]["value"] == 4 and ran["value"] == 4 and ran["status"] == "WARNING"
    status, kind_run = await call("kind_action", "POST", "v1/kinds/resource/run",
                                  route={"kind": "resource", "action": "run"})  # a kind run
    assert status == 200 and len(kind_run["results"]) == 2
    by_name = {r["name"]: r for r in kind_run["results"]}
    assert set(metric_list(by_name["Server"])) == {"disk /", "memory"}
    assert metric_list(by_name["Server"])["disk /"]["total_bytes"] > 0

    for name, mid in ids.items():  # the results pages: every row, as JSON
        rows = await results(mid)
        assert len(rows) == (2 if name == "Backlog" else 1)
        for row in rows:
            metric_list(row)
        assert metric_list(rows[0]) == metric_list(by_name[name])
        async with Store.open(settings) as store:  # …while Table Storage holds one string property
            raw = (await store.query_results(mid, limit=1))[0]["metrics"]
        assert isinstance(raw, str) and json.loads(raw) == rows[0]["metrics"]

    status, readings = await call("metrics", "GET", "v1/metrics")  # GET /metrics
    assert status == 200
    for item in readings["monitors"]:
        assert item["details"] == (await results(item["id"]))[0]["metrics"]
        assert item["metrics"] == {m["name"]: m["value"] for m in item["details"]}
    assert readings["metrics"]["Backlog/queue chunks"] == 4

    response = await functions()["prometheus_metrics"](request("GET", "v1/metrics/prometheus"))  # Prometheus
    families = {f.name: f for f in text_string_to_metric_families(response.get_body().decode())}
    values = {(s.labels["name"], s.labels["metric"]): s.value for s in families["resource_metric_value"].samples}
    assert values[("Backlog", "queue chunks")] == 4 and ("Server", "memory") in values
