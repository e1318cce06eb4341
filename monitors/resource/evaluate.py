"""Evaluating a resource monitor's metrics: one event per tick in which any metric's status changes
(RESOURCE_ALERT / RESOURCE_WARNING / RESOURCE_RECOVERED), a reminder every `renotify_minutes` while not OK, nothing
on a steady tick. Disks get a projected time to full from a small sample history kept in the state, sampled at most
every SAMPLE_EVERY, so a steady monitor writes its state at most that often; the projection is also written into
`result.data` (recomputed on every call), so the stored result carries it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors.contract import CheckResult, Evaluation, Outcome
from monitors.policy import REMINDER, error_policy
from shared.events import Event, EventType
from shared.text import duration

if TYPE_CHECKING:
    from monitors.resource.config import Config

KIND = "resource"
LEVELS = {"OK": 0, "WARNING": 1, "ALERT": 2}
OUTCOMES: dict[str, Outcome] = {"OK": "up", "WARNING": "degraded", "ALERT": "down"}  # for results and uptime

# Disk projection: a sample of each disk's used bytes at most every SAMPLE_EVERY, the last MAX_SAMPLES kept (3 h);
# a projection needs MIN_SAMPLES points (the current one included) spanning at least MIN_SPAN.
SAMPLE_EVERY = timedelta(minutes=10)
MAX_SAMPLES = 18
MIN_SAMPLES = 3
MIN_SPAN = timedelta(minutes=30)
MAX_PROJECTION = timedelta(days=365)

# ------------------------------------------------------------------------------------------ evaluate


def worst(statuses: Any) -> str:
    return max(statuses, key=lambda s: LEVELS.get(s, 0), default="OK")


def encode_metrics(metrics: list[dict[str, Any]]) -> str:
    """The `metrics` of a result as Table Storage keeps it: one string property (it has no list type)."""
    return json.dumps(metrics, separators=(",", ":"))


def decode_metrics(raw: Any) -> list[dict[str, Any]]:
    """The `metrics` field of a result (a JSON list, or the list itself) back to dicts; [] when absent or
    unreadable. The one place the stored string is read: results, run-now, /metrics and Prometheus go through it."""
    if isinstance(raw, list):
        return raw
    try:
        value = json.loads(raw) if raw else []
    except (TypeError, ValueError):
        return []
    return value if isinstance(value, list) else []


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def _ts(dt: datetime) -> int:
    return int(dt.timestamp())


def value_text(metric: dict[str, Any]) -> str:
    value, unit = float(metric["value"]), metric.get("unit") or ""
    if unit == "%":
        return f"{value:.1f} %"
    number = str(int(value)) if value.is_integer() else f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"
    return f"{number} {unit}".strip()


def _threshold_text(metric: dict[str, Any], level: str) -> str:
    limit = metric["alert"] if level == "ALERT" else metric["warn"]
    word = "alert" if level == "ALERT" else "warning"
    return f"{word} at {value_text({**metric, 'value': limit})}" if metric.get("direction", "above") == "above" \
        else f"{word} at or below {value_text({**metric, 'value': limit})}"


def project_full(samples: list[list[int]], current: tuple[int, int], free: int) -> float | None:
    """Seconds until a disk is full at the rate its used bytes grew over the samples (least squares over the
    samples and the current point); None without enough history or when it is not growing."""
    points = [(float(t), float(u)) for t, u in samples if t < current[0]] + [(float(current[0]), float(current[1]))]
    if len(points) < MIN_SAMPLES or points[-1][0] - points[0][0] < MIN_SPAN.total_seconds():
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_u = sum(u for _, u in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var <= 0:
        return None
    slope = sum((t - mean_t) * (u - mean_u) for t, u in points) / var  # bytes per second
    if slope <= 0:
        return None
    seconds = max(0.0, free) / slope
    return round(seconds) if seconds <= MAX_PROJECTION.total_seconds() else None


def _disks(state: dict[str, Any], metrics: list[dict[str, Any]], now: datetime) -> float | None:
    """Keep each disk's sample history in `state` (a sample at most every SAMPLE_EVERY, MAX_SAMPLES kept) and put
    its projected time to full into its metric; returns the soonest."""
    history: dict[str, list[list[int]]] = state.get("samples") or {}
    kept: dict[str, list[list[int]]] = {}
    soonest: float | None = None
    stamp = _ts(now)
    for metric in metrics:
        path = metric.get("path")
        metric.pop("full_in_seconds", None)
        if not path or metric.get("used_bytes") is None:
            continue
        samples = [list(s) for s in history.get(path, [])]
        if not samples or stamp - samples[-1][0] >= SAMPLE_EVERY.total_seconds():
            samples = [*samples, [stamp, int(metric["used_bytes"])]][-MAX_SAMPLES:]
        kept[path] = samples
        seconds = project_full(samples, (stamp, int(metric["used_bytes"])), int(metric.get("free_bytes") or 0))
        if seconds is not None:
            metric["full_in_seconds"] = seconds
            soonest = seconds if soonest is None else min(soonest, seconds)
    if kept:
        state["samples"] = kept
    else:
        state.pop("samples", None)
    return soonest


def _change_text(metric: dict[str, Any], before: str, since: str | None, now: datetime) -> str:
    name, after = metric["name"], metric["status"]
    if after == "OK":
        text = f"{name} back to OK at {value_text(metric)}"
        if since:
            text += f" after {duration((now - datetime.fromisoformat(since)).total_seconds())}"
    elif LEVELS[after] < LEVELS.get(before, 0):
        text = f"{name} down to {after} at {value_text(metric)} ({_threshold_text(metric, 'ALERT')})"
    else:
        text = f"{name} at {value_text(metric)} ({_threshold_text(metric, after)})"
    if metric.get("full_in_seconds") is not None and after != "OK":
        text += f", projected full in about {duration(metric['full_in_seconds'])}"
    return text


def _metric_line(metric: dict[str, Any]) -> str:
    line = f"{value_text(metric)} — {metric['status']} (warning {value_text({**metric, 'value': metric['warn']})}, " \
           f"alert {value_text({**metric, 'value': metric['alert']})}"
    line += ", lower is worse)" if metric.get("direction") == "below" else ")"
    if metric.get("full_in_seconds") is not None:
        line += f"; full in about {duration(metric['full_in_seconds'])}"
    return line


def summary(metrics: list[dict[str, Any]]) -> str:
    """The metrics that are not OK, worst first (or "all OK")."""
    bad = sorted((m for m in metrics if m["status"] != "OK"), key=lambda m: -LEVELS[m["status"]])
    if not bad:
        return "all OK"
    return "; ".join(f"{m['name']} {value_text(m)} ({m['status']})" for m in bad)


def _track_levels(state: dict[str, Any], metrics: list[dict[str, Any]],
                  now: datetime) -> list[tuple[dict[str, Any], str, str | None]]:
    """Keep each metric's [status, since when it has not been OK] in the state; the metrics whose status changed,
    with the status before and since when it was not OK."""
    old: dict[str, list[Any]] = state.get("metrics") or {}
    levels: dict[str, list[Any]] = {}
    changes: list[tuple[dict[str, Any], str, str | None]] = []
    for metric in metrics:
        was, since = (old.get(metric["name"]) or ["OK", None])[:2]
        status = metric["status"]
        if status != was:
            changes.append((metric, was, since))
            since = None if status == "OK" else since if was != "OK" else _iso(now)
        levels[metric["name"]] = [status, since]
    state["metrics"] = levels
    return changes


def evaluate(cfg: Config, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
    """Events when a metric's status changes (one per tick, naming every change), reminders while not OK."""
    # `last_slot` is the engine's bookkeeping, not ours: leaving it out keeps an unchanged state equal.
    state = {k: v for k, v in prev.items() if k != "last_slot"} if prev else {"status": "PENDING"}
    events: list[Event] = []
    if error_policy(cfg, KIND, state, result, now, events):
        return Evaluation(state, state["status"], events)

    metrics = decode_metrics(result.data.get("metrics"))
    soonest = _disks(state, metrics, now)
    result.data["metrics"] = encode_metrics(metrics)
    result.data.pop("disk_full_in_seconds", None)
    if soonest is not None:
        result.data["disk_full_in_seconds"] = soonest

    before_status = state.get("status", "PENDING")
    changes = _track_levels(state, metrics, now)
    overall = worst(m["status"] for m in metrics)

    def event(type_: EventType, severity: str, message: str, **extra: Any) -> None:
        details: dict[str, Any] = {"status": overall, "previous_status": before_status, "source": cfg.source.type}
        details.update({m["name"]: _metric_line(m) for m in metrics})
        if soonest is not None:
            disk = next(m["name"] for m in metrics if m.get("full_in_seconds") == soonest)
            details["projected_full_in"] = f"about {duration(soonest)} ({disk}, at its recent growth rate)"
        details.update(extra)
        events.append(Event(type=type_, kind=KIND, monitor_id=cfg.id or "", monitor_name=cfg.name,
                            severity=severity, occurred_at=now, message=message, details=details))

    if changes:
        changes.sort(key=lambda c: -LEVELS[c[0]["status"]])
        texts = [_change_text(m, was, since, now) for m, was, since in changes]
        changed = {m["name"] for m, _, _ in changes}
        still = [f"{m['name']} still {m['status']} at {value_text(m)}" for m in metrics
                 if m["status"] != "OK" and m["name"] not in changed]
        message = "; ".join(texts + still)
        new_levels = {m["status"] for m, _, _ in changes}
        if "ALERT" in new_levels:
            event(EventType.RESOURCE_ALERT, "critical", message)
        elif "WARNING" in new_levels:
            event(EventType.RESOURCE_WARNING, "warning", message)
        else:
            event(EventType.RESOURCE_RECOVERED, "info", message)
        if overall != "OK":
            state["notified_at"] = _iso(now)
    elif overall != "OK" and cfg.renotify_minutes:
        last = state.get("notified_at")
        if last is None or (now - datetime.fromisoformat(last)).total_seconds() >= cfg.renotify_minutes * 60:
            state["notified_at"] = _iso(now)
            bad = sorted((m for m in metrics if m["status"] != "OK"), key=lambda m: -LEVELS[m["status"]])
            message = "Still " + "; ".join(_change_text(m, m["status"], None, now) for m in bad)
            if overall == "ALERT":
                event(EventType.RESOURCE_ALERT, "critical", message, reminder=True, since=state.get("since"))
            else:
                event(EventType.RESOURCE_WARNING, "warning", message, reminder=True, since=state.get("since"))
            events[-1].replaces = REMINDER
    if overall == "OK":
        state.pop("notified_at", None)
    if overall != before_status:
        state["since"] = _iso(now)
    state["status"] = overall
    return Evaluation(state, overall, events)


# ------------------------------------------------------------------------------------ results and /metrics


def result_view(row: dict[str, Any]) -> dict[str, Any]:
    """A result (stored, or just made) as the API shows it: `metrics` a JSON list of objects, not a string."""
    if "metrics" not in row:
        return row
    return {**row, "metrics": decode_metrics(row["metrics"])}


def readings_view(row: dict[str, Any] | None) -> dict[str, Any]:
    """A stored result (the latest of a monitor) as GET /api/v1/metrics shows it; None = never checked."""
    if row is None:
        return {"status": "PENDING", "last_updated": None, "error": None, "metrics": {}, "statuses": {},
                "details": []}
    metrics = decode_metrics(row.get("metrics"))
    status = row.get("status") or row.get("overall") or ("ERROR" if row.get("outcome") == "error" else "PENDING")
    checked = row.get("checked_at") or row.get("ts")
    return {"status": status,
            "last_updated": checked.isoformat() if isinstance(checked, datetime) else checked,
            "error": row.get("error"),
            "metrics": {m["name"]: m["value"] for m in metrics},
            "statuses": {m["name"]: m["status"] for m in metrics},
            "details": metrics}
