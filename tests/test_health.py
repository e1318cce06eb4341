"""/health's timers: missed runs counted exactly (pure tests on timer_gaps with built tick lists), and a paused
kind shown as paused — through the real v1/health function, with tick rows written via Store.record_tick."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from apphelp import call

from shared.engine.run import TickSummary
from shared.manage.health import timer_gaps
from shared.storage import Store

T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)


def at(minute: int, second: float = 0.0) -> datetime:
    return T0 + timedelta(minutes=minute, seconds=second)


def ticks(*times: datetime, trigger: str = "timer") -> list[dict]:
    return [{"trigger": trigger, "started_at": t} for t in times]


def missed(gaps: list[dict]) -> list[tuple[str, str, int, bool]]:
    return [(g["from"][11:19], g["to"][11:19], g["missed_runs"], g["ongoing"]) for g in gaps]


def test_two_missed_runs_between_runs_that_started_a_little_after_the_minute():
    # 10:01 and 10:02 did not run: two missed runs (the old arithmetic said one: 2:59.2 is less than 3 periods)
    gaps = timer_gaps(ticks(at(0, 1.2), at(3, 0.4)), now=at(3, 30))
    assert missed(gaps) == [("10:00:01", "10:03:00", 2, False)]
    assert missed(timer_gaps(ticks(at(0), at(3)), now=at(3, 30))) == [("10:00:00", "10:03:00", 2, False)]


def test_one_missed_run_is_a_gap_but_jitter_a_late_or_a_slightly_early_start_is_none():
    # 10:01 did not run (the old code listed nothing below two whole periods between runs)
    assert missed(timer_gaps(ticks(at(0, 2), at(2, 0.5)), now=at(2, 20))) == [("10:00:02", "10:02:00", 1, False)]
    # every minute ran: 10:03 40 s late, 10:05 half a second early
    runs = ticks(at(0, 3), at(1, 0.2), at(2, 4), at(3, 40), at(4, 1), at(4, 59.5), at(6, 0.1))
    assert timer_gaps(runs, now=at(6, 30)) == []


def test_an_ongoing_gap_counts_the_slots_between_the_last_run_and_now():
    assert missed(timer_gaps(ticks(at(0, 1.5)), now=at(3, 0.5))) == [("10:00:01", "10:03:00", 2, True)]
    assert missed(timer_gaps(ticks(at(0, 1.5)), now=at(2, 59.9))) == [("10:00:01", "10:02:59", 1, True)]
    # the run of the current minute may still be going on (a row is written when it ends): not missed yet
    assert timer_gaps(ticks(at(0, 1.5)), now=at(1, 30)) == []
    assert timer_gaps(ticks(at(0, 1.5), at(1, 2)), now=at(2, 0.5)) == []


def test_several_gaps_in_an_hour_and_other_triggers_do_not_fill_them():
    runs = [at(m, 1 + (m % 3) * 0.7) for m in range(60) if not 11 <= m <= 14 and m != 40]
    gaps = timer_gaps(ticks(*runs) + ticks(at(12, 5), at(40, 3), trigger="manual"), now=at(75, 10))
    assert missed(gaps) == [("10:10:01", "10:15:01", 4, False), ("10:39:01", "10:41:02", 1, False),
                            ("10:59:02", "11:15:10", 15, True)]
    assert sum(g["missed_runs"] for g in gaps) == 4 + 1 + 15
    assert timer_gaps([], now=at(5)) == []


def tick_row(kind: str, started: datetime, paused: bool, monitors: int = 0) -> dict:
    summary = TickSummary(kind, "timer", started_at=started, due_at=started.replace(second=0, microsecond=0),
                          finished_at=started + timedelta(milliseconds=300), paused=paused)
    if not paused:
        summary.monitors = summary.checked = monitors
    return summary.record()


async def test_a_paused_kind_is_shown_paused_with_its_last_real_run(settings):
    now = datetime.now(UTC)
    if not 2 <= now.second < 45:  # the rows and the /health call below fall into one and the same minute
        await asyncio.sleep((62 - now.second) % 60)
        now = datetime.now(UTC)
    async with Store.open(settings) as store:
        # website: checked 3 monitors each minute, then paused 5 minutes ago; the timer still runs (no-ops)
        for k in range(9, 4, -1):
            await store.record_tick("website", tick_row("website", now - timedelta(minutes=k), False, monitors=3))
        for k in range(4, -1, -1):
            await store.record_tick("website", tick_row("website", now - timedelta(minutes=k), True))
        await store.set_kind_meta("website", paused=True)
        # stock: paused for the whole window — only paused no-ops
        for k in range(5, -1, -1):
            await store.record_tick("stock", tick_row("stock", now - timedelta(minutes=k), True))
        await store.set_kind_meta("stock", paused=True)
        # parts: running, one run a while ago, then nothing — an ongoing gap, however paused the others are
        await store.record_tick("parts", tick_row("parts", now - timedelta(minutes=10), False, monitors=1))

    status, body = await call("health", "GET", "v1/health")
    assert status == 200
    website, stock, parts = (body["timers"][k] for k in ("website", "stock", "parts"))
    assert website["paused"] is True
    last = website["last_run"]
    assert last["monitors"] == 3 and last["checked"] == 3  # the last run that checked, not a paused no-op
    assert datetime.fromisoformat(last["started_at"]) == now - timedelta(minutes=5)
    assert website["runs_24h"] == 5  # the five that were not paused
    assert website["gaps_24h"] == []  # paused minutes: the timer ran
    assert stock["paused"] is True and stock["last_run"] is None and stock["runs_24h"] == 0
    assert stock["gaps_24h"] == []
    assert parts["paused"] is False and parts["runs_24h"] == 1 and parts["last_run"]["monitors"] == 1
    (gap,) = parts["gaps_24h"]
    assert gap["ongoing"] is True and gap["missed_runs"] == 9
