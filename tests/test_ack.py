"""Acknowledgements end to end: real website checks against a loopback site, the real HTTP functions, the real queue
function (tests/mailhost.py Host) over the real Azurite, a real SMTP server. The one-click link is taken from the
e-mail a recipient got, opened (GET: nothing changes) and its button pressed (POST)."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

import azure.functions as func
import pytest
from apphelp import call, functions
from mailhost import Host
from targets import site, targets  # noqa: F401 - fixtures
from test_email import ALICE, publish, setup
from test_openapi import Api

from shared import secrets
from shared.events import Event, EventType
from shared.notify import ack
from shared.storage import EVENTS_QUEUE, Store
from tests.smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures

BASE = "https://monitor.example.org"
LINK = re.compile(r"Acknowledge \(stops reminders and escalation\): (\S+)")


async def make_monitor(site_url: str, name: str = "Shop", **extra) -> str:
    status, body = await call("monitors", "POST", "v1/monitors", {
        "kind": "website", "name": name, "url": site_url, "attempts": 1, "failure_threshold": 1, **extra})
    assert status == 201, body
    return body["id"]


async def run(mid: str) -> dict:
    status, body = await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route={"monitor_id": mid})
    assert status == 200, body
    return body


async def api_ack(method: str, mid: str, body=None) -> tuple[int, dict | None]:
    return await call("monitor_ack", method, f"v1/monitors/{mid}/ack", body, route={"monitor_id": mid})


async def open_link(method: str, token: str | None) -> tuple[int, str]:
    """The anonymous /api/ack: GET with ?t=, POST with the form the page's button sends."""
    params = {"t": token} if token is not None and method == "GET" else {}
    body = f"t={quote(token or '')}".encode() if method == "POST" else b""
    req = func.HttpRequest(method, "http://localhost:7071/api/ack" + (f"?t={quote(token or '')}" if params else ""),
                           headers={"content-type": "application/x-www-form-urlencoded"}, params=params,
                           route_params={}, body=body)
    response = await functions()["ack_link"](req)
    assert response.mimetype == "text/html" and response.headers.get("Cache-Control") == "no-store"
    assert response.headers.get("Referrer-Policy") == "no-referrer"
    return response.status_code, response.get_body().decode()


def token_of(url: str) -> str:
    assert url.startswith(f"{BASE}/api/ack?t=")
    return parse_qs(urlsplit(url).query)["t"][0]


def flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


# ------------------------------------------------------------------------------------------------ the API


async def test_acknowledge_get_and_take_back_through_the_api(settings, site):
    mid = await make_monitor(site.url)
    assert (await api_ack("POST", mid))[0] == 409  # never checked: nothing to acknowledge
    await run(mid)  # UP
    status, body = await api_ack("POST", mid, {"note": "x"})
    assert status == 409 and body["error"]["code"] == "no_problem"
    site.set(status=500)
    down = await run(mid)
    assert down["status"] == "DOWN"
    assert (await api_ack("GET", mid))[0] == 404  # not acknowledged yet

    status, body = await api_ack("POST", mid, {"note": "restarting the shop", "by": "dana"})
    assert status == 200, body
    assert body["monitor_id"] == mid and body["status"] == "DOWN" and body["by"] == "dana"
    assert body["note"] == "restarting the shop"
    async with Store.open(settings) as store:
        state = await store.get_state("website", mid)
    assert state is not None and datetime.fromisoformat(body["since"]) == datetime.fromisoformat(state.data["since"])
    assert (await api_ack("GET", mid)) == (200, body)
    status, again = await api_ack("POST", mid)  # no body: by "api"
    assert status == 200 and again["by"] == "api" and again["note"] is None

    assert (await api_ack("DELETE", mid)) == (204, None)
    assert (await api_ack("GET", mid))[0] == 404
    assert (await api_ack("DELETE", mid))[0] == 204  # taking back twice is fine

    await api_ack("POST", mid)
    site.set(status=200)
    await run(mid)  # recovered: the acknowledgement of that problem is gone with it
    assert (await api_ack("GET", mid))[0] == 404
    site.set(status=500)
    await run(mid)  # a new problem needs a new acknowledgement
    assert (await api_ack("GET", mid))[0] == 404


async def test_unknown_monitor_and_bad_bodies(settings):
    for method in ("GET", "POST", "DELETE"):
        assert (await api_ack(method, "0" * 32))[0] == 404
        assert (await api_ack(method, "nope"))[0] == 404
    mid = "0" * 32
    for body, code in (({"note": "x" * 501}, 422), ({"who": "me"}, 422), (b"{", 400), ([1], 422)):
        assert (await api_ack("POST", mid, body))[0] == code  # the body is checked before the monitor


async def test_ack_routes_answer_as_documented(settings, site, monkeypatch):
    api = Api()
    one = "/api/v1/monitors/{monitor_id}/ack"
    mid = await make_monitor(site.url)
    await api("POST", one, 409, monitor_id=mid)
    await api("GET", one, 404, monitor_id=mid)
    site.set(status=500)
    await run(mid)
    await api("POST", one, 200, {"note": "on it"}, monitor_id=mid)
    await api("POST", one, 422, {"by": ""}, monitor_id=mid)
    await api("POST", one, 400, b"{", monitor_id=mid)
    await api("GET", one, 200, monitor_id=mid)
    await api("DELETE", one, 204, monitor_id=mid)
    await api("DELETE", one, 404, monitor_id="0" * 32)
    page = await api("GET", "/api/ack", 403, t="garbage")
    assert page.startswith("<!DOCTYPE html>")
    await api("POST", "/api/ack", 403)
    assert api.called == {(p, m) for p, m in api.operations if p in (one, "/api/ack")}


async def test_cli_ack_and_unack(settings, site, capsys):
    from shared.cli import main

    mid = await make_monitor(site.url)
    site.set(status=500)
    await run(mid)
    assert await asyncio.to_thread(main, ["ack", mid, "--note", "looking"]) == 0
    assert f"acknowledged {mid}: DOWN since" in capsys.readouterr().out
    status, body = await api_ack("GET", mid)
    assert status == 200 and body["by"] == "cli" and body["note"] == "looking"
    assert await asyncio.to_thread(main, ["--json", "unack", mid]) == 0
    assert '"acknowledged": false' in capsys.readouterr().out
    assert (await api_ack("GET", mid))[0] == 404
    assert await asyncio.to_thread(main, ["ack", "0" * 32]) == 1


# ------------------------------------------------------------------------------------------ reminders


def reminder_of(mid: str, since: str) -> Event:
    """What monitors/policy.py emits while a monitor stays DOWN past renotify_minutes."""
    return Event(type=EventType.MONITOR_DOWN, kind="website", monitor_id=mid, monitor_name="Shop",
                 severity="critical", message="Shop is still down: HTTP 500", replaces="reminder",
                 details={"error": "HTTP 500", "since": since, "reminder": True})


async def test_an_acknowledged_problem_sends_no_reminders(storage, env, smtp, site):
    settings, store = await setup(env, smtp)
    async with store:
        mid = await make_monitor(site.url, recipients=[ALICE], renotify_minutes=5)
        site.set(status=500)
        await run(mid)
        host = Host(storage)
        await host.drain(EVENTS_QUEUE, "send_event_email")
        assert [m.rcpt_tos for m in smtp.messages] == [[ALICE]]
        state = await store.get_state("website", mid)
        assert state is not None

        await api_ack("POST", mid, {"note": "on it"})
        first = reminder_of(mid, state.data["down_since"])
        assert await ack.suppressed(store, first)
        await publish(store, first)
        await host.drain(EVENTS_QUEUE, "send_event_email")
        assert len(smtp.messages) == 1  # not sent
        rows = {r["event_id"]: r for r in await store.list_events(monitor_id=mid)}
        assert rows[first.id]["delivery"] == "acknowledged"

        await api_ack("DELETE", mid)
        second = reminder_of(mid, state.data["down_since"])
        assert not await ack.suppressed(store, second)
        await publish(store, second)
        await host.drain(EVENTS_QUEUE, "send_event_email")
        assert len(smtp.messages) == 2 and "still DOWN" in smtp.messages[-1].part("plain")


# ------------------------------------------------------------------------------------------ the link


async def test_the_link_in_the_message_shows_the_problem_and_its_button_acknowledges(storage, env, smtp, site,
                                                                                    caplog):
    caplog.set_level(logging.DEBUG)
    settings, store = await setup(env, smtp, PUBLIC_BASE_URL=BASE + "/")
    async with store:
        # it reminds every hour: acknowledging it changes something, so its message carries the link
        mid = await make_monitor(site.url, name="Shop <b>&</b>", recipients=[ALICE], renotify_minutes=60)
        site.set(status=500)
        await run(mid)
        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
        (mail,) = smtp.messages
        found = LINK.search(mail.part("plain"))
        assert found, mail.part("plain")
        token = token_of(found.group(1))
        assert f'href="{found.group(1)}"' in mail.part("html").replace("&amp;", "&")

        for _ in range(2):  # a mail scanner, a link preview, the person: a GET changes nothing
            status, page = await open_link("GET", token)
            assert status == 200
            assert "Shop &lt;b&gt;&amp;&lt;/b&gt;" in page and "<b>&</b>" not in page  # escaped
            assert "Down since" in page and 'name="t"' in page and ">Acknowledge</button>" in page
        assert (await api_ack("GET", mid))[0] == 404

        status, page = await open_link("POST", token)
        assert status == 200 and "Acknowledged by link" in page
        status, body = await api_ack("GET", mid)
        assert status == 200 and body["by"] == ack.BY_LINK
        status, page = await open_link("GET", token)  # opened again: it says so, no button
        assert status == 200 and "Already acknowledged" in page and "<button" not in page
        assert (await open_link("POST", token))[0] == 200  # pressed twice: still acknowledged
        ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail."))  # not the server's
        assert ours and token not in ours and token.split(".")[1] not in ours

        site.set(status=200)
        await run(mid)
        status, page = await open_link("GET", token)
        assert status == 409 and "Already recovered" in page
        site.set(status=500)
        await run(mid)  # down again: the old message's link is about the problem that is over
        assert (await open_link("POST", token))[0] == 409
        assert (await api_ack("GET", mid))[0] == 404


async def test_expired_forged_and_garbled_links(settings, site):
    mid = await make_monitor(site.url)
    site.set(status=500)
    await run(mid)
    async with Store.open(settings) as store:
        key = await ack.signing_key(store, settings)
        state = await store.get_state("website", mid)
    assert state is not None
    since = datetime.fromisoformat(state.data["since"])
    now = datetime.now(UTC)
    good = ack.make_token(key, mid, since, now + timedelta(hours=1))
    expired = ack.make_token(key, mid, since, now - timedelta(seconds=1))
    status, page = await open_link("GET", expired)
    assert status == 410 and "expired" in page
    assert (await open_link("POST", expired))[0] == 410

    payload, signature = good.split(".")
    forged = [flip(good, 3), f"{payload}.{flip(signature, 0)}", f"{payload}.{flip(signature, len(signature) - 1)}",
              ack.make_token(b"another key" * 3, mid, since, now + timedelta(hours=1)),
              ack.make_token(key, "f" * 32, since, now + timedelta(hours=1)).split(".")[0] + "." + signature]
    garbled = ["", "nodot", f"{payload}.", f".{signature}", f"{payload}.{signature}.x", f"{payload}.{signature[:-2]}",
               f"{payload}.{signature}AA", f"{payload}!.{signature}", f"{payload}.{signature[:-1]}=", "é.ü"]
    for token in forged + garbled:
        for method in ("GET", "POST"):
            status, page = await open_link(method, token)
            assert status == 403 and "not valid" in page, token
    assert (await open_link("GET", None))[0] == 403
    assert (await api_ack("GET", mid))[0] == 404  # nothing was acknowledged
    assert (await open_link("POST", good))[0] == 200


async def test_the_signing_key_is_made_once_and_kept_secret(settings, env):
    async def key_of() -> bytes:
        async with Store.open(settings) as store:
            return await ack.signing_key(store, settings)

    first, second = await asyncio.gather(key_of(), key_of())  # two instances racing on an empty table
    assert first == second and len(first) == 32 and await key_of() == first
    async with Store.open(settings) as store:
        row = await store.get_row(*ack.KEY_ROW)
    assert row is not None and secrets.scrub(f"key {row['key']}") == f"key {secrets.MASK}"

    env(ACK_SIGNING_KEY="a-configured-signing-key-0123456789")
    from shared.settings import get_settings

    configured = get_settings()
    async with Store.open(configured) as store:
        assert await ack.signing_key(store, configured) == b"a-configured-signing-key-0123456789"


async def test_links_only_for_problem_events_of_monitors_and_with_a_public_base_url(settings, env):
    from shared.settings import get_settings

    down = Event(type=EventType.MONITOR_DOWN, kind="website", monitor_id="a" * 32, monitor_name="Shop")
    async with Store.open(settings) as store:
        assert await ack.ack_url(store, settings, down) is None  # no PUBLIC_BASE_URL
        env(PUBLIC_BASE_URL=BASE, ACK_LINK_HOURS="2")
        with_base = get_settings()
        url = await ack.ack_url(store, with_base, down)
        assert url is not None
        claim = ack.read_token(await ack.signing_key(store, with_base), token_of(url), datetime.now(UTC))
        assert claim.monitor_id == down.monitor_id and claim.occurred_at == down.occurred_at
        assert timedelta(hours=1.9) < claim.expires - datetime.now(UTC) <= timedelta(hours=2)
        for type_, kind in ((EventType.MONITOR_UP, "website"), (EventType.ALERT_RULE_FIRING, "alert_rule"),
                            (EventType.MONITOR_ERROR, "website"), (EventType.STOCK_DECREASED, "stock")):
            other = Event(type=type_, kind=kind, monitor_id="a" * 32, monitor_name="x")
            assert await ack.ack_url(store, with_base, other) is None
        for type_, kind in ((EventType.RESOURCE_ALERT, "resource"), (EventType.THRESHOLD_BREACH_LOW, "stock")):
            assert await ack.ack_url(store, with_base, Event(type=type_, kind=kind, monitor_id="a" * 32,
                                                             monitor_name="x"))


@pytest.mark.parametrize(("kind", "status", "problem"), [
    ("website", "DOWN", True), ("website", "DEGRADED", False), ("website", "UP", False), ("website", "ERROR", False),
    ("website", "PENDING", False), ("resource", "ALERT", True), ("resource", "WARNING", True),
    ("stock", "LOW", True), ("stock", "HIGH", True), ("stock", "OK", False), ("parts", "SHORT", True),
    ("alert_rule", "FIRING", False)])
def test_which_statuses_are_problems(kind, status, problem):
    assert ack.is_problem(kind, status) is problem


async def test_no_link_where_acknowledging_would_change_nothing(storage, env, smtp, site):
    """A monitor that neither reminds nor escalates: there is nothing to stop, so its DOWN carries no link."""
    settings, store = await setup(env, smtp, PUBLIC_BASE_URL=BASE + "/")
    async with store:
        mid = await make_monitor(site.url, recipients=[ALICE])
        site.set(status=500)
        await run(mid)
        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
        (mail,) = smtp.messages
        assert mail.subject.startswith("[DOWN] Shop")
        assert not LINK.search(mail.part("plain")) and "/api/ack" not in mail.raw.decode()
