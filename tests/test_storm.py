"""The storm guard (shared/notify/storm.py): checker errors with one cause are one operator notice.

Real parts: Azurite (the group rows, the events queue with its delayed tasks), the WHMCS stand-in
(tests/whmcs_fake.py) making real stock errors through the real engine, the real queue function (`Host`) and a
real SMTP server. ERROR_GROUP_SECONDS is 1 here, so a group's task comes due while the test drains the queue.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from helpers import events_of
from smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures
from test_email import Host
from whmcs_fake import whmcs  # noqa: F401 - fixture

from shared import manage
from shared.engine import run_kind
from shared.events import Event, EventType
from shared.notify import storm
from shared.settings import get_settings
from shared.storage import EVENTS_QUEUE, Store

OPS, ALICE = "ops@example.org", "alice@example.org"


# ------------------------------------------------------------------------------------------------ helpers


async def settle(host: Host, timeout: float = 30) -> None:
    """Run the queue function until the events queue is empty, delayed tasks included (they come due within
    ERROR_GROUP_SECONDS = 1)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await host.drain(EVENTS_QUEUE, "send_event_email", limit=200)
        if await host.count(EVENTS_QUEUE) == 0:
            return
        if loop.time() > deadline:
            raise AssertionError("the events queue did not empty")
        await asyncio.sleep(0.2)


async def stock_monitors(store: Store, whmcs: Any, count: int) -> dict[str, str]:
    """`count` stock monitors of products the WHMCS stand-in has: {monitor id: product name}."""
    out = {}
    for pid in range(1, count + 1):
        name = f"VPS {pid:02d}"
        whmcs.add(pid, name, 10)
        view = await manage.create_monitor(store, {"kind": "stock", "product_id": pid, "recipients": [ALICE]})
        out[view["id"]] = name
    return out


def error(mid: str, name: str, text: str, kind: str = "stock") -> Event:
    """A MONITOR_ERROR as monitors/policy.py error_policy makes it."""
    return Event(type=EventType.MONITOR_ERROR, kind=kind, monitor_id=mid, monitor_name=name, severity="critical",
                 message=f"Checker error: {text}", details={"error": text})


def cleared(mid: str, name: str, text: str, kind: str = "stock") -> Event:
    return Event(type=EventType.MONITOR_ERROR_CLEARED, kind=kind, monitor_id=mid, monitor_name=name,
                 message="The checker works again.", details={"error": text})


async def notices(store: Store) -> list[dict[str, Any]]:
    """The group notices published (events with details["group"]), oldest first."""
    rows = [r for r in await store.list_events(limit=500) if "group" in json.loads(r.get("details") or "{}")]
    return sorted(rows, key=lambda r: r["occurred_at"])


def task(cause: str, gen: int, action: str) -> dict[str, Any]:
    return {"task": "group", "cause": cause, "gen": gen, "action": action}


@pytest.fixture
def grouping(env, storage, smtp, whmcs):
    env(**smtp.settings(ADMIN_EMAIL_RECIPIENTS=OPS), **whmcs.settings(), ERROR_GROUP_SECONDS="1")
    return get_settings()


@pytest.fixture
def grouped(env, storage):
    """Settings with grouping on (the test suite's default is ERROR_GROUP_SECONDS=0: told at once)."""
    env(ERROR_GROUP_SECONDS="1")
    return get_settings()


# ------------------------------------------------------------------------------------------------ causes

WHMCS_AT = "WHMCS at https://b.example/includes/api.php: connection refused"


def test_one_cause_for_what_every_monitor_of_a_kind_says_about_one_failure():
    refused = [f"WHMCS: cannot connect to 127.0.0.1:{port}: connection refused" for port in (8443, 9443)]
    assert storm.cause_of("stock", refused[0]) == storm.cause_of("stock", refused[1])
    assert storm.cause_of("stock", WHMCS_AT)[0] == storm.cause_of(
        "stock", "WHMCS at https://b.example/other/path.php: connection refused")[0]
    # a product's number and the name WHMCS gives it are the monitor's, not the cause's
    gone = {storm.cause_of("stock", f"product {pid} is not in WHMCS's reply: it was deleted, or these API "
                                    "credentials cannot see it") for pid in (2, 17, 301)}
    assert len(gone) == 1
    no_stock = {storm.cause_of("stock", f"product {pid} ({name}): it has no stock control in WHMCS (turn on Stock "
                                        "Control for the product, or delete this monitor)")[0]
                for pid, name in ((11, "Shared hosting"), (12, "Reseller"))}
    assert len(no_stock) == 1
    # InvenTree refusing the token: one cause for every parts monitor, whatever the part
    tokens = {storm.cause_of("parts", f"InvenTree refused the API token set in INVENTREE_TOKEN: HTTP {code} "
                                      "Invalid token.")[0] for code in (401, 403)}
    assert len(tokens) == 1
    parts = {storm.cause_of("parts", f"part pk {pk} has no number in '{field}', the INVENTREE_AVAILABLE_FIELD "
                                     "setting")[0] for pk, field in ((12, "in_stock"), (907, "unallocated"))}
    assert len(parts) == 1


def test_different_failures_hosts_and_kinds_are_different_causes():
    assert storm.cause_of("stock", "WHMCS answered HTTP 503")[0] != storm.cause_of(
        "stock", "WHMCS refused GetProducts: Authentication Failed (check WHMCS_IDENTIFIER and WHMCS_SECRET)")[0]
    assert storm.cause_of("website", "cannot connect to a.example:443: connection refused")[0] != storm.cause_of(
        "website", "cannot connect to b.example:443: connection refused")[0]
    assert storm.cause_of("stock", "the check did not finish within 30 s")[0] != storm.cause_of(
        "parts", "the check did not finish within 30 s")[0]
    # the text says what stays: the host, the words; "…" where a monitor's own part was
    assert storm.normalise(WHMCS_AT) == "WHMCS at https://b.example: connection refused"
    assert storm.normalise("WHMCS: cannot connect to 127.0.0.1:8443: connection refused") == \
        "WHMCS: cannot connect to 127.0.0.1:…: connection refused"


# ---------------------------------------------------------------------------------------------- end to end


async def test_one_whmcs_outage_of_twenty_stock_monitors_is_one_notice_and_one_cleared(storage, grouping, smtp,
                                                                                        whmcs):
    settings = grouping
    host = Host(storage)
    async with Store.open(settings) as store:
        await store.ensure_queues()
        mons = await stock_monitors(store, whmcs, 20)
        await run_kind(store, settings, "stock", trigger="manual")
        await settle(host)
        assert smtp.messages == []  # the first records: nothing to tell

        whmcs.fail("503")
        down = await run_kind(store, settings, "stock", trigger="manual")
        assert down.errors == 20
        await settle(host)
        (told,) = smtp.to(OPS)
        assert told.subject == "[CHECKER ERROR] 20 stock monitors: WHMCS answered HTTP 503"
        for name in mons.values():
            assert name in told.part("plain")
        for mid in mons:
            (ev,) = [e for e in await events_of(store, mid) if e["type"] == "MONITOR_ERROR"]
            assert ev["delivery"] == "grouped"

        again = await run_kind(store, settings, "stock", trigger="manual")  # still down: nothing new
        assert again.errors == 20
        whmcs.fail(None)
        back = await run_kind(store, settings, "stock", trigger="manual")
        assert back.errors == 0
        await settle(host)
        assert len(smtp.to(OPS)) == 2
        ok = smtp.to(OPS)[1]
        assert ok.subject == "[CHECKER OK] 20 stock monitors: the checker works again"
        assert all(name in ok.part("plain") for name in mons.values())
        (error_notice, cleared_notice) = await notices(store)
        assert json.loads(error_notice["details"])["count"] == 20
        assert sorted(json.loads(cleared_notice["details"])["monitors"]) == sorted(mons.values())
        assert {e["delivery"] for e in await store.list_events(limit=500) if e["monitor_id"] in mons
                and e["type"].startswith("MONITOR_ERROR")} == {"grouped"}
    assert smtp.to(ALICE) == []  # a checker problem is never the audience's


async def test_a_lone_error_is_one_notice_naming_its_monitor_as_before(storage, grouping, smtp, whmcs):
    settings = grouping
    host = Host(storage)
    async with Store.open(settings) as store:
        mons = await stock_monitors(store, whmcs, 2)
        await run_kind(store, settings, "stock", trigger="manual")
        whmcs.remove(2)  # one product gone: only its monitor is in error
        await run_kind(store, settings, "stock", trigger="manual")
        await settle(host)
        whmcs.add(2, "VPS 02", 10)
        await run_kind(store, settings, "stock", trigger="manual")
        await settle(host)
    assert [m.subject for m in smtp.to(OPS)] == [
        "[CHECKER ERROR] VPS 02: product 2 is not in WHMCS's reply: it was deleted, or these API credentials cannot "
        "see it", "[CHECKER OK] VPS 02: the checker works again"]
    assert len(mons) == 2


async def test_two_causes_are_two_notices(storage, grouping, smtp, whmcs):
    settings = grouping
    host = Host(storage)
    async with Store.open(settings) as store:
        await stock_monitors(store, whmcs, 4)
        await run_kind(store, settings, "stock", trigger="manual")
        whmcs.remove(1)
        whmcs.remove(2)  # two products gone (one cause) …
        whmcs.add(3, "VPS 03", None, style="none")  # … and one without stock control (another)
        await run_kind(store, settings, "stock", trigger="manual")
        await settle(host)
    subjects = sorted(m.subject for m in smtp.to(OPS))
    assert subjects == [
        "[CHECKER ERROR] 2 stock monitors: product … is not in WHMCS's reply: it was deleted, or these API "
        "credentials cannot see it",
        "[CHECKER ERROR] VPS 03: product 3 (VPS 03): it has no stock control in WHMCS (turn on Stock Control for "
        "the product, or delete this monitor)"]
    two = next(m for m in smtp.to(OPS) if "2 stock monitors" in m.subject).part("plain")
    assert "VPS 01" in two and "VPS 02" in two and "VPS 03" not in two


async def test_a_flapping_error_sends_nothing(storage, grouping, smtp, whmcs):
    settings = grouping
    host = Host(storage)
    async with Store.open(settings) as store:
        mons = await stock_monitors(store, whmcs, 3)
        await run_kind(store, settings, "stock", trigger="manual")
        whmcs.fail("503")
        await run_kind(store, settings, "stock", trigger="manual")
        whmcs.fail(None)
        await run_kind(store, settings, "stock", trigger="manual")  # back before the group's time is up
        await settle(host)
        assert await notices(store) == []
        rows = [e for e in await store.list_events(limit=100) if e["monitor_id"] in mons]
        assert sorted(e["type"] for e in rows) == ["MONITOR_ERROR"] * 3 + ["MONITOR_ERROR_CLEARED"] * 3
        assert {e["delivery"] for e in rows} == {"grouped"}
    assert smtp.messages == []


# ------------------------------------------------------------------------------------------ the functions


async def test_twenty_absorbs_at_once_lose_no_member_and_one_notice_names_them_all(grouped):
    settings = grouped
    async with Store.open(settings) as store:
        events = [error(f"{i:032x}", f"Product {i}", "WHMCS answered HTTP 503") for i in range(20)]
        statuses = await asyncio.gather(*(storm.absorb(store, settings, e) for e in events))
        assert statuses == ["grouped"] * 20
        cause, _ = storm.cause_of("stock", "WHMCS answered HTTP 503")
        (row,) = await store.list_rows(storm.PK)
        assert row["RowKey"] == cause and len(json.loads(row["members"])) == 20 and row["gen"] == 1

        assert (await storm.flush(store, settings, task(cause, 1, "error"))).startswith("MONITOR_ERROR notice")
        assert await storm.flush(store, settings, task(cause, 1, "error")) == "nothing to flush"  # redelivered
        (notice,) = await notices(store)
        details = json.loads(notice["details"])
        assert notice["monitor_name"] == "20 stock monitors" and notice["monitor_id"] == ""
        assert details["count"] == 20 and sorted(details["monitors"]) == sorted(e.monitor_name for e in events)
        assert details["error"] == "WHMCS answered HTTP 503" and details["group"] == cause

        statuses = await asyncio.gather(*(storm.absorb(store, settings, cleared(e.monitor_id, e.monitor_name,
                                                                                "WHMCS answered HTTP 503"))
                                          for e in events))
        assert statuses == ["grouped"] * 20
        row = await store.get_row(storm.PK, cause)
        assert row is not None and row["state"] == storm.CLEARING and json.loads(row["members"]) == {}
        assert (await storm.flush(store, settings, task(cause, 1, "cleared"))).startswith(
            "MONITOR_ERROR_CLEARED notice")
        assert await storm.flush(store, settings, task(cause, 1, "cleared")) == "nothing to flush"
        assert [n["type"] for n in await notices(store)] == ["MONITOR_ERROR", "MONITOR_ERROR_CLEARED"]


async def test_a_member_joining_after_the_notice_is_silent_and_named_when_it_clears(grouped):
    settings = grouped
    text = "InvenTree refused the API token set in INVENTREE_TOKEN: HTTP 401 Invalid token."
    async with Store.open(settings) as store:
        first = [error(f"{i:032x}", f"Board {i}", text, kind="parts") for i in range(2)]
        for e in first:
            await storm.absorb(store, settings, e)
        cause, _ = storm.cause_of("parts", text)
        await storm.flush(store, settings, task(cause, 1, "error"))
        late = error("f" * 32, "Board late", text.replace("401", "403"), kind="parts")
        assert await storm.absorb(store, settings, late) == "grouped"
        assert await storm.absorb(store, settings, late) == "grouped"  # redelivered: still one member
        assert len(await notices(store)) == 1  # no second error notice
        for e in [*first, late]:
            assert await storm.absorb(store, settings, cleared(e.monitor_id, e.monitor_name,
                                                               str(e.details["error"]), kind="parts")) == "grouped"
        await storm.flush(store, settings, task(cause, 1, "cleared"))
        error_notice, cleared_notice = await notices(store)
        assert json.loads(error_notice["details"])["monitors"] == ["Board 0", "Board 1"]
        assert json.loads(error_notice["details"])["error"] == text
        assert sorted(json.loads(cleared_notice["details"])["monitors"]) == ["Board 0", "Board 1", "Board late"]
        assert cleared_notice["monitor_name"] == "3 parts monitors"
        assert "Board late" in cleared_notice["message"]


async def test_failing_again_before_the_cleared_notice_cancels_it_and_a_new_episode_is_told_anew(grouped):
    settings = grouped
    text = "WHMCS answered HTTP 503"
    async with Store.open(settings) as store:
        a = error("a" * 32, "VPS A", text)
        await storm.absorb(store, settings, a)
        cause, _ = storm.cause_of("stock", text)
        await storm.flush(store, settings, task(cause, 1, "error"))
        await storm.absorb(store, settings, cleared(a.monitor_id, a.monitor_name, text))
        await storm.absorb(store, settings, error(a.monitor_id, a.monitor_name, text))  # within the group time
        assert await storm.flush(store, settings, task(cause, 1, "cleared")) == "nothing to flush"
        assert [n["type"] for n in await notices(store)] == ["MONITOR_ERROR"]
        # a stale redelivery of the first error does not re-open anything; an old task of gen 1 does nothing
        await storm.absorb(store, settings, cleared(a.monitor_id, a.monitor_name, text))
        await storm.flush(store, settings, task(cause, 1, "cleared"))
        assert [n["type"] for n in await notices(store)] == ["MONITOR_ERROR", "MONITOR_ERROR_CLEARED"]
        assert await storm.absorb(store, settings, a) == "grouped"  # the very first event, redelivered
        row = await store.get_row(storm.PK, cause)
        assert row is not None and row["state"] == storm.IDLE and json.loads(row["members"]) == {}
        # the next outage is a new episode with its own notice
        await storm.absorb(store, settings, error(a.monitor_id, a.monitor_name, text))
        assert await storm.flush(store, settings, task(cause, 1, "error")) == "nothing to flush (a newer episode)"
        await storm.flush(store, settings, task(cause, 2, "error"))
        assert [n["type"] for n in await notices(store)] == ["MONITOR_ERROR", "MONITOR_ERROR_CLEARED",
                                                             "MONITOR_ERROR"]
        ids = [n["event_id"] for n in await notices(store)]
        assert len(set(ids)) == 3


async def test_what_is_not_absorbed(grouped):
    settings = grouped
    async with Store.open(settings) as store:
        # a clear whose error was never grouped (told before the storm guard) goes out as it is
        assert await storm.absorb(store, settings, cleared("b" * 32, "Old", "WHMCS answered HTTP 503")) is None
        notice = error("", "2 stock monitors", "WHMCS answered HTTP 503")
        notice.details["group"] = "x"
        assert await storm.absorb(store, settings, notice) is None
        down = Event(type=EventType.MONITOR_DOWN, kind="website", monitor_id="c" * 32, monitor_name="Shop")
        assert await storm.absorb(store, settings, down) is None
        assert await store.list_rows(storm.PK) == []


async def test_with_grouping_off_each_error_is_told_on_its_own(settings):
    assert settings.error_group_seconds == 0
    async with Store.open(settings) as store:
        assert await storm.absorb(store, settings, error("d" * 32, "VPS D", "WHMCS answered HTTP 503")) is None
        assert await store.list_rows(storm.PK) == []
