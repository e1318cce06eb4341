"""Escalation steps over the real Azurite: a DOWN goes out on the monitor's channel ("primary", e-mail to a real SMTP
server); its steps go to "oncall" (a signed webhook, tests/standins.py) after 15 min and "manager" (e-mail) after
30 min unless the problem is acknowledged or over. The steps run with a controlled clock (`escalation.step(…,
now=…)`), and once end to end through the real queue function for an event that is already old enough."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from apphelp import call
from mailhost import Host
from standins import WebhookReceiver, webhook_server  # noqa: F401 - fixtures
from test_email import ALICE, publish, setup

import monitors
from shared.events import Event, EventType
from shared.manage.channels import create_channel
from shared.notify import escalation
from shared.storage import EVENTS_QUEUE, Store
from tests.smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures

BOSS = "boss@example.org"


async def channels(store: Store, hook: WebhookReceiver) -> None:
    await create_channel(store, {"type": "webhook", "name": "oncall", "url": hook.url(), "secret": hook.secret})
    await create_channel(store, {"type": "email", "name": "manager", "recipients": [BOSS]})
    await create_channel(store, {"type": "email", "name": "primary", "recipients": [ALICE], "escalation": [
        {"after_minutes": 15, "channels": ["oncall"]}, {"after_minutes": 30, "channels": ["manager"]}]})


async def add_monitor(store: Store) -> str:
    mid = uuid.uuid4().hex
    cfg = monitors.parse_spec({"kind": "website", "id": mid, "name": "Shop", "url": "https://shop.example.org/",
                               "channels": ["primary"]})
    await store.insert_monitor({"RowKey": mid, "kind": "website", "name": "Shop", "enabled": True,
                                "spec": monitors.to_entity_spec(cfg)})
    return mid


async def set_state(store: Store, mid: str, status: str, since: datetime) -> None:
    """The state monitors/policy.py leaves (status and `since`), written the way the engine writes it."""
    row = await store.get_state("website", mid)
    data = {"status": status, "since": since.isoformat(), "fails": 1 if status == "DOWN" else 0,
            "oks": 0 if status == "DOWN" else 1}
    if status == "DOWN":
        data["down_since"] = since.isoformat()
    await store.commit_state("website", mid, data, status, row.etag if row else None, [])


async def go_down(store: Store, mid: str, at: datetime) -> Event:
    await set_state(store, mid, "DOWN", at)
    event = Event(type=EventType.MONITOR_DOWN, kind="website", monitor_id=mid, monitor_name="Shop",
                  severity="critical", occurred_at=at, message="Shop is down: HTTP 500",
                  details={"error": "HTTP 500", "since": at.isoformat(), "failures": 1})
    await publish(store, event)
    return event


def task(event: Event, step: int) -> dict[str, Any]:
    return {"task": "escalate", "event": event.model_dump(mode="json"), "channel": "primary", "step": step}


async def guards(store: Store) -> list[tuple[str, int]]:
    return sorted((r["event_id"], r["step"]) for r in await store.list_rows(escalation.PK))


async def world(storage, env, smtp, hook) -> tuple[Any, Store, Host, str]:
    settings, store = await setup(env, smtp, PUBLIC_BASE_URL="https://monitor.example.org")
    await store.__aenter__()
    await channels(store, hook)
    return settings, store, Host(storage), await add_monitor(store)


async def test_steps_with_a_controlled_clock(storage, env, smtp, webhook_server):
    settings, store, host, mid = await world(storage, env, smtp, webhook_server)
    async with store:
        at = datetime.now(UTC)
        event = await go_down(store, mid, at)
        await host.drain(EVENTS_QUEUE, "send_event_email")
        assert [m.rcpt_tos for m in smtp.messages] == [[ALICE]]
        assert await guards(store) == [(event.id, 0)]  # step 1 is queued, invisible for 15 min
        assert await host.count(EVENTS_QUEUE) == 1

        status = await escalation.step(store, settings, task(event, 0), now=at + timedelta(minutes=14))
        assert status.startswith("early") and await host.count(EVENTS_QUEUE) == 2 and not webhook_server.received

        status = await escalation.step(store, settings, task(event, 0), now=at + timedelta(minutes=15))
        assert status.startswith("escalated"), status
        (body,) = webhook_server.bodies
        assert body["id"] == event.id and body["type"] == "MONITOR_DOWN"
        assert body["details"]["escalation"] == {"step": 1, "after_minutes": 15, "channel": "primary"}
        assert body["ack_url"].startswith("https://monitor.example.org/api/ack?t=")
        assert len(smtp.messages) == 1  # the manager's step is not due yet
        assert await guards(store) == [(event.id, 0), (event.id, 1)]
        queued = await host.count(EVENTS_QUEUE)

        again = await escalation.step(store, settings, task(event, 0), now=at + timedelta(minutes=16))
        assert again.startswith("escalated")  # the redelivered task: nothing is sent twice, nothing queued twice
        assert len(webhook_server.received) == 1 and await host.count(EVENTS_QUEUE) == queued

        code, _ = await call("monitor_ack", "POST", f"v1/monitors/{mid}/ack", route={"monitor_id": mid})
        assert code == 200
        assert await escalation.step(store, settings, task(event, 1), now=at + timedelta(minutes=30)) \
            == "acknowledged"
        assert len(smtp.messages) == 1 and len(webhook_server.received) == 1
        assert await host.count(EVENTS_QUEUE) == queued  # and no further step


async def test_recovery_stops_the_escalation(storage, env, smtp, webhook_server):
    settings, store, host, mid = await world(storage, env, smtp, webhook_server)
    async with store:
        at = datetime.now(UTC)
        event = await go_down(store, mid, at)
        await host.drain(EVENTS_QUEUE, "send_event_email")
        await set_state(store, mid, "UP", at + timedelta(minutes=5))
        assert await escalation.step(store, settings, task(event, 0), now=at + timedelta(minutes=15)) == "resolved"
        await set_state(store, mid, "DOWN", at + timedelta(minutes=10))  # down again: another problem, its own event
        assert await escalation.step(store, settings, task(event, 0), now=at + timedelta(minutes=16)) == "resolved"
        assert not webhook_server.received and len(smtp.messages) == 1
        assert await guards(store) == [(event.id, 0)]


async def test_reminders_and_other_events_start_no_escalation(storage, env, smtp, webhook_server):
    settings, store, host, mid = await world(storage, env, smtp, webhook_server)
    async with store:
        at = datetime.now(UTC)
        await set_state(store, mid, "DOWN", at)
        reminder = Event(type=EventType.MONITOR_DOWN, kind="website", monitor_id=mid, monitor_name="Shop",
                         severity="critical", occurred_at=at, message="Shop is still down", replaces="reminder",
                         details={"reminder": True})
        up = Event(type=EventType.MONITOR_UP, kind="website", monitor_id=mid, monitor_name="Shop",
                   occurred_at=at + timedelta(seconds=1), message="Shop is up again")
        for event in (reminder, up):
            await publish(store, event)
        await host.drain(EVENTS_QUEUE, "send_event_email")
        assert len(smtp.messages) == 2 and await guards(store) == []


async def test_an_old_problem_escalates_through_the_real_queue_function(storage, env, smtp, webhook_server):
    """The event is 40 min old when it is delivered: both steps are due, each runs from the queue as a task."""
    settings, store, host, mid = await world(storage, env, smtp, webhook_server)
    async with store:
        event = await go_down(store, mid, datetime.now(UTC) - timedelta(minutes=40))
        runs = []
        for _ in range(100):  # the steps are queued with a 1 s visibility delay
            run = await host.run_once(EVENTS_QUEUE, "send_event_email")
            if run is not None:
                runs.append(run)
            elif len(runs) >= 3:
                break
            else:
                await asyncio.sleep(0.2)
        assert [r.outcome for r in runs] == ["ok"] * 3, runs
        assert [body["details"]["escalation"]["step"] for body in webhook_server.bodies] == [1]
        boss = smtp.to(BOSS)
        assert len(boss) == 1 and "Shop" in boss[0].subject and "[ESCALATED]" in boss[0].subject
        assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [ALICE, BOSS]
        assert await guards(store) == [(event.id, 0), (event.id, 1)]
        assert await host.count(EVENTS_QUEUE) == 0
