"""The `blocks` table: every tick's checks, packed per hour and shard (shared/storage/packing.py), until the hourly
compaction has folded the hour into `results` and `rollups`; the retention purge deletes them a day later.

| PartitionKey   | RowKey                                   |
|----------------|------------------------------------------|
| "{yyyymmddhh}" | "{shard}_{inverted tick}_{run}_{flush}"  |
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from shared.storage import keys
from shared.storage.blockset import BlockSet
from shared.storage.limits import check_entity
from shared.storage.meta import MetaTable
from shared.storage.packing import Entry, block_entries

COMPACTION_META = "_rollup"  # meta row: `rolled_until` (hours before it are compacted), `blocks_since`
BLOCKS_FROM_THE_START = datetime(2000, 1, 1, tzinfo=UTC)  # `blocks_since` of an install with no row from before blocks


class BlocksTable(MetaTable):
    _blocks_since: ClassVar[dict[str, datetime]] = {}  # account → blocks_since: once set, it never moves

    async def write_blocks(self, entities: list[dict[str, Any]]) -> None:
        """One transaction per hour partition (a tick's shards: at most BLOCK_SHARDS entities, one request)."""
        await self.batch("blocks", [("upsert", check_entity(e)) for e in entities])

    async def compaction_marks(self) -> tuple[datetime | None, datetime | None]:
        """(rolled_until, blocks_since): hours before `rolled_until` are in fold rows and rollups; blocks exist from
        the hour `blocks_since` on (before it, results were rows only: the version before blocks)."""
        meta = await self.get_kind_meta(COMPACTION_META)
        since = meta.get("blocks_since")
        if since is not None:
            BlocksTable._blocks_since[self._tables.url] = since
        return meta.get("rolled_until"), since

    async def blocks_since(self) -> datetime | None:
        """`blocks_since` (see compaction_marks), read once per process after it is set. Unset, and `results` holds
        no row at all (a new install, or every older row expired), nothing predates blocks: it is set to
        BLOCKS_FROM_THE_START, so readers never fall back to one read per monitor for rows that do not exist."""
        known = BlocksTable._blocks_since.get(self._tables.url)
        if known is not None:
            return known
        since = (await self.compaction_marks())[1]
        if since is None and not await self.query("results", "PartitionKey ge @lo", {"lo": ""}, limit=1,
                                                   select=["PartitionKey"]):
            await self.set_kind_meta(COMPACTION_META, blocks_since=BLOCKS_FROM_THE_START)
            since = BlocksTable._blocks_since[self._tables.url] = BLOCKS_FROM_THE_START
        return since

    async def block_entries(self, first_hour: datetime, last_hour: datetime,
                            monitor_id: str | None = None) -> list[Entry]:
        """Checks in blocks of the hours first_hour..last_hour (inclusive): one monitor's (its shard's range), or
        everyone's."""
        flt = "PartitionKey ge @lo and PartitionKey le @hi"
        params: dict[str, Any] = {"lo": keys.block_pk(first_hour), "hi": keys.block_pk(last_hour)}
        if monitor_id is not None:
            flt += " and RowKey ge @rlo and RowKey lt @rhi"
            params["rlo"], params["rhi"] = keys.block_shard_bounds(keys.block_shard(monitor_id))
        entities = await self.query("blocks", flt, params)
        return list(_entries(entities, monitor_id))

    async def block_set(self, first_hour: datetime, last_hour: datetime, since: datetime | None = None) -> BlockSet:
        """Every monitor's checks in the blocks of first_hour..last_hour, as columns (shared/storage/blockset.py)."""
        entities = await self.query("blocks", "PartitionKey ge @lo and PartitionKey le @hi",
                                    {"lo": keys.block_pk(first_hour), "hi": keys.block_pk(last_hour)})
        return BlockSet(entities, since)

    async def oldest_block_hour(self) -> datetime | None:
        entities = await self.query("blocks", "PartitionKey ge @lo", {"lo": "0"}, limit=1, select=["PartitionKey"])
        if not entities:
            return None
        pk = entities[0]["PartitionKey"]
        return datetime(int(pk[:4]), int(pk[4:6]), int(pk[6:8]), int(pk[8:10]), tzinfo=UTC)

    async def purge_blocks(self, before: datetime) -> int:
        """Delete every block of the hours before `before` (already compacted)."""
        deleted = 0
        while True:
            rows = await self.query("blocks", "PartitionKey lt @hi", {"hi": keys.block_pk(before)}, limit=5000,
                                    select=["PartitionKey", "RowKey"])
            if not rows:
                return deleted
            await self.batch("blocks", [("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]})
                                        for r in rows])
            deleted += len(rows)


def _entries(entities: list[dict[str, Any]], monitor_id: str | None) -> Iterator[Entry]:
    for entity in entities:
        yield from block_entries(entity, monitor_id)


def hours(first: datetime, last: datetime) -> Iterator[datetime]:
    hour = keys.hour_floor(first)
    while hour <= last:
        yield hour
        hour += timedelta(hours=1)
