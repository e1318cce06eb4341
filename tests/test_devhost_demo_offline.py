"""A newcomer's first minute, offline: a copy of the working tree (what a fresh clone has, plus the installed .venv
and node_modules), `bash scripts/run` inside a network namespace with nothing but loopback (`unshare --net`): the
status page is green with the demo monitors within 70 s; a demo monitor deleted, Ctrl-C, `bash scripts/run`
again: it stays deleted. Nothing can leave the machine there (a demo that needed the internet would show red), and
the logs show that nothing tried (no failed name lookup: Azurite's telemetry is off).

Run the inside by hand:  unshare --net --map-root-user .venv/bin/python tests/test_devhost_demo_offline.py CLONE OUT
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from netns import can_isolate_network
from test_devhost_demo import DEMO_COUNT, banner, page_monitors

ROOT = Path(__file__).resolve().parent.parent
GREEN_WITHIN = 70.0  # seconds from `bash scripts/run` to a green status page with the demo monitors




def copy_working_tree(dest: Path) -> None:
    """What a clone of the working tree has (tracked and new files, nothing ignored), with the installed .venv
    and node_modules linked in (scripts/setup then has nothing to install: there is no network to install from)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for linked in (".venv", "node_modules"):
        (dest / linked).symlink_to(ROOT / linked, target_is_directory=True)


CLEAN_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "USER", "TMPDIR", "PYENV_ROOT", "PYENV_VERSION")


@pytest.mark.skipif(not can_isolate_network(), reason="cannot make a network namespace (unshare --net): the offline "
                    "fresh-clone run needs one")
def test_a_fresh_clone_offline_shows_a_green_status_page_within_70_s_and_deleted_stays_deleted(tmp_path):
    clone = tmp_path / "clone"
    copy_working_tree(clone)
    assert not (clone / "local.settings.json").exists() and not (clone / ".azurite").exists()
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k in CLEAN_ENV}  # no setting from this shell: the example's
    proc = subprocess.Popen(["unshare", "--net", "--map-root-user", sys.executable, __file__, str(clone),
                             str(out)], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the offline run did not finish in 400 s:\n{output[-5000:]}")
    print(output[-6000:])
    assert proc.returncode == 0 and out.exists(), f"the offline run failed ({proc.returncode}):\n{output[-5000:]}"
    result = json.loads(out.read_text())
    print(json.dumps({k: v for k, v in result.items() if k not in ("log", "azurite_log", "first_run",
                                                                  "second_run")}, indent=1))
    assert result["outside_reachable"] is False  # the namespace really has nothing but loopback
    assert result["green_after"] is not None, f"never green: {result['last_page']}\n{result['log'][-4000:]}"
    assert result["green_after"] <= GREEN_WITHIN, result["green_after"]
    first = result["first_run"]
    assert len(first) == DEMO_COUNT and all(m["name"].startswith("[demo] ") for m in first)
    for m in first:
        assert m["public"] is True
        if m["kind"] == "website":
            assert urlsplit(m["url"]).hostname == "127.0.0.1", m["url"]
        assert m["outcomes"] and set(m["outcomes"]) == {"up"}, m  # every check reached its target
    assert result["deleted_status"] == 204
    assert -9 not in result["exits"], result["exits"]  # Ctrl-C ended both runs (nothing had to be killed)
    assert result["second_ready"], result["log"][-4000:]
    second = sorted(m["name"] for m in result["second_run"])
    assert result["deleted"] not in second  # deleted stays deleted
    assert second == sorted(m["name"] for m in first if m["name"] != result["deleted"])
    assert sorted(result["second_page"]) == second  # and the page shows the others, not the deleted one
    assert not [line for line in result["log"].splitlines() if "mail to" in line and "DOWN" in line]
    assert "Traceback" not in result["log"], result["log"][-4000:]
    # nothing tried to leave the machine: no name lookup failed (Azurite's telemetry is off), nobody crashed
    for text in (result["log"], result["azurite_log"]):
        for sign in ("getaddrinfo", "EAI_AGAIN", "Name or service not known", "applicationinsights", "Error:"):
            assert sign not in text, (sign, text[-3000:])
    assert "Azurite Table service successfully closed" in result["azurite_log"]  # it saved its writes


# ------------------------------------------------------------------------------- inside the namespace


def _loopback_up() -> None:
    """Bring `lo` up (a new network namespace has it down)."""
    iff_up, iff_loopback, iff_running, siocsifflags = 0x1, 0x8, 0x40, 0x8914
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", iff_up | iff_loopback | iff_running))


def _outside_reachable() -> bool:
    try:
        with socket.create_connection(("192.0.2.1", 80), timeout=2):  # TEST-NET-1: never answers anywhere
            return True
    except OSError as error:
        return error.errno not in (101, 113)  # ENETUNREACH, EHOSTUNREACH: no route at all


def _get(path: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:7071{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (OSError, urllib.error.URLError):
        return 0, ""


def _start(clone: Path, log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["bash", "scripts/run"], cwd=clone, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _ctrl_c(proc: subprocess.Popen[bytes]) -> int:
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        return -9


def _wait_log(path: Path, text: str, times: int, seconds: float) -> bool:
    """Wait until `text` is in the log `times` times."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.read_text(errors="replace").count(text) >= times:
            return True
        time.sleep(0.5)
    return False


def _demo_monitors() -> list[dict[str, Any]]:
    status, body = _get("/api/v1/monitors")
    if status != 200:
        return [{"name": f"GET /api/v1/monitors answered {status}: {body[:300]}"}]
    return [m for m in json.loads(body)["items"] if m["name"].startswith("[demo] ")]


def inside(clone: Path, out: Path) -> None:
    _loopback_up()
    result: dict[str, Any] = {"outside_reachable": _outside_reachable(), "green_after": None, "exits": []}
    log_path = clone / "run.log"
    with log_path.open("wb") as log:
        started = time.monotonic()
        proc = _start(clone, log)
        try:
            html = ""
            while time.monotonic() - started < 150 and proc.poll() is None:
                status, html = _get("/api/status-page")
                shown = {n: s for n, s in page_monitors(html).items() if n.startswith("[demo] ")}
                if (status == 200 and banner(html) == "All systems operational" and len(shown) == DEMO_COUNT
                        and set(shown.values()) <= {"UP", "OK"}):
                    result["green_after"] = round(time.monotonic() - started, 1)
                    break
                time.sleep(1)
            result["last_page"] = {"banner": banner(html), "monitors": page_monitors(html)}
            first = _demo_monitors()
            for m in first:
                _, body = _get(f"/api/v1/monitors/{m['id']}/results?limit=10")
                m["outcomes"] = [r["outcome"] for r in json.loads(body or '{"items": []}').get("items", [])]
            result["first_run"] = first
            doomed = next((m for m in first if m["name"] == "[demo] shop search (slow)"), None)
            if doomed:
                result["deleted"] = doomed["name"]
                result["deleted_status"] = _get(f"/api/v1/monitors/{doomed['id']}", "DELETE")[0]
        finally:
            result["exits"].append(_ctrl_c(proc))
        proc = _start(clone, log)
        try:
            ready = _wait_log(log_path, "demo ready", 2, 90)  # the second run's seeding decision is made
            result["second_ready"] = ready
            result["second_run"] = _demo_monitors() if ready else []
            _, html = _get("/api/status-page")
            result["second_page"] = page_monitors(html)
        finally:
            result["exits"].append(_ctrl_c(proc))
    result["log"] = log_path.read_text(errors="replace")
    azurite_log = clone / ".azurite" / "azurite.log"
    result["azurite_log"] = azurite_log.read_text(errors="replace") if azurite_log.exists() else ""
    out.write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    inside(Path(sys.argv[1]), Path(sys.argv[2]))
