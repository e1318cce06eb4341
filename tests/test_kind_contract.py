"""The kind contract as a user meets it: the up/down policy fields exist only for kinds with an up/down target,
definitions written before keep loading, and each kind's status vocabulary decides what shared views call
healthy, a breach or down."""

from __future__ import annotations

import json
import uuid

import pytest
from apphelp import call
from whmcs_fake import whmcs  # noqa: F401 - fixture

import monitors
from shared.engine import run_monitor
from shared.storage import Store

UPDOWN = ("failure_threshold", "success_threshold", "breaker_failures", "breaker_interval_seconds", "hide_url")


@pytest.mark.parametrize("field", UPDOWN)
@pytest.mark.parametrize("spec", [
    {"kind": "stock", "product_id": 7},
    {"kind": "parts", "name": "Kit", "parts": [{"pk": 1, "quantity": 1}]},
    {"kind": "resource", "name": "Disk", "source": {"type": "local"}},
], ids=["stock", "parts", "resource"])
async def test_updown_fields_are_refused_for_kinds_without_an_updown_target(settings, spec, field):
    status, body = await call("monitors", "POST", "v1/monitors", {**spec, field: 1 if field != "hide_url" else True})
    assert status == 422
    (detail,) = body["error"]["details"]
    assert detail["field"] == field and detail["message"] == f"not a field of {spec['kind']} monitors"
    assert (await call("monitors", "GET", "v1/monitors"))[1] == {"items": []}  # nothing stored


async def test_websites_keep_the_updown_fields(settings):
    status, body = await call("monitors", "POST", "v1/monitors", {
        "kind": "website", "name": "Shop", "url": "https://shop.example/", "failure_threshold": 2,
        "breaker_failures": 9, "hide_url": True})
    assert status == 201 and (body["failure_threshold"], body["breaker_failures"], body["hide_url"]) == (2, 9, True)


def test_the_openapi_schemas_follow_the_kinds():
    from shared.web import openapi

    schemas = openapi.document()["components"]["schemas"]
    properties = {name: set(schema.get("properties", {})) for name, schema in schemas.items()}
    assert set(UPDOWN) <= properties["WebsiteMonitor"]
    for name in ("StockMonitor", "PartsMonitor", "ResourceMonitor"):
        assert not set(UPDOWN) & properties[name], name


async def test_a_definition_stored_with_the_old_fields_keeps_loading_and_drops_them(env, storage, whmcs):
    """Stock definitions written before the up/down fields moved out still hold them: they load, run, show without
    them, and the next save stores them without."""
    from shared.settings import get_settings

    env(**whmcs.settings())
    settings = get_settings()
    whmcs.add(7, "VPS", 5)
    mid = uuid.uuid4().hex
    old = {"kind": "stock", "id": mid, "name": "VPS", "enabled": True, "interval_seconds": 300, "cron": None,
           "recipients": [], "renotify_minutes": None, "public": True, "product_id": 7, "threshold_low": 2,
           "failure_threshold": 3, "success_threshold": 1, "breaker_failures": 5, "breaker_interval_seconds": 300,
           "hide_url": False}
    async with Store.open(settings) as store:
        await store.insert_monitor({"RowKey": mid, "kind": "stock", "name": "VPS", "enabled": True,
                                    "spec": json.dumps(old)})
        outcome = await run_monitor(store, settings, mid)
        assert outcome.status == "OK" and outcome.result.data["quantity"] == 5

    status, shown = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert status == 200 and not set(UPDOWN) & set(shown) and shown["threshold_low"] == 2
    status, saved = await call("monitor", "PATCH", f"v1/monitors/{mid}", {"threshold_low": 3},
                               route={"monitor_id": mid})
    assert status == 200 and saved["threshold_low"] == 3
    async with Store.open(settings) as store:
        stored = json.loads((await store.get_monitor(mid))["spec"])
    assert not set(UPDOWN) & set(stored) and stored["threshold_low"] == 3


def test_each_kind_declares_its_statuses_and_shared_views_read_them():
    """Healthy, breach and red come from the kinds' vocabularies, and the order is worst first."""
    info = monitors.statuses()
    assert {s for s, i in info.items() if i.healthy} == {"UP", "OK"}
    assert {s for s, i in info.items() if i.breach} == {"LOW", "HIGH", "SHORT", "WARNING", "ALERT"}
    assert {s for s, i in info.items() if i.red} == {"DOWN", "ALERT"}
    ranked = sorted(info, key=monitors.status_rank)
    assert ranked == ["DOWN", "ALERT", "ERROR", "SHORT", "LOW", "HIGH", "WARNING", "DEGRADED", "PENDING", "OK", "UP"]
    for plugin in monitors.KINDS.values():
        assert {m.value for m in plugin.statuses.enum} <= set(plugin.statuses)  # every declared status is described
