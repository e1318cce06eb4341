"""The lines of a parts list or an assembly's BOM, read from InvenTree: each part found by pk, IPN (any case of any
script) or exact name + revision, a parts list in bulk, a BOM in three requests (the assembly, its lines, every
part they use with its stock), each sub-assembly's BOM in two more when they are expanded. What can be built of
them is monitors/parts_bom.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitors.parts_bom import DEFAULT_FIELD, MAX_DEPTH, ZERO, Bom, Need, dec, opt_dec
from shared.clients.inventree import BadReply, InvenTree, Unresolved


class PartRef(BaseModel):
    """One InvenTree part: exactly one of pk, ipn or name; `version` (InvenTree's `revision`) with ipn or name."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    pk: int | None = Field(None, ge=1, le=2**31 - 1, description="InvenTree part id.")
    ipn: str | None = Field(None, min_length=1, max_length=100, description="Internal part number (exact, any "
                            "case, any script).")
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
    first cut): IPN in any case of any script (casefold), name exact (any case only when no exact match),
    revision any case."""
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
                                        "give its version, or its pk")
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


async def gather_all(awaitables: list[Awaitable[Any]]) -> list[Any]:
    """gather, but every failure is retrieved (no 'exception never retrieved') and the first one raised."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for item in results:
        if isinstance(item, BaseException):
            raise item
    return results


# ------------------------------------------------------------------------------------------------ reading


def own_stock(part: dict[str, Any], field: str) -> Decimal:
    value = part.get(field)
    if value is None:
        raise BadReply(f"part pk {part.get('pk')} has no number in {field!r}, the INVENTREE_AVAILABLE_FIELD setting")
    return dec(value, f"{field!r} of part pk {part.get('pk')}, the INVENTREE_AVAILABLE_FIELD setting")


class Reader:
    """Reads the lines of one check from InvenTree: a parts list in bulk, a BOM in three requests (+ pages), and
    with `expand` every sub-assembly's BOM in two more. `warnings` collects what a person should know."""

    def __init__(self, client: InvenTree, field: str, include_optional: bool, expand: bool) -> None:
        self.client = client
        self.field = field
        self.include_optional = include_optional
        self.expand = expand
        self.warnings: list[str] = []

    def _warn(self, text: str | None) -> None:
        if text and text not in self.warnings:
            self.warnings.append(text)

    async def parts_list(self, lines: list[PartLine]) -> Bom:
        ipns = [line.ipn for line in lines if line.ipn is not None]
        names = [line.name for line in lines if line.name is not None]
        pks = list(dict.fromkeys(line.pk for line in lines if line.pk is not None))
        by_ipn, by_name, *parts = await gather_all([self.client.parts_by_ipns(ipns), self.client.parts_by_names(names),
                                                    *(self.client.part(pk) for pk in pks)])
        by_pk = dict(zip(pks, parts, strict=True))
        needs = []
        for line in lines:
            if line.pk is not None:
                part = by_pk[line.pk]
                found = choose(line, [part]) if part is not None else \
                    Found(None, "not_found", f"{line.label()}: no such part in InvenTree")
            elif line.ipn is not None:
                found = choose(line, by_ipn.get(line.ipn.casefold(), []))
            else:
                found = choose(line, by_name.get((line.name or "").casefold(), []))
            self._warn(found.warning)
            need = Need(line.label(), found.part, found.status, dec(line.quantity), ref=line)
            if found.part is not None:
                self._stock(need, found.part)
            needs.append(need)
        await self._expand(needs, 0, frozenset())
        return Bom(None, needs)

    async def assembly(self, ref: PartRef) -> Bom:
        """The BOM of the assembly `ref` names; Unresolved when there is none to check."""
        found = await resolve(self.client, ref)
        if found.part is None:
            what = "not in InvenTree" if found.status == "not_found" else "ambiguous in InvenTree"
            raise Unresolved(f"assembly {found.warning}", f"the assembly {ref.label()} is {what}")
        self._warn(found.warning)
        bom = await self.bom(found.part, 0, frozenset())
        if bom is None:
            name = describe(found.part, flag_inactive=False)
            reason = f"the assembly {name} has no BOM in InvenTree"
            if not found.part.get("assembly", True):
                raise Unresolved(f"{name} is not an assembly in InvenTree: it has no BOM to check", reason)
            raise Unresolved(f"{name} has no BOM lines in InvenTree", reason)
        if not bom.needs:
            raise Unresolved(f"every BOM line of {describe(found.part, flag_inactive=False)} is optional, and "
                             "include_optional is false: nothing to check", "no BOM lines to check")
        return bom

    async def bom(self, assembly: dict[str, Any], depth: int, seen: frozenset[int]) -> Bom | None:
        """The BOM of `assembly` (None when it has no lines): its lines and, from one list, every part they use."""
        pk = int(assembly["pk"])
        items, parts = await gather_all([self.client.bom(pk, substitutes=self.field != DEFAULT_FIELD),
                                         self.client.parts_in_bom(pk)])
        if not items:
            return None
        if not all(isinstance(item, dict) and isinstance(item.get("sub_part"), int) for item in items):
            raise BadReply(f"a BOM line of part pk {pk} has no sub_part")
        by_pk = {p.get("pk"): p for p in parts if isinstance(p, dict)}
        where = "" if depth == 0 else f" (in the BOM of {describe(assembly, flag_inactive=False)})"
        missing = list(dict.fromkeys(item["sub_part"] for item in items if item["sub_part"] not in by_pk))
        for sub, part in zip(missing, await gather_all([self.client.part(sub) for sub in missing]), strict=True):
            if part is not None:  # not in its in_bom_for list (changed in between): asked for by itself
                by_pk[sub] = part
        needs = []
        for item in items:
            if item.get("optional") and not self.include_optional:
                continue
            quantity = opt_dec(item.get("quantity"), f"quantity of BOM line {item.get('pk')}")
            if quantity <= 0:
                self._warn(f"BOM line {item.get('pk')} (sub-part pk {item['sub_part']}) has quantity "
                           f"{item.get('quantity')}; skipped{where}")
                continue
            ref = PartRef(pk=item["sub_part"])
            part = by_pk.get(item["sub_part"])
            found = choose(ref, [part]) if part is not None else \
                Found(None, "not_found", f"{ref.label()}: no such part in InvenTree")
            if found.warning:
                self._warn(found.warning + where)
            rounding = item.get("rounding_multiple")
            need = Need(ref.label(), found.part, found.status, quantity,
                        setup=opt_dec(item.get("setup_quantity"), "setup_quantity"),
                        attrition=opt_dec(item.get("attrition"), "attrition"),
                        rounding=opt_dec(rounding, "rounding_multiple") if rounding not in (None, "") else None,
                        optional=bool(item.get("optional")), consumable=bool(item.get("consumable")),
                        reference=str(item.get("reference") or ""))
            if found.part is not None:
                self._stock(need, found.part, item, by_pk)
            needs.append(need)
        await self._expand(needs, depth, seen | {pk})
        return Bom(assembly, needs)

    def _stock(self, need: Need, part: dict[str, Any], item: dict[str, Any] | None = None,
               by_pk: dict[Any, dict[str, Any]] | None = None) -> None:
        """The stock a line may use: as InvenTree annotates the BOM line (unallocated_stock), else the part's."""
        need.ordering = opt_dec(part.get("ordering"), "ordering")
        if part.get("virtual"):
            return
        if item is not None and self.field == DEFAULT_FIELD and item.get("available_stock") is not None:
            need.own = dec(item["available_stock"], "available_stock")
            need.substitutes = opt_dec(item.get("available_substitute_stock"), "available_substitute_stock")
            need.variants = opt_dec(item.get("available_variant_stock"), "available_variant_stock")
            return
        need.own = own_stock(part, self.field)
        if item is not None and by_pk is not None:
            subs = [by_pk.get(s.get("part")) for s in item.get("substitutes") or [] if isinstance(s, dict)]
            need.substitutes = sum((own_stock(s, self.field) for s in subs if s is not None), ZERO)

    async def _expand(self, needs: list[Need], depth: int, seen: frozenset[int]) -> None:
        if not self.expand or depth >= MAX_DEPTH:
            return
        subs = [n for n in needs if n.part is not None and n.part.get("assembly") and n.counted
                and n.part.get("pk") not in seen]
        boms = await gather_all([self.bom(n.part, depth + 1, seen) for n in subs if n.part is not None])
        for need, child in zip(subs, boms, strict=True):
            need.child = child
