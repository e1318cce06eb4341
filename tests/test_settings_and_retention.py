"""Settings fail loudly and by name; rollups make uptime cheap; retention deletes only what is old."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared import manage
from shared.settings import SETTING_NAMES, SettingsError, get_settings
from shared.storage import Store, hour_floor, unique_row

ROOT = Path(__file__).resolve().parent.parent


def test_missing_or_bad_settings_name_the_setting(monkeypatch):
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    with pytest.raises(SettingsError, match="AzureWebJobsStorage"):
        get_settings()
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("CHECK_CONCURRENCY", "lots")
    get_settings.cache_clear()
    with pytest.raises(SettingsError, match="CHECK_CONCURRENCY"):
        get_settings()
    monkeypatch.setenv("CHECK_CONCURRENCY", "10")
    monkeypatch.setenv("ADMIN_EMAIL_RECIPIENTS", "ops@example.com, not-an-address")
    get_settings.cache_clear()
    with pytest.raises(SettingsError, match="ADMIN_EMAIL_RECIPIENTS"):
        get_settings()
    monkeypatch.setenv("ADMIN_EMAIL_RECIPIENTS", "ops@example.com")
    get_settings.cache_clear()
    with pytest.raises(SettingsError, match="SMTP_HOST"):  # e-mail is on by default and needs a server
        get_settings()
    get_settings.cache_clear()


def test_the_app_refuses_to_start_with_a_bad_setting():
    env = {"PATH": "/usr/bin:/bin", "AzureWebJobsStorage": "UseDevelopmentStorage=true", "SMTP_PORT": "99999",
           "SMTP_HOST": "x", "FUNCTIONS_WORKER_RUNTIME": "python"}  # as the Functions host starts the worker
    proc = subprocess.run([sys.executable, "-c", "import function_app"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "SMTP_PORT" in proc.stderr and "less than or equal to 65535" in proc.stderr
    # a tool that only indexes the functions (no host) is not stopped; the first invocation meets the bad setting
    del env["FUNCTIONS_WORKER_RUNTIME"]
    proc = subprocess.run([sys.executable, "-c", "import function_app; print(len(function_app.app.get_functions()));"
                           "from shared.settings import get_settings; get_settings()"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and int(proc.stdout.split()[0]) > 20
    assert "SMTP_PORT" in proc.stderr and "less than or equal to 65535" in proc.stderr


def test_every_setting_is_in_the_example_and_the_settings_page():
    example = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    page = (ROOT / "docs" / "SETTINGS.md").read_text()
    for name in SETTING_NAMES:
        assert name in example, f"{name} missing from local.settings.json.example"
        assert re.search(rf"`{re.escape(name)}`", page), f"{name} is not described in docs/SETTINGS.md"


async def _monitor(store: Store, url: str) -> str:
    import uuid

    from monitors import parse_spec, to_entity_spec

    mid = uuid.uuid4().hex
    cfg = parse_spec({"kind": "website", "id": mid, "name": "r", "url": url})
    await store.insert_monitor({"RowKey": mid, "kind": "website", "name": "r", "enabled": True,
                                "spec": to_entity_spec(cfg)}, [unique_row("website", k) for k in cfg.unique_keys()])
    return mid


async def test_rollups_feed_uptime_and_retention_purges_old_rows(settings):
    now = datetime.now(UTC)
    async with Store.open(settings) as store:
        mid = await _monitor(store, "https://rollup.example.com/")
        rows = []
        # 4 days of one check every 10 minutes; every 6th check down → uptime 83.3 %
        for i in range(4 * 24 * 6):
            at = now - timedelta(minutes=10 * i + 1)
            outcome = "down" if i % 6 == 0 else "up"
            rows.append(Store.result_entity(mid, at, {"outcome": outcome, "latency_ms": 100.0 + (i % 3)}))
        # and one result from 100 days ago, older than the 90-day retention
        rows.append(Store.result_entity(mid, now - timedelta(days=100), {"outcome": "up", "latency_ms": 5.0}))
        await store.write_results(rows)

        before = await manage.uptime(store, mid, "7d")  # nothing rolled up yet: all from raw rows
        done = await manage.rollup(store, now=now)
        assert done["rollups"] >= 95  # 4 days of hours: the first run reaches back to the retention horizon
        after = await manage.uptime(store, mid, "7d")
        from shared.manage.maintenance import COMPACT_LAG  # the hour that ended COMPACT_LAG ago is the last one

        assert after["rolled_up_until"] == hour_floor(now - COMPACT_LAG).isoformat()
        assert after["checks"] == before["checks"] == 576
        assert after["uptime_percent"] == before["uptime_percent"] == pytest.approx(83.333, abs=0.01)
        assert after["min_latency_ms"] == 100.0 and after["max_latency_ms"] == 102.0
        day = await manage.uptime(store, mid, "24h")
        assert 140 <= day["checks"] <= 150

        # running the rollup again changes nothing (an hour is recomputed whole)
        await store.set_kind_meta("_rollup", rolled_until=now - timedelta(days=2))
        await manage.rollup(store, now=now)
        assert (await manage.uptime(store, mid, "7d"))["checks"] == 576

        purged = await manage.purge(store, settings, now=now)
        assert purged["results"] == 1
        left = await store.query_results(mid, limit=10000)
        assert len(left) == 576  # recent results untouched
