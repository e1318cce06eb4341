"""Many blocks at once, as columns: what the readers of every monitor (snapshots, Prometheus, digests) and the
hourly compaction need, without an object per check.

One check per (monitor, slot), by the rule every reader follows (packing.Entry.rank: a check with its own row,
then the earliest): a pass over the slots finds the few duplicates (two runs of one slot) and drops the losers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.storage.packing import MAINTENANCE, NO_TEMPLATE, ROW, _column

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(slots=True)
class _Block:
    hour: datetime
    hour_us: int
    ids: bytes
    slot: Any
    dt: Any
    lat: Any
    code: Any
    tp: Any
    texts: list[str]


def _decode(entity: dict[str, Any]) -> _Block:
    h: datetime = entity["hour"]
    hour = datetime(h.year, h.month, h.day, h.hour, tzinfo=UTC)
    return _Block(hour, (hour - _EPOCH) // _US, bytes(entity.get("ids") or b""), _column("I", entity.get("slot")),
                  _column("i", entity.get("dt")), _column("d", entity.get("lat")), _column("B", entity.get("oc")),
                  _column("H", entity.get("tp")), json.loads(entity.get("tpls") or "[]"))


def _rank(block: _Block, i: int) -> tuple[int, int, float]:
    lat = block.lat[i]
    return (0 if block.code[i] & ROW else 1, block.dt[i], -1.0 if math.isnan(lat) else lat)


class BlockSet:
    def __init__(self, entities: list[dict[str, Any]], since: datetime | None = None) -> None:
        self.blocks = [_decode(e) for e in entities]
        self.since_us = (since - _EPOCH) // _US if since else None
        self.dropped: set[tuple[int, int]] = set()
        seen: dict[tuple[bytes, int], tuple[int, int]] = {}
        for b, block in enumerate(self.blocks):
            ids, base, slot = block.ids, block.hour_us, block.slot
            for i in range(len(block.code)):
                key = (ids[16 * i:16 * i + 16], base + slot[i])
                known = seen.setdefault(key, (b, i))
                if known != (b, i):
                    kb, ki = known
                    if _rank(block, i) < _rank(self.blocks[kb], ki):
                        self.dropped.add(known)
                        seen[key] = (b, i)
                    else:
                        self.dropped.add((b, i))

    def checks(self) -> Iterator[tuple[_Block, int]]:
        """Every kept check (its block and index) at or after `since`."""
        dropped, since = self.dropped, self.since_us
        for b, block in enumerate(self.blocks):
            base, slot = block.hour_us, block.slot
            for i in range(len(block.code)):
                if (dropped and (b, i) in dropped) or (since is not None and base + slot[i] < since):
                    continue
                yield block, i

    def tallies(self) -> tuple[dict[str, list[float]], dict[str, tuple[int, _Block, int]]]:
        """Per monitor id: [checks, up, degraded, maintenance, latency sum, count, min, max] (uptime's rules:
        shared/uptime.py), and its newest check (slot µs, block, index)."""
        acc: dict[bytes, list[float]] = {}
        newest: dict[bytes, tuple[int, _Block, int]] = {}
        for block, i in self.checks():
            mid = block.ids[16 * i:16 * i + 16]
            a = acc.get(mid)
            if a is None:
                a = acc[mid] = [0, 0, 0, 0, 0.0, 0, math.inf, -math.inf]
            at = block.hour_us + block.slot[i]
            known = newest.get(mid)
            if known is None or at > known[0]:
                newest[mid] = (at, block, i)
            code = block.code[i]
            if code & MAINTENANCE:
                a[3] += 1
                continue
            outcome = code & 0x0F
            if outcome == 3:
                continue
            a[0] += 1
            if outcome <= 1:
                a[1] += 1
            if outcome == 1:
                a[2] += 1
            lat = block.lat[i]
            if outcome != 2 and not math.isnan(lat):
                a[4] += lat
                a[5] += 1
                a[6] = min(a[6], lat)
                a[7] = max(a[7], lat)
        return {k.hex(): v for k, v in acc.items()}, {k.hex(): v for k, v in newest.items()}

    def per_monitor(self) -> dict[str, list[tuple[_Block, int]]]:
        out: dict[bytes, list[tuple[_Block, int]]] = {}
        for block, i in self.checks():
            out.setdefault(block.ids[16 * i:16 * i + 16], []).append((block, i))
        return {k.hex(): v for k, v in out.items()}


def template(block: _Block, i: int) -> str | None:
    index = block.tp[i]
    return None if index == NO_TEMPLATE else block.texts[index]


def latency(block: _Block, i: int) -> float | None:
    lat = block.lat[i]
    return None if math.isnan(lat) else lat


def slot_of(block: _Block, i: int) -> datetime:
    return block.hour + timedelta(microseconds=block.slot[i])
