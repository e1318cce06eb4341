"""The local demo needs no internet and stays deleted (devhost/demo.py).

- In-process, against the session's Azurite: the demo monitors are created once per storage (a marker row), a
  deleted one is not created again, storage seeded by an older version loses its `[demo] example.com`, every
  target is 127.0.0.1, the demo target's pages and switch behave, and after seeding the status page is green.
- `python -m devhost --no-demo` creates nothing and starts no demo target.

`bash scripts/run` from a fresh clone, offline: tests/test_devhost_demo_offline.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from apphelp import functions, request
from conftest import free_port
from helpers import stop_process

from shared.storage import Store
from shared.web.cache import clear_cache

ROOT = Path(__file__).resolve().parent.parent
DEMO_COUNT = 5


def page_monitors(html: str) -> dict[str, str]:
    """name → data-status of the monitors on the status page."""
    out = {}
    for section in re.findall(r'<section class="monitor"[^>]*data-status="([^"]+)"[^>]*>(.*?)</section>', html, re.S):
        status, body = section
        name = re.search(r'<span class="name grow">(.*?)</span>', body, re.S)
        if name:
            out[name.group(1).replace("&#39;", "'").strip()] = status
    return out


def banner(html: str) -> str:
    match = re.search(r'<div class="banner [a-z]+" role="status">.*?</span>\s*(.*?)\s*</div>', html, re.S)
    return match.group(1).strip() if match else ""


# ------------------------------------------------------------------------------------------ in-process


async def test_demo_is_seeded_once_and_a_deleted_demo_monitor_stays_deleted(settings):
    from devhost.demo import MARKER, demo_specs, seed
    from shared import manage

    async with Store.open(settings) as store:
        created = await seed(store, 7071, 7072)
        assert len(created) == DEMO_COUNT
        monitors = await manage.list_monitors(store)
        assert sorted(m["name"] for m in monitors) == sorted(s["name"] for s in demo_specs(7071))
        assert all(m["name"].startswith("[demo] ") and m["public"] for m in monitors)
        for m in monitors:  # only this machine: the app's own health, the local target, the local disk
            if m["kind"] == "website":
                assert urlsplit(m["url"]).hostname == "127.0.0.1", m["url"]
            else:
                assert m["source"]["type"] == "local"
        assert (await store.get_kind_meta(MARKER))["seeded_at"]

        assert await seed(store, 7071, 7072) == []  # a second run adds nothing
        doomed = next(m for m in monitors if m["name"] == "[demo] shop search (slow)")
        await manage.delete_monitor(store, doomed["id"])
        assert await seed(store, 7071, 7072) == []  # deleted stays deleted
        names = {m["name"] for m in await manage.list_monitors(store)}
        assert len(names) == DEMO_COUNT - 1 and doomed["name"] not in names


async def test_storage_seeded_by_an_older_version_loses_its_example_com_monitor(settings):
    from devhost.demo import seed
    from shared import manage

    async with Store.open(settings) as store:
        old = [{"kind": "website", "name": "[demo] this app's health", "url": "http://127.0.0.1:7071/api/v1/health",
                "public": True},
               {"kind": "website", "name": "[demo] example.com", "url": "https://example.com/", "public": True},
               {"kind": "resource", "name": "[demo] this machine's disk and memory", "source": {"type": "local"},
                "public": True},
               {"kind": "website", "name": "My own site", "url": "https://mine.example.com/"}]
        for spec in old:
            await manage.create_monitor(store, spec)
        created = await seed(store, 7071, 7072)
        names = sorted(m["name"] for m in await manage.list_monitors(store))
    assert len(created) == 3  # the three that are new; what the older version made is kept, but example.com
    assert "[demo] example.com" not in names and "My own site" in names
    assert names == sorted(["My own site", "[demo] this app's health", "[demo] this machine's disk and memory",
                            "[demo] shop front page", "[demo] shop search (slow)", "[demo] switch"])


async def test_the_demo_target_serves_a_page_a_slow_page_and_a_switch():
    from devhost.demo import DemoTarget

    target = DemoTarget(free_port())
    assert await target.start()
    base = f"http://127.0.0.1:{target.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/") as resp:
                assert resp.status == 200 and "Add to cart" in await resp.text()
            started = time.monotonic()
            async with http.get(f"{base}/slow") as resp:
                assert resp.status == 200 and 0.15 <= time.monotonic() - started < 2.0
            async with http.get(f"{base}/switch") as resp:
                assert resp.status == 200
            async with http.post(f"{base}/switch") as resp:
                assert (await resp.json()) == {"switch": "off"}
            async with http.get(f"{base}/switch") as resp:
                assert resp.status == 503
            async with http.post(f"{base}/switch") as resp, http.get(f"{base}/switch") as again:
                assert (await resp.json()) == {"switch": "on"} and again.status == 200
        second = DemoTarget(target.port)  # the port is taken: a warning, not a crash
        assert await second.start() is False
    finally:
        await target.stop()


async def test_after_seeding_the_status_page_is_green_at_once(storage, env):
    """The new demo monitors are checked right away (not at the next tick): the page is green within seconds."""
    import function_app
    from devhost import LocalHost, read_host_json
    from devhost.demo import DemoTarget, seed_and_check
    from shared import manage
    from shared.manage.running import run_monitor
    from shared.settings import get_settings

    port, demo_port = free_port(), free_port()
    host = LocalHost(function_app.app, read_host_json(), port)
    target = DemoTarget(demo_port)
    await host.start()
    await target.start()
    try:
        started = time.monotonic()
        created = await seed_and_check(port, demo_port)
        took = time.monotonic() - started
        html = await status_page()
        # the switch: POST it and the [demo] switch monitor goes DOWN (two failed checks), first on the page
        async with aiohttp.ClientSession() as http, http.post(f"http://127.0.0.1:{demo_port}/switch") as resp:
            assert (await resp.json()) == {"switch": "off"}
        async with Store.open(get_settings()) as store:
            switch = next(m for m in await manage.list_monitors(store) if m["name"] == "[demo] switch")
            for _ in range(2):
                await run_monitor(store, get_settings(), switch["id"])
        broken = await status_page()
    finally:
        await target.stop()
        await host.stop()
    print(f"seeded and checked {len(created)} demo monitors in {took:.1f} s")
    shown = page_monitors(html)
    assert len(created) == DEMO_COUNT and len(shown) == DEMO_COUNT
    assert set(shown.values()) <= {"UP", "OK"}, shown
    assert banner(html) == "All systems operational"
    assert "<h2>Demo shop</h2>" in html and "<h2>This app</h2>" in html  # the demo shows groups too
    assert banner(broken) == "Some systems are down" and "[demo] switch is down" in broken
    assert next(iter(page_monitors(broken))) == "[demo] switch"  # its group first, and it first in its group
    assert page_monitors(broken)["[demo] switch"] == "DOWN"


async def status_page() -> str:
    clear_cache()
    html = (await functions()["status_page"](request("GET", "status-page"))).get_body().decode()
    clear_cache()
    return html


async def test_no_demo_creates_nothing_and_starts_no_target(storage):
    from devhost.demo import MARKER
    from shared.settings import get_settings

    port, demo_port = free_port(), free_port()
    env = {**os.environ, "SMTP_HOST": "", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(port), "--demo-port", str(demo_port),
                             "--no-demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/api/v1/health") as resp:
                        if resp.status == 200:
                            break
                assert time.monotonic() < deadline, "python -m devhost did not answer /health"
                await asyncio.sleep(0.3)
            async with http.get(f"http://127.0.0.1:{port}/api/v1/monitors") as resp:
                assert resp.status == 200 and (await resp.json())["items"] == []
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", demo_port)) != 0  # no demo target
        async with Store.open(get_settings()) as store:
            assert await store.get_kind_meta(MARKER) == {}  # and no marker: a later run with the demo seeds it
    finally:
        stop_process(proc)
