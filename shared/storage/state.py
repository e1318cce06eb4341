"""The `state` table: each monitor's (and alert rule's) evolving state, guarded by its ETag, and the
transactional outbox rows committed in the same transaction (partition = kind)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.storage import keys
from shared.storage.base import Conflict, Operation, StoreBase, etag_of, is_conflict, submit, written_at
from shared.storage.limits import check_entity
from shared.text import compact_json


@dataclass
class StateRow:
    monitor_id: str
    data: dict[str, Any]
    status: str
    etag: str | None


@dataclass
class OutboxRow:
    kind: str
    row_key: str
    payload: dict[str, Any]
    written_at: datetime | None = None  # the table's Timestamp (set by load_states)

    @property
    def owner_id(self) -> str:
        return keys.outbox_owner(self.row_key)


def _state_row(monitor_id: str, entity: dict[str, Any]) -> StateRow:
    return StateRow(monitor_id, json.loads(entity.get("data") or "{}"), entity.get("status", ""),
                    etag_of(entity))


FULL_EVERY = timedelta(minutes=10)
CLOCK_SKEW = timedelta(seconds=30)  # between this machine's clock and the service's Timestamps, at most (NTP: < 1 s)


class StateTable(StoreBase):
    _known: ClassVar[dict[tuple[str, str], tuple[dict[str, StateRow], datetime, datetime]]] = {}

    async def load_states(self, kind: str) -> tuple[dict[str, StateRow], list[OutboxRow]]:
        """Every state row of a kind and every outbox row not yet published, in one partition query."""
        states: dict[str, StateRow] = {}
        outbox: list[OutboxRow] = []
        for entity in await self.query("state", "PartitionKey eq @k", {"k": kind}):
            rk = entity["RowKey"]
            if keys.is_outbox_row(rk):
                outbox.append(OutboxRow(kind, rk, json.loads(entity["payload"]), written_at(entity)))
            else:
                states[rk] = _state_row(rk, entity)
        return states, outbox

    async def engine_states(self, kind: str) -> tuple[dict[str, StateRow], list[OutboxRow]]:
        """load_states for a run, at the cost of what changed: this process keeps the rows, and a run reads only
        those written since the previous read (Timestamp, with CLOCK_SKEW to spare) and every outbox row (few:
        they live seconds) — one request whatever the number of monitors. Every FULL_EVERY it reads everything
        again, which also forgets rows deleted by other processes."""
        key = (self._tables.url, kind)
        now = datetime.now(UTC)
        known = StateTable._known.get(key)
        if known is None or now - known[1] > FULL_EVERY:
            states, rows = await self.load_states(kind)
            StateTable._known[key] = (states, now, now)
            return dict(states), rows
        states, full_at, read_at = known
        outbox: list[OutboxRow] = []
        for entity in await self.query("state", "PartitionKey eq @k and ( Timestamp ge @t or payload ne '' )",
                                       {"k": kind, "t": read_at - CLOCK_SKEW}):
            rk = entity["RowKey"]
            if keys.is_outbox_row(rk):
                outbox.append(OutboxRow(kind, rk, json.loads(entity["payload"]), written_at(entity)))
            else:
                states[rk] = _state_row(rk, entity)
        StateTable._known[key] = (states, full_at, now)
        return dict(states), outbox

    async def get_state(self, kind: str, monitor_id: str) -> StateRow | None:
        client = await self.table("state")
        try:
            entity = await client.get_entity(kind, monitor_id)
        except ResourceNotFoundError:
            return None
        return _state_row(monitor_id, entity)

    async def commit_state(self, kind: str, monitor_id: str, data: dict[str, Any], status: str,
                           etag: str | None, outbox: list[dict[str, Any]]) -> list[OutboxRow]:
        """Write the new state and its outbox rows in one transaction, guarded by the state's ETag.

        Raises Conflict when another run changed the state first (the caller re-reads and re-evaluates).
        """
        return await self.commit_states(kind, [(monitor_id, data, status, etag)], monitor_id, outbox)

    async def commit_states(self, kind: str, states: list[tuple[str, dict[str, Any], str, str | None]], owner: str,
                            outbox: list[dict[str, Any]]) -> list[OutboxRow]:
        """Write state rows (id, data, status, ETag or None for a new row) of one kind and `owner`'s outbox rows in
        one transaction, each state guarded by its ETag; Conflict when one of them changed first."""
        ops: list[Operation] = []
        for state_id, data, status, etag in states:
            entity = check_entity({"PartitionKey": kind, "RowKey": state_id, "data": compact_json(data),
                                   "status": status, "updated_at": datetime.now(UTC)})
            ops.append(("create", entity) if etag is None else
                       ("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                                           "match_condition": MatchConditions.IfNotModified}))
        rows = []
        for payload in outbox:
            rk = keys.outbox_row(owner, payload["id"])
            ops.append(("create", check_entity({"PartitionKey": kind, "RowKey": rk,
                                                "payload": compact_json(payload)})))
            rows.append(OutboxRow(kind, rk, payload))
        client = await self.table("state")
        try:
            if len(ops) == 1:  # one row: a plain ETag-guarded write costs a third of a transaction
                entity, etag = ops[0][1], states[0][3] if states else None
                if etag is None:
                    await client.create_entity(entity)
                else:
                    await client.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                               match_condition=MatchConditions.IfNotModified)
            else:
                await submit(client, ops)
        except (ResourceModifiedError, ResourceExistsError, HttpResponseError) as error:
            if is_conflict(error):
                raise Conflict(f"state of {owner} changed concurrently") from None
            raise
        return rows

    async def delete_outbox(self, row: OutboxRow) -> None:
        client = await self.table("state")
        with contextlib.suppress(ResourceNotFoundError):
            await client.delete_entity(row.kind, row.row_key)

    async def delete_state(self, kind: str, owner_id: str) -> None:
        known = StateTable._known.get((self._tables.url, kind))
        if known is not None:
            known[0].pop(owner_id, None)
        client = await self.table("state")
        with contextlib.suppress(ResourceNotFoundError):
            await client.delete_entity(kind, owner_id)

    # The engine owns the state rows. The one other writer is the delivery path: once a message was accepted for
    # at least one recipient it records the fields its event asked to confirm (parts lists: `last_hash`), so the
    # next evaluate knows what people were last told. Same ETag discipline: a concurrent engine write makes it
    # re-read and retry, and the engine, losing to this write, re-evaluates on top of it.

    async def confirm_state(self, kind: str, monitor_id: str, fields: dict[str, Any], attempts: int = 8) -> bool:
        """Set `fields` in a monitor's state. Returns False when the monitor has no state row (deleted
        meanwhile); raises Conflict when the row kept changing for `attempts` tries."""
        for _ in range(attempts):
            row = await self.get_state(kind, monitor_id)
            if row is None:
                return False
            if all(row.data.get(k) == v for k, v in fields.items()):
                return True
            try:
                await self.commit_state(kind, monitor_id, {**row.data, **fields}, row.status, row.etag, [])
                return True
            except Conflict:
                continue
        raise Conflict(f"state of {monitor_id} kept changing; {', '.join(fields)} not confirmed")
