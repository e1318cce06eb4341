"""Several locations as separate processes: three local hosts (`python -m devhost`), each with its own
CHECK_LOCATION, on one Azurite — as three regions' apps share one storage account. Their timers are disabled and
run through the host's admin API (one tick each: the locations' heartbeats), and checks are asked for with
run-now on each host's HTTP API; the target answers each location as the test says (it reads the User-Agent)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from conftest import free_port
from helpers import add_monitor, events_of, stop_process, timer_names, types
from targets import targets  # noqa: F401 - fixture

from shared.storage import Store

ROOT = Path(__file__).resolve().parent.parent
LOCATIONS = ("eu", "us", "asia")


def _env(location: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVHOST_", "PYTHONPATH"))
           and not k.lower().startswith("azurewebjobs.")}
    env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", SMTP_HOST="", OUTBOUND_ALLOW_CIDRS="127.0.0.1/32",
               GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="false", CHECK_LOCATION=location,
               CHECK_LOCATIONS=",".join(LOCATIONS), CHECKS_QUEUE=f"monitor-checks-{location}")
    for name in timer_names():
        env[f"AzureWebJobs.{name}.Disabled"] = "true"
    return env


async def _up(session: aiohttp.ClientSession, base: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            async with session.get(f"{base}/api/v1/health") as resp:
                if resp.status in (200, 503):
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.3)
    raise AssertionError(f"the host did not start:\n{log.read_text()}")


async def test_three_location_hosts_agree_on_a_quorum(storage, env, targets, tmp_path):
    from shared.settings import get_settings

    env(CHECK_LOCATION="eu", CHECK_LOCATIONS=",".join(LOCATIONS))
    site = targets.http()
    hosts: dict[str, tuple[str, subprocess.Popen]] = {}
    try:
        for location in LOCATIONS:
            log = tmp_path / f"{location}.log"
            port = free_port()
            with log.open("w") as out:
                proc = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(port), "--no-demo"],
                                        cwd=ROOT, env=_env(location), stdout=out, stderr=subprocess.STDOUT)
            hosts[location] = (f"http://127.0.0.1:{port}", proc)
        async with aiohttp.ClientSession() as http, Store.open(get_settings()) as store:
            for location, (base, proc) in hosts.items():
                await _up(http, base, proc, tmp_path / f"{location}.log")
            cfg = await add_monitor(store, site.url, name="Shop", interval_seconds=60, failure_threshold=1,
                                    quorum=2)
            mid = cfg.id or ""

            async def run(location: str) -> dict[str, Any]:
                async with http.post(f"{hosts[location][0]}/api/v1/monitors/{mid}/run") as resp:
                    assert resp.status == 200, await resp.text()
                    return dict(await resp.json())

            for base, _ in hosts.values():  # one timer tick in each location: its first check, its heartbeat
                async with http.post(f"{base}/admin/functions/website_timer", json={"input": ""}) as resp:
                    assert resp.status == 202, await resp.text()
            deadline = time.monotonic() + 60
            while len(site.agents) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)  # the ticks record their heartbeats after their checks
            assert sorted(a.split("location/")[1] for a in site.agents) == sorted(LOCATIONS)

            site.set(down_for={"asia"})
            seen = await run("asia")
            assert seen["status"] == "DEGRADED"  # one location of three, quorum 2: a regional issue
            site.set(down_for={"asia", "us"})
            seen = await run("us")
            assert seen["status"] == "DOWN"
            events = await events_of(store, mid)
            assert types(events) == ["REGIONAL_ISSUE", "MONITOR_DOWN"]
            assert "asia" in events[-1]["message"] and "us" in events[-1]["message"]

            async with http.get(f"{hosts['eu'][0]}/api/v1/monitors/{mid}") as resp:  # any location reads it all
                view = await resp.json()
            assert {loc: v["status"] for loc, v in view["state"]["locations"].items()} == \
                {"eu": "UP", "us": "DOWN", "asia": "DOWN"}
    finally:
        for _, proc in hosts.values():
            stop_process(proc)
