"""Settling one monitor's result: evaluate (pure) on the stored state, pass it through the alert gate (pure:
maintenance and `depends_on` hold alerts, shared/engine/gate.py), and commit the new state with its outbox rows in
one ETag-guarded transaction — only when something changed (the steady path writes nothing).

A run that loses the ETag race re-reads; if the winner already applied the same slot it drops its result (a
duplicate), otherwise it re-evaluates on top of the winner's state. So a timer run and a "run now" at the same
moment can never open two downtime windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.engine.gate import GATE, NO_HOLD, Held, Hold, gate
from shared.engine.outbox import payloads
from shared.storage import Conflict

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from monitors.contract import CheckResult, Evaluation, Kind
    from shared.storage import OutboxRow, StateRow, Store

# the engine's own bookkeeping in a state row, not the kind's ("_loc", …: shared/engine/located.py LOC_KEY, …)
ENGINE_KEYS = ("last_slot", GATE, "_loc", "_regional", "_told")



@dataclass
class Outcome:
    monitor_id: str
    name: str
    slot: datetime
    result: CheckResult
    status: str | None = None
    events: list[str] = field(default_factory=list)
    duplicate: bool = False
    checked_at: datetime | None = None
    maintenance: str | None = None  # the id of the maintenance window the check ran in
    steady: bool = False  # nothing changed: the state was not written (a success may be folded into a block)
    series_id: str | None = None  # several locations: the id this location's checks are stored under
    location: str | None = None

    @property
    def stored_as(self) -> str:
        return self.series_id or self.monitor_id


def evaluate(kind: Kind[Any], cfg: MonitorBase, row: StateRow | None, result: CheckResult, now: datetime,
             hold: Hold = NO_HOLD) -> tuple[Evaluation, list[Held], dict[str, Any]]:
    """The kind's pure evaluate on the stored state (without the engine's bookkeeping), through the alert gate;
    (evaluation, held events, previous state as the gate saw it).

    `since` (GET /monitors: since when the monitor has its status) is set at every status change, whichever kind:
    a kind that did not set it itself gets the time of this result. Only a change sets it, and a change is written
    anyway: the steady path stays free of writes."""
    prev = {k: v for k, v in row.data.items() if k not in ENGINE_KEYS} if row else {}
    evaluation = kind.evaluate(cfg, prev, result, now)
    if cfg.public:  # e-mails about a public monitor may link to its place on the status page
        for event in evaluation.events:
            event.public = True
    if evaluation.status != (row.status if row else None) and evaluation.state.get("since") == prev.get("since"):
        evaluation.state = {**evaluation.state, "since": now.isoformat()}
    if row is not None and GATE in row.data:
        prev = {**prev, GATE: row.data[GATE]}
    gated = gate(cfg, prev, evaluation, hold.occurrence, list(hold.parents_down), hold.at or now)
    return gated.evaluation, gated.held, prev


def unchanged(evaluation: Evaluation, prev: dict[str, Any], held: list[Held] | None = None) -> bool:
    return evaluation.state == prev and not evaluation.events and not evaluation.ops and not held


async def settle(store: Store, kind: Kind[Any], cfg: MonitorBase, row: StateRow | None, result: CheckResult,
                 slot: datetime, now: datetime, evaluation: Evaluation | None = None,
                 held: list[Held] | None = None, hold: Hold = NO_HOLD) -> tuple[Outcome, list[OutboxRow]]:
    """Evaluate and commit one monitor's result, retrying on ETag conflicts (re-evaluated with the same hold)."""
    slot_key = slot.isoformat()
    outcome = Outcome(cfg.id or "", cfg.name, slot, result, checked_at=now,
                      maintenance=hold.occurrence.window_id if hold.occurrence else None)
    for _ in range(6):
        if evaluation is None:
            evaluation, held, prev = evaluate(kind, cfg, row, result, now, hold)
            if unchanged(evaluation, prev, held):
                outcome.status = evaluation.status
                return outcome, []  # the steady path: nothing to write
        outcome.status = evaluation.status
        try:
            rows = await store.commit_state(kind.name, cfg.id or "", {**evaluation.state, "last_slot": slot_key},
                                            evaluation.status, row.etag if row else None,
                                            payloads(evaluation.events, evaluation.ops, held))
            outcome.events = [e.type.value for e in evaluation.events]
            return outcome, rows
        except Conflict:
            row = await store.get_state(kind.name, cfg.id or "")
            evaluation = None
            if row is not None and row.data.get("last_slot") == slot_key:
                outcome.duplicate = True  # another run already applied this very slot
                outcome.status = row.status
                return outcome, []
    raise RuntimeError(f"state of monitor {cfg.id} kept changing; gave up after 6 attempts")


def result_fields(outcome: Outcome, trigger: str) -> dict[str, Any]:
    """A result row's fields besides its monitor and slot (what a fold's template keeps of a steady check)."""
    r = outcome.result
    fields = {"outcome": r.outcome, "latency_ms": r.latency_ms, "error": r.error, "checked_at": outcome.checked_at,
              "trigger": trigger, "status": outcome.status, **r.data}
    if outcome.maintenance:  # uptime leaves it out (shared/uptime.py); the API shows it
        fields.update(maintenance=True, maintenance_window=outcome.maintenance)
    if outcome.location:
        fields["location"] = outcome.location
    return {k: v for k, v in fields.items() if v is not None}


def result_row(store: Store, outcome: Outcome, trigger: str) -> dict[str, Any]:
    return store.result_entity(outcome.stored_as, outcome.slot, result_fields(outcome, trigger))
