#!/usr/bin/env python
"""Maintenance-window benchmark: the cost of `Windows.active(cfg, at)` (shared/windows/schedule.py), which the
engine's gate calls once per check.

Not a test: run it by hand and read the numbers (no storage needed; windows are built in memory).

    python bench/maintenance_bench.py --monitors 10000 --windows 50 --ages 0 5 20 50

For each rule age (years since the recurring windows' `starts_on`) it builds 50 windows — a third one-off, a third
cron, a third rrule (weekly, monthly first-Wednesday, daily, INTERVAL=2 weeks, hourly), in several zones, scoped by
id, tag, kind or all — and 10,000 monitors, then times one tick:
  * first  - the first `active()` of the tick: every window computes its slot around `at` (a search near `at`);
  * steady - the other calls of the tick (cached slots);
  * ticks  - `--ticks` successive minute ticks on one `Windows` (slots reused while `at` stays inside them);
  * fresh  - a fresh `Windows` per tick (what loading once per tick costs), first call included.
µs per call must stay flat as the age grows (a rule defined years ago is never iterated from its first occurrence).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitors import parse_spec
from shared.windows import MaintenanceWindow, Windows, parse

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
RULES = ("FREQ=WEEKLY;BYDAY=SU", "FREQ=MONTHLY;BYDAY=1WE", "FREQ=DAILY", "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU",
         "FREQ=HOURLY;INTERVAL=6", "FREQ=MONTHLY;BYMONTHDAY=-1")
CRONS = ("0 2 * * 0", "30 3 * * *", "0 */4 * * *", "15 1 1 * *", "0 22 * * 1-5")


def build(count: int, age_years: int, now: datetime, monitor_ids: list[str]) -> list[MaintenanceWindow]:
    since = date(now.year - age_years, 1, 7).isoformat()
    out = []
    for i in range(count):
        scopes: list[dict[str, object]] = [{"all": True}, {"tags": [f"t{i % 7}"]}, {"kinds": ["website"]},
                                           {"monitors": monitor_ids[i::997][:20]}]
        scope = scopes[i % 4]
        zone = ZONES[i % len(ZONES)]
        spec: dict[str, object]
        if i % 3 == 0:
            start = now + timedelta(hours=(i % 11) - 5)
            spec = {"start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()}
        elif i % 3 == 1:
            spec = {"cron": CRONS[i % len(CRONS)], "duration_minutes": 60 + i, "timezone": zone, "starts_on": since}
        else:
            spec = {"rrule": RULES[i % len(RULES)], "at": f"{i % 24:02d}:{i % 60:02d}", "duration_minutes": 30 + i,
                    "timezone": zone, "starts_on": since}
        window = parse({"name": f"w{i}", **spec, **scope})
        window.id = uuid.uuid4().hex
        out.append(window)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--monitors", type=int, default=10_000)
    ap.add_argument("--windows", type=int, default=50)
    ap.add_argument("--ages", type=int, nargs="+", default=[0, 5, 20, 50])
    ap.add_argument("--ticks", type=int, default=60)
    args = ap.parse_args()

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    cfgs = [parse_spec({"kind": "website", "id": uuid.uuid4().hex, "name": f"m{i}", "url": "http://127.0.0.1:9/",
                        "tags": [f"t{i % 7}"]}) for i in range(args.monitors)]
    ids = [c.id or "" for c in cfgs]
    print(f"{args.monitors:,} monitors × {args.windows} windows; at = {now:%Y-%m-%d %H:%M} UTC\n")
    print("| rule age | first call (µs) | steady µs/call | µs/call over ticks | fresh Windows/tick µs/call | covered |")
    print("|---:|---:|---:|---:|---:|---:|")
    for age in args.ages:
        windows = build(args.windows, age, now, ids)
        w = Windows(windows)
        t0 = time.perf_counter()
        w.active(cfgs[0], now)
        first = (time.perf_counter() - t0) * 1e6
        t0 = time.perf_counter()
        covered = sum(w.active(cfg, now) is not None for cfg in cfgs)
        steady = (time.perf_counter() - t0) * 1e6 / len(cfgs)
        t0 = time.perf_counter()
        for tick in range(args.ticks):
            at = now + timedelta(minutes=tick)
            for cfg in cfgs:
                w.active(cfg, at)
        ticks = (time.perf_counter() - t0) * 1e6 / (len(cfgs) * args.ticks)
        fresh_ticks = max(1, args.ticks // 10)
        t0 = time.perf_counter()
        for tick in range(fresh_ticks):
            fresh = Windows(windows)
            at = now + timedelta(minutes=tick)
            for cfg in cfgs:
                fresh.active(cfg, at)
        fresh_us = (time.perf_counter() - t0) * 1e6 / (len(cfgs) * fresh_ticks)
        print(f"| {age} y | {first:,.0f} | {steady:.2f} | {ticks:.2f} | {fresh_us:.2f} | {covered:,} |")


if __name__ == "__main__":
    main()
