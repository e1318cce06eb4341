"""`python -m monitors …` as a person (tables) and a script (--json) would use it, in a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(storage):
    env = {**os.environ}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "monitors", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)

    return run


def test_add_list_show_update_disable_delete(cli):
    made = cli("--json", "add", "website", "name=Docs site", "url=http://127.0.0.1:9/", "interval_seconds=120",
               'recipients=["docs@example.com"]', "attempts=1")
    assert made.returncode == 0, made.stderr
    mid = json.loads(made.stdout)["id"]

    table = cli("list")
    assert table.returncode == 0
    header, rule, row = table.stdout.splitlines()[:3]
    assert header.split() == ["id", "kind", "name", "enabled", "status", "schedule", "target"]
    assert mid in row and "Docs site" in row and "PENDING" in row and "120 s" in row

    shown = cli("show", mid)
    assert "recipients" in shown.stdout and "docs@example.com" in shown.stdout

    assert cli("update", mid, "name=Docs", "cron=*/10 * * * *").returncode == 0
    assert json.loads(cli("--json", "show", mid).stdout)["cron"] == "*/10 * * * *"
    assert json.loads(cli("--json", "disable", mid).stdout)["enabled"] is False

    ran = cli("run", mid)  # a disabled monitor can still be run by hand; port 9 refuses
    assert "cannot connect" in ran.stdout
    results = cli("--json", "results", mid)
    assert json.loads(results.stdout)["items"][0]["outcome"] == "down"

    assert cli("delete", mid).returncode == 0
    gone = cli("show", mid)
    assert gone.returncode == 1 and "no monitor" in gone.stderr


def test_bad_input_is_a_clear_message_and_stores_nothing(cli):
    bad = cli("add", "website", "name=x", "url=gopher://old", "interval_seconds=30")
    assert bad.returncode == 2
    assert "url: must start with http:// or https://" in bad.stderr
    assert "interval_seconds: Input should be greater than or equal to 60" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert cli("list").stdout.strip() == "(none)"
    assert cli("add", "website", "nonsense").returncode == 2
    assert "unknown kind" in cli("add", "telepathy", "name=x").stderr


def test_run_a_kind_and_pause(cli):
    cli("add", "website", "name=A", "url=http://127.0.0.1:9/a", "attempts=1")
    out = cli("--json", "run", "--kind", "website")
    assert out.returncode == 0 and json.loads(out.stdout)["checked"] == 1
    assert json.loads(cli("--json", "pause", "website").stdout) == {"kind": "website", "paused": True}
    assert json.loads(cli("--json", "health").stdout)["timers"]["website"]["paused"] is True


def test_a_missing_setting_is_named(storage):
    env = {"PATH": os.environ["PATH"], "GLOBAL_EMAIL_NOTIFICATIONS_ENABLED": "false"}
    out = subprocess.run([sys.executable, "-m", "monitors", "list"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "AzureWebJobsStorage" in out.stderr and "Traceback" not in out.stderr
