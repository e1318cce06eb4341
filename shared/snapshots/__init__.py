"""Snapshots of the whole system: building one (build.py), its metrics (metrics.py), taking and storing one under a
lease (service.py), and reading them back (views.py). Alert rules over the metrics live in shared/rules."""

from shared.snapshots.build import SCHEMA_VERSION, build
from shared.snapshots.metrics import compute_metrics, explain, metric_catalog, metric_names
from shared.snapshots.service import LEASE, TIMER_WAIT_SECONDS, WAIT_SECONDS, Busy, fit, take_snapshot
from shared.snapshots.views import (
                                    SNAPSHOT_SCHEDULE,
                                    bootstrap,
                                    history,
                                    latest,
                                    live_states,
                                    overall,
                                    status,
                                    timeseries,
)

__all__ = ["LEASE", "SCHEMA_VERSION", "SNAPSHOT_SCHEDULE", "TIMER_WAIT_SECONDS", "WAIT_SECONDS", "Busy", "bootstrap",
           "build", "compute_metrics", "explain", "fit", "history", "latest", "live_states", "metric_catalog",
           "metric_names", "overall", "status", "take_snapshot", "timeseries"]
