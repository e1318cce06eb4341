"""Prometheus (issue 13, item 22), scraped through the real function and parsed with prometheus_client's parser:

- statuses are state sets: `monitor_status{status=…}` has a series for every status of the monitor's kind (1 for
  the current one, 0 for the others) and `monitors{kind,status}` one for every status of every kind, so the same
  series exist before and after a status change — only their values change;
- the 24 h uptime is current: hourly rollups up to the watermark plus the raw results after it, as of the scrape
  (no snapshot needed; a check made a moment ago counts).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from apphelp import functions, request
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families
from test_public import get

from monitors import KINDS
from shared import manage, rules, snapshots
from shared.manage.running import run_monitor
from shared.storage import Store, hour_floor


async def scrape() -> dict[str, list]:
    response = await functions()["prometheus_metrics"](request("GET", "v1/metrics/prometheus"))
    assert response.status_code == 200
    return {f.name: f.samples for f in text_string_to_metric_families(response.get_body().decode())}


def series(samples: list) -> set[tuple]:
    return {tuple(sorted(s.labels.items())) for s in samples}


@pytest.fixture
async def target():
    """A local site whose answer the test switches (200 or 503)."""
    state = {"status": 200}

    async def handle(_: web.Request) -> web.Response:
        return web.Response(status=state["status"], text="ok" if state["status"] == 200 else "down")

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/", state
    await runner.cleanup()


async def test_status_series_stay_when_the_status_changes(settings, target):
    url, site = target
    async with Store.open(settings) as store:
        mid = (await manage.create_monitor(store, {"kind": "website", "name": "Shop", "url": url, "attempts": 1,
                                                   "failure_threshold": 1}))["id"]
        pending = await scrape()
        await run_monitor(store, settings, mid)
        before = await scrape()
        site["status"] = 503
        await run_monitor(store, settings, mid)
        after = await scrape()

    def statuses(families: dict) -> dict[str, float]:
        return {s.labels["status"]: s.value for s in families["monitor_status"] if s.labels["id"] == mid}

    vocabulary = set(KINDS["website"].statuses)
    assert vocabulary == {"PENDING", "ERROR", "UP", "DEGRADED", "DOWN"}
    assert statuses(pending) == {s: (1.0 if s == "PENDING" else 0.0) for s in vocabulary}
    assert statuses(before) == {s: (1.0 if s == "UP" else 0.0) for s in vocabulary}
    assert statuses(after) == {s: (1.0 if s == "DOWN" else 0.0) for s in vocabulary}
    # the same series before and after: nothing vanished, nothing new (a query on DOWN has a series all along)
    for name in ("monitor_status", "monitors", "monitor_healthy", "monitor_enabled"):
        assert series(before[name]) == series(after[name]), name
    assert series(pending["monitor_status"]) == series(after["monitor_status"])

    def counts(families: dict) -> dict[tuple[str, str], float]:
        return {(s.labels["kind"], s.labels["status"]): s.value for s in families["monitors"]}

    assert set(counts(before)) == {(kind, status) for kind, plugin in KINDS.items() for status in plugin.statuses}
    assert counts(before)[("website", "UP")] == 1 and counts(before)[("website", "DOWN")] == 0
    assert counts(after)[("website", "UP")] == 0 and counts(after)[("website", "DOWN")] == 1
    assert counts(after)[("stock", "LOW")] == 0  # kinds without monitors are there too, at 0


async def test_the_24h_uptime_is_current_from_rollups_and_the_raw_tail(settings, target):
    url, site = target
    now = datetime.now(UTC)
    async with Store.open(settings) as store:
        mid = (await manage.create_monitor(store, {"kind": "website", "name": "Shop", "url": url, "attempts": 1,
                                                   "failure_threshold": 1}))["id"]
        await run_monitor(store, settings, mid)  # up: no snapshot, no rollup yet, and already counted
        first = await scrape()
        site["status"] = 503
        await run_monitor(store, settings, mid)  # down, a moment later
        second = await scrape()

        watermark = hour_floor(now) - timedelta(hours=1)
        await store.write_rollups(mid, {
            watermark - timedelta(hours=3): {"count": 60, "up": 57, "degraded": 0, "latency_sum": 0.0,
                                             "latency_count": 0, "latency_min": 0.0, "latency_max": 0.0},
            watermark - timedelta(hours=30): {"count": 60, "up": 0, "degraded": 0, "latency_sum": 0.0,
                                              "latency_count": 0, "latency_min": 0.0, "latency_max": 0.0}})
        await store.set_kind_meta("_rollup", rolled_until=watermark)
        third = await scrape()
        again = await scrape()  # what the previous scrape learnt is kept, and nothing is counted twice
        late = datetime.now(UTC) - timedelta(minutes=2)  # a row written after that scrape, for an earlier slot
        await store.write_results([store.result_entity(mid, late, {"outcome": "down", "checked_at": late,
                                                                   "status": "DOWN"})])
        fourth = await scrape()

    def uptime(families: dict) -> float:
        (sample,) = [s for s in families["monitor_uptime_24h_ratio"] if s.labels["id"] == mid]
        return sample.value

    assert uptime(first) == 1.0
    assert uptime(second) == 0.5  # the check a moment ago counts at once (not at the next snapshot)
    assert uptime(third) == pytest.approx(58 / 62)  # 57/60 from the rollup 4 h ago + the tail; 30 h ago is not in
    assert uptime(again) == uptime(third)
    assert uptime(fourth) == pytest.approx(58 / 63)
    assert "snapshot_timestamp_seconds" not in {n for n, s in third.items() if s}  # no snapshot was ever taken


async def test_prometheus_text_parses_with_the_real_parser(settings):
    now = datetime.now(UTC)
    tricky = 'Quote " back\\slash\nnewline'
    async with Store.open(settings) as store:
        site = (await manage.create_monitor(store, {"kind": "website", "name": tricky,
                                                     "url": "https://a.example.com/"}))["id"]
        stock = (await manage.create_monitor(store, {"kind": "stock", "name": "Widget", "product_id": 42}))["id"]
        kit = (await manage.create_monitor(store, {"kind": "parts", "name": "Kit",
                                                    "parts": [{"ipn": "X", "quantity": 1}]}))["id"]
        disk = (await manage.create_monitor(store, {"kind": "resource", "name": "Disk",
                                                     "source": {"type": "local"}}))["id"]
        pending = (await manage.create_monitor(store, {"kind": "website", "name": "Later",
                                                        "url": "https://b.example.com/"}))["id"]
        await store.write_results([
            store.result_entity(site, now, {"outcome": "up", "latency_ms": 123.4, "status_code": 200,
                                            "cert_days_left": 41, "checked_at": now, "status": "UP"}),
            store.result_entity(stock, now, {"outcome": "up", "latency_ms": 80.0, "quantity": 17, "checked_at": now,
                                             "status": "OK"}),
            store.result_entity(kit, now, {"outcome": "up", "latency_ms": 300.0, "lines_short": 2,
                                           "total_missing": 9, "kits_buildable": 3, "checked_at": now,
                                           "status": "SHORT"}),
            store.result_entity(disk, now, {"outcome": "degraded", "latency_ms": 5.0, "checked_at": now,
                                            "status": "WARNING", "metrics": '[{"name":"disk /","value":85.5,'
                                            '"unit":"%","status":"WARNING"},{"name":"memory","value":40.0,'
                                            '"unit":"%","status":"OK"}]'})])
        for kind, mid, status in (("website", site, "UP"), ("stock", stock, "OK"), ("parts", kit, "SHORT"),
                                  ("resource", disk, "WARNING")):
            await store.commit_state(kind, mid, {"status": status}, status, None, [])
        await rules.create_rule(store, {"metric": "threshold_breaches", "operator": ">", "threshold": 0,
                                            "name": "Breaches"})
        await snapshots.take_snapshot(store, settings, persist=True)

    status, text, headers = await get("prometheus_metrics", "v1/metrics/prometheus")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "# HELP monitor_status " in text and "# TYPE monitor_status gauge" in text

    def samples(name: str) -> dict:
        return {(s.labels.get("id"), s.labels.get("metric"), s.labels.get("status")): s.value
                for s in families[name].samples}

    statuses = {s.labels["id"]: (s.labels["status"], s.labels["name"]) for s in families["monitor_status"].samples
                if s.value == 1}  # a state set: one series per status of the kind, 1 for the current one
    assert statuses[site] == ("UP", tricky)  # the label survived escaping and parsing
    assert statuses[pending][0] == "PENDING" and statuses[disk][0] == "WARNING"
    assert samples("monitor_healthy") == {(site, None, None): 1, (stock, None, None): 1, (kit, None, None): 0,
                                          (disk, None, None): 0}
    assert samples("monitor_latency_seconds")[(site, None, None)] == pytest.approx(0.1234)
    assert samples("monitor_last_check_timestamp_seconds")[(site, None, None)] == pytest.approx(now.timestamp())
    assert samples("website_certificate_days_left") == {(site, None, None): 41}
    assert samples("website_http_status_code") == {(site, None, None): 200}
    assert samples("stock_quantity") == {(stock, None, None): 17}
    assert samples("parts_lines_short") == {(kit, None, None): 2}
    assert samples("parts_total_missing") == {(kit, None, None): 9}
    assert samples("parts_kits_buildable") == {(kit, None, None): 3}
    assert samples("resource_metric_value") == {(disk, "disk /", None): 85.5, (disk, "memory", None): 40.0}
    assert samples("resource_metric_level") == {(disk, "disk /", None): 1, (disk, "memory", None): 0}
    uptime = samples("monitor_uptime_24h_ratio")
    assert uptime[(site, None, None)] == 1.0 and uptime[(disk, None, None)] == 1.0  # degraded counts as up
    counts = {(s.labels["kind"], s.labels["status"]): s.value for s in families["monitors"].samples}
    assert counts[("website", "PENDING")] == 1 and counts[("parts", "SHORT")] == 1
    (rule,) = families["alert_rule_firing"].samples
    assert rule.labels["name"] == "Breaches" and rule.value == 1
    assert families["snapshot_timestamp_seconds"].samples[0].value > now.timestamp() - 60
