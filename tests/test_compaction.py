"""Compact results change nothing a user sees: on a recorded week of mixed results (tests/fixtures/results), the
results API (every page), uptime over each window and the status page answer the same before the hourly compaction
and after it — once the blocks are gone and only fold rows, rows and rollups remain — while storage holds a
fraction of the entities."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitors import parse_spec, to_entity_spec
from monitors.contract import CheckResult
from shared import manage, uptime
from shared.engine.run import TickSummary
from shared.engine.settle import Outcome
from shared.engine.writer import ResultWriter
from shared.manage import history
from shared.storage import Store, hour_floor
from shared.web.status_page import status_page_model

WEEK = json.loads((Path(__file__).parent / "fixtures/results/week.json").read_text())


def _data(index: int) -> dict[str, Any]:
    return {k: datetime.fromisoformat(v["$dt"]) if isinstance(v, dict) else v for k, v in WEEK["data"][index].items()}


async def _record_week(store: Store, start: datetime) -> tuple[list[str], int]:
    """Write the recording as the engine does (the writer: rows and blocks; "l" checks as the version before
    blocks wrote them, plain rows). Returns the monitor ids and the number of distinct checks."""
    ids = []
    for spec in WEEK["monitors"]:
        mid = uuid.uuid4().hex
        cfg = parse_spec({"kind": "website", "id": mid, "name": spec["name"], "url": f"https://{spec['name']}.test/",
                          "interval_seconds": spec["interval"], "public": True})
        await store.insert_monitor({"RowKey": mid, "kind": "website", "name": cfg.name, "enabled": True,
                                    "spec": to_entity_spec(cfg)})
        ids.append(mid)
    writer: ResultWriter | None = None
    legacy, distinct = [], set()
    for n, (m, slot_s, dt_us, outcome, latency, status, trigger, error, data, maint, flags) in \
            enumerate(WEEK["checks"]):
        slot = start + timedelta(seconds=slot_s)
        checked = slot + timedelta(microseconds=dt_us)
        distinct.add((m, slot_s))
        result = CheckResult(outcome, latency, error, _data(data), checked)
        done = Outcome(ids[m], WEEK["monitors"][m]["name"], slot, result, status=status, checked_at=checked,
                       maintenance=maint, steady="s" in flags)
        if "l" in flags:
            fields = {"outcome": outcome, "latency_ms": latency, "error": error, "checked_at": checked,
                      "trigger": trigger, "status": status, **_data(data)}
            legacy.append(store.result_entity(ids[m], slot, {k: v for k, v in fields.items() if v is not None}))
            continue
        if writer is None or n % 40 == 0 or "d" in flags:  # ticks of a few slots; a duplicate is another run
            if writer is not None:
                await writer.close()
            writer = ResultWriter(store, TickSummary("website", trigger, slot), slot)
        writer.add(done, trigger)
    if writer is not None:
        await writer.close()
    await store.write_results(legacy)
    return ids, len(distinct)


async def _answers(store: Store, ids: list[str], now: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mid in ids:
        pages, before = [], None
        while True:
            page = await history.results(store, mid, limit=317, before=before)
            pages.append(page["items"])
            if not page["next_before"]:
                break
            before = datetime.fromisoformat(page["next_before"])
        out[f"{mid}/results"] = pages
        for window in history.WINDOWS:
            found = await history.uptime(store, mid, window, now=now)
            out[f"{mid}/uptime/{window}"] = {k: v for k, v in found.items() if k != "rolled_up_until"}
    page = await status_page_model(store, now=now)
    out["status page"] = {"groups": page["groups"], "incidents": page["incidents"], "banner": page["banner"]}
    return out


async def _count(store: Store, table: str) -> int:
    return len(await store.query(table, "PartitionKey ne ''", select=["RowKey"]))


async def test_answers_are_identical_before_and_after_compaction(settings):
    """One recorded week (recording it is most of this test's time), compacted, then purged: the answers stay the
    same at each step; every-monitor readers count what one-by-one counts; the purge keeps the last day's blocks."""
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    start = hour_floor(now) - timedelta(days=7)
    async with Store.open(settings) as store:
        ids, checks = await _record_week(store, start)
        before = await _answers(store, ids, now)
        listed = sum(len(items) for mid in ids for items in before[f"{mid}/results"])
        assert listed == checks  # every check of the week, once (a duplicate run's check is one result)
        rows_before = await _count(store, "results")

        done = await manage.rollup(store, now=now)
        assert done["fold_rows"] > 0
        rolled_until, _ = await store.compaction_marks()
        assert rolled_until == hour_floor(now - timedelta(minutes=11))
        await _bulk_counts_what_one_by_one_counts(store, ids, now)

        blocks = await _count(store, "blocks")
        purged = await manage.purge(store, settings, now=now)
        assert 0 < purged["blocks"] < blocks  # the last day's blocks stay a day; older ones go
        left = await store.query("blocks", "PartitionKey ne ''", select=["PartitionKey"])
        assert min(e["PartitionKey"] for e in left) >= (rolled_until - timedelta(days=1)).strftime("%Y%m%d%H")
        assert await _answers(store, ids, now) == before

        await store.purge_blocks(rolled_until)  # what the daily purge does a day later: fold rows answer alone
        after = await _answers(store, ids, now)
        for key in before:
            assert after[key] == before[key], key
        rows_after = await _count(store, "results")
        assert rows_after > rows_before  # fold rows were added next to the rows of failures and changes
        assert rows_after < checks / 6  # … yet the week is a few hundred entities, not one per check
        found = before[f"{ids[0]}/uptime/7d"]
        assert 0 < found["uptime_percent"] < 100 and found["checks"] > 1900

        again = await manage.rollup(store, now=now)  # nothing new to compact: a second run changes nothing
        assert again["hours"] == 0
        assert await _answers(store, ids, now) == after


async def _bulk_counts_what_one_by_one_counts(store: Store, ids: list[str], now: datetime) -> None:
    """Snapshots, Prometheus and digests read every monitor's tally from hour summaries and the blocks since the
    watermark; it is the per-monitor answer, to the check."""
    since = hour_floor(now) - timedelta(hours=30)  # whole hours: both count rollups from the same hour
    rolled_until = await uptime.watermark(store)
    bulk = await uptime.everyone(store, since, ids)
    assert bulk.bulk  # read from summaries and blocks, not one monitor after another
    for mid in ids:
        one = await uptime.tally_since(store, mid, since, rolled_until)
        assert bulk.tally(mid).as_rollup() == pytest.approx(one.as_rollup(), rel=1e-12), mid  # sums, any order
        assert await uptime.latest_result(store, mid, bulk) == (await store.query_results(mid, limit=1))[0]


async def _steady_tick(store: Store, ids: list[str], slot: datetime) -> None:
    writer = ResultWriter(store, TickSummary("website", "timer", slot), slot)
    for mid in ids:
        result = CheckResult("up", 12.0, None, {"status_code": 200}, slot)
        writer.add(Outcome(mid, "m", slot, result, status="up", checked_at=slot, steady=True), "timer")
    await writer.close()


async def test_a_new_install_reads_every_monitor_at_once_before_its_first_compaction(settings):
    """With no row from before blocks (a new install), snapshots, Prometheus and digests read everyone in bulk from
    the first tick on, not one monitor after another until the first compaction."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    ids = [uuid.uuid4().hex for _ in range(5)]
    async with Store.open(settings) as store:
        await _steady_tick(store, ids, now - timedelta(minutes=1))
        await _steady_tick(store, ids, now)
        found = await uptime.everyone(store, now - timedelta(hours=24), ids)
        assert found.bulk
        assert [found.tally(mid).checks for mid in ids] == [2] * 5


async def test_rows_from_before_blocks_still_count_until_the_first_compaction(settings):
    """An install upgraded from the version before blocks, not compacted yet: its old rows count, read monitor by
    monitor."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    ids = [uuid.uuid4().hex for _ in range(3)]
    old = now - timedelta(hours=3)
    async with Store.open(settings) as store:
        await store.write_results([store.result_entity(ids[0], old, {"outcome": "down", "checked_at": old,
                                                                     "trigger": "timer", "status": "down"})])
        await _steady_tick(store, ids, now - timedelta(minutes=1))
        await _steady_tick(store, ids, now)
        found = await uptime.everyone(store, now - timedelta(hours=24), ids)
        assert not found.bulk
        assert (found.tally(ids[0]).checks, found.tally(ids[0]).up) == (3, 2)
        assert [found.tally(mid).checks for mid in ids[1:]] == [2, 2]


def test_the_compaction_waits_longer_than_any_run_can_last():
    """An hour is compacted only once no invocation that started in it can still be writing: the lag is longer
    than host.json's functionTimeout, and the timer fires after the lag."""
    from shared.manage.maintenance import COMPACT_LAG
    from shared.triggers.timers import ROLLUP_SCHEDULE

    host = json.loads((Path(__file__).resolve().parent.parent / "host.json").read_text())
    h, m, s = (int(x) for x in host["functionTimeout"].split(":"))
    assert timedelta(hours=h, minutes=m, seconds=s) < COMPACT_LAG
    assert timedelta(minutes=int(ROLLUP_SCHEDULE.split()[1])) >= COMPACT_LAG
