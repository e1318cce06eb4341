"""Maintenance windows through the real functions, the real Azurite, the CLI in a real subprocess and the rendered
status page: CRUD (every answer checked against the OpenAPI document), 422s naming the field, 404, 409 on a
concurrent change, bad input that never changes what is stored, and the public "active and upcoming maintenance"
section that names public monitors only."""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers import add_monitor
from test_cli import monitors_cli
from test_openapi import NO_ID, Api

from shared.storage import Store
from shared.web import cache
from shared.windows import service

ONE, MANY = "/api/v1/maintenance/{window_id}", "/api/v1/maintenance"
BERLIN = {"name": "Patch day", "rrule": "FREQ=MONTHLY;BYDAY=1WE", "at": "02:00", "duration_minutes": 120,
          "timezone": "Europe/Berlin", "all": True}


@pytest.fixture
def api(settings) -> Api:
    return Api()


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear_cache()
    yield
    cache.clear_cache()


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def test_crud_of_the_berlin_example(api):
    made = await api("POST", MANY, 201, BERLIN)
    wid = made["id"]
    assert re.fullmatch(r"[0-9a-f]{32}", wid) and made["rrule"] == "FREQ=MONTHLY;BYDAY=1WE"
    start = datetime.fromisoformat(made["next"]["start"])
    local = start.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.weekday(), local.day <= 7, local.hour, local.minute) == (2, True, 2, 0)
    assert datetime.fromisoformat(made["next"]["end"]) - start == timedelta(hours=2)
    assert made["active_now"] is False and made["current"] is None

    assert (await api("GET", MANY, 200))["items"] == [made]
    assert await api("GET", ONE, 200, window_id=wid) == made
    changed = await api("PATCH", ONE, 200, {"name": "Patch Wednesday", "tags": ["db"], "all": False},
                        window_id=wid)
    assert (changed["name"], changed["tags"], changed["all"], changed["created_at"]) == (
        "Patch Wednesday", ["db"], False, made["created_at"])
    switched = await api("PATCH", ONE, 200, {"cron": "0 3 * * 6"}, window_id=wid)  # rrule/at dropped
    assert (switched["cron"], switched["rrule"], switched["at"], switched["duration_minutes"]) == (
        "0 3 * * 6", None, None, 120)
    await api("DELETE", ONE, 204, window_id=wid)
    for method in ("GET", "DELETE"):
        await api(method, ONE, 404, window_id=wid)
    await api("PATCH", ONE, 404, {"name": "x"}, window_id=NO_ID)
    await api("GET", ONE, 404, window_id="not-an-id")
    assert (await api("GET", MANY, 200))["items"] == []
    ours = {op for op in api.operations if op[0].startswith(MANY)}
    assert len(ours) == 5 and {op for op in api.called if op[0].startswith(MANY)} == ours


async def test_active_now_current_next_and_the_active_filter(api):
    t = now()
    running = await api("POST", MANY, 201, {"name": "Now", "start": iso(t - timedelta(hours=1)),
                                            "end": iso(t + timedelta(hours=1)), "all": True})
    later = await api("POST", MANY, 201, {"name": "Later", "start": iso(t + timedelta(days=2)),
                                          "end": iso(t + timedelta(days=2, hours=1)), "all": True})
    off = await api("POST", MANY, 201, {"name": "Off", "start": iso(t - timedelta(hours=1)),
                                        "end": iso(t + timedelta(hours=1)), "all": True, "enabled": False})
    assert running["active_now"] is True and running["next"] is None
    assert datetime.fromisoformat(running["current"]["end"]) == t + timedelta(hours=1)
    assert later["active_now"] is False and datetime.fromisoformat(later["next"]["start"]) == t + timedelta(days=2)
    assert (off["active_now"], off["current"], off["next"]) == (False, None, None)
    assert [w["name"] for w in (await api("GET", MANY, 200, active="true"))["items"]] == ["Now"]
    assert [w["name"] for w in (await api("GET", MANY, 200, active="FALSE"))["items"]] == ["Later", "Off"]
    assert len((await api("GET", MANY, 200, active=""))["items"]) == 3
    body = await api("GET", MANY, 422, active="maybe")
    assert body["error"]["details"][0]["field"] == "active"


@pytest.mark.parametrize(("body", "field", "words"), [
    ({**BERLIN, "rrule": "FREQ=MINUTELY"}, "rrule", "FREQ=MINUTELY is too frequent for a maintenance window"),
    ({**BERLIN, "timezone": "Europe/Atlantis"}, "timezone", "IANA"),
    ({**BERLIN, "duration_minutes": "120"}, "duration_minutes", "integer"),
    ({**BERLIN, "all": False}, "(body)", "monitors, tags, kinds, or all"),
    ({**BERLIN, "monitors": [NO_ID]}, "monitors.0", f"no monitor {NO_ID}"),
    ({**BERLIN, "id": NO_ID}, "id", "must not be given"),
    ({"name": "x", "start": "2026-05-01T10:00:00+02:00", "end": "2026-05-01T09:00:00+02:00", "all": True}, "end",
     "after start"),
    ({"name": "x", "start": "2026-05-01T10:00:00", "end": "2026-05-01T11:00:00Z", "all": True}, "start",
     "timezone"),
])
async def test_bad_windows_are_422_naming_the_field(api, body, field, words):
    error = (await api("POST", MANY, 422, body))["error"]
    assert error["code"] == "validation_error"
    assert any(d["field"] == field and words in d["message"] for d in error["details"]), error
    assert (await api("GET", MANY, 200))["items"] == []


async def test_bad_input_never_changes_what_is_stored(api, settings):
    async with Store.open(settings) as store:
        shop = await add_monitor(store, "http://127.0.0.1:9/", name="Shop")
    made = await api("POST", MANY, 201, {**BERLIN, "all": False, "monitors": [shop.id]})
    one = {"window_id": made["id"]}
    for expect, patch in ((422, {"rrule": "FREQ=SECONDLY"}), (422, {"monitors": [shop.id, NO_ID]}),
                          (422, {"duration_minutes": 0}), (422, {"id": NO_ID}), (422, {"colour": "red"}),
                          (422, {"start": "2026-01-01T00:00:00Z"}), (400, b"{nope"), (422, [1, 2])):
        await api("PATCH", ONE, expect, patch, **one)
    await api("POST", MANY, 400, b"{")
    assert await api("GET", ONE, 200, **one) == made
    assert (await api("GET", MANY, 200))["items"] == [made]


async def test_a_concurrent_change_is_409_and_loses_nothing(settings):
    """Another writer changes the window between this PATCH's read and its write: 409, and the other change stays."""
    async with Store.open(settings) as store:
        made = await service.create_window(store, BERLIN)

        class Racing:
            """The real store; a real second writer updates the window right after this request reads it."""

            def __getattr__(self, name: str) -> Any:
                return getattr(store, name)

            async def get_definition(self, table: str, def_id: str) -> dict[str, Any] | None:
                entity = await store.get_definition(table, def_id)
                await service.update_window(store, def_id, {"name": "Changed by the other writer"})
                return entity

        with pytest.raises(service.Duplicate) as caught:
            await service.update_window(Racing(), made["id"], {"duration_minutes": 60})  # type: ignore[arg-type]
        assert caught.value.status == 409 and "changed by someone else" in caught.value.message
        stored = await service.get_window(store, made["id"])
    assert (stored["name"], stored["duration_minutes"]) == ("Changed by the other writer", 120)


async def test_cli_add_list_show_update_delete(storage, tmp_path):
    env = {**os.environ}

    def cli(*args: str) -> Any:
        return monitors_cli(*args, cwd=tmp_path, env=env)

    made = cli("--json", "maintenance", "add", "name=Patch day", "rrule=FREQ=MONTHLY;BYDAY=1WE", "at=02:00",
               "duration_minutes=120", "timezone=Europe/Berlin", "tags=db,shop")
    assert made.returncode == 0, made.stderr
    window = json.loads(made.stdout)
    assert window["tags"] == ["db", "shop"]
    table = cli("maintenance", "list")
    assert table.returncode == 0, table.stderr
    header, _, row = table.stdout.splitlines()[:3]
    assert header.split()[:4] == ["id", "name", "enabled", "when"]
    assert window["id"] in row and "rrule FREQ=MONTHLY;BYDAY=1WE at 02:00 for 120 min" in row
    assert "Europe/Berlin" in row
    assert "tags db,shop" in row and window["next"]["start"] in row
    shown = cli("maintenance", "show", window["id"])
    assert "duration_minutes" in shown.stdout and "Europe/Berlin" in shown.stdout
    bad = cli("maintenance", "update", window["id"], "rrule=FREQ=MINUTELY")
    assert bad.returncode == 2 and "rrule: FREQ=MINUTELY is too frequent" in bad.stderr
    assert cli("maintenance", "update", window["id"], "duration_minutes=60").returncode == 0
    assert json.loads(cli("--json", "maintenance", "show", window["id"]).stdout)["duration_minutes"] == 60
    assert cli("maintenance", "delete", window["id"]).stdout.strip() == f"deleted {window['id']}"
    gone = cli("maintenance", "show", window["id"])
    assert gone.returncode == 1 and "no maintenance window" in gone.stderr


async def page(api: Api) -> str:
    html = await api("GET", "/api/status-page", 200)
    assert isinstance(html, str)
    return html


def maintenance_section(html: str) -> str:
    match = re.search(r"<h2>Active and upcoming maintenance</h2>\s*<div class=\"card maintenance\">(.*?)</div>\s*"
                      r"(?=<h2>|<footer>|<div class=\"card\">)", html, re.S)
    return match.group(1) if match else ""


async def test_status_page_shows_active_and_upcoming_maintenance_of_public_monitors_only(api, settings):
    t = now()
    async with Store.open(settings) as store:
        shop = await add_monitor(store, "http://127.0.0.1:9/shop", name="Shop", public=True, tags=["edge"])
        await add_monitor(store, "http://127.0.0.1:9/api", name="Public API", public=True, tags=["api"])
        secret = await add_monitor(store, "http://127.0.0.1:9/db", name="Secret DB", tags=["edge"])
    await api("POST", MANY, 201, {"name": "Edge upgrade", "description": "internal: ticket OPS-1234",
                                  "start": iso(t - timedelta(minutes=30)), "end": iso(t + timedelta(hours=1)),
                                  "tags": ["edge"]})
    await api("POST", MANY, 201, {"name": "Nightly DB vacuum", "cron": "0 3 * * *", "duration_minutes": 30,
                                  "monitors": [secret.id]})  # covers a private monitor only: not shown
    await api("POST", MANY, 201, {"name": "Kernel updates", "start": iso(t + timedelta(days=3)),
                                  "end": iso(t + timedelta(days=3, hours=2)), "kinds": ["website"]})
    await api("POST", MANY, 201, {"name": "Far away", "start": iso(t + timedelta(days=8)),
                                  "end": iso(t + timedelta(days=8, hours=1)), "all": True})
    await api("POST", MANY, 201, {**BERLIN, "name": "Berlin nights", "rrule": "FREQ=DAILY", "all": False,
                                  "monitors": [shop.id]})
    html = await page(api)
    section = maintenance_section(html)
    entries = re.findall(r'<div class="incident" data-state="([^"]+)">.*?<strong>(.*?)</strong>'
                         r'<span class="when">(.*?)</span><span class="affects">(.*?)</span>', section, re.S)
    by_name = {strong.split(": ", 1)[1]: (state, when, affects) for state, strong, when, affects in entries}
    assert next(iter(by_name)) == "Edge upgrade" and set(by_name) == {"Edge upgrade", "Kernel updates",
                                                                   "Berlin nights"}
    state, when, affects = by_name["Edge upgrade"]
    assert state == "In progress" and affects == "Affects: Shop"  # not the private monitor with the same tag
    assert f"{t - timedelta(minutes=30):%H:%M}" in when and when.endswith("UTC")
    assert by_name["Kernel updates"][0] == "Scheduled"
    assert by_name["Kernel updates"][2] == "Affects: Public API, Shop"
    berlin = by_name["Berlin nights"][1]
    assert re.search(r"\d\d:\d\d – .*\d\d:\d\d UTC \(02:00 – 04:00 Europe/Berlin\)", berlin), berlin
    assert "more in the next 7 days" in berlin
    for hidden in ("Secret DB", "Nightly DB vacuum", "OPS-1234", "Far away", secret.id):
        assert hidden not in html


async def test_status_page_without_windows_has_no_maintenance_section(api, settings):
    async with Store.open(settings) as store:
        await add_monitor(store, "http://127.0.0.1:9/", name=f"Shop {uuid.uuid4().hex[:4]}", public=True)
    html = await page(api)
    assert "maintenance" not in html.lower().split("</style>")[1]
