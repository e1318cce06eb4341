"""Events (every event with its delivery status), the events queue, and the delivery idempotency records."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.secrets import scrub, scrub_obj
from shared.storage import keys
from shared.storage.base import StoreBase, etag_of
from shared.storage.limits import check_entity
from shared.text import clip, compact_json

EVENTS_QUEUE = "monitor-events"
POISON_QUEUE = "monitor-events-poison"


class Claim(StrEnum):
    """The answer to "may I deliver this event to this recipient now?"."""

    CLAIMED = "claimed"  # go ahead
    DONE = "done"  # already delivered or permanently failed: skip
    BUSY = "busy"  # another invocation holds an unexpired claim: retry later


def _details_json(details: dict[str, Any], limit: int = 30000) -> str:
    """Event details as JSON that always parses back: oversized details keep a clipped text, marked."""
    text = compact_json(details)
    if len(text) <= limit:
        return text
    return compact_json({"truncated": True, "text": text[: limit - 100]})


def _parse_dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class EventsTable(StoreBase):
    # -- events -----------------------------------------------------------------------------------------

    @staticmethod
    def _event_keys(event: dict[str, Any]) -> dict[str, str]:
        at = _parse_dt(event["occurred_at"])
        return {"PartitionKey": keys.events_pk(at), "RowKey": keys.event_row(at, event["id"])}

    async def save_event(self, event: dict[str, Any], delivery: str) -> None:
        client = await self.table("events")
        entity = {**self._event_keys(event), "event_id": event["id"], "type": event["type"], "kind": event["kind"],
                  "monitor_id": event["monitor_id"], "monitor_name": event["monitor_name"],
                  "severity": event["severity"], "occurred_at": _parse_dt(event["occurred_at"]),
                  "message": clip(scrub(event.get("message") or ""), 4000),
                  "details": _details_json(scrub_obj(event.get("details", {}))),
                  "delivery": delivery, "replaces": event.get("replaces") or ""}
        await client.upsert_entity(check_entity(entity), mode=UpdateMode.MERGE)

    async def mark_event(self, event: dict[str, Any], delivery: str, error: str | None = None,
                         **fields: Any) -> None:
        """Record an event's delivery status (and e.g. `next_try_at`, `attempts` while it is pending)."""
        client = await self.table("events")
        await client.upsert_entity({**self._event_keys(event), "delivery": delivery,
                                    "delivery_error": clip(scrub(error or ""), 2000) or "", **fields},
                                   mode=UpdateMode.MERGE)

    async def undelivered_before(self, event: dict[str, Any], since: datetime) -> list[dict[str, Any]]:
        """Events of the same monitor older than `event` (and newer than `since`) whose delivery is still open
        (queued or pending), oldest first."""
        at = _parse_dt(event["occurred_at"])
        rows = await self.walk("events", keys.months_back(at, since),
                               "RowKey gt @key and RowKey lt @floor and monitor_id eq @mid and "
                               "(delivery eq 'queued' or delivery eq 'pending')",
                               {"key": keys.event_row(at, event["id"]), "floor": keys.inverted(since),
                                "mid": event["monitor_id"]},
                               select=["RowKey", "event_id", "type", "occurred_at", "delivery", "next_try_at",
                                       "Timestamp"])
        return sorted(rows, key=lambda r: r["RowKey"], reverse=True)

    async def newer_with_key(self, event: dict[str, Any], key: str) -> bool:
        """Whether a newer event of the same monitor carries the same `replaces` key (this one is moot)."""
        at = _parse_dt(event["occurred_at"])
        now = datetime.now(UTC)
        rows = await self.walk("events", keys.months_back(now, at),
                               "RowKey lt @key and monitor_id eq @mid and replaces eq @rk",
                               {"key": keys.event_row(at, event["id"]), "mid": event["monitor_id"], "rk": key},
                               limit=1, select=["RowKey"])
        return bool(rows)

    async def list_events(self, limit: int = 50, before: datetime | None = None, monitor_id: str | None = None,
                          type_: str | None = None, months: int = 4) -> list[dict[str, Any]]:
        top = before or datetime.now(UTC) + timedelta(seconds=1)
        flt = "RowKey gt @lo"
        params: dict[str, Any] = {"lo": keys.inverted(top)}
        if monitor_id:
            flt += " and monitor_id eq @mid"
            params["mid"] = monitor_id
        if type_:
            flt += " and type eq @type"
            params["type"] = type_
        return await self.walk("events", keys.months_back(top, top - timedelta(days=31 * months)), flt, params,
                               limit=limit)

    async def list_events_between(self, since: datetime, until: datetime, limit: int = 5000,
                                  select: list[str] | None = None) -> list[dict[str, Any]]:
        """Events with since < occurred_at <= until, newest first (RowKey ranges of the month partitions)."""
        return await self.walk("events", keys.months_back(until, since), "RowKey ge @lo and RowKey lt @hi",
                               {"lo": keys.inverted(until), "hi": keys.inverted(since)}, limit=limit, select=select)

    # -- the events queue -------------------------------------------------------------------------------

    async def send_event_message(self, message: dict[str, Any], delay_seconds: int | None = None) -> None:
        queue = self.queue(EVENTS_QUEUE)
        try:
            await queue.send_message(compact_json(message), visibility_timeout=delay_seconds)
        except ResourceNotFoundError:
            await self.ensure_queues()
            await queue.send_message(compact_json(message), visibility_timeout=delay_seconds)

    async def send_check_batch(self, queue_name: str, text: str) -> None:
        """One message of a fanned-out tick (shared/engine/fanout.py) on the checks queue, created if missing."""
        queue = self.queue(queue_name)
        try:
            await queue.send_message(text)
        except ResourceNotFoundError:
            for name in (queue_name, f"{queue_name}-poison"):
                with contextlib.suppress(ResourceExistsError):
                    await self._queues.create_queue(name)
            await queue.send_message(text)

    async def ensure_queues(self) -> None:
        for name in (EVENTS_QUEUE, POISON_QUEUE):
            with contextlib.suppress(ResourceExistsError):
                await self._queues.create_queue(name)

    # -- deliveries (idempotency records) ---------------------------------------------------------------

    async def claim_delivery(self, event_id: str, key: str, lease_seconds: int) -> Claim:
        """Claim the right to deliver event `event_id` to `key` (like Powertools' idempotency records)."""
        client = await self.table("deliveries")
        now = datetime.now(UTC)
        row = {"PartitionKey": event_id, "RowKey": keys.delivery_row(key), "status": "in_progress",
               "expires_at": now + timedelta(seconds=lease_seconds), "attempts": 1}
        try:
            await client.create_entity(row)
            return Claim.CLAIMED
        except ResourceExistsError:
            pass
        current = await client.get_entity(event_id, keys.delivery_row(key))
        if current.get("status") in ("sent", "failed"):
            return Claim.DONE
        if current.get("status") == "in_progress" and current.get("expires_at") and current["expires_at"] > now:
            return Claim.BUSY
        row["attempts"] = int(current.get("attempts", 0)) + 1
        try:
            await client.update_entity(row, mode=UpdateMode.REPLACE, etag=etag_of(current),
                                       match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, HttpResponseError):
            return Claim.BUSY
        return Claim.CLAIMED

    async def finish_delivery(self, event_id: str, key: str, status: str, error: str | None = None) -> None:
        """status: "sent", "failed" (permanent: never retried) or "released" (transient: may be retried)."""
        client = await self.table("deliveries")
        if status == "released":
            with contextlib.suppress(ResourceNotFoundError):
                await client.delete_entity(event_id, keys.delivery_row(key))
            return
        await client.upsert_entity({"PartitionKey": event_id, "RowKey": keys.delivery_row(key), "status": status,
                                    "error": clip(error, 2000) or "", "finished_at": datetime.now(UTC)},
                                   mode=UpdateMode.MERGE)

    async def list_deliveries(self, event_id: str) -> list[dict[str, Any]]:
        return await self.query("deliveries", "PartitionKey eq @pk", {"pk": event_id})

    async def delivery_statuses(self, event_id: str, keys_: list[str]) -> dict[str, dict[str, Any]]:
        """The delivery records of these keys: {key: row} (status, error); keys without a record are left out."""
        rows = {row["RowKey"]: row for row in await self.list_deliveries(event_id)}
        return {key: rows[keys.delivery_row(key)] for key in keys_ if keys.delivery_row(key) in rows}


def event_details(row: dict[str, Any]) -> dict[str, Any]:
    """A stored event row's details back to a dict."""
    return json.loads(row.get("details") or "{}")
