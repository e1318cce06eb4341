"""Management services: what the HTTP API and the CLI both call. No HTTP or terminal concerns here; errors are
typed (shared/errors.py) so each front end renders them."""

from shared.errors import Duplicate, Invalid, NotFound, ServiceError
from shared.manage.health import health
from shared.manage.history import WINDOWS, downtimes, events, parse_limit, parse_time, readings, results, uptime
from shared.manage.maintenance import purge, rollup
from shared.manage.monitors import (
                                    create_monitor,
                                    delete_monitor,
                                    get_monitor,
                                    kinds,
                                    list_monitors,
                                    set_enabled,
                                    update_monitor,
)
from shared.manage.running import outcome_view, run_kind, run_monitor, set_paused

__all__ = ["WINDOWS", "Duplicate", "Invalid", "NotFound", "ServiceError", "create_monitor", "delete_monitor",
           "downtimes", "events", "get_monitor", "health", "kinds", "list_monitors", "outcome_view", "parse_limit",
           "parse_time", "purge", "readings", "results", "rollup", "run_kind", "run_monitor", "set_enabled",
           "set_paused", "update_monitor", "uptime"]
