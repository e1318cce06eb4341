"""Maintenance windows through the engine: real Azurite, real sites on 127.0.0.1, the website kind, stored windows.

What a user notices: no alert while the monitor is in maintenance (the events are there, marked `held`), results
marked `maintenance` and left out of uptime, downtime that excludes the window, and after it exactly one alert
when — and only when — the monitor's status is not what its audience last heard.

Runs use a controlled `now` (the slot, which decides the window); the checks themselves run at the wall clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from helpers import add_monitor, events_of, queued, types
from targets import site, targets  # noqa: F401 - fixtures

from monitors.contract import CheckResult, Evaluation
from monitors.policy import evaluate_updown
from shared.engine import run_kind
from shared.engine.gate import GATE, gate
from shared.events import Event, EventType
from shared.manage.history import uptime
from shared.manage.maintenance import rollup
from shared.storage import Store
from shared.windows.schedule import Occurrence
from shared.windows.service import create_window

KIND = "website"  # monitors: DOWN at the first failure; counters that saturate at once (steady = no write)


@pytest.fixture
async def store(settings):
    async with Store.open(settings) as opened:
        yield opened


@pytest.fixture
def t0() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


async def tick(store, settings, at: datetime) -> str | None:
    summary = await run_kind(store, settings, KIND, trigger="manual", now=at)
    assert summary.checked == 1 and summary.errors == 0
    return summary.outcomes[0].status


async def one_off(store, cfg, start: datetime, minutes: int, name: str = "db upgrade") -> str:
    window = await create_window(store, {"name": name, "start": start.isoformat(),
                                         "end": (start + timedelta(minutes=minutes)).isoformat(),
                                         "monitors": [cfg.id]})
    return window["id"]


def held(events: list[dict]) -> list[tuple[str, str, str | None]]:
    return [(e["type"], e["delivery"], e.get("held")) for e in events]


async def test_down_in_maintenance_is_held_out_of_uptime_and_told_once_after(store, storage, settings, site, t0):
    cfg = await add_monitor(store, site.url, failure_threshold=1, breaker_failures=1)
    start, end = t0 + timedelta(minutes=10), t0 + timedelta(minutes=40)
    window_id = await one_off(store, cfg, start, 30)
    assert await tick(store, settings, t0) == "UP"
    site.set(status=500)
    assert await tick(store, settings, t0 + timedelta(minutes=15)) == "DOWN"  # DOWN is DOWN, but not told
    inside = await store.get_state(KIND, cfg.id)
    assert await tick(store, settings, t0 + timedelta(minutes=20)) == "DOWN"
    assert (await store.get_state(KIND, cfg.id)).etag == inside.etag  # steady in maintenance: no state write

    assert await queued(storage) == []
    assert held(await events_of(store, cfg.id)) == [("MONITOR_DOWN", "held", "maintenance: db upgrade")]
    results = {r["ts"]: r for r in await store.query_results(cfg.id)}
    assert [bool(results[t0 + timedelta(minutes=m)].get("maintenance")) for m in (0, 15, 20)] == [False, True, True]
    assert results[t0 + timedelta(minutes=15)]["maintenance_window"] == window_id
    assert await store.list_downtimes(cfg.id) == []  # no downtime window opens during maintenance
    during = await uptime(store, str(cfg.id), "24h")
    assert (during["checks"], during["up"], during["uptime_percent"]) == (1, 1, 100.0)
    assert during["maintenance_checks"] == 2 and during["note"] == "checks during maintenance are not counted"

    assert await tick(store, settings, t0 + timedelta(minutes=45)) == "DOWN"  # the first check after the window
    told = await queued(storage)
    assert types(told) == ["MONITOR_DOWN"]
    assert told[0]["message"].startswith("Shop is still down after maintenance db upgrade.")
    assert told[0]["details"]["since"] == end.isoformat()
    (window,) = await store.list_downtimes(cfg.id)
    assert window["started_at"] == end and "ended_at" not in window  # the downtime starts when maintenance ended
    assert GATE not in (await store.get_state(KIND, cfg.id)).data

    assert await tick(store, settings, t0 + timedelta(minutes=50)) == "DOWN"
    assert len(await queued(storage)) == 1  # nothing more
    after = await uptime(store, str(cfg.id), "24h")
    assert (after["checks"], after["up"], after["maintenance_checks"]) == (3, 1, 2)

    await rollup(store, now=t0 + timedelta(hours=3))  # the hourly rollups count maintenance apart too
    rolled = await uptime(store, str(cfg.id), "24h")
    assert rolled["rolled_up_until"] is not None
    assert (rolled["checks"], rolled["up"], rolled["maintenance_checks"]) == (3, 1, 2)


async def test_down_and_recovered_during_maintenance_tells_nothing(store, storage, settings, site, t0):
    cfg = await add_monitor(store, site.url, failure_threshold=1, breaker_failures=1)
    await one_off(store, cfg, t0 + timedelta(minutes=10), 30)
    assert await tick(store, settings, t0) == "UP"
    site.set(status=500)
    assert await tick(store, settings, t0 + timedelta(minutes=15)) == "DOWN"
    site.set(status=200)
    assert await tick(store, settings, t0 + timedelta(minutes=20)) == "UP"
    assert await tick(store, settings, t0 + timedelta(minutes=45)) == "UP"
    assert await queued(storage) == []
    assert held(await events_of(store, cfg.id)) == [("MONITOR_DOWN", "held", "maintenance: db upgrade"),
                                                    ("MONITOR_UP", "held", "maintenance: db upgrade")]
    assert await store.list_downtimes(cfg.id) == []
    assert GATE not in (await store.get_state(KIND, cfg.id)).data


async def test_down_before_and_through_closes_the_downtime_at_the_start_and_reopens_it_at_the_end(
        store, storage, settings, site, t0):
    cfg = await add_monitor(store, site.url, failure_threshold=1, breaker_failures=1)
    start, end = t0 + timedelta(minutes=10), t0 + timedelta(minutes=40)
    await one_off(store, cfg, start, 30)
    site.set(status=500)
    assert await tick(store, settings, t0) == "DOWN"
    assert types(await queued(storage)) == ["MONITOR_DOWN"]
    assert await tick(store, settings, t0 + timedelta(minutes=15)) == "DOWN"
    (closed,) = await store.list_downtimes(cfg.id)
    assert closed["ended_at"] == start  # closed at the maintenance start
    assert await tick(store, settings, t0 + timedelta(minutes=45)) == "DOWN"
    assert types(await queued(storage)) == ["MONITOR_DOWN"]  # no new alert: its audience knows it is down
    windows = sorted(await store.list_downtimes(cfg.id), key=lambda w: w["started_at"])
    assert [(w["started_at"] >= start, w.get("ended_at")) for w in windows] == [(False, start), (True, None)]
    assert windows[1]["started_at"] == end  # reopened at the end
    assert (await store.get_state(KIND, cfg.id)).data["down_since"] == end.isoformat()

    site.set(status=200)
    assert await tick(store, settings, t0 + timedelta(minutes=50)) == "UP"
    assert types(await queued(storage)) == ["MONITOR_DOWN", "MONITOR_UP"]
    assert all(w.get("ended_at") for w in await store.list_downtimes(cfg.id))


async def test_down_before_and_recovered_during_tells_its_up_after(store, storage, settings, site, t0):
    cfg = await add_monitor(store, site.url, failure_threshold=1, breaker_failures=1)
    await one_off(store, cfg, t0 + timedelta(minutes=10), 30, name="router swap")
    site.set(status=500)
    assert await tick(store, settings, t0) == "DOWN"
    assert await tick(store, settings, t0 + timedelta(minutes=15)) == "DOWN"
    site.set(status=200)
    assert await tick(store, settings, t0 + timedelta(minutes=20)) == "UP"
    assert types(await queued(storage)) == ["MONITOR_DOWN"]
    assert await tick(store, settings, t0 + timedelta(minutes=45)) == "UP"
    told = await queued(storage)
    assert types(told) == ["MONITOR_DOWN", "MONITOR_UP"]
    assert told[1]["message"].endswith("(after maintenance router swap)")
    (window,) = await store.list_downtimes(cfg.id)
    assert window["ended_at"] == t0 + timedelta(minutes=10)
    assert await tick(store, settings, t0 + timedelta(minutes=50)) == "UP"
    assert len(await queued(storage)) == 2


async def test_a_daily_berlin_window_holds_alerts_on_both_sides_of_the_dst_change(store, storage, settings, site):
    """Daily 01:00–02:00 Europe/Berlin: 00:00–01:00Z in winter (CET), 23:00–00:00Z in summer (CEST, from
    2027-03-28). A fixed offset would put 2027-03-28T23:30Z outside and 2027-03-29T00:30Z inside."""
    cfg = await add_monitor(store, site.url, failure_threshold=1, breaker_failures=1)
    await create_window(store, {"name": "nightly backup", "rrule": "FREQ=DAILY", "at": "01:00",
                                "duration_minutes": 60, "timezone": "Europe/Berlin", "monitors": [cfg.id]})
    at = [datetime(2027, 3, 27, 0, 30, tzinfo=UTC), datetime(2027, 3, 27, 1, 30, tzinfo=UTC),
          datetime(2027, 3, 27, 2, 0, tzinfo=UTC), datetime(2027, 3, 28, 23, 30, tzinfo=UTC),
          datetime(2027, 3, 29, 0, 30, tzinfo=UTC)]
    site.set(status=500)
    assert await tick(store, settings, at[0]) == "DOWN"  # in the winter occurrence
    assert await queued(storage) == []
    assert await tick(store, settings, at[1]) == "DOWN"  # 02:30 CET: after it
    assert types(await queued(storage)) == ["MONITOR_DOWN"]
    site.set(status=200)
    assert await tick(store, settings, at[2]) == "UP"
    site.set(status=500)
    assert await tick(store, settings, at[3]) == "DOWN"  # 01:30 CEST: in the summer occurrence
    assert types(await queued(storage)) == ["MONITOR_DOWN", "MONITOR_UP"]
    assert await tick(store, settings, at[4]) == "DOWN"  # 02:30 CEST: after it
    assert types(await queued(storage)) == ["MONITOR_DOWN", "MONITOR_UP", "MONITOR_DOWN"]
    reasons = [e.get("held") for e in await events_of(store, cfg.id) if e["delivery"] == "held"]
    assert reasons == ["maintenance: nightly backup"] * 2
    results = {r["ts"]: bool(r.get("maintenance")) for r in await store.query_results(cfg.id, before=at[4]
                                                                                      + timedelta(minutes=1))}
    assert [results[a] for a in at] == [True, False, False, True, False]


async def test_windows_that_cannot_be_read_stop_no_check(store, storage, settings, site, t0, monkeypatch):
    from shared.windows import schedule

    async def broken(cls, store):
        raise RuntimeError("windows table unreachable")

    cfg = await add_monitor(store, site.url, failure_threshold=1, breaker_failures=1)
    await one_off(store, cfg, t0 - timedelta(minutes=5), 30)
    monkeypatch.setattr(schedule.Windows, "load", classmethod(broken))
    site.set(status=500)
    assert await tick(store, settings, t0) == "DOWN"
    assert types(await queued(storage)) == ["MONITOR_DOWN"]  # checked and told, as without windows


# ------------------------------------------------------------------------------------- the gate, pure

T = datetime(2027, 1, 4, 12, 0, tzinfo=UTC)
OCC = Occurrence("w" * 32, "patch day", T, T + timedelta(hours=1))


def _cfg():
    import monitors

    return monitors.parse_spec({"kind": KIND, "id": "a" * 32, "name": "Shop", "url": "http://127.0.0.1/",
                                "failure_threshold": 1})


def test_checker_errors_are_held_too_and_a_quiet_monitor_remembers_nothing():
    cfg = _cfg()
    up = evaluate_updown(cfg, KIND, {}, CheckResult("up", 5.0), T - timedelta(minutes=5))
    quiet = gate(cfg, up.state, evaluate_updown(cfg, KIND, up.state, CheckResult("up", 5.0), T), OCC, [], T)
    assert quiet.held == [] and GATE not in quiet.evaluation.state and quiet.evaluation.state == up.state
    broken = evaluate_updown(cfg, KIND, up.state, CheckResult("error", error="bad config"), T)
    gated = gate(cfg, up.state, broken, OCC, [], T)
    assert [h.event.type for h in gated.held] == [EventType.MONITOR_ERROR] and gated.evaluation.events == []
    assert gated.held[0].reason == "maintenance: patch day"


def test_an_event_without_a_status_change_still_goes_out_when_the_hold_ends():
    cfg = _cfg()
    state = {"status": "UP", "fails": 0, "oks": 1, GATE: {"announced": "UP", "reason": "maintenance: patch day"}}
    warning = Event(type=EventType.CERTIFICATE_EXPIRING, kind=KIND, monitor_id=cfg.id, monitor_name=cfg.name)
    ev = Evaluation({k: v for k, v in state.items() if k != GATE}, "UP", [warning])
    released = gate(cfg, state, ev, None, [], T + timedelta(hours=2))
    assert released.evaluation.events == [warning] and GATE not in released.evaluation.state
