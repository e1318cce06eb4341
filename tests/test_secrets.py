"""Secrets never come back out: not in results, state, events, snapshots, e-mails, API answers or log lines.

One mechanism (shared/secrets.py): every SecretStr setting and every masked value of a monitor is registered, and
the text that enters what we keep or show is scrubbed. Real Azurite, the recorded InvenTree, the SMTP test server
and sites on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from urllib.parse import quote

import pytest
from inventree_fake import TOKEN, inventree  # noqa: F401 - fixture
from targets import targets  # noqa: F401 - fixtures
from test_email import Host

from shared import manage, secrets
from shared.settings import get_settings
from shared.snapshots import take_snapshot
from shared.storage import EVENTS_QUEUE, Store
from tests.smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures

OPS, ALICE = "ops@example.org", "alice@example.org"


# ------------------------------------------------------------------------------------------------ the scrubber


def test_registered_secrets_are_blanked_in_every_encoding():
    value = f"s3cr3t-{uuid.uuid4().hex[:8]}/+="
    secrets.register(value)
    said = (f"raw {value}; url {quote(value, safe='')}; basic {base64.b64encode(value.encode()).decode()}; "
            f"bearer Bearer {value}")
    clean = secrets.scrub(said)
    assert value not in clean and quote(value, safe="") not in clean
    assert base64.b64encode(value.encode()).decode() not in clean
    assert clean.count("***") == 4


def test_a_header_value_with_a_scheme_blanks_its_token_too():
    token = uuid.uuid4().hex
    secrets.register(f"Bearer {token}")
    assert secrets.scrub(f'proxy said: invalid token "{token}"') == 'proxy said: invalid token "***"'


def test_url_credentials_and_secret_query_values_are_never_shown():
    said = ("GET https://deploy:hunter2@ci.example.org/hook?token=abc123&page=2 failed; "
            "see http://127.0.0.1:7071/api/x?code=K3Y==&name=web")
    assert secrets.scrub(said) == ("GET https://***@ci.example.org/hook?token=***&page=2 failed; "
                                   "see http://127.0.0.1:7071/api/x?code=***&name=web")
    assert secrets.mask_url("https://u:p@h.example/p?api_key=1&q=ok#top") == "https://***@h.example/p?api_key=***&q=ok#top"
    assert secrets.mask_url("https://h.example/plain?q=1") == "https://h.example/plain?q=1"


def test_short_values_and_ordinary_text_are_left_alone():
    secrets.register("abc")  # too short to be a secret: registering it must not blank every "abc"
    assert secrets.scrub("abc def, HTTP 500 at https://h.example/a?b=c") == "abc def, HTTP 500 at https://h.example/a?b=c"


def test_every_secret_setting_is_registered_without_naming_it(env):
    key = uuid.uuid4().hex
    env(WHMCS_URL="http://127.0.0.1:9/includes/api.php", WHMCS_IDENTIFIER="id", WHMCS_SECRET=f"whmcs-{key}",
        INVENTREE_URL="http://127.0.0.1:9", INVENTREE_TOKEN=f"inv-{key}")
    get_settings()
    assert secrets.scrub(f"echo whmcs-{key} and inv-{key}") == "echo *** and ***"


def test_log_records_from_any_logger_are_scrubbed(env, caplog):
    key = uuid.uuid4().hex
    env(INVENTREE_URL="http://127.0.0.1:9", INVENTREE_TOKEN=key)
    get_settings()
    caplog.set_level(logging.INFO)
    logging.getLogger("aiohttp.client").warning("request with %s to %s", key, "https://u:pw@h.example/?sig=x1")
    try:
        raise RuntimeError(f"server echoed {key}")
    except RuntimeError:
        logging.getLogger("somebody.else").exception("it failed")
    assert key not in caplog.text and "pw@" not in caplog.text and "sig=x1" not in caplog.text
    assert "request with *** to https://***@h.example/?sig=***" in caplog.text
    assert "RuntimeError: server echoed ***" in caplog.text  # the traceback is kept, without the secret


# ------------------------------------------------------------------------------------------------ end to end


async def test_a_token_echoed_by_inventree_reaches_nobody(storage, env, smtp, inventree, caplog):
    env(**{**smtp.settings(), **inventree.settings(), "ADMIN_EMAIL_RECIPIENTS": OPS})
    settings = get_settings()
    caplog.set_level(logging.DEBUG)
    async with Store.open(settings) as store:
        view = await manage.create_monitor(store, {"kind": "parts", "name": "Sensor board", "recipients": [ALICE],
                                                   "parts": [{"ipn": "RES-10K-0603", "quantity": 4}], "kits": 2})
        mid = view["id"]
        # A proxy in front of InvenTree that answers with the request's Authorization header in its error body.
        inventree.fail_next(10, status=400, body=json.dumps({"detail": f"bad request; Authorization: Token {TOKEN}"}))
        out = await manage.run_monitor(store, settings, mid)
        assert out["outcome"] == "error" and "Token ***" in out["error"]  # the echo happened, and was blanked

        shown = [json.dumps(out, default=str),
                 json.dumps(await manage.results(store, mid), default=str),
                 json.dumps(await manage.events(store, monitor_id=mid), default=str),
                 json.dumps(await manage.get_monitor(store, mid), default=str),
                 json.dumps((await store.get_state("parts", mid)).data),
                 json.dumps(await take_snapshot(store, settings, persist=True), default=str)]
        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
    assert smtp.to(OPS), "the operator was told about the checker error"
    assert all(TOKEN not in text for text in shown)
    assert all(TOKEN not in m.raw.decode() for m in smtp.messages)
    assert TOKEN not in caplog.text


async def test_a_websites_credentials_are_used_but_never_shown(storage, env, settings, targets, caplog):
    site = targets.http(status=500)
    password, token, bearer = f"pw-{uuid.uuid4().hex[:10]}", uuid.uuid4().hex, uuid.uuid4().hex
    url = f"http://deploy:{password}@127.0.0.1:{site.port}/health?token={token}"
    caplog.set_level(logging.DEBUG)
    spec = {"kind": "website", "name": "Private", "url": url, "attempts": 1, "failure_threshold": 1,
            "recipients": [ALICE]}
    async with Store.open(settings) as store:
        with pytest.raises(manage.Invalid) as both:  # aiohttp cannot send both
            await manage.create_monitor(store, {**spec, "headers": {"Authorization": f"Bearer {bearer}"}})
        assert "either in the URL" in json.dumps(both.value.details)
        view = await manage.create_monitor(store, {**spec, "headers": {"X-Api-Key": f"Key {bearer}"}})
        assert view["url"] == f"http://***@127.0.0.1:{site.port}/health?token=***"
        assert view["headers"] == {"X-Api-Key": "***"}
        view_only = ("target", "created_at", "updated_at", "state")
        saved = await manage.update_monitor(store, view["id"], {k: v for k, v in view.items() if k not in view_only})
        assert saved["url"] == view["url"]  # saving back what GET showed keeps the credentials
        assert url in (await store.get_monitor(view["id"]))["spec"]
        out = await manage.run_monitor(store, settings, view["id"])
        assert out["status"] == "DOWN"
        shown = [json.dumps(view), json.dumps(out, default=str),
                 json.dumps(await manage.list_monitors(store), default=str),
                 json.dumps(await manage.events(store, monitor_id=view["id"]), default=str),
                 json.dumps(await take_snapshot(store, settings, persist=False), default=str)]
    assert site.hits == 1  # the check itself used them
    for secret in (password, token, bearer):
        assert all(secret not in text for text in shown)
        assert secret not in caplog.text


@pytest.fixture(autouse=True)
def _fresh_settings():
    yield
    get_settings.cache_clear()

