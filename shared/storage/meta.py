"""Bookkeeping: per-kind meta rows (pause flag, last timer run, watermarks), timer-run records, single-runner
leases, the health ping, and retention deletes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.storage import keys
from shared.storage.base import DEFS_ROW, StoreBase, etag_of, is_conflict
from shared.storage.limits import check_entity


class MetaTable(StoreBase):
    async def ping(self) -> None:
        """One cheap request that proves storage answers (for /health)."""
        client = await self.table("meta")
        await client.upsert_entity({"PartitionKey": "health", "RowKey": "ping", "at": datetime.now(UTC)})

    async def get_kind_meta(self, kind: str) -> dict[str, Any]:
        client = await self.table("meta")
        try:
            return dict(await client.get_entity(keys.META_PK, kind))
        except ResourceNotFoundError:
            return {}

    async def kind_meta_and_defs(self, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A kind's meta row and the definitions' versions, in one request. With several locations the meta row
        also holds `locations`: {location: its own meta row (`last_tick_at`, …)} (keys.located_meta)."""
        lo, hi = keys.located_meta_bounds(kind)
        rows = await self.query("meta", "PartitionKey eq @pk and ( RowKey eq @kind or RowKey eq @defs or "
                                "( RowKey ge @lo and RowKey lt @hi ) )",
                                {"pk": keys.META_PK, "kind": kind, "defs": DEFS_ROW, "lo": lo, "hi": hi})
        found = {row["RowKey"]: dict(row) for row in rows}
        meta = found.get(kind, {})
        located = {rk[len(lo):]: row for rk, row in found.items() if rk.startswith(lo)}
        return ({**meta, "locations": located} if located else meta), found.get(DEFS_ROW, {})

    async def set_kind_meta(self, kind: str, **fields: Any) -> None:
        client = await self.table("meta")
        await client.upsert_entity({"PartitionKey": keys.META_PK, "RowKey": kind, **fields}, mode=UpdateMode.MERGE)

    # -- timer runs -------------------------------------------------------------------------------------

    async def record_tick(self, kind: str, tick: dict[str, Any]) -> None:
        client = await self.table("ticks")
        ran = tick["started_at"]
        await client.upsert_entity(check_entity({"PartitionKey": keys.ticks_pk(kind, ran),
                                                 "RowKey": keys.inverted(ran), "kind": kind, **tick}))

    async def list_ticks(self, kind: str, since: datetime, limit: int = 2000) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        return await self.walk("ticks", [keys.ticks_pk(kind, at) for at in _month_starts(now, since)],
                               "RowKey lt @hi", {"hi": keys.inverted(since)}, limit=limit)

    async def newest_tick(self, kind: str, checked_only: bool = True, months: int = 2) -> dict[str, Any] | None:
        """The newest timer/manual run record of a kind (that checked at least one monitor), from the current and
        previous month; None when there is none."""
        now = datetime.now(UTC)
        flt = "checked gt 0" if checked_only else "RowKey ne ''"
        rows = await self.walk("ticks", [keys.ticks_pk(kind, at) for at in
                                         _month_starts(now, now - timedelta(days=31 * (months - 1)))], flt, limit=1)
        return rows[0] if rows else None

    # -- leases -----------------------------------------------------------------------------------------
    # "Only one runs at a time" across instances. Acquire = create the row, or take it over once expired (guarded
    # by its ETag, so of two instances taking over the same expired lease one wins); release = delete it, again
    # only with our ETag, so a holder whose lease expired and was taken over cannot delete the new one.

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> str | None:
        """The lease's ETag when we hold it now; None when someone else holds an unexpired one."""
        client = await self.table("leases")
        now = datetime.now(UTC)
        row = {"PartitionKey": keys.LEASE_PK, "RowKey": name, "owner": owner, "acquired_at": now,
               "expires_at": now + timedelta(seconds=seconds)}
        try:
            return str((await client.create_entity(row))["etag"])
        except ResourceExistsError:
            pass
        try:
            current = await client.get_entity(keys.LEASE_PK, name)
        except ResourceNotFoundError:
            return None  # released in between: the caller tries again
        expires = current.get("expires_at")
        if expires is not None and expires > now:
            return None
        try:
            return str((await client.update_entity(row, mode=UpdateMode.REPLACE, etag=etag_of(current),
                                                   match_condition=MatchConditions.IfNotModified))["etag"])
        except (ResourceModifiedError, ResourceNotFoundError, HttpResponseError) as error:
            if isinstance(error, ResourceNotFoundError) or is_conflict(error):
                return None
            raise

    async def renew_lease(self, name: str, owner: str, etag: str, seconds: float) -> str | None:
        """Extend a lease we hold; None when it is no longer ours (expired and taken over)."""
        client = await self.table("leases")
        now = datetime.now(UTC)
        try:
            return str((await client.update_entity(
                {"PartitionKey": keys.LEASE_PK, "RowKey": name, "owner": owner, "renewed_at": now,
                 "expires_at": now + timedelta(seconds=seconds)}, mode=UpdateMode.MERGE, etag=etag,
                match_condition=MatchConditions.IfNotModified))["etag"])
        except (ResourceModifiedError, ResourceNotFoundError, HttpResponseError) as error:
            if isinstance(error, ResourceNotFoundError) or is_conflict(error):
                return None
            raise

    async def release_lease(self, name: str, etag: str) -> None:
        client = await self.table("leases")
        try:
            await client.delete_entity(keys.LEASE_PK, name, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass
        except HttpResponseError as error:
            if not is_conflict(error):
                raise

    async def get_lease(self, name: str) -> dict[str, Any] | None:
        client = await self.table("leases")
        try:
            return dict(await client.get_entity(keys.LEASE_PK, name))
        except ResourceNotFoundError:
            return None

    # -- retention --------------------------------------------------------------------------------------

    async def purge(self, table: str, partitions: list[str], older_than: datetime, time_field: str) -> int:
        """Delete rows of the given partitions whose time_field is older than the cutoff; returns the count."""
        deleted = 0
        for pk in partitions:
            rows = await self.query(table, f"PartitionKey eq @pk and {time_field} lt @cut",
                                    {"pk": pk, "cut": older_than}, select=["PartitionKey", "RowKey"])
            if rows:
                await self.batch(table, [("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]})
                                         for r in rows])
                deleted += len(rows)
        return deleted


def _month_starts(start: datetime, stop: datetime) -> list[datetime]:
    """A time in each month from start's back to stop's (for partition keys built from a time)."""
    return [datetime(int(m[:4]), int(m[4:]), 1, tzinfo=UTC) for m in keys.months_back(start, stop)]
