"""Snapshots, status, history, timeseries, bootstrap and alert rules through the real functions, against
real Azurite: monitors seeded through shared/storage.py and the engine (against a real local website), never mocks.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from apphelp import call, functions, request
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from shared import VERSION, engine, manage, rules, snapshots
from shared.events import Event, EventType
from shared.settings import get_settings
from shared.storage import EVENTS_QUEUE, Store, hour_floor
from tests.smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
OPS = "ops@example.org"


@pytest.fixture
async def site():
    """A local website: /ok answers 200, /broken 503."""
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="welcome")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    yield f"http://127.0.0.1:{tcp._server.sockets[0].getsockname()[1]}"
    await runner.cleanup()


async def make(store: Store, **spec) -> str:
    return (await manage.create_monitor(store, spec))["id"]


async def set_state(store: Store, kind: str, mid: str, status: str, **data) -> None:
    row = await store.get_state(kind, mid)
    await store.commit_state(kind, mid, {"status": status, **data}, status, row.etag if row else None, [])


def tick(at: datetime, checked: int) -> dict:
    return {"trigger": "timer", "due_at": at, "started_at": at - timedelta(seconds=1), "finished_at": at,
            "duration_ms": 1000, "monitors": checked, "checked": checked, "errors": 0, "events": 0, "paused": False,
            "storage_requests": 3}


# -------------------------------------------------------------------------------------------- empty state


async def test_every_endpoint_answers_an_empty_system_with_typed_json(settings):
    status, body = await call("status", "GET", "v1/status")
    assert status == 200
    assert body["overall"] == "empty" and body["snapshot"] is None and body["changed_since_snapshot"] == []
    assert body["live"] == {"monitors": 0, "enabled": 0, "by_status": {}, "items": []}
    assert body["alert_rules"] == {"total": 0, "firing": []}

    status, snap = await call("snapshot", "GET", "v1/snapshot")
    assert status == 200 and snap["persisted"] is False and snap["id"] is None
    assert set(snap["metrics"]) == set(snapshots.metric_names())
    assert snap["metrics"]["monitors_total"] == 0 and snap["metrics"]["uptime_24h_percent"] is None
    assert snap["open_downtimes"] == {"count": 0, "items": []} and snap["stale_kinds"]["count"] == 0
    assert snap["kinds"]["website"]["uptime_24h"]["percent"] is None
    assert snap["events"] == {"count": 0, "truncated": False, "by_type": {}}

    assert await call("history", "GET", "v1/history") == (200, {"items": [], "next_before": None})
    status, series = await call("timeseries", "GET", "v1/timeseries", params={"metric": "monitors_down"})
    assert status == 200 and series["series"] == [{"metric": "monitors_down", "unit": "monitors", "points": []}]
    assert await call("alert_rules", "GET", "v1/alert-rules") == (200, {"items": []})

    status, boot = await call("bootstrap", "GET", "v1/bootstrap")
    assert status == 200 and boot["latest_snapshot"] is None and boot["alert_rules"] == []
    assert {k["kind"] for k in boot["kinds"]} >= {"website", "stock", "parts"}
    assert all(k["schema"]["type"] == "object" for k in boot["kinds"])
    assert [m["name"] for m in boot["metrics"]] == snapshots.metric_names()
    assert boot["operators"] == [">", ">=", "<", "<=", "==", "!="] and boot["version"] == VERSION
    assert "ALERT_RULE_FIRING" in boot["event_types"]

    status, stored = await call("snapshot", "POST", "v1/snapshot", params={"persist": "true"})
    assert status == 200 and stored["persisted"] is True and stored["id"]
    assert stored["alert_rules"] == {"evaluated": 0, "fired": [], "resolved": []}


# ----------------------------------------------------------------------------------------- contents


async def test_snapshot_counts_and_names_every_monitor(settings, site):
    async with Store.open(settings) as store:
        shop = await make(store, kind="website", name="Shop", url=f"{site}/ok", attempts=1)
        blog = await make(store, kind="website", name="Blog", url=f"{site}/broken", attempts=1, failure_threshold=1)
        fresh = await make(store, kind="website", name="New site", url=f"{site}/new")
        old = await make(store, kind="website", name="Old site", url=f"{site}/old", enabled=False)
        widget = await make(store, kind="stock", name="Widget stock", product_id=42, threshold_low=5)
        gadget = await make(store, kind="stock", name="Gadget stock", product_id=43)
        kit = await make(store, kind="parts", name="Widget kit", parts=[{"ipn": "MCU-1", "quantity": 1}])
        disk = await make(store, kind="resource", name="Disk", source={"type": "local"})

        first = await snapshots.take_snapshot(store, settings, persist=True)  # the period of the next starts here
        now = datetime.now(UTC)
        await store.save_event(Event(type=EventType.STOCK_INCREASED, kind="stock", monitor_id=widget,
                                     monitor_name="Widget stock", occurred_at=now - timedelta(hours=1))
                               .model_dump(mode="json"), "none")  # before the period: not counted

        assert (await engine.run_monitor(store, settings, shop)).status == "UP"
        down = await engine.run_monitor(store, settings, blog)  # 503 → DOWN, downtime window opened by publish
        assert down.status == "DOWN" and down.events == ["MONITOR_DOWN"]
        await set_state(store, "stock", widget, "LOW", since=now.isoformat(), quantity=2, breach="low")
        await set_state(store, "stock", gadget, "ERROR", since=now.isoformat(), error="WHMCS answered HTTP 500",
                        before_error="OK")
        await set_state(store, "parts", kit, "SHORT", since=now.isoformat())
        await set_state(store, "resource", disk, "ALERT", since=now.isoformat())
        await store.save_event(Event(type=EventType.STOCK_DECREASED, kind="stock", monitor_id=widget,
                                     monitor_name="Widget stock").model_dump(mode="json"), "none")

        # 24 h uptime: 21 rolled-up hours of Shop (57 of 60 up) before the watermark, raw results after it
        top = hour_floor(now)
        await store.write_rollups(shop, {top - timedelta(hours=k): {
            "count": 60, "up": 57, "degraded": 0, "latency_sum": 6000.0, "latency_count": 57,
            "latency_min": 50.0, "latency_max": 200.0} for k in range(2, 23)})
        await store.write_rollups(shop, {top - timedelta(days=3): {"count": 60, "up": 0, "degraded": 0}})  # too old
        await store.set_kind_meta("_rollup", rolled_until=top - timedelta(hours=1))

        # timers: website ran just now; stock an hour ago (stale); parts is paused; resource never ran (stale)
        await store.record_tick("website", tick(now, 2))
        await store.set_kind_meta("website", last_tick_at=now)
        await store.record_tick("stock", tick(now - timedelta(hours=1), 2))
        await store.set_kind_meta("stock", last_tick_at=now - timedelta(hours=1))
        await store.set_kind_meta("parts", paused=True)

    status, snap = await call("snapshot", "POST", "v1/snapshot", params={"persist": "true"})
    assert status == 200, snap
    names = {s: [m["name"] for m in b["monitors"]] for s, b in snap["by_status"].items()}
    assert names == {"DOWN": ["Blog"], "ALERT": ["Disk"], "ERROR": ["Gadget stock"], "SHORT": ["Widget kit"],
                     "LOW": ["Widget stock"], "PENDING": ["New site"], "UP": ["Shop"]}
    assert list(snap["by_status"]) == ["DOWN", "ALERT", "ERROR", "SHORT", "LOW", "PENDING", "UP"]  # worst first
    assert {m["id"] for b in snap["by_status"].values() for m in b["monitors"]} == \
        {shop, blog, fresh, widget, gadget, kit, disk}
    assert snap["monitors"]["total"] == 8 and snap["monitors"]["enabled"] == 7
    assert [(m["id"], m["status"]) for m in snap["monitors"]["disabled"]["monitors"]] == [(old, "PENDING")]

    (window,) = snap["open_downtimes"]["items"]
    assert window["id"] == blog and window["window_stored"] is True and "503" in window["reason"]
    assert {(b["name"], b["status"]) for b in snap["threshold_breaches"]["items"]} == \
        {("Widget stock", "LOW"), ("Widget kit", "SHORT"), ("Disk", "ALERT")}
    (err,) = snap["checker_errors"]["items"]
    assert err["id"] == gadget and err["error"] == "WHMCS answered HTTP 500" and err["status_before_error"] == "OK"

    stale = {s["kind"]: s["reason"] for s in snap["stale_kinds"]["items"]}
    assert set(stale) == {"stock", "resource"}
    assert stale["resource"] == "its timer has never run" and "last ran 36" in stale["stock"]
    assert snap["kinds"]["parts"]["timer"]["paused"] is True and snap["kinds"]["parts"]["timer"]["stale"] is False
    assert snap["kinds"]["website"]["timer"]["stale"] is False
    assert 0 <= snap["kinds"]["website"]["newest_result"]["age_seconds"] < 60
    assert 3590 <= snap["kinds"]["stock"]["newest_result"]["age_seconds"] < 3700
    assert snap["kinds"]["parts"]["newest_result"]["age_seconds"] is None

    web_uptime = snap["kinds"]["website"]["uptime_24h"]
    checks, up = 21 * 60 + 2, 21 * 57 + 1  # the rollups, plus Shop's and Blog's raw results after the watermark
    assert (web_uptime["checks"], web_uptime["up"]) == (checks, up)
    assert web_uptime["percent"] == round(100 * up / checks, 3)
    assert {m["name"]: (m["checks"], m["up"]) for m in web_uptime["monitors"]} == \
        {"Shop": (21 * 60 + 1, 21 * 57 + 1), "Blog": (1, 0)}
    assert snap["kinds"]["stock"]["uptime_24h"]["percent"] is None

    assert snap["period"]["from"] == first["taken_at"] and snap["period"]["previous_snapshot"] == first["id"]
    assert snap["events"]["count"] == 2
    assert {t: [m["name"] for m in b["monitors"]] for t, b in snap["events"]["by_type"].items()} == \
        {"MONITOR_DOWN": ["Blog"], "STOCK_DECREASED": ["Widget stock"]}

    m = snap["metrics"]
    assert set(m) == set(snapshots.metric_names())
    assert (m["monitors_total"], m["monitors_enabled"], m["monitors_ok"], m["monitors_down"],
            m["monitors_pending"], m["monitors_degraded"]) == (8, 7, 1, 1, 1, 0)
    assert (m["checker_errors"], m["threshold_breaches"], m["open_downtimes"], m["stale_kinds"],
            m["events_in_period"]) == (1, 3, 1, 2, 2)
    assert (m["website_monitors"], m["website_problems"], m["stock_monitors"], m["stock_problems"],
            m["parts_problems"]) == (3, 1, 2, 2, 1)
    assert m["website_uptime_24h_percent"] == web_uptime["percent"] == m["uptime_24h_percent"]
    assert snapshots.explain(snap, "threshold_breaches") == ["Disk", "Widget kit", "Widget stock"]
    assert snapshots.explain(snap, "stock_problems") == ["Gadget stock", "Widget stock"]

    # stored: the history has both, the full record round-trips, /status compares with live states
    status, hist = await call("history", "GET", "v1/history", params={"full": "true"})
    assert [i["id"] for i in hist["items"]] == [snap["id"], first["id"]]
    stored = hist["items"][0]["snapshot"]
    assert stored["by_status"] == snap["by_status"] and stored["metrics"] == snap["metrics"]
    assert hist["items"][0]["metrics"] == snap["metrics"]
    async with Store.open(settings) as store:
        await set_state(store, "stock", widget, "OK", since=datetime.now(UTC).isoformat())
    status, now_status = await call("status", "GET", "v1/status")
    assert now_status["overall"] == "down" and now_status["snapshot"]["id"] == snap["id"]
    assert now_status["live"]["by_status"] == {"DOWN": 1, "ALERT": 1, "ERROR": 1, "SHORT": 1, "PENDING": 1,
                                               "OK": 1, "UP": 1}
    assert now_status["changed_since_snapshot"] == [{"id": widget, "name": "Widget stock", "kind": "stock",
                                                     "snapshot_status": "LOW", "live_status": "OK"}]


def test_a_huge_explanation_is_cut_but_counts_stay_exact():
    members = [{"id": f"{i:032x}", "name": "monitor " + "x" * 200} for i in range(5000)]
    snap = {"by_status": {"UP": {"count": 5000, "monitors": members}}, "metrics": {"monitors_ok": 5000}}
    text = snapshots.fit(snap, budget=200_000)
    assert len(text.encode("utf-16-le")) <= 200_000
    cut = json.loads(text)
    assert cut["by_status"]["UP"]["count"] == 5000 and cut["metrics"]["monitors_ok"] == 5000
    kept = len(cut["by_status"]["UP"]["monitors"])
    assert kept < 5000 and cut["by_status"]["UP"]["monitors_omitted"] == 5000 - kept


# -------------------------------------------------------------------------------------- one at a time


async def test_concurrent_persisted_builds_store_exactly_one(settings, site):
    async with Store.open(settings) as store:
        for n in range(6):
            await make(store, kind="website", name=f"Site {n}", url=f"{site}/ok?n={n}", attempts=1)
    fn = functions()["snapshot"]

    async def build() -> tuple[int, dict]:
        response = await fn(request("POST", "v1/snapshot", params={"persist": "true"}))
        return response.status_code, json.loads(response.get_body())

    (s1, b1), (s2, b2) = await asyncio.gather(build(), build())
    assert (s1, s2) == (200, 200)
    assert b1["id"] == b2["id"] and b1["taken_at"] == b2["taken_at"] and b1["persisted"] and b2["persisted"]
    assert sorted([b1["coalesced"], b2["coalesced"]]) == [False, True]  # one built it, the other waited for it
    status, hist = await call("history", "GET", "v1/history")
    assert [i["id"] for i in hist["items"]] == [b1["id"]]


async def test_a_build_that_cannot_get_the_lease_answers_409_and_stores_nothing(settings):
    async with Store.open(settings) as store:
        assert await store.acquire_lease(snapshots.LEASE, "someone-else", 60)
    response = await functions()["snapshot"](request("POST", "v1/snapshot",
                                                     params={"persist": "true", "wait": "0.3"}))
    body = json.loads(response.get_body())
    assert response.status_code == 409 and response.headers["Retry-After"] == "5"
    assert body["error"]["code"] == "snapshot_in_progress"
    assert "another build holds the snapshot lease" in body["error"]["details"][0]["message"]
    assert (await call("history", "GET", "v1/history"))[1]["items"] == []
    status, body = await call("snapshot", "POST", "v1/snapshot", params={"persist": "true", "wait": "99"})
    assert status == 422 and body["error"]["details"][0]["field"] == "wait"


async def test_an_expired_lease_is_taken_over_and_a_stale_holder_cannot_release_it(settings):
    async with Store.open(settings) as store:
        mine = await store.acquire_lease("t", "a", 60)
        assert mine and await store.acquire_lease("t", "b", 60) is None  # held
        renewed = await store.renew_lease("t", "a", mine, 60)
        assert renewed and renewed != mine
        await store.release_lease("t", mine)  # an old ETag deletes nothing
        assert await store.acquire_lease("t", "b", 60) is None
        await store.release_lease("t", renewed)
        theirs = await store.acquire_lease("t", "b", -1)  # taken, but already expired
        assert theirs
        ours = await store.acquire_lease("t", "c", 60)  # takeover of the expired lease
        assert ours and await store.renew_lease("t", "b", theirs, 60) is None
        await store.release_lease("t", theirs)  # the previous holder cannot delete the new lease
        assert (await store.get_lease("t"))["owner"] == "c"

        assert await store.acquire_lease(snapshots.LEASE, "crashed", -1)  # a crashed build's expired lease
    status, body = await call("snapshot", "POST", "v1/snapshot", params={"persist": "true", "wait": "0"})
    assert status == 200 and body["persisted"] is True
    async with Store.open(settings) as store:
        assert await store.get_lease(snapshots.LEASE) is None  # released after the build


async def test_the_snapshot_timer_stores_a_snapshot(settings):
    from azure.functions.timer import TimerRequest

    await functions()["snapshot_timer"](TimerRequest(past_due=False))
    status, hist = await call("history", "GET", "v1/history")
    assert len(hist["items"]) == 1


# ----------------------------------------------------------------------------------- history, timeseries


async def test_history_pages_and_timeseries_validate(settings):
    async with Store.open(settings) as store:
        for n in range(3):
            await make(store, kind="stock", name=f"Stock {n}", product_id=n + 1)
            await snapshots.take_snapshot(store, settings, persist=True)
    status, page = await call("history", "GET", "v1/history", params={"limit": "2"})
    assert status == 200 and len(page["items"]) == 2 and page["next_before"]
    assert [i["metrics"]["monitors_total"] for i in page["items"]] == [3, 2]
    status, rest = await call("history", "GET", "v1/history", params={"limit": "2", "before": page["next_before"]})
    assert [i["metrics"]["monitors_total"] for i in rest["items"]] == [1] and rest["next_before"] is None

    status, ts = await call("timeseries", "GET", "v1/timeseries",
                            params={"metric": "monitors_total,stock_monitors,uptime_24h_percent"})
    assert status == 200 and ts["count"] == 3 and ts["metrics"] == ["monitors_total", "stock_monitors",
                                                                     "uptime_24h_percent"]
    series = {s["metric"]: s["points"] for s in ts["series"]}
    assert [v for _, v in series["monitors_total"]] == [1, 2, 3]  # oldest first
    assert [v for _, v in series["uptime_24h_percent"]] == [None, None, None]
    times = [t for t, _ in series["monitors_total"]]
    assert times == sorted(times)
    status, one = await call("timeseries", "GET", "v1/timeseries",
                             params={"metric": "monitors_total", "from": times[1], "to": times[1]})
    assert status == 422 and one["error"]["details"][0]["field"] == "from"
    status, one = await call("timeseries", "GET", "v1/timeseries",
                             params={"metric": "monitors_total", "from": times[1], "to": times[2]})
    assert [v for _, v in one["series"][0]["points"]] == [2, 3]

    for params, field in (({"metric": "monitors_total,bogus"}, "metric"), ({}, "metric"),
                          ({"metric": "monitors_total", "from": "yesterday"}, "from"),
                          ({"metric": "monitors_total", "to": "2025-13-01"}, "to")):
        status, body = await call("timeseries", "GET", "v1/timeseries", params=params)
        assert status == 422 and body["error"]["details"][0]["field"] == field, (params, body)
    status, body = await call("timeseries", "GET", "v1/timeseries", params={"metric": "bogus"})
    assert "unknown metric 'bogus'" in body["error"]["details"][0]["message"]
    status, body = await call("history", "GET", "v1/history", params={"limit": "0"})
    assert status == 422


# ---------------------------------------------------------------------------------------------- rules


async def test_alert_rules_crud_and_validation(settings):
    status, body = await call("alert_rules", "POST", "v1/alert-rules",
                              {"metric": "no_such_metric", "operator": "=>", "threshold": "x", "for_snapshots": 0,
                               "recipients": ["not an address"], "colour": "red"})
    assert status == 422 and body["error"]["code"] == "validation_error"
    fields = {d["field"] for d in body["error"]["details"]}
    assert fields == {"metric", "operator", "threshold", "for_snapshots", "recipients.0", "colour"}
    assert any("unknown metric 'no_such_metric'" in d["message"] for d in body["error"]["details"])
    assert (await call("alert_rules", "POST", "v1/alert-rules", {"metric": "checker_errors"}))[0] == 422

    status, rule = await call("alert_rules", "POST", "v1/alert-rules",
                              {"metric": "checker_errors", "operator": ">", "threshold": 0, "recipients": [OPS]})
    assert status == 201 and rule["name"] == "checker_errors > 0" and rule["for_snapshots"] == 1
    assert rule["severity"] == "warning" and rule["enabled"] is True
    assert rule["state"] == {"firing": False, "consecutive": 0, "since": None, "value": None}
    rid = rule["id"]
    status, changed = await call("alert_rule", "PATCH", f"v1/alert-rules/{rid}",
                                 {"threshold": 2, "name": "Checkers broken", "severity": "critical"},
                                 route={"rule_id": rid})
    assert status == 200 and changed["threshold"] == 2 and changed["name"] == "Checkers broken"
    status, body = await call("alert_rule", "PATCH", f"v1/alert-rules/{rid}", {"operator": "~"},
                              route={"rule_id": rid})
    assert status == 422 and body["error"]["details"][0]["field"] == "operator"
    assert (await call("alert_rule", "GET", f"v1/alert-rules/{rid}", route={"rule_id": rid}))[1]["threshold"] == 2
    status, listing = await call("alert_rules", "GET", "v1/alert-rules")
    assert [r["id"] for r in listing["items"]] == [rid]
    assert (await call("alert_rule", "DELETE", f"v1/alert-rules/{rid}", route={"rule_id": rid}))[0] == 204
    status, body = await call("alert_rule", "GET", f"v1/alert-rules/{rid}", route={"rule_id": rid})
    assert status == 404 and body["error"]["code"] == "not_found"
    assert (await call("alert_rule", "GET", "v1/alert-rules/nope", route={"rule_id": "nope"}))[0] == 404


async def test_a_rule_fires_after_n_consecutive_snapshots_and_resolves(storage, settings):
    async with Store.open(settings) as store:
        gadget = await make(store, kind="stock", name="Gadget stock", product_id=43)
        await set_state(store, "stock", gadget, "ERROR", error="WHMCS answered HTTP 500")
    status, rule = await call("alert_rules", "POST", "v1/alert-rules",
                              {"name": "Checkers broken", "metric": "checker_errors", "operator": ">=",
                               "threshold": 1, "for_snapshots": 2, "severity": "critical", "recipients": [OPS]})
    rid = rule["id"]

    async def persist() -> dict:
        status, body = await call("snapshot", "POST", "v1/snapshot", params={"persist": "true"})
        assert status == 200
        return body["alert_rules"]

    async def rule_events() -> list[dict]:
        return (await call("events", "GET", "v1/events", params={"monitor_id": rid}))[1]["items"]

    assert await persist() == {"evaluated": 1, "fired": [], "resolved": []}  # one breach: not yet
    state = (await call("alert_rule", "GET", f"v1/alert-rules/{rid}", route={"rule_id": rid}))[1]["state"]
    assert state == {"firing": False, "consecutive": 1, "since": None, "value": 1}
    assert await rule_events() == []

    fired = (await persist())["fired"]  # two in a row: fires
    assert [f["id"] for f in fired] == [rid]
    (event,) = await rule_events()
    assert event["type"] == "ALERT_RULE_FIRING" and event["kind"] == "alert_rule"
    assert event["severity"] == "critical" and event["monitor_name"] == "Checkers broken"
    assert event["delivery"] == "queued" and event["id"] == fired[0]["event_id"]
    assert event["details"]["value"] == 1 and event["details"]["recipients"] == [OPS]
    assert event["details"]["counted"] == "Gadget stock"  # which monitors the number counted
    assert event["details"]["snapshot_id"]
    status, st = await call("status", "GET", "v1/status")
    assert [r["id"] for r in st["alert_rules"]["firing"]] == [rid]

    assert (await persist())["fired"] == []  # still breaching: no second firing
    assert len(await rule_events()) == 1

    async with Store.open(settings) as store:
        await set_state(store, "stock", gadget, "OK")
    resolved = (await persist())["resolved"]
    assert [r["id"] for r in resolved] == [rid]
    events = await rule_events()
    assert [e["type"] for e in events] == ["ALERT_RULE_RESOLVED", "ALERT_RULE_FIRING"]
    assert events[0]["details"]["value"] == 0 and events[0]["details"]["firing_seconds"] >= 0
    state = (await call("alert_rule", "GET", f"v1/alert-rules/{rid}", route={"rule_id": rid}))[1]["state"]
    assert state == {"firing": False, "consecutive": 0, "since": None, "value": 0}

    async with QueueClient.from_connection_string(storage, EVENTS_QUEUE,  # both queued for the mail function
                                                  message_decode_policy=TextBase64DecodePolicy()) as queue:
        messages = [json.loads(m.content)["event"] async for m in queue.receive_messages()]
    assert sorted(m["type"] for m in messages) == ["ALERT_RULE_FIRING", "ALERT_RULE_RESOLVED"]
    assert all(m["monitor_id"] == rid for m in messages)

    # a disabled rule is not evaluated; a rule on a null metric never breaches
    await call("alert_rule", "PATCH", f"v1/alert-rules/{rid}", {"enabled": False}, route={"rule_id": rid})
    await call("alert_rules", "POST", "v1/alert-rules",
               {"metric": "stock_uptime_24h_percent", "operator": "<", "threshold": 99})
    assert await persist() == {"evaluated": 1, "fired": [], "resolved": []}


async def test_rule_events_reach_the_rules_recipients_through_the_mail_function(storage, env, smtp):
    from tests.test_email import Host

    env(**smtp.settings(), DEFAULT_EMAIL_RECIPIENTS="default@example.org")
    settings = get_settings()
    async with Store.open(settings) as store:
        mid = await make(store, kind="website", name="Shop", url="http://127.0.0.1:9/", recipients=["shop@example.org"])
        await set_state(store, "website", mid, "DOWN", down_since=datetime.now(UTC).isoformat())
        await rules.create_rule(store, {"name": "Anything down", "metric": "monitors_down", "operator": ">",
                                            "threshold": 0, "recipients": [OPS, "oncall@example.org"]})
        snap = await snapshots.take_snapshot(store, settings, persist=True)
        assert len(snap["alert_rules"]["fired"]) == 1
    host = Host(storage)
    runs = await host.drain(EVENTS_QUEUE, "send_event_email")
    assert [r.outcome for r in runs] == ["ok"]
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == ["oncall@example.org", OPS]  # not the monitor's
    mail = smtp.messages[0]
    assert mail.subject.startswith("[ALERT RULE FIRING] Anything down:")
    assert "monitors_down is 1 (> 0)" in mail.part("plain") and "monitors_down is 1 (&gt; 0)" in mail.part("html")
    assert "Counted" in mail.part("plain") and "Shop" in mail.part("plain")  # which monitors the 1 is


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_rules_snapshot_and_status(storage):
    env = {**os.environ}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "monitors", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)

    made = cli("--json", "rules", "add", "metric=checker_errors", "operator=>", "threshold=0", "for_snapshots=2",
               'recipients=["ops@example.org"]')
    assert made.returncode == 0, made.stderr
    rid = json.loads(made.stdout)["id"]
    table = cli("rules", "list")
    header = table.stdout.splitlines()[0].split()
    assert header == ["id", "name", "condition", "for", "severity", "enabled", "firing", "value"]
    assert rid in table.stdout and "checker_errors > 0" in table.stdout
    bad = cli("rules", "add", "metric=bogus", "operator=>", "threshold=0")
    assert bad.returncode == 2 and "metric: unknown metric 'bogus'" in bad.stderr and "Traceback" not in bad.stderr
    assert json.loads(cli("--json", "rules", "update", rid, "threshold=3").stdout)["threshold"] == 3

    snap = cli("snapshot", "--persist")
    assert snap.returncode == 0, snap.stderr
    assert snap.stdout.startswith("snapshot ") and "monitors_total" in snap.stdout
    status = cli("status")
    assert status.returncode == 0 and "overall: empty" in status.stdout and "taken" in status.stdout
    assert json.loads(cli("--json", "status").stdout)["snapshot"]["metrics"]["monitors_total"] == 0
    assert cli("rules", "delete", rid).stdout.strip() == f"deleted {rid}"
    gone = cli("rules", "delete", rid)
    assert gone.returncode == 1 and "no alert rule" in gone.stderr


def test_openapi_documents_every_route_of_the_public_blueprint(settings):
    import function_app
    from devhost import discover
    from shared.web import openapi

    names = {"status", "snapshot", "history", "timeseries", "bootstrap", "alert_rules", "alert_rule",
             "prometheus_metrics", "status_page", "badge"}
    routes = {"/api/" + f.trigger["route"] for f in discover(function_app.app)
              if f.trigger["type"] == "httpTrigger" and f.name in names}
    doc = openapi.document()
    assert {"/api/v1/status", "/api/v1/snapshot", "/api/v1/history", "/api/v1/timeseries", "/api/v1/bootstrap",
            "/api/v1/alert-rules", "/api/v1/alert-rules/{rule_id}", "/api/v1/metrics/prometheus",
            "/api/status-page", "/api/badge/{monitor_id}/{badge}"} <= routes
    assert routes <= set(doc["paths"]), routes - set(doc["paths"])
    assert doc["components"]["schemas"]["AlertRule"]["properties"]["metric"]["enum"] == snapshots.metric_names()
    assert doc["paths"]["/api/status-page"]["get"]["security"] == []


async def test_a_snapshot_explanation_is_stored_compressed_and_old_rows_stay_readable(settings):
    import json as _json
    from datetime import UTC as _UTC
    from datetime import datetime as _dt

    from shared.snapshots.views import snapshot_of
    from shared.storage import Store as _Store
    from shared.storage import entity_size

    members = [{"id": f"{n:032x}", "name": f"site {n}", "checks": 60, "up": 60, "percent": 100.0} for n in range(2000)]
    body = _json.dumps({"views": {"website": {"monitors": members}}, "metrics": {"uptime_24h": 100.0}})
    async with _Store.open(settings) as store:
        at = _dt(2026, 11, 30, 12, tzinfo=_UTC)
        key = await store.save_snapshot(at, {"uptime_24h": 100.0}, body)
        row = await store.get_snapshot(key)
        assert row is not None and snapshot_of(row)["views"]["website"]["monitors"] == members
        assert entity_size(row) < len(body) * 2 / 10  # a tenth of the UTF-16 text it used to be
        older = _dt(2026, 11, 30, 11, tzinfo=_UTC)  # as the version before compression stored it
        client = await store.table("snapshots")
        text = _json.dumps({"metrics": {"uptime_24h": 99.5}, "note": "x" * 20000})
        await client.create_entity({"PartitionKey": "202611", "RowKey": store_key(older), "taken_at": older,
                                    "body_parts": 2, "body_0": text[:16000], "body_1": text[16000:]})
        old = await store.get_snapshot(store_key(older))
        assert old is not None and snapshot_of(old)["note"] == "x" * 20000


def store_key(at):
    from shared.storage import inverted

    return inverted(at)
