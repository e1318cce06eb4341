"""The availability report of a parts list or an assembly's BOM: each part's line (what it needs for `kits` kits,
what is there, what is missing and why), the kits buildable now, and the significance hash that decides whether a
report is news (which lines are short and by how much, the kits buildable capped at the kits wanted, the critical
state). Reading the lines is monitors/parts_read.py's, the arithmetic monitors/parts_bom.py's.

One row per part: two lines of the same part are one row (they draw on one stock). Its `note` says why it is
short ("short by 3", "sub-assembly: 2 buildable from its BOM", "3 on order, not counted") and what else matters
(consumable or virtual, so not counted; substitutes or variants counted; inactive; the BOM reference).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from monitors.parts_bom import Bom, Ledger, Need, draw, line_kits, most_kits, stock_of
from monitors.parts_read import Found, PartLine, PartRef, Reader, choose, describe, resolve  # noqa: F401
from shared.clients.inventree import InvenTree
from shared.text import clip, plural, quantity

if TYPE_CHECKING:
    from monitors.parts import Config

REPORT_BUDGET = 24_000  # JSON characters of a PARTS_REPORT's details (queue message ≤ 64 KiB; events row)
DETAIL_BUDGET = 16_000  # JSON characters of a result row's `detail` (a property holds 64 KiB of UTF-16)
MAX_WARNINGS = 50


def _round(value: Any) -> float:
    return round(float(value) + 0.0, 6)


def _row(needs: list[Need], stock: dict[str, Any], ledger: Ledger, kits: int,
         include_on_order: bool) -> dict[str, Any]:
    """One part's row: all its lines (of the list or the top of the BOM) together."""
    first = needs[0]
    part, key = first.part, first.key
    quantity_per_kit = sum(n.quantity for n in needs)
    row: dict[str, Any] = {"part": first.label, "pk": None, "ipn": "", "version": "", "lines": len(needs),
                           "quantity": _round(quantity_per_kit)}
    if part is not None:
        row.update(part=str(part.get("name") or first.label), pk=part.get("pk"), ipn=str(part.get("IPN") or ""),
                   version=str(part.get("revision") or ""))
    elif first.ref is not None:
        row.update(ipn=first.ref.ipn or "", version=first.ref.version or "")
    notes: list[str] = []
    if part is None:
        notes.append("not found in InvenTree" if first.status == "not_found" else "ambiguous: see warnings")
        row.update(required=_round(ledger.direct.get(key, 0)), available=None,
                   missing=_round(ledger.unmet.get(key, 0)), kits=0, status=first.status)
    elif first.virtual:
        notes.append("virtual part, not counted")
        row.update(required=_round(sum(n.required(kits) for n in needs)), available=None,
                   missing=0.0, kits=None, status="virtual")
    elif first.consumable:
        notes.append("consumable, not counted")
        row.update(required=_round(sum(n.required(kits) for n in needs)),
                   available=_round(stock.get(key, 0)), missing=0.0, kits=None, status="consumable")
    else:
        missing = ledger.unmet.get(key, 0)
        available = stock.get(key, 0)
        built = ledger.buildable.get(key)
        row.update(required=_round(ledger.direct.get(key, 0) + ledger.nested.get(key, 0)),
                   available=_round(available), missing=_round(missing),
                   kits=line_kits(needs, available + (built or 0)), status="short" if missing > 0 else "ok")
        notes += _why(needs, ledger, kits)
    if include_on_order and first.ordering > 0:
        notes.append(f"{quantity(_round(first.ordering))} on order, not counted")
    if len(needs) > 1:
        notes.append(f"on {len(needs)} lines: " + " + ".join(quantity(_round(n.quantity)) for n in needs)
                     + " per kit")
    if part is not None and not part.get("active", True):
        notes.append("inactive")
    notes += [ref for ref in dict.fromkeys(n.reference for n in needs) if ref]
    if any(n.optional for n in needs):
        notes.append("optional")
    row.update(note="; ".join(notes), key=key)
    return row


def _why(needs: list[Need], ledger: Ledger, kits: int) -> list[str]:
    """Why a counted part is short, and what its numbers include."""
    key = needs[0].key
    notes = []
    if ledger.unmet.get(key, 0) > 0:
        notes.append(f"short by {quantity(_round(ledger.unmet[key]))}")
    if key in ledger.buildable:
        notes.append(f"sub-assembly: {ledger.buildable[key]} buildable from its BOM")
    if ledger.nested.get(key):
        notes.append(f"incl. {quantity(_round(ledger.nested[key]))} to build sub-assemblies")
    rounded = [n for n in needs if n.rounding and n.required(kits) != n.required(kits, rounded=False)]
    if rounded:
        notes.append(f"rounded up to a multiple of {quantity(_round(rounded[0].rounding or 0))}")
    substitutes = max(n.substitutes for n in needs)
    variants = max(n.variants for n in needs)
    if substitutes:
        notes.append(f"incl. {quantity(_round(substitutes))} of substitutes")
    if variants:
        notes.append(f"incl. {quantity(_round(variants))} of variants")
    return notes


def assess(cfg: Config, bom: Bom, warnings: list[str], source: str) -> dict[str, Any]:
    """The report of `bom` for cfg.kits kits: one row per part, kits buildable as InvenTree counts them."""
    stock = stock_of(bom)
    kits_buildable = most_kits(bom, stock)
    if bom.needs and not any(n.counted for n in bom.needs):
        warnings.append("no line holds stock (all are virtual parts or consumable): InvenTree counts 0 buildable")
    ledger = Ledger(dict(stock))
    draw(bom, cfg.kits, ledger, rounded=True, report=True)
    groups: dict[tuple[str, str], list[Need]] = {}
    for need in bom.needs:
        kind = "virtual" if need.virtual else "consumable" if need.consumable else "counted"
        groups.setdefault((need.key, kind), []).append(need)
    rows = [_row(needs, stock, ledger, cfg.kits, cfg.include_on_order) for needs in groups.values()]
    return summarize(cfg, rows, warnings, source, kits_buildable)


def summarize(cfg: Config, lines: list[dict[str, Any]], warnings: list[str], source: str,
              kits_buildable: int) -> dict[str, Any]:
    short = [line for line in lines if line["missing"] > 0]
    return {"kits": cfg.kits, "source": source, "lines": len(lines), "lines_short": len(short),
            "total_missing": _round(sum(line["missing"] for line in short)),
            "kits_buildable": kits_buildable, "critical": False, "critical_reason": None, "critical_detail": None,
            "warnings": [clip(w, 300) or "" for w in warnings], "inventree_url": None, "available_field": None,
            "expand_subassemblies": cfg.expand_subassemblies, "include_on_order": cfg.include_on_order,
            "monitor_page": None,
            "rows": short + [line for line in lines if line["missing"] <= 0]}  # shortfalls first, else in order


def critical_report(cfg: Config, reason: str, detail: str | None = None) -> dict[str, Any]:
    """A run without data: InvenTree could not be asked (`detail` None: the audience is not told why), or the
    assembly is not one part with a BOM there (`detail` says what to fix)."""
    return {"kits": cfg.kits, "source": source_of(cfg), "lines": None, "lines_short": 0, "total_missing": 0.0,
            "kits_buildable": None, "critical": True, "critical_reason": reason,
            "critical_detail": clip(detail, 500) if detail else None, "warnings": [], "inventree_url": None,
            "available_field": None, "expand_subassemblies": cfg.expand_subassemblies,
            "include_on_order": cfg.include_on_order, "monitor_page": None, "rows": []}


def source_of(cfg: Config) -> str:
    return f"BOM of {cfg.assembly.label()}" if cfg.assembly is not None else "parts list"


async def build_report(cfg: Config, client: InvenTree, field: str) -> dict[str, Any]:
    """Read the list or the BOM from InvenTree and assess it; Unresolved when the assembly cannot be checked."""
    reader = Reader(client, field, cfg.include_optional, cfg.expand_subassemblies)
    if cfg.assembly is not None:
        bom = await reader.assembly(cfg.assembly)
        source = f"BOM of {describe(bom.part or {}, flag_inactive=False)}"
    else:
        bom = await reader.parts_list(cfg.parts or [])
        source = "parts list"
    return assess(cfg, bom, reader.warnings, source)


def significance_hash(report: dict[str, Any], kits: int) -> str:
    """What a person acts on: which lines are short and by how much, the kits buildable up to the kits wanted
    (stock moving above the requirement is not news), and whether InvenTree could be asked at all."""
    if report["critical"]:
        basis: dict[str, Any] = {"critical": True}
    else:
        basis = {"critical": False,
                 "short": sorted([row["key"], row["missing"], row["status"]] for row in report["rows"]
                                 if row["missing"] > 0),
                 "kits": min(int(report["kits_buildable"] or 0), kits)}
    return hashlib.sha256(json.dumps(basis, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def summary_line(report: dict[str, Any]) -> str:
    """'2 parts short, 3 kits buildable' (the subject says it all)."""
    if report["critical"]:
        return f"{report['critical_reason']}, no data"
    lines, short = report["lines"] or 0, report["lines_short"]
    if not lines:
        head = "no parts to check"
    elif short:
        head = f"{plural(short, 'part')} short"
    else:
        head = "the part is available" if lines == 1 else f"all {lines} parts available"
    text = f"{head}, {plural(int(report['kits_buildable'] or 0), 'kit')} buildable"
    if report["warnings"]:
        text += f", {plural(len(report['warnings']), 'warning')}"
    return text


def capped(warnings: list[str]) -> list[str]:
    """At most MAX_WARNINGS (for the e-mail and the result row; the count stays whole)."""
    if len(warnings) <= MAX_WARNINGS:
        return warnings
    return [*warnings[:MAX_WARNINGS], f"… and {len(warnings) - MAX_WARNINGS} more warnings"]


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as e-mails and events show it (its kits and line count are in its note, or the report's)."""
    return {k: v for k, v in row.items() if k not in ("key", "kits", "lines")}


def fit(rows: list[dict[str, Any]], base: dict[str, Any], budget: int) -> tuple[list[dict[str, Any]], int]:
    """As many rows (from the front: shortfalls come first) as fit in `budget` JSON characters with `base`."""
    size = len(json.dumps(base, separators=(",", ":"), default=str)) + 40
    kept = []
    for row in rows:
        size += len(json.dumps(row, separators=(",", ":"), default=str)) + 1
        if size > budget:
            break
        kept.append(row)
    return kept, len(rows) - len(kept)


def result_data(report: dict[str, Any]) -> dict[str, Any]:
    """The result row's summary (scalars) and a `detail` JSON of the short lines and warnings, within budget."""
    short = [{k: row[k] for k in ("part", "pk", "version", "required", "available", "missing", "status")}
             for row in report["rows"] if row["missing"] > 0]
    detail: dict[str, Any] = {"warnings": capped(report["warnings"])}
    if report["critical"]:
        detail["critical_reason"] = report["critical_reason"]
    detail["short"], omitted = fit(short, detail, DETAIL_BUDGET)
    if omitted:
        detail["short_omitted"] = omitted
    return {"lines": report["lines"], "lines_short": report["lines_short"], "total_missing": report["total_missing"],
            "kits_buildable": report["kits_buildable"], "critical": report["critical"],
            "warnings": len(report["warnings"]), "detail": json.dumps(detail, separators=(",", ":"))}
