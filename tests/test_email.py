"""The e-mail path end to end: Azurite queue → the real queue-triggered functions → a real SMTP server.

The SMTP server (tests/smtp_server.py) is aiosmtpd with STARTTLS and AUTH required and a trustme certificate.
`Host` below does what the Functions host does with a queue trigger: receive a message, invoke the function with
an azure.functions.QueueMessage, delete the message on success, make it visible again on failure, and move it to
`<queue>-poison` once it failed maxDequeueCount times.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import smtplib
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessageInConverter
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

import monitors
from shared import notify
from shared.events import Event, EventType
from shared.notify import EmailChannel, Notification, PermanentError, TransientError, message_id
from shared.settings import get_settings
from shared.storage import EVENTS_QUEUE, POISON_QUEUE, Store
from shared.triggers.mail import bp
from tests.smtp_server import PASSWORD, USERNAME, SmtpServer, smtp, smtp_ca  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
ALICE, BOB = "alice@example.org", "bob@example.net"
OPS, ONCALL = "ops@example.org", "oncall@example.org"
MAX_DEQUEUE = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]["maxDequeueCount"]


# ------------------------------------------------------------------------------------------------ helpers


def registered_functions() -> dict[str, Any]:
    """The blueprint's functions as the worker indexes them (FunctionApp.register_functions → get_functions)."""
    app = func.FunctionApp()
    app.register_functions(bp)
    return {fn.get_function_name(): fn for fn in app.get_functions()}


def user_function(name: str) -> Callable[[func.QueueMessage], Awaitable[None]]:
    return registered_functions()[name].get_user_function()


@dataclass
class Run:
    outcome: str  # "ok", "failed" (made visible again) or "poisoned" (moved to <queue>-poison)
    dequeue_count: int
    error: BaseException | None = None


def as_trigger_input(msg: Any) -> func.QueueMessage:
    """What the Python worker hands the function: the queue binding's converter applied to the host's data
    (the body, base64-decoded by the host, and the trigger metadata)."""
    def stamp(dt: datetime | None) -> Datum | None:
        return Datum(dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"), "string") if dt else None

    metadata = {"Id": Datum(msg.id, "string"), "DequeueCount": Datum(msg.dequeue_count, "int"),
                "PopReceipt": Datum(msg.pop_receipt, "string"), "InsertionTime": stamp(msg.inserted_on),
                "ExpirationTime": stamp(msg.expires_on), "NextVisibleTime": stamp(msg.next_visible_on)}
    qm = QueueMessageInConverter.decode(Datum(msg.content, "string"),
                                        trigger_metadata={k: v for k, v in metadata.items() if v is not None})
    assert isinstance(qm, func.QueueMessage) and qm.dequeue_count == msg.dequeue_count
    return qm


class Host:
    """The Functions host's queue listener, reduced to what matters here (visibility timeout 0 for speed)."""

    def __init__(self, conn: str) -> None:
        self.conn = conn

    def client(self, name: str) -> QueueClient:
        return QueueClient.from_connection_string(self.conn, name, message_encode_policy=TextBase64EncodePolicy(),
                                                  message_decode_policy=TextBase64DecodePolicy())

    async def run_once(self, queue: str, function: str, complete: bool = True) -> Run | None:
        """Receive one message and invoke the function. complete=False: the function succeeds but the host
        dies before deleting the message, so it comes back (at-least-once delivery)."""
        fn = user_function(function)
        async with self.client(queue) as q:
            msg = await q.receive_message(visibility_timeout=30)
            if msg is None:
                return None
            qm = as_trigger_input(msg)
            try:
                await fn(qm)
            except Exception as error:
                if msg.dequeue_count >= MAX_DEQUEUE:
                    async with self.client(f"{queue}-poison") as poison:
                        with contextlib.suppress(ResourceExistsError):
                            await poison.create_queue()
                        await poison.send_message(msg.content)
                    await q.delete_message(msg)
                    return Run("poisoned", msg.dequeue_count, error)
                await q.update_message(msg, visibility_timeout=0)
                return Run("failed", msg.dequeue_count, error)
            if complete:
                await q.delete_message(msg)
            else:
                await q.update_message(msg, visibility_timeout=0)
            return Run("ok", msg.dequeue_count)

    async def drain(self, queue: str, function: str, limit: int = 20) -> list[Run]:
        runs = []
        for _ in range(limit):
            run = await self.run_once(queue, function)
            if run is None:
                return runs
            runs.append(run)
        raise AssertionError(f"{queue} did not drain in {limit} runs: {runs}")

    async def send(self, queue: str, content: str) -> None:
        async with self.client(queue) as q:
            await q.send_message(content)

    async def count(self, queue: str) -> int:
        async with self.client(queue) as q:
            try:
                props = await q.get_queue_properties()
            except Exception:
                return 0
            return props.approximate_message_count


async def add_monitor(store: Store, recipients: list[str], name: str = "Shop homepage") -> str:
    mid = uuid.uuid4().hex
    cfg = monitors.parse_spec({"kind": "website", "id": mid, "name": name, "url": "https://shop.example.org/",
                               "recipients": recipients})
    await store.insert_monitor({"RowKey": mid, "kind": "website", "name": name, "enabled": True,
                                "spec": monitors.to_entity_spec(cfg)})
    return mid


def down_event(mid: str, name: str = "Shop homepage", **details: Any) -> Event:
    now = datetime.now(UTC).replace(microsecond=123000)
    details = {"error": "HTTP 500 (expected 200-399)", "since": (now - timedelta(minutes=3)).isoformat(),
               "failures": 3, **details}
    return Event(type=EventType.MONITOR_DOWN, kind="website", monitor_id=mid, monitor_name=name,
                 severity="critical", occurred_at=now, message=f"{name} is down: {details['error']}",
                 details=details)


async def publish(store: Store, event: Event) -> dict[str, Any]:
    """What shared/engine.py `publish` does with an outbox row's event."""
    ev = event.model_dump(mode="json")
    await store.save_event(ev, delivery="queued")
    await store.send_event_message({"event": ev})
    return ev


async def event_row(store: Store, event: Event) -> dict[str, Any]:
    rows = await store.list_events(monitor_id=event.monitor_id)
    return next(r for r in rows if r["event_id"] == event.id)


async def setup(env, smtp: SmtpServer, **extra: str):
    env(**smtp.settings(**extra))
    settings = get_settings()
    return settings, Store.open(settings)


# ---------------------------------------------------------------------------------------------- the wiring


def test_blueprint_binds_the_two_queues():
    fns = registered_functions()
    assert set(fns) >= {"send_event_email", "handle_poison_events"}
    for name, queue in (("send_event_email", EVENTS_QUEUE), ("handle_poison_events", POISON_QUEUE)):
        (binding,) = json.loads(fns[name].get_function_json())["bindings"]
        assert binding["type"] == "queueTrigger" and binding["direction"] == "IN" and binding["name"] == "msg"
        assert binding["queueName"] == queue and binding["connection"] == "AzureWebJobsStorage"
    assert notify.MAX_DEQUEUE_COUNT == MAX_DEQUEUE  # host.json and the operator's notice agree


# ------------------------------------------------------------------------------------------------ scenarios


async def test_event_is_emailed_to_each_recipient_over_starttls_with_auth(storage, env, smtp):
    settings, store = await setup(env, smtp, PUBLIC_BASE_URL="https://monitor.example.org/")
    async with store:
        mid = await add_monitor(store, [ALICE, BOB])
        event = down_event(mid)
        await publish(store, event)
        host = Host(storage)
        assert await host.drain(EVENTS_QUEUE, "send_event_email") == [Run("ok", 1)]

        assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [ALICE, BOB]
        for m in smtp.messages:
            assert len(m.rcpt_tos) == 1 and m.message["To"] == m.rcpt_tos[0]  # nobody sees the others
            assert m.tls and m.authenticated and m.login == USERNAME  # STARTTLS, then AUTH
            assert m.mail_from == "monitor@example.org" and m.message["From"] == "monitor@example.org"
            assert m.subject == "[DOWN] Shop homepage: HTTP 500 (expected 200-399)"
            assert m.message["Auto-Submitted"] == "auto-generated"
            assert m.message["Message-ID"].strip() == message_id(event.id, m.rcpt_tos[0], "monitor@example.org")
            assert m.message.get_content_type() == "multipart/alternative"
            text, html = m.part("plain"), m.part("html")
            for part in (text, html):
                assert "Shop homepage is down: HTTP 500 (expected 200-399)" in part
                assert "website" in part and "critical" in part
                assert event.occurred_at.strftime("%Y-%m-%d %H:%M:%S UTC") in part
                assert f"https://monitor.example.org/api/v1/monitors/{mid}" in part
            assert "Failures" in text and "Failures" in html  # the details table
        ids = {m.message["Message-ID"] for m in smtp.messages}
        assert len(ids) == 2

        assert (await event_row(store, event))["delivery"] == "sent"
        deliveries = {r["RowKey"]: r["status"] for r in await store.list_deliveries(event.id)}
        assert deliveries == {f"email:{ALICE}": "sent", f"email:{BOB}": "sent"}
        assert await host.count(EVENTS_QUEUE) == 0


async def test_html_escapes_a_malicious_monitor_name(storage, env, smtp):
    evil = 'Shop <script>alert("x")</script>'
    settings, store = await setup(env, smtp)
    async with store:
        mid = await add_monitor(store, [ALICE], name=evil)
        event = down_event(mid, name=evil, error='<img src=x onerror="alert(1)">')
        await publish(store, event)
        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
    (m,) = smtp.messages
    html, text = m.part("html"), m.part("plain")
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert evil in text  # the plain-text twin is not escaped
    assert m.subject == f'[DOWN] {evil}: <img src=x onerror="alert(1)">'


async def test_redelivered_message_emails_each_recipient_once(storage, env, smtp):
    settings, store = await setup(env, smtp)
    async with store:
        mid = await add_monitor(store, [ALICE, BOB])
        event = down_event(mid)
        ev = await publish(store, event)
        host = Host(storage)
        # The function succeeds but the host dies before deleting the message: it comes back.
        assert await host.run_once(EVENTS_QUEUE, "send_event_email", complete=False) == Run("ok", 1)
        assert await host.run_once(EVENTS_QUEUE, "send_event_email", complete=False) == Run("ok", 2)
        # And the engine published the same event twice (crash between send and outbox delete).
        await store.send_event_message({"event": ev})
        runs = await host.drain(EVENTS_QUEUE, "send_event_email")
        assert [r.outcome for r in runs] == ["ok", "ok"]

        assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [ALICE, BOB]
        assert (await event_row(store, event))["delivery"] == "sent"


async def test_recipient_refused_with_550_is_not_retried(storage, env, smtp):
    smtp.reject(BOB)
    settings, store = await setup(env, smtp)
    async with store:
        mid = await add_monitor(store, [BOB, ALICE])
        event = down_event(mid)
        ev = await publish(store, event)
        host = Host(storage)
        runs = await host.drain(EVENTS_QUEUE, "send_event_email")  # the event, then the operator's notice
        assert runs == [Run("ok", 1), Run("ok", 1)]  # no redelivery

        assert [m.rcpt_tos for m in smtp.messages] == [[ALICE]]  # (no ADMIN_EMAIL_RECIPIENTS here)
        assert smtp.rcpt_attempts.count(BOB) == 1  # a 5xx is final: not even retried in the invocation
        row = await event_row(store, event)
        assert row["delivery"] == "partial" and "550" in row["delivery_error"] and BOB in row["delivery_error"]

        await store.send_event_message({"event": ev})  # a duplicate later changes nothing
        await host.drain(EVENTS_QUEUE, "send_event_email")
        assert smtp.rcpt_attempts.count(BOB) == 1 and len(smtp.messages) == 1
        assert (await event_row(store, event))["delivery"] == "partial"

        only_bob = down_event(await add_monitor(store, [BOB], name="Blog"), name="Blog")
        await publish(store, only_bob)
        await host.drain(EVENTS_QUEUE, "send_event_email")
        assert (await event_row(store, only_bob))["delivery"] == "failed"


async def test_451_is_retried_inside_the_invocation_then_on_a_later_try(storage, env, smtp):
    settings, store = await setup(env, smtp, DELIVERY_RETRY_MAX_SECONDS="1")
    async with store:
        host = Host(storage)
        smtp.tempfail(1)  # greylisted once: the second try of the same invocation gets through
        first = down_event(await add_monitor(store, [ALICE]))
        await publish(store, first)
        assert await host.drain(EVENTS_QUEUE, "send_event_email") == [Run("ok", 1)]
        assert smtp.rcpt_attempts == [ALICE, ALICE] and len(smtp.messages) == 1

        smtp.tempfail(3)  # every try of the first invocation: put back with a delay, the next try works
        second = down_event(await add_monitor(store, [BOB], name="Blog"), name="Blog")
        await publish(store, second)
        assert await host.drain(EVENTS_QUEUE, "send_event_email") == [Run("ok", 1)]
        row = await event_row(store, second)
        assert row["delivery"] == "pending" and "451" in row["delivery_error"] and smtp.to(BOB) == []
        await asyncio.sleep(1.5)
        assert await host.drain(EVENTS_QUEUE, "send_event_email") == [Run("ok", 1)]  # a new message, not a redelivery
        assert len(smtp.to(BOB)) == 1
        assert (await event_row(store, second))["delivery"] == "sent"


async def test_a_message_the_host_gave_up_on_reaches_the_operator_once_and_nobody_else(storage, env, smtp):
    """The poison queue now only gets messages the delivery function crashed on (our storage failing, a bug)."""
    settings, store = await setup(env, smtp, ADMIN_EMAIL_RECIPIENTS=OPS)
    async with store:
        mid = await add_monitor(store, [ALICE, BOB])
        event = down_event(mid)
        ev = event.model_dump(mode="json")
        await store.save_event(ev, delivery="queued")
        host = Host(storage)
        await store.ensure_queues()
        await host.send(POISON_QUEUE, json.dumps({"event": ev}))
        assert await host.drain(POISON_QUEUE, "handle_poison_events") == [Run("ok", 1)]
        row = await event_row(store, event)
        assert row["delivery"] == "failed" and "poison" in row["delivery_error"]
        await host.drain(EVENTS_QUEUE, "send_event_email")  # the operator's notice
        (notice,) = smtp.messages
        assert notice.rcpt_tos == [OPS] and notice.subject.startswith("[DELIVERY FAILED] Shop homepage: ")
        text = notice.part("plain")
        assert "MONITOR_DOWN" in text and "Shop homepage" in text and ALICE in text and BOB in text

        # Neither a stray redelivery of the event nor a second poison copy e-mails anyone now.
        await store.send_event_message({"event": ev})
        await host.send(POISON_QUEUE, json.dumps({"event": ev}))
        assert [r.outcome for r in await host.drain(POISON_QUEUE, "handle_poison_events")] == ["ok"]
        assert all(r.outcome == "ok" for r in await host.drain(EVENTS_QUEUE, "send_event_email"))
        assert len(smtp.messages) == 1 and smtp.rcpt_attempts == [OPS]
        assert (await event_row(store, event))["delivery"] == "failed"


async def test_wrong_password_is_permanent_not_retried_forever(storage, env, smtp):
    settings, store = await setup(env, smtp, SMTP_PASSWORD="wrong-Passw0rd-77", ADMIN_EMAIL_RECIPIENTS=OPS)
    async with store:
        mid = await add_monitor(store, [ALICE, BOB])
        event = down_event(mid)
        ev = await publish(store, event)
        host = Host(storage)
        assert (await host.run_once(EVENTS_QUEUE, "send_event_email")) == Run("ok", 1)  # consumed, no retries
        logins = len(smtp.auth_attempts)
        assert 1 <= logins <= 2 and not any(ok for _, ok in smtp.auth_attempts)  # one connection, not 2 × 3
        row = await event_row(store, event)
        assert row["delivery"] == "failed" and "535" in row["delivery_error"]
        assert "wrong-Passw0rd-77" not in row["delivery_error"]
        statuses = {r["RowKey"]: r["status"] for r in await store.list_deliveries(event.id)}
        assert statuses == {f"email:{ALICE}": "failed", f"email:{BOB}": "failed"}

        await host.drain(EVENTS_QUEUE, "send_event_email")  # the operator's notice (refused the same way)
        logins = len(smtp.auth_attempts)
        await store.send_event_message({"event": ev})  # redelivered: skipped, no new login
        assert [r.outcome for r in await host.drain(EVENTS_QUEUE, "send_event_email")] == ["ok"]
        assert len(smtp.auth_attempts) == logins
        assert "535" in (await event_row(store, event))["delivery_error"]  # the reason survives the redelivery
        assert smtp.messages == [] and await host.count(POISON_QUEUE) == 0  # nothing poisoned, nothing spammed


async def test_untrusted_certificate_is_permanent(storage, env, smtp):
    settings, store = await setup(env, smtp, SMTP_CA_FILE="")  # the system CAs do not know our test CA
    async with store:
        event = down_event(await add_monitor(store, [ALICE]))
        await publish(store, event)
        assert all(r == Run("ok", 1) for r in await Host(storage).drain(EVENTS_QUEUE, "send_event_email"))
        row = await event_row(store, event)
        assert row["delivery"] == "failed" and "certificate" in row["delivery_error"].lower()
        assert smtp.messages == [] and smtp.auth_attempts == []  # never logged in over an untrusted channel


async def test_disabled_globally_sends_nothing(storage, env, smtp):
    settings, store = await setup(env, smtp, GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="false")
    async with store:
        event = down_event(await add_monitor(store, [ALICE]))
        await publish(store, event)
        assert await Host(storage).drain(EVENTS_QUEUE, "send_event_email") == [Run("ok", 1)]
        assert (await event_row(store, event))["delivery"] == "disabled"
        assert await store.list_deliveries(event.id) == []
    assert smtp.messages == [] and smtp.rcpt_attempts == []


async def test_operator_events_go_to_admins_not_to_the_monitor_recipients(storage, env, smtp):
    settings, store = await setup(env, smtp, ADMIN_EMAIL_RECIPIENTS=f"{OPS}; {ONCALL}",
                                  DEFAULT_EMAIL_RECIPIENTS=BOB)
    async with store:
        mid = await add_monitor(store, [ALICE])
        event = Event(type=EventType.MONITOR_ERROR, kind="website", monitor_id=mid, monitor_name="Shop homepage",
                      severity="critical", message="Checker error: state not stored",
                      details={"error": "state not stored"})
        await publish(store, event)
        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
        assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [ONCALL, OPS]
        assert {m.subject for m in smtp.messages} == {"[CHECKER ERROR] Shop homepage: state not stored"}
        assert (await event_row(store, event))["delivery"] == "sent"


async def test_default_recipients_when_the_monitor_has_none_and_nobody_when_it_is_gone(storage, env, smtp):
    settings, store = await setup(env, smtp, DEFAULT_EMAIL_RECIPIENTS=BOB)
    async with store:
        without = down_event(await add_monitor(store, []))
        gone = down_event(uuid.uuid4().hex, name="Deleted one")
        await publish(store, without)
        await publish(store, gone)
        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
        assert (await event_row(store, gone))["delivery"] == "dropped"
    assert sorted(m.subject for m in smtp.to(BOB)) == ["[DOWN] Shop homepage: HTTP 500 (expected 200-399)"]


async def test_no_recipients_anywhere_is_recorded(storage, env, smtp):
    settings, store = await setup(env, smtp)
    async with store:
        event = down_event(await add_monitor(store, []))
        await publish(store, event)
        assert await Host(storage).drain(EVENTS_QUEUE, "send_event_email") == [Run("ok", 1)]
        assert (await event_row(store, event))["delivery"] == "no_recipients"
    assert smtp.messages == []


async def test_recovery_mail_shows_the_downtime(storage, env, smtp):
    settings, store = await setup(env, smtp)
    async with store:
        mid = await add_monitor(store, [ALICE])
        event = Event(type=EventType.MONITOR_UP, kind="website", monitor_id=mid, monitor_name="Shop homepage",
                      message="Shop homepage is up again after 1.5 h.",
                      details={"downtime_seconds": 5410, "latency_ms": 182.4})
        await publish(store, event)
        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
    (m,) = smtp.messages
    assert m.subject == "[UP] Shop homepage: up again after 1 h 30 min"
    for part in (m.part("plain"), m.part("html")):
        assert "Downtime" in part and "1 h 30 min" in part and "182 ms" in part


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # it is TLS from the first byte
async def test_implicit_tls(storage, env, smtp):
    smtp.implicit_tls = True
    smtp.restart()
    settings, store = await setup(env, smtp)
    assert settings.smtp_security == "tls"
    async with store:
        await publish(store, down_event(await add_monitor(store, [ALICE])))
        assert await Host(storage).drain(EVENTS_QUEUE, "send_event_email") == [Run("ok", 1)]
    (m,) = smtp.messages
    assert m.tls and m.authenticated


async def test_unreadable_message_reaches_the_operator_once(storage, env, smtp):
    settings, store = await setup(env, smtp, ADMIN_EMAIL_RECIPIENTS=OPS)
    async with store:
        host = Host(storage)
        await store.ensure_queues()
        await host.send(EVENTS_QUEUE, '{"not": "an event"}')
        await host.send(EVENTS_QUEUE, '{"not": "an event"}')
        assert all(r.outcome == "ok" for r in await host.drain(EVENTS_QUEUE, "send_event_email"))
    (notice,) = smtp.messages  # the same unreadable message twice: one notice
    assert notice.rcpt_tos == [OPS] and "A queue message could not be read" in notice.part("plain")


async def test_the_smtp_password_never_leaks(storage, env, smtp, caplog):
    caplog.set_level(logging.DEBUG)
    host = Host(storage)
    wrong = "Wr0ng-but-secret-42"
    settings, store = await setup(env, smtp, ADMIN_EMAIL_RECIPIENTS=OPS, DELIVERY_RETRY_MAX_SECONDS="1")
    errors: list[str] = []
    async with store:
        # a good send, a refused recipient, greylisting, the server down, then back (the tries put back)
        smtp.reject(BOB)
        smtp.tempfail(1)
        await publish(store, down_event(await add_monitor(store, [ALICE, BOB])))
        await host.drain(EVENTS_QUEUE, "send_event_email")
        smtp.stop()
        await publish(store, down_event(await add_monitor(store, [ALICE], name="Blog"), name="Blog"))
        await host.drain(EVENTS_QUEUE, "send_event_email")
        errors += [r["delivery_error"] for r in await store.list_events() if r.get("delivery_error")]
        smtp.start()
        await asyncio.sleep(1.5)
        await host.drain(EVENTS_QUEUE, "send_event_email")
        # and a wrong password
        env(SMTP_PASSWORD=wrong)
        await publish(store, down_event(await add_monitor(store, [ALICE], name="Docs"), name="Docs"))
        await host.drain(EVENTS_QUEUE, "send_event_email")
        rows = await store.list_events()
    assert len(smtp.messages) == 3 and errors  # the scenarios really ran (ALICE's mails, the notice about BOB)

    secrets = [PASSWORD, wrong]
    for secret in list(secrets):
        for user in ("", USERNAME):
            secrets.append(base64.b64encode(f"{user}\0{USERNAME}\0{secret}".encode()).decode())
        secrets.append(base64.b64encode(secret.encode()).decode())
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]  # aiosmtpd's own server log aside
    logged = "\n".join(r.getMessage() for r in ours) + "\n" + "\n".join(
        logging.Formatter().formatException(r.exc_info) for r in ours if r.exc_info)
    stored = json.dumps([dict(r) for r in rows], default=str)
    mails = b"\n".join(m.raw for m in smtp.messages).decode()
    for secret in secrets:
        assert secret not in logged
        assert secret not in stored
        assert secret not in mails
        assert not any(secret in e for e in errors)
    assert any(r.name.startswith("shared.") for r in ours)  # our logs were captured at all


# ------------------------------------------------------------------------------------------ classification


@pytest.mark.parametrize(("error", "kind", "scope"), [
    (smtplib.SMTPRecipientsRefused({"a@b.c": (550, b"5.1.1 unknown")}), PermanentError, "recipient"),
    (smtplib.SMTPRecipientsRefused({"a@b.c": (452, b"4.2.2 mailbox full")}), TransientError, "recipient"),
    (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), PermanentError, "channel"),
    (smtplib.SMTPAuthenticationError(454, b"4.7.0 try later"), TransientError, "channel"),
    (smtplib.SMTPSenderRefused(553, b"5.7.1 not allowed", "x@y.z"), PermanentError, "channel"),
    (smtplib.SMTPSenderRefused(421, b"4.3.0 busy", "x@y.z"), TransientError, "channel"),
    (smtplib.SMTPDataError(554, b"5.7.1 spam"), PermanentError, "recipient"),
    (smtplib.SMTPDataError(451, b"4.3.0 local error"), TransientError, "recipient"),
    (smtplib.SMTPConnectError(421, b"too many connections"), TransientError, "channel"),
    (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), TransientError, "channel"),
    (smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server."), PermanentError, "channel"),
    (ConnectionRefusedError(111, "Connection refused"), TransientError, "channel"),
    (TimeoutError("timed out"), TransientError, "channel"),
    (socket.gaierror(-2, "Name or service not known"), TransientError, "channel"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), PermanentError, "channel"),
    (ssl.SSLError(1, "wrong version number"), TransientError, "channel"),
])
def test_smtp_errors_are_classified(env, error, kind, scope):
    env(GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="true", SMTP_HOST="127.0.0.1", SMTP_USERNAME=USERNAME,
        SMTP_PASSWORD=PASSWORD)
    channel = EmailChannel(get_settings())
    result = channel.classify(error, stage="send")
    assert type(result) is kind and result.scope == scope
    assert PASSWORD not in repr(channel) and PASSWORD not in str(result)


def test_scrub_removes_the_password_in_every_form(env):
    env(GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="true", SMTP_HOST="127.0.0.1", SMTP_USERNAME=USERNAME,
        SMTP_PASSWORD=PASSWORD)
    channel = EmailChannel(get_settings())
    plain = base64.b64encode(f"\0{USERNAME}\0{PASSWORD}".encode()).decode()
    error = channel.classify(smtplib.SMTPAuthenticationError(535, f"bad {PASSWORD} {plain}".encode()), "auth")
    assert PASSWORD not in str(error) and plain not in str(error) and "***" in str(error)


def test_subject_cannot_inject_headers(env):
    env(GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="true", SMTP_HOST="127.0.0.1")
    msg = EmailChannel(get_settings()).build(Notification(ALICE, "Down\r\nBcc: evil@example.com", "text",
                                                          "<p>x</p>", ref="e1"))
    assert msg["Bcc"] is None and "\n" not in msg["Subject"]
