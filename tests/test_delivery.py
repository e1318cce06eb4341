"""Delivery an operator can trust: an SMTP outage of hours loses nothing, permanent refusals are never silent, moot
events are not sent, and events of a deleted monitor are dropped. Real Azurite, the real queue functions, a real
SMTP server (STARTTLS + AUTH) on loopback; retry waits shortened by DELIVERY_RETRY_MAX_SECONDS."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apphelp import call
from azure.data.tables.aio import TableClient
from test_email import ALICE, BOB, OPS, Host, add_monitor, down_event, event_row, publish, setup

from shared.events import Event, EventType
from shared.storage import EVENTS_QUEUE, POISON_QUEUE, Store
from tests.smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures

FAST = {"DELIVERY_RETRY_MAX_SECONDS": "1", "ADMIN_EMAIL_RECIPIENTS": OPS}


async def settle(host: Host, seconds: float = 15.0) -> list:
    """Run the delivery function until the queue is empty, waiting for messages put back with a delay."""
    runs: list = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = await host.run_once(EVENTS_QUEUE, "send_event_email")
        if run is not None:
            runs.append(run)
            continue
        if await host.count(EVENTS_QUEUE) == 0:
            return runs
        await asyncio.sleep(0.2)
    raise AssertionError(f"{EVENTS_QUEUE} did not empty in {seconds} s: {runs}")


def up_event(mid: str, name: str = "Shop homepage") -> Event:
    return Event(type=EventType.MONITOR_UP, kind="website", monitor_id=mid, monitor_name=name, severity="info",
                 message=f"{name} is up again after 3 min.", details={"downtime_seconds": 180})


async def test_an_smtp_outage_loses_nothing_and_every_alert_arrives_in_order_once(storage, env, smtp):
    settings, store = await setup(env, smtp, **FAST)
    async with store:
        mid = await add_monitor(store, [ALICE, BOB])
        down = down_event(mid)
        await publish(store, down)
        host = Host(storage)
        smtp.stop()  # connection refused, for a while
        for _ in range(3):  # three tries, each put back with a delay — never poisoned
            run = await host.run_once(EVENTS_QUEUE, "send_event_email")
            while run is None:
                await asyncio.sleep(0.2)
                run = await host.run_once(EVENTS_QUEUE, "send_event_email")
            assert run.outcome == "ok"
        up = up_event(mid)
        await publish(store, up)  # the recovery happens during the outage
        row = await event_row(store, down)
        assert row["delivery"] == "pending" and "refused" in row["delivery_error"].lower()
        assert isinstance(row["next_try_at"], datetime) and row["attempts"] >= 3
        assert await host.count(POISON_QUEUE) == 0 and smtp.messages == []

        smtp.start()
        await settle(host)
    subjects = [(m.rcpt_tos[0], m.subject.split("]")[0]) for m in smtp.messages]
    assert subjects.count((ALICE, "[DOWN")) == subjects.count((BOB, "[DOWN")) == 1  # once each
    assert [s for r, s in subjects if r == ALICE] == ["[DOWN", "[UP"]  # in the order they happened
    assert [s for r, s in subjects if r == BOB] == ["[DOWN", "[UP"]
    async with Store.open(settings) as store:
        assert (await event_row(store, down))["delivery"] == "sent"
        assert (await event_row(store, up))["delivery"] == "sent"


async def test_after_the_max_age_the_event_fails_and_the_operator_is_told(storage, env, smtp):
    settings, store = await setup(env, smtp, DELIVERY_MAX_AGE_HOURS="1", **FAST)
    async with store:
        mid = await add_monitor(store, [ALICE])
        old = down_event(mid)
        old.occurred_at = datetime.now(UTC) - timedelta(hours=2)  # an outage longer than the max age
        await publish(store, old)
        host = Host(storage)
        smtp.stop()
        assert (await host.run_once(EVENTS_QUEUE, "send_event_email")).outcome == "ok"  # failed for good
        row = await event_row(store, old)
        assert row["delivery"] == "failed" and "not delivered within 1 h" in row["delivery_error"]
        smtp.start()
        await settle(host)
    (notice,) = smtp.messages  # the audience's stale alert is not sent; the operator hears about it
    assert notice.rcpt_tos == [OPS] and notice.subject.startswith("[DELIVERY FAILED] Shop homepage: ")
    text = notice.part("plain")
    assert ALICE in text and "MONITOR_DOWN" in text and "refused" in text.lower()


async def test_a_notice_that_cannot_be_delivered_is_logged_loudly_and_shown_in_health(storage, env, smtp, caplog):
    settings, store = await setup(env, smtp, DELIVERY_MAX_AGE_HOURS="1", **FAST)
    async with store:
        notice = Event(type=EventType.MONITOR_ERROR, kind="website", monitor_id=await add_monitor(store, [ALICE]),
                       monitor_name="Shop homepage", severity="critical", message="Checker error: boom",
                       occurred_at=datetime.now(UTC) - timedelta(hours=2), details={"error": "boom"})
        await publish(store, notice)  # an operator event, older than the max age, while SMTP is down
        smtp.stop()
        with caplog.at_level(logging.CRITICAL):
            await settle(Host(storage), 4)
        assert any(r.levelno == logging.CRITICAL and "LOST" in r.getMessage() for r in caplog.records)
        assert await Host(storage).count(f"{POISON_QUEUE}-poison") == 0  # no queue that nothing reads
    status, health = await call("health", "GET", "v1/health")
    assert status == 200 and health["status"] == "degraded"
    assert health["delivery"]["notices_lost"] == 1 and "MONITOR_ERROR" in health["delivery"]["last_lost"]


async def test_a_refused_recipient_is_failed_and_the_operator_told_which_address_and_why(storage, env, smtp):
    smtp.reject(BOB)
    settings, store = await setup(env, smtp, **FAST)
    async with store:
        mid = await add_monitor(store, [BOB, ALICE])
        event = down_event(mid)
        await publish(store, event)
        await settle(Host(storage))
        row = await event_row(store, event)
        assert row["delivery"] == "partial" and BOB in row["delivery_error"]
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [ALICE, OPS]
    (notice,) = smtp.to(OPS)
    assert notice.subject.startswith("[RECIPIENT REFUSED] Shop homepage: ")
    text = notice.part("plain")
    assert BOB in text and "550" in text and "Shop homepage" in text  # which monitor, which address, the words


async def test_an_alert_nobody_could_receive_reaches_the_operator(storage, env, smtp):
    smtp.reject(ALICE)
    smtp.reject(BOB)
    settings, store = await setup(env, smtp, **FAST)
    async with store:
        event = down_event(await add_monitor(store, [ALICE, BOB]))
        await publish(store, event)
        await settle(Host(storage))
        assert (await event_row(store, event))["delivery"] == "failed"
    subjects = [m.subject for m in smtp.to(OPS)]
    assert any(s.startswith("[DELIVERY FAILED] Shop homepage:") for s in subjects)
    assert sum(s.startswith("[RECIPIENT REFUSED]") for s in subjects) == 2


async def test_wrong_credentials_tell_the_operator_at_most_once_an_hour_and_show_in_health(storage, env, smtp):
    settings, store = await setup(env, smtp, SMTP_PASSWORD="wrong-Passw0rd-77", **FAST)
    async with store:
        host = Host(storage)
        for name in ("Shop", "Blog", "Docs"):
            await publish(store, down_event(await add_monitor(store, [ALICE], name=name), name=name))
        await settle(host)
        failing = [e for e in await store.list_events(limit=50) if e["type"] == "CHANNEL_FAILING"]
        assert len(failing) == 1  # three failing alerts, one notice (which cannot be mailed either)
    assert smtp.messages == []
    status, health = await call("health", "GET", "v1/health")
    assert health["status"] == "degraded" and "535" in health["delivery"]["channels_failing"]["email"]["error"]
    assert "wrong-Passw0rd-77" not in str(health)


async def test_a_report_confirmed_meanwhile_and_a_replaced_reminder_are_not_sent(storage, env, smtp):
    settings, store = await setup(env, smtp, **FAST)
    async with store:
        mid = await add_monitor(store, [ALICE])
        first = down_event(mid, reminder=True)
        first.occurred_at -= timedelta(minutes=30)
        first.replaces = "reminder"
        newer = down_event(mid, reminder=True)
        newer.replaces = "reminder"
        await publish(store, first)
        await publish(store, newer)
        await settle(Host(storage))
        assert (await event_row(store, first))["delivery"] == "superseded"
        assert (await event_row(store, newer))["delivery"] == "sent"
    assert len(smtp.to(ALICE)) == 1


async def test_events_of_a_deleted_monitor_are_dropped_not_sent_to_the_defaults(storage, env, smtp, caplog):
    settings, store = await setup(env, smtp, DEFAULT_EMAIL_RECIPIENTS=BOB, **FAST)
    async with store:
        gone = down_event(uuid.uuid4().hex, name="Deleted one")
        await publish(store, gone)
        with caplog.at_level(logging.INFO):
            await settle(Host(storage))
        assert (await event_row(store, gone))["delivery"] == "dropped"
    assert smtp.messages == [] and any("dropped" in r.getMessage() for r in caplog.records)


CRASHING_WORKER = """
import asyncio, sys
sys.path[:0] = [{tests!r}, {root!r}]
from test_email import as_trigger_input, user_function
from shared.storage import EVENTS_QUEUE
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

async def main():
    async with QueueClient.from_connection_string({conn!r}, EVENTS_QUEUE,
                                                  message_decode_policy=TextBase64DecodePolicy()) as q:
        msg = await q.receive_message(visibility_timeout=1)
        print("received", flush=True)
        await user_function("send_event_email")(as_trigger_input(msg))

asyncio.run(main())
"""


async def test_a_crash_in_the_middle_of_the_smtp_transaction_sends_a_copy_with_the_same_message_id(storage, env,
                                                                                                   smtp):
    settings, store = await setup(env, smtp, **FAST)
    root = Path(__file__).resolve().parent.parent
    async with store:
        mid = await add_monitor(store, [ALICE])
        down = down_event(mid)
        await publish(store, down)
        smtp.hold_data = 30  # the server has the message; its 250 will come too late for the worker
        worker = subprocess.Popen([sys.executable, "-c", CRASHING_WORKER.format(tests=str(root / "tests"),
                                                                                root=str(root), conn=storage)],
                                  cwd=root, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not smtp.messages and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert smtp.messages, worker.communicate(timeout=5)
        worker.send_signal(signal.SIGKILL)  # kill -9 between the server taking the message and its reply
        worker.wait(timeout=10)
        smtp.hold_data = 0

        # Nothing recorded the send: the claim stays until its lease runs out (minutes; here: made to have run out).
        async with TableClient.from_connection_string(storage, "deliveries") as deliveries:
            [claim] = [row async for row in deliveries.query_entities(f"PartitionKey eq '{down.id}'")]
            assert claim["status"] == "in_progress"
            claim["expires_at"] = datetime.now(UTC) - timedelta(seconds=1)
            await deliveries.update_entity(claim)
        await asyncio.sleep(1.2)  # the killed worker's message becomes visible again
        await settle(Host(storage))
        assert (await event_row(store, down))["delivery"] == "sent"
    first, second = smtp.to(ALICE)
    assert first.message["Message-ID"] == second.message["Message-ID"]  # mail clients fold the two copies
    assert first.subject == second.subject
