"""Checks from several locations: each location's app (here: the same code with another CHECK_LOCATION, on the same
Azurite) checks the monitor, the loopback target answers each location differently (it reads the location from the
User-Agent), and the monitor's status is the quorum of what the locations see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from helpers import add_monitor, events_of, types
from targets import targets  # noqa: F401 - fixture

from shared import engine
from shared.storage import Store, keys

LOCATIONS = "eu,us,asia"


def _at(env: Any, location: str) -> Any:
    from shared.settings import get_settings

    env(CHECK_LOCATION=location, CHECK_LOCATIONS=LOCATIONS)
    return get_settings()


async def _minute(store: Store, env: Any, at: datetime, *where: str) -> None:
    """One timer tick of each location named, in that order."""
    for location in where:
        await engine.run_kind(store, _at(env, location), "website", trigger="timer", now=at)


def _minutes(n: int, back: int = 30) -> datetime:
    """Minute n of a scenario that starts `back` minutes ago."""
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=back - n)


async def _status(store: Store, mid: str) -> tuple[str, dict[str, Any]]:
    row = await store.get_state("website", mid)
    assert row is not None
    return row.status, row.data


async def test_one_location_down_is_a_regional_issue_two_are_one_down_naming_both(storage, env, targets):
    site = targets.http()
    async with Store.open(_at(env, "eu")) as store:
        cfg = await add_monitor(store, site.url, interval_seconds=60, failure_threshold=1, quorum=2)
        mid = cfg.id or ""
        await _minute(store, env, _minutes(0), "eu", "us", "asia")
        assert (await _status(store, mid))[0] == "UP"
        assert {a.split("location/")[1] for a in site.agents} == {"eu", "us", "asia"}  # each checked, and said so

        site.set(down_for={"asia"})
        await _minute(store, env, _minutes(1), "eu", "us", "asia")
        status, data = await _status(store, mid)
        assert status == "DEGRADED" and data["_regional"] == ["asia"]
        assert types(await events_of(store, mid)) == ["REGIONAL_ISSUE"]  # to the operator; no DOWN for the audience

        site.set(down_for={"asia", "us"})
        await _minute(store, env, _minutes(2), "eu", "us", "asia")
        assert (await _status(store, mid))[0] == "DOWN"
        events = await events_of(store, mid)
        assert types(events) == ["REGIONAL_ISSUE", "MONITOR_DOWN"]  # one DOWN, though two locations saw it
        down = events[-1]
        assert "asia" in down["message"] and "us" in down["message"] and "eu" not in down["message"]

        site.set(down_for=set())
        await _minute(store, env, _minutes(3), "eu", "us", "asia")
        assert (await _status(store, mid))[0] == "UP"
        assert types(await events_of(store, mid)) == ["REGIONAL_ISSUE", "MONITOR_DOWN", "MONITOR_UP"]

        for location in ("eu", "us", "asia"):  # every location's checks are kept, one per minute
            rows = await store.query_results(keys.series_id(mid, location), limit=10)
            assert sorted(r["ts"] for r in rows) == [_minutes(n) for n in range(4)], location
            assert {r.get("location") for r in rows} == {location}


async def test_a_stale_location_is_left_out_of_the_quorum_not_counted_as_down(storage, env, targets):
    site = targets.http()
    async with Store.open(_at(env, "eu")) as store:
        cfg = await add_monitor(store, site.url, interval_seconds=60, failure_threshold=1, quorum=2)
        mid = cfg.id or ""
        await _minute(store, env, _minutes(0), "eu", "us", "asia")
        site.set(down_for={"asia"})
        await _minute(store, env, _minutes(1), "eu", "us", "asia")
        assert (await _status(store, mid))[0] == "DEGRADED"

        # asia's timer stops: it still "sees" the monitor down, but after 3 periods it is stale
        for n in (2, 3):
            await _minute(store, env, _minutes(n), "eu", "us")
            assert (await _status(store, mid))[0] == "DEGRADED"  # not yet stale: still a regional issue
        await _minute(store, env, _minutes(5), "eu", "us")
        status, data = await _status(store, mid)
        assert status == "UP" and "_regional" not in data
        assert types(await events_of(store, mid)) == ["REGIONAL_ISSUE", "REGIONAL_ISSUE_CLEARED"]

        site.set(down_for={"eu"})  # with asia stale the quorum of 2 is out of the 2 fresh locations: not DOWN yet
        await _minute(store, env, _minutes(6), "eu", "us")
        assert (await _status(store, mid))[0] == "DEGRADED"
        site.set(down_for={"eu", "us"})
        await _minute(store, env, _minutes(7), "eu", "us")
        assert (await _status(store, mid))[0] == "DOWN"


async def test_a_monitor_checked_from_some_locations_only_is_not_checked_elsewhere(storage, env, targets):
    site = targets.http()
    async with Store.open(_at(env, "eu")) as store:
        cfg = await add_monitor(store, site.url, interval_seconds=60, failure_threshold=1, locations=["eu", "us"])
        await _minute(store, env, _minutes(0), "eu", "us", "asia")
        assert sorted(a.split("location/")[1] for a in site.agents) == ["eu", "us"]
        site.set(down_for={"us"})  # 2 locations: the default quorum is all but two, at least one: 1
        await _minute(store, env, _minutes(1), "eu", "us", "asia")
        assert (await _status(store, cfg.id or ""))[0] == "DOWN"


async def test_the_api_the_status_page_and_prometheus_say_what_each_location_sees(storage, env, targets):
    from apphelp import call, functions, request

    site = targets.http()
    async with Store.open(_at(env, "eu")) as store:
        cfg = await add_monitor(store, site.url, interval_seconds=60, failure_threshold=1, quorum=2, public=True,
                                name="Shop")
        mid = cfg.id or ""
        await _minute(store, env, _minutes(0, 4), "eu", "us", "asia")  # the last minute is this one: what the
        site.set(down_for={"us"})  # readers see now
        await _minute(store, env, _minutes(1, 4), "eu", "us", "asia")
        for n in (2, 3, 4):  # asia's timer stops
            await _minute(store, env, _minutes(n, 4), "eu", "us")
    _at(env, "eu")  # read in eu
    status, view = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert status == 200 and view["state"]["status"] == "DEGRADED"
    seen = view["state"]["locations"]
    assert {loc: (v["status"], v["stale"]) for loc, v in seen.items()} == \
        {"eu": ("UP", False), "us": ("DOWN", False), "asia": ("UP", True)}
    assert "500" in seen["us"]["error"]

    status, page = await call("monitor_results", "GET", f"v1/monitors/{mid}/results", route={"monitor_id": mid})
    assert status == 200
    assert sorted((item["location"], item["slot"][11:16]) for item in page["items"]) == sorted(
        [(loc, _minutes(n, 4).isoformat()[11:16]) for loc in ("eu", "us") for n in range(5)]
        + [("asia", _minutes(n, 4).isoformat()[11:16]) for n in range(2)])

    status, uptime = await call("monitor_uptime", "GET", f"v1/monitors/{mid}/uptime", route={"monitor_id": mid})
    assert status == 200 and uptime["checks"] == 12
    assert {loc: v["checks"] for loc, v in uptime["by_location"].items()} == {"eu": 5, "us": 5, "asia": 2}
    assert uptime["by_location"]["us"]["up"] == 1

    html = (await functions()["status_page"](request("GET", "status-page"))).get_body().decode()
    assert "us: Down" in html and "asia: no recent checks" in html

    text = (await functions()["prometheus_metrics"](request("GET", "v1/metrics/prometheus"))).get_body().decode()
    assert f'monitor_location_healthy{{id="{mid}",kind="website",location="us",name="Shop"}} 0.0' in text
    assert f'monitor_location_stale{{id="{mid}",kind="website",location="asia",name="Shop"}} 1.0' in text


async def test_a_location_fans_out_to_its_own_queue_and_its_workers_check_from_there(storage, env, targets):
    from apphelp import functions
    from azure.functions.queue import QueueMessage
    from azure.storage.queue import TextBase64DecodePolicy
    from azure.storage.queue.aio import QueueClient

    site = targets.http(down_for={"us"})
    async with Store.open(_at(env, "eu")) as store:
        cfgs = [await add_monitor(store, f"{site.url}{n}", interval_seconds=60, failure_threshold=1, quorum=1,
                                  name=f"m{n}") for n in range(3)]
        await _minute(store, env, _minutes(0, 2), "eu")
        env(FANOUT_THRESHOLD="1", FANOUT_BATCH_SIZE="2", CHECKS_QUEUE="monitor-checks-us")
        tick = await engine.run_kind(store, _at(env, "us"), "website", trigger="timer", now=_minutes(0, 2))
        assert (tick.dispatched, tick.checked) == (2, 0)
        async with QueueClient.from_connection_string(storage, "monitor-checks-us",
                                                      message_decode_policy=TextBase64DecodePolicy()) as queue:
            texts = [m.content async for m in queue.receive_messages(max_messages=32)]
        assert len(texts) == 2
        for text in texts:  # the us app's worker
            await functions()["check_batch"](QueueMessage(id="m", body=text.encode(), dequeue_count=1))
        for cfg in cfgs:
            status, data = await _status(store, cfg.id or "")
            assert status == "DOWN" and data["_loc"]["us"][0] == "DOWN" and data["_loc"]["eu"][0] == "UP"
            rows = await store.query_results(keys.series_id(cfg.id or "", "us"), limit=5)
            assert [r["location"] for r in rows] == ["us"]


async def test_a_checker_broken_in_one_location_is_told_to_the_operator_and_does_not_vote(storage, env, targets):
    site = targets.http()
    async with Store.open(_at(env, "eu")) as store:
        cfg = await add_monitor(store, site.url, interval_seconds=60, failure_threshold=1, quorum=1)
        mid = cfg.id or ""
        await _minute(store, env, _minutes(0), "eu", "us", "asia")
        env(OUTBOUND_ALLOW_CIDRS="127.0.0.2/32")  # asia's app may not reach 127.0.0.1: its checks are ERRORs
        await engine.run_kind(store, _at(env, "asia"), "website", trigger="timer", now=_minutes(1))
        env(OUTBOUND_ALLOW_CIDRS="127.0.0.1/32")
        await _minute(store, env, _minutes(1), "eu", "us")
        status, data = await _status(store, mid)
        assert status == "UP" and data["_loc"]["asia"][0] == "ERROR"  # a broken checker is no outage
        (error,) = await events_of(store, mid)
        assert error["type"] == "MONITOR_ERROR" and "asia" in error["message"]


async def test_the_deployments_own_jobs_run_in_the_first_location_only(storage, env):
    """Snapshots, compaction, retention and digests are the whole deployment's: the other locations' apps skip
    them (one storage account: three regions taking snapshots would store three)."""
    from apphelp import functions

    from shared.snapshots import latest

    class Timer:
        past_due = False

    for location in ("us", "asia"):
        _at(env, location)
        await functions()["snapshot_timer"](Timer())
    async with Store.open(_at(env, "eu")) as store:
        assert await latest(store) is None
        await functions()["snapshot_timer"](Timer())  # eu: the first of CHECK_LOCATIONS
        assert await latest(store) is not None
