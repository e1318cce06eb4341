"""Every monitor in the Prometheus text exposition format 0.0.4, through prometheus_client (a custom collector over
the stored state; nothing is measured here). Behind the function key, like the rest of /api/v1.

Statuses follow the state-set pattern: `monitor_status{status=…}` has a series for every status of the monitor's
kind (1 for the current one, 0 for the others), and `monitors{kind,status}` one for every status of every kind, so
no series vanishes when a status changes (a query such as `monitor_status{status="DOWN"} == 1` keeps working, and
`changes()` sees the switch). The 24 h uptime is current: hourly rollups up to the rollup watermark plus the raw
results after it (shared/uptime.py), as of the scrape.

The families every monitor has are declared here; a kind adds its own (`Kind.metrics`, `Kind.samples`): certificate
days left, stock quantity, parts short, resource metric values, …
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from monitors import KINDS, from_entity, status_info
from shared import uptime as uptimes
from shared.aio import gather_bounded
from shared.snapshots.views import latest as latest_snapshot
from shared.snapshots.views import live_states

if TYPE_CHECKING:
    from shared.storage import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BASE = ("id", "name", "kind")
UPTIME_WINDOW = timedelta(hours=24)

FAMILIES = {
    "monitor_status": "Status of a monitor as a state set: a series for every status of its kind, 1 for the "
                      "current one, 0 for the others.",
    "monitor_healthy": "1 when the monitor is UP or OK, 0 when not (PENDING and disabled monitors are left out).",
    "monitor_enabled": "1 when the monitor is enabled.",
    "monitor_latency_seconds": "Duration of the monitor's latest check.",
    "monitor_last_check_timestamp_seconds": "When the monitor was last checked (Unix time).",
    "monitor_uptime_24h_ratio": "Share of successful checks over the last 24 h, up to the latest check (hourly "
                                "rollups plus the raw results after them; degraded counts as up, checker errors "
                                "are not counted).",
    "monitors": "Enabled monitors by kind and status (every status of every kind; 0 when none).",
    "monitor_location_healthy": "Several locations: 1 when the location sees the monitor healthy, 0 when not "
                                "(its own status; the monitor's is the quorum of them).",
    "monitor_location_stale": "Several locations: 1 when the location's timer stopped (left out of the quorum).",
    "alert_rule_firing": "1 while the alert rule fires.",
    "snapshot_timestamp_seconds": "When the latest stored snapshot was taken (Unix time).",
}


class Exposition:
    """Samples gathered per family, turned into prometheus_client families when collected."""

    def __init__(self) -> None:
        self.help = {**FAMILIES, **{name: text for kind in KINDS.values() for name, text in kind.metrics.items()}}
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in self.help}

    def add(self, family: str, labels: dict[str, Any], value: Any) -> None:
        if value is None:
            return
        try:
            number = float(value)
        except (TypeError, ValueError):
            return
        self.samples[family].append(({k: str(v) for k, v in labels.items()}, number))

    def collect(self) -> Iterator[Metric]:
        for name, samples in self.samples.items():
            names: list[str] = []
            for labels, _ in samples:
                names += [k for k in labels if k not in names]
            family = GaugeMetricFamily(name, self.help[name], labels=names)
            for labels, value in samples:
                family.add_metric([labels.get(k, "") for k in names], value)
            yield family

    def text(self) -> str:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry).decode()


def _monitor(out: Exposition, m: dict[str, Any], row: dict[str, Any] | None, uptime: float | None) -> None:
    """One monitor's samples: status, health, uptime, its latest check, and its kind's own."""
    labels = {"id": m["id"], "name": m["name"], "kind": m["kind"]}
    for status in vocabulary(m["kind"], m["status"]):
        out.add("monitor_status", {**labels, "status": status}, 1 if status == m["status"] else 0)
    out.add("monitor_enabled", labels, 1 if m["enabled"] else 0)
    if m["enabled"] and m["status"] != "PENDING":
        out.add("monitor_healthy", labels, 1 if status_info(m["status"]).healthy else 0)
    out.add("monitor_uptime_24h_ratio", labels, uptime)
    if row is None:
        return
    if row.get("latency_ms") is not None:
        out.add("monitor_latency_seconds", labels, float(row["latency_ms"]) / 1000)
    checked = row.get("checked_at") or row.get("ts")
    if isinstance(checked, datetime):
        out.add("monitor_last_check_timestamp_seconds", labels, checked.timestamp())
    kind = KINDS.get(m["kind"])
    for sample in kind.samples(row) if kind is not None else []:
        if sample.family in out.samples:
            out.add(sample.family, {**labels, **sample.labels}, sample.value)


def vocabulary(kind: str, current: str | None = None) -> list[str]:
    """Every status of a kind (its Vocabulary: PENDING, ERROR and its own), plus `current` if it is not one."""
    plugin = KINDS.get(kind)
    statuses = list(plugin.statuses) if plugin is not None else []
    return [*statuses, current] if current and current not in statuses else statuses


def settings_locations() -> tuple[str, ...]:
    from shared.settings import get_settings

    return get_settings().locations


async def _locations(store: Store, out: Exposition, monitors: list[dict[str, Any]]) -> None:
    """What each location sees of each monitor checked from several (its state's per-location statuses)."""
    from shared.manage.monitors import kind_states, located_view

    _, wheres = await kind_states(store, {m["kind"] for m in monitors if m["kind"] in KINDS})
    for m in monitors:
        where = wheres.get(m["kind"])
        if where is None or not where.covers(KINDS[m["kind"]]) or not m["enabled"]:
            continue
        try:
            cfg = from_entity(m["entity"])
        except Exception:  # noqa: BLE001 - an unreadable definition has no locations to show
            continue
        for location, seen in located_view(cfg, m["state"], where).items():
            labels = {"id": m["id"], "name": m["name"], "kind": m["kind"], "location": location}
            out.add("monitor_location_stale", labels, 1 if seen["stale"] else 0)
            if seen["status"] not in ("PENDING", "ERROR"):
                out.add("monitor_location_healthy", labels, 1 if status_info(seen["status"]).healthy else 0)


async def _latest(store: Store, m: dict[str, Any], known: uptimes.Everyone) -> dict[str, Any] | None:
    return await uptimes.latest_result(store, m["id"], known) if m["checked"] else None  # never checked: no read


async def prometheus_text(store: Store) -> str:
    from shared.rules.service import list_rules

    monitors, snap, rules = await asyncio.gather(live_states(store), latest_snapshot(store), list_rules(store))
    known = await uptimes.everyone(store, datetime.now(UTC) - UPTIME_WINDOW, [m["id"] for m in monitors])
    latest = await gather_bounded(monitors, lambda m: _latest(store, m, known))
    current = [(known.tally(m["id"]), row) for m, row in zip(monitors, latest, strict=True)]
    out = Exposition()
    counts: dict[tuple[str, str], int] = {(kind, status): 0 for kind in KINDS for status in vocabulary(kind)}
    for m, (tally, row) in zip(monitors, current, strict=True):
        _monitor(out, m, row, tally.up / tally.checks if tally.checks else None)
        if m["enabled"]:
            counts[(m["kind"], m["status"])] = counts.get((m["kind"], m["status"]), 0) + 1
    if settings_locations():
        await _locations(store, out, monitors)
    for (kind_name, status), count in sorted(counts.items()):
        out.add("monitors", {"kind": kind_name, "status": status}, count)
    for rule in rules:
        out.add("alert_rule_firing", {"id": rule["id"], "name": rule["name"], "metric": rule["metric"],
                                      "severity": rule["severity"]}, 1 if rule["state"]["firing"] else 0)
    if snap:
        out.add("snapshot_timestamp_seconds", {}, datetime.fromisoformat(snap["taken_at"]).timestamp())
    return out.text()
