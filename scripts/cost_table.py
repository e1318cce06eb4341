#!/usr/bin/env python
"""Print the monthly cost table of docs/DEPLOY.md (markdown) for N website monitors checked every interval.

    python scripts/cost_table.py --requests-per-check 0.0007 --requests-per-minute 19    # as in docs/DEPLOY.md
    python scripts/cost_table.py --requests-per-check 0.0007 --concurrency 500 --memory-mb 512

--requests-per-check and --requests-per-minute split what bench/steady_bench.py measures (every Table Storage request
of every timer over a 30-minute window) into a part that grows with the checks and a fixed part; the bytes are its
billed entity sizes per table. Everything else is an assumption with a flag; the defaults match infra/main.bicep's
defaults. Prices are list prices (East US, USD, pay-as-you-go, LRS)
from the pages in PRICES; pass --price-* to use others. No network: nothing here is looked up at run time.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

HOURS_PER_MONTH = 730  # Azure's billing month

# name: (price, unit, source page)
PRICES = {
    "flex_gb_s": (0.000026, "per GB-s, on demand", "https://azure.microsoft.com/pricing/details/functions/"),
    "flex_executions_million": (0.40, "per million executions, on demand",
                                "https://azure.microsoft.com/pricing/details/functions/"),
    "flex_free_gb_s": (100_000, "GB-s free per month and subscription (on demand)",
                       "https://azure.microsoft.com/pricing/details/functions/"),
    "flex_free_executions": (250_000, "executions free per month and subscription (on demand)",
                             "https://azure.microsoft.com/pricing/details/functions/"),
    "table_transactions_10k": (0.00036, "per 10,000 transactions (LRS)",
                               "https://azure.microsoft.com/pricing/details/storage/tables/"),
    "table_gb_month": (0.045, "per GB-month, first TB (LRS)", "https://azure.microsoft.com/pricing/details/storage/tables/"),
    "queue_operations_10k": (0.004, "per 10,000 class 1/2 operations (GPv2, LRS)",
                             "https://azure.microsoft.com/pricing/details/storage/queues/"),
    "blob_writes_10k": (0.05, "per 10,000 write operations (hot, LRS; assumed, see note)",
                        "https://azure.microsoft.com/pricing/details/storage/blobs/"),
    "log_gb": (2.30, "per GB ingested (Analytics logs, pay-as-you-go)",
               "https://azure.microsoft.com/pricing/details/monitor/"),
    "log_free_gb": (5.0, "GB free per month (per billing account)", "https://azure.microsoft.com/pricing/details/monitor/"),
}


@dataclass
class Line:
    label: str
    costs: list[float]
    volumes: list[str]


def money(value: float) -> str:
    return f"${value:,.2f}"


def count(value: float) -> str:
    for limit, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if value >= limit:
            return f"{value / limit:,.{1 if value < 10 * limit else 0}f}{suffix}"
    return f"{value:,.0f}"


def table(args: argparse.Namespace) -> str:
    p = {name: getattr(args, f"price_{name}") for name in PRICES}
    ticks = HOURS_PER_MONTH * 3600 / args.interval_seconds            # timer runs per kind and month
    timer_runs = ticks * args.kind_timers + HOURS_PER_MONTH + HOURS_PER_MONTH / 24  # + hourly rollup, daily purge
    memory_gb = args.memory_mb / 1024
    lines: dict[str, Line] = {}
    late: list[str] = []

    def add(key: str, label: str, cost: float, volume: str) -> None:
        lines.setdefault(key, Line(label, [], [])).costs.append(cost)
        lines[key].volumes.append(volume)

    for n in args.monitors:
        checks = n * ticks
        # Flex Consumption: executions, and GB-s while the instance runs the website tick (the other timers overlap
        # it on the same instance, which is billed once); every tick billed for at least 1 s.
        executions = timer_runs
        add("exec", "Flex Consumption: executions",
            max(0.0, executions - p["flex_free_executions"]) * p["flex_executions_million"] / 1e6,
            f"{count(executions)}")
        waiting = math.ceil(n / args.concurrency) * args.check_seconds      # bound by the targets' latency
        computing = n * args.cpu_ms_per_check / 1000 / args.vcpus             # bound by one Python process's CPU
        tick_seconds = max(1.0, args.tick_overhead_seconds + max(waiting, computing))
        if tick_seconds > args.interval_seconds:
            late.append(f"{n:,} monitors: a tick takes ~{tick_seconds:.0f} s, longer than the "
                        f"{args.interval_seconds:g} s interval, so ticks run late ("
                        + ("CPU-bound: a larger instance" if computing > waiting else "raise CHECK_CONCURRENCY") + ")")
        gb_s = memory_gb * tick_seconds * ticks + memory_gb * args.maintenance_seconds * (HOURS_PER_MONTH + 30)
        add("gbs", "Flex Consumption: execution time",
            max(0.0, gb_s - p["flex_free_gb_s"]) * p["flex_gb_s"], f"{count(gb_s)} GB-s, {tick_seconds:g} s/tick")
        transactions = checks * args.requests_per_check + HOURS_PER_MONTH * 60 * args.requests_per_minute
        add("tx", "Table storage: transactions", transactions / 1e4 * p["table_transactions_10k"], count(transactions))
        per_day = n * 86400 / args.interval_seconds                          # checks a day
        kept_days = args.result_retention_days
        results_gb = per_day * kept_days * args.result_bytes / 1e9                 # rows and fold rows
        rollups_gb = n * 24 * args.rollup_retention_days * args.rollup_bytes / 1e9  # one per monitor and hour
        blocks_gb = per_day * args.block_hours / 24 * args.block_bytes / 1e9        # until a day after compaction
        fixed_gb = (args.snapshots_per_day * args.snapshot_bytes
                    + timer_runs / (HOURS_PER_MONTH / 24) * args.tick_record_bytes) * kept_days / 1e9
        capacity = results_gb + rollups_gb + blocks_gb + fixed_gb
        add("cap", "Table storage: capacity (steady state)", capacity * p["table_gb_month"],
            f"{capacity:,.1f} GB")
        polls = args.queues * HOURS_PER_MONTH * 3600 / args.queue_poll_seconds
        add("queue", "Queue storage: operations (host polling)", polls / 1e4 * p["queue_operations_10k"],
            count(polls))
        blob_ops = (ticks * args.kind_timers + HOURS_PER_MONTH + 30) * args.blob_ops_per_timer_run
        add("blob", "Blob storage: host operations (timer locks)", blob_ops / 1e4 * p["blob_writes_10k"],
            count(blob_ops))
        log_gb = (timer_runs * args.log_bytes_per_timer_run + transactions * args.sdk_log_bytes_per_request) / 1e9
        add("log", "Log Analytics: ingestion", max(0.0, log_gb - p["log_free_gb"]) * p["log_gb"], f"{log_gb:,.1f} GB")

    header = ["", *[f"{n:,} monitors" for n in args.monitors]]
    rows = [header, ["---", *["---:" for _ in args.monitors]]]
    rows.append(["checks per month", *[count(n * ticks) for n in args.monitors]])
    for line in lines.values():
        rows.append([line.label, *[f"{money(c)} ({v})" for c, v in zip(line.costs, line.volumes, strict=True)]])
    totals = [sum(line.costs[i] for line in lines.values()) for i in range(len(args.monitors))]
    rows.append(["**total per month**", *[f"**{money(t)}**" for t in totals]])
    out = ["| " + " | ".join(row) + " |" for row in rows]
    out.append("")
    out.extend(f"Warning: {line}." for line in late)
    out.append(f"Inputs: {args.requests_per_check:g} storage requests per check + {args.requests_per_minute:g} a "
               "minute; one check per monitor every "
               f"{args.interval_seconds:g} s; {args.memory_mb} MB instance ({args.vcpus:g} vCPU); "
               f"{args.concurrency} checks in flight; {args.check_seconds:g} s per check; "
               f"{args.cpu_ms_per_check:g} ms CPU per check; {args.tick_overhead_seconds:g} s fixed storage work "
               "per tick; "
               f"results {args.result_bytes:g} B per check kept "
               f"{args.result_retention_days} d, blocks {args.block_bytes:g} B per check kept {args.block_hours:g} h, "
               f"rollups {args.rollup_bytes} B per monitor and hour kept {args.rollup_retention_days} d, "
               f"{args.snapshots_per_day:g} snapshots of {args.snapshot_bytes:,} B and {args.tick_record_bytes} B per "
               f"timer run kept {args.result_retention_days} d; {args.kind_timers} per-minute kind timers; "
               f"{args.log_bytes_per_timer_run} B of telemetry per timer run + {args.sdk_log_bytes_per_request} B per "
               f"storage request (Azure SDK HTTP logging). Month = {HOURS_PER_MONTH} h.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--requests-per-check", type=float, required=True,
                    help="Table Storage requests per check on the steady path (bench/website_bench.py: storage "
                         "req/check)")
    ap.add_argument("--monitors", type=int, nargs="+", default=[100, 1_000, 10_000])
    ap.add_argument("--interval-seconds", type=float, default=60)
    ap.add_argument("--memory-mb", type=int, default=2048, help="instanceMemoryMB (infra/main.bicep default)")
    ap.add_argument("--concurrency", type=int, default=100, help="CHECK_CONCURRENCY")
    ap.add_argument("--check-seconds", type=float, default=0.5, help="wall time of one check (target latency)")
    ap.add_argument("--cpu-ms-per-check", type=float, default=1.2,
                    help="client CPU per check, storage included (bench/website_bench.py: steady tick)")
    ap.add_argument("--vcpus", type=float, default=None,
                    help="vCPUs of one instance (default from --memory-mb: 512 MB 0.25, 2048 MB 1, 4096 MB 2)")
    ap.add_argument("--tick-overhead-seconds", type=float, default=1.0, help="load monitors/states, write results")
    ap.add_argument("--maintenance-seconds", type=float, default=5.0, help="one hourly rollup or daily purge run")
    ap.add_argument("--kind-timers", type=int, default=3, help="per-minute timers (one per check type)")
    ap.add_argument("--requests-per-minute", type=float, default=0.0,
                    help="fixed Table Storage requests a minute, whatever N (empty kind timers, the tick's own reads, "
                         "snapshots, the compaction; bench/steady_bench.py)")
    ap.add_argument("--result-bytes", type=float, default=10.0,
                    help="billed bytes per check in `results` (fold rows, rows of changes and failures)")
    ap.add_argument("--result-retention-days", type=int, default=90, help="RESULT_RETENTION_DAYS")
    ap.add_argument("--block-bytes", type=float, default=42.0, help="billed bytes per check in `blocks`")
    ap.add_argument("--block-hours", type=float, default=26.0,
                    help="hours a block is kept: the compaction's lag plus the day the purge keeps")
    ap.add_argument("--rollup-bytes", type=int, default=572, help="billed bytes of one hourly rollup entity")
    ap.add_argument("--rollup-retention-days", type=int, default=400, help="ROLLUP_RETENTION_DAYS")
    ap.add_argument("--snapshot-bytes", type=int, default=75_000, help="billed bytes of one snapshot")
    ap.add_argument("--snapshots-per-day", type=float, default=96, help="one every 15 minutes")
    ap.add_argument("--tick-record-bytes", type=int, default=502, help="billed bytes of one timer run's tick record")
    ap.add_argument("--queues", type=int, default=2, help="queues the host polls (events + poison)")
    ap.add_argument("--queue-poll-seconds", type=float, default=2.0, help="host.json queues.maxPollingInterval")
    ap.add_argument("--blob-ops-per-timer-run", type=float, default=4.0, help="lock acquire/release, status read/write")
    ap.add_argument("--log-bytes-per-timer-run", type=int, default=2000, help="request + host traces + tick line")
    ap.add_argument("--sdk-log-bytes-per-request", type=int, default=1500,
                    help="azure.core HTTP logging reaching App Insights; 0 once the app silences the azure logger")
    for name, (price, unit, _) in PRICES.items():
        ap.add_argument(f"--price-{name.replace('_', '-')}", dest=f"price_{name}", type=float, default=price, help=unit)
    args = ap.parse_args(argv)
    if args.vcpus is None:
        args.vcpus = {512: 0.25, 2048: 1.0, 4096: 2.0}.get(args.memory_mb, args.memory_mb / 2048)
    if min(args.requests_per_check, args.requests_per_minute) < 0 or args.concurrency < 1 or args.interval_seconds <= 0:
        ap.error("--requests-per-check and --requests-per-minute must be >= 0, --concurrency >= 1, "
                 "--interval-seconds > 0")
    print(table(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
