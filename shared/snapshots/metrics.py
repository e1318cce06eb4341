"""The snapshot metrics: a fixed catalog (so rules and charts can name metrics before data exists), the flat
{name: number | null} view of a snapshot that alert rules and /timeseries use, and which members each counted."""

from __future__ import annotations

from typing import Any

from monitors import KINDS, status_info


def _problem(status: str) -> bool:
    return not status_info(status).healthy and status != "PENDING"


def metric_catalog() -> list[dict[str, Any]]:
    """Every snapshot metric: name, unit, description and `explained_by` (where its members are listed)."""
    out = [
        {"name": "monitors_total", "unit": "monitors", "explained_by": "monitors",
         "description": "Monitors defined (enabled or not)."},
        {"name": "monitors_enabled", "unit": "monitors", "explained_by": "by_status",
         "description": "Enabled monitors (the ones every other status count is about)."},
        {"name": "monitors_ok", "unit": "monitors", "explained_by": "by_status.UP + by_status.OK",
         "description": "Enabled monitors that are UP (websites) or OK (stock, parts, resources)."},
        {"name": "monitors_degraded", "unit": "monitors", "explained_by": "by_status.DEGRADED",
         "description": "Enabled monitors that are DEGRADED (slow websites)."},
        {"name": "monitors_down", "unit": "monitors", "explained_by": "by_status.DOWN",
         "description": "Enabled monitors that are DOWN."},
        {"name": "monitors_pending", "unit": "monitors", "explained_by": "by_status.PENDING",
         "description": "Enabled monitors never checked yet."},
        {"name": "checker_errors", "unit": "monitors", "explained_by": "checker_errors.items",
         "description": "Enabled monitors in ERROR: the check itself could not run (the operator is told)."},
        {"name": "threshold_breaches", "unit": "monitors", "explained_by": "threshold_breaches.items",
         "description": "Active threshold breaches: stock LOW/HIGH, resource WARNING/ALERT, parts SHORT."},
        {"name": "open_downtimes", "unit": "windows", "explained_by": "open_downtimes.items",
         "description": "Open downtime windows of enabled monitors."},
        {"name": "stale_kinds", "unit": "kinds", "explained_by": "stale_kinds.items",
         "description": "Kinds with enabled monitors whose timer has not run for three minutes (not paused)."},
        {"name": "events_in_period", "unit": "events", "explained_by": "events.by_type",
         "description": "Events since the previous stored snapshot."},
        {"name": "uptime_24h_percent", "unit": "%", "explained_by": "kinds.*.uptime_24h",
         "description": "Uptime of all checks of the last 24 h (null without checks)."},
    ]
    for kind in sorted(KINDS):
        out += [
            {"name": f"{kind}_monitors", "unit": "monitors", "explained_by": f"kinds.{kind}.by_status",
             "description": f"Enabled {kind} monitors."},
            {"name": f"{kind}_problems", "unit": "monitors", "explained_by": f"kinds.{kind}.by_status",
             "description": f"Enabled {kind} monitors neither UP/OK nor PENDING."},
            {"name": f"{kind}_uptime_24h_percent", "unit": "%", "explained_by": f"kinds.{kind}.uptime_24h.monitors",
             "description": f"Uptime of the {kind} checks of the last 24 h (null without checks)."},
            {"name": f"{kind}_newest_result_age_seconds", "unit": "s", "explained_by": f"kinds.{kind}.newest_result",
             "description": f"Age of the newest {kind} result (null: none in two months)."},
        ]
    return out


def metric_names() -> list[str]:
    return [m["name"] for m in metric_catalog()]


def unknown_metric(name: str) -> str:
    return f"unknown metric {name!r}; one of: {', '.join(metric_names())}"


def compute_metrics(snapshot: dict[str, Any]) -> dict[str, float | None]:
    """The flat metrics of a snapshot, every catalog name present (null when unknown)."""
    count = {status: bucket["count"] for status, bucket in snapshot["by_status"].items()}
    metrics: dict[str, float | None] = {
        "monitors_total": snapshot["monitors"]["total"],
        "monitors_enabled": snapshot["monitors"]["enabled"],
        "monitors_ok": sum(n for s, n in count.items() if status_info(s).healthy),
        "monitors_degraded": count.get("DEGRADED", 0),
        "monitors_down": count.get("DOWN", 0),
        "monitors_pending": count.get("PENDING", 0),
        "checker_errors": snapshot["checker_errors"]["count"],
        "threshold_breaches": snapshot["threshold_breaches"]["count"],
        "open_downtimes": snapshot["open_downtimes"]["count"],
        "stale_kinds": snapshot["stale_kinds"]["count"],
        "events_in_period": snapshot["events"]["count"],
        "uptime_24h_percent": snapshot["uptime_24h"]["percent"],
    }
    for kind in sorted(KINDS):
        view = snapshot["kinds"].get(kind) or {}
        statuses = view.get("by_status", {})
        metrics[f"{kind}_monitors"] = view.get("enabled", 0)
        metrics[f"{kind}_problems"] = sum(b["count"] for s, b in statuses.items() if _problem(s))
        metrics[f"{kind}_uptime_24h_percent"] = (view.get("uptime_24h") or {}).get("percent")
        metrics[f"{kind}_newest_result_age_seconds"] = (view.get("newest_result") or {}).get("age_seconds")
    return metrics


def explain(snapshot: dict[str, Any], metric: str) -> list[str]:
    """Names of the monitors (or kinds, event types) a metric counted, for alert e-mails."""
    def names(bucket: dict[str, Any] | None) -> list[str]:
        return [m.get("name") or m.get("id") or "?" for m in (bucket or {}).get("monitors", [])]

    statuses = snapshot.get("by_status", {})
    simple = {"monitors_ok": [s for s in statuses if status_info(s).healthy], "monitors_degraded": ["DEGRADED"],
              "monitors_down": ["DOWN"],
              "monitors_pending": ["PENDING"], "monitors_enabled": list(statuses)}
    if metric in simple:
        return [n for s in simple[metric] for n in names(statuses.get(s))]
    if metric in ("checker_errors", "threshold_breaches", "open_downtimes"):
        return [m.get("name") or m["id"] for m in snapshot.get(metric, {}).get("items", [])]
    if metric == "stale_kinds":
        return [s["kind"] for s in snapshot.get("stale_kinds", {}).get("items", [])]
    if metric == "events_in_period":
        return [f"{t} ×{b['count']}" for t, b in snapshot.get("events", {}).get("by_type", {}).items()]
    for kind, view in snapshot.get("kinds", {}).items():
        if metric in (f"{kind}_monitors", f"{kind}_problems"):
            return [n for s, b in view.get("by_status", {}).items()
                    if metric.endswith("_monitors") or _problem(s) for n in names(b)]
        if metric == f"{kind}_uptime_24h_percent":
            return [f"{m['name']} {m['percent']:g} %" for m in view.get("uptime_24h", {}).get("monitors", [])]
    return []
