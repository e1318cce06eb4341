"""The engine: select due → check → evaluate (pure) → persist (ETag state + outbox) → publish.

run.py drives a tick, manual.py a run-now, settle.py commits one monitor's result, outbox.py publishes what a
commit left."""

from shared.engine.manual import MonitorNotFound, run_monitor
from shared.engine.outbox import payloads, publish
from shared.engine.run import (
                               OUTBOX_GRACE,
                               AppStoragePort,
                               TickSummary,
                               check_context,
                               due_monitors,
                               known_kinds,
                               load_configs,
                               run_kind,
)
from shared.engine.settle import Outcome

__all__ = ["OUTBOX_GRACE", "AppStoragePort", "MonitorNotFound", "Outcome", "TickSummary", "check_context",
           "due_monitors", "known_kinds", "load_configs", "payloads", "publish", "run_kind", "run_monitor"]
