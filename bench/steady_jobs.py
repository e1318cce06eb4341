"""The periodic jobs of bench/steady_bench.py: every timer the app registers, called through its service at its
schedule in simulated time, and the billed bytes of every table.

The timers are found by reading the blueprints of shared/triggers/*.py (what function_app.py registers), so a new
timer shows up here as "not simulated" instead of being silently left out.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import io
import json
import pkgutil
import pstats
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from website_bench import ROOT, Sample, proc_cpu_seconds

TRANSIENT_TABLES = ("blocks",)  # purged once compacted: present in the bill only for a while


# ============================================================================================ NCRONTAB


def _field_values(spec: str, lo: int, hi: int) -> set[int]:
    """One NCRONTAB field (`*`, `*/n`, `a`, `a-b`, `a-b/n`, lists of those) as the set of values it matches."""
    out: set[int] = set()
    for part in spec.split(","):
        rng, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if rng == "*":
            first, last = lo, hi
        elif "-" in rng:
            a, b = rng.split("-")
            first, last = int(a), int(b)
        else:
            first = last = int(rng)
            if step_text:
                last = hi
        out.update(range(first, last + 1, step))
    return out


@dataclass(frozen=True)
class Cron:
    """A six-field NCRONTAB schedule (sec min hour day month weekday), matched at whole minutes."""

    text: str

    def matches(self, at: datetime) -> bool:
        fields = self.text.split()
        if len(fields) != 6:
            raise ValueError(f"not a six-field NCRONTAB schedule: {self.text!r}")
        _, minute, hour, day, month, weekday = fields
        dow = (at.weekday() + 1) % 7  # NCRONTAB: 0 = Sunday
        return (at.minute in _field_values(minute, 0, 59) and at.hour in _field_values(hour, 0, 23)
                and at.day in _field_values(day, 1, 31) and at.month in _field_values(month, 1, 12)
                and (dow in _field_values(weekday, 0, 7) or (dow == 0 and 7 in _field_values(weekday, 0, 7))))

    def runs_per_day(self, around: datetime) -> float:
        """Runs in an average day (a week from `around`'s midnight, divided by 7)."""
        start = around.replace(hour=0, minute=0, second=0, microsecond=0)
        return sum(self.matches(start + timedelta(minutes=m)) for m in range(7 * 1440)) / 7


def discover_timers() -> list[tuple[str, str]]:
    """(function name, schedule) of every timer trigger in shared/triggers/*.py's blueprints."""
    import shared.triggers as package

    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"shared.triggers.{info.name}")
        bp = getattr(module, "bp", None)
        for builder in getattr(bp, "_function_builders", []):  # azure.functions keeps them here
            function = builder._function
            for binding in function.get_bindings():
                if binding.type == "timerTrigger":
                    found.append((function.get_function_name(), str(binding.schedule)))
    return found


# ================================================================================================ jobs


@contextmanager
def check_clock(now: datetime) -> Iterator[None]:
    """A check stamps `checked_at` with the wall clock (monitors/contract.py), which in simulated time would be hours
    off its slot (a block cannot hold that; today's rows would carry it). During a simulated run that module's clock
    reads `now` plus the real time elapsed since; the engine code is not changed."""
    import monitors.contract as contract

    real, started = contract.datetime, time.monotonic()

    class Simulated(real):  # type: ignore[valid-type, misc]  # a module attribute swapped for the run
        @classmethod
        def now(cls, tz: Any = None) -> datetime:
            at = now + timedelta(seconds=time.monotonic() - started)
            return at.astimezone(tz) if tz is not None else at

    contract.datetime = Simulated  # type: ignore[misc]
    try:
        yield
    finally:
        contract.datetime = real  # type: ignore[misc]


def accepts(fn: Callable[..., Any], name: str) -> bool:
    return name in inspect.signature(fn).parameters


def short(value: Any, width: int = 150) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


@dataclass
class Run:
    """One measured run of a job at a simulated time."""

    job: str
    at: datetime
    cpu: float
    wall: float
    requests: int
    azurite_cpu: float
    variant: str = ""  # "compaction" / "idle" (rollup), "sent" / "idle" (digest), "" otherwise
    text: str = ""
    profiled: bool = False


Call = Callable[[Any, Any, datetime], Awaitable[Any]]


@dataclass
class Job:
    """A timer and the service call it makes; `describe` turns its result into (variant, text)."""

    name: str
    schedule: Cron
    call: Call
    describe: Callable[[Any], tuple[str, str]] = lambda result: ("", short(result))
    note: str = ""
    runs: list[Run] = field(default_factory=list)


def _kind_job(kind: str, schedule: Cron) -> Job:
    async def call(store: Any, settings: Any, now: datetime) -> Any:
        from shared.engine import run_kind

        return await run_kind(store, settings, kind, trigger="timer", now=now, due_at=now)

    return Job(f"{kind}_timer", schedule, call,
               lambda s: ("", f"{s.monitors} monitors, {s.checked} checked, {s.storage_requests} requests"))


def _snapshot_job(schedule: Cron) -> Job:
    from shared import snapshots

    takes_now = accepts(snapshots.take_snapshot, "now")

    async def call(store: Any, settings: Any, now: datetime) -> Any:
        kwargs: dict[str, Any] = {"persist": True, "wait": snapshots.TIMER_WAIT_SECONDS}
        if takes_now:
            kwargs["now"] = now
        try:
            return await snapshots.take_snapshot(store, settings, **kwargs)
        except snapshots.Busy as busy:
            return {"busy": busy.details[0]["message"]}

    def describe(snap: Any) -> tuple[str, str]:
        if "busy" in snap:
            return "busy", f"BUSY: {snap['busy']}"
        return "", f"snapshot {snap.get('id')}" + (" (coalesced)" if snap.get("coalesced") else "")

    note = "" if takes_now else "take_snapshot takes no now=: it ran on the wall clock"
    return Job("snapshot_timer", schedule, call, describe, note)


def _rollup_job(schedule: Cron) -> Job:
    from shared import manage

    async def call(store: Any, settings: Any, now: datetime) -> Any:
        return await manage.rollup(store, **rollup_kwargs(settings, now))

    return Job("rollup_timer", schedule, call)


def rollup_kwargs(settings: Any, now: datetime, horizon_days: int | None = None) -> dict[str, Any]:
    """What the rollup timer passes (now= and horizon_days= where the service takes them)."""
    from shared import manage

    kwargs: dict[str, Any] = {}
    if accepts(manage.rollup, "now"):
        kwargs["now"] = now
    if accepts(manage.rollup, "horizon_days"):
        kwargs["horizon_days"] = horizon_days or settings.result_retention_days
    return kwargs


def _purge_job(schedule: Cron) -> Job:
    from shared import manage

    async def call(store: Any, settings: Any, now: datetime) -> Any:
        return await manage.purge(store, settings, now=now)

    return Job("retention_timer", schedule, call)


def _digest_job(schedule: Cron) -> Job:
    async def call(store: Any, settings: Any, now: datetime) -> Any:
        from shared.notify.digest_due import send_due_digests

        return await send_due_digests(store, settings, now)

    def describe(summary: Any) -> tuple[str, str]:
        variant = "sent" if summary.get("sent") else "idle"
        problems = (f", pending {short(summary['pending'], 300)}" if summary.get("pending") else "") + \
                   (f", errors {short(summary['errors'], 300)}" if summary.get("errors") else "")
        return variant, f"sent {len(summary.get('sent') or [])} digest(s){problems}"

    return Job("digest_timer", schedule, call, describe)


def build_jobs(main_kind: str = "website") -> tuple[list[Job], list[str]]:
    """Every timer but `main_kind`'s tick (the benchmark measures that itself); and the timers not simulated."""
    from monitors import REGISTRY

    makers: dict[str, Callable[[Cron], Job]] = {"snapshot_timer": _snapshot_job, "rollup_timer": _rollup_job,
                                                "retention_timer": _purge_job, "digest_timer": _digest_job}
    jobs, unknown = [], []
    for name, text in discover_timers():
        schedule = Cron(text)
        kind = name.removesuffix("_timer")
        if name == f"{main_kind}_timer":
            continue
        if kind in REGISTRY:
            jobs.append(_kind_job(kind, schedule))
        elif name in makers:
            jobs.append(makers[name](schedule))
        else:
            unknown.append(f"{name} ({text})")
    return jobs, unknown


async def create_digest_channel(store: Any, farm_url: str, at: datetime) -> dict[str, Any]:
    """A daily webhook digest, due at `at` (UTC), posted to the loopback farm: so the digest timer has work."""
    from shared.manage.channels import create_channel

    return await create_channel(store, {"type": "webhook", "name": "bench-digest", "url": f"{farm_url}/digest",
                                        "secret": "bench-digest-secret-0123456789", "digest": "daily",
                                        "digest_at": at.strftime("%H:%M"), "digest_timezone": "UTC"})


# ========================================================================================= the bill


def billed_size(entity: Any) -> int:
    """shared.storage.entity_size of an entity read back through the SDK (Int64 comes as EntityProperty)."""
    from azure.data.tables import EntityProperty

    from shared.storage import EntityTooLarge, entity_size

    plain = {k: (v.value if isinstance(v, EntityProperty) else v) for k, v in entity.items()}
    try:
        return entity_size(plain)
    except EntityTooLarge as error:  # stored anyway (Azurite does not enforce limits): count what it is
        return error.size


async def table_bytes(conn: str) -> dict[str, tuple[int, int]]:
    """Per table: (entities, billed bytes), every entity with every property (an in-process count)."""
    from azure.data.tables.aio import TableServiceClient

    async with TableServiceClient.from_connection_string(conn) as service:
        names = [t.name async for t in service.list_tables()]

        async def one(name: str) -> tuple[int, int]:
            count = size = 0
            async for entity in service.get_table_client(name).list_entities(results_per_page=1000):
                count += 1
                size += billed_size(entity)
            return count, size

        sizes = await asyncio.gather(*(one(name) for name in names))
    return dict(zip(names, sizes, strict=True))


async def until_idle(procs: list, cpu_share: float = 0.1, window: float = 0.25, max_wait: float = 10.0) -> float:
    """Wait (at most `max_wait` s) until Azurite and the farm use < `cpu_share` of a core; returns the seconds
    waited. Azurite persists its database in the background after big writes: that is not the next job's."""
    started = time.monotonic()
    while procs and time.monotonic() - started < max_wait:
        before = proc_cpu_seconds(procs)
        await asyncio.sleep(window)
        if proc_cpu_seconds(procs) - before < cpu_share * window:
            break
    return time.monotonic() - started


def clock(at: datetime, hour: datetime) -> str:
    minutes = int((at - hour).total_seconds() // 60)
    return f"H{'-' if minutes < 0 else '+'}{abs(minutes) // 60}:{abs(minutes) % 60:02d}"


@dataclass
class Outcome:
    """Everything measured for one N."""

    n: int
    hour: datetime
    load_start: str
    load_end: str = ""
    bare: Sample | None = None
    cold: Sample | None = None
    ticks: list[Sample] = field(default_factory=list)  # window ticks, in order (profiled one flagged apart)
    checks: list[Sample] = field(default_factory=list)
    tick_times: list[datetime] = field(default_factory=list)
    profiled_tick: int | None = None
    jobs: list[Job] = field(default_factory=list)
    before: dict[str, tuple[int, int]] = field(default_factory=dict)
    after: dict[str, tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def steady(self) -> list[Sample]:
        return [s for i, s in enumerate(self.ticks) if i != self.profiled_tick]

    def steady_checks(self) -> list[Sample]:
        return [s for i, s in enumerate(self.checks) if i != self.profiled_tick]

    def job(self, name: str) -> Job | None:
        return next((j for j in self.jobs if j.name == name), None)


def window_parts(out: Outcome) -> list[tuple[str, float, float, int]]:
    """(what, runs per 30 minutes, CPU s per run, storage requests per run) of the 30-minute window figure."""
    steady = out.steady()
    if not steady:
        return []
    parts = [("steady website tick", 30.0, sum(s.cpu for s in steady) / len(steady),
              round(sum(s.requests for s in steady) / len(steady)))]
    for job in out.jobs:
        per_30 = job.schedule.runs_per_day(out.hour) / 48
        runs = job.runs
        if job.name == "rollup_timer":
            runs = [r for r in runs if r.variant == "compaction"]
        if job.name == "digest_timer":
            sent = [r for r in runs if r.variant == "sent"]
            runs = [r for r in runs if r.variant != "sent"]
            if sent:
                parts.append(("digest_timer (the daily send)", 1 / 48, sent[0].cpu, sent[0].requests))
                per_30 -= 1 / 48
        if not runs:
            continue
        parts.append((job.name, per_30, sum(r.cpu for r in runs) / len(runs),
                      round(sum(r.requests for r in runs) / len(runs))))
    return parts


def window_figure(out: Outcome) -> tuple[float, float]:
    """(CPU ms per check, storage requests per check) of 30 minutes of steady running, every job's share in."""
    steady = out.steady()
    checks = 30 * sum(s.checks for s in steady) / max(len(steady), 1)
    parts = window_parts(out)
    cpu = sum(w * c for _, w, c, _ in parts)
    req = sum(w * r for _, w, _, r in parts)
    return (cpu * 1000 / checks, req / checks) if checks else (0.0, 0.0)


def byte_figures(out: Outcome) -> dict[str, Any]:
    checks = sum(s.checks for s in out.ticks)
    growth = {t: (out.after.get(t, (0, 0))[0] - out.before.get(t, (0, 0))[0],
                  out.after.get(t, (0, 0))[1] - out.before.get(t, (0, 0))[1])
              for t in sorted(set(out.before) | set(out.after))}
    total = sum(b for _, b in growth.values())
    lasting = sum(b for t, (_, b) in growth.items() if t not in TRANSIENT_TABLES)
    return {"checks": checks, "growth": growth, "incl": total / checks if checks else 0.0,
            "excl": lasting / checks if checks else 0.0,
            "results": growth.get("results", (0, 0))[0] / checks if checks else 0.0,
            "rollups": growth.get("rollups", (0, 0))[0] / checks if checks else 0.0}


def function_timeout() -> float:
    text = json.loads((ROOT / "host.json").read_text()).get("functionTimeout", "00:05:00")
    h, m, s = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60 + s


def print_profile(profiler: Any, title: str, top: int) -> None:
    print(f"\n--- cProfile of {title} (wall-clock timer; the profiler inflates this run's numbers)")
    for key in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(key).print_stats(top)
        listing = "\n".join(line for line in text.getvalue().splitlines() if line.strip())
        print(f"\n[top {top} by {key}]\n{listing}\n", flush=True)
