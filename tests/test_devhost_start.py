"""Starting the local host: the keys of the example settings, a local.settings.json that cannot be used, and a
second start while one runs (`python -m devhost` and `bash scripts/run`: one line, "port N is in use: is the app
already running?", and a non-zero exit, never a traceback)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import azure.functions as func
import pytest
from conftest import free_port

from devhost import LocalHost

ROOT = Path(__file__).resolve().parent.parent


def _make_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.function_name("secret")
    @app.route(route="secret", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
    async def secret(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("secret", mimetype="text/plain")

    return app


APP = _make_app()


async def test_the_example_settings_leave_the_keys_empty_and_say_how_to_send_one(tmp_path):
    """local.settings.json.example has DEVHOST_FUNCTION_KEY (and the master key) empty, explained in a `_comment`
    that is no setting: with them as they are, every route answers without a key (as under `func start`)."""
    example = json.loads((ROOT / "local.settings.json.example").read_text())
    assert example["Values"]["DEVHOST_FUNCTION_KEY"] == "" and example["Values"]["DEVHOST_MASTER_KEY"] == ""
    comment = " ".join(example["_comment"])
    assert "x-functions-key" in comment and "?code=" in comment and "DEVHOST_FUNCTION_KEY" in comment
    assert "_comment" not in example["Values"]

    (tmp_path / "local.settings.json").write_text(json.dumps(example))
    script = ("import json, os; from devhost import load_local_settings; from pathlib import Path; "
              f"load_local_settings(Path({str(tmp_path / 'local.settings.json')!r})); "
              "print(json.dumps({k: os.environ.get(k) for k in ('DEVHOST_FUNCTION_KEY', '_comment', 'SMTP_PORT')}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVHOST_", "SMTP_"))}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**env, "SMTP_PORT": "2525"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"DEVHOST_FUNCTION_KEY": "", "_comment": None, "SMTP_PORT": "2525"}

    values, port = example["Values"], free_port()
    host = LocalHost(APP, {"extensions": {"http": {"routePrefix": "api"}}}, port,
                     function_key=values["DEVHOST_FUNCTION_KEY"] or None, master_key=values["DEVHOST_MASTER_KEY"] or None)
    await host.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/api/secret") as resp:
            assert (resp.status, await resp.text()) == (200, "secret")  # no key asked for
    finally:
        await host.stop()


def test_a_broken_local_settings_json_stops_the_local_host_with_one_line(tmp_path):
    bad = tmp_path / "local.settings.json"
    bad.write_text('{\n  "Values": {\n    "SMTP_PORT": "1025",\n  }\n}\n')  # a trailing comma
    script = f"from pathlib import Path; from devhost import load_local_settings; load_local_settings(Path({str(bad)!r}))"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == f"error: {bad}: not valid JSON (line 4, column 3: Expecting property name enclosed " \
                                 "in double quotes); JSON has no comments or trailing commas"


# ------------------------------------------------------------------------------------------- port in use


def _held_port() -> tuple[Any, int]:
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    return held, held.getsockname()[1]


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_a_second_local_host_says_the_port_is_in_use(storage):
    held, port = _held_port()
    env = {**os.environ, "SMTP_HOST": "", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    with held:
        out = subprocess.run([sys.executable, "-m", "devhost", "--port", str(port), "--no-demo"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert _one_line(out) == f"port {port} is in use: is the app already running?"


def test_a_second_scripts_run_says_the_port_is_in_use():
    """Checked before anything is set up or started: one line, at once."""
    held, port = _held_port()
    with held:
        started = time.monotonic()
        out = subprocess.run(["bash", "scripts/run", "--port", str(port)], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        took = time.monotonic() - started
    assert _one_line(out) == f"port {port} is in use: is the app already running?"
    assert took < 5, took


NAMESPACE_RUN = """
import fcntl, json, socket, struct, subprocess, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # `lo` up: a new namespace has it down
    fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", 0x1 | 0x8 | 0x40))
with socket.socket() as held:
    held.bind(("127.0.0.1", 7071))
    held.listen()
    out = subprocess.run(["bash", "scripts/run"], capture_output=True, text=True, timeout=60)
print(json.dumps({"rc": out.returncode, "stdout": out.stdout, "stderr": out.stderr}))
"""


def test_a_second_scripts_run_on_the_default_port_names_7071():
    """The default port, in a network namespace of its own (so port 7071 is surely ours to hold)."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "--net", "--map-root-user", "true"],
                                                     capture_output=True, timeout=30).returncode:
        pytest.skip("cannot make a network namespace (unshare --net) to hold port 7071 in")
    proc = subprocess.run(["unshare", "--net", "--map-root-user", sys.executable, "-c", NAMESPACE_RUN], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert _one_line(subprocess.CompletedProcess([], out["rc"], out["stdout"], out["stderr"])) == \
        "port 7071 is in use: is the app already running?"


def test_a_settings_file_from_before_the_checks_queue_names_it_at_start(azurite):
    """local.settings.json made from an older example has no CHECKS_QUEUE, which the host needs to start the
    queue worker (%CHECKS_QUEUE%): the app stops at start naming it, as it does any missing setting."""
    env = {k: v for k, v in os.environ.items() if k != "CHECKS_QUEUE"}
    env.update(FUNCTIONS_WORKER_RUNTIME="python", AzureWebJobsStorage=azurite, GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="false")
    out = subprocess.run([sys.executable, "-c", "import function_app"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "CHECKS_QUEUE: required" in out.stderr, out.stderr
    env["CHECKS_QUEUE"] = "monitor-checks"
    out = subprocess.run([sys.executable, "-c", "import function_app"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
