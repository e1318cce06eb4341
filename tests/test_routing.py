"""Routing through the real queue function (real Azurite, the real SMTP server, local stand-ins speaking each
service's wire format): each monitor's events go to the channels it names, or the default ones, each channel
taking what its filter lets through; operator notices go to the operator's channels only; a signed webhook arrives
verified; one channel down delays nobody else and nothing is sent twice."""

from __future__ import annotations

import json
import uuid
from typing import Any

from standins import gotify_server, json_server, ntfy_server, webhook_server  # noqa: F401 - fixtures
from test_delivery import settle
from test_email import ALICE, OPS, Host, down_event, event_row, publish, setup

import monitors
from shared.events import Event, EventType
from shared.manage import channels as service
from shared.storage import EVENTS_QUEUE, Store
from tests.smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures

SALES = "sales@example.com"


async def add_monitor(store: Store, kind: str = "website", **fields: Any) -> str:
    mid = uuid.uuid4().hex
    spec = {"kind": kind, "id": mid, "name": fields.pop("name", "Shop"), **fields}
    if kind == "website":
        spec.setdefault("url", "https://shop.example.org/")
    cfg = monitors.parse_spec(spec)
    await store.insert_monitor({"RowKey": mid, "kind": kind, "name": cfg.name, "enabled": True,
                                "spec": monitors.to_entity_spec(cfg)})
    return mid


def event(type_: EventType, mid: str, kind: str = "website", severity: str = "info", name: str = "Shop",
          **details: Any) -> Event:
    return Event(type=type_, kind=kind, monitor_id=mid, monitor_name=name, severity=severity,  # type: ignore[arg-type]
                 message=f"{name}: {type_.value}", details=details)


async def test_each_channel_takes_what_its_filter_lets_through(storage, env, smtp, ntfy_server, gotify_server,
                                                                webhook_server):
    settings, store = await setup(env, smtp)
    async with store:
        await service.create_channel(store, {"type": "apprise", "name": "pager", "url": gotify_server.url(),
                                             "filter": {"types": ["MONITOR_DOWN", "RESOURCE_ALERT"]}})
        await service.create_channel(store, {"type": "apprise", "name": "chat", "url": ntfy_server.url("ops")})
        await service.create_channel(store, {"type": "email", "name": "sales", "recipients": [SALES],
                                             "filter": {"kinds": ["stock"]}})
        await service.create_channel(store, {"type": "webhook", "name": "hook", "url": webhook_server.url(),
                                             "secret": webhook_server.secret, "default": True})
        shop = await add_monitor(store, channels=["pager", "chat", "sales"])
        stock = await add_monitor(store, "stock", name="Widget", product_id=7, threshold_low=5,
                                  channels=["chat", "sales"])
        plain = await add_monitor(store, name="Blog")  # names none: the default channels
        down = down_event(shop, name="Shop")
        for ev in (down, event(EventType.MONITOR_UP, shop, downtime_seconds=180),
                   event(EventType.THRESHOLD_BREACH_LOW, stock, "stock", "warning", "Widget", stock=2),
                   down_event(plain, name="Blog")):
            await publish(store, ev)
        await settle(Host(storage), 20)
        # pager: only the DOWN; chat: all three events of its monitors; sales: the stock event only
        assert [m.json["title"] for m in gotify_server.received] == ["[DOWN] Shop: HTTP 500 (expected 200-399)"]
        titles = [m.json["title"] for m in ntfy_server.received]  # in any order: each event is its own message
        assert sorted(t.split(":")[0].split(" (")[0] for t in titles) == ["[DOWN] Shop", "[LOW] Widget", "[UP] Shop"]
        assert [m.rcpt_tos for m in smtp.messages] == [[SALES]]
        assert "Widget" in smtp.messages[0].message["Subject"]
        # the webhook (default) got only the monitor that names no channels, signed and verified by the receiver
        (body,) = webhook_server.bodies
        assert body["version"] == 1 and body["type"] == "MONITOR_DOWN" and body["monitor"]["name"] == "Blog"
        assert body["text"].startswith("[DOWN] Blog") and "recipients" not in body["details"]
        assert webhook_server.received[0].headers["X-Monitor-Delivery"] == body["id"]
        # the chat text is short: the essential facts, no HTML
        message = next(m.json["message"] for m in ntfy_server.received if m.json["title"].startswith("[DOWN]"))
        assert "HTTP 500" in message and "<" not in message and len(message) < 700
        assert (await event_row(store, down))["delivery"] == "sent"


async def test_operator_notices_go_to_the_operator_channels_only(storage, env, smtp, ntfy_server, json_server):
    settings, store = await setup(env, smtp, ADMIN_EMAIL_RECIPIENTS=OPS)
    async with store:
        await service.create_channel(store, {"type": "apprise", "name": "audience", "url": ntfy_server.url(),
                                             "default": True})
        await service.create_channel(store, {"type": "apprise", "name": "ops-chat", "url": json_server.url(),
                                             "operator": True})
        mid = await add_monitor(store, recipients=[ALICE])
        broken = event(EventType.MONITOR_ERROR, mid, severity="critical", error="the checker broke", group="x")
        await publish(store, broken)
        await settle(Host(storage), 20)
        assert ntfy_server.received == []  # the audience never hears about the checker
        assert [m.rcpt_tos for m in smtp.messages] == [[OPS]]
        (notice,) = json_server.received
        assert "CHECKER ERROR" in notice.json["title"]


async def test_one_channel_down_delays_nobody_and_nothing_is_sent_twice(storage, env, smtp, webhook_server):
    settings, store = await setup(env, smtp, DELIVERY_RETRY_MAX_SECONDS="1")
    async with store:
        await service.create_channel(store, {"type": "webhook", "name": "hook", "url": webhook_server.url(),
                                             "secret": webhook_server.secret})
        mid = await add_monitor(store, recipients=[ALICE], channels=["hook"])
        webhook_server.fail_next(503, times=10)  # more than the tries of one invocation
        down = down_event(mid)
        await publish(store, down)
        host = Host(storage)
        run = await host.run_once(EVENTS_QUEUE, "send_event_email")
        assert run is not None
        assert [m.rcpt_tos for m in smtp.messages] == [[ALICE]]  # the e-mail went out at once
        row = await event_row(store, down)
        assert row["delivery"] == "pending" and "hook" in row["delivery_error"]
        webhook_server._fail.clear()  # the receiver is back
        await settle(host, 20)
        assert [m.rcpt_tos for m in smtp.messages] == [[ALICE]]  # not again
        assert [b["id"] for b in webhook_server.bodies] == [down.id]
        assert (await event_row(store, down))["delivery"] == "sent"


async def test_chat_only_setups_need_no_smtp(storage, env, webhook_server):
    env(GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="false")
    from shared.settings import get_settings

    settings = get_settings()
    async with Store.open(settings) as store:
        await service.create_channel(store, {"type": "webhook", "name": "hook", "url": webhook_server.url(),
                                             "secret": webhook_server.secret, "default": True})
        mid = await add_monitor(store, recipients=[ALICE])
        down = down_event(mid)
        await publish(store, down)
        await settle(Host(storage), 20)
        assert [b["type"] for b in webhook_server.bodies] == ["MONITOR_DOWN"]
        assert (await event_row(store, down))["delivery"] == "sent"
        assert json.dumps(await service.get_channel(store, "hook")).count(webhook_server.secret) == 0


async def test_a_host_name_that_resolves_to_a_refused_address_is_never_connected_to(storage, env, smtp,
                                                                                    webhook_server, ntfy_server):
    """The guard decides on the address a name resolves to, at every send: with 127.0.0.1 outside the allow-list,
    `localhost` is refused for the webhook and for Apprise alike, the servers hear nothing, and the operator is told
    (a permanent refusal), while the e-mail goes out."""
    settings, store = await setup(env, smtp, ADMIN_EMAIL_RECIPIENTS=OPS)
    async with store:
        await service.create_channel(store, {"type": "webhook", "name": "hook", "secret": webhook_server.secret,
                                             "url": f"http://localhost:{webhook_server.port}/hook"})
        await service.create_channel(store, {"type": "apprise", "name": "chat",
                                             "url": f"ntfy://localhost:{ntfy_server.port}/ops"})
        mid = await add_monitor(store, recipients=[ALICE], channels=["hook", "chat"])
    env(OUTBOUND_ALLOW_CIDRS="127.0.0.2/32")  # the servers' address is not allowed any more
    from shared.settings import get_settings

    async with Store.open(get_settings()) as store:
        down = down_event(mid)
        await publish(store, down)
        await settle(Host(storage), 20)
        assert webhook_server.received == [] and webhook_server.refused == []
        assert ntfy_server.received == [] and ntfy_server.refused == []
        row = await event_row(store, down)
        assert row["delivery"] == "partial" and "127.0.0.1" in row["delivery_error"]
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [ALICE, OPS, OPS]  # the alert, and one notice a channel


async def test_a_parents_alert_lists_the_monitors_whose_alerts_it_holds(storage, env, smtp, webhook_server):
    settings, store = await setup(env, smtp)
    async with store:
        await service.create_channel(store, {"type": "webhook", "name": "hook", "url": webhook_server.url(),
                                             "secret": webhook_server.secret})
        router = await add_monitor(store, name="Router", recipients=[ALICE], channels=["hook"])
        await add_monitor(store, name="Shop API", depends_on=[router])
        await add_monitor(store, name="Blog", depends_on=[router])
        await publish(store, down_event(router, name="Router"))
        await settle(Host(storage), 20)
    (mail,) = smtp.messages
    text = mail.part("plain")
    assert "Held alerts of" in text and "Shop API (PENDING)" in text and "Blog (PENDING)" in text
    (body,) = webhook_server.bodies
    assert sorted(body["details"]["held_dependents"]) == ["Blog (PENDING)", "Shop API (PENDING)"]
    assert "Held (depend on it): " in body["text"]
