"""Alerting's tables: channel and maintenance-window definitions, and the `alerting` table of small runtime rows
(acknowledgements, grouped checker errors, rate-cap windows, escalations, digest watermarks), each partition one
concern (its PartitionKey names it: "ack", "group", "rate", "esc", "digest", …).

Definitions are JSON in `spec`, like monitors; channels are referred to by name, so a name guard row is written in
the same transaction as the definition. Runtime rows are read and written with their ETag (`put_row(…, etag)`):
two deliveries updating the same row never lose each other's change.
"""

from __future__ import annotations

import contextlib
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.storage import keys
from shared.storage.base import Conflict, Operation, StoreBase, etag_of, is_conflict
from shared.storage.limits import check_entity

DEFINITION_TABLES = {"channels": keys.CHANNELS_PK, "windows": keys.WINDOWS_PK}


class AlertingTables(StoreBase):
    # -- definitions (channels, windows) --------------------------------------------------------------------

    async def list_definitions(self, table: str) -> list[dict[str, Any]]:
        pk = DEFINITION_TABLES[table]
        return await self.query(table, f"PartitionKey eq '{pk}' and RowKey lt '~'")

    async def cached_definitions(self, table: str, version: str | None) -> list[dict[str, Any]]:
        return list(await self.cached(table, version, lambda: self.list_definitions(table)))

    async def get_definition(self, table: str, def_id: str) -> dict[str, Any] | None:
        client = await self.table(table)
        try:
            return await client.get_entity(DEFINITION_TABLES[table], def_id)
        except ResourceNotFoundError:
            return None

    async def insert_definition(self, table: str, entity: dict[str, Any], name: str | None = None) -> None:
        """Create a definition (and its name guard): Conflict(key=name) when the name is taken."""
        pk = DEFINITION_TABLES[table]
        entity = check_entity({**entity, "PartitionKey": pk})
        ops: list[Operation] = [("create", entity)]
        if name is not None:
            ops.append(("create", {"PartitionKey": pk, "RowKey": keys.name_row(name), "owner": entity["RowKey"]}))
        client = await self.table(table)
        try:
            await client.submit_transaction(ops)
        except HttpResponseError as error:
            if is_conflict(error):
                raise Conflict("already exists", key=name) from None
            raise
        await self.touch_definitions(table)

    async def update_definition(self, table: str, entity: dict[str, Any], etag: str, old_name: str | None = None,
                                new_name: str | None = None) -> None:
        """Replace a definition guarded by its ETag; a renamed one moves its name guard in the same transaction."""
        pk = DEFINITION_TABLES[table]
        entity = check_entity({**entity, "PartitionKey": pk})
        ops: list[Operation] = [("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                                                    "match_condition": MatchConditions.IfNotModified})]
        renamed = new_name is not None and new_name != old_name
        if renamed:
            if old_name is not None:
                ops.append(("delete", {"PartitionKey": pk, "RowKey": keys.name_row(old_name)}))
            ops.append(("create", {"PartitionKey": pk, "RowKey": keys.name_row(str(new_name)),
                                   "owner": entity["RowKey"]}))
        client = await self.table(table)
        try:
            await client.submit_transaction(ops)
        except HttpResponseError as error:
            if is_conflict(error):
                taken = renamed and await self._name_taken(table, str(new_name), entity["RowKey"])
                raise Conflict("already exists" if taken else "modified concurrently",
                               key=new_name if taken else None) from None
            raise
        await self.touch_definitions(table)

    async def delete_definition(self, table: str, def_id: str, name: str | None = None) -> None:
        pk = DEFINITION_TABLES[table]
        client = await self.table(table)
        for row in [def_id, *([keys.name_row(name)] if name is not None else [])]:
            with contextlib.suppress(ResourceNotFoundError):
                await client.delete_entity(pk, row)
        await self.touch_definitions(table)

    async def _name_taken(self, table: str, name: str, owner: str) -> bool:
        client = await self.table(table)
        try:
            row = await client.get_entity(DEFINITION_TABLES[table], keys.name_row(name))
        except ResourceNotFoundError:
            return False
        return row.get("owner") != owner

    # -- runtime rows (the `alerting` table) ----------------------------------------------------------------

    async def get_row(self, pk: str, rk: str) -> dict[str, Any] | None:
        """A runtime row (with its ETag in `etag_of`), None when absent."""
        client = await self.table("alerting")
        try:
            return await client.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None

    async def put_row(self, entity: dict[str, Any], etag: str | None = None, create: bool = False) -> str:
        """Write a runtime row; returns its new ETag. `etag`: replace only if unchanged since read; `create`: only
        if it does not exist yet; neither: upsert. Conflict when the condition does not hold."""
        client = await self.table("alerting")
        entity = check_entity(entity)
        try:
            if create:
                meta = await client.create_entity(entity)
            elif etag is not None:
                meta = await client.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                                  match_condition=MatchConditions.IfNotModified)
            else:
                meta = await client.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except (ResourceExistsError, ResourceModifiedError) as error:
            raise Conflict(str(error)) from None
        except HttpResponseError as error:
            if is_conflict(error):
                raise Conflict(str(error)) from None
            raise
        return str(meta.get("etag", ""))

    async def delete_row(self, pk: str, rk: str, etag: str | None = None) -> None:
        client = await self.table("alerting")
        try:
            if etag is None:
                await client.delete_entity(pk, rk)
            else:
                await client.delete_entity(pk, rk, etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            pass
        except (ResourceModifiedError, HttpResponseError) as error:
            if is_conflict(error):
                raise Conflict(str(error)) from None
            raise

    async def list_rows(self, pk: str, limit: int | None = None) -> list[dict[str, Any]]:
        return await self.query("alerting", "PartitionKey eq @pk", {"pk": pk}, limit=limit)


__all__ = ["AlertingTables", "etag_of"]
