"""Read-only looks at queues and tables of the app's storage account that a resource monitor names (application
metrics). Unlike `table()`, they never create what they look at: a typo must be an error, not an empty table that
counts 0. The kinds reach these through `CheckContext.app_storage`, never through a Store of their own."""

from __future__ import annotations

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.errors import StorageError
from shared.storage.base import StoreBase


class AppData(StoreBase):
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
        client = self.table_client(table)
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
