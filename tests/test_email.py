"""The e-mail path end to end: Azurite queue → the real queue-triggered functions → a real SMTP server.

The SMTP server (tests/smtp_server.py) is aiosmtpd with STARTTLS and AUTH required and a trustme certificate.
`Host` (tests/mailhost.py) does what the Functions host does with a queue trigger. The SMTP channel's own tests
(classification, the password never leaking) are in tests/test_email_smtp.py; website e-mails through the whole
pipeline in tests/test_email_website.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mailhost import (  # noqa: F401 - Run, as_trigger_input, user_function: other tests import them from here
    MAX_DEQUEUE,
    Host,
    Run,
    as_trigger_input,
    registered_functions,
    user_function,
)

import monitors
from shared import notify
from shared.events import Event, EventType
from shared.notify import message_id
from shared.settings import get_settings
from shared.storage import EVENTS_QUEUE, POISON_QUEUE, Store
from tests.smtp_server import USERNAME, SmtpServer, smtp, smtp_ca  # noqa: F401 - fixtures

ALICE, BOB = "alice@example.org", "bob@example.net"
OPS, ONCALL = "ops@example.org", "oncall@example.org"


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
        event.public = True  # its place on the status page is the link a recipient can open
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
            since = datetime.fromisoformat(event.details["since"])
            for part in (text, html):
                assert f"Shop homepage is DOWN since {since:%H:%M} UTC: HTTP 500 (expected 200-399)." in part
                assert f"{since:%Y-%m-%d %H:%M:%S} UTC" in part and "3 min so far" in part
                assert event.occurred_at.strftime("%Y-%m-%d %H:%M:%S UTC") in part
                assert f"https://monitor.example.org/api/status-page#m-{mid}" in part
                assert "/api/v1/" not in part  # never a route that needs a function key
                assert "Failed checks" in part and "3 in a row" in part
                for internal in ("website", "critical", "MONITOR_DOWN", "Kind", "Severity", "failures"):
                    assert internal not in part  # human labels only
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
        assert row["delivery"] == "failed" and "TLS certificate rejected: certificate issued by an unknown authority " \
            "(not trusted)" in row["delivery_error"]  # plain words, no OpenSSL codes
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
    """An event of an older version (no start time in it) still says from when to when."""
    settings, store = await setup(env, smtp)
    async with store:
        mid = await add_monitor(store, [ALICE])
        event = Event(type=EventType.MONITOR_UP, kind="website", monitor_id=mid, monitor_name="Shop homepage",
                      occurred_at=datetime(2024, 12, 1, 10, 44, 30, tzinfo=UTC),
                      message="Shop homepage is up again after 1.5 h.",
                      details={"downtime_seconds": 5410, "latency_ms": 182.4})
        await publish(store, event)
        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
    (m,) = smtp.messages
    assert m.subject == "[UP] Shop homepage: up again after 1 h 30 min (down 09:14-10:44 UTC)"
    for part in (m.part("plain"), m.part("html")):
        assert "Downtime" in part and "1 h 30 min" in part and "182 ms" in part
        assert "2024-12-01 09:14:20 UTC" in part and "2024-12-01 10:44:30 UTC" in part


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
