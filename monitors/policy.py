"""The alert policy every up/down monitor shares: a pure function of (config, state, result, time).

States: PENDING (never checked) → UP / DEGRADED / DOWN, and ERROR when the checker itself is broken.
- DOWN after `failure_threshold` consecutive failures; a downtime window opens at the first failure of the run.
- UP again after `success_threshold` consecutive successes; the window closes; a recovery event.
- While DOWN, a reminder every `renotify_minutes` (if set).
- ERROR (the check could not run: bad config, our storage failing) goes to the operator, not the audience,
  and leaves the up/down counters and any open window alone; the next real result resumes where it was.
- `since` is the time of the latest status change (into any status, ERROR included).

Counters saturate (at most max(failure_threshold, breaker_failures) failures are counted), so a monitor that
stays UP or stays DOWN produces an identical state and the engine writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from monitors.base import MonitorBase, UpDownPolicy
from monitors.contract import (
    CheckResult,
    CloseDowntime,
    DowntimeOp,
    Evaluation,
    Kind,
    OpenDowntime,
    Vocabulary,
    healthy,
    red,
    warning,
)
from shared.events import Event, EventType
from shared.text import duration

REMINDER = "reminder"  # Event.replaces of reminders: a newer one makes an undelivered older one moot


class UpDown(StrEnum):
    """The statuses of an up/down monitor."""

    PENDING = "PENDING"
    UP = "UP"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"
    ERROR = "ERROR"


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def error_policy(monitor: MonitorBase, kind: str, state: dict[str, Any], result: CheckResult, now: datetime,
                 events: list[Event], name: str | None = None) -> bool:
    """The ERROR part of the policy, shared by every kind; updates `state` and `events` in place.

    An error result enters ERROR (one MONITOR_ERROR to the operator, the previous status kept in
    `before_error`) and returns True: the caller stops there. Any other result leaves ERROR if the monitor was
    in it (MONITOR_ERROR_CLEARED, previous status restored) and returns False: the caller evaluates it.
    `name` is the monitor's display name in the events (default: `monitor.name`).
    """
    status = state.get("status", "PENDING")

    def event(type_: EventType, severity: str, message: str, **details: Any) -> None:
        events.append(Event(type=type_, kind=kind, monitor_id=monitor.id or "", monitor_name=name or monitor.name,
                            severity=severity, occurred_at=now, message=message, details=details))

    if result.outcome == "error":
        if status != "ERROR":
            state["before_error"] = status
            state["status"] = "ERROR"
            state["error"] = result.error
            state["since"] = _iso(now)
            event(EventType.MONITOR_ERROR, "critical", f"Checker error: {result.error}", error=result.error)
        return True

    if status == "ERROR":
        status = state.pop("before_error", "PENDING")
        event(EventType.MONITOR_ERROR_CLEARED, "info", "The checker works again.", error=state.pop("error", None))
        state["status"] = status
    return False


def evaluate_updown(monitor: UpDownPolicy, kind: str, prev: dict[str, Any], result: CheckResult,
                    now: datetime) -> Evaluation:
    state: dict[str, Any] = dict(prev) if prev else {"status": "PENDING", "fails": 0, "oks": 0}
    events: list[Event] = []
    ops: list[DowntimeOp] = []

    def event(type_: EventType, severity: str, message: str, **details: Any) -> None:
        events.append(Event(type=type_, kind=kind, monitor_id=monitor.id or "", monitor_name=monitor.name,
                            severity=severity, occurred_at=now, message=message, details=details))

    before = state.get("status", "PENDING")
    if error_policy(monitor, kind, state, result, now, events):
        return Evaluation(state, state["status"], events, ops)
    status = state.get("status", "PENDING")

    ok = result.outcome in ("up", "degraded")
    cap = max(monitor.failure_threshold, monitor.breaker_failures)
    if ok:
        state["fails"] = 0
        state.pop("first_fail_at", None)
        state["oks"] = min(int(state.get("oks", 0)) + 1, monitor.success_threshold)
        healthy = "DEGRADED" if result.outcome == "degraded" else "UP"
        if status == "PENDING":
            status = "UP"  # a first check that is slow is announced below, as for any UP monitor turning slow
        if status == "DOWN":
            if state["oks"] >= monitor.success_threshold:
                started = _dt(state.pop("down_since", None))
                seconds = round((now - started).total_seconds()) if started else None
                if started:
                    ops.append(CloseDowntime(started, now))
                state.pop("notified_at", None)
                status = healthy
                event(EventType.MONITOR_UP, "info", f"{monitor.name} is up again"
                      + (f" after {duration(seconds)}" if seconds is not None else "") + ".",
                      downtime_seconds=seconds, latency_ms=result.latency_ms)
        elif status == "UP" and healthy == "DEGRADED":
            status = healthy
            event(EventType.MONITOR_DEGRADED, "warning", f"{monitor.name} is slow: {result.error or ''}".strip(),
                  latency_ms=result.latency_ms, reason=result.error)
        elif status == "DEGRADED" and healthy == "UP":
            status = healthy
            event(EventType.MONITOR_RECOVERED_FROM_DEGRADED, "info", f"{monitor.name} responds normally again.",
                  latency_ms=result.latency_ms)
    else:
        state["oks"] = 0
        state["fails"] = min(int(state.get("fails", 0)) + 1, cap)
        if state["fails"] == 1 or "first_fail_at" not in state:
            state.setdefault("first_fail_at", _iso(now))
        if status != "DOWN" and state["fails"] >= monitor.failure_threshold:
            started = _dt(state["first_fail_at"]) or now
            state["down_since"] = _iso(started)
            state["notified_at"] = _iso(now)
            status = "DOWN"
            ops.append(OpenDowntime(started, result.error))
            event(EventType.MONITOR_DOWN, "critical", f"{monitor.name} is down: {result.error}",
                  error=result.error, since=_iso(started), failures=state["fails"])
        elif status == "DOWN" and monitor.renotify_minutes:
            last = _dt(state.get("notified_at"))
            if last is None or (now - last).total_seconds() >= monitor.renotify_minutes * 60:
                state["notified_at"] = _iso(now)
                event(EventType.MONITOR_DOWN, "critical", f"{monitor.name} is still down: {result.error}",
                      error=result.error, since=state.get("down_since"), reminder=True)
                events[-1].replaces = REMINDER  # a newer reminder makes a queued one moot
    if status != before:  # to UP, DEGRADED or DOWN, or back from ERROR: since when it has this status
        state["since"] = _iso(now)
    state["status"] = status
    return Evaluation(state, status, events, ops)


def breaker_open(monitor: UpDownPolicy, state: dict[str, Any] | None) -> bool:
    return bool(state) and int((state or {}).get("fails", 0)) >= monitor.breaker_failures


U = TypeVar("U", bound=UpDownPolicy)


class UpDownKind(Kind[U]):
    """A kind with an up/down target: the shared up/down policy, its circuit breaker and its statuses."""

    statuses = Vocabulary(UpDown, {"UP": healthy(), "DEGRADED": warning("Degraded", 30), "DOWN": red("Down", 100)})
    regional_status = "DEGRADED"

    def quorum_config(self, cfg: U) -> U:
        return cfg.model_copy(update={"failure_threshold": 1, "success_threshold": 1})

    def evaluate(self, cfg: U, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
        return evaluate_updown(cfg, self.name, prev, result, now)

    def timed_out(self, cfg: U, seconds: float) -> CheckResult:  # noqa: ARG002 - the contract's signature
        return CheckResult("down", seconds * 1000, f"no answer within {seconds:g} s (the check's deadline)")

    def breaker_open(self, cfg: U, state: dict[str, Any] | None) -> bool:
        return breaker_open(cfg, state)

    def breaker_interval(self, cfg: U) -> int | None:
        return cfg.breaker_interval_seconds
