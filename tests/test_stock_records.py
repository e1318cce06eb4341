"""Stock records as WHMCS and a user see them (issue 13, items 10–12), through the HTTP functions with real
azure.functions requests, the local WHMCS stand-in (tests/whmcs_fake.py), real Azurite and the real SMTP server:

- GetProducts replies whose `products.product` is an object keyed "0", "1", … (a PHP array as an object);
- the first record's nulls (`previous_quantity`, `threshold_type`, the forecast) read the same from run-now and
  from storage;
- an unnamed monitor shows the WHMCS product's name everywhere once it is known;
- the 422 for threshold_low > threshold_high names both fields.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from apphelp import call, functions, post_monitor, request, results, run_now
from prometheus_client.parser import text_string_to_metric_families
from smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures
from test_email import Host
from test_public import parse_page
from whmcs_fake import whmcs  # noqa: F401 - fixture

from shared.clients.whmcs import products_of
from shared.storage import EVENTS_QUEUE

ALICE, OPS = "alice@example.org", "ops@example.org"
# What only one of the two answers has: run-now names the monitor and its events; a stored record says how it
# was triggered.
RUN_ONLY = {"monitor_id", "name", "events"}
STORED_ONLY = {"trigger"}


@pytest.fixture
def whmcs_env(env, storage, whmcs):
    env(**whmcs.settings())
    return whmcs


async def run_kind() -> dict[str, Any]:
    status, body = await call("kind_action", "POST", "v1/kinds/stock/run", route={"kind": "stock", "action": "run"})
    assert status == 200, body
    return body


def same_record(ran: dict[str, Any], stored: dict[str, Any]) -> None:
    """A record from run-now and the same record from storage: the same fields with the same values."""
    assert {k: v for k, v in ran.items() if k not in RUN_ONLY | {"checked_at"}} == \
        {k: v for k, v in stored.items() if k not in STORED_ONLY | {"checked_at"}}
    if "checked_at" in ran:
        assert ran["checked_at"] == stored["checked_at"]


# ------------------------------------------------------------------------------- 10: keyed-object replies


def test_products_as_an_object_keyed_by_position_are_read():
    listed = [{"pid": 1, "name": "A", "quantity_available": 3}, {"pid": "2", "name": "B", "quantity_available": 0}]
    shapes = [{"product": listed}, {"product": {"0": listed[0], "1": listed[1]}},
              {"product": {"0": listed[0], "2": listed[1]}}]  # keys with a gap: what a pid filter leaves
    for products in shapes:
        assert {pid: p["name"] for pid, p in products_of({"result": "success", "products": products}).items()} \
            == {1: "A", 2: "B"}
    assert list(products_of({"products": {"product": {"3": {"pid": "7", "name": "C"}}}})) == [7]  # one, keyed
    assert list(products_of({"products": {"product": {"pid": "7", "name": "C"}}})) == [7]  # one, unkeyed
    assert list(products_of({"products": {"product": {"0": {"pid": 1}, "1": "junk", "2": {"pid": "2"}}}})) == [1, 2]


async def test_a_cycle_of_several_stock_monitors_against_keyed_object_replies(whmcs_env):
    whmcs = whmcs_env
    whmcs.keyed_object = True
    whmcs.add(1, "VPS Small", 10)
    whmcs.add(2, "Not watched", 99)  # in the catalogue, not monitored: the reply's keys get a gap
    whmcs.add(3, "VPS Large", 4, style="legacy")  # numbers as strings, stockcontrol + stocklevel
    whmcs.add(4, "Dedicated", 0)
    ids = {}
    for pid, low in ((1, 2), (3, 5), (4, 1)):
        status, made = await post_monitor({"kind": "stock", "product_id": pid, "threshold_low": low})
        assert status == 201, made
        ids[made["id"]] = pid

    first = await run_kind()
    assert len(whmcs.requests) == 1 and whmcs.requests[0]["pid"] == "1,3,4"  # one request for the cycle
    assert first["checked"] == 3 and first["errors"] == 0
    by_pid = {ids[r["monitor_id"]]: r for r in first["results"]}
    assert {pid: (r["outcome"], r["status"], r["quantity"], r["name"]) for pid, r in by_pid.items()} == {
        1: ("up", "OK", 10, "VPS Small"), 3: ("up", "LOW", 4, "VPS Large"), 4: ("up", "LOW", 0, "Dedicated")}
    assert by_pid[3]["stock_field"] == "stocklevel" and by_pid[1]["stock_field"] == "quantity_available"

    whmcs.set(1, 7)
    whmcs.set(3, 9)
    second = await run_kind()
    by_pid = {ids[r["monitor_id"]]: r for r in second["results"]}
    assert {pid: (r["status"], r["delta"], r["change_type"]) for pid, r in by_pid.items()} == {
        1: ("OK", -3, "purchase"), 3: ("OK", 5, "restock"), 4: ("LOW", 0, "unchanged")}
    assert sorted(by_pid[3]["events"]) == ["STOCK_INCREASED", "THRESHOLD_CLEARED"]
    for mid, pid in ids.items():
        assert [r["outcome"] for r in await results(mid)] == ["up", "up"], pid


# ----------------------------------------------------------------------- 11: nulls, and the same answer twice


async def test_run_now_and_stored_records_answer_the_same_fields(whmcs_env):
    whmcs = whmcs_env
    whmcs.add(42, "Shop VPS", 12)
    status, made = await post_monitor({"kind": "stock", "product_id": 42, "threshold_low": 5})
    assert status == 201, made
    mid = made["id"]

    first = await run_now(mid)
    assert (first["change_type"], first["delta"], first["previous_quantity"], first["threshold_type"]) == \
        ("initial", 0, None, None)
    assert first["threshold_breached"] is False
    assert (first["consumption_per_day"], first["days_to_stockout"], first["stockout_at"]) == (None, None, None)
    [stored] = await results(mid)
    assert "previous_quantity" in stored and stored["previous_quantity"] is None
    assert "threshold_type" in stored and stored["threshold_type"] is None
    same_record(first, stored)

    for quantity in (8, 3):  # a purchase, then a low-stock breach with a forecast (two purchases)
        whmcs.set(42, quantity)
        ran = await run_now(mid)
        same_record(ran, (await results(mid))[0])
    assert (ran["previous_quantity"], ran["threshold_type"], ran["change_type"]) == (8, "low", "purchase")
    assert ran["days_to_stockout"] is not None and ran["stockout_at"] is not None

    whmcs.fail("auth")  # an error record: no stock fields, the same answer from both paths too
    failed = await run_now(mid)
    assert failed["outcome"] == "error" and "quantity" not in failed and "previous_quantity" not in failed
    same_record(failed, (await results(mid))[0])

    # a kind run's record has every field as well
    whmcs.fail(None)
    await run_kind()
    fields = [set(r) for r in await results(mid) if r["outcome"] == "up"]
    assert len(fields) == 4 and all(f == fields[0] for f in fields)


async def test_an_unnamed_monitor_shows_the_product_name_everywhere(storage, env, smtp, whmcs):
    env(**smtp.settings(ADMIN_EMAIL_RECIPIENTS=OPS), **whmcs.settings())
    whmcs.add(42, "Shop VPS", 12)
    whmcs.add(43, "Other VPS", 30)
    status, made = await post_monitor({"kind": "stock", "product_id": 42, "public": True, "recipients": [ALICE],
                                       "threshold_low": 5})
    assert status == 201 and made["name"] == ""
    mid = made["id"]
    named = (await post_monitor({"kind": "stock", "product_id": 43, "name": "My label", "public": True}))[1]["id"]

    assert (await run_now(mid))["name"] == "Shop VPS"  # run-now
    whmcs.set(42, 4)
    ran = await run_kind()  # a kind run: both, each by its name
    assert {r["monitor_id"]: r["name"] for r in ran["results"]} == {mid: "Shop VPS", named: "My label"}

    _, listed = await call("monitors", "GET", "v1/monitors")  # the list and the monitor
    assert {m["id"]: m["name"] for m in listed["items"]} == {mid: "Shop VPS", named: "My label"}
    _, shown = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert shown["name"] == "Shop VPS"

    page = parse_page(await call_html("status_page", "status-page"))  # the public status page
    assert sorted(m["name"].strip() for m in page.monitors) == ["My label", "Shop VPS"]

    _, text = await call_text("prometheus_metrics", "v1/metrics/prometheus")  # Prometheus
    families = {f.name: f for f in text_string_to_metric_families(text)}
    names = {s.labels["id"]: s.labels["name"] for s in families["stock_quantity"].samples}
    assert names == {mid: "Shop VPS", named: "My label"}

    _, events = await call("events", "GET", "v1/events", params={"monitor_id": mid})  # events and e-mails
    assert {e["monitor_name"] for e in events["items"]} == {"Shop VPS"}
    await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
    subjects = sorted(m.subject for m in smtp.to(ALICE))
    assert subjects and all("Shop VPS" in s for s in subjects), subjects

    # renamed in WHMCS: the new name, from the next check on; a name given to the monitor wins over it
    whmcs.products[42].name = "Shop VPS v2"
    assert (await run_now(mid))["name"] == "Shop VPS v2"
    _, listed = await call("monitors", "GET", "v1/monitors")
    assert {m["id"]: m["name"] for m in listed["items"]}[mid] == "Shop VPS v2"
    await call("monitor", "PATCH", f"v1/monitors/{mid}", {"name": "Storefront"}, route={"monitor_id": mid})
    assert (await run_now(mid))["name"] == "Storefront"


async def call_html(name: str, path: str) -> str:
    response = await functions()[name](request("GET", path))
    assert response.status_code == 200
    return response.get_body().decode()


async def call_text(name: str, path: str) -> tuple[int, str]:
    response = await functions()[name](request("GET", path))
    return response.status_code, response.get_body().decode()


# ----------------------------------------------------------------------------------------- 12: both fields


async def test_threshold_low_above_high_is_a_422_naming_both_fields(whmcs_env):
    status, body = await post_monitor({"kind": "stock", "product_id": 43, "threshold_low": 9, "threshold_high": 2})
    assert status == 422, body
    details = body["error"]["details"]
    assert sorted(d["field"] for d in details) == ["threshold_high", "threshold_low"]
    assert {d["message"] for d in details} == {"threshold_low must not be greater than threshold_high (9 > 2)"}

    # the same for a change that makes them cross, and nothing is stored
    status, made = await post_monitor({"kind": "stock", "product_id": 43, "threshold_low": 5})
    assert status == 201, made
    mid = made["id"]
    status, body = await call("monitor", "PATCH", f"v1/monitors/{mid}", {"threshold_high": 4},
                              route={"monitor_id": mid})
    assert status == 422 and sorted(d["field"] for d in body["error"]["details"]) == ["threshold_high",
                                                                                        "threshold_low"]
    _, shown = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert (shown["threshold_low"], shown["threshold_high"]) == (5, None)
    assert json.dumps(body).count("threshold_low must not be greater than threshold_high (5 > 4)") == 2
