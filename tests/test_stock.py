"""Stock monitoring against WHMCS: a local WHMCS stand-in (tests/whmcs_fake.py), real Azurite, real
SMTP where e-mail matters, the real engine, API functions and CLI.

What a user notices: one GetProducts request per cycle, the records (quantity, delta, change type,
thresholds, forecast), the events and e-mails (to the audience, or the operator when WHMCS is broken), the
monitor's status, and that the WHMCS secret appears nowhere.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apphelp import call, functions
from helpers import events_of, queued, types
from pydantic import ValidationError
from smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures
from test_email import Host
from whmcs_fake import ACCESS_KEY, IDENTIFIER, SECRET, whmcs  # noqa: F401 - fixture

import monitors
from monitors import stock
from monitors.base import CheckResult
from shared import manage
from shared.clients.whmcs import products_of
from shared.engine import run_kind, run_monitor
from shared.events import EventType
from shared.settings import get_settings
from shared.storage import EVENTS_QUEUE, Store

ROOT = Path(__file__).resolve().parent.parent
KIND = "stock"
ALICE, OPS = "alice@example.org", "ops@example.org"


@pytest.fixture
def stock_settings(env, storage, whmcs):
    env(**whmcs.settings())
    return get_settings()


@pytest.fixture
async def store(stock_settings):
    async with Store.open(stock_settings) as opened:
        yield opened


# ------------------------------------------------------------------------------------------------ helpers


async def create(store: Store, product_id: int, **fields: Any) -> str:
    """A stock monitor made the way the API and the CLI make it."""
    view = await manage.create_monitor(store, {"kind": KIND, "product_id": product_id, **fields})
    return view["id"]


async def records(store: Store, monitor_id: str) -> list[dict[str, Any]]:
    """Stored results, oldest first."""
    return list(reversed(await store.query_results(monitor_id, limit=500)))


def utcnow() -> datetime:
    return datetime.now(UTC)


def cfg(**fields: Any) -> stock.Config:
    return monitors.parse_spec({"kind": KIND, "id": "ab" * 16, "product_id": 9, **fields})


def seen(quantity: int, name: str = "VPS Small") -> CheckResult:
    return CheckResult("up", 12.0, None, {"product_id": 9, "product_name": name, "quantity": quantity})


# --------------------------------------------------------------------------------------- records, changes


async def test_initial_purchase_restock_unchanged(store, storage, stock_settings, whmcs):
    whmcs.add(42, "VPS Small", 10)
    mid = await create(store, 42, recipients=[ALICE])
    outcomes = []
    for quantity in (10, 8, 15, 15):
        whmcs.set(42, quantity)
        outcomes.append(await run_monitor(store, stock_settings, mid))
    assert [o.status for o in outcomes] == ["OK"] * 4
    assert [o.events for o in outcomes] == [[], ["STOCK_DECREASED"], ["STOCK_INCREASED"], []]

    rows = await records(store, mid)
    assert [r["quantity"] for r in rows] == [10, 8, 15, 15]
    assert [r["delta"] for r in rows] == [0, -2, 7, 0]
    assert [r["change_type"] for r in rows] == ["initial", "purchase", "restock", "unchanged"]
    assert [r["threshold_breached"] for r in rows] == [False] * 4
    assert all("threshold_type" not in r for r in rows)
    assert {r["product_name"] for r in rows} == {"VPS Small"} and {r["outcome"] for r in rows} == {"up"}
    assert {r["stock_field"] for r in rows} == {"quantity_available"}

    events = await events_of(store, mid)
    assert types(events) == ["STOCK_DECREASED", "STOCK_INCREASED"]
    assert events[0]["message"] == "VPS Small stock went down: 10 → 8 (-2)."
    assert events[1]["message"] == "VPS Small was restocked: 8 → 15 (+7)."
    assert {e["monitor_name"] for e in events} == {"VPS Small"}  # the name WHMCS gives the product
    assert json.loads(events[0]["details"]) == {"product_id": 42, "quantity": 8, "previous_quantity": 10,
                                                "delta": -2}
    assert sorted(types(await queued(storage))) == ["STOCK_DECREASED", "STOCK_INCREASED"]

    # one GetProducts request per cycle, with the credentials and the product
    assert len(whmcs.requests) == 4
    assert whmcs.requests[0] == {"action": "GetProducts", "identifier": IDENTIFIER, "secret": SECRET,
                                 "responsetype": "json", "pid": "42"}
    view = await manage.get_monitor(store, mid)
    assert view["name"] == "VPS Small" and view["state"]["status"] == "OK"


async def test_an_unchanged_product_writes_no_state(store, stock_settings, whmcs):
    """The steady path: nothing changed → the engine writes the result row and nothing else."""
    whmcs.add(5, "VPS", 4)
    mid = await create(store, 5, threshold_low=5, renotify_minutes=60)  # even while LOW with reminders on
    assert (await run_monitor(store, stock_settings, mid)).events == ["THRESHOLD_BREACH_LOW"]
    before = await store.get_state(KIND, mid)
    for _ in range(3):
        assert (await run_monitor(store, stock_settings, mid)).events == []
    after = await store.get_state(KIND, mid)
    assert after.etag == before.etag and after.status == "LOW"
    assert len(await records(store, mid)) == 4


async def test_entering_and_leaving_the_low_and_high_thresholds(store, stock_settings, whmcs):
    whmcs.add(7, "Dedicated", 10, style="legacy")  # numbers as strings, stockcontrol + stocklevel
    mid = await create(store, 7, threshold_low=3, threshold_high=20, notify_on_purchase=False,
                       notify_on_restock=False)
    steps = [(10, "OK", []), (3, "LOW", ["THRESHOLD_BREACH_LOW"]), (2, "LOW", []), (5, "OK", ["THRESHOLD_CLEARED"]),
             (25, "HIGH", ["THRESHOLD_BREACH_HIGH"]), (30, "HIGH", []), (20, "HIGH", []),
             (19, "OK", ["THRESHOLD_CLEARED"]), (0, "LOW", ["THRESHOLD_BREACH_LOW"]),
             (25, "HIGH", ["THRESHOLD_CLEARED", "THRESHOLD_BREACH_HIGH"])]
    for quantity, status, events in steps:
        whmcs.set(7, quantity)
        outcome = await run_monitor(store, stock_settings, mid)
        assert (quantity, outcome.status, outcome.events) == (quantity, status, events)

    rows = await records(store, mid)
    assert [r.get("threshold_type") for r in rows] == [None, "low", "low", None, "high", "high", "high", None,
                                                       "low", "high"]
    assert [r["threshold_breached"] for r in rows] == [r.get("threshold_type") is not None for r in rows]
    assert [r["status"] for r in rows] == [s for _, s, _ in steps]

    events = await events_of(store, mid)
    low, cleared = events[0], events[1]
    assert low["severity"] == "warning" and low["message"] == "Dedicated stock is low: 3 (low threshold 3)."
    details = json.loads(cleared["details"])
    assert details["cleared"] == "low" and details["quantity"] == 5 and details["breach_seconds"] >= 0
    empty = [e for e in events if e["type"] == "THRESHOLD_BREACH_LOW"][-1]
    assert empty["severity"] == "critical"  # out of stock
    high = events[2]
    assert high["message"] == "Dedicated stock is high: 25 (high threshold 20)."


def test_a_breach_is_announced_when_it_begins_and_again_every_renotify_minutes():
    c = cfg(threshold_low=5, renotify_minutes=30)
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    state: dict[str, Any] = {}
    sent = []
    for minutes, quantity in ((0, 3), (10, 3), (29, 2), (30, 2), (45, 2), (60, 1), (61, 6), (62, 6)):
        ev = stock.evaluate(c, state, seen(quantity), t0 + timedelta(minutes=minutes))
        if quantity == state.get("quantity") and minutes not in (30, 60):
            assert ev.state == state  # nothing due and nothing changed: identical state, nothing written
        state = ev.state
        sent += [(minutes, e.type, e.details.get("reminder", False)) for e in ev.events
                 if e.type.value.startswith("THRESHOLD")]
    assert sent == [(0, EventType.THRESHOLD_BREACH_LOW, False), (30, EventType.THRESHOLD_BREACH_LOW, True),
                    (60, EventType.THRESHOLD_BREACH_LOW, True), (61, EventType.THRESHOLD_CLEARED, False)]


def test_without_renotify_a_long_breach_is_announced_once():
    c = cfg(threshold_high=100)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    state: dict[str, Any] = {}
    events = []
    for hour in range(48):
        ev = stock.evaluate(c, state, seen(150 + hour % 3), t0 + timedelta(hours=hour))
        state = ev.state
        events += [e.type for e in ev.events if e.type.value.startswith("THRESHOLD")]
    assert events == [EventType.THRESHOLD_BREACH_HIGH]


async def test_notify_flags_off_keep_the_records_and_status_but_send_nothing(store, storage, stock_settings,
                                                                              whmcs):
    whmcs.add(3, "Quiet product", 10)
    mid = await create(store, 3, threshold_low=2, threshold_high=30, notify_on_restock=False,
                       notify_on_purchase=False, notify_on_threshold=False, renotify_minutes=5)
    statuses = []
    for quantity in (10, 1, 12, 40, 12):
        whmcs.set(3, quantity)
        outcome = await run_monitor(store, stock_settings, mid)
        assert outcome.events == []
        statuses.append(outcome.status)
    assert statuses == ["OK", "LOW", "OK", "HIGH", "OK"]
    rows = await records(store, mid)
    assert [r["change_type"] for r in rows] == ["initial", "purchase", "restock", "restock", "purchase"]
    assert await events_of(store, mid) == [] and await queued(storage) == []


async def test_only_the_chosen_notifications_are_sent(store, stock_settings, whmcs):
    whmcs.add(4, "Half", 10)
    restock_only = await create(store, 4, notify_on_purchase=False)
    for quantity in (10, 6, 9):
        whmcs.set(4, quantity)
        await run_monitor(store, stock_settings, restock_only)
    assert types(await events_of(store, restock_only)) == ["STOCK_INCREASED"]


# ------------------------------------------------------------------------------------ products and errors


async def test_a_removed_product_puts_only_its_monitor_in_error_until_it_is_back(store, storage, stock_settings,
                                                                                  whmcs):
    whmcs.add(1, "Kept", 10)
    whmcs.add(2, "Removed", 10)
    kept, removed = await create(store, 1), await create(store, 2)
    await run_kind(store, stock_settings, KIND, trigger="manual")

    product = whmcs.remove(2)
    summary = await run_kind(store, stock_settings, KIND, trigger="manual")
    assert len(whmcs.requests) == 2 and whmcs.requests[-1]["pid"] == "1,2"  # still one request per cycle
    assert summary.errors == 1
    by_id = {o.monitor_id: o for o in summary.outcomes}
    assert by_id[kept].status == "OK" and by_id[removed].status == "ERROR"
    assert by_id[removed].result.error == ("product 2 is not in WHMCS's reply: it was deleted, or these API "
                                           "credentials cannot see it")
    [error] = await events_of(store, removed)
    assert error["type"] == "MONITOR_ERROR" and error["monitor_name"] == "Removed"
    assert "product 2 is not in WHMCS's reply" in error["message"]
    assert [e["type"] for e in await queued(storage)] == ["MONITOR_ERROR"]  # for the operator (see audience)
    assert (await manage.get_monitor(store, removed))["state"]["error"].startswith("product 2 is not")

    await run_monitor(store, stock_settings, removed)  # still gone: no second MONITOR_ERROR
    whmcs.products[2] = product
    whmcs.set(2, 7)
    back = await run_monitor(store, stock_settings, removed)
    assert back.status == "OK"
    assert back.events == ["MONITOR_ERROR_CLEARED", "STOCK_DECREASED"]  # compared with the last known stock
    last = (await records(store, removed))[-1]
    assert last["delta"] == -3 and last["change_type"] == "purchase"
    assert types(await events_of(store, kept)) == []


@pytest.mark.parametrize("explicit_off", [False, True])
async def test_a_product_without_stock_control_is_an_error_with_a_clear_message(store, stock_settings, whmcs,
                                                                                 explicit_off):
    whmcs.add(11, "Shared hosting", None, style="none", explicit_off=explicit_off)
    mid = await create(store, 11)
    outcome = await run_monitor(store, stock_settings, mid)
    assert outcome.status == "ERROR" and outcome.events == ["MONITOR_ERROR"]
    assert outcome.result.error == ("product 11 (Shared hosting): it has no stock control in WHMCS (turn on Stock "
                                    "Control for the product, or delete this monitor)")


async def test_whmcs_not_configured_is_an_error_naming_the_settings(env, storage, monkeypatch):
    for name in ("WHMCS_API_URL", "WHMCS_IDENTIFIER", "WHMCS_SECRET", "WHMCS_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    env()
    settings = get_settings()
    async with Store.open(settings) as store:
        mid = await create(store, 1)
        outcome = await run_monitor(store, settings, mid)
        assert outcome.status == "ERROR"
        assert outcome.result.error == "WHMCS is not configured: set WHMCS_API_URL, WHMCS_IDENTIFIER, WHMCS_SECRET"
        [event] = await events_of(store, mid)
        assert event["type"] == "MONITOR_ERROR" and event["monitor_name"] == "WHMCS product 1"
    assert "stock_timer" in functions()  # and the app starts without WHMCS settings


async def test_whmcs_down_for_a_cycle_tells_the_operator_once_and_never_the_audience(storage, env, smtp, whmcs):
    env(**smtp.settings(ADMIN_EMAIL_RECIPIENTS=OPS), **whmcs.settings())
    settings = get_settings()
    whmcs.add(1, "VPS Small", 10)
    whmcs.add(2, "VPS Large", 5)
    async with Store.open(settings) as store:
        small = await create(store, 1, recipients=[ALICE], threshold_low=2)
        large = await create(store, 2, recipients=[ALICE])
        await run_kind(store, settings, KIND, trigger="manual")
        assert len(whmcs.requests) == 1

        whmcs.fail("503")  # down for good, until told otherwise
        t = utcnow()
        down = await run_kind(store, settings, KIND, trigger="manual", now=t + timedelta(minutes=1))
        assert len(whmcs.requests) == 1 + 3  # tried three times with a short backoff, then gave up
        assert down.errors == 2 and {o.status for o in down.outcomes} == {"ERROR"}
        assert {o.result.error for o in down.outcomes} == {"WHMCS answered HTTP 503"}
        again = await run_kind(store, settings, KIND, trigger="manual", now=t + timedelta(minutes=2))
        assert {o.status for o in again.outcomes} == {"ERROR"} and not any(o.events for o in again.outcomes)

        whmcs.fail(None)
        whmcs.set(1, 10)
        back = await run_kind(store, settings, KIND, trigger="manual", now=t + timedelta(minutes=3))
        assert {o.status for o in back.outcomes} == {"OK"}
        assert [o.events for o in back.outcomes] == [["MONITOR_ERROR_CLEARED"]] * 2  # no stock change, no stock mail
        for mid in (small, large):
            assert types(await events_of(store, mid)) == ["MONITOR_ERROR", "MONITOR_ERROR_CLEARED"]
            rows = await records(store, mid)
            assert [r["outcome"] for r in rows] == ["up", "error", "error", "up"]
            assert rows[-1]["change_type"] == "unchanged"

        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
    assert smtp.to(ALICE) == []
    subjects = sorted(m.subject for m in smtp.to(OPS))
    assert subjects == ["[CHECKER ERROR] VPS Large: WHMCS answered HTTP 503",
                        "[CHECKER ERROR] VPS Small: WHMCS answered HTTP 503",
                        "[CHECKER OK] VPS Large: the checker works again",
                        "[CHECKER OK] VPS Small: the checker works again"]


@pytest.mark.parametrize("mode", ["503", "500", "slow"])
async def test_a_transient_failure_is_retried_within_the_cycle(env, storage, whmcs, mode):
    env(**whmcs.settings(WHMCS_TIMEOUT_SECONDS="0.3"))
    whmcs.delay = 1.0
    settings = get_settings()
    whmcs.add(1, "VPS", 10)
    async with Store.open(settings) as store:
        mid = await create(store, 1)
        whmcs.fail(mode, times=1)
        outcome = await run_monitor(store, settings, mid)
        assert outcome.status == "OK" and outcome.events == [] and outcome.result.data["attempts"] == 2
        assert len(whmcs.requests) == 2


async def test_whmcs_that_never_answers_in_time_is_an_error_after_three_tries(env, storage, whmcs):
    env(**whmcs.settings(WHMCS_TIMEOUT_SECONDS="0.3"))
    whmcs.delay = 1.0
    settings = get_settings()
    whmcs.add(1, "VPS", 10)
    async with Store.open(settings) as store:
        mid = await create(store, 1)
        whmcs.fail("slow")
        outcome = await run_monitor(store, settings, mid)
    assert outcome.status == "ERROR" and outcome.result.error == "WHMCS: no answer within 0.3 s"
    assert len(whmcs.requests) == 3 and outcome.result.data["attempts"] == 3


@pytest.mark.parametrize("mode, error", [
    ("auth", "WHMCS refused GetProducts: Authentication Failed (check WHMCS_IDENTIFIER and WHMCS_SECRET)"),
    ("auth403", "WHMCS refused GetProducts (HTTP 403): Authentication Failed (check WHMCS_IDENTIFIER and "
                "WHMCS_SECRET)"),
    ("ip", "WHMCS refused GetProducts (HTTP 403): Invalid IP 203.0.113.9 (allow this app's outbound IP under API "
           "IP Access Restriction in WHMCS, or set WHMCS_ACCESS_KEY)"),
    ("html", "WHMCS answered with something that is not a JSON object (text/html, 43 bytes): is WHMCS_API_URL the "
             "URL of includes/api.php?"),
])
async def test_refusals_and_nonsense_are_errors_without_retries(store, stock_settings, whmcs, mode, error):
    whmcs.add(1, "VPS", 10)
    mid = await create(store, 1)
    whmcs.fail(mode)
    outcome = await run_monitor(store, stock_settings, mid)
    assert outcome.status == "ERROR" and outcome.result.error == error
    assert outcome.events == ["MONITOR_ERROR"]
    assert len(whmcs.requests) == 1  # retrying cannot help: one try


async def test_wrong_credentials_are_refused_like_whmcs_does(env, storage, whmcs):
    env(**whmcs.settings(WHMCS_SECRET="not-the-secret"))
    settings = get_settings()
    whmcs.add(1, "VPS", 10)
    async with Store.open(settings) as store:
        outcome = await run_monitor(store, settings, await create(store, 1))
    assert outcome.result.error.startswith("WHMCS refused GetProducts (HTTP 403): Authentication Failed")


async def test_the_reply_shapes_whmcs_sends(store, stock_settings, whmcs):
    """One product as a single object; no products as "" or no key at all; numbers as strings."""
    whmcs.single_object = True
    whmcs.add(8, "Legacy", 6, style="legacy")
    mid = await create(store, 8)
    outcome = await run_monitor(store, stock_settings, mid)
    assert outcome.status == "OK" and outcome.result.data["quantity"] == 6
    assert outcome.result.data["stock_field"] == "stocklevel"
    for empty in ("", "missing"):
        whmcs.empty = empty
        whmcs.remove(8)
        outcome = await run_monitor(store, stock_settings, mid)
        assert outcome.status == "ERROR" and "not in WHMCS's reply" in outcome.result.error
        whmcs.add(8, "Legacy", 6, style="legacy")
        assert (await run_monitor(store, stock_settings, mid)).status == "OK"


def test_stock_fields_and_shapes_are_read_leniently():
    assert products_of({"result": "success", "products": ""}) == {}
    assert products_of({"result": "success", "totalresults": 0}) == {}
    assert products_of({"products": {"product": []}}) == {}
    assert list(products_of({"products": {"product": {"pid": "3", "name": "x"}}})) == [3]
    assert list(products_of({"products": {"product": [{"pid": 1}, {"pid": "2"}, "junk"]}})) == [1, 2]
    assert stock.stock_of({"quantity_available": 4}) == (4, "quantity_available")
    assert stock.stock_of({"quantity_available": "4"}) == (4, "quantity_available")
    assert stock.stock_of({"stockcontrol": "true", "stocklevel": "12"}) == (12, "stocklevel")
    assert stock.stock_of({"stockcontrol": True, "stocklevel": 12.0}) == (12, "stocklevel")
    assert stock.stock_of({"stockcontrol": "on", "stocklevel": " 7.00 "}) == (7, "stocklevel")
    assert stock.stock_of({"stockcontrol": 1, "quantity_available": 5}) == (5, "quantity_available")
    assert stock.stock_of({"stockcontrol": "false", "quantity_available": 5})[0] is None
    assert stock.stock_of({"name": "no control"})[0] is None
    assert stock.stock_of({"stockcontrol": "true"}) == (None, "stock control is on but WHMCS sent no stock level "
                                                              "for it")
    assert stock.stock_of({"quantity_available": "lots"}) == (
        None, "WHMCS sent a stock level that is not a whole number (quantity_available='lots')")
    assert stock.stock_of({"quantity_available": True})[0] is None


def test_config_validation():
    with pytest.raises(ValidationError, match="threshold_low must not be greater than threshold_high"):
        cfg(threshold_low=10, threshold_high=5)
    assert cfg(threshold_low=5, threshold_high=5).threshold_high == 5
    for bad in ({"product_id": 0}, {"threshold_low": -1}, {"stockout_alert_days": 0}, {"colour": "red"}):
        with pytest.raises(ValidationError):
            cfg(**bad)
    c = cfg()
    assert c.name == "" and c.interval_seconds == 300 and c.unique_keys() == ["9"]
    assert (c.notify_on_restock, c.notify_on_purchase, c.notify_on_threshold) == (True, True, True)


# ------------------------------------------------------------------------------------------------- scale


async def test_200_products_in_one_request_and_a_quiet_cycle_writes_no_state(store, stock_settings, whmcs):
    ids = []
    for pid in range(1, 201):
        whmcs.add(pid, f"Plan {pid}", 50 + pid % 7, style="legacy" if pid % 2 else "modern")
        ids.append(await create(store, pid, threshold_low=10))
    t = utcnow()
    first = await run_kind(store, stock_settings, KIND, trigger="manual", now=t)
    assert first.checked == 200 and first.errors == 0 and first.events == 0
    assert len(whmcs.requests) == 1
    assert whmcs.requests[0]["pid"] == ",".join(str(p) for p in range(1, 201))
    assert {o.status for o in first.outcomes} == {"OK"}

    quiet = await run_kind(store, stock_settings, KIND, trigger="manual", now=t + timedelta(minutes=1))
    assert quiet.checked == 200 and len(whmcs.requests) == 2
    # a handful of requests for 200 monitors: listing, states, results in batches, the tick record — no
    # state row per monitor (the first cycle wrote 200 of them)
    assert quiet.storage_requests < 40 and first.storage_requests > 200
    assert [len(await store.query_results(mid)) for mid in ids[:5]] == [2] * 5

    whmcs.set(17, 3)
    busy = await run_kind(store, stock_settings, KIND, trigger="manual", now=t + timedelta(minutes=2))
    changed = [o for o in busy.outcomes if o.events]
    assert [(o.result.data["product_id"], o.events) for o in changed] == [
        (17, ["STOCK_DECREASED", "THRESHOLD_BREACH_LOW"])]


# --------------------------------------------------------------------------------------------- forecast


def test_the_forecast_and_its_alert_once_between_restocks():
    c = cfg(stockout_alert_days=10, notify_on_purchase=False, notify_on_restock=False)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    state: dict[str, Any] = {}
    timeline = []
    for at, quantity in ((t0, 100), (t0 + timedelta(days=1), 90), (t0 + timedelta(days=2), 80),
                         (t0 + timedelta(days=3), 70), (t0 + timedelta(days=4), 200), (t0 + timedelta(days=5), 195),
                         (t0 + timedelta(days=5, hours=1), 50)):
        result = seen(quantity)
        ev = stock.evaluate(c, state, result, at)
        state = ev.state
        timeline.append((result.data.get("days_to_stockout"), [e.type for e in ev.events]))
    assert timeline == [(None, []), (None, []), (8.0, [EventType.STOCKOUT_FORECAST]), (7.0, []), (26.7, []),
                        (27.9, []), (1.4, [EventType.STOCKOUT_FORECAST])]
    assert len(state["history"]) == 7

    # the record of day 2: 20 sold in 2 days → 10 a day → 80 left last 8 days
    result = seen(80)
    ev = stock.evaluate(c, {}, seen(100), t0)
    ev = stock.evaluate(c, ev.state, seen(90), t0 + timedelta(days=1))
    ev = stock.evaluate(c, ev.state, result, t0 + timedelta(days=2))
    assert result.data["consumption_per_day"] == 10.0 and result.data["stockout_at"] == t0 + timedelta(days=10)
    [alert] = ev.events
    assert alert.severity == "warning" and alert.details["stockout_at"] == (t0 + timedelta(days=10)).isoformat()
    assert alert.message == ("VPS Small is projected to run out of stock in about 8 days, around 2030-01-11 "
                             "(80 left, 10 sold a day).")


def test_moving_a_monitor_to_another_product_starts_its_record_over():
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    state = stock.evaluate(cfg(), {}, seen(50), t0).state
    state = stock.evaluate(cfg(), state, seen(40), t0 + timedelta(hours=1)).state
    moved = cfg(product_id=10)
    result = seen(7, name="Other product")
    ev = stock.evaluate(moved, state, result, t0 + timedelta(hours=2))
    assert result.data["change_type"] == "initial" and result.data["delta"] == 0 and ev.events == []
    assert ev.state["history"] == [[(t0 + timedelta(hours=2)).isoformat(), 7]] and ev.state["product_id"] == 10


def test_history_is_bounded_and_only_changes_are_kept():
    c = cfg()
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    state: dict[str, Any] = {}
    for i in range(40):
        state = stock.evaluate(c, state, seen(1000 - (i // 2)), t0 + timedelta(hours=i)).state
    assert len(state["history"]) == stock.HISTORY
    assert [q for _, q in state["history"]] == list(range(990, 980, -1))


async def test_the_forecast_is_in_the_results_and_in_the_stock_mail(storage, env, smtp, whmcs):
    env(**smtp.settings(ADMIN_EMAIL_RECIPIENTS=OPS), **whmcs.settings())
    settings = get_settings()
    whmcs.add(6, "Bare metal", 20)
    async with Store.open(settings) as store:
        mid = await create(store, 6, recipients=[ALICE])
        for quantity in (20, 18, 15):
            whmcs.set(6, quantity)
            await run_monitor(store, settings, mid)
        rows = await records(store, mid)
        assert "days_to_stockout" not in rows[1]  # one purchase is not a trend
        assert rows[2]["consumption_per_day"] > 0 and rows[2]["stockout_at"] > rows[2]["ts"]
        _, api = await call("monitor_results", "GET", f"v1/monitors/{mid}/results", route={"monitor_id": mid})
        assert api["items"][0]["days_to_stockout"] == rows[2]["days_to_stockout"]
        assert api["items"][0]["stockout_at"] == rows[2]["stockout_at"].isoformat()
        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
    mails = sorted(smtp.to(ALICE), key=lambda m: m.subject)
    assert [m.subject.split(":")[0] for m in mails] == ["[STOCK DOWN] Bare metal"] * 2
    second = next(m for m in mails if "18 → 15" in m.subject)
    text = second.part("plain")
    assert "runs out in about" in text and "Days to stockout" in text and "Stockout at" in text
    assert "Consumption per day" in second.part("html")


# ------------------------------------------------------------------------------------------------ e-mail


async def test_a_low_stock_breach_is_one_email_until_it_clears_or_a_reminder_is_due(storage, env, smtp, whmcs):
    env(**smtp.settings(ADMIN_EMAIL_RECIPIENTS=OPS), **whmcs.settings())
    settings = get_settings()
    whmcs.add(5, "GPU server", 10)
    host = Host(storage)
    async with Store.open(settings) as store:
        mid = await create(store, 5, threshold_low=3, renotify_minutes=60, notify_on_purchase=False,
                           notify_on_restock=False, recipients=[ALICE])
        for quantity in (10, 3, 2, 1, 1):
            whmcs.set(5, quantity)
            await run_monitor(store, settings, mid)
        await host.drain(EVENTS_QUEUE, "send_event_email")
        [low] = smtp.to(ALICE)
        assert low.subject == "[LOW] GPU server: stock is low: 3 (low threshold 3)."
        assert "Threshold low" in low.part("plain") and "Quantity" in low.part("plain")

        # an hour later, still low: one reminder, then quiet again
        row = await store.get_state(KIND, mid)
        earlier = (datetime.fromisoformat(row.data["notified_at"]) - timedelta(minutes=61)).isoformat()
        await store.commit_state(KIND, mid, {**row.data, "notified_at": earlier}, row.status, row.etag, [])
        assert (await run_monitor(store, settings, mid)).events == ["THRESHOLD_BREACH_LOW"]
        assert (await run_monitor(store, settings, mid)).events == []
        await host.drain(EVENTS_QUEUE, "send_event_email")
        [reminder] = smtp.to(ALICE)[1:]
        assert reminder.subject.startswith("[LOW] GPU server: stock is still low: 1 (low threshold 3); at ")
        assert "a day it runs out in about" in reminder.subject  # the forecast

        whmcs.set(5, 8)
        assert (await run_monitor(store, settings, mid)).events == ["THRESHOLD_CLEARED"]
        await host.drain(EVENTS_QUEUE, "send_event_email")
    assert [m.subject for m in smtp.to(ALICE)][2:] == ["[OK] GPU server: stock is no longer low: 8."]
    assert smtp.to(OPS) == []


# ------------------------------------------------------------------------------------------- API and CLI


async def test_the_monitors_api_runs_pauses_and_reports_stock(stock_settings, whmcs):
    from azure.functions.timer import TimerRequest

    whmcs.add(42, "Shop VPS", 12)
    # (a yearly cron: this monitor is never due on the timer ticks below, so what they check is certain)
    status, made = await call("monitors", "POST", "v1/monitors", {"kind": "stock", "product_id": 42,
                                                                   "threshold_low": 5, "threshold_high": 100,
                                                                   "cron": "0 0 1 1 *"})
    assert status == 201, made
    mid = made["id"]
    assert made["name"] == "" and made["product_id"] == 42 and made["state"]["status"] == "PENDING"

    status, body = await call("monitors", "POST", "v1/monitors", {"kind": "stock", "product_id": 42})
    assert status == 409 and body["error"]["message"].startswith(f"another stock monitor ({mid}) already uses "
                                                                 "this product_id")
    assert body["error"]["details"] == [{"field": "product_id",
                                         "message": f"must be unique: monitor {mid} already uses this product_id"}]
    status, body = await call("monitors", "POST", "v1/monitors", {"kind": "stock", "product_id": 43,
                                                                   "threshold_low": 9, "threshold_high": 2})
    assert status == 422 and "threshold_low must not be greater than threshold_high" in str(body)

    # run now
    status, ran = await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route={"monitor_id": mid})
    assert status == 200
    assert (ran["outcome"], ran["status"], ran["quantity"], ran["change_type"], ran["product_name"]) == \
        ("up", "OK", 12, "initial", "Shop VPS")
    whmcs.set(42, 4)
    _, ran = await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route={"monitor_id": mid})
    assert ran["status"] == "LOW" and ran["events"] == ["STOCK_DECREASED", "THRESHOLD_BREACH_LOW"]

    # records
    status, page = await call("monitor_results", "GET", f"v1/monitors/{mid}/results", route={"monitor_id": mid})
    assert status == 200
    assert [(r["quantity"], r["delta"], r["change_type"], r["threshold_breached"], r.get("threshold_type"))
            for r in page["items"]] == [(4, -8, "purchase", True, "low"), (12, 0, "initial", False, None)]
    _, shown = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert shown["name"] == "Shop VPS" and shown["state"]["status"] == "LOW"
    _, evs = await call("events", "GET", "v1/events", params={"monitor_id": mid})
    assert sorted(e["type"] for e in evs["items"]) == ["STOCK_DECREASED", "THRESHOLD_BREACH_LOW"]  # same time

    # pause / resume / run the kind / health — the seed's scheduler endpoints
    assert (await call("kind_action", "POST", "v1/kinds/stock/pause",
                       route={"kind": "stock", "action": "pause"}))[1] == {"kind": "stock", "paused": True}
    before = len(whmcs.requests)
    await functions()["stock_timer"](TimerRequest())
    assert len(whmcs.requests) == before  # the timer honoured the pause
    status, body = await call("kind_action", "POST", "v1/kinds/stock/run", route={"kind": "stock", "action": "run"})
    assert status == 200 and body["checked"] == 1 and len(whmcs.requests) == before + 1
    await call("kind_action", "POST", "v1/kinds/stock/resume", route={"kind": "stock", "action": "resume"})
    whmcs.add(7, "Fresh", 30)
    await call("monitors", "POST", "v1/monitors", {"kind": "stock", "product_id": 7, "name": "Fresh stock"})
    await functions()["stock_timer"](TimerRequest())
    assert whmcs.requests[-1]["pid"] == "7"  # only what is due: the new monitor
    _, health = await call("health", "GET", "v1/health")
    assert health["timers"]["stock"]["paused"] is False and health["timers"]["stock"]["last_run"]["checked"] == 1

    # change and delete through the same endpoints
    status, patched = await call("monitor", "PATCH", f"v1/monitors/{mid}", {"threshold_low": 2},
                                 route={"monitor_id": mid})
    assert status == 200 and patched["threshold_low"] == 2 and patched["name"] == "Shop VPS"
    _, ran = await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route={"monitor_id": mid})
    assert ran["status"] == "OK" and ran["events"] == ["THRESHOLD_CLEARED"]
    assert (await call("monitor", "DELETE", f"v1/monitors/{mid}", route={"monitor_id": mid}))[0] == 204
    status, _ = await call("monitors", "POST", "v1/monitors", {"kind": "stock", "product_id": 42})
    assert status == 201  # the product id is free again

    _, doc = await call("openapi_document", "GET", "v1/openapi.json")
    assert "StockMonitor" in doc["components"]["schemas"]
    assert "STOCKOUT_FORECAST" in json.dumps(doc)


def test_the_cli_adds_lists_and_runs_stock_monitors(stock_settings, whmcs):
    whmcs.add(42, "Shop VPS", 12)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "monitors", *args], cwd=ROOT, env={**os.environ},
                              capture_output=True, text=True, timeout=60)

    made = cli("--json", "add", "stock", "product_id=42", "threshold_low=3", 'recipients=["ops@example.com"]')
    assert made.returncode == 0, made.stderr
    mid = json.loads(made.stdout)["id"]
    dup = cli("add", "stock", "product_id=42")
    assert dup.returncode == 2 and "product_id: must be unique" in dup.stderr

    ran = cli("--json", "run", "--kind", "stock")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["results"][0]["quantity"] == 12
    header, _, row = cli("list").stdout.splitlines()[:3]
    assert header.split() == ["id", "kind", "name", "enabled", "status", "schedule", "target"]
    assert mid in row and "Shop VPS" in row and "OK" in row and row.rstrip().endswith("pid 42")
    results = json.loads(cli("--json", "results", mid).stdout)["items"]
    assert results[0]["quantity"] == 12 and results[0]["change_type"] == "initial"
    assert json.loads(cli("--json", "pause", "stock").stdout) == {"kind": "stock", "paused": True}
    assert json.loads(cli("--json", "health").stdout)["timers"]["stock"]["paused"] is True
    assert SECRET not in made.stdout + ran.stdout + ran.stderr


# ------------------------------------------------------------------------------------------------ secret


async def test_the_whmcs_secret_never_leaks(storage, env, smtp, whmcs, caplog):
    caplog.set_level(logging.DEBUG)
    whmcs.access_key = ACCESS_KEY
    env(**smtp.settings(ADMIN_EMAIL_RECIPIENTS=OPS), **whmcs.settings())
    settings = get_settings()
    whmcs.add(1, "VPS", 10)
    whmcs.add(2, "Dedicated", 5, style="legacy")
    seen_text: list[str] = []
    async with Store.open(settings) as store:
        mids = [await create(store, 1, recipients=[ALICE], threshold_low=8), await create(store, 2)]
        for mode, quantity in ((None, 10), ("echo", 10), (None, 7), ("auth403", 7), ("503", 7), (None, 3),
                               ("html", 3)):
            whmcs.fail(mode)
            whmcs.set(1, quantity)
            summary = await run_kind(store, settings, KIND, trigger="manual")
            seen_text.append(json.dumps(await manage.run_kind(store, settings, KIND), default=str))
            seen_text += [repr(o) for o in summary.outcomes]
        whmcs.fail(None)
        seen_text.append(json.dumps([await manage.results(store, m, limit=100) for m in mids], default=str))
        seen_text.append(json.dumps(await manage.events(store, limit=200), default=str))
        seen_text.append(json.dumps(await manage.list_monitors(store), default=str))
        states, outbox = await store.load_states(KIND)
        seen_text.append(json.dumps({k: v.data for k, v in states.items()}, default=str))
        seen_text.append(json.dumps(await queued(storage), default=str))
        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
    for name, function in (("health", "GET v1/health"), ("openapi_document", "GET v1/openapi.json"),
                           ("monitors", "GET v1/monitors")):
        method, path = function.split()
        seen_text.append(json.dumps((await call(name, method, path))[1]))
    seen_text += [m.raw.decode("utf-8", "replace") for m in smtp.messages]
    seen_text.append(caplog.text)

    assert len(smtp.to(OPS)) >= 2 and smtp.to(ALICE)  # both audiences got mail, so mail was looked at
    assert any("Invalid secret ***" in text for text in seen_text)  # WHMCS echoed it; it was blanked
    everything = "\n".join(seen_text)
    assert SECRET not in everything and ACCESS_KEY not in everything
    assert all(r["secret"] == SECRET and r["accesskey"] == ACCESS_KEY and r["identifier"] == IDENTIFIER
               for r in whmcs.requests)  # …and yet it was sent to WHMCS every time


def test_stock_settings_are_optional_and_checked(monkeypatch, env):
    for name in ("WHMCS_API_URL", "WHMCS_IDENTIFIER", "WHMCS_SECRET", "WHMCS_ACCESS_KEY", "WHMCS_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    env()
    s = get_settings()
    assert s.whmcs_api_url is None and s.whmcs_secret is None and s.whmcs_timeout_seconds == 20.0
    env(WHMCS_API_URL="ftp://whmcs.example/includes/api.php")
    from shared.settings import SettingsError

    with pytest.raises(SettingsError, match="WHMCS_API_URL"):
        get_settings()
    env(WHMCS_API_URL="https://whmcs.example/includes/api.php", WHMCS_SECRET="s3", WHMCS_TIMEOUT_SECONDS="5")
    s = get_settings()
    assert "s3" not in repr(s) and s.whmcs_timeout_seconds == 5.0

