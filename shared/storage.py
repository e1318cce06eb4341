"""All of the app's Azure Storage access: tables and the events queue. Nothing else imports the Azure SDKs.

Tables (created on first use):

| table      | PartitionKey          | RowKey                              | what                                        |
|------------|-----------------------|-------------------------------------|---------------------------------------------|
| monitors   | "m"                   | monitor id / "~u~{kind}~{sha256}"   | definitions; unique-key guard rows          |
| state      | kind                  | monitor id / "{id}|ob|{event id}"   | evolving state (ETag); transactional outbox |
| results    | "{shard}-{yyyymm}"    | "{monitor id}_{inverted ticks}"     | raw check results, newest first             |
| rollups    | "{shard}-{yyyy}"      | "{monitor id}_{inverted hour ticks}"| hourly count/up/latency aggregates          |
| downtimes  | monitor id            | inverted start ticks                | downtime windows                            |
| events     | "{yyyymm}"            | "{inverted ticks}_{event id}"       | every event with its delivery status        |
| deliveries | event id              | "{channel}:{recipient}"             | idempotency records (at most once per rcpt) |
| meta       | "kind"                | kind                                | pause flag, last tick                       |
| ticks      | "{kind}-{yyyymm}"     | inverted ticks                      | one row per timer run (for /health)         |
| snapshots  | "{yyyymm}"            | inverted ticks (taken at)           | metric columns + explanation JSON           |
| alertrules | "r"                   | rule id                             | alert rule definitions (`spec` JSON)        |
| leases     | "lease"               | lease name ("snapshot")             | single-runner leases with expiry (ETag)     |

Alert rules keep their evaluation state and outbox in `state`, partition "alert_rule" (as a kind would); the
latest snapshot's key is `meta` row "_snapshot".

A result partition holds one shard (crc32(monitor id) % SHARDS) of one month, so one tick's results are written
in 100-entity transactions while "latest results of monitor X" stays one RowKey range query.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import aiohttp
from azure.core import MatchConditions
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.exceptions import (HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError, ServiceRequestError)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient

from shared.settings import Settings

# azure-core logs every request at INFO; the Functions worker would ship each line to Application Insights.
logging.getLogger("azure").setLevel(logging.WARNING)

SHARDS = 4
EVENTS_QUEUE = "monitor-events"
POISON_QUEUE = "monitor-events-poison"
TABLES = ("monitors", "state", "results", "rollups", "downtimes", "events", "deliveries", "meta", "ticks",
          "snapshots", "alertrules", "leases")
SNAPSHOT_META = "_snapshot"  # meta row: the latest stored snapshot's key and time
SNAPSHOT_CHUNK = 16_000  # characters per body_{n} column: even all-astral text stays under 64 KiB of UTF-16

# Entity limits of Azure Table Storage (Azurite does not enforce them, so we do).
MAX_PROPERTIES = 252
MAX_STRING_BYTES = 64 * 1024  # UTF-16
MAX_ENTITY_BYTES = 1024 * 1024
MAX_BATCH_ENTITIES = 100
MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024  # 4 MiB request, with headroom for the multipart envelope

_MAX_TICKS = 3155378975999999999  # DateTime.MaxValue.Ticks
_EPOCH_TICKS = 621355968000000000  # ticks at 1970-01-01


class StorageError(RuntimeError):
    """Our own storage failed; the checker is broken (state ERROR, operator notified)."""


class Conflict(Exception):
    """An ETag or uniqueness precondition failed."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class EntityTooLarge(ValueError):
    """An entity would break Azure Table Storage limits."""


# ----------------------------------------------------------------------------------------------- keys


def ticks(dt: datetime) -> int:
    dt = dt.astimezone(timezone.utc)
    seconds = int(dt.replace(tzinfo=timezone.utc).timestamp())
    return _EPOCH_TICKS + seconds * 10_000_000 + dt.microsecond * 10


def inverted(dt: datetime) -> str:
    """A 19-digit key that sorts newest first."""
    return f"{_MAX_TICKS - ticks(dt):019d}"


def from_inverted(key: str) -> datetime:
    t = _MAX_TICKS - int(key)
    micro = (t - _EPOCH_TICKS) // 10
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micro)


def shard(monitor_id: str) -> int:
    return zlib.crc32(monitor_id.encode()) % SHARDS


def month_key(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y%m")


def months_back(start: datetime, stop: datetime) -> list[str]:
    """Month keys from start's month back to stop's month, inclusive (newest first)."""
    out, y, m = [], start.year, start.month
    while (y, m) >= (stop.year, stop.month):
        out.append(f"{y:04d}{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out


def results_pk(monitor_id: str, at: datetime) -> str:
    return f"{shard(monitor_id)}-{month_key(at)}"


def hour_floor(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def unique_row(kind: str, value: str) -> str:
    return f"~u~{kind}~{hashlib.sha256(value.encode()).hexdigest()}"


def snapshot_column(metric: str) -> str:
    """The snapshots-table column of a snapshot metric (property names are identifiers: no dots)."""
    return "m_" + metric.replace(".", "_")


# ------------------------------------------------------------------------------------------- limits


def _value_size(value: Any) -> int:
    if isinstance(value, str):  # UTF-16: two bytes a character, four outside the BMP (never in ASCII)
        return 2 * len(value) + 4 if value.isascii() else len(value.encode("utf-16-le")) + 4
    if isinstance(value, (bytes, bytearray)):
        return len(value) + 4
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float, datetime)):
        return 8
    return 16


def check_entity(entity: dict[str, Any]) -> dict[str, Any]:
    """Raise EntityTooLarge when the entity breaks a Table Storage limit; returns it unchanged otherwise."""
    entity_size(entity)
    return entity


def entity_size(entity: dict[str, Any]) -> int:
    """The entity's size as Table Storage counts it; raises EntityTooLarge past a limit."""
    props = [k for k in entity if k not in ("PartitionKey", "RowKey")]
    if len(props) > MAX_PROPERTIES:
        raise EntityTooLarge(f"{len(props)} properties; Table Storage allows {MAX_PROPERTIES}")
    size = 4 + 2 * len(str(entity.get("PartitionKey", ""))) + 2 * len(str(entity.get("RowKey", "")))
    for name in props:
        value = entity[name]
        vsize = _value_size(value)
        if isinstance(value, (str, bytes, bytearray)) and vsize - 4 > MAX_STRING_BYTES:
            raise EntityTooLarge(f"property {name!r} is {vsize - 4} bytes; a property may hold {MAX_STRING_BYTES}")
        size += 8 + 2 * len(name) + vsize
    if size > MAX_ENTITY_BYTES:
        raise EntityTooLarge(f"entity is {size} bytes; Table Storage allows {MAX_ENTITY_BYTES}")
    return size


def clip(text: str | None, limit: int = 2000) -> str | None:
    """Clip free text (error messages, body excerpts) so it can never break an entity limit."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


# ----------------------------------------------------------------------------------------- counting


class _RequestCounter:
    """A raw_request_hook (azure-core CustomHookPolicy): counts every request sent, retries included."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request) -> None:  # noqa: ANN001 - azure-core's PipelineRequest
        self.count += 1


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


class Store:
    """One storage session: open it per invocation (`async with Store.open(settings) as store`)."""

    _ensured: set[tuple[str, str]] = set()  # (account endpoint, table) created in this process

    def __init__(self, tables: TableServiceClient, queues: QueueServiceClient, counter: _RequestCounter,
                 credential: Any = None) -> None:
        self._tables = tables
        self._queues = queues
        self._counter = counter
        self._credential = credential
        self._clients: dict[str, TableClient] = {}

    # -- lifecycle --------------------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings) -> "Store":
        counter = _RequestCounter()
        kwargs: dict[str, Any] = {"raw_request_hook": counter}
        tables_kwargs = {**kwargs, "transport": _transport()}
        queues_kwargs = {**kwargs, "transport": _transport()}
        if settings.storage_connection is not None:
            conn = _expand_dev_storage(settings.storage_connection.get_secret_value())
            tables = TableServiceClient.from_connection_string(conn, **tables_kwargs)
            queues = QueueServiceClient.from_connection_string(
                conn, message_encode_policy=TextBase64EncodePolicy(), **queues_kwargs)
            return cls(tables, queues, counter)
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id)
        account = settings.storage_account_name
        table_uri = settings.storage_table_uri or f"https://{account}.table.core.windows.net"
        queue_uri = settings.storage_queue_uri or f"https://{account}.queue.core.windows.net"
        tables = TableServiceClient(endpoint=table_uri, credential=credential, **tables_kwargs)
        queues = QueueServiceClient(account_url=queue_uri, credential=credential,
                                    message_encode_policy=TextBase64EncodePolicy(), **queues_kwargs)
        return cls(tables, queues, counter, credential)

    async def __aenter__(self) -> "Store":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        await self._tables.close()
        await self._queues.close()
        if self._credential is not None:
            await self._credential.close()

    @property
    def request_count(self) -> int:
        """Storage requests this session has sent (for /health and the benchmark)."""
        return self._counter.count

    async def table(self, name: str) -> TableClient:
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self._tables.get_table_client(name)
        key = (self._tables.url, name)
        if key not in Store._ensured:
            try:
                await self._tables.create_table(name)
            except ResourceExistsError:
                pass
            except HttpResponseError as error:
                raise StorageError(f"cannot create table {name}: {error.message}") from error
            Store._ensured.add(key)
        return client

    @classmethod
    def forget_created_tables(cls) -> None:
        """Tests that delete tables call this so the next use creates them again."""
        cls._ensured.clear()

    async def ping(self) -> None:
        """One cheap request that proves storage answers (for /health)."""
        client = await self.table("meta")
        await client.upsert_entity({"PartitionKey": "health", "RowKey": "ping", "at": datetime.now(timezone.utc)})

    async def _query(self, table: str, flt: str, params: dict[str, Any] | None = None,
                     limit: int | None = None, select: list[str] | None = None) -> list[dict[str, Any]]:
        client = await self.table(table)
        out: list[dict[str, Any]] = []
        pager = client.query_entities(flt, parameters=params or {}, select=select,
                                      results_per_page=min(limit, 1000) if limit else 1000)
        async for entity in pager:
            out.append(entity)
            if limit is not None and len(out) >= limit:
                break
        return out

    async def _batch(self, table: str, ops: list[tuple]) -> None:
        """Submit operations grouped by partition in transactions of at most 100 entities / ~4 MiB."""
        client = await self.table(table)
        by_pk: dict[str, list[tuple[tuple, int]]] = defaultdict(list)
        for op in ops:
            by_pk[op[1]["PartitionKey"]].append((op, entity_size(op[1]) + 512))  # + the part's own headers

        async def submit_group(group: list[tuple[tuple, int]]) -> None:
            chunk: list[tuple] = []
            size = 0
            for op, esize in group:
                if chunk and (len(chunk) >= MAX_BATCH_ENTITIES or size + esize > MAX_BATCH_BYTES):
                    await _submit(client, chunk)
                    chunk, size = [], 0
                chunk.append(op)
                size += esize
            if chunk:
                await _submit(client, chunk)

        # partitions in parallel (a tick's results span SHARDS partitions), each partition's chunks in order
        await asyncio.gather(*(submit_group(group) for group in by_pk.values()))

    # -- monitors ---------------------------------------------------------------------------------------

    async def list_monitors(self, kind: str | None = None, engine_fields: bool = False) -> list[dict[str, Any]]:
        """Monitor definitions; `engine_fields` reads only what a run needs (no timestamps to parse)."""
        flt = "PartitionKey eq 'm' and RowKey lt '~'"
        params: dict[str, Any] = {}
        if kind:
            flt += " and kind eq @kind"
            params["kind"] = kind
        select = ["RowKey", "kind", "name", "enabled", "spec"] if engine_fields else None
        return await self._query("monitors", flt, params, select=select)

    async def get_monitor(self, monitor_id: str) -> dict[str, Any] | None:
        client = await self.table("monitors")
        try:
            return await client.get_entity("m", monitor_id)
        except ResourceNotFoundError:
            return None

    async def insert_monitor(self, entity: dict[str, Any], unique: Iterable[str] = ()) -> None:
        entity = check_entity({**entity, "PartitionKey": "m"})
        ops: list[tuple] = [("create", entity)]
        ops += [("create", {"PartitionKey": "m", "RowKey": row, "monitor_id": entity["RowKey"]}) for row in unique]
        client = await self.table("monitors")
        try:
            await client.submit_transaction(ops)
        except HttpResponseError as error:
            if _is_conflict(error):
                taken = await self._taken_unique(list(unique), except_id=None)
                raise Conflict("already exists", key=taken) from None
            raise

    async def update_monitor(self, entity: dict[str, Any], etag: str, drop_unique: Iterable[str] = (),
                             add_unique: Iterable[str] = ()) -> None:
        entity = check_entity({**entity, "PartitionKey": "m"})
        ops: list[tuple] = [("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                                                "match_condition": MatchConditions.IfNotModified})]
        ops += [("delete", {"PartitionKey": "m", "RowKey": row}) for row in drop_unique]
        ops += [("create", {"PartitionKey": "m", "RowKey": row, "monitor_id": entity["RowKey"]})
                for row in add_unique]
        client = await self.table("monitors")
        try:
            await client.submit_transaction(ops)
        except HttpResponseError as error:
            if _is_conflict(error):
                taken = await self._taken_unique(list(add_unique), except_id=entity["RowKey"])
                raise Conflict("already exists" if taken else "modified concurrently", key=taken) from None
            raise

    async def delete_monitor(self, monitor_id: str, kind: str, unique: Iterable[str] = ()) -> None:
        client = await self.table("monitors")
        ops = [("delete", {"PartitionKey": "m", "RowKey": row}) for row in [monitor_id, *unique]]
        await client.submit_transaction(ops)
        state = await self.table("state")
        rows = await self._query("state", "PartitionKey eq @k and RowKey ge @lo and RowKey lt @hi",
                                 {"k": kind, "lo": monitor_id, "hi": monitor_id + "}"}, select=["RowKey"])
        for row in rows:
            try:
                await state.delete_entity(kind, row["RowKey"])
            except ResourceNotFoundError:
                pass

    async def _taken_unique(self, rows: list[str], except_id: str | None) -> str | None:
        client = await self.table("monitors")
        for row in rows:
            try:
                hit = await client.get_entity("m", row)
            except ResourceNotFoundError:
                continue
            if hit.get("monitor_id") != except_id:
                return row
        return None

    # -- state + outbox ---------------------------------------------------------------------------------

    async def load_states(self, kind: str) -> tuple[dict[str, StateRow], list[OutboxRow]]:
        """Every state row of a kind and every outbox row not yet published, in one partition query."""
        states: dict[str, StateRow] = {}
        outbox: list[OutboxRow] = []
        for entity in await self._query("state", "PartitionKey eq @k", {"k": kind}):
            rk = entity["RowKey"]
            if "|ob|" in rk:
                outbox.append(OutboxRow(kind, rk, json.loads(entity["payload"]),
                                        entity.metadata.get("timestamp")))
            else:
                states[rk] = StateRow(rk, json.loads(entity.get("data") or "{}"), entity.get("status", ""),
                                      entity.metadata["etag"])
        return states, outbox

    async def get_state(self, kind: str, monitor_id: str) -> StateRow | None:
        client = await self.table("state")
        try:
            entity = await client.get_entity(kind, monitor_id)
        except ResourceNotFoundError:
            return None
        return StateRow(monitor_id, json.loads(entity.get("data") or "{}"), entity.get("status", ""),
                        entity.metadata["etag"])

    async def commit_state(self, kind: str, monitor_id: str, data: dict[str, Any], status: str,
                           etag: str | None, outbox: list[dict[str, Any]]) -> list[OutboxRow]:
        """Write the new state and its outbox rows in one transaction, guarded by the state's ETag.

        Raises Conflict when another run changed the state first (the caller re-reads and re-evaluates).
        """
        entity = check_entity({"PartitionKey": kind, "RowKey": monitor_id, "data": _json(data), "status": status,
                               "updated_at": datetime.now(timezone.utc)})
        if etag is None:
            ops: list[tuple] = [("create", entity)]
        else:
            ops = [("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                                       "match_condition": MatchConditions.IfNotModified})]
        rows = []
        for payload in outbox:
            rk = f"{monitor_id}|ob|{payload['id']}"
            ops.append(("create", check_entity({"PartitionKey": kind, "RowKey": rk, "payload": _json(payload)})))
            rows.append(OutboxRow(kind, rk, payload))
        client = await self.table("state")
        try:
            if len(ops) == 1:  # no outbox rows: a plain ETag-guarded write costs a third of a transaction
                if etag is None:
                    await client.create_entity(entity)
                else:
                    await client.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                               match_condition=MatchConditions.IfNotModified)
            else:
                await _submit(client, ops)
        except (ResourceModifiedError, ResourceExistsError, HttpResponseError) as error:
            if _is_conflict(error):
                raise Conflict(f"state of {monitor_id} changed concurrently") from None
            raise
        return rows

    async def delete_outbox(self, row: OutboxRow) -> None:
        client = await self.table("state")
        try:
            await client.delete_entity(row.kind, row.row_key)
        except ResourceNotFoundError:
            pass

    # -- state: confirmations from the mail path -----------------------------------------------------------
    # The engine owns the state rows. The one other writer is the mail path: once SMTP accepted a report for at
    # least one recipient it records the report's hash (parts lists: `last_hash`), so the next evaluate knows
    # what people were last told. Same ETag discipline: a concurrent engine write makes it re-read and retry,
    # and the engine, losing to this write, re-evaluates on top of it.

    async def confirm_last_hash(self, kind: str, monitor_id: str, value: str, attempts: int = 8) -> bool:
        """Set the `last_hash` of a monitor's state to `value`. Returns False when the monitor has no state row
        (deleted meanwhile); raises Conflict when the row kept changing for `attempts` tries."""
        for _ in range(attempts):
            row = await self.get_state(kind, monitor_id)
            if row is None:
                return False
            if row.data.get("last_hash") == value:
                return True
            try:
                await self.commit_state(kind, monitor_id, {**row.data, "last_hash": value}, row.status, row.etag, [])
                return True
            except Conflict:
                continue
        raise Conflict(f"state of {monitor_id} kept changing; last_hash not confirmed")

    # -- results ----------------------------------------------------------------------------------------

    async def write_results(self, rows: list[dict[str, Any]]) -> None:
        """Upsert results (keyed by monitor and slot time, so a duplicate run overwrites, never adds)."""
        await self._batch("results", [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows])

    @staticmethod
    def result_entity(monitor_id: str, at: datetime, fields: dict[str, Any]) -> dict[str, Any]:
        return {"PartitionKey": results_pk(monitor_id, at), "RowKey": f"{monitor_id}_{inverted(at)}",
                "monitor_id": monitor_id, "ts": at, **fields}

    async def query_results(self, monitor_id: str, limit: int = 50, before: datetime | None = None,
                            since: datetime | None = None) -> list[dict[str, Any]]:
        """Newest first; `before` is exclusive, `since` inclusive. Walks month partitions backwards."""
        now = datetime.now(timezone.utc)
        top = before or now + timedelta(days=1)
        floor = since or now - timedelta(days=3650)
        floor = max(floor, top - timedelta(days=400))
        lo = f"{monitor_id}_{inverted(top)}" if before else f"{monitor_id}_"
        hi = f"{monitor_id}_{inverted(floor)}~" if since else f"{monitor_id}`"
        out: list[dict[str, Any]] = []
        for month in months_back(top, floor):
            flt = "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi"
            rows = await self._query("results", flt, {"pk": f"{shard(monitor_id)}-{month}", "lo": lo, "hi": hi},
                                     limit=limit - len(out))
            out.extend(rows)
            if len(out) >= limit:
                break
        return out

    # -- rollups ----------------------------------------------------------------------------------------

    async def write_rollups(self, monitor_id: str, hours: dict[datetime, dict[str, Any]]) -> None:
        ops = []
        for hour, agg in hours.items():
            ops.append(("upsert", {"PartitionKey": f"{shard(monitor_id)}-{hour:%Y}",
                                   "RowKey": f"{monitor_id}_{inverted(hour)}", "monitor_id": monitor_id,
                                   "hour": hour, **agg}, {"mode": UpdateMode.REPLACE}))
        await self._batch("rollups", ops)

    async def write_rollup_rows(self, rows: list[dict[str, Any]]) -> None:
        await self._batch("rollups", [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows])

    async def query_rollups(self, monitor_id: str, since: datetime) -> list[dict[str, Any]]:
        now = datetime.now(timezone.utc)
        out: list[dict[str, Any]] = []
        for year in range(now.year, since.year - 1, -1):
            out += await self._query(
                "rollups", "PartitionKey eq @pk and RowKey gt @lo and RowKey le @hi",
                {"pk": f"{shard(monitor_id)}-{year:04d}", "lo": f"{monitor_id}_",
                 "hi": f"{monitor_id}_{inverted(hour_floor(since))}"})
        return out

    # -- downtimes --------------------------------------------------------------------------------------

    async def open_downtime(self, monitor_id: str, started_at: datetime, reason: str | None) -> None:
        """Idempotent: the window's key is its start time, so replaying the outbox cannot add a second one."""
        client = await self.table("downtimes")
        await client.upsert_entity(check_entity({"PartitionKey": monitor_id, "RowKey": inverted(started_at),
                                                 "started_at": started_at, "reason": clip(reason, 1000) or ""}),
                                   mode=UpdateMode.MERGE)

    async def close_downtime(self, monitor_id: str, started_at: datetime, ended_at: datetime) -> None:
        client = await self.table("downtimes")
        await client.upsert_entity({"PartitionKey": monitor_id, "RowKey": inverted(started_at),
                                    "started_at": started_at, "ended_at": ended_at}, mode=UpdateMode.MERGE)

    async def list_downtimes(self, monitor_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._query("downtimes", "PartitionKey eq @pk", {"pk": monitor_id}, limit=limit)

    # -- events -----------------------------------------------------------------------------------------

    async def save_event(self, event: dict[str, Any], delivery: str) -> None:
        at = _parse_dt(event["occurred_at"])
        client = await self.table("events")
        entity = {"PartitionKey": month_key(at), "RowKey": f"{inverted(at)}_{event['id']}",
                  "event_id": event["id"], "type": event["type"], "kind": event["kind"],
                  "monitor_id": event["monitor_id"], "monitor_name": event["monitor_name"],
                  "severity": event["severity"], "occurred_at": at, "message": clip(event.get("message"), 4000),
                  "details": _details_json(event.get("details", {})), "delivery": delivery}
        await client.upsert_entity(check_entity(entity), mode=UpdateMode.MERGE)

    async def mark_event(self, event: dict[str, Any], delivery: str, error: str | None = None) -> None:
        at = _parse_dt(event["occurred_at"])
        client = await self.table("events")
        await client.upsert_entity({"PartitionKey": month_key(at), "RowKey": f"{inverted(at)}_{event['id']}",
                                    "delivery": delivery, "delivery_error": clip(error, 2000) or ""},
                                   mode=UpdateMode.MERGE)

    async def list_events(self, limit: int = 50, before: datetime | None = None, monitor_id: str | None = None,
                          type_: str | None = None, months: int = 4) -> list[dict[str, Any]]:
        now = datetime.now(timezone.utc)
        top = before or now + timedelta(seconds=1)
        out: list[dict[str, Any]] = []
        flt = "PartitionKey eq @pk and RowKey gt @lo"
        params: dict[str, Any] = {"lo": inverted(top)}
        if monitor_id:
            flt += " and monitor_id eq @mid"
            params["mid"] = monitor_id
        if type_:
            flt += " and type eq @type"
            params["type"] = type_
        for month in months_back(top, top - timedelta(days=31 * months)):
            out += await self._query("events", flt, {**params, "pk": month}, limit=limit - len(out))
            if len(out) >= limit:
                break
        return out

    async def send_event_message(self, message: dict[str, Any]) -> None:
        queue = self.queue(EVENTS_QUEUE)
        try:
            await queue.send_message(_json(message))
        except ResourceNotFoundError:
            await self.ensure_queues()
            await queue.send_message(_json(message))

    async def ensure_queues(self) -> None:
        for name in (EVENTS_QUEUE, POISON_QUEUE):
            try:
                await self._queues.create_queue(name)
            except ResourceExistsError:
                pass

    def queue(self, name: str):  # noqa: ANN201 - the SDK's aio QueueClient, for tests and the local host
        # get_queue_client does not inherit the service client's encode policy: without this the messages go out
        # as plain text, which the host (host.json messageEncoding "base64") cannot decode.
        return self._queues.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())

    # -- application metrics (resource monitors) -----------------------------------------------------------
    # Read-only looks at queues and tables of this account that a resource monitor names. Unlike `table()`, they
    # never create what they look at: a typo must be an error, not an empty table that counts 0.

    async def queue_depth(self, name: str) -> int:
        """The approximate number of messages in a queue. LookupError when there is no such queue."""
        try:
            props = await self._queues.get_queue_client(name).get_queue_properties()
        except ResourceNotFoundError:
            raise LookupError(f"queue {name!r} does not exist in the app's storage account") from None
        except HttpResponseError as error:
            raise StorageError(f"cannot read queue {name}: {error.message}") from error
        return int(props.approximate_message_count or 0)

    async def count_entities(self, table: str, flt: str | None, limit: int) -> int:
        """How many entities of a table match an OData filter (all when None), counting up to `limit`; only keys
        are read. LookupError when there is no such table, StorageError for a filter the service rejects."""
        client = self._clients.get(table) or self._clients.setdefault(table, self._tables.get_table_client(table))
        pager = client.query_entities(flt, select=["PartitionKey"], results_per_page=min(limit, 1000)) if flt \
            else client.list_entities(select=["PartitionKey"], results_per_page=min(limit, 1000))
        count = 0
        try:
            async for _ in pager:
                count += 1
                if count >= limit:
                    break
        except ResourceNotFoundError:
            raise LookupError(f"table {table!r} does not exist in the app's storage account") from None
        except HttpResponseError as error:
            raise StorageError(f"cannot count entities of table {table}: {error.message}") from error
        return count

    # -- deliveries (idempotency records) ---------------------------------------------------------------

    async def claim_delivery(self, event_id: str, key: str, lease_seconds: int) -> str:
        """Claim the right to deliver event `event_id` to `key`.

        Returns "claimed" (go ahead), "done" (already delivered or permanently failed: skip) or "busy"
        (another invocation holds an unexpired claim: retry later). Like Powertools' idempotency records.
        """
        client = await self.table("deliveries")
        now = datetime.now(timezone.utc)
        row = {"PartitionKey": event_id, "RowKey": _safe_key(key), "status": "in_progress",
               "expires_at": now + timedelta(seconds=lease_seconds), "attempts": 1}
        try:
            await client.create_entity(row)
            return "claimed"
        except ResourceExistsError:
            pass
        current = await client.get_entity(event_id, _safe_key(key))
        if current.get("status") in ("sent", "failed"):
            return "done"
        if current.get("status") == "in_progress" and current.get("expires_at") and current["expires_at"] > now:
            return "busy"
        row["attempts"] = int(current.get("attempts", 0)) + 1
        try:
            await client.update_entity(row, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                       match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, HttpResponseError):
            return "busy"
        return "claimed"

    async def finish_delivery(self, event_id: str, key: str, status: str, error: str | None = None) -> None:
        """status: "sent", "failed" (permanent: never retried) or "released" (transient: may be retried)."""
        client = await self.table("deliveries")
        if status == "released":
            try:
                await client.delete_entity(event_id, _safe_key(key))
            except ResourceNotFoundError:
                pass
            return
        await client.upsert_entity({"PartitionKey": event_id, "RowKey": _safe_key(key), "status": status,
                                    "error": clip(error, 2000) or "", "finished_at": datetime.now(timezone.utc)},
                                   mode=UpdateMode.MERGE)

    async def list_deliveries(self, event_id: str) -> list[dict[str, Any]]:
        return await self._query("deliveries", "PartitionKey eq @pk", {"pk": event_id})

    # -- meta and ticks ---------------------------------------------------------------------------------

    async def get_kind_meta(self, kind: str) -> dict[str, Any]:
        client = await self.table("meta")
        try:
            return dict(await client.get_entity("kind", kind))
        except ResourceNotFoundError:
            return {}

    async def set_kind_meta(self, kind: str, **fields: Any) -> None:
        client = await self.table("meta")
        await client.upsert_entity({"PartitionKey": "kind", "RowKey": kind, **fields}, mode=UpdateMode.MERGE)

    async def record_tick(self, kind: str, tick: dict[str, Any]) -> None:
        client = await self.table("ticks")
        ran = tick["started_at"]
        await client.upsert_entity(check_entity({"PartitionKey": f"{kind}-{month_key(ran)}",
                                                 "RowKey": inverted(ran), "kind": kind, **tick}))

    async def list_ticks(self, kind: str, since: datetime, limit: int = 2000) -> list[dict[str, Any]]:
        now = datetime.now(timezone.utc)
        out: list[dict[str, Any]] = []
        for month in months_back(now, since):
            out += await self._query("ticks", "PartitionKey eq @pk and RowKey lt @hi",
                                     {"pk": f"{kind}-{month}", "hi": inverted(since)}, limit=limit - len(out))
            if len(out) >= limit:
                break
        return out

    # -- snapshots, alert rules, leases (shared/snapshots.py) -----------------------------------------------
    # Snapshots: one row per stored snapshot, newest first in month partitions. Each metric is its own column
    # (`m_{metric}`), so a time series reads only the columns it needs; the explanation (the whole snapshot as
    # JSON) is split over `body_{n}` columns of at most SNAPSHOT_CHUNK characters.

    async def save_snapshot(self, taken_at: datetime, metrics: dict[str, float | None], body: str,
                            **fields: Any) -> str:
        """Store a snapshot (create: a second one with the same time fails) and point `meta` "_snapshot" at it;
        returns its key (the snapshot id)."""
        key = inverted(taken_at)
        entity: dict[str, Any] = {"PartitionKey": month_key(taken_at), "RowKey": key, "taken_at": taken_at,
                                  **fields, **{snapshot_column(k): float(v) for k, v in metrics.items()
                                               if v is not None}}
        chunks = [body[i:i + SNAPSHOT_CHUNK] for i in range(0, len(body), SNAPSHOT_CHUNK)] or [""]
        entity["body_parts"] = len(chunks)
        entity.update({f"body_{n}": chunk for n, chunk in enumerate(chunks)})
        client = await self.table("snapshots")
        await client.create_entity(check_entity(entity))
        await self.set_kind_meta(SNAPSHOT_META, latest_key=key, latest_at=taken_at)
        return key

    async def get_snapshot(self, key: str) -> dict[str, Any] | None:
        try:
            at = from_inverted(key)
        except ValueError:
            return None
        client = await self.table("snapshots")
        try:
            return dict(await client.get_entity(month_key(at), key))
        except ResourceNotFoundError:
            return None

    async def latest_snapshot_key(self) -> str | None:
        return (await self.get_kind_meta(SNAPSHOT_META)).get("latest_key") or None

    async def list_snapshots(self, limit: int = 20, before: datetime | None = None, since: datetime | None = None,
                             select: list[str] | None = None) -> list[dict[str, Any]]:
        """Newest first; `before` exclusive, `since` inclusive. Starts at the latest snapshot's month (nothing
        stored yet: no request beyond the meta row) and walks month partitions back to `since` (default: 400
        days before the latest)."""
        meta = await self.get_kind_meta(SNAPSHOT_META)
        latest: datetime | None = meta.get("latest_at")
        if latest is None:
            return []
        top = min(before, latest + timedelta(microseconds=1)) if before else latest + timedelta(microseconds=1)
        floor = since or latest - timedelta(days=400)
        if floor >= top:
            return []
        out: list[dict[str, Any]] = []
        for month in months_back(top, floor):
            rows = await self._query("snapshots", "PartitionKey eq @pk and RowKey gt @lo and RowKey le @hi",
                                     {"pk": month, "lo": inverted(top), "hi": inverted(floor)},
                                     limit=limit - len(out), select=select)
            out.extend(rows)
            if len(out) >= limit:
                break
        return out

    # Alert rules: definitions only (their evaluation state is in `state`, partition "alert_rule").

    async def list_alert_rules(self) -> list[dict[str, Any]]:
        return await self._query("alertrules", "PartitionKey eq 'r'")

    async def get_alert_rule(self, rule_id: str) -> dict[str, Any] | None:
        client = await self.table("alertrules")
        try:
            return await client.get_entity("r", rule_id)
        except ResourceNotFoundError:
            return None

    async def insert_alert_rule(self, entity: dict[str, Any]) -> None:
        client = await self.table("alertrules")
        await client.create_entity(check_entity({**entity, "PartitionKey": "r"}))

    async def replace_alert_rule(self, entity: dict[str, Any], etag: str) -> None:
        """Raises Conflict when the rule changed since it was read (`etag`)."""
        client = await self.table("alertrules")
        try:
            await client.update_entity(check_entity({**entity, "PartitionKey": "r"}), mode=UpdateMode.REPLACE,
                                       etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError, HttpResponseError) as error:
            if isinstance(error, ResourceNotFoundError) or _is_conflict(error):
                raise Conflict("the rule changed concurrently") from None
            raise

    async def delete_alert_rule(self, rule_id: str, state_kind: str) -> bool:
        """Delete a rule and its evaluation state (not its unpublished outbox rows: those still go out).
        Returns False when there was no such rule."""
        client = await self.table("alertrules")
        try:
            await client.delete_entity("r", rule_id)
        except ResourceNotFoundError:
            return False
        state = await self.table("state")
        try:
            await state.delete_entity(state_kind, rule_id)
        except ResourceNotFoundError:
            pass
        return True

    # Leases: "only one runs at a time" across instances. Acquire = create the row, or take it over once expired
    # (guarded by its ETag, so of two instances taking over the same expired lease one wins); release = delete it,
    # again only with our ETag, so a holder whose lease expired and was taken over cannot delete the new one.

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> str | None:
        """The lease's ETag when we hold it now; None when someone else holds an unexpired one."""
        client = await self.table("leases")
        now = datetime.now(timezone.utc)
        row = {"PartitionKey": "lease", "RowKey": name, "owner": owner, "acquired_at": now,
               "expires_at": now + timedelta(seconds=seconds)}
        try:
            return (await client.create_entity(row))["etag"]
        except ResourceExistsError:
            pass
        try:
            current = await client.get_entity("lease", name)
        except ResourceNotFoundError:
            return None  # released in between: the caller tries again
        expires = current.get("expires_at")
        if expires is not None and expires > now:
            return None
        try:
            return (await client.update_entity(row, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                               match_condition=MatchConditions.IfNotModified))["etag"]
        except (ResourceModifiedError, ResourceNotFoundError, HttpResponseError) as error:
            if isinstance(error, ResourceNotFoundError) or _is_conflict(error):
                return None
            raise

    async def renew_lease(self, name: str, owner: str, etag: str, seconds: float) -> str | None:
        """Extend a lease we hold; None when it is no longer ours (expired and taken over)."""
        client = await self.table("leases")
        now = datetime.now(timezone.utc)
        try:
            return (await client.update_entity(
                {"PartitionKey": "lease", "RowKey": name, "owner": owner, "renewed_at": now,
                 "expires_at": now + timedelta(seconds=seconds)}, mode=UpdateMode.MERGE, etag=etag,
                match_condition=MatchConditions.IfNotModified))["etag"]
        except (ResourceModifiedError, ResourceNotFoundError, HttpResponseError) as error:
            if isinstance(error, ResourceNotFoundError) or _is_conflict(error):
                return None
            raise

    async def release_lease(self, name: str, etag: str) -> None:
        client = await self.table("leases")
        try:
            await client.delete_entity("lease", name, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass
        except HttpResponseError as error:
            if not _is_conflict(error):
                raise

    async def get_lease(self, name: str) -> dict[str, Any] | None:
        client = await self.table("leases")
        try:
            return dict(await client.get_entity("lease", name))
        except ResourceNotFoundError:
            return None

    # Reads the snapshot needs from the engine's tables.

    async def list_events_between(self, since: datetime, until: datetime, limit: int = 5000,
                                  select: list[str] | None = None) -> list[dict[str, Any]]:
        """Events with since < occurred_at <= until, newest first (RowKey ranges of the month partitions)."""
        out: list[dict[str, Any]] = []
        for month in months_back(until, since):
            out += await self._query("events", "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                                     {"pk": month, "lo": inverted(until), "hi": inverted(since)},
                                     limit=limit - len(out), select=select)
            if len(out) >= limit:
                break
        return out

    async def newest_tick(self, kind: str, checked_only: bool = True, months: int = 2) -> dict[str, Any] | None:
        """The newest timer/manual run record of a kind (that checked at least one monitor), from the current and
        previous month; None when there is none."""
        now = datetime.now(timezone.utc)
        flt = "PartitionKey eq @pk" + (" and checked gt 0" if checked_only else "")
        for month in months_back(now, now - timedelta(days=31 * (months - 1))):
            rows = await self._query("ticks", flt, {"pk": f"{kind}-{month}"}, limit=1)
            if rows:
                return rows[0]
        return None

    # -- retention --------------------------------------------------------------------------------------

    async def purge(self, table: str, partitions: list[str], older_than: datetime, time_field: str) -> int:
        """Delete rows of the given partitions whose time_field is older than the cutoff; returns the count."""
        deleted = 0
        for pk in partitions:
            rows = await self._query(table, f"PartitionKey eq @pk and {time_field} lt @cut",
                                     {"pk": pk, "cut": older_than}, select=["PartitionKey", "RowKey"])
            if rows:
                await self._batch(table, [("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]})
                                          for r in rows])
                deleted += len(rows)
        return deleted


# ------------------------------------------------------------------------------------------- helpers


async def _submit(client: TableClient, ops: list[tuple]) -> None:
    """submit_transaction, sent once more if the request never reached the server (azure-core does not retry
    POSTs; a keep-alive connection the server already closed shows up as ServiceRequestError). Safe: an
    ETag-guarded or create operation that did land the first time fails the second with a conflict, which
    callers already handle, and upserts can be repeated."""
    try:
        await client.submit_transaction(ops)
    except ServiceRequestError:
        await client.submit_transaction(ops)


def _details_json(details: dict[str, Any], limit: int = 30000) -> str:
    """Event details as JSON that always parses back: oversized details keep a clipped text, marked."""
    text = _json(details)
    if len(text) <= limit:
        return text
    return _json({"truncated": True, "text": text[: limit - 100]})


def _transport() -> AioHttpTransport:
    """An aiohttp transport whose pooled connections are dropped after 3 idle seconds: servers close idle
    keep-alive connections (Azurite after 5 s), and reusing one that is already closed fails a POST with
    "connection reset", which azure-core does not retry. A session is opened per invocation, so this costs
    at most a reconnect after a pause."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=3),
                                    cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)
    return AioHttpTransport(session=session, session_owner=True)


def _is_conflict(error: Exception) -> bool:
    status = getattr(error, "status_code", None)
    code = getattr(error, "error_code", None) or ""
    text = str(error)
    return status in (409, 412) or "EntityAlreadyExists" in text or "UpdateConditionNotSatisfied" in text \
        or code in ("EntityAlreadyExists", "UpdateConditionNotSatisfied") or isinstance(error, ResourceModifiedError)


def _safe_key(key: str) -> str:
    """RowKeys may not hold / \\ # ? or control characters."""
    if any(c in key for c in "/\\#?") or any(ord(c) < 32 for c in key):
        return "b64:" + base64.urlsafe_b64encode(key.encode()).decode()
    return key


def _parse_dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _expand_dev_storage(conn: str) -> str:
    """The SDKs do not all understand the UseDevelopmentStorage=true shorthand; spell it out for Azurite."""
    if conn.strip().rstrip(";").lower() != "usedevelopmentstorage=true":
        return conn
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
            "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
            "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
            "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;")


