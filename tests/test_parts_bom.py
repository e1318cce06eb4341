"""What can be built, against the recorded InvenTree responses (tests/fixtures/inventree/README.md, "Recorded
later"): for each BOM shape InvenTree's own `can_build` (/api/part/<pk>/requirements/) and required quantities
(the build lines of BO-0002) are what the report says, and where the report differs on purpose (the same part on
two lines, sub-assemblies) it says why. Checked in-process (parts.check_batch on the stand-in,
tests/inventree_fake.py), with the e-mail rendered as it is sent; one scenario runs end to end.

The shapes (pk): Gadget 14 = Enclosure ×1 + virtual Firmware ×1 · Sensor Board 16 = R-10k ×2, LED ×1, consumable
Solder paste ×0.5 · Harness 19 = Cable tie ×4 (setup 20, attrition 10 %, rounding 100) + Wire ×0.35 (rounding 5)
· Bracket 20 = Screw M3x8 ×8 and ×4 on two lines · Doohickey 21 = empty BOM · Spacer M3x10 = pk 22 and 23 · R-4k7
0603 pk 24, IPN RES-4K7-ÖL · Controller Box 27 = Control Module 25 (an assembly, 3 in stock) ×1, Display 26 ×1 (2
in stock, 50 on order), Spacer 22 ×4, Screw ×4 · Big Board 128 = 100 lines of Bulk parts (BLK-001 …).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from inventree_fake import TOKEN, FakeInvenTree, inventree, load  # noqa: F401 - fixture

from monitors import parse_spec, parts
from monitors.contract import CheckContext
from shared import notify
from shared.clients import inventree as inventree_client
from shared.settings import Settings

MID = "ab" * 16


def settings_for(fake: FakeInvenTree, **extra: Any) -> Settings:
    return Settings(AzureWebJobsStorage="UseDevelopmentStorage=true", GLOBAL_EMAIL_NOTIFICATIONS_ENABLED=False,
                    INVENTREE_URL=fake.base, INVENTREE_TOKEN=TOKEN, INVENTREE_TIMEOUT_SECONDS=5, **extra)


def config(n: int = 0, **spec: Any) -> parts.Config:
    return parse_spec({"kind": "parts", "id": f"{n:02x}" * 16, "name": spec.pop("name", "Kit"), **spec})


async def check(fake: FakeInvenTree, *cfgs: parts.Config, **extra: Any) -> list[parts.PartsResult]:
    async with aiohttp.ClientSession() as http:
        ctx = CheckContext(http, http, settings_for(fake, **extra), None)  # type: ignore[arg-type]
        results = await parts.check_batch(list(cfgs), ctx)
    return [results[cfg.id or ""] for cfg in cfgs]  # type: ignore[misc]


async def one(fake: FakeInvenTree, **spec: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The report of one monitor, and its rows by part name."""
    (result,) = await check(fake, config(**spec))
    assert result.report is not None, result.error
    return result.report, {row["part"]: row for row in result.report["rows"]}


def can_build(pk: int) -> int:
    """InvenTree's own answer, as recorded."""
    value = load(f"api_part_{pk}_requirements.json")["can_build"]
    assert float(value).is_integer()
    return int(value)


def mail_settings(**extra: Any) -> Settings:
    return Settings(AzureWebJobsStorage="UseDevelopmentStorage=true", GLOBAL_EMAIL_NOTIFICATIONS_ENABLED=False,
                    **extra)


def mail(report: dict[str, Any], cfg: parts.Config, **extra: Any) -> Any:
    """The PARTS_REPORT e-mail of `report`, rendered as it is sent."""
    event = parts.report_event(cfg, report, parts.significance_hash(report, cfg.kits), datetime.now(UTC))
    return notify.render_event(event, mail_settings(**extra))


# ----------------------------------------------------------------------------------------- InvenTree's count


async def test_a_virtual_part_is_never_short(inventree):
    report, rows = await one(inventree, assembly={"pk": 14}, kits=10)
    assert report["kits_buildable"] == can_build(14) == 12  # the naive count said 0: no firmware in stock
    assert (report["lines"], report["lines_short"]) == (2, 0)
    firmware = rows["Firmware v1"]
    assert (firmware["status"], firmware["available"], firmware["missing"]) == ("virtual", None, 0.0)
    assert firmware["note"] == "virtual part, not counted; FW1"
    report, rows = await one(inventree, assembly={"ipn": "asm-gadget"}, kits=20)
    assert (report["lines_short"], report["kits_buildable"]) == (1, 12)
    assert rows["Enclosure ABS 100x60x25"]["note"] == "short by 8; ENC1"


async def test_a_consumable_line_is_shown_with_its_stock_and_not_counted(inventree):
    cfg = config(assembly={"pk": 16}, kits=10)
    (result,) = await check(inventree, cfg)
    report = result.report
    assert report is not None and report["kits_buildable"] == can_build(16) == 300
    assert (result.outcome, report["lines_short"]) == ("up", 0)
    paste = next(r for r in report["rows"] if r["pk"] == 15)
    assert (paste["status"], paste["required"], paste["available"], paste["missing"], paste["note"]) == \
        ("consumable", 5.0, 0.0, 0.0, "consumable, not counted")
    text = mail(report, cfg).text
    assert any(line.split()[:2] == ["Solder", "paste"] and line.split()[-6:] ==
               ["5", "0", "-", "consumable,", "not", "counted"] for line in text.splitlines()), text


async def test_setup_quantity_attrition_and_rounding_count_as_in_inventree(inventree):
    report, rows = await one(inventree, assembly={"pk": 19}, kits=7)
    # (1500 − 20) / (4 × 1.1) = 336.36: InvenTree says 336, where quantity alone said 1500 / 4 = 375
    assert report["kits_buildable"] == can_build(19) == 336
    # for the 7 kits of build order BO-0002, InvenTree's build lines need what the report requires
    build_lines = {line["bom_item"]: line["quantity"] for line in load("api_build_line__build-2.json")}
    assert rows["Cable tie 100mm"]["required"] == build_lines[17] == 100.0  # 4 × 7 × 1.1 + 20 = 50.8 → 100
    assert rows["Wire 0.5mm2 red"]["required"] == build_lines[18] == 5.0  # 0.35 × 7 = 2.45 → 5
    assert load("api_part_17_requirements.json")["required_for_build_orders"] == 100.0
    assert load("api_part_18_requirements.json")["required_for_build_orders"] == 5.0
    assert rows["Cable tie 100mm"]["note"] == "rounded up to a multiple of 100"
    assert report["lines_short"] == 0

    report, rows = await one(inventree, assembly={"pk": 19}, kits=337)  # one more than can be built
    tie = rows["Cable tie 100mm"]
    assert (tie["required"], tie["available"], tie["missing"]) == (1600.0, 1500.0, 100.0)  # 1502.8 → 1600
    assert tie["note"] == "short by 100; rounded up to a multiple of 100"
    assert (report["lines_short"], report["kits_buildable"]) == (1, 336)


async def test_the_same_part_on_two_lines_draws_on_one_stock(inventree):
    report, rows = await one(inventree, assembly={"pk": 20}, kits=60)
    (screws,) = report["rows"]  # one part, one row
    assert (screws["part"], screws["required"], screws["available"], screws["missing"]) == \
        ("Screw M3x8", 720.0, 650.0, 70.0)
    assert screws["note"] == "short by 70; on 2 lines: 8 + 4 per kit; chassis; lid"
    # 650 / (8 + 4) = 54; InvenTree gives each line all 650 screws and says 81 (README: it over-reports)
    assert report["kits_buildable"] == math.floor(650 / 12) == 54 < can_build(20) == 81
    assert [p["pk"] for p in load("api_part__in_bom_for-20.json")] == [10]  # in_bom_for lists the screw once

    report, _ = await one(inventree, parts=[{"pk": 10, "quantity": 8}, {"ipn": "scr-m3x8", "quantity": 4}], kits=60)
    assert (report["lines"], report["lines_short"], report["total_missing"], report["kits_buildable"]) == \
        (1, 1, 70.0, 54)  # a parts list too, however the lines name the part


async def test_substitutes_count_as_inventree_counts_them(inventree):
    report, rows = await one(inventree, assembly={"pk": 12}, kits=1)
    c = rows["C-100nF 0603"]
    assert (c["available"], c["kits"]) == (1180.0, 590)  # 180 + 1000 of C-100nF 0402
    assert c["kits"] == load("api_bom__part-12.json")[1]["can_build"]  # InvenTree's line can_build
    assert report["kits_buildable"] == can_build(12) == 0  # the USB-C receptacle


async def test_another_available_field_counts_substitutes_by_that_field_too(inventree):
    cfg = config(assembly={"pk": 12}, kits=30)
    (result,) = await check(inventree, cfg, INVENTREE_AVAILABLE_FIELD="in_stock")
    assert result.report is not None
    rows = {row["part"]: row for row in result.report["rows"]}
    assert rows["STM32F103C8T6"]["available"] == 35.0  # the 10 allocated to BO-0001 count here
    assert rows["C-100nF 0603"]["available"] == 180.0 + 1000.0  # and its substitute's in_stock
    assert any(p.endswith("substitutes=true&limit=100") for p in inventree.paths("/api/bom/"))


@pytest.mark.parametrize("pk", [14, 16, 19, 25, 27, 128, 12, 4])
async def test_kits_buildable_is_inventree_can_build_for_every_recorded_assembly(inventree, pk):
    """Wherever InvenTree's count is right (no part on two lines): the same number."""
    if pk == 4:  # not an assembly: nothing to build from
        (result,) = await check(inventree, config(assembly={"pk": pk}))
        assert result.outcome == "error" and result.error == \
            "pk 4 STM32F103C8T6 is not an assembly in InvenTree: it has no BOM to check"
        return
    report, _ = await one(inventree, assembly={"pk": pk})
    assert report["kits_buildable"] == can_build(pk)


# ---------------------------------------------------------------------------------------- cannot be checked


@pytest.mark.parametrize(("assembly", "error", "reason"), [
    ({"pk": 21}, "pk 21 Doohickey has no BOM lines in InvenTree",
     "the assembly pk 21 Doohickey has no BOM in InvenTree"),
    ({"name": "Spacer M3x10"}, "assembly Spacer M3x10: 2 parts match in InvenTree (pk 22 Spacer M3x10; pk 23 "
     "Spacer M3x10); give its version, or its pk", "the assembly Spacer M3x10 is ambiguous in InvenTree"),
    ({"pk": 888888}, "assembly pk 888888: no such part in InvenTree", "the assembly pk 888888 is not in InvenTree"),
    ({"ipn": "DOES-NOT-EXIST"}, "assembly IPN DOES-NOT-EXIST: not found in InvenTree",
     "the assembly IPN DOES-NOT-EXIST is not in InvenTree"),
], ids=["empty BOM", "ambiguous name", "missing pk", "unknown IPN"])
async def test_an_assembly_that_cannot_be_resolved_is_an_error_not_ok(inventree, assembly, error, reason):
    cfg = config(assembly=assembly)
    (result,) = await check(inventree, cfg)
    assert (result.outcome, result.error) == ("error", error)
    report = result.report
    assert report is not None and report["critical"] and report["lines"] is None
    assert (report["critical_reason"], report["critical_detail"]) == (reason, error)
    evaluation = parts.evaluate(cfg, {}, result, datetime.now(UTC))
    assert evaluation.status == "ERROR" and [e.type.value for e in evaluation.events] == \
        ["MONITOR_ERROR", "PARTS_REPORT"]
    text = notify.render_event(evaluation.events[1], mail_settings()).text
    assert f"Kit ×1: {reason}, no data" in text.splitlines()[0]
    assert error in text and "once InvenTree answers again" not in text
    assert f"{reason[0].upper()}{reason[1:]}: this run has no availability data." in text.splitlines()


async def test_an_ambiguous_name_in_a_parts_list_is_a_short_line_with_a_warning(inventree):
    report, rows = await one(inventree, parts=[{"name": "Spacer M3x10", "quantity": 1},
                                               {"ipn": "SPC-M3X10-NY", "quantity": 1}])
    assert report["warnings"] == ["Spacer M3x10: 2 parts match in InvenTree (pk 22 Spacer M3x10; pk 23 Spacer "
                                  "M3x10); give its version, or its pk"]
    assert [(r["part"], r["status"], r["available"]) for r in report["rows"]] == [
        ("Spacer M3x10", "ambiguous", None), ("Spacer M3x10", "ok", 100.0)]  # the IPN tells them apart


# ------------------------------------------------------------------------------------------- IPN, any script


async def test_ipns_match_in_any_case_of_any_script(inventree):
    # ?IPN= folds ASCII only on SQLite: the all-lower-case IPN finds nothing there
    assert load("api_part__IPN-res-4k7-ouml_l_all_lowercase.json") == []
    assert [p["pk"] for p in load("api_part__IPN_regex-exact_res-4k7-ouml_l_lowercase.json")] == [24]
    for spelling in ("res-4k7-öl", "RES-4K7-öL", "RES-4K7-ÖL", "Res-4k7-Öl"):
        inventree.reset_counters()
        report, rows = await one(inventree, parts=[{"ipn": spelling, "quantity": 2}], kits=10)
        assert (rows["R-4k7 0603"]["pk"], rows["R-4k7 0603"]["available"], report["warnings"]) == (24, 250.0, [])
        (path,) = inventree.paths()
        assert path.startswith("/api/part/?IPN_regex=")


# ------------------------------------------------------------------------------------------- fewer requests


async def test_an_assembly_check_takes_three_requests_and_its_pages(inventree, monkeypatch):
    report, _ = await one(inventree, assembly={"pk": 128})
    assert (report["lines"], report["lines_short"], report["kits_buildable"]) == (100, 100, can_build(128))
    assert sorted(inventree.paths()) == ["/api/bom/?part=128&limit=100", "/api/part/128/",
                                         "/api/part/?in_bom_for=128&limit=100"]
    monkeypatch.setattr(inventree_client, "PAGE_SIZE", 50)  # as recorded: two pages of each list
    inventree.reset_counters()
    await one(inventree, assembly={"ipn": "ASM-BIG"})
    assert sorted(inventree.paths()) == [
        "/api/bom/?part=128&limit=50", "/api/bom/?part=128&limit=50&offset=50",
        "/api/part/?IPN_regex=%5E(ASM-BIG)$&limit=50", "/api/part/?in_bom_for=128&limit=50",
        "/api/part/?in_bom_for=128&limit=50&offset=50"]  # 3 + the 2 second pages


async def test_a_parts_list_takes_one_request_per_fifty_ipns_or_names(inventree):
    ipns = [{"ipn": f"blk-{n:03d}", "quantity": 1} for n in range(1, 101)]
    names = [{"name": f"Bulk part {n:03d}", "quantity": 1} for n in range(1, 21)]
    report, _ = await one(inventree, parts=[*ipns, *names, {"pk": 10, "quantity": 1}])
    lines = 100 + 20 + 1
    assert report["lines"] == 101 and report["warnings"] == []  # a name and an IPN of one part: one row
    paths = inventree.paths()
    assert len(paths) == 2 + 1 + 1 <= math.ceil(lines / 50) + 2  # 2 × 50 IPNs, 20 names, the pk
    assert sum(p.startswith("/api/part/?IPN_regex=%5E(blk-001%7Cblk-002%7C") for p in paths) == 1


async def test_monitors_of_one_run_share_their_bulk_lookups(inventree):
    a = config(1, parts=[{"ipn": "RES-10K-0603", "quantity": 1}, {"ipn": "MCU-STM32F103", "quantity": 1}])
    b = config(2, parts=[{"ipn": "mcu-stm32f103", "quantity": 1}, {"ipn": "SCR-M3X8", "quantity": 1}])
    c = config(3, assembly={"pk": 12})
    d = config(4, assembly={"name": "Widget", "version": "2"})
    results = await check(inventree, a, b, c, d)
    assert [r.outcome for r in results] == ["up", "up", "down", "down"]
    paths = inventree.paths()
    assert len(paths) == len(set(paths)) == 6  # 2 bulk IPN lookups, pk 12, a name, its BOM and in_bom_for
    assert sum("MCU-STM32F103" in p.upper() for p in paths) == 1


# ----------------------------------------------------------------------------------- sub-assemblies, on order


async def test_sub_assemblies_are_built_from_their_bom_when_asked(inventree):
    inventree.set_stock(26, in_stock=100)  # displays enough: the Control Module (3 in stock) limits the box
    report, rows = await one(inventree, assembly={"pk": 27}, kits=10)
    assert report["kits_buildable"] == 3 and rows["Control Module"]["note"] == "short by 7; MOD1"

    inventree.reset_counters()
    report, rows = await one(inventree, assembly={"pk": 27}, kits=10, expand_subassemblies=True)
    module = rows["Control Module"]
    assert (module["required"], module["available"], module["missing"]) == (10.0, 3.0, 0.0)
    assert module["note"] == "sub-assembly: 25 buildable from its BOM; MOD1"  # InvenTree's can_build of pk 25
    assert can_build(25) == 25
    # 3 + 25 modules; the spacers (100 / 4 = 25) limit the box
    assert (report["lines_short"], report["kits_buildable"]) == (0, 25)
    assert len(inventree.paths()) == 3 + 2  # the sub-assembly's BOM and parts: two more requests

    report, rows = await one(inventree, assembly={"pk": 27}, kits=30, expand_subassemblies=True)
    assert rows["Control Module"]["note"] == "short by 2; sub-assembly: 25 buildable from its BOM; MOD1"
    assert rows["Spacer M3x10"]["note"] == "short by 20"


async def test_a_part_needed_at_two_levels_is_counted_once(inventree):
    # a module and a bare MCU per kit: modules beyond the 3 in stock need an MCU each too (25 unallocated)
    spec = {"parts": [{"pk": 25, "quantity": 1}, {"pk": 4, "quantity": 1}], "expand_subassemblies": True}
    report, rows = await one(inventree, kits=20, **spec)
    assert report["kits_buildable"] == 14  # n + (n − 3) ≤ 25, not min(3 + 25, 25) = 25
    mcu = rows["STM32F103C8T6"]
    assert (mcu["required"], mcu["available"], mcu["missing"]) == (37.0, 25.0, 12.0)
    assert mcu["note"] == "short by 12; incl. 17 to build sub-assemblies"


async def test_on_order_is_shown_never_counted(inventree):
    cfg = config(assembly={"pk": 27}, kits=10, include_on_order=True)
    (result,) = await check(inventree, cfg)
    report = result.report
    assert report is not None and report["kits_buildable"] == can_build(27) == 2
    display = next(r for r in report["rows"] if r["pk"] == 26)
    assert (display["available"], display["missing"]) == (2.0, 8.0)
    assert display["note"] == "short by 8; 50 on order, not counted; DISP1"
    assert load("api_bom__part-27.json")[1]["on_order"] == 50.0
    text = mail(report, cfg).text
    assert "On order:            shown, not counted as available" in text.splitlines()
    report, _ = await one(inventree, assembly={"pk": 27}, kits=10)  # not asked: not shown
    assert "on order" not in json.dumps(report["rows"])


# ------------------------------------------------------------------------------------------------- links


async def test_links_go_where_a_recipient_can_open_them(inventree):
    hidden = config(1, assembly={"pk": 19}, kits=7)
    shown = config(2, assembly={"pk": 19}, kits=7, public=True)
    results = await check(inventree, hidden, shown, PUBLIC_BASE_URL="https://status.example.org/")
    public = {"PUBLIC_BASE_URL": "https://status.example.org"}
    for cfg, result in zip((hidden, shown), results, strict=True):
        assert result.report is not None
        rendered = mail(result.report, cfg, **public)
        for body in (rendered.text, rendered.html):
            assert f"{inventree.base}/web/part/17/" in body and f"{inventree.base}/part/17/" not in body
            assert "/api/v1/" not in body and "`" not in rendered.text and "Inventree" not in body
        page = f"https://status.example.org/api/status-page#m-{cfg.id}"
        assert (page in rendered.text) == (page in rendered.html) == cfg.public
    assert results[0].report and results[0].report["monitor_page"] is None


# ----------------------------------------------------------------------------------------------- arithmetic


def _need(pk: int, quantity: str, own: str, **fields: Any) -> parts.Need:
    part = {"pk": pk, "name": f"Part {pk}", "active": True, "virtual": fields.pop("virtual", False)}
    return parts.Need(f"pk {pk}", part, "ok", Decimal(quantity), own=Decimal(own), **fields)


def test_the_arithmetic_is_exact_and_bounded():
    from monitors import parts_bom

    kit = config(parts=[{"pk": 1, "quantity": 1}], kits=3)
    # 0.3 / 0.1 is 2.9999999999999996 in floats: exact decimals say 3
    report = parts.assess(kit, parts.Bom(None, [_need(1, "0.1", "0.3")]), [], "parts list")
    assert (report["kits_buildable"], report["lines_short"]) == (3, 0)
    # plenty of stock: counted up to MAX_KITS, quickly
    huge = parts.assess(kit, parts.Bom(None, [_need(1, "0.000001", "1000000000")]), [], "parts list")
    assert huge["kits_buildable"] == parts_bom.MAX_KITS
    odd = parts.assess(kit, parts.Bom(None, [_need(1, "1", "999999999999")]), [], "parts list")
    assert odd["kits_buildable"] == 999_999_999_999  # just below the cap: still exact
    # nothing that holds stock: InvenTree's 0, and a warning that says why
    warnings: list[str] = []
    virtual = parts.assess(kit, parts.Bom(None, [_need(13, "1", "0", virtual=True)]), warnings, "parts list")
    assert (virtual["kits_buildable"], virtual["lines_short"]) == (0, 0)
    assert warnings == ["no line holds stock (all are virtual parts or consumable): InvenTree counts 0 buildable"]
    # setup is needed once per build, attrition on every unit: (100 − 10) / (2 × 1.25) = 36
    setup = _need(1, "2", "100", setup=Decimal(10), attrition=Decimal(25))
    assert parts.assess(kit, parts.Bom(None, [setup]), [], "parts list")["kits_buildable"] == 36
    assert setup.required(3) == Decimal("17.5") and setup.required(0) == 0
