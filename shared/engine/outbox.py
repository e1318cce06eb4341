"""The transactional outbox: what a state commit leaves to publish (events and downtime operations), written in
the same transaction as the state, and publishing it (downtime window, stored event, queue message; the row is
deleted last, so a crash anywhere leaves it for the next run).

An event the alert gate held (maintenance, a parent down: shared/engine/gate.py) carries its reason in `held`: it
is stored with delivery `held` and that reason, and never queued."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from monitors.contract import CloseDowntime, DowntimeOp, OpenDowntime
from shared.events import DeliveryStatus, Event
from shared.secrets import scrub_obj

if TYPE_CHECKING:
    from shared.engine.gate import Held
    from shared.storage import OutboxRow, Store

log = logging.getLogger("monitor.engine")


def _op_json(op: DowntimeOp) -> dict[str, Any]:
    if isinstance(op, OpenDowntime):
        return {"op": "open_downtime", "started_at": op.started_at.isoformat(), "reason": op.reason}
    return {"op": "close_downtime", "started_at": op.started_at.isoformat(), "ended_at": op.ended_at.isoformat()}


def _op_of(data: dict[str, Any]) -> DowntimeOp | None:
    started = datetime.fromisoformat(data["started_at"])
    if data.get("op") == "open_downtime":
        return OpenDowntime(started, data.get("reason"))
    if data.get("op") == "close_downtime":
        return CloseDowntime(started, datetime.fromisoformat(data["ended_at"]))
    return None


def payloads(events: list[Event], ops: list[DowntimeOp] | None = None,
             held: list[Held] | None = None) -> list[dict[str, Any]]:
    """Outbox payloads: one per event (held ones with their reason); the downtime operations ride on the first (or
    on one of their own)."""
    out: list[dict[str, Any]] = [{"id": e.id, "event": scrub_obj(e.model_dump(mode="json")), "ops": []}
                                 for e in events]
    out += [{"id": h.event.id, "event": scrub_obj(h.event.model_dump(mode="json")), "ops": [], "held": h.reason}
            for h in held or []]
    if ops:
        encoded = [_op_json(op) for op in ops]
        if out:
            out[0]["ops"] = encoded
        else:
            out.append({"id": uuid.uuid4().hex, "event": None, "ops": encoded})
    return out


def _when(row: OutboxRow) -> str:
    """When what a row publishes happened (its event, else its downtime operation)."""
    event = row.payload.get("event") or {}
    ops = row.payload.get("ops") or [{}]
    return str(event.get("occurred_at") or ops[-1].get("ended_at") or ops[-1].get("started_at") or "")


async def publish(store: Store, rows: list[OutboxRow]) -> int:
    """Apply outbox rows: downtime windows, stored events, queue messages; delete each row last. Returns the
    number of queue messages sent. Rows go out in the order they happened, per monitor, so a window is closed
    before the next one opens even when a crash left both behind."""
    sent = 0
    for row in sorted(rows, key=lambda r: (r.owner_id, _when(r))):
        payload = row.payload
        try:
            for data in payload.get("ops", []):
                op = _op_of(data)
                if isinstance(op, OpenDowntime):
                    await store.open_downtime(row.owner_id, op.started_at, op.reason)
                elif isinstance(op, CloseDowntime):
                    await store.close_downtime(row.owner_id, op.started_at, op.ended_at)
            event = payload.get("event")
            if event and payload.get("held"):
                await store.save_event(event, delivery=DeliveryStatus.HELD.value)
                await store.mark_event(event, DeliveryStatus.HELD.value, held=str(payload["held"])[:1000])
            elif event:
                audience = Event.model_validate(event).audience
                await store.save_event(event, delivery=DeliveryStatus.QUEUED.value if audience != "none"
                                       else DeliveryStatus.NONE.value)
                if audience != "none":
                    await store.send_event_message({"event": event})
                    sent += 1
            await store.delete_outbox(row)
        except Exception:
            log.exception("publishing outbox row %s failed; will retry next cycle", row.row_key)
    return sent
