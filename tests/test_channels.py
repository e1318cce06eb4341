"""Channels as data through the real HTTP functions (real Azurite): create, read with secrets masked, change,
refuse what would break alerts (a name in use, an unknown channel named by a monitor), delete."""

from __future__ import annotations

import json

from apphelp import call

from shared.storage import Store

SECRET = "whsec-0123456789abcdef-s3cret"
SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"


async def create(body: dict) -> tuple[int, dict]:
    return await call("channels", "POST", "v1/channels", body)


async def get(ident: str) -> tuple[int, dict]:
    return await call("channel", "GET", f"v1/channels/{ident}", route={"channel_id": ident})


async def patch(ident: str, body: dict) -> tuple[int, dict]:
    return await call("channel", "PATCH", f"v1/channels/{ident}", body, route={"channel_id": ident})


async def delete(ident: str) -> tuple[int, dict]:
    return await call("channel", "DELETE", f"v1/channels/{ident}", route={"channel_id": ident})


async def stored_spec(settings, channel_id: str) -> dict:
    async with Store.open(settings) as store:
        entity = await store.get_definition("channels", channel_id)
    assert entity is not None
    return json.loads(entity["spec"])


async def test_a_webhook_channel_is_stored_and_its_secret_never_shown(settings):
    status, made = await create({"type": "webhook", "name": "ops-hook", "url": "https://hooks.example.com/T0K3N/x",
                                 "secret": SECRET, "default": True})
    assert status == 201, made
    assert made["secret"] == "***" and made["url"] == "https://hooks.example.com/***"
    assert SECRET not in json.dumps(made)
    for ident in (made["id"], "ops-hook"):  # by id or by name
        status, shown = await get(ident)
        assert status == 200 and shown["id"] == made["id"] and SECRET not in json.dumps(shown)
    status, listed = await call("channels", "GET", "v1/channels")
    assert [c["name"] for c in listed["items"]] == ["ops-hook"] and SECRET not in json.dumps(listed)
    # the masked values sent back keep the stored ones; a real change replaces them
    status, changed = await patch(made["id"], {**shown, "timeout_seconds": 5})
    assert status == 200, changed
    spec = await stored_spec(settings, made["id"])
    assert spec["secret"] == SECRET and spec["url"] == "https://hooks.example.com/T0K3N/x" and spec["timeout_seconds"] == 5
    status, _ = await patch("ops-hook", {"secret": "another-secret-of-16+"})
    assert status == 200 and (await stored_spec(settings, made["id"]))["secret"] == "another-secret-of-16+"


async def test_an_apprise_url_is_validated_and_masked_but_for_its_scheme(settings):
    status, made = await create({"type": "apprise", "name": "slack-ops", "url": SLACK})
    assert status == 201, made
    assert made["url"] == "slack://***" and "TIiajkdnlazkcOXrIdevi7FQ" not in json.dumps(made)
    status, refused = await create({"type": "apprise", "name": "nope", "url": "foo://whatever/tok3n-secret"})
    assert status == 422, refused
    assert refused["error"]["details"][0]["field"] == "url"
    assert "tok3n-secret" not in json.dumps(refused)


async def test_bad_channels_are_422_naming_the_field_and_store_nothing(settings):
    cases = [
        ({"type": "sms", "name": "x"}, "type"),
        ({"type": "email", "name": "Sales Team", "recipients": ["a@example.com"]}, "name"),
        ({"type": "email", "name": "sales", "recipients": []}, "recipients"),
        ({"type": "webhook", "name": "h", "url": "ftp://x", "secret": SECRET}, "url"),
        ({"type": "webhook", "name": "h", "url": "https://x.example", "secret": "short"}, "secret"),
        ({"type": "email", "name": "s", "recipients": ["a@example.com"], "filter": {"kinds": ["weather"]}},
         "filter.kinds"),
        ({"type": "email", "name": "s", "recipients": ["a@example.com"], "digest": "daily",
          "digest_timezone": "Mars/Olympus"}, "digest_timezone"),
        ({"type": "email", "name": "s", "recipients": ["a@example.com"],
          "escalation": [{"after_minutes": 15, "channels": ["pager"]}]}, "escalation.0.channels.0"),
    ]
    for body, field in cases:
        status, answer = await create(body)
        assert status == 422, (body, answer)
        assert any(d["field"].startswith(field) for d in answer["error"]["details"]), (field, answer)
    assert (await call("channels", "GET", "v1/channels"))[1] == {"items": []}


async def test_names_are_unique_and_a_channel_in_use_cannot_be_deleted_or_renamed(settings):
    status, sales = await create({"type": "email", "name": "sales", "recipients": ["sales@example.com"],
                                  "filter": {"kinds": ["stock"]}})
    assert status == 201
    status, again = await create({"type": "email", "name": "sales", "recipients": ["b@example.com"]})
    assert status == 409 and "sales" in again["error"]["message"]
    # a monitor may name only channels that exist
    status, bad = await call("monitors", "POST", "v1/monitors", {"kind": "website", "name": "Shop",
                                                                  "url": "http://127.0.0.1:9/", "channels": ["slack"]})
    assert status == 422 and bad["error"]["details"][0]["field"] == "channels.0"
    status, shop = await call("monitors", "POST", "v1/monitors", {"kind": "website", "name": "Shop",
                                                                   "url": "http://127.0.0.1:9/", "channels": ["sales"]})
    assert status == 201, shop
    status, refused = await delete("sales")
    assert status == 409 and "Shop" in refused["error"]["message"]
    status, refused = await patch("sales", {"name": "sales-team"})
    assert status == 409
    assert (await get("sales"))[0] == 200  # still there, unchanged
    await call("monitor", "PATCH", f"v1/monitors/{shop['id']}", {"channels": []}, route={"monitor_id": shop["id"]})
    assert (await delete("sales"))[0] == 204
    assert (await get(sales["id"]))[0] == 404
    assert (await delete("sales"))[0] == 404


async def test_a_test_message_reports_what_the_service_said(settings):
    # a webhook nobody listens on: the test answers 200 with the failure, transient, and no secret in it
    status, made = await create({"type": "webhook", "name": "down-hook", "url": "http://127.0.0.1:9/hook",
                                 "secret": SECRET})
    assert status == 201
    status, tested = await call("channel_test", "POST", f"v1/channels/{made['id']}/test",
                                route={"channel_id": made["id"]})
    assert status == 200, tested
    assert tested["ok"] is False and tested["results"][0]["transient"] is True
    assert SECRET not in json.dumps(tested)
    status, missing = await call("channel_test", "POST", "v1/channels/nope/test", route={"channel_id": "nope"})
    assert status == 404


async def test_a_target_the_outbound_guard_refuses_is_a_422_at_once(settings):
    # 127.0.0.2 is loopback outside the test allow-list (127.0.0.1/32): refused, and nothing is stored
    for body in ({"type": "webhook", "name": "inside", "url": "http://127.0.0.2:8080/hook", "secret": SECRET},
                 {"type": "apprise", "name": "inside", "url": "json://127.0.0.2:8080/notify"}):
        status, refused = await create(body)
        assert status == 422, refused
        assert refused["error"]["details"][0]["field"] == "url" and "OUTBOUND_ALLOW_CIDRS" in json.dumps(refused)
    assert (await call("channels", "GET", "v1/channels"))[1] == {"items": []}
