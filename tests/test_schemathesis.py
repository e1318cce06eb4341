"""Schemathesis over the whole HTTP API: every operation of /api/v1/openapi.json (none left out), generated inputs
valid and invalid (phases examples, coverage, fuzzing, stateful), with every check schemathesis has (`--checks
all`): no server error; status codes, content types, headers and bodies as documented; invalid input refused;
valid input accepted (except where REFUSABLE says why not); and the auth, method and resource checks.

The app runs in the local host (devhost.LocalHost, in-process, with a function key) against its own Azurite, and
both run with schemathesis in a network namespace of their own that has nothing but loopback (`unshare --net`).
That is what makes the run-now operations safe to fuzz: POST /v1/monitors/{id}/run and POST /v1/kinds/{kind}/run
check whatever the fuzzed monitors name (the outbound guard lets public addresses through, so outside the
namespace they would reach out), and the local host's timers check them every minute too — in the namespace a
connection to anything but 127.0.0.1 fails at once, and not even a DNS query leaves the machine.

The data the operations find is seeded first (a monitor of every kind with results, an unreadable definition, an
alert rule, a stored snapshot); path ids are drawn half the time from the seeded ones.

Run by hand:  unshare --net --map-root-user .venv/bin/python tests/test_schemathesis.py /tmp/st.json
(SCHEMATHESIS_MAX_EXAMPLES=50 for a longer run.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from netns import can_isolate_network, loopback_up, run_isolated

ROOT = Path(__file__).resolve().parent.parent
KEY = "schemathesis-local-key"
SEED = 1
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES") or 15)  # per operation and phase; ~4,000 cases
TIMEOUT = 600  # seconds for the whole run (it takes ~3 minutes on 2 cores)
MIN_CASES = 1000




@pytest.mark.skipif(not can_isolate_network(), reason="cannot make a network namespace (unshare --net): fuzzed monitors "
                    "would check arbitrary addresses, so schemathesis runs only where nothing can leave")
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    out = tmp_path / "schemathesis.json"
    started = time.monotonic()
    output = run_isolated(__file__, out, TIMEOUT)
    took = time.monotonic() - started
    print(output[-20000:])
    result = json.loads(out.read_text())
    print(f"schemathesis {result['version']}: {result['cases']} cases over {result['operations']} "
          f"operations in {took:.0f} s; answers by status: {result['statuses']}")
    assert result["untested"] == [], result["untested"]  # every operation of the document was called
    assert not [s for s in result["statuses"] if s.startswith("5")], result["statuses"]
    assert result["failures"] == [], "\n\n".join(result["failures"])
    assert result["errors"] == [], "\n\n".join(result["errors"])
    assert result["exit_code"] == 0, output[-5000:]
    assert result["cases"] >= MIN_CASES


# ------------------------------------------------------------------------------- inside the namespace




async def _target(state: dict[str, int]) -> tuple[Any, str]:
    """A loopback web site for the seeded website monitors, answering `state["status"]`."""
    from aiohttp import web

    async def page(request: web.Request) -> web.Response:
        return web.Response(status=state["status"], text="welcome to the shop")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]


async def _seed(base: str, url: str, site: dict[str, int]) -> dict[str, list[str]]:
    """Data for the operations to find: a monitor of every kind with results and a downtime, an unreadable
    definition, an alert rule, a stored snapshot. Returns the ids schemathesis picks from (and spares for DELETE)."""
    import aiohttp

    from shared.settings import get_settings
    from shared.storage import Store

    ids: dict[str, list[str]] = {"monitors": [], "doomed": [], "rules": [], "doomed_rules": [], "channels": [],
                                 "doomed_channels": [], "windows": [], "doomed_windows": []}
    async with aiohttp.ClientSession(base, headers={"x-functions-key": KEY}) as http:
        async def post(path: str, body: Any = None, expect: int = 201) -> Any:
            async with http.post(path, json=body) as resp:
                assert resp.status == expect, (path, resp.status, await resp.text())
                return await resp.json()

        specs = [{"kind": "website", "name": "Shop", "url": url, "attempts": 1, "failure_threshold": 1,
                  "headers": {"Authorization": "Bearer s3cret"}, "public": True},
                 {"kind": "resource", "name": "Server", "source": {"type": "local"}},
                 {"kind": "stock", "product_id": 42}, {"kind": "parts", "name": "Kit", "parts": [{"pk": 1, "quantity": 2}]}]
        for spec in specs:
            ids["monitors"].append((await post("/api/v1/monitors", spec))["id"])
        for n in range(3):
            ids["doomed"].append((await post("/api/v1/monitors", {**specs[0], "url": f"{url}doomed/{n}"}))["id"])
        for mid in ids["monitors"]:
            await post(f"/api/v1/monitors/{mid}/run", expect=200)
        for status in (500, 200):  # the website goes down and up again: a closed downtime window
            site["status"] = status
            await post(f"/api/v1/monitors/{ids['monitors'][0]}/run", expect=200)
        for n in range(2):
            rule = {"metric": "monitors_total", "operator": ">", "threshold": n}
            ids["rules"if n == 0 else "doomed_rules"].append((await post("/api/v1/alert-rules", rule))["id"])
        await post("/api/v1/snapshot?persist=true", expect=200)
        hook = {"type": "webhook", "url": f"{url}hook", "secret": "schemathesis-webhook-secret"}
        for n, key in enumerate(("channels", "doomed_channels", "doomed_channels")):
            made = await post("/api/v1/channels", {**hook, "name": f"hook-{n}"})
            ids[key] += [made["id"], made["name"]]
        window = {"name": "Patch day", "rrule": "FREQ=MONTHLY;BYDAY=1WE", "at": "02:00", "duration_minutes": 120,
                  "timezone": "Europe/Berlin", "all": True}
        for key in ("windows", "doomed_windows", "doomed_windows"):
            ids[key].append((await post("/api/v1/maintenance", window))["id"])
    async with Store.open(get_settings()) as store:  # a definition that no longer parses; one of a kind now gone
        for mid, kind, spec in (("f" * 32, "website", "{not json"), ("e" * 32, "ftp", "{}")):
            await store.insert_monitor({"RowKey": mid, "kind": kind, "name": "Broken", "enabled": True, "spec": spec,
                                        "created_at": datetime.now(UTC), "updated_at": datetime.now(UTC)})
            ids["monitors"].append(mid)
    return ids


# Operations whose valid-looking input may still be refused (positive_data_acceptance also accepts 422 and 413
# there), because JSON Schema cannot state the rule: a monitor's field validators (http(s) URL with a host, status
# codes like "2xx", a regular expression that compiles, a 5-field cron, header names, interval_seconds or cron,
# attempts × timeout_seconds within one tick), e-mail addresses on special-use domains (.test, .example, …), the
# stored size (413), at most 200 alert rules, and /timeseries' `from` before `to` and at most 400 days apart.
REFUSABLE = {"createMonitor": "monitor validators", "updateMonitor": "monitor validators",
             "createChannel": "URL rules, channel names that exist, the outbound guard",
             "updateChannel": "the same, and a name in use", "testChannel": "e-mail off: nothing to send to",
             "createMaintenanceWindow": "RRULE and cron rules, monitors that exist",
             "updateMaintenanceWindow": "the same", "acknowledge": "no problem to acknowledge (409)",
             "createAlertRule": "e-mail domains, 200 rules", "updateAlertRule": "e-mail domains",
             "getTimeSeries": "from < to, at most 400 days"}


def _config(ids: dict[str, list[str]]) -> str:
    """schemathesis.toml: path ids drawn half the time from the seeded ones (DELETE from its own spares), and
    REFUSABLE."""
    out = [f"[dictionaries.{name}]\nvalues = {json.dumps(values)}\n" for name, values in ids.items()]
    binds = {**{op: ("monitor_id", "monitors") for op in ("getMonitor", "updateMonitor", "listResults",
                                                           "listDowntimes", "getUptime", "runMonitor", "badge")},
             **{op: ("monitor_id", "monitors") for op in ("acknowledge", "getAck", "deleteAck")},
             **{op: ("channel_id", "channels") for op in ("getChannel", "updateChannel", "testChannel")},
             "deleteChannel": ("channel_id", "doomed_channels"),
             **{op: ("window_id", "windows") for op in ("getMaintenanceWindow", "updateMaintenanceWindow")},
             "deleteMaintenanceWindow": ("window_id", "doomed_windows"),
             "deleteMonitor": ("monitor_id", "doomed"), "getAlertRule": ("rule_id", "rules"),
             "updateAlertRule": ("rule_id", "rules"), "deleteAlertRule": ("rule_id", "doomed_rules")}
    for op in sorted(set(binds) | set(REFUSABLE)):
        block = [f'[[operations]]\ninclude-operation-id = "{op}"']
        if op in binds:
            param, name = binds[op]
            block.append(f'parameters = {{ "path.{param}" = {{ dictionary = "{name}", probability = 0.5 }} }}')
        if op in REFUSABLE:
            block.append('checks = { positive_data_acceptance = { expected-statuses = ["2xx", "401", "404", "409", '
                         '"413", "422"] } }')
        out.append("\n".join(block) + "\n")
    return "\n".join(out)


async def _fuzz(out: Path) -> int:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from conftest import BASE_ENV, DEV_KEY, _azurite_bin, _wait_port, free_port

    data = tempfile.mkdtemp(prefix="azurite-")
    ports = [free_port() for _ in range(3)]
    azurite = subprocess.Popen([_azurite_bin(), "--silent", "--location", data, "--skipApiVersionCheck", "--loose", "--disableTelemetry",
                                "--blobPort", str(ports[0]), "--queuePort", str(ports[1]), "--tablePort",
                                str(ports[2])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    local = runner = None
    try:
        for port in ports:
            _wait_port(port)
        for name in [n for n in os.environ if n.startswith(("SMTP_", "ADMIN_EMAIL", "DEFAULT_EMAIL", "WHMCS_",
                                                            "INVENTREE_", "AZURE_"))]:
            del os.environ[name]
        os.environ.update(BASE_ENV)
        os.environ["AzureWebJobsStorage"] = (  # noqa: SIM112 - the Functions host's name
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{ports[0]}/devstoreaccount1;"
            f"QueueEndpoint=http://127.0.0.1:{ports[1]}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{ports[2]}/devstoreaccount1;")
        import aiohttp

        import function_app
        from devhost import LocalHost, read_host_json

        os.environ["DEVHOST_FUNCTION_KEY"] = KEY  # what `python -m devhost` passes to LocalHost
        port = free_port()
        local = LocalHost(function_app.app, read_host_json(), port, function_key=os.environ["DEVHOST_FUNCTION_KEY"])
        await local.start()
        base = f"http://127.0.0.1:{port}"
        site = {"status": 200}
        runner, url = await _target(site)
        ids = await _seed(base, url, site)
        work = out.parent / "schemathesis"
        work.mkdir(exist_ok=True)
        (work / "schemathesis.toml").write_text(_config(ids))
        # The document as the app serves it, from a file: loaded from its own URL, schemathesis would leave out
        # the operation that serves it (GET /api/v1/openapi.json).
        async with aiohttp.ClientSession(headers={"x-functions-key": KEY}) as http, \
                http.get(f"{base}/api/v1/openapi.json") as resp:
            doc = await resp.json()
        (work / "openapi.json").write_text(json.dumps(doc))
        st = Path(sys.executable).with_name("st")
        command = [str(st), "--config-file", str(work / "schemathesis.toml"), "run", str(work / "openapi.json"),
                   "--url", base, "--header", f"x-functions-key: {KEY}", "--checks", "all", "--seed", str(SEED),
                   "--max-examples", str(MAX_EXAMPLES), "--workers", "2",
                   "--generation-database", "none", "--no-color", "--output-truncate", "false",
                   "--report", "ndjson", "--report-dir", str(work)]
        print("$", " ".join(command).replace(KEY, "$KEY"), flush=True)
        proc = await asyncio.create_subprocess_exec(*command, cwd=work, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        output, _ = await proc.communicate()
        text = output.decode(errors="replace")
        print(text, flush=True)
        operations = {f"{method.upper()} {path}" for path, item in doc["paths"].items() for method in item
                      if method in ("get", "post", "patch", "delete", "put")}
        out.write_text(json.dumps(_summary(work, text, proc.returncode or 0, operations)))
        return 0
    finally:
        if runner is not None:
            await runner.cleanup()
        if local is not None:
            await local.stop()
        azurite.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            azurite.wait(10)
        shutil.rmtree(data, ignore_errors=True)


def _summary(work: Path, text: str, exit_code: int, operations: set[str]) -> dict[str, Any]:
    """From schemathesis' NDJSON events: cases per operation, every failed check, every 5xx answer, errors."""
    import schemathesis

    cases: dict[str, int] = {}
    statuses: dict[str, int] = {}
    skips: dict[str, int] = {}
    failures, errors = [], []
    for f in work.glob("*.ndjson"):
        for line in f.read_text().splitlines():
            event = json.loads(line)
            name, body = next(iter(event.items()))
            if name == "NonFatalError" or name == "FatalError":
                errors.append(json.dumps(body)[:2000])
            if name != "ScenarioFinished":
                continue
            recorder = body["recorder"]
            if body["status"] == "skip":
                skips[body.get("skip_reason") or "?"] = skips.get(body.get("skip_reason") or "?", 0) + 1
            if not recorder.get("cases"):
                continue
            label = recorder["label"] if recorder["label"] in operations else "(stateful sequences)"
            cases[label] = cases.get(label, 0) + len(recorder["cases"])
            for interaction in recorder["interactions"].values():
                code = str((interaction.get("response") or {}).get("status_code"))
                statuses[code] = statuses.get(code, 0) + 1
            for case_id, checks in recorder["checks"].items():
                for check in checks:
                    if check["status"] == "failure":
                        failures.append(f"{recorder['label']} [{case_id}] {check['name']}: "
                                        f"{json.dumps(check.get('failure_info') or check)[:1500]}")
    return {"version": schemathesis.__version__, "exit_code": exit_code, "cases": sum(cases.values()),
            "operations": len(set(cases) & operations), "per_operation": cases, "statuses": statuses, "skips": skips, "failures": failures,
            "errors": errors, "untested": sorted(operations - set(cases)), "output": text[-4000:]}


if __name__ == "__main__":
    loopback_up()
    os.chdir(ROOT)
    sys.exit(asyncio.run(_fuzz(Path(sys.argv[1]))))
