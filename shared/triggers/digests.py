"""HTTP and timer triggers of digests (thin adapters over shared services): the hourly digest timer.

At :05 every hour it sends each channel's daily or weekly digest that is due (shared/notify/digest_due.py): a
missed hour sends it late, once; a second run in the same period sends nothing.
"""

from __future__ import annotations

import logging

import azure.functions as func

log = logging.getLogger("monitor.digest")
bp = func.Blueprint()

DIGEST_SCHEDULE = "0 5 * * * *"  # NCRONTAB: every hour at :05


@bp.function_name("digest_timer")
@bp.timer_trigger(arg_name="timer", schedule=DIGEST_SCHEDULE, run_on_startup=False, use_monitor=False)
async def digest_timer(timer: func.TimerRequest) -> None:
    from datetime import UTC, datetime

    from shared.notify.digest_due import send_due_digests
    from shared.settings import get_settings
    from shared.storage import Store

    settings = get_settings()
    if not settings.runs_shared_jobs:
        return  # several locations: the first one sends them
    async with Store.open(settings) as store:
        summary = await send_due_digests(store, settings, datetime.now(UTC))
    if summary["sent"] or summary["pending"] or summary["errors"]:
        log.info("digests: %s", summary)
