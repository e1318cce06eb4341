"""The packed columns of compact results (shared/storage/packing.py): what folds, what does not, and that a rebuilt
result is the row it stands for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.storage.packing import (
    MAX_ENTRIES,
    MAX_TEMPLATES_CHARS,
    ROW,
    BlockBuilder,
    Entry,
    best,
    block_entries,
    fold_fields,
    summary_fields,
    summary_rollups,
    template_of,
    unfold,
)

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
    assert template is not None
    checks = [(n * 60_000_000 + n, 1234 + n, 100.1 + n, template) for n in range(60)]
    (part,) = fold_fields(HOUR, checks)
    assert part["fold_v"] == 0  # every latency is in tenths of a millisecond: four bytes each
    assert len(part["fold"]) < 60 * 8  # an hour of a one-minute monitor: a few hundred bytes
    items = unfold(MID, part)
    assert [i["ts"] for i in items] == sorted((HOUR + timedelta(microseconds=c[0]) for c in checks), reverse=True)
    last = HOUR + timedelta(minutes=59, microseconds=59)
    assert items[0] == {"monitor_id": MID, "ts": last, "outcome": "up", "latency_ms": 159.1,
                        "checked_at": last + timedelta(microseconds=1293), "trigger": "timer", "status": "UP",
                        "status_code": 200, "cert_expires_at": datetime(2027, 2, 1, 12, tzinfo=UTC)}
    odd = [(0, 0, 100.123, template), (1_000_000, 0, None, template)]
    (exact,) = fold_fields(HOUR, odd)
    assert exact["fold_v"] == 1 and [i.get("latency_ms") for i in unfold(MID, exact)] == [None, 100.123]


def test_many_checks_in_an_hour_split_into_rows_within_the_limits():
    template = template_of({"outcome": "up", "checked_at": None})
    assert template is not None
    parts = fold_fields(HOUR, [(n * 1_000_000, 0, None, template) for n in range(MAX_ENTRIES + 5)])
    assert [p["fold_n"] for p in parts] == [MAX_ENTRIES, 5]
    many = [(n, 0, 1.0, template_of({"outcome": "up", "reading": "x" * 900 + str(n)}) or "") for n in range(200)]
    parts = fold_fields(HOUR, many)  # a template per check, 900 characters each: the rows split by size
    assert len(parts) >= 3 and sum(p["fold_n"] for p in parts) == 200
    assert all(len(p["fold"]) <= 64 * 1024 for p in parts)
    assert sorted(i["ts"] for p in parts for i in unfold(MID, p)) == [HOUR + timedelta(microseconds=n)
                                                                        for n in range(200)]


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
