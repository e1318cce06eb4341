"""No input gets a 500: each known case through the real HTTP functions (tests/apphelp.py), answered with a 4xx
that names what is wrong — and nothing written. tests/test_schemathesis.py looks for the unknown ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import azure.functions as func
import pytest
from apphelp import call, functions

EMOJI = "\U0001f600"
BROKEN = "b" * 32  # the id of a stored definition that cannot be read


async def listed() -> list[dict]:
    status, body = await call("monitors", "GET", "v1/monitors")
    assert status == 200
    return body["items"]


def website(**extra) -> dict:
    return {"kind": "website", "name": "Shop", "url": "https://shop.example.com/", **extra}


def fields(body: dict) -> set[str]:
    return {d["field"] for d in body["error"]["details"]}


@pytest.mark.parametrize("kind", [[], {}, {"website": 1}, 5, None, True])
async def test_a_kind_that_is_no_name_is_a_422(settings, kind):
    status, body = await call("monitors", "POST", "v1/monitors", {"kind": kind, "name": "x"})
    assert status == 422 and fields(body) == {"kind"} and "website" in body["error"]["details"][0]["message"]
    assert await listed() == []
    created = (await call("monitors", "POST", "v1/monitors", website()))[1]
    route = {"monitor_id": created["id"]}
    status, body = await call("monitor", "PATCH", f"v1/monitors/{created['id']}", {"kind": kind}, route=route)
    assert status == 422 and fields(body) == {"kind"}


# ------------------------------------------------------------------------------ Table Storage's limits


def too_large(status: int, body: dict) -> None:
    assert status == 413, body
    error = body["error"]
    assert error["code"] == "too_large" and fields(body) == {"(body)"}
    assert "65,536" in error["message"] and "bytes" in error["message"], error["message"]  # the size and the limit


@pytest.mark.parametrize("spec", [
    website(headers={f"X-Header-{n}": "v" * 4096 for n in range(50)}),
    website(method="POST", body=EMOJI * 16384),
    {"kind": "parts", "name": "Kit", "parts": [{"name": f"{EMOJI} part {n} " + "x" * 150, "quantity": 1}
                                               for n in range(500)]},
    {"kind": "resource", "name": "Logs", "source": {"type": "azure_log", "query": EMOJI * 10000, "warn": 1,
                                                    "alert": 2, "workspace_id": "0" * 8 + "-0000-0000-0000-" + "0" * 12}},
], ids=["50-headers-of-4KiB", "16KiB-emoji-body", "500-part-lines", "10000-emoji-query"])
async def test_a_definition_too_large_to_store_is_a_413_and_nothing_is_written(settings, spec):
    too_large(*await call("monitors", "POST", "v1/monitors", spec))
    assert await listed() == []
    status, _ = await call("monitors", "POST", "v1/monitors", {**spec, "name": "Small"} | (
        {"headers": {}} if "headers" in spec else {"body": "x"} if "body" in spec else
        {"parts": spec["parts"][:2]} if "parts" in spec else {"source": {**spec["source"], "query": "Heartbeat"}}))
    assert status == 201  # the same kind of definition, smaller: stored (its unique key was not taken)


async def test_a_patch_too_large_to_store_is_a_413_and_changes_nothing(settings):
    created = (await call("monitors", "POST", "v1/monitors", website()))[1]
    route = {"monitor_id": created["id"]}
    too_large(*await call("monitor", "PATCH", f"v1/monitors/{created['id']}",
                          {"headers": {f"X-Header-{n}": "v" * 4096 for n in range(50)}}, route=route))
    _, now = await call("monitor", "GET", f"v1/monitors/{created['id']}", route=route)
    assert now["headers"] == {} and now["updated_at"] == created["updated_at"]


async def test_alert_rules_too_long_or_too_large(settings, monkeypatch):
    rule = {"metric": "monitors_total", "operator": ">", "threshold": 0}
    status, body = await call("alert_rules", "POST", "v1/alert-rules", {**rule, "name": "n" * 10000})
    assert status == 422 and fields(body) == {"name"}
    from shared.storage import limits

    monkeypatch.setattr(limits, "MAX_STRING_BYTES", 600)  # a rule's definition is small: make the limit smaller
    status, body = await call("alert_rules", "POST", "v1/alert-rules", {**rule, "name": "n" * 200})
    assert status == 413 and body["error"]["code"] == "too_large" and "600" in body["error"]["message"]
    assert (await call("alert_rules", "GET", "v1/alert-rules"))[1] == {"items": []}
    made = (await call("alert_rules", "POST", "v1/alert-rules", rule))[1]
    status, body = await call("alert_rule", "PATCH", f"v1/alert-rules/{made['id']}", {"name": "n" * 200},
                              route={"rule_id": made["id"]})
    assert status == 413
    assert (await call("alert_rule", "GET", "", route={"rule_id": made["id"]}))[1]["name"] == made["name"]


# ------------------------------------------------------------------------------------------- times


@pytest.mark.parametrize(("name", "path", "params", "field"), [
    ("timeseries", "v1/timeseries", {"metric": "monitors_total", "to": "9999-12-31T23:59:59.999999Z"}, "to"),
    ("timeseries", "v1/timeseries", {"metric": "monitors_total", "from": "0001-01-01T00:00:00Z"}, "from"),
    ("events", "v1/events", {"before": "0001-01-01T00:00:00Z"}, "before"),
    ("events", "v1/events", {"before": "9999-12-31T23:59:59Z"}, "before"),
    ("history", "v1/history", {"before": "0001-01-01T00:00:00+14:00"}, "before"),
    ("monitor_results", "v1/monitors/{id}/results", {"before": "0001-01-01T00:00:00Z"}, "before"),
    ("monitor_results", "v1/monitors/{id}/results", {"before": "20240101"}, "before"),  # ISO 8601, not RFC 3339
    ("events", "v1/events", {"before": "2024-01-01T00:00:00Z junk"}, "before"),
])
async def test_times_outside_years_2000_to_2999_are_a_422_naming_the_parameter(settings, name, path, params, field):
    mid = (await call("monitors", "POST", "v1/monitors", website()))[1]["id"]
    status, body = await call(name, "GET", path.format(id=mid), params=params, route={"monitor_id": mid})
    assert status == 422 and fields(body) == {field}, body
    assert "2000" in body["error"]["message"] and "2999" in body["error"]["message"]


async def test_times_inside_the_range_and_in_every_rfc_3339_spelling_are_taken(settings):
    for before in ("2000-01-01T00:00:00Z", "2999-12-31T23:59:59.999999+00:00", "2024-05-01t12:00:00z",
                   "2024-05-01 12:00:00.5-07:00", "2024-05-01T12:00:00 02:00"):  # an unencoded "+" reads as " "
        status, body = await call("events", "GET", "v1/events", params={"before": before})
        assert status == 200, (before, body)


# ------------------------------------------------------------------------------- query parameters


@pytest.mark.parametrize("limit", [" 5 ", "1_0", "5.0", "+5", "\u0665", "0x10", "1e2", "-1", "0", "1001"])
async def test_loose_numbers_are_a_422(settings, limit):
    status, body = await call("events", "GET", "v1/events", params={"limit": limit})
    assert status == 422 and fields(body) == {"limit"}


@pytest.mark.parametrize("wait", [" 5 ", "1_0", "nan", "inf", "\u0665", "31", "-0.5"])
async def test_loose_waits_are_a_422(settings, wait):
    status, body = await call("snapshot", "GET", "v1/snapshot", params={"wait": wait})
    assert status == 422 and fields(body) == {"wait"}


async def test_event_filters_are_checked(settings):
    status, body = await call("events", "GET", "v1/events", params={"type": "NOPE"})
    assert status == 422 and fields(body) == {"type"}
    assert "MONITOR_DOWN" in body["error"]["details"][0]["message"]  # the known types are listed
    status, body = await call("events", "GET", "v1/events", params={"monitor_id": "nope'or'1"})
    assert status == 422 and fields(body) == {"monitor_id"}
    for params in ({"type": "MONITOR_DOWN"}, {"monitor_id": "0" * 32}, {"type": "", "monitor_id": ""}):
        assert (await call("events", "GET", "v1/events", params=params))[0] == 200


async def test_a_query_parameter_given_twice_is_a_422(settings):
    for name, path, query in (("events", "v1/events", "limit=5&limit=6"), ("events", "v1/events", "type=&type=x"),
                              ("history", "v1/history", "before=&before=2024-01-01T00:00:00Z"),
                              ("monitors", "v1/monitors", "kind=website&kind=stock")):
        first = dict(pair.split("=") for pair in query.split("&"))  # what a host keeps: one of them
        req = func.HttpRequest("GET", f"http://localhost:7071/api/{path}?{query}", params=first, body=b"")
        response = await functions()[name](req)
        body = json.loads(response.get_body())
        assert response.status_code == 422 and fields(body) == {query.split("=")[0]}, body


async def test_a_badge_window_given_twice_or_unknown_is_the_422_badge(settings):
    mid = (await call("monitors", "POST", "v1/monitors", website(public=True)))[1]["id"]
    for badge, query in (("uptime.svg", "window=7d&window=30d"), ("status.svg", "window=7d&window=30d"),
                         ("status.svg", "window=1y"), ("uptime.svg", "window=")):
        req = func.HttpRequest("GET", f"http://localhost:7071/api/badge/{mid}/{badge}?{query}", body=b"",
                               params=dict([query.split("&")[0].split("=")]),
                               route_params={"monitor_id": mid, "badge": badge})
        response = await functions()["badge"](req)
        assert response.status_code == (200 if query == "window=" else 422), (badge, query)
        assert response.get_body().startswith(b"<svg")


async def test_bodies_take_exactly_the_documented_types(settings):
    for spec in (website(enabled=0), website(interval_seconds="60"), website(attempts=2.0), website(public="yes")):
        status, body = await call("monitors", "POST", "v1/monitors", spec)
        assert status == 422 and len(fields(body)) == 1, (spec, body)
    status, body = await call("monitors", "POST", "v1/monitors",
                              json.dumps(website()).replace('"Shop"', '"Shop", "timeout_seconds": NaN').encode())
    assert status == 422 and fields(body) <= {"(body)", "timeout_seconds"}, body
    assert await listed() == []
    mid = (await call("monitors", "POST", "v1/monitors", website(interval_seconds=60, timeout_seconds=10)))[1]["id"]
    status, body = await call("monitor", "PATCH", f"v1/monitors/{mid}", {"enabled": 0}, route={"monitor_id": mid})
    assert status == 422 and fields(body) == {"enabled"}
    rule = {"metric": "monitors_total", "operator": ">", "threshold": "5"}
    status, body = await call("alert_rules", "POST", "v1/alert-rules", rule)
    assert status == 422 and fields(body) == {"threshold"}
    assert (await call("alert_rules", "POST", "v1/alert-rules", {**rule, "threshold": 5}))[0] == 201


# -------------------------------------------------------------------------- an unreadable definition


@pytest.fixture
async def broken(settings):
    """A stored website definition that no longer parses, with the guard row of its URL."""
    from shared.storage import Store, unique_row

    async with Store.open(settings) as store:
        await store.insert_monitor({"RowKey": BROKEN, "kind": "website", "name": "Old shop", "enabled": True,
                                    "spec": '{"kind": "website", "url": 5', "created_at": datetime.now(UTC),
                                    "updated_at": datetime.now(UTC)},
                                   [unique_row("website", "https://old.example.com/")])
    return {"monitor_id": BROKEN}


UNREADABLE = {"id": BROKEN, "kind": "website", "name": "Old shop", "enabled": True,
              "state": {"status": "ERROR", "error": "stored definition is unreadable"}}


async def test_an_unreadable_definition_can_be_read_and_deleted_but_not_changed_or_run(broken):
    path = f"v1/monitors/{BROKEN}"
    assert await listed() == [UNREADABLE]
    assert await call("monitor", "GET", path, route=broken) == (200, UNREADABLE)
    for name, method, tail, body in (("monitor", "PATCH", "", {"name": "New shop"}),
                                     ("monitor", "PATCH", "", {"enabled": False}),
                                     ("monitor_run", "POST", "/run", None)):
        status, answer = await call(name, method, path + tail, body, route=broken)
        assert status == 409 and answer["error"]["code"] == "conflict", answer
        assert "unreadable" in answer["error"]["message"] and "delete" in answer["error"]["message"]
        assert fields(answer) == {"(monitor)"}
    for name, tail in (("monitor_results", "/results"), ("monitor_downtimes", "/downtimes"),
                       ("monitor_uptime", "/uptime")):
        status, answer = await call(name, "GET", path + tail, route=broken)
        assert status == 200 and (answer.get("items") == [] or answer.get("checks") == 0), answer
    assert await listed() == [UNREADABLE]  # nothing changed

    assert (await call("monitor", "DELETE", path, route=broken))[0] == 204
    assert (await call("monitor", "GET", path, route=broken))[0] == 404
    assert await listed() == []
    status, _ = await call("monitors", "POST", "v1/monitors", website(url="https://old.example.com/"))
    assert status == 201  # its URL's guard row went with it


async def test_a_definition_of_a_kind_that_is_gone_is_unreadable_too(settings):
    from shared.storage import Store

    async with Store.open(settings) as store:
        await store.insert_monitor({"RowKey": BROKEN, "kind": "ftp", "name": "Files", "enabled": False,
                                    "spec": "{}", "created_at": datetime.now(UTC), "updated_at": datetime.now(UTC)})
    route = {"monitor_id": BROKEN}
    gone = {**UNREADABLE, "kind": "ftp", "name": "Files", "enabled": False}
    assert await call("monitor", "GET", f"v1/monitors/{BROKEN}", route=route) == (200, gone)
    assert (await call("monitor_results", "GET", f"v1/monitors/{BROKEN}/results", route=route))[0] == 200
    assert await listed() == [gone]
    assert (await call("monitor", "DELETE", f"v1/monitors/{BROKEN}", route=route))[0] == 204
    assert await listed() == []


@pytest.mark.parametrize("depth", [100_000, 980, 300])
async def test_deeply_nested_bodies_are_refused(settings, depth):
    nested = "[" * depth + "]" * depth
    inside = '{"kind": "website", "name": "x", "url": "https://x.example/", "headers": {"a": ' + nested + "}}"
    for raw in (nested, inside):
        status, body = await call("monitors", "POST", "v1/monitors", raw.encode())
        assert status in (400, 422) and body["error"]["details"], body
    status, body = await call("alert_rules", "POST", "v1/alert-rules", nested.encode())
    assert status in (400, 422)
    assert await listed() == []


async def test_strings_json_cannot_carry_are_refused(settings):
    raw = json.dumps(website(name="Shop \ud800")).encode()  # a lone surrogate: no character
    status, body = await call("monitors", "POST", "v1/monitors", raw)
    assert status in (400, 422) and body["error"]["details"], body
    assert await listed() == []


async def test_validation_details_name_the_field_and_the_kind(settings):
    status, body = await call("monitors", "POST", "v1/monitors", {"kind": "parts", "name": "Kit",
                                                                  "parts": [{"pk": 1}], "colour": "red"})
    assert status == 422
    assert {(d["field"], d["message"]) for d in body["error"]["details"]} >= {
        ("parts.0.quantity", "Field required"), ("colour", "not a field of parts monitors")}
