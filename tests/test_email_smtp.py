"""The SMTP channel on its own: the password never leaks (logs, stored rows, e-mails, errors), and smtplib's and the
socket layer's failures are classified (permanent or transient, recipient or channel). The path end to end is
tests/test_email.py."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import smtplib
import socket
import ssl

import pytest
from test_email import ALICE, BOB, OPS, Host, add_monitor, down_event, publish, setup

from shared.notify import EmailChannel, Notification, PermanentError, TransientError
from shared.settings import get_settings
from shared.storage import EVENTS_QUEUE
from tests.smtp_server import PASSWORD, USERNAME, smtp, smtp_ca  # noqa: F401 - fixtures


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
