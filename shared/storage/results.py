"""Check results (slot-keyed, newest first), their hourly rollups, and downtime windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from azure.data.tables import UpdateMode

from shared.storage import keys
from shared.storage.base import StoreBase
from shared.storage.limits import check_entity
from shared.text import clip


class ResultsTable(StoreBase):
    # -- results ----------------------------------------------------------------------------------------

    async def write_results(self, rows: list[dict[str, Any]]) -> None:
        """Upsert results (keyed by monitor and slot time, so a duplicate run overwrites, never adds)."""
        await self.batch("results", [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows])

    @staticmethod
    def result_entity(monitor_id: str, at: datetime, fields: dict[str, Any]) -> dict[str, Any]:
        return {"PartitionKey": keys.results_pk(monitor_id, at), "RowKey": keys.result_row(monitor_id, at),
                "monitor_id": monitor_id, "ts": at, **fields}

    async def query_results(self, monitor_id: str, limit: int = 50, before: datetime | None = None,
                            since: datetime | None = None) -> list[dict[str, Any]]:
        """Newest first; `before` is exclusive, `since` inclusive. Walks month partitions backwards."""
        now = datetime.now(UTC)
        top = before or now + timedelta(days=1)
        floor = max(since or now - timedelta(days=3650), top - timedelta(days=400))
        lo, hi = keys.result_bounds(monitor_id, before, since)
        return await self.walk("results", keys.results_partitions(monitor_id, top, floor),
                               "RowKey gt @lo and RowKey lt @hi", {"lo": lo, "hi": hi}, limit=limit)

    # -- rollups ----------------------------------------------------------------------------------------

    @staticmethod
    def rollup_entity(monitor_id: str, hour: datetime, agg: dict[str, Any]) -> dict[str, Any]:
        return {"PartitionKey": keys.rollup_pk(monitor_id, hour.year), "RowKey": keys.rollup_row(monitor_id, hour),
                "monitor_id": monitor_id, "hour": hour, **agg}

    async def write_rollups(self, monitor_id: str, hours: dict[datetime, dict[str, Any]]) -> None:
        await self.write_rollup_rows([self.rollup_entity(monitor_id, hour, agg) for hour, agg in hours.items()])

    async def write_rollup_rows(self, rows: list[dict[str, Any]]) -> None:
        await self.batch("rollups", [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows])

    async def query_rollups(self, monitor_id: str, since: datetime) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        lo, hi = keys.rollup_bounds(monitor_id, since)
        return await self.walk("rollups", [keys.rollup_pk(monitor_id, y) for y in range(now.year, since.year - 1, -1)],
                               "RowKey gt @lo and RowKey le @hi", {"lo": lo, "hi": hi})

    # -- downtimes --------------------------------------------------------------------------------------

    async def open_downtime(self, monitor_id: str, started_at: datetime, reason: str | None) -> None:
        """Idempotent: the window's key is its start time, so replaying the outbox cannot add a second one."""
        client = await self.table("downtimes")
        await client.upsert_entity(check_entity({"PartitionKey": monitor_id, "RowKey": keys.downtime_row(started_at),
                                                 "started_at": started_at, "reason": clip(reason, 1000) or ""}),
                                   mode=UpdateMode.MERGE)

    async def close_downtime(self, monitor_id: str, started_at: datetime, ended_at: datetime) -> None:
        client = await self.table("downtimes")
        await client.upsert_entity({"PartitionKey": monitor_id, "RowKey": keys.downtime_row(started_at),
                                    "started_at": started_at, "ended_at": ended_at}, mode=UpdateMode.MERGE)

    async def list_downtimes(self, monitor_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self.query("downtimes", "PartitionKey eq @pk", {"pk": monitor_id}, limit=limit)
