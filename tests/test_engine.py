"""The engine end to end: real Azurite, real sites on 127.0.0.1, the website kind.

What a user notices: downtime windows, the events (and queue messages that become e-mails), the results
history, and that the timer checks what is due and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers import add_monitor, events_of, queued, types
from targets import site, targets  # noqa: F401 - fixtures

import monitors
from monitors.base import CheckResult, MonitorBase, latest_slot
from monitors.contract import CloseDowntime, OpenDowntime
from monitors.policy import breaker_open, evaluate_updown
from shared.engine import OUTBOX_GRACE, due_monitors, payloads, run_kind, run_monitor
from shared.events import Event, EventType
from shared.storage import StateRow, Store

KIND = "website"


@pytest.fixture
async def store(settings):
    async with Store.open(settings) as opened:
        yield opened


def minute(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------- up/down


async def test_going_down_staying_down_and_coming_back_gives_one_window_and_two_events(store, storage, settings,
                                                                                       site):
    cfg = await add_monitor(store, site.url, failure_threshold=3)
    statuses = [(await run_monitor(store, settings, cfg.id)).status]
    site.set(status=500)
    for _ in range(6):
        statuses.append((await run_monitor(store, settings, cfg.id)).status)
    site.set(status=200)
    statuses.append((await run_monitor(store, settings, cfg.id)).status)
    assert statuses == ["UP", "UP", "UP", "DOWN", "DOWN", "DOWN", "DOWN", "UP"]

    results = list(reversed(await store.query_results(cfg.id)))  # oldest first
    assert [r["outcome"] for r in results] == ["up"] + ["down"] * 6 + ["up"]
    first_failure, recovery = results[1], results[-1]

    windows = await store.list_downtimes(cfg.id)
    assert len(windows) == 1
    assert windows[0]["started_at"] == first_failure["checked_at"]  # from the first failing check, not the 3rd
    assert windows[0]["ended_at"] == recovery["checked_at"]
    assert windows[0]["reason"].startswith("HTTP 500") and "(expected 200-399)" in windows[0]["reason"]

    events = await events_of(store, cfg.id)
    assert types(events) == ["MONITOR_DOWN", "MONITOR_UP"]
    down, up = events
    assert down["severity"] == "critical" and "Shop is down: HTTP 500" in down["message"]
    assert up["message"].startswith("Shop is up again after ")
    assert json.loads(up["details"])["downtime_seconds"] >= 0
    assert all(e["delivery"] == "queued" for e in events)

    messages = await queued(storage)
    assert sorted(m["id"] for m in messages) == sorted(e["event_id"] for e in events)
    assert sorted(types(messages)) == ["MONITOR_DOWN", "MONITOR_UP"]

    state = await store.get_state(KIND, cfg.id)
    assert state.status == "UP"
    assert not (await store.load_states(KIND))[1]  # the outbox is empty once published


async def test_fewer_failures_than_the_threshold_change_nothing_a_user_sees(store, settings, site):
    cfg = await add_monitor(store, site.url, failure_threshold=3)
    assert (await run_monitor(store, settings, cfg.id)).status == "UP"
    site.set(status=500)
    for _ in range(2):
        outcome = await run_monitor(store, settings, cfg.id)
        assert outcome.status == "UP" and outcome.events == []
    site.set(status=200)
    assert (await run_monitor(store, settings, cfg.id)).status == "UP"
    site.set(status=500)  # the count starts again after a success
    for _ in range(2):
        assert (await run_monitor(store, settings, cfg.id)).status == "UP"
    assert await events_of(store, cfg.id) == []
    assert await store.list_downtimes(cfg.id) == []
    results = await store.query_results(cfg.id)
    assert [r["outcome"] for r in results].count("down") == 4  # the failures are still in the history
    assert {r["status"] for r in results} == {"UP"}


async def test_success_threshold_keeps_the_monitor_down_until_enough_successes(store, settings, site):
    cfg = await add_monitor(store, site.url, failure_threshold=1, success_threshold=2)
    site.set(status=500)
    assert (await run_monitor(store, settings, cfg.id)).events == ["MONITOR_DOWN"]
    site.set(status=200)
    first = await run_monitor(store, settings, cfg.id)
    assert first.status == "DOWN" and first.events == []
    assert "ended_at" not in (await store.list_downtimes(cfg.id))[0]
    second = await run_monitor(store, settings, cfg.id)
    assert second.status == "UP" and second.events == ["MONITOR_UP"]
    assert "ended_at" in (await store.list_downtimes(cfg.id))[0]
    assert types(await events_of(store, cfg.id)) == ["MONITOR_DOWN", "MONITOR_UP"]


# -------------------------------------------------------------------------------------------- re-notify


def _cfg(**fields: Any) -> MonitorBase:
    return monitors.parse_spec({"kind": KIND, "id": "cd" * 16, "name": "Shop", "url": "https://shop.example/",
                                **fields})


DOWN = CheckResult("down", 12.0, "HTTP 503 (expected 200-399)")
UP = CheckResult("up", 10.0)


def test_reminders_come_every_renotify_minutes_while_down_and_stop_after_recovery():
    cfg = _cfg(failure_threshold=1, renotify_minutes=5)
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    state: dict[str, Any] = {}
    sent = []
    for minutes in (0, 1, 4, 5, 6, 9, 10, 11, 15):
        ev = evaluate_updown(cfg, KIND, state, DOWN, t0 + timedelta(minutes=minutes))
        state = ev.state
        sent += [(minutes, e.type, e.details.get("reminder", False)) for e in ev.events]
    assert sent == [(0, EventType.MONITOR_DOWN, False), (5, EventType.MONITOR_DOWN, True),
                    (10, EventType.MONITOR_DOWN, True), (15, EventType.MONITOR_DOWN, True)]
    up = evaluate_updown(cfg, KIND, state, UP, t0 + timedelta(minutes=16))
    assert [e.type for e in up.events] == [EventType.MONITOR_UP]
    assert up.events[0].details["downtime_seconds"] == 16 * 60
    assert up.ops == [CloseDowntime(t0, t0 + timedelta(minutes=16))]
    again = evaluate_updown(cfg, KIND, up.state, DOWN, t0 + timedelta(minutes=17))
    assert [(e.type, e.details.get("reminder")) for e in again.events] == [(EventType.MONITOR_DOWN, None)]


def test_without_renotify_a_long_outage_is_announced_once():
    cfg = _cfg(failure_threshold=2)
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    state: dict[str, Any] = {}
    events = []
    for minutes in range(0, 24 * 60, 5):
        ev = evaluate_updown(cfg, KIND, state, DOWN, t0 + timedelta(minutes=minutes))
        state = ev.state
        events += ev.events
    assert [e.type for e in events] == [EventType.MONITOR_DOWN]
    assert events[0].details["since"] == t0.isoformat()  # the outage began at the first failure


def test_failure_counters_saturate_so_a_steady_outage_writes_nothing_and_the_breaker_opens_at_5():
    cfg = _cfg(failure_threshold=3, breaker_failures=5)
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    state: dict[str, Any] = {}
    opened = []
    for i in range(8):
        ev = evaluate_updown(cfg, KIND, state, DOWN, t0 + timedelta(minutes=i))
        opened.append(breaker_open(cfg, ev.state))
        previous, state = state, ev.state
    assert opened == [False, False, False, False, True, True, True, True]
    assert state["fails"] == 5
    assert state == previous  # identical state: the engine writes nothing for a steady outage
    recovered = evaluate_updown(cfg, KIND, state, UP, t0 + timedelta(minutes=9))
    assert not breaker_open(cfg, recovered.state)
    assert recovered.state["fails"] == 0


async def test_a_reminder_goes_out_through_the_engine_when_renotify_minutes_have_passed(store, storage, settings,
                                                                                         site):
    cfg = await add_monitor(store, site.url, failure_threshold=1, renotify_minutes=5)
    site.set(status=500)
    assert (await run_monitor(store, settings, cfg.id)).events == ["MONITOR_DOWN"]
    assert (await run_monitor(store, settings, cfg.id)).events == []  # a minute later: no reminder yet

    # Let 6 minutes pass: move the last notification back (the engine's clock is the real one).
    row = await store.get_state(KIND, cfg.id)
    notified = datetime.fromisoformat(row.data["notified_at"]) - timedelta(minutes=6)
    await store.commit_state(KIND, cfg.id, {**row.data, "notified_at": notified.isoformat()}, row.status,
                             row.etag, [])
    reminder = await run_monitor(store, settings, cfg.id)
    assert reminder.events == ["MONITOR_DOWN"]
    assert (await run_monitor(store, settings, cfg.id)).events == []

    events = await events_of(store, cfg.id)
    assert [json.loads(e["details"]).get("reminder", False) for e in events] == [False, True]
    assert "is still down" in events[1]["message"]
    assert len(await queued(storage)) == 2
    assert len(await store.list_downtimes(cfg.id)) == 1  # a reminder is not a new outage


# ---------------------------------------------------------------------------------------- circuit breaker


async def test_after_5_failures_the_timer_checks_at_most_every_5_minutes_until_it_recovers(store, settings,
                                                                                           site):
    cfg = await add_monitor(store, site.url, interval_seconds=60)  # breaker: 5 failures → every 300 s
    site.set(status=500)
    t0 = minute(utcnow())
    tick = 0

    async def timer() -> int:
        nonlocal tick
        before = site.hits
        summary = await run_kind(store, settings, KIND, trigger="timer", now=t0 + timedelta(minutes=tick))
        tick += 1
        assert summary.checked == site.hits - before
        return site.hits - before

    assert [await timer() for _ in range(5)] == [1, 1, 1, 1, 1]  # every minute while failing < 5 times
    state = await store.get_state(KIND, cfg.id)
    assert state.status == "DOWN" and breaker_open(cfg, state.data)

    open_ticks = [await timer() for _ in range(10)]  # 10 minutes with the breaker open
    assert sum(open_ticks) == 2
    checked_at = [i for i, n in enumerate(open_ticks) if n]
    assert checked_at[1] - checked_at[0] == 5  # 5 minutes apart

    site.set(status=200)
    waited = 0
    while not await timer():  # the next breaker slot comes within 5 minutes
        waited += 1
        assert waited < 5
    assert (await store.get_state(KIND, cfg.id)).status == "UP"
    assert [await timer() for _ in range(3)] == [1, 1, 1]  # every minute again
    assert types(await events_of(store, cfg.id)) == ["MONITOR_DOWN", "MONITOR_UP"]


def test_due_monitors_uses_the_breaker_period_and_the_window():
    cfg = _cfg(interval_seconds=60)
    now = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
    healthy = {cfg.id: StateRow(cfg.id, {"status": "UP", "fails": 0}, "UP", "etag")}
    failing = {cfg.id: StateRow(cfg.id, {"status": "DOWN", "fails": 5}, "DOWN", "etag")}
    assert due_monitors([cfg], {}, now - timedelta(seconds=60), now) == [(cfg, minute(now))]  # never checked
    assert due_monitors([cfg], healthy, now - timedelta(seconds=60), now) == \
        [(cfg, latest_slot(cfg, now, False))]
    windows = [(now + timedelta(minutes=i - 1), now + timedelta(minutes=i)) for i in range(10)]
    assert sum(bool(due_monitors([cfg], healthy, a, b)) for a, b in windows) == 10
    assert sum(bool(due_monitors([cfg], failing, a, b)) for a, b in windows) == 2


# ----------------------------------------------------------------------------------------- concurrency


async def test_concurrent_runs_while_going_down_open_one_window_and_send_one_event(settings, storage, site):
    async with Store.open(settings) as store:
        cfg = await add_monitor(store, site.url, failure_threshold=1, interval_seconds=60)
        assert (await run_monitor(store, settings, cfg.id)).status == "UP"
    site.set(status=500)
    now = utcnow()

    async def manual():  # each like its own Function invocation, with its own storage session
        async with Store.open(settings) as own:
            return await run_monitor(own, settings, cfg.id)

    async def timer():
        async with Store.open(settings) as own:
            return await run_kind(own, settings, KIND, trigger="timer", now=now)

    runs = await asyncio.gather(manual(), timer(), manual(), timer(), manual())
    assert [s.checked for s in runs if hasattr(s, "checked")] == [1, 1]

    async with Store.open(settings) as store:
        windows = await store.list_downtimes(cfg.id)
        assert len(windows) == 1 and "ended_at" not in windows[0]
        assert types(await events_of(store, cfg.id)) == ["MONITOR_DOWN"]
        assert types(await queued(storage)) == ["MONITOR_DOWN"]
        assert (await store.get_state(KIND, cfg.id)).status == "DOWN"
        results = await store.query_results(cfg.id)
        slot = latest_slot(cfg, now, False)
        assert sum(r["ts"] == slot for r in results) == 1  # both timer runs of the tick: one row
        assert len(results) == 1 + 1 + 1  # the three concurrent run-nows were one check (they share its result)


async def test_two_timer_runs_of_the_same_tick_store_one_result(store, settings, site):
    cfg = await add_monitor(store, site.url, interval_seconds=60)
    now = utcnow()
    await asyncio.gather(run_kind(store, settings, KIND, trigger="timer", now=now),
                         run_kind(store, settings, KIND, trigger="timer", now=now))
    results = await store.query_results(cfg.id)
    assert len(results) == 1
    assert results[0]["ts"] == minute(now) and results[0]["outcome"] == "up"
    assert (await store.get_state(KIND, cfg.id)).status == "UP"
    assert await events_of(store, cfg.id) == []
    again = await run_kind(store, settings, KIND, trigger="timer", now=now)  # that tick has been done
    assert again.checked == 0
    assert len(await store.query_results(cfg.id)) == 1


# --------------------------------------------------------------------------------------------- isolation


async def test_one_unreadable_monitor_does_not_stop_the_others(store, settings, targets):
    good = [await add_monitor(store, targets.http().url, name=f"Site {i}") for i in range(2)]
    broken_id = uuid.uuid4().hex
    await store.insert_monitor({"RowKey": broken_id, "kind": KIND, "name": "Broken", "enabled": True,
                                "spec": '{"kind": "website", "name": "Broken", "url": "gopher://x'})
    failing = await add_monitor(store, targets.http(status=500).url, name="Failing")

    summary = await run_kind(store, settings, KIND, trigger="manual")
    assert summary.monitors == 4
    assert summary.checked == 3
    assert summary.errors == 1  # the unreadable definition is counted
    for cfg in good:
        [result] = await store.query_results(cfg.id)
        assert result["outcome"] == "up"
    [result] = await store.query_results(failing.id)
    assert result["outcome"] == "down"
    assert await store.query_results(broken_id) == []

    timer = await run_kind(store, settings, KIND, trigger="timer", now=utcnow() + timedelta(minutes=5))
    assert timer.errors == 1 and timer.monitors == 4  # still reported, still not stopping anything


def test_a_checker_error_goes_to_the_operator_and_leaves_the_outage_alone():
    cfg = _cfg(failure_threshold=1)
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    down = evaluate_updown(cfg, KIND, {}, DOWN, t0)
    assert [type(op) for op in down.ops] == [OpenDowntime]

    broken = CheckResult("error", error="checker failed: RuntimeError: boom")
    error = evaluate_updown(cfg, KIND, down.state, broken, t0 + timedelta(minutes=1))
    assert error.status == "ERROR"
    assert [e.type for e in error.events] == [EventType.MONITOR_ERROR]
    assert error.events[0].audience == "operator"
    assert "boom" in error.events[0].message
    assert error.ops == []  # no window opened or closed
    assert evaluate_updown(cfg, KIND, error.state, broken, t0 + timedelta(minutes=2)).events == []  # once

    resumed = evaluate_updown(cfg, KIND, error.state, DOWN, t0 + timedelta(minutes=3))
    assert resumed.status == "DOWN"
    assert [(e.type, e.audience) for e in resumed.events] == [(EventType.MONITOR_ERROR_CLEARED, "operator")]
    assert resumed.ops == []  # the same outage continues: no second window, no second MONITOR_DOWN
    up = evaluate_updown(cfg, KIND, resumed.state, UP, t0 + timedelta(minutes=4))
    assert [e.type for e in up.events] == [EventType.MONITOR_UP]
    assert up.ops[0].started_at == t0

    fresh = evaluate_updown(cfg, KIND, {}, broken, t0)
    assert fresh.status == "ERROR" and fresh.ops == []
    assert [e.audience for e in fresh.events] == ["operator"]
    assert evaluate_updown(cfg, KIND, fresh.state, UP, t0).status == "UP"


async def test_a_checker_error_event_is_stored_and_queued_for_the_operator(store, storage, settings, site):
    """What the engine does with an ERROR evaluation: the event goes out (to the operator), no window."""
    cfg = await add_monitor(store, site.url)
    t = utcnow()
    broken = CheckResult("error", error="checker failed: RuntimeError: boom")
    ev = evaluate_updown(cfg, KIND, {}, broken, t)
    await store.commit_state(KIND, cfg.id, ev.state, ev.status, None, payloads(ev.events, ev.ops))
    # The next cycle (a minute later) publishes it; the site itself is fine.
    await run_kind(store, settings, KIND, trigger="manual", now=utcnow() + timedelta(minutes=1))
    events = await events_of(store, cfg.id)
    assert types(events) == ["MONITOR_ERROR", "MONITOR_ERROR_CLEARED"]
    assert types(await queued(storage)) == ["MONITOR_ERROR", "MONITOR_ERROR_CLEARED"]
    assert all(Event.model_validate({**m, "details": {}}).audience == "operator" for m in await queued(storage))
    assert await store.list_downtimes(cfg.id) == []
    assert (await store.get_state(KIND, cfg.id)).status == "UP"


# ------------------------------------------------------------------------------------------------ outbox


async def test_an_outbox_row_left_by_a_crash_is_published_once_by_the_next_run(store, storage, settings, site):
    cfg = await add_monitor(store, site.url)
    site.set(status=500)
    started = utcnow() - timedelta(minutes=2)
    event = Event(type=EventType.MONITOR_DOWN, kind=KIND, monitor_id=cfg.id, monitor_name=cfg.name,
                  severity="critical", occurred_at=utcnow(), message="Shop is down: HTTP 500",
                  details={"since": started.isoformat()})
    state = {"status": "DOWN", "fails": 3, "oks": 0, "first_fail_at": started.isoformat(),
             "down_since": started.isoformat(), "notified_at": event.occurred_at.isoformat()}
    ops = [{"op": "open_downtime", "started_at": started.isoformat(), "reason": "HTTP 500"}]
    await store.commit_state(KIND, cfg.id, state, "DOWN", None,
                             [{"id": event.id, "event": event.model_dump(mode="json"), "ops": ops}])
    # … and the process died before publishing:
    assert await events_of(store, cfg.id) == [] and await queued(storage) == []
    assert await store.list_downtimes(cfg.id) == []

    # A run starting at once leaves the row alone: a live run could still be publishing it.
    assert (await run_kind(store, settings, KIND, trigger="manual")).events == 0
    assert await events_of(store, cfg.id) == [] and await queued(storage) == []

    later = utcnow() + timedelta(minutes=1)  # the next timer tick
    assert timedelta(minutes=1) > OUTBOX_GRACE
    summary = await run_kind(store, settings, KIND, trigger="manual", now=later)
    assert summary.events == 1
    again = await run_kind(store, settings, KIND, trigger="manual", now=later + timedelta(minutes=1))
    assert again.events == 0  # nothing left to publish the second time

    events = await events_of(store, cfg.id)
    assert [e["event_id"] for e in events] == [event.id]
    assert [m["id"] for m in await queued(storage)] == [event.id]
    [window] = await store.list_downtimes(cfg.id)
    assert window["started_at"] == started and window["reason"] == "HTTP 500"
    assert (await store.load_states(KIND))[1] == []
    assert (await store.get_state(KIND, cfg.id)).status == "DOWN"  # the run went on from the crashed state


# ------------------------------------------------------------------------------------------------- pause


async def test_a_paused_kind_is_not_checked_by_the_timer_but_run_now_still_works(store, settings, site):
    cfg = await add_monitor(store, site.url, interval_seconds=60)
    await store.set_kind_meta(KIND, paused=True)
    now = utcnow()
    paused = await run_kind(store, settings, KIND, trigger="timer", now=now)
    assert paused.paused and paused.checked == 0
    assert site.hits == 0
    assert await store.query_results(cfg.id) == []

    manual = await run_kind(store, settings, KIND, trigger="manual")
    assert not manual.paused and manual.checked == 1
    assert (await run_monitor(store, settings, cfg.id)).status == "UP"
    assert site.hits == 2
    assert [r["trigger"] for r in await store.query_results(cfg.id)] == ["manual", "manual"]

    await store.set_kind_meta(KIND, paused=False)
    resumed = await run_kind(store, settings, KIND, trigger="timer", now=now + timedelta(seconds=60))
    assert resumed.checked == 1 and site.hits == 3


# ------------------------------------------------------------------------------------------------ paging


async def test_results_page_newest_first_with_a_cursor_across_months(store, settings, site):
    cfg = await add_monitor(store, site.url)
    month_start = utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    slots = [month_start + timedelta(minutes=m) for m in (-3, -2, -1, 1, 2)]  # last month and this one
    for i, slot in enumerate(slots):
        site.set(status=500 if i % 2 else 200)
        await run_kind(store, settings, KIND, trigger="manual", now=slot)

    pages, before = [], None
    while True:
        page = await store.query_results(cfg.id, limit=2, before=before)
        if not page:
            break
        pages.append([r["ts"] for r in page])
        before = page[-1]["ts"]
    assert pages == [[slots[4], slots[3]], [slots[2], slots[1]], [slots[0]]]
    everything = await store.query_results(cfg.id, limit=50)
    assert [r["outcome"] for r in everything] == ["up", "down", "up", "down", "up"]
    assert [r["ts"] for r in await store.query_results(cfg.id, since=slots[2])] == [slots[4], slots[3], slots[2]]
