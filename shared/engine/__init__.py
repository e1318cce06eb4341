"""The engine: select due → check → evaluate (pure) → persist (ETag state + outbox) → publish.

due.py says what is due (and when a monitor is checked next), run.py drives a tick, manual.py a run-now, settle.py
commits one monitor's result, outbox.py publishes what a commit left."""

from shared.engine.due import due_monitors, due_slot, next_check_at
from shared.engine.manual import MonitorNotFound, run_monitor
from shared.engine.outbox import payloads, publish
from shared.engine.run import (
                               OUTBOX_GRACE,
                               AppStoragePort,
                               TickSummary,
                               check_context,
                               known_kinds,
                               load_configs,
                               run_kind,
)
from shared.engine.settle import Outcome

__all__ = ["OUTBOX_GRACE", "AppStoragePort", "MonitorNotFound", "Outcome", "TickSummary", "check_context",
           "due_monitors", "due_slot", "known_kinds", "load_configs", "next_check_at", "payloads", "publish",
           "run_kind", "run_monitor"]
