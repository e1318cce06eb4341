"""Check results, newest first, in three layers read as one (shared/storage/packing.py):

- rows (`results`, slot-keyed): every check that is not a steady success, and every check written before blocks;
- fold rows (`results`, after the rows of their hour): the steady successes of an hour, compacted;
- blocks (`blocks`): the steady successes of the hours not compacted yet.

Also the hourly rollups (per monitor, and per hour for every monitor: the summaries) and downtime windows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from azure.data.tables import UpdateMode

from shared.storage import keys
from shared.storage.blocks import BlocksTable
from shared.storage.limits import check_entity
from shared.storage.packing import best, rebuild, summary_fields, summary_rollups, unfold
from shared.text import clip

_HOUR = timedelta(hours=1)
_FIRST = datetime(2000, 1, 1, tzinfo=UTC)


class ResultsTable(BlocksTable):
    # -- results ----------------------------------------------------------------------------------------

    async def write_results(self, rows: list[dict[str, Any]]) -> None:
        """Upsert results (keyed by monitor and slot time, so a duplicate run overwrites, never adds)."""
        await self.batch("results", [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows])

    @staticmethod
    def result_entity(monitor_id: str, at: datetime, fields: dict[str, Any]) -> dict[str, Any]:
        return {"PartitionKey": keys.results_pk(monitor_id, at), "RowKey": keys.result_row(monitor_id, at),
                "monitor_id": monitor_id, "ts": at, **fields}

    async def write_folds(self, folds: list[tuple[str, datetime, list[dict[str, Any]]]]) -> None:
        """Fold rows: (monitor id, hour, the parts packing.fold_fields made)."""
        await self.batch("results", [("upsert", check_entity(
            {"PartitionKey": keys.results_pk(mid, hour), "RowKey": keys.fold_row(mid, hour, n), **fields}),
            {"mode": UpdateMode.REPLACE}) for mid, hour, parts in folds for n, fields in enumerate(parts)])

    async def query_results(self, monitor_id: str, limit: int = 50, before: datetime | None = None,
                            since: datetime | None = None) -> list[dict[str, Any]]:
        """Newest first, at most `limit`; `before` is exclusive, `since` inclusive. Rows, fold rows and the blocks
        not yet compacted, merged: one result per slot (a row wins over a folded copy)."""
        rolled_until, _ = await self.compaction_marks()
        by_slot: dict[datetime, dict[str, Any]] = {}
        if before is None or rolled_until is None or before > rolled_until:
            first = max(t for t in (rolled_until, since, _FIRST) if t is not None)
            last = (before - timedelta(microseconds=1)) if before else datetime.now(UTC) + _HOUR
            for entry in best(await self.block_entries(first, last, monitor_id)).values():
                if entry.template is not None and (since is None or entry.slot >= since) \
                        and (before is None or entry.slot < before):
                    by_slot[entry.slot] = rebuild(monitor_id, entry.slot, entry.dt_us, entry.latency,
                                                  template_fields(entry.template))
        for item in await self.stored_results(monitor_id, limit, before, since):
            if "fold_n" in item:  # a folded copy never replaces what is there
                by_slot.setdefault(item["ts"], item)
            else:
                by_slot[item["ts"]] = item
        items = sorted(by_slot.values(), key=lambda i: i["ts"], reverse=True)[:limit]
        for item in items:
            item.pop("fold_n", None)
        return items

    async def stored_results(self, monitor_id: str, limit: int, before: datetime | None,
                      since: datetime | None) -> list[dict[str, Any]]:
        """Rows and unfolded fold rows, walking month partitions newest first until `limit` results are certain:
        a fold row comes after the rows of its hour, so a row only settles the hours after its own."""
        now = datetime.now(UTC)
        top = before or now + timedelta(days=1)
        floor = max(since or now - timedelta(days=3650), top - timedelta(days=400))
        lo, hi = keys.result_bounds(monitor_id, before, since)
        client = await self.table("results")
        items: list[dict[str, Any]] = []
        for pk in keys.results_partitions(monitor_id, top, floor):
            pager = client.query_entities("PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi",
                                          parameters={"pk": pk, "lo": lo, "hi": hi},
                                          results_per_page=min(max(limit, 10), 1000))
            async for entity in pager:
                if "fold_n" in entity:
                    got = [{**i, "fold_n": 1} for i in unfold(monitor_id, entity)]
                    settled = entity["ts"]
                else:
                    got, settled = [entity], keys.hour_floor(entity["ts"]) + _HOUR
                items += [i for i in got if (since is None or i["ts"] >= since)
                          and (before is None or i["ts"] < before)]
                if len(items) >= limit and sum(1 for i in items if i["ts"] >= settled) >= limit:
                    return items
            if len(items) >= limit:
                return items
        return items

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

    async def write_summary(self, hour: datetime, rollups: dict[str, dict[str, Any]]) -> None:
        """Every monitor's rollup of one hour in a few entities (`parts` says how many make it whole)."""
        parts = summary_fields(rollups)
        await self.batch("rollups", [("upsert", check_entity(
            {"PartitionKey": keys.summary_pk(hour), "RowKey": keys.summary_row(hour, n), "hour": hour,
             "parts": len(parts), **fields}), {"mode": UpdateMode.REPLACE}) for n, fields in enumerate(parts)])

    _summaries: ClassVar[dict[tuple[str, datetime], dict[str, dict[str, Any]]]] = {}
    MAX_SUMMARIES: ClassVar[int] = 24 * 8

    async def summaries(self, hours: list[datetime]) -> dict[datetime, dict[str, dict[str, Any]]]:
        """The summaries of these hours that exist, each read once per process (a summary never changes)."""
        url = self._tables.url
        missing = [h for h in hours if (url, h) not in ResultsTable._summaries]
        if missing:
            found = await self.read_summaries(missing[0], missing[-1])
            if len(ResultsTable._summaries) + len(found) > self.MAX_SUMMARIES:
                ResultsTable._summaries.clear()
            ResultsTable._summaries.update({(url, h): v for h, v in found.items()})
        return {h: ResultsTable._summaries[(url, h)] for h in hours if (url, h) in ResultsTable._summaries}

    async def read_summaries(self, first: datetime, last: datetime) -> dict[datetime, dict[str, dict[str, Any]]]:
        """The hour summaries of hours first..last (inclusive) that are whole: hour → monitor id → rollup."""
        out: dict[datetime, dict[str, dict[str, Any]]] = {}
        counts: dict[datetime, list[int]] = {}
        for year in range(last.year, first.year - 1, -1):
            hour_last, hour_first = keys.hour_floor(last), keys.hour_floor(first)
            rows = await self.query("rollups", "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                                    {"pk": keys.summary_pk(datetime(year, 1, 1, tzinfo=UTC)),
                                     "lo": keys.summary_row(hour_last, 0), "hi": keys.summary_row(hour_first, 999)})
            for row in rows:
                hour = keys.hour_floor(row["hour"])
                out.setdefault(hour, {}).update(summary_rollups(row))
                seen = counts.setdefault(hour, [0, int(row.get("parts", 1))])
                seen[0] += 1
        return {hour: rollups for hour, rollups in out.items() if counts[hour][0] >= counts[hour][1]}

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


_templates: dict[str, dict[str, Any]] = {}


def template_fields(text: str) -> dict[str, Any]:
    """Decoded templates, kept: a monitor's steady checks share a handful."""
    from shared.storage.packing import Templates

    found = _templates.get(text)
    if found is None:
        if len(_templates) > 4096:
            _templates.clear()
        found = _templates[text] = Templates([text]).get(0)
    return found
