"""Times mean what they say: a result's slot and when its check ran; `next_check_at` is the tick that checks it;
`state.since` is when the status changed; periods are whole minutes, kept evenly on the minute timers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apphelp import call, functions, results
from targets import site, targets  # noqa: F401 - fixtures

import monitors
from shared import engine
from shared.storage import Store

ROOT = Path(__file__).resolve().parent.parent
MINUTE = timedelta(minutes=1)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def minute(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


async def create(url: str, expect: int = 201, **fields: Any) -> dict[str, Any]:
    status, body = await call("monitors", "POST", "v1/monitors",
                              {"kind": "website", "name": "Shop", "url": url, "attempts": 1, "timeout_seconds": 5,
                               **fields})
    assert status == expect, body
    return body


async def get(mid: str) -> dict[str, Any]:
    status, body = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert status == 200, body
    return body


# ----------------------------------------------------------------------------------------- slot, checked_at


async def test_every_result_shows_its_slot_and_when_its_check_ran(settings, site):
    from azure.functions.timer import TimerRequest

    mid = (await create(site.url, interval_seconds=60))["id"]
    before = datetime.now(UTC)
    await functions()["website_timer"](TimerRequest())  # never checked: due at this tick
    [timed] = await results(mid)
    assert at(timed["slot"]) == minute(before) or at(timed["slot"]) == minute(datetime.now(UTC))
    assert at(timed["slot"]) <= at(timed["checked_at"]) < at(timed["slot"]) + MINUTE
    assert before <= at(timed["checked_at"]) <= datetime.now(UTC)
    assert timed["ts"] == timed["slot"] and timed["trigger"] == "timer"

    status, ran = await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route={"monitor_id": mid})
    assert status == 200 and ran["outcome"] == "up"
    assert at(ran["slot"]) <= at(ran["checked_at"]) <= datetime.now(UTC)
    latest = (await results(mid))[0]
    assert (latest["slot"], latest["checked_at"]) == (ran["slot"], ran["checked_at"])  # run-now = stored

    cli = subprocess.run([sys.executable, "-m", "monitors", "--json", "results", mid], cwd=ROOT, env={**os.environ},
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    items = json.loads(cli.stdout)["items"]
    assert [(r["slot"], r["checked_at"]) for r in items] == [(ran["slot"], ran["checked_at"]),
                                                            (timed["slot"], timed["checked_at"])]


# ----------------------------------------------------------------------------------- next_check_at, spacing


async def test_next_check_at_is_the_tick_that_checks_it_and_periods_are_evenly_spaced(settings, targets):
    """40 minutes of timer ticks: before each, every monitor's next_check_at says whether that tick checks it, each
    result's slot is its tick's minute, and each period is kept to the minute (the breaker's too)."""
    ok, failing = targets.http(), targets.http(status=500)
    specs = {"1 min": {"interval_seconds": 60}, "2 min": {"interval_seconds": 120},
             "3 min": {"interval_seconds": 180}, "5 min": {"interval_seconds": 300}, "cron */7": {"cron": "*/7 * * * *"},
             "failing": {"interval_seconds": 60, "url": failing.url}}
    ids = {name: (await create(**{"url": ok.url_for(f"/{n}"), "name": name, **spec}))["id"]
           for n, (name, spec) in enumerate(specs.items())}
    t0 = minute(datetime.now(UTC)) - timedelta(hours=3) + timedelta(seconds=0.25)  # ticks fire just after :00
    checked: dict[str, list[int]] = {name: [] for name in ids}
    async with Store.open(settings) as store:
        cfgs = {name: monitors.from_entity(await store.get_monitor(mid)) for name, mid in ids.items()}
        for tick in range(40):
            now = t0 + tick * MINUTE
            states = (await store.load_states("website"))[0]
            predicted = {name: engine.next_check_at(cfg, states[cfg.id].data if cfg.id in states else None,
                                                    now - timedelta(seconds=20))  # between the ticks
                         for name, cfg in cfgs.items()}
            summary = await engine.run_kind(store, settings, "website", trigger="timer", now=now)
            done = {o.monitor_id for o in summary.outcomes}
            for name, cfg in cfgs.items():
                if tick:
                    assert (cfg.id in done) == (predicted[name] == minute(now)), (name, tick, predicted[name])
                if cfg.id in done:
                    checked[name].append(tick)
        for name, mid in ids.items():  # a timer result's slot is the minute of the tick that checked it
            rows = await store.query_results(mid, limit=100)
            assert sorted(r["ts"] for r in rows) == [minute(t0) + n * MINUTE for n in checked[name]], name

    def gaps(name: str) -> list[int]:
        return [b - a for a, b in zip(checked[name], checked[name][1:], strict=False)]

    assert checked["1 min"] == list(range(40))
    assert len(checked["5 min"]) >= 8 and len(checked["cron */7"]) >= 6 and len(checked["failing"]) >= 11
    for name, period in (("2 min", 2), ("3 min", 3), ("5 min", 5)):
        # the first check comes at once, the next at the monitor's own phase, and from then on evenly
        assert gaps(name)[0] <= period and set(gaps(name)[1:]) == {period}, (name, checked[name])
    assert all((minute(t0) + n * MINUTE).minute % 7 == 0 for n in checked["cron */7"][1:])
    assert gaps("failing")[:4] == [1, 1, 1, 1] and set(gaps("failing")[5:]) == {5}  # the breaker's 300 s


async def test_next_check_at_in_the_api_is_the_next_tick_and_null_while_disabled_or_paused(settings, site):
    from azure.functions.timer import TimerRequest

    made = await create(site.url, interval_seconds=300)
    assert at(made["state"]["next_check_at"]) == minute(datetime.now(UTC)) + MINUTE  # never checked: next tick
    await functions()["website_timer"](TimerRequest())
    shown = at((await get(made["id"]))["state"]["next_check_at"])
    assert shown > datetime.now(UTC) and shown == minute(shown) and shown - datetime.now(UTC) <= timedelta(minutes=5)
    async with Store.open(settings) as store:
        async def checks_at(now: datetime) -> bool:
            summary = await engine.run_kind(store, settings, "website", trigger="timer", now=now)
            return summary.checked == 1

        assert not await checks_at(shown - MINUTE + timedelta(seconds=0.3))  # the tick before: not yet
        assert await checks_at(shown + timedelta(seconds=0.3))  # that tick checks it

    status, _ = await call("kind_action", "POST", "v1/kinds/website/pause", route={"kind": "website",
                                                                                  "action": "pause"})
    assert status == 200
    assert (await get(made["id"]))["state"]["next_check_at"] is None
    _, listed = await call("monitors", "GET", "v1/monitors")
    assert listed["items"][0]["state"]["next_check_at"] is None
    await call("kind_action", "POST", "v1/kinds/website/resume", route={"kind": "website", "action": "resume"})
    assert (await get(made["id"]))["state"]["next_check_at"] is not None
    status, off = await call("monitor", "PATCH", f"v1/monitors/{made['id']}", {"enabled": False},
                             route={"monitor_id": made["id"]})
    assert status == 200 and off["state"]["next_check_at"] is None


async def test_a_period_that_is_not_whole_minutes_is_refused_naming_the_field(settings, site):
    for field, value in (("interval_seconds", 90), ("interval_seconds", 3599), ("breaker_interval_seconds", 150)):
        status, body = await call("monitors", "POST", "v1/monitors", {"kind": "website", "name": "Shop",
                                                                      "url": site.url, field: value})
        assert status == 422, body
        [detail] = body["error"]["details"]
        assert detail["field"] == field and "multiple of 60" in detail["message"], detail
    made = await create(site.url, interval_seconds=120)
    status, body = await call("monitor", "PATCH", f"v1/monitors/{made['id']}", {"interval_seconds": 90},
                              route={"monitor_id": made["id"]})
    assert status == 422 and body["error"]["details"][0]["field"] == "interval_seconds"
    assert "use 60 or 120" in body["error"]["details"][0]["message"]
    assert (await get(made["id"]))["interval_seconds"] == 120  # nothing changed
    _, doc = await call("openapi_document", "GET", "v1/openapi.json")
    assert doc["components"]["schemas"]["WebsiteMonitor"]["properties"]["interval_seconds"]["anyOf"][0][
        "multipleOf"] == 60

    legacy = monitors.from_entity({"kind": "website", "spec": json.dumps({
        "kind": "website", "name": "Old", "url": site.url, "interval_seconds": 90})})  # stored before the rule
    assert legacy.interval_seconds == 90


# ------------------------------------------------------------------------------------------------- since


async def test_since_is_when_the_status_changed_and_a_steady_status_writes_nothing(settings, site):
    mid = (await create(site.url, failure_threshold=1, max_response_ms=300))["id"]
    assert (await get(mid))["state"]["since"] is None  # never checked

    async def run() -> dict[str, Any]:
        status, ran = await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route={"monitor_id": mid})
        assert status == 200, ran
        return ran

    async def etag() -> str | None:
        async with Store.open(settings) as store:
            row = await store.get_state("website", mid)
            return row.etag if row else None

    up = await run()
    assert up["status"] == "UP" and at((await get(mid))["state"]["since"]) == at(up["checked_at"])
    tag = await etag()
    assert (await run())["status"] == "UP"
    assert at((await get(mid))["state"]["since"]) == at(up["checked_at"]) and await etag() == tag  # no write

    site.set(delay=0.5)
    slow = await run()
    assert slow["status"] == "DEGRADED" and at((await get(mid))["state"]["since"]) == at(slow["checked_at"])
    site.set(delay=0, status=503)
    down = await run()
    assert down["status"] == "DOWN"
    state = (await get(mid))["state"]
    assert at(state["since"]) == at(down["checked_at"]) == at(state["down_since"])
    for _ in range(4):  # the failures are counted up to the breaker's 5; from then on a failure changes nothing
        await run()
    tag = await etag()
    await run()
    assert at((await get(mid))["state"]["since"]) == at(down["checked_at"]) and await etag() == tag
    site.set(status=200)
    back = await run()
    assert back["status"] == "UP" and at((await get(mid))["state"]["since"]) == at(back["checked_at"])


async def test_since_is_set_for_other_kinds_too(settings):
    """The engine sets `since` at every status change whatever the kind (here a local resource monitor)."""
    status, made = await call("monitors", "POST", "v1/monitors", {"kind": "resource", "name": "Disk", "source": {
        "type": "local", "disk": {"warn": 99.8, "alert": 99.9}, "memory": None}})
    assert status == 201, made
    status, ran = await call("monitor_run", "POST", f"v1/monitors/{made['id']}/run", route={"monitor_id": made["id"]})
    assert status == 200, ran
    shown = await get(made["id"])
    assert shown["state"]["status"] == ran["status"] != "PENDING"
    assert at(shown["state"]["since"]) == at(ran["checked_at"])
