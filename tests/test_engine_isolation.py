"""One bad target never delays the others, a crash never invents an outage, run-now is one check.

Real Azurite, real sites on 127.0.0.1, the website kind, the CLI as a separate process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import add_monitor, events_of, types
from targets import targets  # noqa: F401 - fixtures

import monitors
from monitors.base import latest_slot
from monitors.contract import CheckResult
from shared.engine import run_kind, run_monitor
from shared.engine.outbox import publish
from shared.engine.settle import settle
from shared.errors import Invalid
from shared.manage.monitors import create_monitor, delete_monitor
from shared.storage import Store

KIND = "website"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def store(settings):
    async with Store.open(settings) as opened:
        yield opened


def utcnow() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------------ no check stalls its kind


async def test_a_hanging_target_does_not_hold_back_the_others_results_or_alerts(store, settings, targets):
    hanging, healthy, broken = targets.http(delay=30), targets.http(), targets.http(status=503)
    stuck = await add_monitor(store, hanging.url_for("/stuck"), name="Stuck", timeout_seconds=8)
    fine = [await add_monitor(store, healthy.url_for(f"/{n}"), name=f"Fine {n}") for n in range(50)]
    down = await add_monitor(store, broken.url, name="Broken", failure_threshold=1)

    tick = asyncio.create_task(run_kind(store, settings, KIND, trigger="timer", now=utcnow()))
    deadline = time.monotonic() + 7  # the stuck check runs for 8 s: everything else must be settled before
    settled = False
    while time.monotonic() < deadline and not settled:
        await asyncio.sleep(0.25)
        stored = [await store.query_results(cfg.id, limit=1) for cfg in fine]
        settled = all(stored) and types(await events_of(store, down.id)) == ["MONITOR_DOWN"] \
            and bool(await store.query_results(down.id, limit=1))
    assert settled, "the healthy monitors' results and the other monitor's DOWN waited for the hanging check"
    assert not tick.done() and await store.query_results(stuck.id) == []  # the stuck check is still running

    summary = await tick
    assert summary.checked == 52
    [stuck_result] = await store.query_results(stuck.id)
    assert stuck_result["outcome"] == "down" and "no answer within 8 s" in stuck_result["error"]
    assert (await store.get_state(KIND, down.id)).status == "DOWN"
    assert len(await store.list_downtimes(down.id)) == 1


async def test_a_tick_out_of_budget_starts_nothing_new_and_marks_the_rest_not_checked(store, settings, targets):
    slow = targets.http(delay=1.5)
    cfgs = [await add_monitor(store, slow.url_for(f"/{n}"), name=f"Slow {n}", failure_threshold=1)
            for n in range(4)]
    tight = settings.model_copy(update={"tick_budget_seconds": 1, "check_concurrency": 1})
    now = utcnow()
    summary = await run_kind(store, tight, KIND, trigger="timer", now=now)

    assert summary.checked == 1 and len(summary.not_checked) == 3  # the first started in time, the rest did not
    results = [await store.query_results(cfg.id) for cfg in cfgs]
    assert sum(1 for r in results if r) == 1 and all(r[0]["outcome"] == "up" for r in results if r)
    assert await events_of(store) == []  # never checked is not DOWN
    [tick] = await store.list_ticks(KIND, now - timedelta(minutes=1))
    assert tick["not_checked"] == 3 and tick["checked"] == 1


async def test_a_check_that_cannot_fit_a_tick_is_refused_when_it_is_created(store):
    with pytest.raises(Invalid) as refused:
        await create_monitor(store, {"kind": KIND, "name": "Patient", "url": "http://127.0.0.1:9/",
                                     "attempts": 4, "timeout_seconds": 30})
    assert "attempts × timeout_seconds is 120 s" in str(refused.value.details)
    assert await store.list_monitors(KIND) == []


# ------------------------------------------------------------------------------- a crash never invents an outage


async def test_a_crash_after_the_state_write_does_not_count_the_same_failure_twice(store, settings, targets):
    site = targets.http()
    cfg = await add_monitor(store, site.url, failure_threshold=2, interval_seconds=60)
    first = utcnow() - timedelta(minutes=3)
    await run_kind(store, settings, KIND, trigger="timer", now=first)  # UP, and the kind's last tick is recorded
    site.set(status=500)

    # The next tick checks, commits the state for its slot (one failure of two) and dies before writing the result
    # row, recording the tick or publishing anything: what a kill -9 between those writes leaves behind.
    now = first + timedelta(minutes=1)
    slot = latest_slot(cfg, now, None)
    failing = CheckResult("down", 3.0, "HTTP 500 (expected 200-399)", {"status_code": 500}, now)
    row = await store.get_state(KIND, cfg.id)
    await settle(store, monitors.kind_of(KIND), cfg, row, failing, slot, now)

    rerun = await run_kind(store, settings, KIND, trigger="timer", now=now)  # the host runs the tick again
    assert rerun.checked == 1
    state = await store.get_state(KIND, cfg.id)
    assert state.status == "UP"  # one failing check of two allowed: not DOWN
    assert await events_of(store, cfg.id) == [] and await store.list_downtimes(cfg.id) == []
    newest = (await store.query_results(cfg.id))[0]
    assert newest["ts"] == slot  # its result row is still written

    later = await run_kind(store, settings, KIND, trigger="timer", now=now + timedelta(minutes=1))
    assert later.checked == 1 and (await store.get_state(KIND, cfg.id)).status == "DOWN"  # the real second one
    assert types(await events_of(store, cfg.id)) == ["MONITOR_DOWN"]


async def test_outbox_rows_left_by_crashes_never_open_two_windows(store, settings, targets, monkeypatch):
    site = targets.http(status=500)
    cfg = await add_monitor(store, site.url, failure_threshold=1)
    kind = monitors.kind_of(KIND)
    t0 = utcnow() - timedelta(minutes=10)
    left: list[Any] = []
    # Three ticks that each committed their state and died before publishing: DOWN, UP, DOWN again.
    for minute, outcome in ((0, "down"), (1, "up"), (2, "down")):
        at = t0 + timedelta(minutes=minute)
        result = CheckResult(outcome, 2.0, "HTTP 500 (expected 200-399)" if outcome == "down" else None,
                             {"status_code": 500 if outcome == "down" else 200}, at)
        _, rows = await settle(store, kind, cfg, await store.get_state(KIND, cfg.id), result, at, at)
        left += rows

    open_at_once: list[int] = []
    real_open = store.open_downtime

    async def watched_open(monitor_id: str, started_at: datetime, reason: str | None) -> None:
        await real_open(monitor_id, started_at, reason)
        windows = await store.list_downtimes(monitor_id)
        open_at_once.append(sum(1 for w in windows if "ended_at" not in w))

    monkeypatch.setattr(store, "open_downtime", watched_open)
    down_a, up_a, down_b = left
    await publish(store, [down_a, down_b, up_a])  # in whatever order the next run finds them

    assert open_at_once == [1, 1]
    windows = sorted(await store.list_downtimes(cfg.id), key=lambda w: w["started_at"])
    assert [("ended_at" in w) for w in windows] == [True, False]
    assert types(await events_of(store, cfg.id)) == ["MONITOR_DOWN", "MONITOR_UP", "MONITOR_DOWN"]


async def test_deleting_a_monitor_while_its_check_settles_leaves_no_state_behind(store, settings, targets):
    site = targets.http(delay=1.0, status=500)
    created = await create_monitor(store, {"kind": KIND, "name": "Going away", "url": site.url, "attempts": 1,
                                           "timeout_seconds": 5, "failure_threshold": 1})
    mid = created["id"]
    tick = asyncio.create_task(run_kind(store, settings, KIND, trigger="manual"))
    while site.hits == 0:
        await asyncio.sleep(0.02)
    await delete_monitor(store, mid)  # while the check is in flight: its state is written after the delete
    await tick
    assert await store.get_state(KIND, mid) is not None  # what the in-flight run left

    await run_kind(store, settings, KIND, trigger="timer", now=utcnow())
    states, outbox = await store.load_states(KIND)
    assert mid not in states and not [r for r in outbox if r.owner_id == mid]


# --------------------------------------------------------------------------------------------- run now


async def test_five_run_nows_at_once_are_one_check(store, settings, targets):
    site = targets.http(status=500, delay=0.3)
    cfg = await add_monitor(store, site.url, failure_threshold=3, breaker_failures=3)
    outcomes = await asyncio.gather(*(run_monitor(store, settings, cfg.id) for _ in range(5)))

    assert site.hits == 1
    assert len({o.slot for o in outcomes}) == 1 and {o.result.outcome for o in outcomes} == {"down"}
    state = await store.get_state(KIND, cfg.id)
    assert state.status == "PENDING" and state.data["fails"] == 1  # one failure, not five: no DOWN, no breaker
    assert await events_of(store, cfg.id) == [] and len(await store.query_results(cfg.id)) == 1


def test_run_nows_from_separate_processes_share_one_check(storage, env, targets):
    site = targets.http(status=500, delay=2.0)
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    created = subprocess.run([sys.executable, "-m", "monitors", "--json", "add", "website", "name=Shared",
                              f"url={site.url}", "attempts=1", "timeout_seconds=10", "failure_threshold=3"],
                             cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    mid = json.loads(created.stdout)["id"]
    runs = [subprocess.Popen([sys.executable, "-m", "monitors", "--json", "run", mid], cwd=ROOT, env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [run.communicate(timeout=60) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in outputs]
    assert site.hits == 1
    shown = [json.loads(out) for out, _ in outputs]
    assert {s["outcome"] for s in shown} == {"down"}
