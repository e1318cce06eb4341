"""A new kind is one module + one registry line, without touching shared/.

The app is copied to a temp dir; tests/plugins/tcpconnect.py (a real TCP-connect kind written only against
monitors/contract.py) becomes <copy>/monitors/tcpconnect.py and ONE line is added to REGISTRY. Nothing else
changes (asserted: the diff of monitors/__init__.py, a hash of every file under shared/). The copy's local host
(`python -m devhost`) and CLI (`python -m monitors`) then run the kind end to end against Azurite and a real TCP
listener on 127.0.0.1: create (and a 422 from the outbound guard), the generated timer, results and state, OpenAPI,
Prometheus, the public status page, pause/resume — all through public interfaces.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import free_port
from helpers import stop_process
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = Path(__file__).resolve().parent / "plugins" / "tcpconnect.py"
PYTHON = sys.executable
REGISTRY_LINE = '    "tcpconnect",'
COPIED = ("function_app.py", "host.json", "local.settings.json.example", "monitors", "shared", "devhost")


def tree_hashes(root: Path) -> dict[str, str]:
    """relative path → sha256 of every file under `root` (bytecode caches left out)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def add_registry_line(text: str) -> str:
    """monitors/__init__.py with `"tcpconnect",` as the last entry of the REGISTRY tuple."""
    match = re.search(r"^REGISTRY = \(\n(?:    \"\w+\",\n)+(?=\)\n)", text, re.M)
    assert match, "REGISTRY = ( … ) not found in monitors/__init__.py"
    return text[:match.end()] + REGISTRY_LINE + "\n" + text[match.end():]


@pytest.fixture(scope="module")
def app_copy(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("kind-plugin") / "app"
    copy.mkdir()
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, copy / name)
    shutil.copy2(PLUGIN, copy / "monitors" / "tcpconnect.py")
    init = copy / "monitors" / "__init__.py"
    init.write_text(add_registry_line(init.read_text()))
    return copy


def test_the_copy_differs_by_one_module_and_one_registry_line(app_copy):
    original = (ROOT / "monitors" / "__init__.py").read_text().splitlines()
    changed = (app_copy / "monitors" / "__init__.py").read_text().splitlines()
    diff = [line for line in difflib.ndiff(original, changed) if line[:1] in "+-"]
    assert diff == ["+ " + REGISTRY_LINE], "\n".join(diff)
    # no edit under shared/ (nor elsewhere): the copy is the repo + monitors/tcpconnect.py
    assert tree_hashes(app_copy / "shared") == tree_hashes(ROOT / "shared")
    assert tree_hashes(app_copy / "monitors") == {**tree_hashes(ROOT / "monitors"),
                                                  "tcpconnect.py": tree_hashes(PLUGIN.parent)["tcpconnect.py"],
                                                  "__init__.py": tree_hashes(app_copy / "monitors")["__init__.py"]}
    assert tree_hashes(app_copy / "devhost") == tree_hashes(ROOT / "devhost")


# ------------------------------------------------------------------------------------------------ end to end


def app_env(azurite: str) -> dict[str, str]:
    """os.environ + local.settings.json.example's Values (scripts/example_env.py), pointed at the test Azurite."""
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    env = {**os.environ, **{k: str(v) for k, v in values.items()}}
    env.update({"AzureWebJobsStorage": azurite, "GLOBAL_EMAIL_NOTIFICATIONS_ENABLED": "false",
                "OUTBOUND_ALLOW_CIDRS": "127.0.0.1/32",
                "SMTP_PORT": str(free_port()),  # the devhost's SMTP sink must not collide with another test's
                "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"})
    env.pop("DEVHOST_FUNCTION_KEY", None)
    env.pop("DEVHOST_MASTER_KEY", None)
    env.pop("PYTHONPATH", None)  # the copy's modules only (cwd is first on sys.path with -m)
    return env


@dataclass
class DevHost:
    base: str
    proc: subprocess.Popen
    log: Path
    timings: dict[str, float] = field(default_factory=dict)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no output)"


@pytest.fixture
async def devhost(app_copy, storage) -> AsyncIterator[DevHost]:
    port = free_port()
    log = app_copy.parent / f"devhost-{port}.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen([PYTHON, "-m", "devhost", "--port", str(port), "--no-demo"], cwd=app_copy,
                                env=app_env(storage), stdout=out, stderr=subprocess.STDOUT)
    host = DevHost(f"http://127.0.0.1:{port}", proc, log)
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, f"the devhost exited with {proc.returncode}:\n{host.output()}"
                try:
                    async with http.get(f"{host.base}/api/v1/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, f"the devhost did not answer /health:\n{host.output()}"
                await asyncio.sleep(0.2)
        host.timings["devhost start"] = time.perf_counter() - started
        yield host
    finally:
        stop_process(proc)


@pytest.fixture
async def open_port() -> AsyncIterator[int]:
    """A real TCP listener on 127.0.0.1 that accepts and closes."""
    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused, and nobody else can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def cli(app_copy: Path, env: dict[str, str], *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(PYTHON, "-m", "monitors", *args, cwd=app_copy, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, \
        f"python -m monitors {' '.join(args)} → {proc.returncode}:\n{out.decode()}\n{err.decode()}"
    return out.decode()


async def test_tcpconnect_kind_end_to_end(devhost, app_copy, storage, open_port, closed_port):
    steps: dict[str, float] = dict(devhost.timings)
    mark = time.perf_counter()

    def step(name: str) -> None:
        nonlocal mark
        steps[name] = time.perf_counter() - mark
        mark = time.perf_counter()

    try:
        async with aiohttp.ClientSession(devhost.base) as http:
            await _end_to_end(http, devhost, app_copy, storage, open_port, closed_port, step)
    except BaseException:
        print(f"---- devhost output ({devhost.log}) ----\n{devhost.output()}")  # shown by pytest on failure
        raise
    finally:
        print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))


async def call(http: aiohttp.ClientSession, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
    async with http.request(method, path, **kw) as resp:
        text = await resp.text()
        assert resp.status == expect, f"{method} {path} → {resp.status} (expected {expect}): {text}"
        return json.loads(text) if resp.content_type == "application/json" else text


async def _end_to_end(http, devhost, app_copy, azurite, open_port, closed_port, step) -> None:
    # -- create: the kind's Config validates, target() shows host:port, the outbound guard refuses at create time
    spec = {"kind": "tcpconnect", "name": "Port check", "host": "127.0.0.1", "port": open_port,
            "interval_seconds": 60, "public": True}
    made = await call(http, "POST", "/api/v1/monitors", 201, json=spec)
    assert made["target"] == f"127.0.0.1:{open_port}" and made["state"]["status"] == "PENDING", made
    up_id = made["id"]
    made = await call(http, "POST", "/api/v1/monitors", 201, json={
        **spec, "name": "Closed port", "port": closed_port, "failure_threshold": 1})
    down_id = made["id"]
    dup = await call(http, "POST", "/api/v1/monitors", 409, json={**spec, "name": "Same port"})
    assert [d["field"] for d in dup["error"]["details"]] == ["host"], dup  # unique_keys + unique_field
    refused = await call(http, "POST", "/api/v1/monitors", 422, json={**spec, "host": "127.0.0.2"})
    details = refused["error"]["details"]
    assert [d["field"] for d in details] == ["host"] and "127.0.0.2" in details[0]["message"], refused
    bad = await call(http, "POST", "/api/v1/monitors", 422, json={**spec, "port": 70000})
    assert [d["field"] for d in bad["error"]["details"]] == ["port"], bad
    step("create")

    # -- the registry generated the kind's timer; fire it as the host's admin API does
    await call(http, "POST", "/admin/functions/tcpconnect_timer", 202)
    results: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 10
    while set(results) != {up_id, down_id}:
        for mid in (up_id, down_id):
            items = (await call(http, "GET", f"/api/v1/monitors/{mid}/results"))["items"]
            if items:
                results[mid] = items
        assert time.monotonic() < deadline, f"no results after the timer: {results}"
        await asyncio.sleep(0.1)
    up, down = results[up_id][0], results[down_id][0]
    assert up["outcome"] == "up" and up["latency_ms"] > 0 and up["trigger"] == "timer", up
    assert up["error"] is None, up
    assert down["outcome"] == "down" and down["error"] == f"cannot connect to 127.0.0.1:{closed_port}: " \
                                                          "connection refused", down
    assert (await call(http, "GET", f"/api/v1/monitors/{up_id}"))["state"]["status"] == "UP"
    state = (await call(http, "GET", f"/api/v1/monitors/{down_id}"))["state"]
    assert state["status"] == "DOWN" and state["consecutive_failures"] == 1 and state["down_since"], state
    windows = (await call(http, "GET", f"/api/v1/monitors/{down_id}/downtimes"))["items"]
    assert len(windows) == 1 and windows[0]["open"] and "connection refused" in windows[0]["reason"], windows
    step("timer + results")

    # -- OpenAPI: the Config as a component schema, the kind in the discriminator and in the kinds enum
    doc = await call(http, "GET", "/api/v1/openapi.json")
    schemas = doc["components"]["schemas"]
    assert "TcpconnectMonitor" in schemas, sorted(schemas)
    assert {"host", "port", "timeout_seconds", "failure_threshold"} <= set(schemas["TcpconnectMonitor"]["properties"])
    assert schemas["TcpconnectMonitor"]["properties"]["port"]["maximum"] == 65535
    mapping = schemas["MonitorSpec"]["discriminator"]["mapping"]
    assert mapping["tcpconnect"] == "#/components/schemas/TcpconnectMonitor", mapping
    kind_param = next(p for p in doc["paths"]["/api/v1/kinds/{kind}/{action}"]["parameters"] if p["name"] == "kind")
    assert "tcpconnect" in kind_param["schema"]["enum"], kind_param
    step("openapi")

    # -- Prometheus: the shared families with kind="tcpconnect", and the kind's own family
    text = await call(http, "GET", "/api/v1/metrics/prometheus")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    statuses = {(s.labels["id"], s.labels["status"]) for s in families["monitor_status"].samples
                if s.labels.get("kind") == "tcpconnect" and s.value == 1}
    assert statuses == {(up_id, "UP"), (down_id, "DOWN")}, text
    assert "tcpconnect_connect_seconds" in families, text
    connect = {s.labels["id"]: s.value for s in families["tcpconnect_connect_seconds"].samples}
    assert set(connect) == {up_id} and 0 < connect[up_id] < 5, text
    newest = (await call(http, "GET", f"/api/v1/monitors/{up_id}/results"))["items"][0]  # the host's own timer
    assert connect[up_id] == pytest.approx(newest["latency_ms"] / 1000)  # may have checked again meanwhile
    assert families["tcpconnect_connect_seconds"].documentation.startswith("Time to open a TCP connection")
    step("prometheus")

    # -- the public status page (anonymous): the monitors under the kind's title; no target (public_url is None)
    async with aiohttp.ClientSession() as anonymous, anonymous.get(f"{devhost.base}/api/status-page") as resp:
        assert resp.status == 200
        html = await resp.text()
    groups = dict(re.findall(r"<h2>(.*?)</h2>(.*?)(?=<h2>|$)", html, re.S))
    assert "TCP ports" in groups, list(groups)
    tcp = groups["TCP ports"]
    assert "Port check" in tcp and "Closed port" in tcp, tcp
    assert f'id="m-{up_id}" data-status="UP"' in tcp and f'id="m-{down_id}" data-status="DOWN"' in tcp, tcp
    assert "Closed port is down" in groups.get("Open incidents", ""), list(groups)
    assert f":{open_port}" not in html
    step("status page")

    # -- pause: a timer run checks nothing and health says so; resume: the timer runs the kind again
    assert await call(http, "POST", "/api/v1/kinds/tcpconnect/pause") == {"kind": "tcpconnect", "paused": True}
    before = len((await call(http, "GET", f"/api/v1/monitors/{up_id}/results"))["items"])
    await call(http, "POST", "/admin/functions/tcpconnect_timer", 202)
    timer = (await call(http, "GET", "/api/v1/health"))["timers"]["tcpconnect"]
    assert timer["paused"] is True and timer["last_run"]["monitors"] == 2, timer  # its last real run
    assert len((await call(http, "GET", f"/api/v1/monitors/{up_id}/results"))["items"]) == before
    assert await call(http, "POST", "/api/v1/kinds/tcpconnect/resume") == {"kind": "tcpconnect", "paused": False}
    await call(http, "POST", "/admin/functions/tcpconnect_timer", 202)
    timer = (await call(http, "GET", "/api/v1/health"))["timers"]["tcpconnect"]
    assert timer["paused"] is False and timer["last_run"]["monitors"] == 2, timer  # enabled monitors, looked at
    ran = await call(http, "POST", "/api/v1/kinds/tcpconnect/run")  # and "run now" checks them
    assert sorted(r["outcome"] for r in ran["results"]) == ["down", "up"], ran
    step("pause/resume")

    # -- the CLI of the copy sees the same kind
    env = app_env(azurite)
    table = await cli(app_copy, env, "list")
    row = next((line for line in table.splitlines() if up_id in line), "")
    assert "tcpconnect" in row and "Port check" in row and f"127.0.0.1:{open_port}" in row and "UP" in row, table
    listed = json.loads(await cli(app_copy, env, "--json", "results", up_id))
    assert listed["items"] and {r["outcome"] for r in listed["items"]} == {"up"}, listed
    assert all(r["latency_ms"] > 0 for r in listed["items"]), listed
    step("cli")
