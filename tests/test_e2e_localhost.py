"""End to end through the local host: HTTP API → engine → Azurite → queue → e-mail function → real SMTP.

Everything is observed through public interfaces: the HTTP API, the SMTP server's mailbox.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web
from conftest import free_port
from smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures

KEY = "local-test-key"
MASTER = "local-test-master-key"


@pytest.fixture
async def website():
    state = {"status": 200}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=state["status"], text="shop is open")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/", state
    await runner.cleanup()


@pytest.fixture
async def host(storage, env, smtp):
    from devhost import LocalHost, read_host_json

    env(**{**smtp.settings(), "GLOBAL_EMAIL_NOTIFICATIONS_ENABLED": "true", "ADMIN_EMAIL_RECIPIENTS": "ops@example.com"})
    import function_app

    port = free_port()
    local = LocalHost(function_app.app, read_host_json(), port, function_key=KEY, master_key=MASTER)
    await local.start()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers={"x-functions-key": KEY}) as http:
        yield http
    await local.stop()


async def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError("timed out waiting")


async def test_down_and_recovery_through_the_local_host(host, website, smtp):
    url, site = website
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{host._base_url}/api/v1/monitors") as resp:
            assert resp.status == 401  # the function key is required…
        async with anonymous.get(f"{host._base_url}/api/v1/health") as resp:
            assert resp.status == 200  # …except for /health

    async with host.post("/api/v1/monitors", json={
            "kind": "website", "name": "Shop", "url": url, "attempts": 1, "failure_threshold": 2,
            "interval_seconds": 60, "recipients": ["team@example.com"]}) as resp:
        assert resp.status == 201
        mid = (await resp.json())["id"]

    async with host.post("/admin/functions/website_timer") as resp:  # the admin API takes no function key…
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
    async with host.post("/admin/functions/website_timer", headers={"x-functions-key": MASTER}) as resp:
        assert resp.status == 202  # …but the master key: the timer, fired by hand
    async with host.get(f"/api/v1/monitors/{mid}") as resp:
        assert (await resp.json())["state"]["status"] == "UP"
    # from here on only the test checks it: the host's minute timer, crossing a minute boundary between two runs,
    # would otherwise take the DOWN (and its event) from the run the test looks at
    async with host.post("/api/v1/kinds/website/pause") as resp:
        assert resp.status == 200

    site["status"] = 500
    for _ in range(2):
        async with host.post(f"/api/v1/monitors/{mid}/run") as resp:
            last = await resp.json()
    assert last["status"] == "DOWN" and last["events"] == ["MONITOR_DOWN"]

    down_mail = await wait_for(lambda: smtp.to("team@example.com"))
    assert "Shop" in down_mail[0].subject and "HTTP 500" in down_mail[0].part("plain")
    async with host.get(f"/api/v1/monitors/{mid}/downtimes") as resp:
        windows = (await resp.json())["items"]
    assert len(windows) == 1 and windows[0]["open"] is True
    for _ in range(2):  # staying down: no new window, no new mail (re-notify is off)
        async with host.post(f"/api/v1/monitors/{mid}/run") as resp:
            assert (await resp.json())["events"] == []

    site["status"] = 200
    async with host.post(f"/api/v1/monitors/{mid}/run") as resp:
        assert (await resp.json())["events"] == ["MONITOR_UP"]
    mails = await wait_for(lambda: len(smtp.to("team@example.com")) >= 2 and smtp.to("team@example.com"))
    assert "up" in mails[1].subject.lower()

    async with host.get(f"/api/v1/monitors/{mid}/downtimes") as resp:
        windows = (await resp.json())["items"]
    assert len(windows) == 1 and windows[0]["open"] is False and windows[0]["ended_at"]
    async with host.get(f"/api/v1/monitors/{mid}/results") as resp:
        items = (await resp.json())["items"]
    # newest first; the timer is paused, so only the one fired by hand is a timer result
    assert [r["outcome"] for r in items if r["trigger"] == "manual"] == ["up", "down", "down", "down", "down"]
    assert [r for r in items if r["trigger"] == "timer"][-1]["outcome"] == "up"  # the timer fired by hand
    async with host.get("/api/v1/events", params={"monitor_id": mid}) as resp:
        events = (await resp.json())["items"]
    assert [e["type"] for e in events] == ["MONITOR_UP", "MONITOR_DOWN"]

    await asyncio.sleep(1.0)  # nothing else arrives: one DOWN mail, one recovery mail
    assert len(smtp.to("team@example.com")) == 2
    assert not smtp.to("ops@example.com")
