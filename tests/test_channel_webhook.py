"""The signed webhook channel against a real receiver (tests/standins.py) that verifies the signature itself."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
from standins import WebhookReceiver, free_port, serve, webhook_server  # noqa: F401

from shared.notify.channel import Notification
from shared.notify.definitions import WebhookChannelDef
from shared.notify.webhook import WebhookChannel, encode, signature
from shared.outbound.errors import PermanentError, TransientError
from shared.outbound.http import USER_AGENT
from shared.settings import Settings

EVENT_BODY: dict[str, Any] = {"version": 1, "id": "evt-1", "type": "MONITOR_DOWN", "kind": "website", "severity": "critical",
              "monitor": {"id": "m1", "name": "Shop"}, "subject": "DOWN: Shop", "text": "Shop is down"}


@pytest.fixture
def app_settings(env: Any) -> Settings:
    from shared.settings import get_settings

    return get_settings()


def channel(url: str, secret: str, settings: Settings, **kwargs: Any) -> WebhookChannel:
    return WebhookChannel(WebhookChannelDef(name="hook", url=url, secret=secret, **kwargs), settings)


def note(body: dict[str, Any] = EVENT_BODY, ref: str = "evt-1") -> Notification:
    return Notification("hook", "DOWN: Shop", "Shop is down (long text)", ref=ref, short="Shop is down",
                        body=body)


async def test_a_signed_event_arrives_and_the_receiver_verifies_it(webhook_server: WebhookReceiver, app_settings: Settings) -> None:
    sender = channel(webhook_server.url(), webhook_server.secret, app_settings)

    answer = await sender.asend(note())

    assert answer == "HTTP 200: received evt-1"
    assert webhook_server.bodies == [EVENT_BODY]
    got = webhook_server.received[0]
    assert got.body == encode(EVENT_BODY)  # the exact bytes signed are the bytes sent
    assert got.headers["X-Signature-256"] == signature(webhook_server.secret, got.body)
    assert got.headers["X-Monitor-Event"] == "MONITOR_DOWN"
    assert got.headers["X-Monitor-Delivery"] == "evt-1"
    assert got.headers["User-Agent"] == USER_AGENT
    assert got.headers["Content-Type"] == "application/json"


async def test_a_tampered_body_fails_the_receivers_check(webhook_server: WebhookReceiver, app_settings: Settings) -> None:
    await channel(webhook_server.url(), webhook_server.secret, app_settings).asend(note())
    sent = webhook_server.received[0]
    tampered = sent.body.replace(b"critical", b"info")
    assert tampered != sent.body

    async with aiohttp.ClientSession() as client, client.post(
            webhook_server.url(), data=tampered, headers={"Content-Type": "application/json",
                                                          "X-Signature-256": sent.headers["X-Signature-256"]}) as resp:
        assert resp.status == 401
    assert webhook_server.bodies == [EVENT_BODY]  # the tampered one was not taken
    assert not webhook_server.verifies(tampered, sent.headers["X-Signature-256"])

    # a sender with another secret is refused too
    with pytest.raises(PermanentError, match="401"):
        await channel(webhook_server.url(), "another-secret-0123456789", app_settings).asend(note())
    assert len(webhook_server.received) == 1


async def test_a_test_message_carries_the_versioned_test_body(webhook_server: WebhookReceiver, app_settings: Settings) -> None:
    test = Notification("hook", "Test from the monitor", "This is a test.", ref="test-1")

    await channel(webhook_server.url(), webhook_server.secret, app_settings).asend(test)

    [body] = webhook_server.bodies
    assert body["version"] == 1 and body["type"] == "TEST"
    assert body["subject"] == "Test from the monitor" and body["text"] == "This is a test."
    assert body["sent_at"]
    assert webhook_server.received[0].headers["X-Monitor-Event"] == "TEST"


async def test_a_server_error_is_transient_and_a_gone_hook_permanent(webhook_server: WebhookReceiver, app_settings: Settings) -> None:
    sender = channel(webhook_server.url(), webhook_server.secret, app_settings)

    webhook_server.fail_next(500)
    with pytest.raises(TransientError) as down:
        await sender.asend(note())
    assert down.value.scope == "channel" and "500" in str(down.value)

    webhook_server.fail_next(410)
    with pytest.raises(PermanentError) as gone:
        await sender.asend(note())
    assert gone.value.scope == "channel"
    assert "410" in str(gone.value) and "Gone" in str(gone.value)  # the status and what the server said

    webhook_server.fail_next(429, headers={"Retry-After": "120"})
    with pytest.raises(TransientError, match="Retry-After: 120"):
        await sender.asend(note())

    assert webhook_server.received == []  # none of them was taken
    assert await sender.asend(note()) == "HTTP 200: received evt-1"


async def test_a_redirect_is_not_followed(webhook_server: WebhookReceiver, app_settings: Settings) -> None:
    sender = channel(webhook_server.url("/old"), webhook_server.secret, app_settings)
    webhook_server.fail_next(301, headers={"Location": webhook_server.url("/new")})

    with pytest.raises(PermanentError) as moved:
        await sender.asend(note())

    assert "301" in str(moved.value) and "/new" in str(moved.value) and "final URL" in str(moved.value)
    assert webhook_server.received == [] and len(webhook_server.refused) == 1  # /new was never asked


async def test_connection_refused_is_transient(app_settings: Settings) -> None:
    sender = channel(f"http://127.0.0.1:{free_port()}/hook", "s3cret-s3cret-s3cret", app_settings)

    with pytest.raises(TransientError) as refused:
        await sender.asend(note())

    assert refused.value.scope == "channel" and "connection refused" in str(refused.value)


async def test_an_address_outside_the_allow_list_is_refused_before_connecting(app_settings: Settings) -> None:
    with serve(WebhookReceiver, host="127.0.0.2") as elsewhere:
        sender = channel(elsewhere.url(), elsewhere.secret, app_settings)

        with pytest.raises(PermanentError) as refused:
            await sender.asend(note())

        assert refused.value.scope == "channel"
        assert "127.0.0.2" in str(refused.value) and "allow it with OUTBOUND_ALLOW_CIDRS" in str(refused.value)
        assert elsewhere.received == [] and elsewhere.refused == []  # it heard nothing at all


async def test_the_secret_and_url_tokens_never_appear_in_errors_or_logs(webhook_server: WebhookReceiver, app_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = "tok_9f8e7d6c5b4a39281706"
    query_key = "qk4242424242424242"
    url = webhook_server.url(f"/hooks/{token}?key={query_key}")
    sender = channel(url, webhook_server.secret, app_settings)
    errors: list[str] = []

    for status in (500, 410, 404):
        webhook_server.fail_next(status)  # the stand-in's answer names the path and query it was asked for
        with pytest.raises((TransientError, PermanentError)) as failed:
            await sender.asend(note())
        errors.append(str(failed.value))
    with serve(WebhookReceiver, host="127.0.0.2", secret=webhook_server.secret) as elsewhere:
        with pytest.raises(PermanentError) as refused:
            await channel(elsewhere.url(f"/hooks/{token}"), elsewhere.secret, app_settings).asend(note())
        errors.append(str(refused.value))
    errors.append(repr(sender))

    assert "***" in errors[0]  # the answer was there, with the token blanked
    seen = "\n".join(errors + [record.getMessage() for record in caplog.records])
    for secret in (webhook_server.secret, token, query_key):
        assert secret not in seen
