"""The local demo: a few public monitors that need nothing but this machine, and the small target they check.

- The target (`DemoTarget`, aiohttp on 127.0.0.1:7072 by default) serves a shop page (`/`), a slow search
  (`/slow`, 150–700 ms, under its monitor's 2 s limit) and a switch (`/switch`: 200 until `POST /switch` turns it
  off, 503 until the next POST turns it on again — to see a DOWN, its e-mail in the SMTP sink's log, and the
  recovery).
- The monitors (`demo_specs`): the app's own /api/v1/health, the three pages above, and this machine's disk and
  memory (lenient thresholds: it is a demo). Every target is 127.0.0.1: nothing leaves the machine.
- They are created once per storage account: the first seeding leaves a marker row in the meta table
  (`MARKER`), so a demo monitor that is deleted stays deleted and a second run adds nothing. Storage seeded by
  an older version (no marker) loses its `[demo] example.com` monitor, the one that needed the internet.
- Right after they are created each is checked once, so the status page is green within seconds instead of at
  the next timer tick.

`python -m devhost` runs the target and seeds (unless `--no-demo`); `python -m devhost.demo` does only that, for
`scripts/run` when Core Tools' `func start` runs the app.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

log = logging.getLogger("devhost.demo")

DEMO_PORT = 7072
MARKER = "_demo"  # meta row: `seeded_at`, when this storage got its demo monitors
PREFIX = "[demo] "
LEGACY = {"[demo] example.com": "https://example.com/"}  # seeded by older versions; needs the internet

SHOP_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Demo shop</title></head>
<body><h1>Demo shop</h1><p>Widget Pro — 19.90 <button>Add to cart</button></p>
<p>This page is served by the local demo target (devhost/demo.py) for the demo monitors. Try
<code>curl -X POST http://127.0.0.1:{port}/switch</code>: the <em>[demo] switch</em> monitor goes DOWN (and an
e-mail shows up in the local SMTP sink's log); POST again and it comes back.</p></body></html>
"""


class DemoTarget:
    """The demo monitors' target on loopback: a page, a slow page and a switch."""

    def __init__(self, port: int = DEMO_PORT, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.on = True
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.shop)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/switch", self.switch)
        app.router.add_post("/switch", self.flip)
        return app

    async def shop(self, _: web.Request) -> web.Response:
        await asyncio.sleep(random.uniform(0.01, 0.06))
        return web.Response(text=SHOP_PAGE.format(port=self.port), content_type="text/html")

    async def slow(self, _: web.Request) -> web.Response:
        await asyncio.sleep(random.uniform(0.15, 0.7))
        return web.json_response({"results": [{"name": "Widget Pro", "price": 19.9}], "took": "slow on purpose"})

    async def switch(self, _: web.Request) -> web.Response:
        if self.on:
            return web.json_response({"switch": "on"})
        return web.json_response({"switch": "off", "hint": "POST /switch to turn it on"}, status=503)

    async def flip(self, _: web.Request) -> web.Response:
        self.on = not self.on
        log.info("demo switch turned %s", "on" if self.on else "off")
        return web.json_response({"switch": "on" if self.on else "off"})

    async def start(self) -> bool:
        """Listen; False (with a warning) when the port is taken: the app runs on, those demo monitors fail."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as error:
            await self.stop()
            log.warning("demo target: cannot listen on %s:%s (%s); the demo monitors that check it will fail "
                        "(another port: --demo-port)", self.host, self.port, error.strerror or error)
            return False
        log.info("demo target on http://%s:%s/ (POST /switch to break the [demo] switch monitor)", self.host,
                 self.port)
        return True

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def demo_specs(app_port: int, demo_port: int = DEMO_PORT) -> list[dict[str, Any]]:
    """The demo monitors: public (so the local status page shows them), every minute, all on 127.0.0.1."""
    site = f"http://127.0.0.1:{demo_port}"
    web_check = {"kind": "website", "interval_seconds": 60, "attempts": 1, "timeout_seconds": 5, "public": True}
    lenient = {"warn": 95, "alert": 98}
    return [
        {**web_check, "name": "[demo] this app's health", "url": f"http://127.0.0.1:{app_port}/api/v1/health",
         "keyword": '"storage": "ok"', "group": "This app"},
        {"kind": "resource", "name": "[demo] this machine's disk and memory", "interval_seconds": 60,
         "public": True, "group": "This app", "source": {"type": "local", "disk": lenient, "memory": lenient}},
        {**web_check, "name": "[demo] shop front page", "url": f"{site}/", "keyword": "Add to cart",
         "group": "Demo shop"},
        {**web_check, "name": "[demo] shop search (slow)", "url": f"{site}/slow", "max_response_ms": 2000,
         "group": "Demo shop"},
        {**web_check, "name": "[demo] switch", "url": f"{site}/switch", "failure_threshold": 2,
         "group": "Demo shop"},
    ]


def _url_of(entity: dict[str, Any]) -> str | None:
    try:
        return json.loads(entity.get("spec") or "{}").get("url")
    except ValueError:
        return None


async def seed(store: Any, app_port: int, demo_port: int = DEMO_PORT) -> list[str]:
    """Create the demo monitors unless this storage had them once (the marker); returns the ids created."""
    from shared import manage as service
    from shared.errors import Invalid

    seeded_at = (await store.get_kind_meta(MARKER)).get("seeded_at")
    if seeded_at:
        log.info("demo: this storage got its demo monitors on %s; none added (a deleted one stays deleted)",
                 f"{seeded_at:%Y-%m-%d %H:%M} UTC" if isinstance(seeded_at, datetime) else seeded_at)
        return []
    existing = {str(m.get("name")): m for m in await store.list_monitors()}
    for name, url in LEGACY.items():
        old = existing.pop(name, None)
        if old is not None and _url_of(old) == url:
            await service.delete_monitor(store, old["RowKey"])
            log.info("removed the old demo monitor %s (it needed the internet)", name)
    created = []
    for spec in demo_specs(app_port, demo_port):
        if spec["name"] in existing:  # seeded by an older version (no marker then)
            continue
        try:
            made = await service.create_monitor(store, spec)
        except service.Duplicate:
            continue
        except Invalid as error:
            details = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in error.details) or str(error)
            log.warning("demo monitor %s not created: %s (the demo needs OUTBOUND_ALLOW_CIDRS=127.0.0.0/8 as "
                        "in local.settings.json.example)", spec["name"], details)
            continue
        created.append(made["id"])
        log.info("demo monitor created: %s %s", made["id"], made["name"])
    await store.set_kind_meta(MARKER, seeded_at=datetime.now(UTC), created=len(created))
    return created


async def check_now(store: Any, settings: Any, ids: list[str]) -> None:
    """Check each new demo monitor once (as `POST /monitors/{id}/run` does), so the page has data at once."""
    from shared.manage.running import run_monitor

    async def one(monitor_id: str) -> None:
        try:
            result = await run_monitor(store, settings, monitor_id)
            log.info("demo monitor checked: %s %s", result.get("name"), result.get("status"))
        except Exception:  # a demo check failing is shown by the monitor itself
            log.warning("demo monitor %s: first check failed", monitor_id, exc_info=True)

    await asyncio.gather(*(one(i) for i in ids))


async def seed_and_check(app_port: int, demo_port: int = DEMO_PORT, wait_for_app: float = 0.0) -> list[str]:
    """Seed (once per storage) and check what was created; waits up to `wait_for_app` s for the app's health."""
    from shared.settings import get_settings
    from shared.storage import Store

    settings = get_settings()
    async with Store.open(settings) as store:
        await store.ensure_queues()
        created = await seed(store, app_port, demo_port)
        if created and wait_for_app:
            await _wait_for(f"http://127.0.0.1:{app_port}/api/v1/health", wait_for_app)
        if created:
            await check_now(store, settings, created)
    log.info("demo ready: %d monitor(s) created (status page: http://127.0.0.1:%s/api/status-page)", len(created),
             app_port)
    return created


async def _wait_for(url: str, seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    async with ClientSession(timeout=ClientTimeout(total=3)) as http:
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(ClientError, TimeoutError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(1)
    return False


async def main() -> None:
    """`python -m devhost.demo`: the demo target and the seeding, beside an app that `func start` runs."""
    from devhost import ROOT, load_local_settings

    parser = argparse.ArgumentParser(prog="python -m devhost.demo")
    parser.add_argument("--port", type=int, default=7071, help="the app's HTTP port (for its health monitor)")
    parser.add_argument("--demo-port", type=int, default=DEMO_PORT, help="the demo target's port")
    parser.add_argument("--no-demo", action="store_true", help="do nothing (as python -m devhost --no-demo)")
    args, _ = parser.parse_known_args()
    if args.no_demo:
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    os.chdir(ROOT)
    load_local_settings()
    target = DemoTarget(args.demo_port)
    await target.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    seeding = asyncio.create_task(seed_and_check(args.port, args.demo_port, wait_for_app=120))
    await stop.wait()
    seeding.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await seeding
    await target.stop()


if __name__ == "__main__":
    asyncio.run(main())
