"""The packed columns of compact results (shared/storage/packing.py): what folds, what does not, and that a rebuilt
result is the row it stands for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.storage.packing import (MAX_ENTRIES, MAX_TEMPLATES_CHARS, ROW, BlockBuilder, Entry, block_entries, best,
                                    fold_fields, summary_fields, summary_rollups, template_of, unfold)

HOUR = datetime(2026, 12, 1, 10, tzinfo=UTC)
MID = "0123456789abcdef0123456789abcdef"


def test_a_template_carries_only_what_it_can_rebuild_exactly():
    assert template_of({"outcome": "up", "status_code": 200, "ok": True, "ratio": 0.25}) is not None
    assert template_of({"expires": datetime(2027, 1, 1, tzinfo=UTC)}) is not None
    assert template_of({"big": 2**40}) is None  # an Int64 column: its own row
    assert template_of({"lines": [1, 2]}) is None
    assert template_of({"naive": datetime(2027, 1, 1)}) is None
    assert template_of({"nan": float("nan")}) is None


def test_a_fold_row_rebuilds_every_check_field_for_field():
    fields = {"outcome": "up", "latency_ms": None, "checked_at": None, "trigger": "timer", "status": "UP",
              "status_code": 200, "cert_expires_at": datetime(2027, 2, 1, 12, tzinfo=UTC)}
    template = template_of(fields)
    entries = [Entry(MID, HOUR + timedelta(minutes=n, microseconds=n), 1234 + n, 100.1 + n, 0, template)
               for n in range(60)]
    (part,) = fold_fields(HOUR, entries)
    assert "lt" in part  # every latency is in tenths of a millisecond: four bytes each
    items = unfold(MID, part)
    assert [i["ts"] for i in items] == sorted((e.slot for e in entries), reverse=True)
    newest = items[0]
    assert newest == {"monitor_id": MID, "ts": entries[-1].slot, "outcome": "up", "latency_ms": 159.1,
                      "checked_at": entries[-1].slot + timedelta(microseconds=1293), "trigger": "timer",
                      "status": "UP", "status_code": 200, "cert_expires_at": datetime(2027, 2, 1, 12, tzinfo=UTC)}
    odd = [Entry(MID, HOUR, 0, 100.123, 0, template), Entry(MID, HOUR + timedelta(seconds=1), 0, None, 0, template)]
    (exact,) = fold_fields(HOUR, odd)
    assert "lf" in exact and [i.get("latency_ms") for i in unfold(MID, exact)] == [None, 100.123]


def test_many_checks_in_an_hour_split_into_rows_within_the_limits():
    template = template_of({"outcome": "up", "checked_at": None})
    entries = [Entry(MID, HOUR + timedelta(seconds=n), 0, None, 0, template) for n in range(MAX_ENTRIES + 5)]
    parts = fold_fields(HOUR, entries)
    assert [p["fold_n"] for p in parts] == [MAX_ENTRIES, 5]
    assert all(len(p["slot"]) <= 64 * 1024 for p in parts)


def test_a_block_that_cannot_take_another_template_says_so():
    builder = BlockBuilder(HOUR)
    big = "x" * 1000
    n = 0
    while builder.add(MID, n, 0, 1.0, 0, template_of({"outcome": "up", "note": f"{big}{n}"})):
        n += 1
    assert 25 <= n <= MAX_TEMPLATES_CHARS // 1000  # the 30,000-character list is full: the caller writes a row
    assert builder.add(MID, n, 0, 1.0, ROW, None)  # … and counts it here without a template
    entity = builder.entity("pk", "rk")
    assert len(entity["tpls"]) <= MAX_TEMPLATES_CHARS
    entries = list(block_entries(entity))
    assert len(entries) == n + 1 and entries[-1].row and entries[-1].template is None


def test_one_check_per_slot_a_row_first_then_the_earliest():
    slot = HOUR + timedelta(minutes=5)
    late = Entry(MID, slot, 900, 1.0, 0, "{}")
    early = Entry(MID, slot, 100, 2.0, 0, "{}")
    row = Entry(MID, slot, 999, 3.0, ROW | 2, None)
    assert best([late, early])[(MID, slot)] is early
    assert best([late, row, early])[(MID, slot)] is row


def test_an_hour_summary_holds_every_monitor():
    rollups = {f"{n:032x}": {"count": n, "up": n, "degraded": 0, "maintenance": 1, "latency_count": n,
                             "latency_sum": 1.5 * n, "latency_min": 1.0, "latency_max": 2.0} for n in range(2500)}
    parts = summary_fields(rollups)
    assert len(parts) == 2
    back = {}
    for part in parts:
        back.update(summary_rollups(part))
    assert back == rollups
