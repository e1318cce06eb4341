"""Maintenance windows: the model's rules and when windows are (shared/windows/model.py, schedule.py) — DST in
local wall time, gaps and folds, month and week rules, scope, boundaries, and that a search started near `at`
finds what a search from the rule's first occurrence finds."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr

import monitors
from shared.errors import Invalid
from shared.windows import Windows, parse
from shared.windows.schedule import Compiled, to_utc

BERLIN = ZoneInfo("Europe/Berlin")
BERLIN_EXAMPLE = {"name": "Patch day", "rrule": "FREQ=MONTHLY;BYDAY=1WE", "at": "02:00", "duration_minutes": 120,
                  "timezone": "Europe/Berlin", "all": True}


def window(**fields):
    w = parse({"name": "w", **fields})
    w.id = uuid.uuid4().hex
    return w


def monitor(kind="website", tags=(), **extra):
    spec = {"kind": kind, "id": uuid.uuid4().hex, "name": "m", "tags": list(tags), **extra}
    if kind == "website":
        spec["url"] = "http://127.0.0.1:9/"
    return monitors.parse_spec(spec)


def u(*args):
    return datetime(*args, tzinfo=UTC)


def starts(w, since, days):
    return [o.start for o in Compiled(w).upcoming(since, timedelta(days=days))]


# -- DST ------------------------------------------------------------------------------------------------------


def test_sunday_window_keeps_0200_berlin_across_spring_change():
    w = window(rrule="FREQ=WEEKLY;BYDAY=SU", at="02:00", duration_minutes=120, timezone="Europe/Berlin", all=True)
    occ = Compiled(w).upcoming(u(2027, 3, 14), timedelta(days=28))
    # 2027-03-28 02:00 does not exist in Berlin (02:00 CET -> 03:00 CEST): the first valid instant after it
    assert [o.start for o in occ] == [u(2027, 3, 14, 1), u(2027, 3, 21, 1), u(2027, 3, 28, 1), u(2027, 4, 4, 0)]
    assert [o.start.astimezone(BERLIN).time() for o in occ] == [time(2), time(2), time(3), time(2)]
    assert all(o.end - o.start == timedelta(hours=2) for o in occ)  # elapsed time, also across the change


def test_sunday_window_keeps_0200_berlin_across_autumn_change():
    w = window(rrule="FREQ=WEEKLY;BYDAY=SU", at="02:00", duration_minutes=120, timezone="Europe/Berlin", all=True)
    occ = Compiled(w).upcoming(u(2026, 10, 17), timedelta(days=16))
    # 2026-10-25 02:00 happens twice: the first (CEST, fold=0) one; the window lasts 2 elapsed hours (to 03:00 CET)
    assert [o.start for o in occ] == [u(2026, 10, 18, 0), u(2026, 10, 25, 0), u(2026, 11, 1, 1)]
    assert occ[1].end == u(2026, 10, 25, 2)
    assert all(o.start.astimezone(BERLIN).time() == time(2) for o in occ)


def test_start_in_the_spring_gap_moves_to_the_first_valid_instant():
    w = window(rrule="FREQ=DAILY", at="02:30", duration_minutes=60, timezone="Europe/Berlin", all=True)
    assert starts(w, u(2027, 3, 27), 3) == [u(2027, 3, 27, 1, 30), u(2027, 3, 28, 1), u(2027, 3, 29, 0, 30)]
    assert to_utc(datetime(2027, 3, 28, 2, 59), BERLIN) == u(2027, 3, 28, 1)
    assert to_utc(datetime(2026, 10, 25, 2, 30), BERLIN) == u(2026, 10, 25, 0, 30)  # fold=0


def test_cron_is_evaluated_in_the_zone_wall_clock():
    w = window(cron="0 2 * * 0", duration_minutes=120, timezone="Europe/Berlin", all=True)
    assert starts(w, u(2027, 3, 20), 16) == [u(2027, 3, 21, 1), u(2027, 3, 28, 1), u(2027, 4, 4, 0)]
    assert starts(w, u(2026, 10, 17), 16) == [u(2026, 10, 18, 0), u(2026, 10, 25, 0), u(2026, 11, 1, 1)]
    ny = window(cron="30 2 * * *", duration_minutes=30, timezone="America/New_York", all=True)
    # US spring change 2027-03-14: 02:30 EST does not exist -> 03:00 EDT (07:00 UTC)
    assert starts(ny, u(2027, 3, 13), 3) == [u(2027, 3, 13, 7, 30), u(2027, 3, 14, 7), u(2027, 3, 15, 6, 30)]
    compiled = Compiled(w)
    assert compiled.slot(u(2027, 3, 28, 2, 59))[2] is not None
    assert compiled.slot(u(2027, 3, 28, 3))[2] is None


# -- month and week rules, and the search root --------------------------------------------------------------


def test_berlin_example_first_wednesday_for_twelve_months():
    w = parse(BERLIN_EXAMPLE)
    w.id = "a" * 32
    occ = Compiled(w).upcoming(u(2026, 1, 1), timedelta(days=365))
    days = [date(2026, 1, 7), date(2026, 2, 4), date(2026, 3, 4), date(2026, 4, 1), date(2026, 5, 6),
            date(2026, 6, 3), date(2026, 7, 1), date(2026, 8, 5), date(2026, 9, 2), date(2026, 10, 7),
            date(2026, 11, 4), date(2026, 12, 2)]
    assert [o.start.astimezone(BERLIN).date() for o in occ] == days
    assert all(o.start.astimezone(BERLIN).time() == time(2) and o.end - o.start == timedelta(hours=2) for o in occ)
    assert occ[0].start == u(2026, 1, 7, 1) and occ[3].start == u(2026, 4, 1, 0)  # CET, then CEST


RULES = [
    ("FREQ=MONTHLY;BYDAY=1WE", None), ("FREQ=MONTHLY;BYDAY=-1FR", None), ("FREQ=MONTHLY;BYMONTHDAY=31", None),
    ("FREQ=MONTHLY;BYMONTHDAY=-1", None), ("FREQ=MONTHLY;INTERVAL=3;BYDAY=2TU", date(2019, 2, 1)),
    ("FREQ=MONTHLY", date(2018, 5, 30)), ("FREQ=WEEKLY;BYDAY=SA,SU", None),
    ("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH", date(2020, 1, 8)), ("FREQ=WEEKLY;INTERVAL=3", date(2017, 6, 15)),
    ("FREQ=WEEKLY;INTERVAL=2;WKST=SU;BYDAY=SU,TU", date(2021, 3, 2)), ("FREQ=DAILY;INTERVAL=3", date(2015, 1, 1)),
    ("FREQ=YEARLY;BYMONTH=12;BYMONTHDAY=24", None), ("FREQ=YEARLY", date(2012, 2, 29)),
    ("FREQ=YEARLY;INTERVAL=2;BYMONTH=3;BYDAY=-1SU", date(2011, 1, 1)),
    ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", None), ("FREQ=HOURLY;INTERVAL=7", date(2022, 2, 2)),
    ("FREQ=DAILY;BYHOUR=1,13", None),
]


@pytest.mark.parametrize(("rule", "starts_on"), RULES)
def test_search_near_at_finds_what_iterating_from_the_first_occurrence_finds(rule, starts_on):
    """The reference: dateutil from the rule's real DTSTART (starts_on, or long ago), over years of history."""
    fields = {"rrule": rule, "at": "03:15", "duration_minutes": 90, "all": True}
    if starts_on:
        fields["starts_on"] = starts_on.isoformat()
    w = window(**fields)
    first = datetime.combine(starts_on or date(2000, 1, 3), time(3, 15))
    since, until = datetime(2026, 1, 1), datetime(2028, 6, 1)
    reference = [d.replace(tzinfo=UTC) for d in rrulestr(rule, dtstart=first).between(since, until, inc=True)]
    assert reference, rule
    assert starts(w, since.replace(tzinfo=UTC), (until - since).days) == reference[:1000]
    # active() agrees with the reference at random instants (and at every start and end)
    expect_windows = [(s, s + timedelta(minutes=90)) for s in reference]
    probes = [s for s, _ in expect_windows] + [e for _, e in expect_windows]
    rng = random.Random(rule)
    probes += [since.replace(tzinfo=UTC) + timedelta(minutes=rng.randrange(0, 880 * 24 * 60)) for _ in range(300)]
    windows = Windows([w])
    cfg = monitor()
    for at in sorted(probes):
        if not u(2026, 1, 2) <= at < u(2028, 5, 30):
            continue
        covering = [s for s, e in expect_windows if s <= at < e]
        got = windows.active(cfg, at)
        assert (got.start if got else None) == (covering[-1] if covering else None), (rule, at)


def test_a_rule_defined_long_ago_is_not_iterated_from_its_start():
    w = window(rrule="FREQ=WEEKLY;INTERVAL=2;BYDAY=WE", at="02:00", duration_minutes=60, starts_on="1971-01-06",
               all=True)
    compiled = Compiled(w)
    root = compiled.root(datetime(2026, 6, 1))
    assert timedelta(0) < datetime(2026, 6, 1) - root <= timedelta(days=16)
    expected = rrulestr("FREQ=WEEKLY;INTERVAL=2;BYDAY=WE", dtstart=datetime(1971, 1, 6, 2)).after(datetime(2026, 6, 1))
    assert compiled.current_and_next(u(2026, 6, 1))[1].start == expected.replace(tzinfo=UTC)


def test_starts_on_and_ends_on_bound_a_recurring_window():
    w = window(rrule="FREQ=DAILY", at="22:00", duration_minutes=180, starts_on="2026-05-03", ends_on="2026-05-05",
               timezone="UTC", all=True)
    assert starts(w, u(2026, 5, 1), 10) == [u(2026, 5, 3, 22), u(2026, 5, 4, 22), u(2026, 5, 5, 22)]
    windows, cfg = Windows([w]), monitor()
    assert windows.active(cfg, u(2026, 5, 6, 0, 59)) is not None  # the last one runs past ends_on
    assert windows.active(cfg, u(2026, 5, 6, 22, 30)) is None


# -- one-off, boundaries, scope -------------------------------------------------------------------------------


def test_one_off_window_start_inclusive_end_exclusive():
    w = window(start="2026-07-01T22:00:00+02:00", end="2026-07-02T01:00:00+02:00", all=True)
    windows, cfg = Windows([w]), monitor()
    assert windows.active(cfg, u(2026, 7, 1, 19, 59, 59)) is None
    occ = windows.active(cfg, u(2026, 7, 1, 20))
    assert occ is not None and (occ.start, occ.end, occ.window_id, occ.name) == (u(2026, 7, 1, 20),
                                                                                 u(2026, 7, 1, 23), w.id, "w")
    assert windows.active(cfg, u(2026, 7, 1, 22, 59, 59, 999999)) == occ
    assert windows.active(cfg, u(2026, 7, 1, 23)) is None
    assert windows.upcoming(u(2026, 7, 1), timedelta(days=1)) == [occ]
    assert windows.upcoming(u(2026, 7, 1, 20, 0, 1), timedelta(days=1)) == []


def test_recurring_boundaries_and_time_going_backwards():
    w = window(rrule="FREQ=DAILY", at="10:00", duration_minutes=30, all=True)
    windows, cfg = Windows([w]), monitor()
    assert windows.active(cfg, u(2026, 3, 3, 9, 59, 59)) is None
    assert windows.active(cfg, u(2026, 3, 3, 10)).start == u(2026, 3, 3, 10)
    assert windows.active(cfg, u(2026, 3, 3, 10, 29, 59)).end == u(2026, 3, 3, 10, 30)
    assert windows.active(cfg, u(2026, 3, 3, 10, 30)) is None
    assert windows.active(cfg, u(2026, 3, 2, 10, 15)).start == u(2026, 3, 2, 10)  # a cached slot is not reused
    assert windows.active(cfg, u(2026, 3, 3, 10, 1)).start == u(2026, 3, 3, 10)


def test_scope_by_id_tag_kind_and_all():
    shop, db, other = monitor(tags=["shop", "eu"]), monitor(tags=["db"]), monitor()
    by_id = window(cron="0 * * * *", duration_minutes=59, monitors=[db.id])
    by_tag = window(cron="0 * * * *", duration_minutes=59, tags=["eu"])
    by_kind = window(cron="0 * * * *", duration_minutes=59, kinds=["website"])
    everyone = window(cron="0 * * * *", duration_minutes=59, all=True)
    windows = Windows([by_id, by_tag, by_kind, everyone])
    assert [windows.applies(by_id.id, m) for m in (shop, db, other)] == [False, True, False]
    assert [windows.applies(by_tag.id, m) for m in (shop, db, other)] == [True, False, False]
    assert [windows.applies(by_kind.id, m) for m in (shop, db, other)] == [True, True, True]
    assert windows.applies(everyone.id, other) and not windows.applies("f" * 32, other)
    only_id = Windows([by_id])
    assert only_id.active(db, u(2026, 1, 1, 5, 30)).window_id == by_id.id
    assert only_id.active(shop, u(2026, 1, 1, 5, 30)) is None


def test_disabled_window_is_never_active_and_of_several_the_longest_wins():
    short = window(rrule="FREQ=DAILY", at="01:00", duration_minutes=30, all=True)
    long = window(rrule="FREQ=DAILY", at="00:30", duration_minutes=120, all=True)
    off = window(rrule="FREQ=DAILY", at="00:00", duration_minutes=600, all=True, enabled=False)
    windows, cfg = Windows([short, long, off]), monitor()
    assert windows.active(cfg, u(2026, 1, 1, 1, 10)).window_id == long.id
    assert windows.active(cfg, u(2026, 1, 1, 0, 10)) is None
    assert {o.window_id for o in windows.upcoming(u(2026, 1, 1), timedelta(days=1))} == {short.id, long.id}


# -- the model's rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"rrule": "FREQ=MINUTELY", "at": "01:00", "duration_minutes": 5}, "rrule",
     "FREQ=MINUTELY is too frequent for a maintenance window"),
    ({"rrule": "FREQ=DAILY;COUNT=3", "at": "01:00", "duration_minutes": 5}, "rrule", "COUNT is not allowed"),
    ({"rrule": "FREQ=DAILY;UNTIL=20270101T000000Z", "at": "01:00", "duration_minutes": 5}, "rrule", "ends_on"),
    ({"rrule": "FREQ=DAILY;BYDAY=XX", "at": "01:00", "duration_minutes": 5}, "rrule", "not a valid RRULE"),
    ({"rrule": "FREQ=DAILY", "duration_minutes": 5}, "at", "required"),
    ({"rrule": "FREQ=DAILY", "at": "1:00", "duration_minutes": 5}, "at", "pattern"),
    ({"rrule": "FREQ=DAILY;INTERVAL=2", "at": "01:00", "duration_minutes": 5}, "starts_on", "INTERVAL"),
    ({"rrule": "FREQ=MONTHLY", "at": "01:00", "duration_minutes": 5}, "rrule", "BYDAY or BYMONTHDAY"),
    ({"rrule": "FREQ=DAILY", "at": "01:00"}, "duration_minutes", "required"),
    ({"rrule": "FREQ=DAILY", "at": "01:00", "duration_minutes": 10081}, "duration_minutes", "10080"),
    ({"cron": "0 2 * *", "duration_minutes": 5}, "cron", "5-field"),
    ({"cron": "0 2 * * *", "at": "02:00", "duration_minutes": 5}, "at", "own time"),
    ({"cron": "0 2 * * *", "rrule": "FREQ=DAILY", "duration_minutes": 5}, "(body)", "exactly one"),
    ({"start": "2026-01-01T00:00:00Z"}, "start", "both start and end"),
    ({"start": "2026-01-01T00:00:00Z", "end": "2025-12-31T00:00:00Z"}, "end", "after start"),
    ({"start": "2026-01-01T00:00:00Z", "end": "2026-02-02T00:00:00Z"}, "end", "31 days"),
    ({"start": "2026-01-01T00:00:00", "end": "2026-01-02T00:00:00Z"}, "start", "timezone"),
    ({"cron": "0 2 * * *", "duration_minutes": 5, "timezone": "Mars/Olympus"}, "timezone", "IANA"),
    ({"cron": "0 2 * * *", "duration_minutes": 5, "kinds": ["ftp"]}, "kinds", "unknown kind"),
])
def test_invalid_windows_name_the_field(fields, field, words):
    scope = {} if any(k in fields for k in ("kinds",)) else {"all": True}
    with pytest.raises(Invalid) as caught:
        parse({"name": "x", **scope, **fields})
    details = caught.value.details
    assert any(d["field"].split(".")[0] == field and words.lower() in d["message"].lower() for d in details), details
    assert field in caught.value.message


def test_scope_is_required_and_strict_types():
    with pytest.raises(Invalid) as caught:
        parse({"name": "x", "cron": "0 2 * * *", "duration_minutes": 5})
    assert "monitors, tags, kinds, or all" in caught.value.details[0]["message"]
    with pytest.raises(Invalid) as caught:
        parse({"name": "x", "cron": "0 2 * * *", "duration_minutes": "5", "all": True})
    assert caught.value.details[0]["field"] == "duration_minutes"
    with pytest.raises(Invalid) as caught:
        parse({"name": "x", "cron": "0 2 * * *", "duration_minutes": 5, "all": True, "colour": "red"})
    assert caught.value.details[0]["field"] == "colour"
