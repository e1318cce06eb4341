"""`python -m monitors …` as a person (tables) and a script (--json) would use it, in a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEV_KEY
from targets import refused_port

ROOT = Path(__file__).resolve().parent.parent


def monitors_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m monitors ARGS` in `cwd` (where it looks for local.settings.json), this project on the path."""
    env = {**env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "monitors", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def cli(storage, tmp_path):
    """The CLI with the test's settings in the environment, run from a folder without local.settings.json."""
    env = {**os.environ}

    def run(*args: str) -> subprocess.CompletedProcess:
        return monitors_cli(*args, cwd=tmp_path, env=env)

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


def test_a_missing_setting_is_named(storage, tmp_path):
    env = {"PATH": os.environ["PATH"], "GLOBAL_EMAIL_NOTIFICATIONS_ENABLED": "false"}
    out = monitors_cli("list", cwd=tmp_path, env=env)  # no local.settings.json there either
    assert out.returncode == 2 and "AzureWebJobsStorage" in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------------------------ local.settings.json


def bare_env() -> dict[str, str]:
    """What a new terminal has: no app settings at all."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")}


def write_local_settings(folder: Path, **values: str) -> Path:
    """local.settings.json as `scripts/run` makes it: the example's Values, with these changed."""
    example = json.loads((ROOT / "local.settings.json.example").read_text())
    example["Values"].update(values)
    path = folder / "local.settings.json"
    path.write_text(json.dumps(example, indent=2))
    return path


def test_list_works_with_only_local_settings_json(storage, tmp_path):
    """As the README shows it: from the project folder, the settings in local.settings.json and nowhere else."""
    write_local_settings(tmp_path, AzureWebJobsStorage=storage, GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="false")
    made = monitors_cli("add", "website", "name=From the file", "url=http://127.0.0.1:9/", cwd=tmp_path,
                        env=bare_env())
    assert made.returncode == 0, made.stderr
    listed = monitors_cli("list", cwd=tmp_path, env=bare_env())
    assert listed.returncode == 0, listed.stderr
    assert "From the file" in listed.stdout and "invalid settings" not in listed.stderr


def test_the_environment_wins_over_local_settings_json(storage, tmp_path):
    write_local_settings(tmp_path, AzureWebJobsStorage=storage, GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="false")
    closed = f"http://127.0.0.1:{refused_port()}/devstoreaccount1"  # an Azurite that is not running
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
            f"QueueEndpoint={closed};TableEndpoint={closed};")
    out = monitors_cli("list", cwd=tmp_path, env={**bare_env(), "AzureWebJobsStorage": conn})
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "the storage does not answer" in out.stderr and "is Azurite running?" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    # and a value the file has but the environment sets differently: the environment's counts
    out = monitors_cli("list", cwd=tmp_path, env={**bare_env(), "SMTP_PORT": "99999"})
    assert out.returncode == 2 and "SMTP_PORT" in out.stderr, out.stderr


def test_a_broken_local_settings_json_is_named(tmp_path):
    (tmp_path / "local.settings.json").write_text('{\n  "Values": {\n    "A": "b",\n  }\n}\n')
    out = monitors_cli("list", cwd=tmp_path, env=bare_env())
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "local.settings.json: not valid JSON (line 4" in out.stderr, out.stderr
    write_local_settings(tmp_path, AzureWebJobsStorage="UseDevelopmentStorage=true")
    settings = json.loads((tmp_path / "local.settings.json").read_text())
    settings["IsEncrypted"] = True
    (tmp_path / "local.settings.json").write_text(json.dumps(settings))
    out = monitors_cli("list", cwd=tmp_path, env=bare_env())
    assert out.returncode == 2 and "IsEncrypted is true" in out.stderr, out.stderr


def test_json_goes_before_or_after_the_command(cli):
    mid = json.loads(cli("add", "website", "name=J", "url=http://127.0.0.1:9/", "attempts=1", "--json").stdout)["id"]
    assert cli("run", mid).returncode == 0
    after, before = cli("results", mid, "--json"), cli("--json", "results", mid)
    assert after.returncode == 0 and before.returncode == 0, (after.stderr, before.stderr)
    assert json.loads(after.stdout)["items"] == json.loads(before.stdout)["items"]
    assert json.loads(after.stdout)["items"][0]["outcome"] == "down"
    assert json.loads(cli("list", "--json").stdout)["items"][0]["id"] == mid
    assert json.loads(cli("rules", "list", "--json").stdout) == {"items": []}
    assert json.loads(cli("uptime", mid, "--window", "7d", "--json").stdout)["window"] == "7d"
    # without it: a table, not JSON
    table = cli("results", mid)
    header = table.stdout.splitlines()[0].split()
    assert header[0] == "ts" and {"outcome", "status", "latency", "error"} <= set(header), table.stdout
    with pytest.raises(ValueError):
        json.loads(table.stdout)


def test_a_trailing_comment_passed_on_as_words_is_ignored(cli):
    """zsh (by default, interactively) passes `# the demo monitors` on to the command as words."""
    out = cli("list", "#", "the", "demo", "monitors")
    assert out.returncode == 0 and out.stdout.strip() == "(none)", out.stderr
