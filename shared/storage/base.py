"""The storage session: clients for the account's tables and queues, the request counter, and the three ways the
app reads and writes tables (a query, a walk over time-bounded partitions, batched transactions).

Only this package imports the Azure Storage SDKs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Self

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ServiceRequestError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.errors import StorageError
from shared.storage.limits import MAX_BATCH_BYTES, MAX_BATCH_ENTITIES, entity_size

if TYPE_CHECKING:
    from azure.core.pipeline.transport import AioHttpTransport

    from shared.settings import Settings

# azure-core logs every request at INFO; the Functions worker would ship each line to Application Insights.
logging.getLogger("azure").setLevel(logging.WARNING)

DEFS_ROW = "_defs"  # meta row: a version per definition table (monitors, windows), stamped by every write
Operation = tuple[Any, ...]  # ("create" | "upsert" | "update" | "delete", entity[, options]) for submit_transaction


class Conflict(Exception):
    """An ETag or uniqueness precondition failed."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class _RequestCounter:
    """A raw_request_hook (azure-core CustomHookPolicy): counts every request sent, retries included."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request: Any) -> None:  # noqa: ARG002 - azure-core passes the request
        self.count += 1


class StoreBase:
    """One storage session: open it per invocation (`async with Store.open(settings) as store`)."""

    _ensured: ClassVar[set[tuple[str, str]]] = set()  # (account endpoint, table) created in this process

    def __init__(self, tables: TableServiceClient, queues: QueueServiceClient, counter: _RequestCounter,
                 credential: Any = None) -> None:
        self._tables = tables
        self._queues = queues
        self._counter = counter
        self._credential = credential
        self._clients: dict[str, TableClient] = {}

    # -- lifecycle --------------------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings) -> Self:
        counter = _RequestCounter()
        tables_kwargs: dict[str, Any] = {"raw_request_hook": counter, "transport": _transport()}
        queues_kwargs: dict[str, Any] = {"raw_request_hook": counter, "transport": _transport(),
                                         "message_encode_policy": TextBase64EncodePolicy()}
        if settings.storage_connection is not None:
            conn = expand_dev_storage(settings.storage_connection.get_secret_value())
            return cls(TableServiceClient.from_connection_string(conn, **tables_kwargs),
                       QueueServiceClient.from_connection_string(conn, **queues_kwargs), counter)
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id)
        account = settings.storage_account_name
        table_uri = settings.storage_table_uri or f"https://{account}.table.core.windows.net"
        queue_uri = settings.storage_queue_uri or f"https://{account}.queue.core.windows.net"
        return cls(TableServiceClient(endpoint=table_uri, credential=credential, **tables_kwargs),
                   QueueServiceClient(account_url=queue_uri, credential=credential, **queues_kwargs),
                   counter, credential)

    async def __aenter__(self) -> Self:
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
        if key not in StoreBase._ensured:
            try:
                await self._tables.create_table(name)
            except ResourceExistsError:
                pass
            except HttpResponseError as error:
                raise StorageError(f"cannot create table {name}: {error.message}") from error
            StoreBase._ensured.add(key)
        return client

    def table_client(self, name: str) -> TableClient:
        """A client for a table that is not created on first use (reads of tables that may not exist)."""
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self._tables.get_table_client(name)
        return client

    def queue(self, name: str) -> QueueClient:
        # get_queue_client does not inherit the service client's encode policy: without this the messages go out
        # as plain text, which the host (host.json messageEncoding "base64") cannot decode.
        return self._queues.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())

    @classmethod
    def forget_created_tables(cls) -> None:
        """Tests that delete tables call this so the next use creates them again (and nothing read before is kept)."""
        from shared.storage.blocks import BlocksTable
        from shared.storage.results import ResultsTable
        from shared.storage.state import StateTable

        cls._ensured.clear()
        StoreBase._cached.clear()
        StateTable._known.clear()
        BlocksTable._blocks_since.clear()
        ResultsTable._summaries.clear()

    # -- reading ------------------------------------------------------------------------------------------

    async def query(self, table: str, flt: str, params: dict[str, Any] | None = None,
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

    async def walk(self, table: str, partitions: Iterable[str], flt: str, params: dict[str, Any] | None = None,
                   limit: int | None = None, select: list[str] | None = None) -> list[dict[str, Any]]:
        """The same query over partitions in order (months newest first), until `limit` rows are found.
        `flt` is ANDed with `PartitionKey eq @pk`."""
        out: list[dict[str, Any]] = []
        for pk in partitions:
            remaining = None if limit is None else limit - len(out)
            out += await self.query(table, f"PartitionKey eq @pk and {flt}", {**(params or {}), "pk": pk},
                                    limit=remaining, select=select)
            if limit is not None and len(out) >= limit:
                break
        return out

    # -- definition versions --------------------------------------------------------------------------------
    # A timer tick reads its kind's meta row anyway; the `_defs` row next to it (one query for both) says whether the
    # monitors or maintenance windows changed since the definitions this process keeps, so a steady tick lists
    # neither. Every write of a definition stamps a new version after it; the cache is also dropped here at once,
    # and is re-read every CACHE_SECONDS whatever the versions say.

    _cached: ClassVar[dict[tuple[str, str], tuple[str, float, Any]]] = {}
    CACHE_SECONDS: ClassVar[float] = 600.0

    async def touch_definitions(self, what: str) -> None:
        import uuid

        StoreBase._cached = {k: v for k, v in StoreBase._cached.items() if not k[1].startswith(what)}
        try:
            client = await self.table("meta")
            await client.upsert_entity({"PartitionKey": "kind", "RowKey": DEFS_ROW, what: uuid.uuid4().hex},
                                       mode=UpdateMode.MERGE)
        except Exception:  # the write itself succeeded; other processes notice within CACHE_SECONDS
            logging.getLogger("monitor.storage").exception("could not stamp the %s version", what)

    async def cached(self, key: str, version: str | None, read: Any) -> Any:
        """`read()`'s answer, kept while the definitions' `version` stays the same (None: always read)."""
        import time

        slot = (self._tables.url, key)
        known = StoreBase._cached.get(slot)
        if version is not None and known is not None and known[0] == version \
                and time.monotonic() - known[1] < self.CACHE_SECONDS:
            return known[2]
        value = await read()
        if version is not None:
            StoreBase._cached[slot] = (version, time.monotonic(), value)
        return value

    # -- writing ------------------------------------------------------------------------------------------

    async def batch(self, table: str, ops: list[Operation]) -> None:
        """Submit operations grouped by partition in transactions of at most 100 entities / ~4 MiB."""
        client = await self.table(table)
        by_pk: dict[str, list[tuple[Operation, int]]] = defaultdict(list)
        for op in ops:
            by_pk[op[1]["PartitionKey"]].append((op, entity_size(op[1]) + 512))  # + the part's own headers

        async def submit_group(group: list[tuple[Operation, int]]) -> None:
            chunk: list[Operation] = []
            size = 0
            for op, esize in group:
                if chunk and (len(chunk) >= MAX_BATCH_ENTITIES or size + esize > MAX_BATCH_BYTES):
                    await submit(client, chunk)
                    chunk, size = [], 0
                chunk.append(op)
                size += esize
            if chunk:
                await submit(client, chunk)

        # partitions in parallel (a tick's results span SHARDS partitions), each partition's chunks in order
        await asyncio.gather(*(submit_group(group) for group in by_pk.values()))


async def submit(client: TableClient, ops: list[Operation]) -> None:
    """submit_transaction, sent again (up to 3 tries, short backoff) if the request never reached the server
    (azure-core does not retry POSTs; a keep-alive connection the server already closed, or a reset while it was
    busy, shows up as ServiceRequestError). Safe: an
    ETag-guarded or create operation that did land the first time fails the second with a conflict, which
    callers already handle, and upserts can be repeated."""
    from shared.outbound.retry import STORAGE

    async for attempt in STORAGE.tries(ServiceRequestError, "storage transaction"):
        with attempt:
            await client.submit_transaction(ops)


def written_at(entity: dict[str, Any]) -> Any:
    """When the service last wrote an entity (its Timestamp), or None."""
    return getattr(entity, "metadata", {}).get("timestamp")


def etag_of(entity: dict[str, Any]) -> str:
    """The ETag the SDK read with an entity (its `metadata`), for a later conditional write."""
    metadata: dict[str, Any] = getattr(entity, "metadata", {})
    return str(metadata["etag"])


def is_conflict(error: Exception) -> bool:
    status = getattr(error, "status_code", None)
    code = getattr(error, "error_code", None) or ""
    text = str(error)
    return status in (409, 412) or "EntityAlreadyExists" in text or "UpdateConditionNotSatisfied" in text \
        or code in ("EntityAlreadyExists", "UpdateConditionNotSatisfied") or isinstance(error, ResourceModifiedError)


def _transport() -> AioHttpTransport:
    """An aiohttp transport whose pooled connections are dropped after 3 idle seconds: servers close idle
    keep-alive connections (Azurite after 5 s), and reusing one that is already closed fails a POST with
    "connection reset", which azure-core does not retry. A session is opened per invocation, so this costs
    at most a reconnect after a pause."""
    import aiohttp
    from azure.core.pipeline.transport import AioHttpTransport

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=3),
                                    cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)
    return AioHttpTransport(session=session, session_owner=True)


def expand_dev_storage(conn: str) -> str:
    """The SDKs do not all understand the UseDevelopmentStorage=true shorthand; spell it out for Azurite."""
    if conn.strip().rstrip(";").lower() != "usedevelopmentstorage=true":
        return conn
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
            "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
            "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
            "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;")
