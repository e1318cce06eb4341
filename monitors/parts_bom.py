"""What can be built of a parts list or an assembly's BOM (read by monitors/parts_read.py), counted as InvenTree
counts it (part/models.py BomItem and Part.can_build, part/filters.py annotate_bom_item_can_build, at the commit
the fixtures were recorded from):

- A line needs, for n kits, quantity × n × (1 + attrition/100) + setup_quantity, rounded up to a multiple of
  rounding_multiple when one is set (BomItem.get_required_quantity): that is the "required" of the report.
- Kits buildable (Part.can_build, `can_build` of /api/part/<pk>/requirements/): the least over the lines of
  (available − setup_quantity) / (quantity × (1 + attrition/100)), at least 0, whole kits (rounding_multiple is
  not part of it in InvenTree either). Optional lines count; consumable lines and virtual parts do not (a virtual
  part holds no stock: firmware, labour); a BOM with nothing that counts can build 0.
- A line's available stock is the sub-part's own unallocated stock plus its substitutes' and its variants' (the
  BOM line's `available_stock`, `available_substitute_stock`, `available_variant_stock`). With
  INVENTREE_AVAILABLE_FIELD = in_stock or total_in_stock, the sub-part's and its substitutes' figure of that name
  instead (allocations ignored; total_in_stock includes variants, in_stock does not).

Where this differs from InvenTree, on purpose (docs/kinds/parts.md):
- The same part on two lines draws on one stock: both lines' needs together (InvenTree gives each line the whole
  stock, so its can_build is too high there). A part's substitute and variant stock is counted once for it.
- `expand_subassemblies`: a line whose part is itself an assembly uses its own stock first and builds the rest
  from its BOM, drawing on the same stock as everything else (a screw used at both levels is not counted
  twice); kits buildable is then the most kits for which all of that fits (InvenTree issue #6665).

The stock is drawn line by line in BOM order; kits buildable is found by bisection over that draw, in exact
decimals (the JSON numbers as written).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from shared.clients.inventree import BadReply

if TYPE_CHECKING:
    from monitors.parts_read import PartRef

ZERO = Decimal(0)
MAX_DEPTH = 4  # sub-assembly levels expanded below the list or assembly itself
MAX_KITS = 10**12  # kits buildable are counted up to this (a part with no limit to speak of)
DEFAULT_FIELD = "unallocated_stock"


def dec(value: Any, what: str = "") -> Decimal:
    """A JSON number (25.0, "25.000000", 4) as the Decimal it says, never below 0; a non-number is BadReply."""
    try:
        number = Decimal(str(value)) if not isinstance(value, bool) else Decimal("NaN")
    except (InvalidOperation, ValueError):
        number = Decimal("NaN")
    if not number.is_finite():
        raise BadReply(f"{what or 'a quantity'} is not a number: {value!r}")
    return max(ZERO, number)


def opt_dec(value: Any, what: str, default: Decimal = ZERO) -> Decimal:
    return default if value is None or value == "" else dec(value, what)


@dataclass(slots=True)
class Need:
    """One line of a parts list or a BOM, resolved (`part` None: not found or ambiguous, `status` says which)."""

    label: str  # how the line named the part ("IPN RES-1", "pk 4")
    part: dict[str, Any] | None
    status: str  # "ok" | "not_found" | "ambiguous"
    quantity: Decimal
    setup: Decimal = ZERO
    attrition: Decimal = ZERO  # percent
    rounding: Decimal | None = None
    optional: bool = False
    consumable: bool = False
    reference: str = ""
    own: Decimal = ZERO  # the part's own available stock
    substitutes: Decimal = ZERO  # stock of its substitutes this line may use
    variants: Decimal = ZERO  # stock of its variants this line may use
    ordering: Decimal = ZERO  # on open purchase orders
    child: Bom | None = None  # its own BOM, when sub-assemblies are expanded
    ref: PartRef | None = None  # the line as given (a parts list)

    @property
    def key(self) -> str:
        return f"pk:{self.part.get('pk')}" if self.part is not None else f"ref:{self.label.casefold()}"

    @property
    def virtual(self) -> bool:
        return bool(self.part is not None and self.part.get("virtual"))

    @property
    def counted(self) -> bool:
        """Limits what can be built: anything but a consumable line or a virtual part (unresolved lines count:
        nobody builds without them)."""
        return not self.consumable and not self.virtual

    @property
    def per_kit(self) -> Decimal:
        return self.quantity * (1 + self.attrition / 100)

    def required(self, kits: int | Decimal, rounded: bool = True) -> Decimal:
        """BomItem.get_required_quantity: quantity × kits, + attrition %, + setup, up to a rounding multiple."""
        if kits <= 0:
            return ZERO
        need = self.quantity * kits
        if self.attrition > 0:
            need *= 1 + self.attrition / 100
        if self.setup > 0:
            need += self.setup
        if rounded and self.rounding is not None and self.rounding > 0:
            need = math.ceil(need / self.rounding) * self.rounding
        return need


@dataclass(slots=True)
class Bom:
    part: dict[str, Any] | None  # the assembly (None: a parts list)
    needs: list[Need]


@dataclass(slots=True)
class Ledger:
    """What one draw of the stock came to, per part key."""

    left: dict[str, Decimal]
    direct: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))  # needed by the top level
    nested: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))  # needed to build sub-assemblies
    unmet: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    buildable: dict[str, int] = field(default_factory=dict)  # sub-assembly key → buildable from its BOM
    built: dict[str, int] = field(default_factory=dict)


def stock_of(bom: Bom) -> dict[str, Decimal]:
    """Each part's available stock, once: its own, plus the most substitute and variant stock a line of it may use
    (the whole tree of expanded sub-assemblies shares it)."""
    stock: dict[str, Decimal] = {}
    extra: dict[str, Decimal] = {}

    def walk(node: Bom, depth: int) -> None:
        for need in node.needs:
            if need.part is None:
                stock.setdefault(need.key, ZERO)
                continue
            stock[need.key] = need.own
            extra[need.key] = max(extra.get(need.key, ZERO), need.substitutes + need.variants)
            if need.child is not None and depth < MAX_DEPTH:
                walk(need.child, depth + 1)

    walk(bom, 0)
    return {key: value + extra.get(key, ZERO) for key, value in stock.items()}


def draw(bom: Bom, kits: int, ledger: Ledger, rounded: bool, report: bool = False, depth: int = 0) -> bool:
    """Take what `kits` of `bom` need from ledger.left, line by line; a sub-assembly short of stock is built from
    its BOM (when expanded). True when everything was there. `report`: record per part, and build a sub-assembly
    only as far as its components go (a person reads which parts are short, not just "no")."""
    whole = True
    for need in bom.needs:
        if not need.counted:
            continue
        amount = need.required(kits, rounded)
        if amount <= 0:
            continue
        key = need.key
        (ledger.direct if depth == 0 else ledger.nested)[key] += amount
        take = min(amount, ledger.left.get(key, ZERO))
        ledger.left[key] = ledger.left.get(key, ZERO) - take
        rest = amount - take
        if rest <= 0:
            continue
        units = math.ceil(rest)
        if need.child is not None and depth < MAX_DEPTH:
            if report:
                can = most_kits(need.child, dict(ledger.left), depth + 1)
                ledger.buildable[key] = min(ledger.buildable.get(key, can), can)
                build = min(units, can)
                ledger.built[key] = ledger.built.get(key, 0) + build
                draw(need.child, build, ledger, rounded, report, depth + 1)
                rest = max(ZERO, rest - build)
                if rest <= 0:
                    continue
            elif draw(need.child, units, ledger, rounded, report, depth + 1):
                continue
            else:
                whole = False
                continue
        ledger.unmet[key] += rest
        whole = False
    return whole


def _fits(bom: Bom, stock: dict[str, Decimal], kits: int, depth: int) -> bool:
    return draw(bom, kits, Ledger(dict(stock)), rounded=False, depth=depth)


def most_kits(bom: Bom, stock: dict[str, Decimal], depth: int = 0) -> int:
    """The most kits of `bom` the stock allows (Part.can_build when nothing is shared or expanded); 0 when no line
    limits it (nothing that holds stock: InvenTree's answer too)."""
    if not any(need.counted for need in bom.needs) or not _fits(bom, stock, 1, depth):
        return 0
    low, high = 1, 2
    while _fits(bom, stock, high, depth):
        if high >= MAX_KITS:
            return MAX_KITS
        low, high = high, min(high * 2, MAX_KITS)
    while high - low > 1:  # low fits, high does not
        middle = (low + high) // 2
        if _fits(bom, stock, middle, depth):
            low = middle
        else:
            high = middle
    return low


def line_kits(needs: list[Need], available: Decimal) -> int:
    """Kits one part's lines allow on their own: (available − setup) / (quantity × (1 + attrition %)), whole."""
    per_kit = sum((need.per_kit for need in needs), ZERO)
    if per_kit <= 0:
        return 0
    return max(0, math.floor((available - sum((need.setup for need in needs), ZERO)) / per_kit))
