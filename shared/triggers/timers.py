"""Timer triggers: one per check type (from the registry's names), hourly rollups, daily retention, and the
system snapshot every 15 minutes.

Each is a thin adapter over shared.engine / shared.manage / shared.snapshots. The Functions host runs a timer
trigger on one instance at a time (a blob lease), so a kind's ticks never overlap across instances. With several
locations every location runs the kind timers (each its own window); the jobs of the whole deployment run in the
first location only (`Settings.runs_shared_jobs`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import azure.functions as func

from monitors import REGISTRY

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger("monitor.timers")
bp = func.Blueprint()

EVERY_MINUTE = "0 * * * * *"  # NCRONTAB, six fields: sec min hour day month weekday
ROLLUP_SCHEDULE = "0 12 * * * *"  # after shared/manage/maintenance.py COMPACT_LAG: the last hour is complete
SNAPSHOT_SCHEDULE = "0 */15 * * * *"  # shared/snapshots/views.py SNAPSHOT_SCHEDULE (a test keeps them in step)


def _settings() -> Settings:
    from shared.settings import get_settings

    return get_settings()


def _register_kind_timer(kind: str) -> None:
    @bp.function_name(f"{kind}_timer")
    @bp.timer_trigger(arg_name="timer", schedule=EVERY_MINUTE, run_on_startup=False, use_monitor=True)
    async def tick(timer: func.TimerRequest) -> None:
        from shared import engine
        from shared.storage import Store

        now = datetime.now(UTC)
        if timer.past_due:
            log.warning("%s timer is running late", kind)
        settings = _settings()
        async with Store.open(settings) as store:
            await engine.run_kind(store, settings, kind, trigger="timer", now=now,
                                  due_at=now.replace(second=0, microsecond=0))


for _kind in REGISTRY:
    _register_kind_timer(_kind)


@bp.function_name("rollup_timer")
@bp.timer_trigger(arg_name="timer", schedule=ROLLUP_SCHEDULE, run_on_startup=False, use_monitor=True)
async def rollup_timer(timer: func.TimerRequest) -> None:
    from shared import manage
    from shared.storage import Store

    settings = _settings()
    if not settings.runs_shared_jobs:
        return  # several locations: the first one compacts
    async with Store.open(settings) as store:
        log.info("rollup: %s", await manage.rollup(store, horizon_days=settings.result_retention_days))


@bp.function_name("retention_timer")
@bp.timer_trigger(arg_name="timer", schedule="0 17 3 * * *", run_on_startup=False, use_monitor=True)
async def retention_timer(timer: func.TimerRequest) -> None:
    from shared import manage
    from shared.storage import Store

    settings = _settings()
    if not settings.runs_shared_jobs:
        return  # several locations: the first one purges
    async with Store.open(settings) as store:
        log.info("retention purge: %s", await manage.purge(store, settings))


@bp.function_name("snapshot_timer")
@bp.timer_trigger(arg_name="timer", schedule=SNAPSHOT_SCHEDULE, run_on_startup=False, use_monitor=True)
async def snapshot_timer(timer: func.TimerRequest) -> None:
    from shared import snapshots
    from shared.storage import Store

    settings = _settings()
    if not settings.runs_shared_jobs:
        return  # several locations: the first one takes them
    async with Store.open(settings) as store:
        try:
            snap = await snapshots.take_snapshot(store, settings, persist=True, wait=snapshots.TIMER_WAIT_SECONDS)
        except snapshots.Busy as busy:
            log.warning("snapshot skipped: %s", busy.details[0]["message"])
            return
        log.info("snapshot %s%s", snap["id"], " (built by a concurrent request)" if snap.get("coalesced") else "")
