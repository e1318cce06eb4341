"""The availability report of a parts list or an assembly's BOM: resolving each line in InvenTree, what each line
needs and lacks for `kits` kits, the kits buildable now, and the significance hash that decides whether a report is
news (which lines are short and by how much, the kits buildable capped at the kits wanted, the critical state)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.clients.inventree import BadReply, InvenTree
from shared.text import clip, plural

if TYPE_CHECKING:
    from monitors.parts import Config

REPORT_BUDGET = 24_000  # JSON characters of a PARTS_REPORT's details (queue message ≤ 64 KiB; events row)
DETAIL_BUDGET = 16_000  # JSON characters of a result row's `detail` (a property holds 64 KiB of UTF-16)
MAX_WARNINGS = 50


class PartRef(BaseModel):
    """One InvenTree part: exactly one of pk, ipn or name; `version` (InvenTree's `revision`) with ipn or name."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    pk: int | None = Field(None, ge=1, le=2**31 - 1, description="InvenTree part id.")
    ipn: str | None = Field(None, min_length=1, max_length=100, description="Internal part number (exact, any "
                            "case).")
    name: str | None = Field(None, min_length=1, max_length=200, description="Exact part name.")
    version: str | None = Field(None, max_length=100, description="The part's `revision` in InvenTree (\"\" = no "
                                "revision); picks one of several revisions sharing a name or IPN.")

    @model_validator(mode="after")
    def _one_key(self) -> PartRef:
        given = [key for key in ("pk", "ipn", "name") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of pk, ipn or name")
        if self.pk is not None and self.version is not None:
            raise ValueError("version goes with ipn or name; a pk names one revision already")
        return self

    def label(self) -> str:
        if self.pk is not None:
            return f"pk {self.pk}"
        base = f"IPN {self.ipn}" if self.ipn is not None else str(self.name)
        return base + (f" rev {self.version}" if self.version else "")


class PartLine(PartRef):

    quantity: float = Field(..., gt=0, le=1e9, description="Needed per kit.")


# -------------------------------------------------------------------------------------------- resolution


@dataclass(slots=True)
class Found:
    part: dict[str, Any] | None
    status: Literal["ok", "not_found", "ambiguous"]
    warning: str | None = None


def describe(part: dict[str, Any], flag_inactive: bool = True) -> str:
    """'pk 7 Widget PCB rev A (inactive)'."""
    rev = str(part.get("revision") or "")
    return f"pk {part.get('pk')} {part.get('name')}" + (f" rev {rev}" if rev else "") \
        + ("" if part.get("active", True) or not flag_inactive else " (inactive)")


def choose(ref: PartRef, candidates: list[dict[str, Any]]) -> Found:
    """The one part `ref` means among `candidates`, compared here exactly (the server's filters are only a
    first cut): IPN any case, name exact (any case only when no exact match), revision any case."""
    label = ref.label()
    if ref.ipn is not None:
        candidates = [p for p in candidates if str(p.get("IPN") or "").casefold() == ref.ipn.casefold()]
    if ref.name is not None:
        candidates = [p for p in candidates if p.get("name") == ref.name] or \
            [p for p in candidates if str(p.get("name") or "").casefold() == ref.name.casefold()]
    named = candidates
    if ref.version is not None:
        candidates = [p for p in candidates if str(p.get("revision") or "").casefold() == ref.version.casefold()]
    if not candidates:
        if named:
            revisions = ", ".join(sorted({str(p.get("revision") or "") or "(none)" for p in named}))
            return Found(None, "not_found", f"{label}: no such revision in InvenTree (there: {revisions})")
        return Found(None, "not_found", f"{label}: not found in InvenTree")
    if len(candidates) > 1:
        listed = "; ".join(describe(p) for p in candidates[:5]) + (" …" if len(candidates) > 5 else "")
        return Found(None, "ambiguous", f"{label}: {len(candidates)} parts match in InvenTree ({listed}); "
                                        "give `version`, or the `pk`")
    part = candidates[0]
    if not part.get("active", True):
        return Found(part, "ok", f"{describe(part, flag_inactive=False)} is inactive in InvenTree")
    return Found(part, "ok")


async def resolve(client: InvenTree, ref: PartRef) -> Found:
    if ref.pk is not None:
        part = await client.part(ref.pk)
        return choose(ref, [part]) if part is not None else Found(None, "not_found", f"{ref.label()}: no such "
                                                                                     "part in InvenTree")
    if ref.ipn is not None:
        return choose(ref, await client.parts_by_ipn(ref.ipn))
    return choose(ref, await client.parts_by_name(ref.name or ""))


async def _all(awaitables: list[Awaitable[Any]]) -> list[Any]:
    """gather, but every failure is retrieved (no 'exception never retrieved') and the first one raised."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for item in results:
        if isinstance(item, BaseException):
            raise item
    return results


# ----------------------------------------------------------------------------------------- calculation


def _round(value: float) -> float:
    return round(value + 0.0, 6)


def _stock(part: dict[str, Any], field: str) -> float:
    value = part.get(field)
    try:
        number = float(value)  # type: ignore[arg-type]  # lenient: 25.0 here and "25.000000" there; None fails
    except (TypeError, ValueError):
        raise BadReply(f"part pk {part.get('pk')} has no number in {field!r} (INVENTREE_AVAILABLE_FIELD)") \
            from None
    return max(0.0, number) if math.isfinite(number) else 0.0


def line_of(ref: PartRef, quantity: float, kits: int, found: Found, field: str,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One report line. An unresolved line counts as short by all it needs: nobody can build without it."""
    extra = extra or {}
    required = _round(quantity * kits)
    notes = [n for n in (extra.get("reference"), "optional" if extra.get("optional") else None) if n]
    part = found.part
    if part is None:
        notes.insert(0, "not found in InvenTree" if found.status == "not_found" else "ambiguous: see warnings")
        return {"part": ref.label(), "pk": None, "ipn": ref.ipn or "", "version": ref.version or "",
                "quantity": quantity, "required": required, "available": None, "missing": required, "kits": 0,
                "status": found.status, "note": ", ".join(notes), "key": f"ref:{ref.label().casefold()}"}
    available = _stock(part, field)
    missing = _round(max(0.0, required - available))
    if not part.get("active", True):
        notes.insert(0, "inactive")
    return {"part": str(part.get("name") or ref.label()), "pk": part.get("pk"), "ipn": str(part.get("IPN") or ""),
            "version": str(part.get("revision") or ""), "quantity": quantity, "required": required,
            "available": _round(available), "missing": missing,
            "kits": math.floor(available / quantity + 1e-9), "status": "short" if missing > 0 else "ok",
            "note": ", ".join(notes), "key": f"pk:{part.get('pk')}"}


def summarize(cfg: Config, lines: list[dict[str, Any]], warnings: list[str], source: str) -> dict[str, Any]:
    short = [line for line in lines if line["missing"] > 0]
    return {"kits": cfg.kits, "source": source, "lines": len(lines), "lines_short": len(short),
            "total_missing": _round(sum(line["missing"] for line in short)),
            "kits_buildable": min((line["kits"] for line in lines), default=0), "critical": False,
            "critical_reason": None, "warnings": [clip(w, 300) or "" for w in warnings],
            "inventree_url": None, "available_field": None,
            "rows": short + [line for line in lines if line["missing"] <= 0]}  # shortfalls first, else in order


def critical_report(cfg: Config, reason: str) -> dict[str, Any]:
    return {"kits": cfg.kits, "source": source_of(cfg), "lines": None, "lines_short": 0, "total_missing": 0.0,
            "kits_buildable": None, "critical": True, "critical_reason": reason, "warnings": [],
            "inventree_url": None, "available_field": None, "rows": []}


def source_of(cfg: Config) -> str:
    return f"BOM of {cfg.assembly.label()}" if cfg.assembly is not None else "parts list"


async def build_report(cfg: Config, client: InvenTree, field: str) -> dict[str, Any]:
    warnings: list[str] = []
    wanted: list[tuple[PartRef, float, dict[str, Any]]] = []
    if cfg.assembly is not None:
        found = await resolve(client, cfg.assembly)
        if found.warning:
            warnings.append(found.warning)
        if found.part is None:
            return summarize(cfg, [], warnings, source_of(cfg))
        source = f"BOM of {describe(found.part, flag_inactive=False)}"
        bom = await client.bom(int(found.part["pk"]))
        if not bom:
            warnings.append(f"{describe(found.part, flag_inactive=False)} has no BOM lines in InvenTree")
        for item in bom:
            if item.get("optional") and not cfg.include_optional:
                continue
            quantity = float(item.get("quantity") or 0)
            if quantity <= 0:
                warnings.append(f"BOM line {item.get('pk')} (sub-part pk {item.get('sub_part')}) has quantity "
                                f"{item.get('quantity')}; skipped")
                continue
            wanted.append((PartRef(pk=int(item["sub_part"])), quantity,
                           {"reference": str(item.get("reference") or ""), "optional": bool(item.get("optional"))}))
    else:
        source = "parts list"
        wanted = [(line, line.quantity, {}) for line in cfg.parts or []]
    founds = await _all([resolve(client, ref) for ref, _, _ in wanted])
    lines = []
    for (ref, quantity, extra), found in zip(wanted, founds, strict=True):
        if found.warning:
            warnings.append(found.warning)
        lines.append(line_of(ref, quantity, cfg.kits, found, field, extra))
    return summarize(cfg, lines, warnings, source)


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
    return {k: v for k, v in row.items() if k != "key"}


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
