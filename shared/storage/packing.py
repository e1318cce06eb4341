"""Compact results: checks packed into columns, so a steady check costs bytes, not an entity.

One codec, two shapes:

- a **block** (table `blocks`): the checks a tick settled, for one shard of monitors and one hour — every check
  (its outcome, latency and flags: what uptime counts), and for a steady success also the fields its result row
  would have had (a *template*: outcome, status, trigger, the kind's data — shared by every check that has the same
  ones). A check that is not steady (a failure, a change, a degraded check, one that does not fit) is flagged ROW:
  it also has a row of its own in `results`, and the block only counts it.
- a **fold row** (table `results`, next to the rows): one monitor's steady successes of one hour, written by the
  hourly compaction from that hour's blocks (shared/storage/compaction.py).

Columns are little-endian arrays: slot offset from the hour (uint32 µs), checked_at − slot (int32 µs), latency
(float64, NaN = none; in fold rows int32 tenths of a ms when every value is one), outcome code | flags (uint8),
template index (uint16; uint8 in fold rows). A rebuilt result is the row it replaces, field for field.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

OUTCOMES = ("up", "degraded", "down", "error")
CODE = {name: n for n, name in enumerate(OUTCOMES)}
MAINTENANCE = 0x10  # flag: checked during a maintenance window (uptime leaves it out)
ROW = 0x20  # flag: the check has its own row in `results`; the block only counts it
NO_TEMPLATE = 0xFFFF
VARYING = ("latency_ms", "checked_at")  # per check, in columns; every other field is in the template
MAX_ENTRIES = 1800  # per entity: 16-byte ids stay far below the 64 KiB a binary property may hold
MAX_TEMPLATES_CHARS = 30_000  # the JSON list of templates, within a string property's 32 Ki characters
_INT32 = 2**31
_HOUR_US = 3_600_000_000
_LITTLE = sys.byteorder == "little"


def _bytes(column: array) -> bytes:
    if _LITTLE:
        return column.tobytes()
    swapped = array(column.typecode, column)
    swapped.byteswap()
    return swapped.tobytes()


def _column(code: str, data: bytes | None) -> array:
    column = array(code)
    if data:
        column.frombytes(bytes(data))
        if not _LITTLE:
            column.byteswap()
    return column


# ------------------------------------------------------------------------------------------------ templates


def template_of(fields: dict[str, Any]) -> str | None:
    """The template of a result's fields (their JSON, datetimes tagged), or None when a value has a type a
    template cannot carry exactly (the check then gets a row of its own)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in VARYING:
            out[name] = None  # a placeholder: the value is in a column, the position is kept
        elif isinstance(value, str | bool) or (isinstance(value, float) and math.isfinite(value)):
            out[name] = value
        elif isinstance(value, int):
            if not -_INT32 <= value < _INT32:
                return None
            out[name] = value
        elif isinstance(value, datetime) and value.tzinfo is not None:
            out[name] = {"$dt": value.astimezone(UTC).isoformat()}
        else:
            return None
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def _decode_template(text: str) -> dict[str, Any]:
    out = {}
    for name, value in json.loads(text).items():
        out[name] = datetime.fromisoformat(value["$dt"]) if isinstance(value, dict) else value
    return out


class Templates:
    """Decoded templates of one entity (parsed once, shared by the checks that use them)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self._decoded: dict[int, dict[str, Any]] = {}

    def get(self, index: int) -> dict[str, Any]:
        found = self._decoded.get(index)
        if found is None:
            found = self._decoded[index] = _decode_template(self.texts[index])
        return found


def rebuild(monitor_id: str, slot: datetime, dt_us: int, latency: float | None,
            template: dict[str, Any]) -> dict[str, Any]:
    """The result row a folded check stands for."""
    item: dict[str, Any] = {"monitor_id": monitor_id, "ts": slot}
    for name, value in template.items():
        if name == "latency_ms":
            if latency is not None:
                item[name] = latency
        elif name == "checked_at":
            item[name] = slot + timedelta(microseconds=dt_us)
        else:
            item[name] = value
    return item


# -------------------------------------------------------------------------------------------------- entries


@dataclass(slots=True)
class Entry:
    """One check, decoded (compaction and readers; the engine writes columns directly)."""

    monitor_id: str
    slot: datetime
    dt_us: int
    latency: float | None
    code: int  # outcome code | flags
    template: str | None  # its JSON; None when the check has a row of its own

    @property
    def outcome(self) -> str:
        return OUTCOMES[self.code & 0x0F]

    @property
    def row(self) -> bool:
        return bool(self.code & ROW)

    def rank(self) -> tuple[int, int, float]:
        """Of two entries for one slot (duplicate runs) the smaller rank wins, in every reader alike: a check
        that has its own row, then the earliest."""
        return (0 if self.row else 1, self.dt_us, self.latency if self.latency is not None else -1.0)


def best(entries: Iterator[Entry] | list[Entry]) -> dict[tuple[str, datetime], Entry]:
    """One entry per (monitor, slot)."""
    out: dict[tuple[str, datetime], Entry] = {}
    for entry in entries:
        key = (entry.monitor_id, entry.slot)
        known = out.get(key)
        if known is None or entry.rank() < known.rank():
            out[key] = entry
    return out


# --------------------------------------------------------------------------------------------------- blocks


@dataclass
class BlockBuilder:
    """The checks of one (hour, shard) while a tick settles: columns grow in place, one entity per flush."""

    hour: datetime
    ids: bytearray = field(default_factory=bytearray)
    slot: array = field(default_factory=lambda: array("I"))
    dt: array = field(default_factory=lambda: array("i"))
    lat: array = field(default_factory=lambda: array("d"))
    code: array = field(default_factory=lambda: array("B"))
    tp: array = field(default_factory=lambda: array("H"))
    templates: dict[str, int] = field(default_factory=dict)
    chars: int = 2

    def __len__(self) -> int:
        return len(self.code)

    def add(self, monitor_id: str, slot_us: int, dt_us: int, latency: float | None, code: int,
            template: str | None) -> bool:
        """Add a check; False when it cannot be folded here (the caller writes it as a row and adds it again
        with the ROW flag and no template, which always fits)."""
        index = NO_TEMPLATE
        if template is not None:
            if not -_INT32 <= dt_us < _INT32:
                return False
            known = self.templates.get(template)
            if known is None:
                cost = len(json.dumps(template)) + 1  # as it is stored: a JSON string in a JSON list (ASCII)
                if self.chars + cost > MAX_TEMPLATES_CHARS or len(self.templates) >= NO_TEMPLATE:
                    return False
                known = self.templates[template] = len(self.templates)
                self.chars += cost
            index = known
        self.ids += bytes.fromhex(monitor_id)
        self.slot.append(slot_us)
        self.dt.append(dt_us if -_INT32 <= dt_us < _INT32 else 0)
        self.lat.append(math.nan if latency is None else latency)
        self.code.append(code)
        self.tp.append(index)
        return True

    def entity(self, pk: str, rk: str) -> dict[str, Any]:
        return {"PartitionKey": pk, "RowKey": rk, "hour": self.hour, "n": len(self), "ids": bytes(self.ids),
                "slot": _bytes(self.slot), "dt": _bytes(self.dt), "lat": _bytes(self.lat),
                "oc": _bytes(self.code), "tp": _bytes(self.tp),
                "tpls": json.dumps(list(self.templates), separators=(",", ":"))}


def block_entries(entity: dict[str, Any], monitor_id: str | None = None) -> Iterator[Entry]:
    """The checks of a block (only those of `monitor_id` when given)."""
    ids = bytes(entity.get("ids") or b"")
    hour: datetime = entity["hour"]
    hour = datetime(hour.year, hour.month, hour.day, hour.hour, tzinfo=UTC)
    slots, dts, lats = _column("I", entity.get("slot")), _column("i", entity.get("dt")), _column("d", entity.get("lat"))
    codes, tps = _column("B", entity.get("oc")), _column("H", entity.get("tp"))
    texts: list[str] = json.loads(entity.get("tpls") or "[]")
    if monitor_id is not None:
        wanted = bytes.fromhex(monitor_id)
        positions = []
        start = ids.find(wanted)
        while start >= 0:
            if start % 16 == 0:
                positions.append(start // 16)
            start = ids.find(wanted, start + 1)
    else:
        positions = list(range(len(codes)))
    for i in positions:
        lat = lats[i]
        index = tps[i]
        yield Entry(monitor_id or ids[16 * i:16 * i + 16].hex(), hour + timedelta(microseconds=slots[i]), dts[i],
                    None if math.isnan(lat) else lat, codes[i], None if index == NO_TEMPLATE else texts[index])


# ----------------------------------------------------------------------------------------------- fold rows


FOLD_BYTES = 60_000  # a fold row's packed checks before compression: within one binary property even if incompressible
Check = tuple[int, int, float | None, str]  # (slot µs in its hour, checked_at − slot µs, latency, template)


def fold_fields(hour: datetime, checks: list[Check]) -> list[dict[str, Any]]:
    """The properties of one monitor's fold row(s) for an hour (its steady checks, any order): the columns —
    slot deltas, checked_at − slot, latency, template index — and the templates, zlib-compressed in one binary
    property (an hour of a one-minute monitor: a few hundred bytes). Several rows when they do not fit one."""
    checks = sorted(checks, key=lambda c: c[0])
    out, start = [], 0
    while start < len(checks):
        texts: dict[str, int] = {}
        size, end = 0, start
        while end < len(checks) and end - start < MAX_ENTRIES:
            text = checks[end][3]
            cost = 18 + (len(text.encode()) + 3 if text not in texts else 0)
            if size + cost > FOLD_BYTES and end > start:
                break
            texts.setdefault(text, len(texts))
            size += cost
            end += 1
        out.append(_fold_part(hour, checks[start:end], texts))
        start = end
    return out


def _fold_part(hour: datetime, part: list[Check], texts: dict[str, int]) -> dict[str, Any]:
    lats = [c[2] for c in part]
    tenths = all(v is None or (abs(v) < 2e8 and round(v * 10) / 10 == v) for v in lats)
    previous, deltas = 0, array("I")
    for c in part:
        deltas.append(c[0] - previous)
        previous = c[0]
    lat = array("i", [-_INT32 if v is None else round(v * 10) for v in lats]) if tenths \
        else array("d", [math.nan if v is None else v for v in lats])
    wide = len(texts) > 255
    payload = b"".join([_bytes(deltas), _bytes(array("i", [c[1] for c in part])), _bytes(lat),
                        _bytes(array("H" if wide else "B", [texts[c[3]] for c in part])),
                        json.dumps(list(texts), separators=(",", ":")).encode()])
    return {"ts": hour, "fold_n": len(part), "fold_v": (0 if tenths else 1) | (2 if wide else 0),
            "fold": zlib.compress(payload, 6)}


def unfold(monitor_id: str, entity: dict[str, Any]) -> list[dict[str, Any]]:
    """The result rows a fold row stands for, newest first."""
    hour: datetime = entity["ts"]
    hour = datetime(hour.year, hour.month, hour.day, hour.hour, tzinfo=UTC)
    n, flags = int(entity["fold_n"]), int(entity.get("fold_v", 0))
    payload = zlib.decompress(bytes(entity["fold"]))
    lat_size, tp_size = (8 if flags & 1 else 4), (2 if flags & 2 else 1)
    at = 0

    def take(code: str, size: int) -> array:
        nonlocal at
        column = _column(code, payload[at:at + n * size])
        at += n * size
        return column

    slots = list(accumulate(take("I", 4)))
    dts = take("i", 4)
    raw = take("d" if flags & 1 else "i", lat_size)
    lats: list[float | None] = [None if math.isnan(v) else v for v in raw] if flags & 1 \
        else [None if v == -_INT32 else v / 10 for v in raw]
    tps = take("H" if flags & 2 else "B", tp_size)
    templates = Templates(json.loads(payload[at:].decode() or "[]"))
    items = [rebuild(monitor_id, hour + timedelta(microseconds=slots[i]), dts[i], lats[i], templates.get(tps[i]))
             for i in range(n)]
    items.reverse()
    return items


def _offset(hour: datetime, at: datetime) -> int:
    offset = round((at - hour) / timedelta(microseconds=1))
    if not 0 <= offset < _HOUR_US:
        raise ValueError(f"{at} is not in the hour {hour}")
    return offset


def slot_us(hour: datetime, at: datetime) -> int:
    """A slot's offset in its hour, in µs (the block column)."""
    return _offset(hour, at)


# ------------------------------------------------------------------------------------------ hour summaries

_SUMMARY_INTS = ("count", "up", "degraded", "maintenance", "latency_count")
_SUMMARY_FLOATS = ("latency_sum", "latency_min", "latency_max")
SUMMARY_PART = 2000  # monitors per summary entity (its largest column, the ids, stays at 32 KB)


def summary_fields(rollups: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every monitor's rollup of one hour as columns (what a reader of all monitors needs in a few entities)."""
    ids = sorted(rollups)
    out = []
    for start in range(0, max(len(ids), 1), SUMMARY_PART):
        part = ids[start:start + SUMMARY_PART]
        fields: dict[str, Any] = {"n": len(part), "ids": b"".join(bytes.fromhex(i) for i in part)}
        for name in _SUMMARY_INTS:
            fields[name] = _bytes(array("I", [int(rollups[i].get(name, 0)) for i in part]))
        for name in _SUMMARY_FLOATS:
            fields[name] = _bytes(array("d", [float(rollups[i].get(name, 0.0)) for i in part]))
        out.append(fields)
    return out


def summary_rollups(entity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ids = bytes(entity.get("ids") or b"")
    columns = {name: _column("I", entity.get(name)) for name in _SUMMARY_INTS}
    columns.update({name: _column("d", entity.get(name)) for name in _SUMMARY_FLOATS})
    return {ids[16 * i:16 * i + 16].hex(): {name: col[i] for name, col in columns.items()}
            for i in range(int(entity.get("n", 0)))}
