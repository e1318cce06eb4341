"""Storage rules Azurite does not enforce, and keys that sort the way the API promises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.settings import Settings
from shared.storage import EntityTooLarge, Store, check_entity, from_inverted, inverted


def test_inverted_keys_sort_newest_first_and_round_trip():
    now = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)
    keys = [inverted(now - timedelta(seconds=s)) for s in (0, 1, 60, 86400 * 400)]
    assert keys == sorted(keys) and len(set(map(len, keys))) == 1
    assert from_inverted(inverted(now)) == now


def test_entity_limits_are_enforced():
    check_entity({"PartitionKey": "p", "RowKey": "r", **{f"p{i}": i for i in range(252)}})
    with pytest.raises(EntityTooLarge, match="253 properties"):
        check_entity({"PartitionKey": "p", "RowKey": "r", **{f"p{i}": i for i in range(253)}})
    check_entity({"PartitionKey": "p", "RowKey": "r", "s": "x" * 32768})  # 64 KiB in UTF-16
    with pytest.raises(EntityTooLarge, match="property 's'"):
        check_entity({"PartitionKey": "p", "RowKey": "r", "s": "x" * 32769})
    with pytest.raises(EntityTooLarge, match="entity is"):
        check_entity({"PartitionKey": "p", "RowKey": "r", **{f"s{i}": "y" * 30000 for i in range(20)}})


async def test_an_oversized_write_is_refused_and_stored_data_survives(settings):
    async with Store.open(settings) as store:
        await store.insert_monitor({"RowKey": "a" * 32, "kind": "website", "name": "ok", "spec": "{}"})
        with pytest.raises(EntityTooLarge):
            await store.insert_monitor({"RowKey": "b" * 32, "kind": "website", "name": "big", "spec": "x" * 40000})
        with pytest.raises(EntityTooLarge):
            await store.write_results([Store.result_entity("a" * 32, datetime.now(UTC),
                                                           {"error": "e" * 40000})])
        assert [m["RowKey"] for m in await store.list_monitors()] == ["a" * 32]
        assert await store.query_results("a" * 32) == []


async def test_identity_based_storage_uses_the_account_endpoints(monkeypatch):
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    settings = Settings(**{"AzureWebJobsStorage__accountName": "acct", "GLOBAL_EMAIL_NOTIFICATIONS_ENABLED": False})
    store = Store.open(settings)
    try:
        assert store._tables.url.startswith("https://acct.table.core.windows.net")
        assert store._queues.url.startswith("https://acct.queue.core.windows.net")
        assert store._tables.credential.__class__.__name__ == "DefaultAzureCredential"
    finally:
        await store.close()
