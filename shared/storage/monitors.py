"""The `monitors` table: definitions (`spec` JSON) and the uniqueness guard rows that go with them, written
together in one transaction so a definition and its guards never disagree."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.storage import keys
from shared.storage.base import Conflict, Operation, StoreBase, is_conflict
from shared.storage.limits import check_entity


class MonitorsTable(StoreBase):
    async def list_monitors(self, kind: str | None = None, engine_fields: bool = False) -> list[dict[str, Any]]:
        """Monitor definitions; `engine_fields` reads only what a run needs (no timestamps to parse)."""
        flt = f"PartitionKey eq '{keys.MONITORS_PK}' and RowKey lt '~'"
        params: dict[str, Any] = {}
        if kind:
            flt += " and kind eq @kind"
            params["kind"] = kind
        select = ["RowKey", "kind", "name", "enabled", "spec"] if engine_fields else None
        return await self.query("monitors", flt, params, select=select)

    async def engine_monitors(self, kind: str, version: str | None) -> list[dict[str, Any]]:
        """A kind's definitions for a run: kept while the monitors' version stays (shared/storage/base.py)."""
        return list(await self.cached(f"monitors:{kind}", version,
                                      lambda: self.list_monitors(kind, engine_fields=True)))

    async def get_monitor(self, monitor_id: str) -> dict[str, Any] | None:
        client = await self.table("monitors")
        try:
            return await client.get_entity(keys.MONITORS_PK, monitor_id)
        except ResourceNotFoundError:
            return None

    async def insert_monitor(self, entity: dict[str, Any], unique: Iterable[str] = ()) -> None:
        entity = check_entity({**entity, "PartitionKey": keys.MONITORS_PK})
        ops: list[Operation] = [("create", entity)]
        ops += [("create", self._guard(row, entity["RowKey"])) for row in unique]
        client = await self.table("monitors")
        try:
            await client.submit_transaction(ops)
        except HttpResponseError as error:
            if is_conflict(error):
                taken = await self._taken_unique(list(unique), except_id=None)
                raise Conflict("already exists", key=taken) from None
            raise
        await self.touch_definitions("monitors")

    async def update_monitor(self, entity: dict[str, Any], etag: str, drop_unique: Iterable[str] = (),
                             add_unique: Iterable[str] = ()) -> None:
        entity = check_entity({**entity, "PartitionKey": keys.MONITORS_PK})
        ops: list[Operation] = [("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                                                    "match_condition": MatchConditions.IfNotModified})]
        ops += [("delete", {"PartitionKey": keys.MONITORS_PK, "RowKey": row}) for row in drop_unique]
        ops += [("create", self._guard(row, entity["RowKey"])) for row in add_unique]
        client = await self.table("monitors")
        try:
            await client.submit_transaction(ops)
        except HttpResponseError as error:
            if is_conflict(error):
                taken = await self._taken_unique(list(add_unique), except_id=entity["RowKey"])
                raise Conflict("already exists" if taken else "modified concurrently", key=taken) from None
            raise
        await self.touch_definitions("monitors")

    async def delete_monitor(self, monitor_id: str, kind: str, unique: Iterable[str] = ()) -> None:
        client = await self.table("monitors")
        ops: list[Operation] = [("delete", {"PartitionKey": keys.MONITORS_PK, "RowKey": row})
                                for row in [monitor_id, *unique]]
        await client.submit_transaction(ops)
        await self.touch_definitions("monitors")
        state = await self.table("state")
        lo, hi = keys.owned_range(monitor_id)
        rows = await self.query("state", "PartitionKey eq @k and RowKey ge @lo and RowKey lt @hi",
                                {"k": kind, "lo": lo, "hi": hi}, select=["RowKey"])
        for row in rows:
            with contextlib.suppress(ResourceNotFoundError):
                await state.delete_entity(kind, row["RowKey"])

    @staticmethod
    def _guard(row: str, monitor_id: str) -> dict[str, Any]:
        return {"PartitionKey": keys.MONITORS_PK, "RowKey": row, "monitor_id": monitor_id}

    async def _taken_unique(self, rows: list[str], except_id: str | None) -> str | None:
        client = await self.table("monitors")
        for row in rows:
            try:
                hit = await client.get_entity(keys.MONITORS_PK, row)
            except ResourceNotFoundError:
                continue
            if hit.get("monitor_id") != except_id:
                return row
        return None
