"""Parts lists against InvenTree, end to end: real Azurite, the InvenTree stand-in built from the
recorded responses (tests/inventree_fake.py), the real mail function on the real queue messages (the Functions
host's queue listener from tests/test_email.py) and a real SMTP server (tests/smtp_server.py).

Stock in the fixtures (unallocated_stock unless noted): R-10k 0603 1400 · C-100nF 0603 180 · C-100nF 0402 1000 ·
STM32F103C8T6 25 (35 in stock, 10 allocated) · USB-C Receptacle 16P 0 · LED red 0805 300 · Widget PCB rev A 7
(inactive) / rev B 40 · Enclosure ABS 100x60x25 12 · Screw M3x8 650 · Widget rev 1 (inactive) / rev 2, whose BOM
is R ×4, C-0603 ×2, MCU ×1, USB-C ×1, PCB rev B ×1, Screw ×8, LED ×1 (optional).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from inventree_fake import FIRST_SESSION, RECORDED_BASE, TOKEN, FakeInvenTree, inventree, load  # noqa: F401
from test_email import Host, Run

from monitors import parse_spec, parts
from monitors.base import CheckResult
from shared import manage, notify
from shared.clients import inventree as inventree_client
from shared.events import EventType
from shared.settings import SettingsError, get_settings
from shared.storage import EVENTS_QUEUE, POISON_QUEUE, Conflict, Store
from tests.smtp_server import SmtpServer, smtp, smtp_ca  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
ALICE, BOB, OPS = "alice@example.org", "bob@example.net", "ops@example.org"
MAX_DEQUEUE = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]["maxDequeueCount"]
SENSOR = [{"ipn": "RES-10K-0603", "quantity": 4}, {"name": "STM32F103C8T6", "quantity": 1},
          {"pk": 8, "quantity": 1}]  # R ×4 (1400), MCU ×1 (25), Widget PCB rev B ×1 (40)


# ------------------------------------------------------------------------------------------------ helpers


async def setup(env, smtp: SmtpServer, fake: FakeInvenTree, **extra: str) -> tuple[Any, Store]:
    env(**{**smtp.settings(), **fake.settings(), "ADMIN_EMAIL_RECIPIENTS": OPS, **extra})
    settings = get_settings()
    return settings, Store.open(settings)


async def add(store: Store, name: str = "Sensor board", **spec: Any) -> str:
    """Create a parts monitor the way the API does."""
    view = await manage.create_monitor(store, {"kind": "parts", "name": name, "recipients": [ALICE], **spec})
    return view["id"]


async def run(store: Store, settings: Any, mid: str) -> dict[str, Any]:
    return await manage.run_monitor(store, settings, mid)


async def deliver(storage: str) -> list[Run]:
    return await Host(storage).drain(EVENTS_QUEUE, "send_event_email")


def reports(smtp: SmtpServer, to: str = ALICE) -> list[Any]:
    return [m for m in smtp.to(to) if m.subject.startswith("[PARTS]")]


async def event_rows(store: Store, mid: str, type_: EventType | None = None) -> list[dict[str, Any]]:
    rows = await store.list_events(limit=100, monitor_id=mid)
    rows = [r for r in rows if type_ is None or r["type"] == type_.value]
    return sorted(rows, key=lambda r: r["occurred_at"])


async def last_hash(store: Store, mid: str) -> str | None:
    row = await store.get_state("parts", mid)
    return row.data.get("last_hash") if row else None


class PartsTable(HTMLParser):
    """The rows of <table id="parts">: each cell's own text, the text of its <span class=…> and its link."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: list[list[dict[str, Any]]] = []
        self._inside = False
        self._row: list[dict[str, Any]] | None = None
        self._cell: dict[str, Any] | None = None
        self._span: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and dict(attrs).get("id") == "parts":
            self._inside = True
        elif self._inside and tag == "tr":
            self._row = []
        elif self._row is not None and tag in ("td", "th"):
            self._cell = {"text": "", "href": None, "spans": {}}
        elif self._cell is not None and tag == "span":
            self._span = dict(attrs).get("class") or ""
            self._cell["spans"][self._span] = ""
        elif self._cell is not None and tag == "a":
            self._cell["href"] = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._span = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._cell["text"] = self._cell["text"].strip()
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "table":
            self._inside = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None and self._span is not None:
            self._cell["spans"][self._span] += data
        elif self._cell is not None:
            self._cell["text"] += data


def html_table(html: str) -> tuple[list[str], list[dict[str, Any]]]:
    table = PartsTable(html)
    header = [c["text"] for c in table.rows[0]]
    rows = []
    for cells in table.rows[1:]:
        part = cells[0]
        rows.append({"part": part["text"], "ipn": part["spans"].get("ipn", ""), "note": part["spans"].get("note", ""),
                     "href": part["href"], "version": cells[1]["text"], "required": cells[2]["text"],
                     "available": cells[3]["text"], "missing": cells[4]["text"]})
    return header, rows


def text_table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Part ") and "Required" in line)
    assert set(lines[start + 1].replace(" ", "")) == {"-"}  # the rule under the header
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return re.split(r"\s{2,}", lines[start].strip()), rows


# ----------------------------------------------------------------------------------------- the stand-in


def _replay(fake: FakeInvenTree, entry: dict[str, Any]) -> None:
    req = urllib.request.Request(fake.base + entry["path_with_query"], headers={"Accept": "application/json"})
    auth = entry["auth"]
    if auth.startswith("Authorization: Token 0000"):
        req.add_header("Authorization", "Token " + "0" * 40)
    elif auth.startswith("Authorization: Token"):
        req.add_header("Authorization", f"Token {TOKEN}")
    elif auth.startswith("HTTP Basic"):
        req.add_header("Authorization", "Basic YWRtaW46cGFzc3dvcmQ=")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            status, body, headers = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as error:
        status, body, headers = error.code, error.read(), error.headers
    recorded = json.loads(json.dumps(load(entry["file"])).replace(RECORDED_BASE, fake.base))
    assert (status, json.loads(body)) == (entry["status"], recorded), entry["file"]
    if "www_authenticate" in entry:
        assert headers["WWW-Authenticate"] == entry["www_authenticate"]


def test_the_fake_answers_like_the_recorded_server(inventree):
    """Every recorded request, replayed against the stand-in: same status, same body, same auth challenge. The
    first session's against a stand-in holding what that server held (pk 1–12), the later ones against the usual
    one (pk 1–128)."""
    index = load("index.json")
    first = FakeInvenTree(session="first")
    first.start()
    try:
        for entry in index[:FIRST_SESSION]:
            _replay(first, entry)
    finally:
        first.stop()
    for entry in index[FIRST_SESSION:]:
        _replay(inventree, entry)
    assert len(index) >= 134 and FIRST_SESSION == 37
    assert len(inventree.parts) == 128 and len(first.parts) == 12


# ------------------------------------------------------------------------------------------- scenarios


async def test_all_available_sends_one_report_and_confirms_its_hash(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree)
    async with store:
        mid = await add(store, parts=SENSOR, kits=5)
        out = await run(store, settings, mid)
        assert (out["outcome"], out["status"], out["events"]) == ("up", "OK", ["PARTS_REPORT"])
        assert (out["lines"], out["lines_short"], out["total_missing"], out["kits_buildable"], out["critical"],
                out["warnings"]) == (3, 0, 0.0, 25, False, 0)
        assert await last_hash(store, mid) is None  # nothing confirmed before SMTP accepted it
        assert await deliver(storage) == [Run("ok", 1)]

        (mail,) = reports(smtp)
        assert mail.subject == "[PARTS] Sensor board ×5: all 3 parts available, 25 kits buildable"
        (event,) = await event_rows(store, mid, EventType.PARTS_REPORT)
        assert event["delivery"] == "sent" and event["severity"] == "info"
        assert await last_hash(store, mid) == json.loads(event["details"])["hash"]

        # token auth on every request; the lookups by IPN, exact name and pk, as paged list queries
        assert {a for _, _, a in inventree.requests} == {f"Token {TOKEN}"}
        assert sorted(inventree.paths()) == ["/api/part/8/", "/api/part/?IPN_regex=%5E(RES-10K-0603)$&limit=100",
                                             "/api/part/?name_regex=%5E(STM32F103C8T6)$&limit=100"]


async def test_one_part_short_and_the_available_field_setting(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree)
    async with store:
        mid = await add(store, parts=SENSOR, kits=30)
        out = await run(store, settings, mid)
        assert (out["outcome"], out["status"], out["lines_short"], out["total_missing"], out["kits_buildable"]) \
            == ("down", "SHORT", 1, 5.0, 25)  # MCU: 30 needed, 25 unallocated (35 in stock, 10 allocated)
        assert json.loads(out["detail"])["short"] == [
            {"part": "STM32F103C8T6", "pk": 4, "version": "", "required": 30.0, "available": 25.0, "missing": 5.0,
             "status": "short"}]
        await deliver(storage)
        (mail,) = reports(smtp)
        assert mail.subject == "[PARTS] Sensor board ×30: 1 part short, 25 kits buildable"
        header, rows = text_table(mail.part("plain"))
        assert rows[0] == ["STM32F103C8T6", "-", "30", "25", "5", "short by 5"]

        env(INVENTREE_AVAILABLE_FIELD="in_stock")  # allocated units count as available now
        out = await run(store, get_settings(), mid)
        assert (out["status"], out["lines_short"], out["kits_buildable"]) == ("OK", 0, 35)
        await deliver(storage)
        assert reports(smtp)[-1].subject == "[PARTS] Sensor board ×30: all 3 parts available, 35 kits buildable"
        assert "Available:           in stock in InvenTree" in reports(smtp)[-1].part("plain").splitlines()


async def test_kits_buildable_follow_the_stock(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree)
    async with store:
        mid = await add(store, parts=[{"pk": 4, "quantity": 1}, {"name": "Widget PCB", "version": "B", "quantity": 1}],
                        kits=50)
        seen = []
        for stock in (None, {"pk": 4, "in_stock": 45}, {"pk": 4, "in_stock": 70}, {"pk": 8, "in_stock": 55}):
            if stock:
                inventree.set_stock(**stock)
            out = await run(store, settings, mid)
            seen.append((out["lines_short"], out["total_missing"], out["kits_buildable"]))
            await deliver(storage)
        # MCU 25 → 35 → 60 unallocated (10 stay allocated); PCB rev B 40 → 55
        assert seen == [(2, 35.0, 25), (2, 25.0, 35), (1, 10.0, 40), (0, 0.0, 55)]
        assert [m.subject.split(": ", 1)[1] for m in reports(smtp)] == [
            "2 parts short, 25 kits buildable", "2 parts short, 35 kits buildable",
            "1 part short, 40 kits buildable", "all 2 parts available, 55 kits buildable"]
        history = list(reversed(await store.query_results(mid)))
        assert [r["kits_buildable"] for r in history] == [25, 35, 40, 55]
        assert [r["outcome"] for r in history] == ["down", "down", "down", "up"]


async def test_on_change_sends_once_and_stays_quiet_until_the_shortage_changes(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree)
    async with store:
        mid = await add(store, parts=SENSOR, kits=30)  # MCU short by 5
        for _ in range(3):
            await run(store, settings, mid)
            await deliver(storage)
        assert len(reports(smtp)) == 1

        inventree.set_stock(1, in_stock=1000)  # resistors: 1400 → 1000, still far above the 120 needed
        inventree.set_stock(8, in_stock=31)  # PCBs: 40 → 31, still above the 30 needed
        out = await run(store, settings, mid)
        assert out["events"] == [] and out["kits_buildable"] == 25
        await deliver(storage)
        assert len(reports(smtp)) == 1

        inventree.set_stock(4, in_stock=30)  # MCU: 20 unallocated now, short by 10
        assert (await run(store, settings, mid))["events"] == ["PARTS_REPORT"]
        await deliver(storage)
        assert [m.subject.split(": ", 1)[1] for m in reports(smtp)] == ["1 part short, 25 kits buildable",
                                                                       "1 part short, 20 kits buildable"]
        etag = (await store.get_state("parts", mid)).etag
        assert (await run(store, settings, mid))["events"] == []
        assert (await store.get_state("parts", mid)).etag == etag  # a quiet run does not even write the state
        assert len(await store.query_results(mid)) == 6  # every run is in the history all the same


async def test_always_sends_every_run(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree)
    async with store:
        mid = await add(store, parts=SENSOR, kits=5, notify_condition="always", recipients=[ALICE, BOB])
        for _ in range(3):
            assert (await run(store, settings, mid))["events"] == ["PARTS_REPORT"]
            await deliver(storage)
        assert len(reports(smtp, ALICE)) == len(reports(smtp, BOB)) == 3
        assert len({m.message["Message-ID"] for m in reports(smtp, ALICE)}) == 3  # three reports, not a resend


@pytest.mark.parametrize("refusal", ["unknown token", "no permission"])
async def test_inventree_refusing_the_token_is_a_checker_error_for_the_operator(storage, env, smtp, inventree,
                                                                               refusal, caplog):
    settings, store = await setup(env, smtp, inventree)
    async with store:
        mid = await add(store, parts=SENSOR, kits=5)
        if refusal == "unknown token":
            inventree.token = "rotated-" + TOKEN[8:]
        else:
            inventree.forbidden = True
        out = await run(store, settings, mid)
        status = 401 if refusal == "unknown token" else 403
        assert (out["outcome"], out["status"], out["critical"]) == ("error", "ERROR", True)
        assert out["error"].startswith(f"InvenTree refused the API token set in INVENTREE_TOKEN: HTTP {status} ")
        assert sorted(out["events"]) == ["MONITOR_ERROR", "PARTS_REPORT"]
        paths = inventree.paths()
        assert len(paths) == len(set(paths)) <= 3  # refused is final: no retries
        await deliver(storage)

        (notice,) = smtp.to(OPS)
        assert notice.subject.startswith(f"[CHECKER ERROR] Sensor board: InvenTree refused the API token set in "
                                         f"INVENTREE_TOKEN: HTTP {status}")
        (report,) = reports(smtp)  # the audience hears that there is no data, not why
        assert report.subject == "[PARTS] Sensor board ×5: InvenTree refused access, no data"
        assert "operator has been notified" in report.part("plain") and str(status) not in report.part("plain")
        assert "InvenTree refused access: this run has no availability data." in report.part("plain").splitlines()

        assert (await run(store, settings, mid))["events"] == []  # still refused: nobody is told twice
        inventree.token, inventree.forbidden = TOKEN, False
        out = await run(store, settings, mid)
        assert (out["status"], sorted(out["events"])) == ("OK", ["MONITOR_ERROR_CLEARED", "PARTS_REPORT"])
        await deliver(storage)
        assert [m.subject for m in smtp.to(OPS)][-1] == "[CHECKER OK] Sensor board: the checker works again"
        assert reports(smtp)[-1].subject == "[PARTS] Sensor board ×5: all 3 parts available, 25 kits buildable"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged and all(TOKEN not in m.raw.decode() for m in smtp.messages)


async def test_inventree_down_is_retried_then_the_operator_is_told(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree)
    async with store:
        mid = await add(store, parts=SENSOR, kits=5)
        inventree.fail_next(2, status=503)  # a blip: the third try of the first request gets through
        out = await run(store, settings, mid)
        assert (out["outcome"], out["kits_buildable"]) == ("up", 25)
        assert len(inventree.paths()) == 3 + 2

        inventree.stop()  # connection refused, on every try
        out = await run(store, settings, mid)
        assert (out["outcome"], out["status"], out["critical"]) == ("error", "ERROR", True)
        assert re.fullmatch(rf"InvenTree at {inventree.base} unreachable after 3 tries: cannot connect to "
                            rf"127\.0\.0\.1:{inventree.port}: .*", out["error"])
        await deliver(storage)
        (notice,) = smtp.to(OPS)
        assert notice.subject.startswith("[CHECKER ERROR] Sensor board: InvenTree at ")
        assert "unreachable after 3 tries" in notice.part("plain")
        assert reports(smtp)[-1].subject == "[PARTS] Sensor board ×5: InvenTree unreachable, no data"

        inventree.start()  # a server that answers 503 for good, then one that does not answer in time
        inventree.reset_counters()
        inventree.fail_next(100, status=503)
        mid2 = await add(store, name="Other board", parts=[{"pk": 4, "quantity": 1}])
        out = await run(store, settings, mid2)
        assert out["outcome"] == "error" and out["error"].endswith("unreachable after 3 tries: HTTP 503 503 Service "
                                                                   "Unavailable")
        assert inventree.paths() == ["/api/part/4/"] * 3
        inventree.fail_next(0)
        env(INVENTREE_TIMEOUT_SECONDS="0.2")
        inventree.delay = 0.5
        out = await run(store, get_settings(), mid2)
        assert out["error"].endswith("unreachable after 3 tries: no answer within 0.2 s")


async def test_smtp_failing_leaves_last_hash_so_the_next_run_sends_again(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree, DELIVERY_RETRY_MAX_SECONDS="1")
    async with store:
        mid = await add(store, parts=SENSOR, kits=30)
        smtp.stop()
        await run(store, settings, mid)
        runs = await deliver(storage)
        assert [r.outcome for r in runs] == ["ok"]  # tried, and put back for a later try: never poisoned
        assert await last_hash(store, mid) is None

        smtp.start()
        assert (await run(store, settings, mid))["events"] == ["PARTS_REPORT"]  # the same report, again
        for _ in range(40):  # the put-back report and the new one: the newer makes the older moot
            await deliver(storage)
            if reports(smtp) and await Host(storage).count(EVENTS_QUEUE) == 0:
                break
            await asyncio.sleep(0.25)
        (mail,) = reports(smtp)  # one report, not two
        assert mail.subject == "[PARTS] Sensor board ×30: 1 part short, 25 kits buildable"
        sent = (await event_rows(store, mid, EventType.PARTS_REPORT))[-1]
        assert await last_hash(store, mid) == json.loads(sent["details"])["hash"]
        assert (await run(store, settings, mid))["events"] == []

        # refused for the only recipient: not confirmed; accepted for one of two: confirmed
        smtp.reject(ALICE)
        lonely = await add(store, name="Lonely", parts=SENSOR, kits=30)
        await run(store, settings, lonely)
        await deliver(storage)
        assert await last_hash(store, lonely) is None
        assert (await run(store, settings, lonely))["events"] == ["PARTS_REPORT"]
        await deliver(storage)
        pair = await add(store, name="Pair", parts=SENSOR, kits=30, recipients=[ALICE, BOB])
        await run(store, settings, pair)
        await deliver(storage)
        assert await last_hash(store, pair) is not None
        assert (await run(store, settings, pair))["events"] == []
        assert await Host(storage).count(POISON_QUEUE) == 0  # nothing crashed: nothing poisoned


async def test_an_smtp_outage_across_three_runs_sends_one_report_when_it_ends(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree, DELIVERY_RETRY_MAX_SECONDS="1")
    async with store:
        mid = await add(store, parts=SENSOR, kits=30)
        smtp.stop()
        for _ in range(3):  # each run: the report was never e-mailed, so it is due again
            assert (await run(store, settings, mid))["events"] == ["PARTS_REPORT"]
            await deliver(storage)
        assert reports(smtp) == []
        smtp.start()
        for _ in range(60):
            await deliver(storage)
            if reports(smtp) and await Host(storage).count(EVENTS_QUEUE) == 0:
                break
            await asyncio.sleep(0.25)
        (mail,) = reports(smtp)
        assert mail.subject == "[PARTS] Sensor board ×30: 1 part short, 25 kits buildable"
        deliveries = sorted(r["delivery"] for r in await event_rows(store, mid, EventType.PARTS_REPORT))
        assert deliveries == ["sent", "superseded", "superseded"]


async def test_global_switch_off_sends_nothing_and_confirms_nothing(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree, GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="false")
    async with store:
        mid = await add(store, parts=SENSOR, kits=5)
        await run(store, settings, mid)
        await deliver(storage)
        assert [e["delivery"] for e in await event_rows(store, mid)] == ["disabled"]
        assert await last_hash(store, mid) is None and smtp.messages == []
        env(GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="true")
        assert (await run(store, get_settings(), mid))["events"] == ["PARTS_REPORT"]
        await deliver(storage)
        assert len(reports(smtp)) == 1


async def test_not_configured_is_a_checker_error(storage, env, smtp, inventree, monkeypatch):
    settings, store = await setup(env, smtp, inventree)
    monkeypatch.delenv("INVENTREE_URL")
    get_settings.cache_clear()
    async with store:
        mid = await add(store, parts=SENSOR)
        out = await run(store, get_settings(), mid)
        assert (out["outcome"], out["error"]) == ("error", "INVENTREE_URL is not set")
        await deliver(storage)
        assert smtp.to(OPS)[0].subject == "[CHECKER ERROR] Sensor board: INVENTREE_URL is not set"
        assert inventree.requests == []


async def test_names_and_ipns_shared_by_revisions_are_ambiguous_and_say_which(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree)
    async with store:
        mid = await add(store, name="PCB check", parts=[
            {"name": "Widget PCB", "quantity": 1},  # revisions A and B
            {"ipn": "pcb-widget", "quantity": 1},  # the IPN is shared by both revisions too
            {"name": "Widget PCB", "version": "A", "quantity": 1},  # found, but inactive
            {"name": "widget pcb", "version": "b", "quantity": 1},  # exact name in another case: still found
            {"name": "Widget PCB", "version": "C", "quantity": 1},
            {"name": "Gizmo", "quantity": 1}])
        out = await run(store, settings, mid)
        assert (out["lines"], out["lines_short"], out["warnings"]) == (6, 4, 5)
        await deliver(storage)
        (mail,) = reports(smtp)
        assert mail.subject == "[PARTS] PCB check ×1: 4 parts short, 0 kits buildable, 5 warnings"
        text = mail.part("plain")
        both = "(pk 7 Widget PCB rev A (inactive); pk 8 Widget PCB rev B); give its version, or its pk"
        assert f"  - Widget PCB: 2 parts match in InvenTree {both}" in text
        assert f"  - IPN pcb-widget: 2 parts match in InvenTree {both}" in text
        assert "  - pk 7 Widget PCB rev A is inactive in InvenTree" in text
        assert "  - Widget PCB rev C: no such revision in InvenTree (there: A, B)" in text
        assert "  - Gizmo: not found in InvenTree" in text
        _, rows = html_table(mail.part("html"))
        assert [(r["part"], r["version"], r["available"], r["note"]) for r in rows] == [
            ("Widget PCB", "-", "-", "ambiguous: see warnings"),
            ("IPN pcb-widget", "-", "-", "ambiguous: see warnings"),
            ("Widget PCB rev C", "C", "-", "not found in InvenTree"), ("Gizmo", "-", "-", "not found in InvenTree"),
            ("Widget PCB", "A", "7", "inactive"), ("Widget PCB", "B", "40", "")]


async def test_assembly_mode_takes_the_bom_from_inventree(storage, env, smtp, inventree, monkeypatch):
    settings, store = await setup(env, smtp, inventree)
    async with store:
        mid = await add(store, name="Widget", assembly={"name": "Widget", "version": "2"}, kits=10)
        out = await run(store, settings, mid)
        assert (out["lines"], out["lines_short"], out["total_missing"], out["kits_buildable"]) == (7, 1, 10.0, 0)
        await deliver(storage)
        (mail,) = reports(smtp)
        assert mail.subject == "[PARTS] Widget ×10: 1 part short, 0 kits buildable"
        _, rows = html_table(mail.part("html"))
        assert [(r["part"], r["required"], r["available"], r["missing"]) for r in rows] == [
            ("USB-C Receptacle 16P", "10", "0", "10"), ("R-10k 0603", "40", "1400", "0"),
            ("C-100nF 0603", "20", "1180", "0"), ("STM32F103C8T6", "10", "25", "0"), ("Widget PCB", "10", "40", "0"),
            ("Screw M3x8", "80", "650", "0"), ("LED red 0805", "10", "300", "0")]  # C: 180 + 1000 of its substitute
        assert [r["note"] for r in rows] == ["short by 10; J1", "R1, R2, R3, R4", "incl. 1000 of substitutes; C1, C2",
                                             "U1", "PCB1", "", "D1; optional"]
        assert "BOM of pk 12 Widget rev 2" in mail.part("plain")
        # the assembly, its BOM lines, every part in it with its stock: three requests
        assert sorted(inventree.paths()) == ["/api/bom/?part=12&limit=100", "/api/part/?in_bom_for=12&limit=100",
                                             "/api/part/?name_regex=%5E(Widget)$&limit=100"]

        # the older revision's BOM: its PCB is the inactive rev A, and the assembly itself is inactive
        old = await add(store, name="Widget rev 1", assembly={"ipn": "ASM-WIDGET", "version": "1"}, kits=10)
        out = await run(store, settings, old)
        assert (out["lines"], out["lines_short"], out["total_missing"], out["kits_buildable"]) == (4, 1, 3.0, 7)
        assert json.loads(out["detail"])["warnings"] == ["pk 11 Widget rev 1 is inactive in InvenTree",
                                                         "pk 7 Widget PCB rev A is inactive in InvenTree"]

        # optional lines left out; no revision given; no such part
        lean = await add(store, name="Lean", assembly={"pk": 12}, kits=10, include_optional=False)
        assert (await run(store, settings, lean))["lines"] == 6
        vague = await add(store, name="Vague", assembly={"name": "Widget"})
        out = await run(store, settings, vague)  # an assembly that is not one part: an ERROR, never "OK, 0 lines"
        assert (out["outcome"], out["status"], out["lines"], out["critical"]) == ("error", "ERROR", None, True)
        assert out["error"] == ("assembly Widget: 2 parts match in InvenTree (pk 11 Widget rev 1 (inactive); pk 12 "
                                "Widget rev 2); give its version, or its pk")
        gone = await add(store, name="Gone", assembly={"pk": 999999})
        out = await run(store, settings, gone)
        assert (out["outcome"], out["error"]) == ("error", "assembly pk 999999: no such part in InvenTree")

        # a BOM longer than one page is read page by page; an unpaginated answer is taken whole
        monkeypatch.setattr(inventree_client, "PAGE_SIZE", 3)
        inventree.reset_counters()
        assert (await run(store, settings, lean))["lines"] == 6
        assert inventree.paths("/api/bom/") == ["/api/bom/?part=12&limit=3", "/api/bom/?part=12&limit=3&offset=3",
                                                "/api/bom/?part=12&limit=3&offset=6"]
        assert inventree.paths("/api/part/?") == ["/api/part/?in_bom_for=12&limit=3",
                                                  "/api/part/?in_bom_for=12&limit=3&offset=3",
                                                  "/api/part/?in_bom_for=12&limit=3&offset=6"]  # 8 parts: C's substitute
        monkeypatch.setattr(inventree_client, "PAGE_SIZE", 0)  # limit=0: InvenTree answers a plain array
        inventree.reset_counters()
        assert (await run(store, settings, mid))["lines"] == 7
        assert inventree.paths("/api/bom/") == ["/api/bom/?part=12&limit=0"]


async def test_an_eight_line_report_renders_in_html_and_text(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree, PUBLIC_BASE_URL="https://monitor.example.org")
    eight = [{"ipn": "RES-10K-0603", "quantity": 4}, {"name": "C-100nF 0603", "quantity": 2},
             {"ipn": "LED-RED-0805", "quantity": 1}, {"pk": 4, "quantity": 1},
             {"name": "USB-C Receptacle 16P", "quantity": 1}, {"name": "Widget PCB", "version": "B", "quantity": 1},
             {"ipn": "ENC-ABS-100", "quantity": 1}, {"name": "Screw M3x8", "quantity": 4}]
    async with store:
        mid = await add(store, name='Widget "A&B" <build>', parts=eight, kits=20, public=True)
        await run(store, settings, mid)
        await deliver(storage)
    (mail,) = reports(smtp)
    assert mail.subject == '[PARTS] Widget "A&B" <build> ×20: 2 parts short, 0 kits buildable'
    expected = [  # shortfalls first, then the list's order
        ("USB-C Receptacle 16P", "-", "20", "0", "20", "short by 20", 5, "CON-USBC-16P"),
        ("Enclosure ABS 100x60x25", "-", "20", "12", "8", "short by 8", 9, "ENC-ABS-100"),
        ("R-10k 0603", "-", "80", "1400", "0", "", 1, "RES-10K-0603"),
        ("C-100nF 0603", "-", "40", "180", "0", "", 2, "CAP-100N-0603"),
        ("LED red 0805", "-", "20", "300", "0", "", 6, "LED-RED-0805"),
        ("STM32F103C8T6", "-", "20", "25", "0", "", 4, "MCU-STM32F103"),
        ("Widget PCB", "B", "20", "40", "0", "", 8, "PCB-WIDGET"),
        ("Screw M3x8", "-", "80", "650", "0", "", 10, "SCR-M3X8")]

    html = mail.part("html")
    header, rows = html_table(html)
    assert header == ["Part", "Version", "Required", "Available", "Missing"]
    assert [(r["part"], r["version"], r["required"], r["available"], r["missing"], r["note"]) for r in rows] == \
        [e[:6] for e in expected]
    # the part's page in InvenTree's web UI (where the live server redirects /part/<pk>/ to)
    assert [r["href"] for r in rows] == [f"{inventree.base}/web/part/{e[6]}/" for e in expected]
    assert [r["ipn"] for r in rows] == [e[7] for e in expected]
    assert "Widget &#34;A&amp;B&#34; &lt;build&gt;" in html and "<build>" not in html  # autoescaped
    status_page = f"https://monitor.example.org/api/status-page#m-{mid}"  # public: its place on the status page
    assert f'<a href="{status_page}"' in html and "/api/v1/" not in html

    text = mail.part("plain")
    header, rows = text_table(text)
    assert header == ["Part", "Version", "Required", "Available", "Missing", "Note"]
    assert rows == [list(e[:5]) + ([e[5]] if e[5] else []) for e in expected]
    assert "`" not in text and "Inventree" not in text and f"Status page: {status_page}" in text.splitlines()
    assert text.splitlines()[0] == 'Widget "A&B" <build> ×20: 2 parts short, 0 kits buildable'
    for line in ("Kits wanted:         20", "Kits buildable now:  0", "Lines short:         2 of 8",
                 "Total missing:       28", "Source:              parts list",
                 f"  Enclosure ABS 100x60x25: {inventree.base}/web/part/9/",
                 f"  Widget PCB rev B: {inventree.base}/web/part/8/"):
        assert line in text.splitlines(), line


async def test_lookups_are_batched_shared_and_bounded(storage, env, smtp, inventree):
    settings, store = await setup(env, smtp, inventree)
    fifty = [{"pk": pk, "quantity": 1} for pk in [*range(1, 13), *range(900, 938)]]  # 12 parts, 38 unknown
    inventree.delay = 0.05
    async with store:
        mid = await add(store, name="Fifty", parts=fifty)
        started = time.perf_counter()
        out = await run(store, settings, mid)
        took = time.perf_counter() - started
        assert (out["lines"], out["lines_short"], out["warnings"]) == (50, 38 + 2, 38 + 2)  # + USB-C, Widget rev 1
        # (none in stock); the warnings: 38 unknown, 2 inactive
        assert len(inventree.paths()) == 50 and inventree.max_in_flight == parts.MAX_IN_FLIGHT
        assert took < 50 * inventree.delay  # not one after the other

        # two monitors in one run share their lookups: every part is asked for once
        await add(store, name="Again", parts=[{"pk": 4, "quantity": 2}, {"ipn": "RES-10K-0603", "quantity": 1},
                                               {"pk": 900, "quantity": 1}])
        inventree.reset_counters()
        summary = await manage.run_kind(store, settings, "parts")
        assert summary["checked"] == 2
        paths = inventree.paths()
        assert len(paths) == len(set(paths)) == 51


async def test_the_timer_runs_a_cron_scheduled_list_at_its_slots(storage, env, smtp, inventree):
    from apphelp import functions
    from azure.functions.timer import TimerRequest

    from shared.engine import run_kind

    settings, store = await setup(env, smtp, inventree)
    async with store:
        mid = await add(store, parts=SENSOR, cron="0 7 * * 1-5")  # 07:00 UTC on weekdays
        await functions()["parts_timer"](TimerRequest())  # the real timer function: a new list is due at once
        assert len(await store.query_results(mid)) == 1
        monday = datetime(2030, 1, 7, 6, 58, tzinfo=UTC)
        checked = []
        for minute in range(6):  # 06:58 … 07:03 on a Monday: the 07:00 slot only
            before = len(inventree.paths())
            await run_kind(store, settings, "parts", trigger="timer", now=monday + timedelta(minutes=minute))
            checked.append(len(inventree.paths()) > before)
        assert checked == [False, False, True, False, False, False]


def test_inventree_settings_are_checked_and_normalised(env, monkeypatch):
    env(INVENTREE_URL="https://inventree.example.com/api/")
    assert get_settings().inventree_url == "https://inventree.example.com"  # links and /api/… from the base
    assert get_settings().inventree_available_field == "unallocated_stock"
    for name, value in (("INVENTREE_URL", "inventree.example.com"), ("INVENTREE_AVAILABLE_FIELD", "stock"),
                        ("INVENTREE_TIMEOUT_SECONDS", "0")):
        env(**{name: value})
        with pytest.raises(SettingsError, match=name):
            get_settings()
        monkeypatch.delenv(name)
    monkeypatch.delenv("INVENTREE_URL", raising=False)
    get_settings.cache_clear()
    assert get_settings().inventree_url is None  # all optional: the app starts without InvenTree


# ------------------------------------------------------------------------------------------ management


async def test_management_through_the_api_and_results_with_summaries(storage, env, smtp, inventree):
    from apphelp import call

    env(**inventree.settings())
    status, made = await call("monitors", "POST", "v1/monitors", {
        "kind": "parts", "name": "Widget", "assembly": {"name": "Widget", "version": "2"}, "kits": 10,
        "cron": "0 7 * * 1-5", "recipients": [ALICE], "notify_condition": "always"})
    assert status == 201, made
    mid = made["id"]
    assert (made["kits"], made["notify_condition"], made["state"]["status"]) == (10, "always", "PENDING")

    status, body = await call("monitors", "POST", "v1/monitors", {
        "kind": "parts", "name": "Bad", "parts": [{"pk": 1, "ipn": "X", "quantity": 1}, {"name": "Y", "quantity": -1}],
        "recipients": ["not-an-address"], "cron": "every day", "notify_condition": "sometimes", "kits": 0})
    assert status == 422
    fields = {d["field"] for d in body["error"]["details"]}
    assert {"parts.0", "parts.1.quantity", "recipients.0", "cron", "notify_condition", "kits"} <= fields
    status, body = await call("monitors", "POST", "v1/monitors", {"kind": "parts", "name": "Neither"})
    assert status == 422 and "either parts" in body["error"]["details"][0]["message"]

    route = {"monitor_id": mid}
    status, body = await call("monitor", "PATCH", f"v1/monitors/{mid}", {"parts": [{"pk": 4, "quantity": 1}]},
                              route=route)
    assert status == 422  # a list and an assembly: one of the two
    status, body = await call("monitor", "PATCH", f"v1/monitors/{mid}", {"kits": 30, "enabled": False}, route=route)
    assert status == 200 and (body["kits"], body["enabled"]) == (30, False)

    status, ran = await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route=route)  # run now, even disabled
    assert status == 200 and (ran["lines"], ran["lines_short"], ran["kits_buildable"]) == (7, 2, 0)
    status, page = await call("monitor_results", "GET", f"v1/monitors/{mid}/results", route=route)
    (row,) = page["items"]
    assert {k: row[k] for k in ("outcome", "status", "lines", "lines_short", "total_missing", "kits_buildable",
                                "critical", "warnings")} == {
        "outcome": "down", "status": "SHORT", "lines": 7, "lines_short": 2, "total_missing": 35.0,
        "kits_buildable": 0, "critical": False, "warnings": 0}  # USB-C short by 30, MCU by 5
    assert [s["part"] for s in json.loads(row["detail"])["short"]] == ["STM32F103C8T6", "USB-C Receptacle 16P"]

    status, events = await call("events", "GET", "v1/events", params={"monitor_id": mid})
    (event,) = events["items"]
    assert event["type"] == "PARTS_REPORT" and event["details"]["summary"] == "2 parts short, 0 kits buildable"
    assert (await call("monitor", "DELETE", f"v1/monitors/{mid}", route=route))[0] == 204
    assert (await call("monitor", "GET", f"v1/monitors/{mid}", route=route))[0] == 404


def test_management_through_the_cli(storage, env, inventree):
    env(**inventree.settings())
    environ = {**os.environ}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "monitors", *args], cwd=ROOT, env=environ, capture_output=True,
                              text=True, timeout=60)

    eight = json.dumps([{"pk": pk, "quantity": 1} for pk in (1, 2, 3, 4, 5, 6, 8, 9)])
    made = cli("--json", "add", "parts", "name=Kit list", f"parts={eight}", "kits=10", "cron=0 7 * * 1-5",
               'recipients=["team@example.org"]')
    assert made.returncode == 0, made.stderr
    mid = json.loads(made.stdout)["id"]
    bom = json.loads(cli("--json", "add", "parts", "name=Widget", 'assembly={"name": "Widget", "version": "2"}',
                         "kits=5").stdout)["id"]

    table = cli("list", "--kind", "parts").stdout.splitlines()
    assert table[0].split() == ["id", "kind", "name", "enabled", "status", "schedule", "target"]
    rows = {line.split()[0]: line for line in table[2:]}
    assert rows[mid].rstrip().endswith("8 lines ×10") and "0 7 * * 1-5" in rows[mid]
    assert rows[bom].rstrip().endswith("BOM of Widget rev 2 ×5")

    assert json.loads(cli("--json", "update", mid, "kits=20").stdout)["kits"] == 20
    assert json.loads(cli("--json", "disable", mid).stdout)["enabled"] is False  # deactivate
    assert json.loads(cli("--json", "enable", mid).stdout)["enabled"] is True  # activate
    ran = cli("run", mid)
    assert ran.returncode == 0 and "SHORT" in ran.stdout and "PARTS_REPORT" in ran.stdout
    (result,) = json.loads(cli("--json", "results", mid).stdout)["items"]
    assert (result["lines"], result["lines_short"], result["kits_buildable"]) == (8, 2, 0)  # MCU, USB-C
    bad = cli("add", "parts", "name=x", 'parts=[{"pk": 1, "quantity": 0}]')
    assert bad.returncode == 2 and "parts.0.quantity: Input should be greater than 0" in bad.stderr
    assert cli("delete", mid).returncode == 0
    assert mid not in cli("list").stdout


# ------------------------------------------------------------------------------------ pure decisions


def _cfg(**fields: Any) -> parts.Config:
    return parse_spec({"kind": "parts", "id": "ab" * 16, "name": "Widget", "parts": SENSOR, **fields})


def _need(pk: int, quantity: float, stock: float, name: str | None = None, **part: Any) -> parts.Need:
    return parts.Need(f"pk {pk}", {"pk": pk, "name": name or f"Part {pk}", "active": True, **part}, "ok",
                      Decimal(str(quantity)), own=Decimal(str(stock)))


def _report(cfg: parts.Config, stock: dict[int, float]) -> dict[str, Any]:
    names = {1: "R-10k 0603", 4: "STM32F103C8T6", 8: "Widget PCB"}
    needs = [_need(pk, qty, stock[pk], names[pk]) for pk, qty in ((1, 4), (4, 1), (8, 1))]
    return parts.assess(cfg, parts.Bom(None, needs), [], "parts list")


def test_the_significance_hash_covers_shortages_and_kits_not_stock_above_the_requirement():
    cfg = _cfg(kits=30)
    base = _report(cfg, {1: 1400, 4: 25, 8: 40})
    same = [_report(cfg, {1: 1000, 4: 25, 8: 31}), _report(cfg, {1: 120, 4: 25, 8: 30})]
    assert {parts.significance_hash(r, 30) for r in same} == {parts.significance_hash(base, 30)}
    changed = [_report(cfg, {1: 1400, 4: 24, 8: 40}),  # short by 6, not 5
               _report(cfg, {1: 1400, 4: 25, 8: 29}),  # another part short
               _report(cfg, {1: 1400, 4: 30, 8: 40}),  # nothing short any more
               parts.critical_report(cfg, "InvenTree unreachable")]
    hashes = {parts.significance_hash(r, 30) for r in [base, *changed]}
    assert len(hashes) == 5
    # with enough for every kit, more stock is not news: buildable kits count only up to the kits wanted
    fine = _cfg(kits=5)
    assert parts.significance_hash(_report(fine, {1: 1400, 4: 25, 8: 40}), 5) == \
        parts.significance_hash(_report(fine, {1: 1400, 4: 60, 8: 400}), 5)
    assert parts.significance_hash(_report(fine, {1: 1400, 4: 25, 8: 40}), 5) != \
        parts.significance_hash(_report(fine, {1: 1400, 4: 4, 8: 40}), 5)


def test_evaluate_reports_when_the_hash_differs_from_the_confirmed_one():
    cfg = _cfg(kits=30)
    report = _report(cfg, {1: 1400, 4: 25, 8: 40})
    result = parts.PartsResult("down", 12.0, None, parts.result_data(report), report=report)
    t0 = datetime(2030, 1, 1, 7, 0, tzinfo=UTC)
    first = parts.evaluate(cfg, {}, result, t0)
    (event,) = first.events
    assert (first.status, event.type, event.severity) == ("SHORT", EventType.PARTS_REPORT, "warning")
    assert "last_hash" not in first.state  # only the mail path writes it
    assert [e.type for e in parts.evaluate(cfg, first.state, result, t0 + timedelta(hours=1)).events] == \
        [EventType.PARTS_REPORT]  # not confirmed yet: offered again
    confirmed = {**first.state, "last_hash": event.details["hash"]}
    quiet = parts.evaluate(cfg, confirmed, result, t0 + timedelta(hours=2))
    assert quiet.events == [] and quiet.state == confirmed  # the engine writes nothing
    assert len(parts.evaluate(_cfg(kits=30, notify_condition="always"), confirmed, result, t0).events) == 1

    # the engine's own ERROR (the checker crashed) has no report: operator + a critical report, once
    crash = CheckResult("error", error="checker failed: KeyError: 'x'")
    failed = parts.evaluate(cfg, confirmed, crash, t0)
    assert [e.type for e in failed.events] == [EventType.MONITOR_ERROR, EventType.PARTS_REPORT]
    assert failed.events[1].details["critical"] and failed.status == "ERROR"
    again = parts.evaluate(cfg, {**failed.state, "last_hash": failed.events[1].details["hash"]}, crash, t0)
    assert again.events == []


def test_a_huge_list_stays_within_the_queue_message_and_the_entity_limits():
    cfg = _cfg(kits=2)
    needs = [_need(pk, 1.0, 1 if pk % 10 == 0 else 100, f"Part {pk} " + "x" * 60, IPN=f"IPN-{pk:05d}",
                   active=pk % 7 != 0) for pk in range(1, 501)]
    warnings = [f"pk {pk} Part {pk} {'x' * 200} is inactive in InvenTree" for pk in range(7, 501, 7)]
    report = parts.assess(cfg, parts.Bom(None, needs), warnings, "parts list")
    event = parts.report_event(cfg, report, parts.significance_hash(report, 2), datetime.now(UTC))
    size = len(json.dumps(event.details, separators=(",", ":")))  # as stored and queued (shared/storage.py)
    assert size <= parts.REPORT_BUDGET and event.details["omitted_rows"] > 0
    assert [r["missing"] for r in event.details["rows"][:50]] == [1.0] * 50  # every shortfall kept, first
    assert event.details["lines"] == 500 and event.details["lines_short"] == 50
    assert event.details["summary"] == "50 parts short, 1 kit buildable, 71 warnings"  # the whole count
    assert len(event.details["warnings"]) == parts.MAX_WARNINGS + 1  # … and 21 more warnings
    detail = parts.result_data(report)["detail"]
    assert len(detail) <= parts.DETAIL_BUDGET and json.loads(detail)["short_omitted"] > 0
    assert parts.result_data(report)["warnings"] == 71
    rendered = notify.render_event(event, _mail_settings())
    assert f"and {event.details['omitted_rows']} more line(s)" in rendered.html
    assert len(html_table(rendered.html)[1]) == len(event.details["rows"])


def _mail_settings() -> Any:
    from shared.settings import Settings

    return Settings(AzureWebJobsStorage="UseDevelopmentStorage=true", GLOBAL_EMAIL_NOTIFICATIONS_ENABLED=False)


# ----------------------------------------------------------------------------------------- the store


async def test_confirm_last_hash_retries_on_a_concurrent_write(settings, monkeypatch):
    async with Store.open(settings) as store:
        assert await store.confirm_state("parts", "cd" * 16, {"last_hash": "h1"}) is False  # no state: nothing to confirm
        await store.commit_state("parts", "cd" * 16, {"status": "OK"}, "OK", None, [])
        stale = await store.get_state("parts", "cd" * 16)
        await store.commit_state("parts", "cd" * 16, {"status": "SHORT"}, "SHORT", stale.etag, [])  # the engine
        reads = []
        real = store.get_state

        async def first_stale(kind: str, monitor_id: str):
            reads.append(monitor_id)
            return stale if len(reads) == 1 else await real(kind, monitor_id)

        monkeypatch.setattr(store, "get_state", first_stale)
        assert await store.confirm_state("parts", "cd" * 16, {"last_hash": "h1"}) is True
        assert len(reads) == 2  # the stale ETag lost, it re-read and won
        row = await real("parts", "cd" * 16)
        assert row.data == {"status": "SHORT", "last_hash": "h1"} and row.status == "SHORT"

        async def always_stale(kind: str, monitor_id: str):
            return stale

        monkeypatch.setattr(store, "get_state", always_stale)
        with pytest.raises(Conflict):
            await store.confirm_state("parts", "cd" * 16, {"last_hash": "h2"}, attempts=2)
