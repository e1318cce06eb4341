"""The rate cap (shared/notify/ratecap.py): at most ALERT_RATE_LIMIT_PER_HOUR messages an hour per
channel-recipient, then one summary.

Real parts: Azurite (the rate rows, the events queue), the real queue function (`Host`) and a real SMTP server.
The summary task is due at the end of the hour; the tests hand its message to the real queue function at once.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures
from test_email import Host, add_monitor, down_event, publish

from shared.events import Event, EventType
from shared.notify import ratecap
from shared.settings import get_settings
from shared.storage import EVENTS_QUEUE, Store

ALICE, BOB, CAROL = "alice@example.org", "bob@example.net", "carol@example.org"


@pytest.fixture
def capped(env, storage, smtp):
    env(**smtp.settings(ALERT_RATE_LIMIT_PER_HOUR="3"))
    return get_settings()


async def summary_task(host: Host, store: Store, key: str) -> None:
    """Run the hour's summary task of `key` through the real queue function (its message as the cap queued it,
    without waiting for the end of the hour)."""
    rows = [r for r in await store.list_rows(ratecap.PK) if r["key"] == key]
    assert rows, f"no rate row for {key}"
    await host.send(EVENTS_QUEUE, json.dumps({"task": "summary", "row": rows[0]["RowKey"], "key": key}))
    await host.drain(EVENTS_QUEUE, "send_event_email")


def event(type_: EventType, name: str, mid: str | None = None) -> Event:
    return Event(type=type_, kind="website", monitor_id=mid or name.lower().ljust(32, "0")[:32], monitor_name=name)


# ---------------------------------------------------------------------------------------------- end to end


async def test_ten_downs_to_one_recipient_are_three_messages_then_one_summary(storage, capped, smtp):
    settings = capped
    host = Host(storage)
    async with Store.open(settings) as store:
        events = []
        for i in range(1, 11):
            mid = await add_monitor(store, [ALICE, BOB], name=f"Shop {i}")
            events.append(await publish(store, down_event(mid, name=f"Shop {i}")))
        carol = await add_monitor(store, [CAROL], name="Blog")
        await publish(store, down_event(carol, name="Blog"))
        await host.drain(EVENTS_QUEUE, "send_event_email", limit=40)

        for rcpt in (ALICE, BOB):  # each recipient counted on its own
            assert [m.subject for m in smtp.to(rcpt)] == [f"[DOWN] Shop {i}: HTTP 500 (expected 200-399)"
                                                          for i in (1, 2, 3)]
        assert len(smtp.to(CAROL)) == 1  # another recipient's storm does not cap her
        for ev in events[3:]:
            records = {r["RowKey"]: r["status"] for r in await store.list_deliveries(ev["id"])}
            assert records == {f"email:{ALICE}": "folded", f"email:{BOB}": "folded"}

        await summary_task(host, store, f"email:{ALICE}")
        await summary_task(host, store, f"email:{ALICE}")  # redelivered: nothing more
        (summary,) = smtp.to(ALICE)[3:]
        assert summary.subject == "[SUMMARY] 7 more changes in the last hour"
        text = summary.part("plain")
        assert "7 more changes: 7 down — Shop 4, Shop 5, Shop 6, Shop 7, Shop 8, Shop 9, Shop 10" in text
        assert "(+" not in text and "ALERT_RATE_LIMIT_PER_HOUR (3 messages)" in text
        assert len(smtp.to(BOB)) == 3  # his summary is his own task
        await summary_task(host, store, f"email:{BOB}")
        assert smtp.to(BOB)[-1].subject == "[SUMMARY] 7 more changes in the last hour"


# ------------------------------------------------------------------------------------------ the functions


async def test_the_cap_resets_in_the_next_hour(capped):
    settings = capped
    key, ten = "email:ops@example.org", datetime(2026, 3, 2, 10, 0, 5, tzinfo=UTC)
    async with Store.open(settings) as store:
        await store.ensure_queues()
        got = [await ratecap.admit(store, settings, key, "ops", event(EventType.MONITOR_DOWN, f"S{i}"),
                                   now=ten + timedelta(minutes=10 * i)) for i in range(5)]
        assert got == [True, True, True, False, False]
        eleven = datetime(2026, 3, 2, 11, 0, 0, tzinfo=UTC)
        assert await ratecap.admit(store, settings, key, "ops", event(EventType.MONITOR_DOWN, "S9"), now=eleven)
        # the same event asked again (a retry after a crash) gets the same answer and is counted once
        again = event(EventType.MONITOR_UP, "S0")
        assert await ratecap.admit(store, settings, key, "ops", again, now=eleven)
        assert await ratecap.admit(store, settings, key, "ops", again, now=eleven)
        row = await store.get_row(ratecap.PK, ratecap.row_key(key, eleven))
        assert row is not None and row["sent"] == 2


async def test_ten_admits_at_once_let_exactly_the_cap_through(capped):
    settings = capped
    async with Store.open(settings) as store:
        await store.ensure_queues()
        got = await asyncio.gather(*(ratecap.admit(store, settings, "c.abc:-", "Slack", event(
            EventType.MONITOR_DOWN, f"Site {i}")) for i in range(10)))
        assert sorted(got) == [False] * 7 + [True] * 3
        (row,) = await store.list_rows(ratecap.PK)
        assert row["sent"] == 3 and row["folded"] == 7 and json.loads(row["counts"])["down"] == 7


async def test_the_summary_counts_by_change_and_names_the_first_twenty(env, storage):
    env(ALERT_RATE_LIMIT_PER_HOUR="1")
    settings = get_settings()
    key = "email:ops@example.org"
    async with Store.open(settings) as store:
        await store.ensure_queues()
        assert await ratecap.admit(store, settings, key, "ops", event(EventType.MONITOR_DOWN, "First"))
        kinds = [EventType.MONITOR_DOWN] * 9 + [EventType.MONITOR_UP] * 5 + [EventType.THRESHOLD_BREACH_LOW] * 2 \
            + [EventType.RESOURCE_RECOVERED] + [EventType.STOCK_INCREASED] * 8
        for i, type_ in enumerate(kinds):
            assert not await ratecap.admit(store, settings, key, "ops", event(type_, f"M{i:02d}"))
        (row,) = await store.list_rows(ratecap.PK)
        summary = ratecap._summary(row, 1)
    assert summary["subject"] == "[SUMMARY] 25 more changes in the last hour"
    names = ", ".join(f"M{i:02d}" for i in range(20))
    assert summary["short"] == f"25 more changes: 9 down, 5 up, 2 alerts, 1 recovered, 8 other — {names} (+5 more)"


def test_summary_words():
    assert ratecap.summary_text(14, {"down": 9, "up": 5}, ["Shop", "API"], 5) == (
        "[SUMMARY] 14 more changes in the last hour", "14 more changes: 9 down, 5 up — Shop, API (+3 more)")
    assert ratecap.summary_text(1, {"alert": 1}, ["Shop"], 1) == (
        "[SUMMARY] 1 more change in the last hour", "1 more change: 1 alert — Shop")


async def test_no_cap_when_the_limit_is_zero(env, storage):
    env(ALERT_RATE_LIMIT_PER_HOUR="0")
    settings = get_settings()
    async with Store.open(settings) as store:
        for i in range(30):
            assert await ratecap.admit(store, settings, "email:a@example.org", "a", event(EventType.MONITOR_DOWN,
                                                                                          f"S{i}"))
        assert await store.list_rows(ratecap.PK) == []


async def test_nothing_folded_means_no_summary(capped, smtp):
    settings = capped
    async with Store.open(settings) as store:
        assert await ratecap.flush(store, settings, {"task": "summary", "row": "nope", "key": "email:x@e.org"}) \
            == "nothing to summarise"
        for i in range(3):
            assert await ratecap.admit(store, settings, f"email:{ALICE}", ALICE, event(EventType.MONITOR_UP, f"S{i}"))
        (row,) = await store.list_rows(ratecap.PK)
        assert await ratecap.flush(store, settings, {"row": row["RowKey"]}) == "nothing to summarise"
    assert smtp.messages == []

