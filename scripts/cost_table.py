#!/usr/bin/env python
"""Print the monthly cost table of docs/DEPLOY.md (markdown) for N website monitors checked every interval.

    python scripts/cost_table.py --requests-per-check 0.0007 --requests-per-minute 19    # as in docs/DEPLOY.md
    python scripts/cost_table.py --requests-per-check 0.0007 --concurrency 500 --memory-mb 512
    python scripts/cost_table.py --requests-per-check 0.0007 --monitors 10000 100000 --locations 3

--requests-per-check and --requests-per-minute split what bench/steady_bench.py measures (every Table Storage request
of every timer over a 30-minute window) into a part that grows with the checks and a fixed part; the bytes are its
billed entity sizes per table. At FANOUT_THRESHOLD due monitors and above a tick is fanned out (bench/fanout_bench.py):
the tick sends a queue message per FANOUT_BATCH_SIZE monitors and queue executions check them, each batch adding a
fixed number of table requests, queue operations (enqueue, the host's dequeue, delete), an execution, its telemetry,
a tick record and its own blocks. With --locations L every location runs its own timers and checks, so checks,
executions, execution time, requests and telemetry multiply by L, and so does what is stored per check (results,
blocks, rollups, tick records); the deployment's own jobs (compaction, retention, snapshots) run once.
Everything else is an assumption with a flag; the defaults match infra/main.bicep's and the app's defaults. Prices are
list prices (East US, USD, pay-as-you-go, LRS) from the pages in PRICES; pass --price-* to use others. No network:
nothing here is looked up at run time.
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


@dataclass
class Tick:
    """One location's website tick of N monitors: billed instance-seconds, wall time, queue messages."""

    fanned: bool
    instance_seconds: float
    wall: float
    batches: int = 0
    instances: int = 1
    cpu_bound: bool = False


def money(value: float) -> str:
    return f"${value:,.2f}"


def count(value: float) -> str:
    for limit, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if value >= limit:
            return f"{value / limit:,.{1 if value < 10 * limit else 0}f}{suffix}"
    return f"{value:,.0f}"


def website_tick(args: argparse.Namespace, n: int) -> Tick:
    """Inline: the larger of latency (⌈N / CHECK_CONCURRENCY⌉ checks in a row) and CPU on one instance. Fanned out:
    the dispatching tick (its own CPU per monitor), then the messages spread over instances as target-based scaling
    asks (messages ÷ --scale-target, at most --max-instances), each instance checking --messages-per-instance
    messages of CHECK_CONCURRENCY checks at once and billed for the larger of its rounds of messages and its CPU (the
    workers' CPU per check), at least 1 s; Flex Consumption bills an instance's memory while it executes, once however
    many executions overlap on it."""
    if not (0 < args.fanout_threshold <= n):
        waiting = math.ceil(n / args.concurrency) * args.check_seconds      # bound by the targets' latency
        computing = n * args.cpu_ms_per_check / 1000 / args.vcpus             # bound by one Python process's CPU
        seconds = max(1.0, args.tick_overhead_seconds + max(waiting, computing))
        return Tick(False, seconds, seconds, cpu_bound=computing > waiting)
    dispatch = max(1.0, args.tick_overhead_seconds + n * args.dispatch_cpu_ms_per_monitor / 1000 / args.vcpus)
    batches = math.ceil(n / args.fanout_batch_size)
    instances = min(args.max_instances, math.ceil(batches / args.scale_target))
    share = math.ceil(batches / instances)                                    # messages one instance checks
    one_message = math.ceil(args.fanout_batch_size / args.concurrency) * args.check_seconds
    waiting = math.ceil(share / args.messages_per_instance) * one_message
    computing = min(share * args.fanout_batch_size, n) * args.fanout_cpu_ms_per_check / 1000 / args.vcpus
    busy = max(1.0, waiting, computing)
    return Tick(True, dispatch + instances * busy, dispatch + busy, batches, instances, computing > waiting)


def flushes(args: argparse.Namespace) -> int:
    """Block writes of one message: one, and another every --flush-seconds its checks take (⌈size / CHECK_CONCURRENCY⌉
    in a row); bench/fanout_bench.py: 4 table requests a message of 100, 4.96 of 250 and 5.92 of 500 at 8 a time."""
    return max(1, math.ceil(math.ceil(args.fanout_batch_size / args.concurrency) * args.check_seconds
                            / args.flush_seconds))


def fanout_block_bytes(args: argparse.Namespace) -> float:
    """Billed bytes per check in `blocks` when fanned out: a batch writes a block per shard its monitors fall in
    (of --block-shards), each ~--block-entity-bytes, plus --block-check-bytes per check (bench/fanout_bench.py),
    and again for the checks of every further --flush-seconds it takes (counted as an even split: an upper bound)."""
    b, f = args.fanout_batch_size, flushes(args)
    entities = f * args.block_shards * (1 - (1 - 1 / args.block_shards) ** (b / f))  # shards hit, each flush
    return entities / b * args.block_entity_bytes + args.block_check_bytes


def table(args: argparse.Namespace) -> str:
    p = {name: getattr(args, f"price_{name}") for name in PRICES}
    loc = args.locations
    ticks = HOURS_PER_MONTH * 3600 / args.interval_seconds            # timer runs per kind and month
    deployment_runs = HOURS_PER_MONTH + HOURS_PER_MONTH / 24           # hourly rollup, daily purge: one location
    timer_runs = ticks * args.kind_timers * loc + deployment_runs
    memory_gb = args.memory_mb / 1024
    lines: dict[str, Line] = {}
    late: list[str] = []

    def add(key: str, label: str, cost: float, volume: str) -> None:
        lines.setdefault(key, Line(label, [], [])).costs.append(cost)
        lines[key].volumes.append(volume)

    for n in args.monitors:
        checks = n * ticks * loc
        tick = website_tick(args, n)
        messages = tick.batches * ticks * loc
        if tick.wall > args.interval_seconds:
            fix = ("a smaller FANOUT_BATCH_SIZE or a larger CHECK_CONCURRENCY: one message takes that long"
                   if tick.fanned else "CPU-bound: a larger instance or fan-out" if tick.cpu_bound
                   else "raise CHECK_CONCURRENCY, or fan out")
            late.append(f"{n:,} monitors: a tick takes ~{tick.wall:.0f} s, longer than the {args.interval_seconds:g} s "
                        f"interval, so ticks run late ({fix})")
        # Flex Consumption: executions (timer runs and queue messages), and GB-s while an instance executes (the
        # other timers overlap the website tick on the same instance, which is billed once); every tick billed for
        # at least 1 s.
        executions = timer_runs + messages
        add("exec", "Flex Consumption: executions",
            max(0.0, executions - p["flex_free_executions"]) * p["flex_executions_million"] / 1e6,
            f"{count(executions)}")
        gb_s = (memory_gb * tick.instance_seconds * ticks * loc
                + memory_gb * args.maintenance_seconds * (HOURS_PER_MONTH + 30))
        shape = (f"fanned out: {tick.batches:,} messages/tick, ~{tick.instances} instance"
                 f"{'s' if tick.instances > 1 else ''}, {tick.wall:.0f} s" if tick.fanned
                 else f"{tick.wall:g} s/tick")
        add("gbs", "Flex Consumption: execution time",
            max(0.0, gb_s - p["flex_free_gb_s"]) * p["flex_gb_s"], f"{count(gb_s)} GB-s, {shape}")
        transactions = (checks * args.requests_per_check + HOURS_PER_MONTH * 60 * args.requests_per_minute * loc
                        + messages * (args.batch_table_requests + flushes(args) - 1))
        add("tx", "Table storage: transactions", transactions / 1e4 * p["table_transactions_10k"], count(transactions))
        per_day = n * 86400 / args.interval_seconds * loc                    # checks a day, every location
        kept_days = args.result_retention_days
        results_gb = per_day * kept_days * args.result_bytes / 1e9                       # rows and fold rows
        rollups_gb = n * loc * 24 * args.rollup_retention_days * args.rollup_bytes / 1e9  # per monitor, hour, location
        block_bytes = fanout_block_bytes(args) if tick.fanned else args.block_bytes
        blocks_gb = per_day * args.block_hours / 24 * block_bytes / 1e9      # until a day after compaction
        records = timer_runs + messages                                      # a tick record per run and message
        fixed_gb = (args.snapshots_per_day * args.snapshot_bytes
                    + records / (HOURS_PER_MONTH / 24) * args.tick_record_bytes) * kept_days / 1e9
        capacity = results_gb + rollups_gb + blocks_gb + fixed_gb
        add("cap", "Table storage: capacity (steady state)", capacity * p["table_gb_month"],
            f"{capacity:,.1f} GB")
        polls = args.queues * loc * HOURS_PER_MONTH * 3600 / args.queue_poll_seconds
        add("queue", "Queue storage: operations (host polling)", polls / 1e4 * p["queue_operations_10k"],
            count(polls))
        queue_ops = messages * args.batch_queue_requests
        add("fanq", "Queue storage: fan-out messages", queue_ops / 1e4 * p["queue_operations_10k"], count(queue_ops))
        blob_ops = (ticks * args.kind_timers * loc + HOURS_PER_MONTH + 30) * args.blob_ops_per_timer_run
        add("blob", "Blob storage: host operations (timer locks)", blob_ops / 1e4 * p["blob_writes_10k"],
            count(blob_ops))
        log_gb = (timer_runs * args.log_bytes_per_timer_run + messages * args.log_bytes_per_batch
                  + transactions * args.sdk_log_bytes_per_request) / 1e9
        add("log", "Log Analytics: ingestion", max(0.0, log_gb - p["log_free_gb"]) * p["log_gb"], f"{log_gb:,.1f} GB")

    where = f" × {loc} locations" if loc > 1 else ""
    header = ["", *[f"{n:,} monitors{where}" for n in args.monitors]]
    rows = [header, ["---", *["---:" for _ in args.monitors]]]
    rows.append(["checks per month", *[count(n * ticks * loc) for n in args.monitors]])
    for line in lines.values():
        rows.append([line.label, *[f"{money(c)} ({v})" for c, v in zip(line.costs, line.volumes, strict=True)]])
    totals = [sum(line.costs[i] for line in lines.values()) for i in range(len(args.monitors))]
    rows.append(["**total per month**", *[f"**{money(t)}**" for t in totals]])
    out = ["| " + " | ".join(row) + " |" for row in rows]
    out.append("")
    out.extend(f"Warning: {line}." for line in late)
    fan = (f"fan-out at {args.fanout_threshold:,} due monitors and above (FANOUT_THRESHOLD), "
           f"{args.fanout_batch_size} a message (FANOUT_BATCH_SIZE), instances as messages ÷ {args.scale_target} "
           f"(at most {args.max_instances}), {args.messages_per_instance} messages at once per instance, "
           f"{args.fanout_cpu_ms_per_check:g} ms CPU per fanned-out check and "
           f"{args.dispatch_cpu_ms_per_monitor:g} ms per dispatched monitor, {args.batch_table_requests:g} table "
           f"requests, {args.batch_queue_requests:g} queue operations, {args.log_bytes_per_batch} B of telemetry and "
           f"a tick record per message, blocks {fanout_block_bytes(args):.0f} B per fanned-out check"
           if args.fanout_threshold > 0 else "no fan-out (FANOUT_THRESHOLD=0)")
    out.append(f"Inputs: {loc} location{'s' if loc > 1 else ''}; {args.requests_per_check:g} storage requests per "
               f"check + {args.requests_per_minute:g} a minute per location; one check per monitor every "
               f"{args.interval_seconds:g} s; {args.memory_mb} MB instance ({args.vcpus:g} vCPU); "
               f"{args.concurrency} checks in flight; {args.check_seconds:g} s per check; "
               f"{args.cpu_ms_per_check:g} ms CPU per check; {args.tick_overhead_seconds:g} s fixed storage work "
               f"per tick; {fan}; "
               f"results {args.result_bytes:g} B per check kept "
               f"{args.result_retention_days} d, blocks {args.block_bytes:g} B per check kept {args.block_hours:g} h, "
               f"rollups {args.rollup_bytes} B per monitor and hour kept {args.rollup_retention_days} d, "
               f"{args.snapshots_per_day:g} snapshots of {args.snapshot_bytes:,} B and {args.tick_record_bytes} B per "
               f"timer run kept {args.result_retention_days} d; {args.kind_timers} per-minute kind timers; "
               f"{args.queues} polled queues; "
               f"{args.log_bytes_per_timer_run} B of telemetry per timer run + {args.sdk_log_bytes_per_request} B per "
               f"storage request (Azure SDK HTTP logging). Month = {HOURS_PER_MONTH} h.")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--requests-per-check", type=float, required=True,
                    help="Table Storage requests per check on the steady path (bench/website_bench.py: storage "
                         "req/check)")
    ap.add_argument("--monitors", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    ap.add_argument("--locations", type=int, default=1,
                    help="CHECK_LOCATIONS: each location runs its own timers and checks on its own plan")
    ap.add_argument("--interval-seconds", type=float, default=60)
    ap.add_argument("--memory-mb", type=int, default=2048, help="instanceMemoryMB (infra/main.bicep default)")
    ap.add_argument("--max-instances", type=int, default=40, help="maximumInstanceCount (infra/main.bicep default)")
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
    fan = ap.add_argument_group("fan-out (bench/fanout_bench.py)")
    fan.add_argument("--fanout-threshold", type=int, default=2000, help="FANOUT_THRESHOLD (0: never)")
    fan.add_argument("--fanout-batch-size", type=int, default=500, help="FANOUT_BATCH_SIZE")
    fan.add_argument("--scale-target", type=int, default=8,
                     help="target executions per instance of target-based scaling (host.json queues batchSize)")
    fan.add_argument("--messages-per-instance", type=int, default=12,
                     help="messages one instance checks at once (host.json queues batchSize 8 + newBatchThreshold 4)")
    fan.add_argument("--fanout-cpu-ms-per-check", type=float, default=1.1,
                     help="CPU per check in the queue workers, their storage included (bench/fanout_bench.py: "
                          "1.45-1.7x an inline check's at the same cap, batches of 100)")
    fan.add_argument("--dispatch-cpu-ms-per-monitor", type=float, default=0.03,
                     help="the dispatching tick's CPU per due monitor")
    fan.add_argument("--batch-table-requests", type=float, default=4,
                     help="table requests a worker sends per message (definitions' versions, changed states, the "
                          "block transaction, the tick record), + 1 for each further block write (--flush-seconds)")
    fan.add_argument("--batch-queue-requests", type=float, default=3,
                     help="queue operations per message (the tick's enqueue, the host's dequeue and delete)")
    fan.add_argument("--log-bytes-per-batch", type=int, default=2000, help="telemetry per queue execution")
    fan.add_argument("--block-shards", type=int, default=64, help="BLOCK_SHARDS")
    fan.add_argument("--block-entity-bytes", type=float, default=540, help="billed bytes of one block entity")
    fan.add_argument("--block-check-bytes", type=float, default=37, help="billed bytes per check within a block")
    fan.add_argument("--flush-seconds", type=float, default=3.0, help="shared/engine/writer.py FLUSH_SECONDS")
    ap.add_argument("--result-bytes", type=float, default=10.0,
                    help="billed bytes per check in `results` (fold rows, rows of changes and failures)")
    ap.add_argument("--result-retention-days", type=int, default=90, help="RESULT_RETENTION_DAYS")
    ap.add_argument("--block-bytes", type=float, default=42.0, help="billed bytes per check in `blocks` (inline)")
    ap.add_argument("--block-hours", type=float, default=26.0,
                    help="hours a block is kept: the compaction's lag plus the day the purge keeps")
    ap.add_argument("--rollup-bytes", type=int, default=572, help="billed bytes of one hourly rollup entity")
    ap.add_argument("--rollup-retention-days", type=int, default=400, help="ROLLUP_RETENTION_DAYS")
    ap.add_argument("--snapshot-bytes", type=int, default=75_000, help="billed bytes of one snapshot")
    ap.add_argument("--snapshots-per-day", type=float, default=96, help="one every 15 minutes")
    ap.add_argument("--tick-record-bytes", type=int, default=502, help="billed bytes of one timer run's tick record")
    ap.add_argument("--queues", type=int, default=3,
                    help="queues the host polls per location (events, its poison queue, the checks queue)")
    ap.add_argument("--queue-poll-seconds", type=float, default=2.0, help="host.json queues.maxPollingInterval")
    ap.add_argument("--blob-ops-per-timer-run", type=float, default=4.0, help="lock acquire/release, status read/write")
    ap.add_argument("--log-bytes-per-timer-run", type=int, default=2000, help="request + host traces + tick line")
    ap.add_argument("--sdk-log-bytes-per-request", type=int, default=1500,
                    help="azure.core HTTP logging reaching App Insights; 0 once the app silences the azure logger")
    for name, (price, unit, _) in PRICES.items():
        ap.add_argument(f"--price-{name.replace('_', '-')}", dest=f"price_{name}", type=float, default=price, help=unit)
    return ap, ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ap, args = parse_args(argv)
    if args.vcpus is None:
        args.vcpus = {512: 0.25, 2048: 1.0, 4096: 2.0}.get(args.memory_mb, args.memory_mb / 2048)
    if min(args.requests_per_check, args.requests_per_minute) < 0 or args.concurrency < 1 or args.interval_seconds <= 0:
        ap.error("--requests-per-check and --requests-per-minute must be >= 0, --concurrency >= 1, "
                 "--interval-seconds > 0")
    if min(args.locations, args.fanout_batch_size, args.messages_per_instance, args.scale_target,
           args.max_instances) < 1 or args.fanout_threshold < 0:
        ap.error("--locations, --fanout-batch-size, --messages-per-instance, --scale-target and --max-instances must "
                 "be >= 1, --fanout-threshold >= 0")
    print(table(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
