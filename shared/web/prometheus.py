"""Every monitor in the Prometheus text exposition format 0.0.4, through prometheus_client (a custom collector over
the stored state; nothing is measured here). Behind the function key, like the rest of /api/v1.

The families every monitor has are declared here; a kind adds its own (`Kind.metrics`, `Kind.samples`): certificate
days left, stock quantity, parts short, resource metric values, …
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from monitors import KINDS, status_info
from shared.aio import gather_bounded
from shared.snapshots.views import latest as latest_snapshot
from shared.snapshots.views import live_states

if TYPE_CHECKING:
    from shared.storage import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BASE = ("id", "name", "kind")

FAMILIES = {
    "monitor_status": "Current status of a monitor: 1 for the series whose status label is the monitor's status.",
    "monitor_healthy": "1 when the monitor is UP or OK, 0 when not (PENDING and disabled monitors are left out).",
    "monitor_enabled": "1 when the monitor is enabled.",
    "monitor_latency_seconds": "Duration of the monitor's latest check.",
    "monitor_last_check_timestamp_seconds": "When the monitor was last checked (Unix time).",
    "monitor_uptime_24h_ratio": "Share of successful checks over 24 h, from the latest snapshot (every 15 min).",
    "monitors": "Enabled monitors by kind and status.",
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
    out.add("monitor_status", {**labels, "status": m["status"]}, 1)
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


async def prometheus_text(store: Store) -> str:
    from shared.rules.service import list_rules

    monitors, snap, rules = await asyncio.gather(live_states(store), latest_snapshot(store), list_rules(store))
    latest = await gather_bounded(monitors, lambda m: store.query_results(m["id"], limit=1))
    uptime: dict[str, float] = {}
    for view in ((snap or {}).get("kinds") or {}).values():
        for item in (view.get("uptime_24h") or {}).get("monitors", []):
            if item.get("checks"):
                uptime[item["id"]] = item["up"] / item["checks"]
    out = Exposition()
    counts: dict[tuple[str, str], int] = {}
    for m, rows in zip(monitors, latest, strict=True):
        _monitor(out, m, rows[0] if rows else None, uptime.get(m["id"]))
        if m["enabled"]:
            counts[(m["kind"], m["status"])] = counts.get((m["kind"], m["status"]), 0) + 1
    for (kind_name, status), count in sorted(counts.items()):
        out.add("monitors", {"kind": kind_name, "status": status}, count)
    for rule in rules:
        out.add("alert_rule_firing", {"id": rule["id"], "name": rule["name"], "metric": rule["metric"],
                                      "severity": rule["severity"]}, 1 if rule["state"]["firing"] else 0)
    if snap:
        out.add("snapshot_timestamp_seconds", {}, datetime.fromisoformat(snap["taken_at"]).timestamp())
    return out.text()
