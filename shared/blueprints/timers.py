"""Timer triggers: one per check type (generated from the registry), hourly rollups, daily retention, and the
system snapshot every 15 minutes.

Each is a thin adapter over shared.engine / shared.service. The Functions host runs a timer trigger on one
instance at a time (a blob lease), so a kind's ticks never overlap across instances.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import azure.functions as func

from monitors import KINDS
from shared import engine, service, snapshots
from shared.settings import get_settings
from shared.storage import Store

log = logging.getLogger("monitor.timers")
bp = func.Blueprint()

EVERY_MINUTE = "0 * * * * *"  # NCRONTAB, six fields: sec min hour day month weekday


def _register_kind_timer(kind: str) -> None:
    @bp.function_name(f"{kind}_timer")
    @bp.timer_trigger(arg_name="timer", schedule=EVERY_MINUTE, run_on_startup=False, use_monitor=True)
    async def tick(timer: func.TimerRequest) -> None:
        now = datetime.now(timezone.utc)
        if timer.past_due:
            log.warning("%s timer is running late", kind)
        settings = get_settings()
        async with Store.open(settings) as store:
            await engine.run_kind(store, settings, kind, trigger="timer", now=now,
                                  due_at=now.replace(second=0, microsecond=0))


for _kind in KINDS:
    _register_kind_timer(_kind)


@bp.function_name("rollup_timer")
@bp.timer_trigger(arg_name="timer", schedule="0 5 * * * *", run_on_startup=False, use_monitor=True)
async def rollup_timer(timer: func.TimerRequest) -> None:
    settings = get_settings()
    async with Store.open(settings) as store:
        log.info("rollup: %s", await service.rollup(store, horizon_days=settings.result_retention_days))


@bp.function_name("retention_timer")
@bp.timer_trigger(arg_name="timer", schedule="0 17 3 * * *", run_on_startup=False, use_monitor=True)
async def retention_timer(timer: func.TimerRequest) -> None:
    settings = get_settings()
    async with Store.open(settings) as store:
        log.info("retention purge: %s", await service.purge(store, settings))


@bp.function_name("snapshot_timer")
@bp.timer_trigger(arg_name="timer", schedule=snapshots.SNAPSHOT_SCHEDULE, run_on_startup=False, use_monitor=True)
async def snapshot_timer(timer: func.TimerRequest) -> None:
    settings = get_settings()
    async with Store.open(settings) as store:
        try:
            snap = await snapshots.take_snapshot(store, settings, persist=True, wait=snapshots.TIMER_WAIT_SECONDS)
        except snapshots.Busy as busy:
            log.warning("snapshot skipped: %s", busy.details[0]["message"])
            return
        log.info("snapshot %s%s", snap["id"], " (built by a concurrent request)" if snap.get("coalesced") else "")
