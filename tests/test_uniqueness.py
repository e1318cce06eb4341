"""Website uniqueness through the HTTP API: only a monitor that checks a URL exactly the same way is a duplicate; a
disabled one blocks nobody; the 409 names the monitor that has it; a refused change stores nothing."""

from __future__ import annotations

import uuid

from apphelp import call
from targets import site, targets  # noqa: F401 - fixtures

import monitors
from shared.manage.monitors import held_rows
from shared.storage import Store, unique_row

URL = "http://127.0.0.1:9/shop"  # never checked here (no timer runs): only the definitions matter


async def post(body: dict, expect: int) -> dict:
    if body.get("kind", "website") == "website":
        body = {"kind": "website", "attempts": 1, **body}
    status, answer = await call("monitors", "POST", "v1/monitors", body)
    assert status == expect, answer
    return answer


async def patch(mid: str, body: dict, expect: int) -> dict:
    status, answer = await call("monitor", "PATCH", f"v1/monitors/{mid}", body, route={"monitor_id": mid})
    assert status == expect, answer
    return answer


async def get(mid: str) -> dict:
    status, answer = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert status == 200, answer
    return answer


def refused_for(answer: dict, holder: str) -> None:
    """A 409 that says which monitor checks it that way already, on the url field."""
    error = answer["error"]
    assert error["code"] == "conflict" and holder in error["message"], error
    assert "the same way" in error["message"] and "disable" in error["message"]
    assert [d["field"] for d in error["details"]] == ["url"] and holder in error["details"][0]["message"]


async def test_one_url_may_be_watched_in_two_ways_but_not_the_same_way_twice(settings):
    first = await post({"name": "Shop", "url": URL}, 201)
    variants = [{"keyword": "Add to cart"}, {"keyword": "Add to cart", "keyword_absent": True}, {"method": "HEAD"},
                {"method": "POST", "body": '{"q": 1}'}, {"headers": {"Accept-Language": "de"}},
                {"expected_status": ["200"]}, {"max_response_ms": 800}, {"body_regex": "cart|basket"},
                {"follow_redirects": False}]
    made = [await post({"name": f"Shop, another way {n}", "url": URL, **v}, 201) for n, v in enumerate(variants)]
    assert len({m["id"] for m in made}) == len(variants)

    # the same check spelt another way, under another name, schedule, audience and alert policy: a duplicate
    for same in ({"url": "HTTP://127.0.0.1:9/shop"}, {"url": URL, "expected_status": ["2xx", "300-399"]},
                 {"url": URL, "interval_seconds": 60, "recipients": ["team@example.com"], "failure_threshold": 1,
                  "timeout_seconds": 5, "cert_warning_days": 3, "public": True}):
        refused_for(await post({"name": "Shop again", **same}, 409), first["id"])
    refused_for(await post({"name": "German", "url": URL, "headers": {"accept-language": "de"}}, 409),
                made[4]["id"])  # header names in any case

    # a disabled monitor blocks nobody; enabling it again is refused while another checks the same
    await patch(first["id"], {"enabled": False}, 200)
    second = await post({"name": "Shop again", "url": URL}, 201)
    refused_for(await patch(first["id"], {"enabled": True}, 409), second["id"])
    assert (await get(first["id"]))["enabled"] is False
    await post({"name": "Draft", "url": URL, "enabled": False}, 201)  # a disabled copy may be made

    # a change that would make a duplicate is refused and changes nothing
    keyword = made[0]
    before = await get(keyword["id"])
    refused_for(await patch(keyword["id"], {"keyword": None, "name": "Renamed"}, 409), second["id"])
    after = await get(keyword["id"])
    assert {k: v for k, v in after.items() if k != "state"} == {k: v for k, v in before.items() if k != "state"}
    assert after["keyword"] == "Add to cart" and after["name"] == keyword["name"]

    # once the other one is gone, the first can be enabled again
    status, _ = await call("monitor", "DELETE", f"v1/monitors/{second['id']}", route={"monitor_id": second["id"]})
    assert status == 204
    assert (await patch(first["id"], {"enabled": True}, 200))["enabled"] is True
    refused_for(await post({"name": "Shop again", "url": URL}, 409), first["id"])


async def test_a_monitor_stored_by_an_older_version_can_be_changed_deleted_and_made_again(settings):
    """Older versions keyed website uniqueness by the URL alone: such a guard row is replaced by the first change and
    removed with the monitor, so neither fails and the URL is free afterwards."""
    mid = uuid.uuid4().hex
    cfg = monitors.parse_spec({"kind": "website", "id": mid, "name": "Old", "url": URL})
    async with Store.open(settings) as store:
        legacy = unique_row("website", "http://127.0.0.1:9/shop")
        await store.insert_monitor({"RowKey": mid, "kind": "website", "name": "Old", "enabled": True,
                                    "spec": monitors.to_entity_spec(cfg)}, [legacy])
        assert (await patch(mid, {"name": "Old shop"}, 200))["name"] == "Old shop"
        assert await held_rows(store, mid) == {unique_row("website", k) for k in cfg.unique_keys()}
        refused_for(await post({"name": "Again", "url": URL}, 409), mid)
        status, _ = await call("monitor", "DELETE", f"v1/monitors/{mid}", route={"monitor_id": mid})
        assert status == 204
        assert await held_rows(store, mid) == set()
    await post({"name": "Again", "url": URL}, 201)


async def test_stock_uniqueness_names_the_monitor_and_a_disabled_one_does_not_block(settings):
    first = await post({"kind": "stock", "product_id": 42}, 201)
    status, answer = await call("monitors", "POST", "v1/monitors", {"kind": "stock", "product_id": 42})
    assert status == 409 and first["id"] in answer["error"]["message"]
    assert answer["error"]["details"][0]["field"] == "product_id"
    await patch(first["id"], {"enabled": False}, 200)
    await post({"kind": "stock", "product_id": 42}, 201)
