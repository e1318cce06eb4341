"""Evaluating every enabled rule on a stored snapshot: each rule's state and its events are committed together in
`state` partition "alert_rule" (the engine's transactional outbox, ETag-guarded) and published by the engine's
publisher, which stores each event and queues it for delivery to the rule's recipients (in the event's details) — a
crash between commit and publish is published by the next evaluation."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.engine.outbox import payloads, publish
from shared.events import Event, EventType
from shared.rules.model import OPERATORS, RULE_KIND, AlertRule
from shared.rules.service import rule_of
from shared.snapshots.metrics import explain
from shared.storage import Conflict
from shared.text import clip

if TYPE_CHECKING:
    from shared.storage import OutboxRow, Store

log = logging.getLogger("monitor.snapshots")


def step(rule: AlertRule, prev: dict[str, Any], value: float | None, snapshot: dict[str, Any],
         now: datetime) -> tuple[dict[str, Any], list[Event]]:
    """Pure: a rule's next state and events for one stored snapshot."""
    state: dict[str, Any] = {"consecutive": int(prev.get("consecutive", 0)), "firing": bool(prev.get("firing"))}
    if prev.get("since"):
        state["since"] = prev["since"]
    breach = value is not None and OPERATORS[rule.operator](value, rule.threshold)
    events: list[Event] = []
    title = rule.title()
    details: dict[str, Any] = {"rule_id": rule.id, "metric": rule.metric, "operator": rule.operator,
                               "threshold": rule.threshold, "value": value, "for_snapshots": rule.for_snapshots,
                               "snapshot_id": snapshot.get("id"), "snapshot_taken_at": snapshot.get("taken_at"),
                               "recipients": list(rule.recipients)}
    shown = f"{value:g}" if value is not None else "unknown"
    if breach:
        state["consecutive"] = min(state["consecutive"] + 1, rule.for_snapshots)
        if not state["firing"] and state["consecutive"] >= rule.for_snapshots:
            state["firing"] = True
            state["since"] = now.isoformat()
            counted = explain(snapshot, rule.metric)
            events.append(Event(
                type=EventType.ALERT_RULE_FIRING, kind=RULE_KIND, monitor_id=rule.id or "", monitor_name=title,
                severity=rule.severity, occurred_at=now,
                message=f"{rule.metric} is {shown} ({rule.operator} {rule.threshold:g}) in {rule.for_snapshots} "
                        f"consecutive snapshot{'s' if rule.for_snapshots != 1 else ''}.",
                details={**details, "counted": clip(", ".join(counted), 2000) or None}))
    else:
        state["consecutive"] = 0
        if state["firing"]:
            started = datetime.fromisoformat(state.pop("since")) if state.get("since") else None
            state["firing"] = False
            seconds = round((now - started).total_seconds()) if started else None
            events.append(Event(
                type=EventType.ALERT_RULE_RESOLVED, kind=RULE_KIND, monitor_id=rule.id or "", monitor_name=title,
                severity="info", occurred_at=now,
                message=f"{rule.metric} is {shown}: no longer {rule.operator} {rule.threshold:g}.",
                details={**details, "firing_seconds": seconds}))
        state.pop("since", None)
    return state, events


async def evaluate_rules(store: Store, snapshot: dict[str, Any]) -> dict[str, Any]:
    """Every enabled rule on a stored snapshot: state + events committed together (outbox), then published."""
    now = datetime.fromisoformat(snapshot["taken_at"])
    entities, (states, outbox) = await asyncio.gather(store.list_alert_rules(), store.load_states(RULE_KIND))
    if outbox:  # left by a build that crashed between commit and publish (we hold the lease: nobody else does)
        await publish(store, outbox)
    fired: list[dict[str, Any]] = []
    resolved: list[dict[str, Any]] = []
    evaluated = 0
    rows: list[OutboxRow] = []
    for entity in entities:
        try:
            rule = rule_of(entity)
        except ValidationError:
            log.exception("alert rule %s is unreadable (a metric that no longer exists?)", entity["RowKey"])
            continue
        if not rule.enabled:
            continue
        evaluated += 1
        row = states.get(rule.id or "")
        prev = row.data if row else {}
        new, events = step(rule, prev, snapshot["metrics"].get(rule.metric), snapshot, now)
        if new == prev and not events:
            continue  # the steady path writes nothing
        try:
            rows += await store.commit_state(RULE_KIND, rule.id or "", new, "FIRING" if new["firing"] else "OK",
                                             row.etag if row else None, payloads(events))
        except Conflict:
            log.warning("alert rule %s state changed concurrently; evaluated again on the next snapshot", rule.id)
            continue
        for event in events:
            (fired if event.type == EventType.ALERT_RULE_FIRING else resolved).append(
                {"id": rule.id, "name": rule.title(), "event_id": event.id})
    await publish(store, rows)
    return {"evaluated": evaluated, "fired": fired, "resolved": resolved}
