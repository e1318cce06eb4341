"""The Apprise channel against real stand-ins of ntfy, Gotify, Mattermost and a JSON endpoint (tests/standins.py),
the outbound guard for blocking clients, and the URL check that channel definitions use."""

from __future__ import annotations

import logging
import smtplib
import socket
from typing import Any

import pytest
import requests
from standins import (  # noqa: F401
    Gotify,
    Json,
    Mattermost,
    Ntfy,
    free_port,
    gotify_server,
    json_server,
    mattermost_server,
    ntfy_server,
    serve,
)

from shared.notify.apprise_channel import AppriseChannel, validate_url
from shared.notify.channel import Notification
from shared.notify.definitions import AppriseChannelDef
from shared.outbound.errors import PermanentError, TransientError
from shared.outbound.guard import Guard, OutboundRefused, parse_cidrs
from shared.outbound.sync_guard import guarded
from shared.settings import Settings

TITLE, TEXT, SHORT = "DOWN: Shop", "Shop is down since 09:14 UTC (the long e-mail text)", "Shop is down\nhttps://x/s"


@pytest.fixture
def app_settings(env: Any) -> Settings:
    from shared.settings import get_settings

    return get_settings()


def send(url: str, settings: Settings, short: str = SHORT) -> str:
    channel = AppriseChannel(AppriseChannelDef(name="chat", url=url), settings)
    return channel.send(Notification("chat", TITLE, TEXT, short=short, ref="evt-1"))


def test_ntfy_gets_the_title_and_the_short_text(ntfy_server: Ntfy, app_settings: Settings) -> None:
    assert send(ntfy_server.url("alerts"), app_settings) == "accepted by ntfy"

    [got] = ntfy_server.received
    assert got.json == {"topic": "alerts", "title": TITLE, "message": SHORT}


def test_gotify_gets_them_with_its_token(gotify_server: Gotify, app_settings: Settings) -> None:
    assert send(gotify_server.url(), app_settings) == "accepted by Gotify"

    [got] = gotify_server.received
    assert got.headers["X-Gotify-Key"] == gotify_server.token
    assert (got.json["title"], got.json["message"]) == (TITLE, SHORT)


def test_mattermost_gets_them_in_one_text(mattermost_server: Mattermost, app_settings: Settings) -> None:
    assert send(mattermost_server.url(), app_settings) == "accepted by Mattermost"

    [got] = mattermost_server.received
    assert got.path == f"/hooks/{mattermost_server.token}"
    assert got.json["text"] == f"{TITLE}\r\n{SHORT}"  # Mattermost has no title: Apprise puts it on top


def test_json_gets_them_and_the_long_text_when_there_is_no_short_one(json_server: Json, app_settings: Settings) -> None:
    assert send(json_server.url("/notify"), app_settings, short="") == "accepted by JSON"

    [got] = json_server.received
    assert got.path == "/notify"
    assert (got.json["title"], got.json["message"], got.json["version"]) == (TITLE, TEXT, "1.0")


def test_a_refused_token_is_permanent_and_not_repeated(gotify_server: Gotify, app_settings: Settings) -> None:
    wrong = "Wrong0token0abcdef"
    with pytest.raises(PermanentError) as refused:
        send(gotify_server.url(wrong), app_settings)

    assert refused.value.scope == "channel" and "401" in str(refused.value)
    assert wrong not in str(refused.value) and gotify_server.token not in str(refused.value)
    assert gotify_server.received == [] and len(gotify_server.refused) == 1

    gotify_server.fail_next(401)  # the right token, refused by the service all the same
    with pytest.raises(PermanentError, match="401"):
        send(gotify_server.url(), app_settings)


def test_a_server_error_is_transient(ntfy_server: Ntfy, app_settings: Settings) -> None:
    ntfy_server.fail_next(500)
    with pytest.raises(TransientError) as down:
        send(ntfy_server.url(), app_settings)
    assert down.value.scope == "channel" and "500" in str(down.value)

    ntfy_server.fail_next(429)
    with pytest.raises(TransientError, match="429"):
        send(ntfy_server.url(), app_settings)

    assert send(ntfy_server.url(), app_settings) == "accepted by ntfy"


def test_a_service_that_is_not_there_is_transient(app_settings: Settings) -> None:
    with pytest.raises(TransientError) as refused:
        send(f"ntfy://127.0.0.1:{free_port()}/alerts", app_settings)
    assert refused.value.scope == "channel" and "connection refused" in str(refused.value)


def test_an_address_outside_the_allow_list_is_refused_before_any_connection(app_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with serve(Gotify, host="127.0.0.2") as elsewhere:
        with pytest.raises(PermanentError) as refused:
            send(elsewhere.url(), app_settings)

        assert refused.value.scope == "channel"
        assert "127.0.0.2" in str(refused.value) and "allow it with OUTBOUND_ALLOW_CIDRS" in str(refused.value)
        assert elsewhere.received == [] and elsewhere.refused == []  # not even a connection reached it
    seen = "\n".join([str(refused.value), *(record.getMessage() for record in caplog.records)])
    assert elsewhere.token not in seen


def test_the_channel_never_shows_its_url(gotify_server: Gotify, app_settings: Settings) -> None:
    channel = AppriseChannel(AppriseChannelDef(name="chat", url=gotify_server.url()), app_settings)
    assert gotify_server.token not in repr(channel)


# ------------------------------------------------------------------------------------------- the sync guard


def loopback_guard(**kwargs: Any) -> Guard:
    return Guard(parse_cidrs("127.0.0.1/32"), **kwargs)


def test_the_sync_guard_is_inert_outside_a_guarded_block() -> None:
    with serve(Ntfy, host="127.0.0.2") as elsewhere:
        with guarded(loopback_guard()):
            pass  # installs the wrappers
        answer = requests.post(f"{elsewhere.base}/", json={"topic": "t", "message": "m"}, timeout=5)
        assert answer.status_code == 200 and len(elsewhere.received) == 1


def test_the_sync_guard_checks_names_and_addresses_for_requests(ntfy_server: Ntfy) -> None:
    with serve(Ntfy, host="127.0.0.2") as elsewhere, guarded(loopback_guard()) as guarding:
        ok = requests.post(f"http://localhost:{ntfy_server.port}/", json={"topic": "t", "message": "m"}, timeout=5)
        with pytest.raises(requests.ConnectionError):
            requests.post(f"{elsewhere.base}/", json={"topic": "t", "message": "m"}, timeout=5)

    assert ok.status_code == 200 and len(ntfy_server.received) == 1  # localhost → 127.0.0.1, allowed
    assert elsewhere.received == [] and elsewhere.refused == []
    assert guarding.refused == ["address 127.0.0.2 is not allowed: loopback; allow it with OUTBOUND_ALLOW_CIDRS"]


def test_the_sync_guard_refuses_the_apps_own_storage_and_covers_smtplib(ntfy_server: Ntfy) -> None:
    guard = loopback_guard(own_endpoints=[("127.0.0.1", ntfy_server.port)])
    with guarded(guard) as guarding:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{ntfy_server.port}/", timeout=5)
        with pytest.raises(OutboundRefused, match=r"127\.0\.0\.2"):
            smtplib.SMTP("127.0.0.2", 25, timeout=5)
        with pytest.raises(OutboundRefused):
            socket.create_connection(("127.0.0.2", 80), timeout=5)
    assert "own storage account" in guarding.refused[0]
    assert ntfy_server.received == [] and ntfy_server.refused == []


# ------------------------------------------------------------------------------------------- validate_url

WIKI_EXAMPLES = [
    "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general",
    "workflows://prod-00.westus.logic.azure.com:443/8a1f6c2e9b3d4e5f/Sig0aBcDeFgHiJkLmNoPqRsTuVwXyZ12",
    "tgram://123456789:AABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh/12315544",
    "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js",
    "pagerduty://a2d3e4f5b6c7d8e9f0a1b2c3d4e5f6a7@b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8",
    "opsgenie://abcdef01-2345-6789-abcd-ef0123456789",
    "pover://uQiRzpo4DXghDmr9QzzfQu27cmVRsG@azGDORePK8gMaC0QOYAMyEEuzJnyUi",
    "matrix://monitor:Pa55word0000@matrix.example.org/#alerts",
    "ntfy://ntfy.sh/shop-alerts",
    "gotify://gotify.example.com/AbCdEf1234567",
    "mmost://chat.example.com/3ccdd113474722377935511fc85d3dd4",
    "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",  # a service's own URL
    # the examples of docs/CHANNELS.md
    "slack://T0AAAAAAA/B0BBBBBBB/abcdefghijklmnopqrstuvwx",
    "workflows://prod-12.westeurope.logic.azure.com:443/8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgh",
    "tgram://123456789:ABCdefGhIJKlmNoPQRsTUVwxyZ/-1001234567890",
    "ntfys://ntfy.sh/my-private-topic",
]


@pytest.mark.parametrize("url", WIKI_EXAMPLES, ids=lambda url: url.split(":")[0])
def test_validate_url_accepts_real_looking_service_urls(url: str) -> None:
    assert validate_url(url) is None


def test_validate_url_refuses_unknown_schemes_and_non_urls_without_echoing_them() -> None:
    assert validate_url("foo://x") == "unknown service 'foo://'; see https://github.com/caronc/apprise/wiki"
    problem = validate_url("not a url")
    assert problem is not None and "not a url" not in problem and "service://" in problem

    token = "Secret0token0abcdef"
    for url in (f"foo://{token}", f"tgram://{token}/", f"slack://{token}", f"notascheme {token}"):
        problem = validate_url(url)
        assert problem is not None and token not in problem


def test_validate_url_says_what_replaced_msteams() -> None:
    problem = validate_url("msteams://team/aaaa-bbbb@cccc-dddd/eeeeffff/gggg-hhhh/")
    assert problem is not None and "workflows://" in problem and "aaaa-bbbb" not in problem


def test_a_channel_definition_uses_it() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown service 'foo://'"):
        AppriseChannelDef(name="chat", url="foo://Secret0token0abcdef")
    assert AppriseChannelDef(name="chat", url="ntfy://ntfy.sh/alerts").url.get_secret_value()


def test_apprise_is_not_imported_with_the_channel_modules() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, shared.notify.apprise_channel, shared.notify.definitions, shared.outbound.sync_guard; "
            "print('apprise' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False"  # half a second of every cold start saved
