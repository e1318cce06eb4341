"""Application metrics read only what the operator listed: a `table_count` monitor may count a table of the app's
storage account only when APP_METRICS_TABLES names it, a `queue_depth` monitor a queue only when APP_METRICS_QUEUES
does, and neither ever reads the app's own tables and queues (monitor definitions hold masked secrets: a
`spec ge '…'` filter binary search recovered an Authorization header). Refused when written (422 naming the field),
and again at check time, so a stored monitor naming a table that is no longer allowed is an ERROR that reads nothing.
Against a real Azurite (tests/conftest.py)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from apphelp import call
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueClient
from pydantic import ValidationError

import monitors
import shared.settings
from shared import manage
from shared.settings import SettingsError, get_settings
from shared.storage import EVENTS_QUEUE, POISON_QUEUE, TABLES, Store
from shared.storage.appdata import AppData

ALICE = "alice@example.org"


@pytest.fixture
async def store(settings):
    async with Store.open(settings) as opened:
        yield opened


@pytest.fixture
def reads(monkeypatch):
    """Every look at the app's storage a check makes: ("table", name) / ("queue", name)."""
    seen: list[tuple[str, str]] = []
    count_entities, queue_depth = AppData.count_entities, AppData.queue_depth

    async def counting(self: AppData, table: str, flt: str | None, limit: int) -> int:
        seen.append(("table", table))
        return await count_entities(self, table, flt, limit)

    async def depth(self: AppData, name: str) -> int:
        seen.append(("queue", name))
        return await queue_depth(self, name)

    monkeypatch.setattr(AppData, "count_entities", counting)
    monkeypatch.setattr(AppData, "queue_depth", depth)
    return seen


def table_source(table: str, **extra: Any) -> dict[str, Any]:
    return {"type": "table_count", "table": table, "warn": 5, "alert": 8, **extra}


def queue_source(queue: str) -> dict[str, Any]:
    return {"type": "queue_depth", "queue": queue, "warn": 3, "alert": 6}


async def create(source: dict[str, Any], name: str = "metric") -> tuple[int, Any]:
    return await call("monitors", "POST", "v1/monitors", {"kind": "resource", "name": name, "recipients": [ALICE],
                                                         "source": source})


def refusal(body: Any) -> dict[str, Any]:
    (detail,) = body["error"]["details"]
    return detail


async def insert_stored(store: Store, source: dict[str, Any], name: str = "stored") -> str:
    """A definition as an older version wrote it: straight into the monitors table, no validation."""
    mid = uuid.uuid4().hex
    spec = {"kind": "resource", "id": mid, "name": name, "enabled": True, "interval_seconds": 300,
            "recipients": [ALICE], "source": source}
    now = datetime.now(UTC)
    await store.insert_monitor({"RowKey": mid, "kind": "resource", "name": name, "enabled": True,
                                "spec": json.dumps(spec), "created_at": now, "updated_at": now})
    return mid


async def run(store: Store, mid: str) -> dict[str, Any]:
    return await manage.run_monitor(store, get_settings(), mid)


# ---------------------------------------------------------------------------------------------- tables


@pytest.mark.parametrize("table", ["monitors", "Monitors", "state", "events", "alertrules"])
async def test_an_own_table_is_refused_even_when_listed(env, settings, table):
    env(APP_METRICS_TABLES=f"{table},orders")
    status, body = await create(table_source(table, filter="spec ge 'a'"))
    assert status == 422, body
    detail = refusal(body)
    assert detail["field"] == "source.table_count.table"
    assert f"table {table!r} is one of the app's own" in detail["message"]
    assert "never" in detail["message"]
    assert (await call("monitors", "GET", "v1/monitors"))[1] == {"items": []}


async def test_a_table_not_listed_is_refused_naming_the_setting(env, settings):
    status, body = await create(table_source("orders"))
    assert status == 422, body
    detail = refusal(body)
    assert detail["field"] == "source.table_count.table"
    assert detail["message"] == "table 'orders' is not listed in APP_METRICS_TABLES: add it to that setting " \
                                "(comma-separated names) to let resource monitors read it"
    env(APP_METRICS_TABLES="invoices, customers")
    status, body = await create(table_source("orders"))
    assert status == 422 and "APP_METRICS_TABLES" in refusal(body)["message"]


async def test_a_listed_table_is_counted(env, settings, storage, store, reads):
    env(APP_METRICS_TABLES="invoices, Orders")  # table names are case-insensitive, as in Azure Storage
    async with TableServiceClient.from_connection_string(storage) as tables:
        orders = await tables.create_table("orders")
        for i in range(6):
            await orders.create_entity({"PartitionKey": "o", "RowKey": f"{i:03}", "paid": i < 2})
    status, body = await create(table_source("orders"), name="orders")
    assert status == 201, body
    result = await run(store, body["id"])
    assert (result["status"], result["value"]) == ("WARNING", 6)
    status, body = await create(table_source("orders", filter="paid eq false"), name="unpaid")
    assert status == 201, body
    assert (await run(store, body["id"]))["value"] == 4
    assert reads == [("table", "orders"), ("table", "orders")]


async def test_a_stored_monitor_on_an_own_table_loads_and_its_check_reads_nothing(env, settings, store, reads):
    env(APP_METRICS_TABLES="monitors")  # listing it changes nothing
    mid = await insert_stored(store, table_source("monitors", filter="spec ge 'a'"))
    status, view = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert status == 200 and view["source"]["table"] == "monitors"  # the definition still loads
    result = await run(store, mid)
    assert result["status"] == "ERROR"
    assert result["error"].startswith("table 'monitors' is one of the app's own tables")
    assert "value" not in result
    assert reads == []  # refused before any query reached the table


async def test_a_stored_monitor_on_a_table_no_longer_listed_is_an_error(env, settings, storage, store, reads):
    env(APP_METRICS_TABLES="orders")
    async with TableServiceClient.from_connection_string(storage) as tables:
        await tables.create_table("orders")
    status, body = await create(table_source("orders"))
    assert status == 201, body
    assert (await run(store, body["id"]))["status"] == "OK"
    env(APP_METRICS_TABLES="")
    result = await run(store, body["id"])
    assert result["status"] == "ERROR"
    assert result["error"] == "table 'orders' is not listed in APP_METRICS_TABLES: add it to that setting " \
                              "(comma-separated names) to let resource monitors read it"
    assert reads == [("table", "orders")]  # only the check from when it was allowed
    status, body = await call("monitor", "PATCH", f"v1/monitors/{body['id']}", {"name": "renamed"},
                              route={"monitor_id": body["id"]})
    assert status == 422 and refusal(body)["field"] == "source.table_count.table"  # writing it again is refused


# ---------------------------------------------------------------------------------------------- queues


@pytest.mark.parametrize("queue", [EVENTS_QUEUE, POISON_QUEUE, f"{POISON_QUEUE}-poison"])
async def test_an_own_queue_is_refused_even_when_listed(env, settings, queue):
    env(APP_METRICS_QUEUES=f"backlog,{queue}")
    status, body = await create(queue_source(queue))
    assert status == 422, body
    detail = refusal(body)
    assert detail["field"] == "source.queue_depth.queue"
    assert f"queue {queue!r} is one of the app's own" in detail["message"] and "never" in detail["message"]


async def test_a_queue_not_listed_is_refused_naming_the_setting(env, settings):
    env(APP_METRICS_TABLES="backlog")  # the other setting does not count
    status, body = await create(queue_source("backlog"))
    assert status == 422, body
    detail = refusal(body)
    assert detail["field"] == "source.queue_depth.queue"
    assert detail["message"] == "queue 'backlog' is not listed in APP_METRICS_QUEUES: add it to that setting " \
                                "(comma-separated names) to let resource monitors read it"


async def test_a_listed_queue_is_read(env, settings, storage, store, reads):
    env(APP_METRICS_QUEUES="backlog")
    async with QueueClient.from_connection_string(storage, "backlog") as queue:
        await queue.create_queue()
        for _ in range(4):
            await queue.send_message("job")
    status, body = await create(queue_source("backlog"))
    assert status == 201, body
    result = await run(store, body["id"])
    assert (result["status"], result["value"]) == ("WARNING", 4)
    assert reads == [("queue", "backlog")]


async def test_a_stored_monitor_on_the_events_queue_loads_and_its_check_reads_nothing(env, settings, store, reads):
    env(APP_METRICS_QUEUES=EVENTS_QUEUE)
    mid = await insert_stored(store, queue_source(EVENTS_QUEUE))
    status, view = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert status == 200 and view["source"]["queue"] == EVENTS_QUEUE
    result = await run(store, mid)
    assert result["status"] == "ERROR"
    assert result["error"].startswith(f"queue '{EVENTS_QUEUE}' is one of the app's own queues")
    assert reads == []


# ----------------------------------------------------------------------------------------- pure models


def test_outside_an_app_only_the_own_names_are_refused(monkeypatch):
    """Without settings (a model parsed by a script or a unit test) the allow-lists are unknown: anything but the
    app's own names parses, and the check refuses what the app's settings do not list."""
    def no_settings() -> Any:
        raise SettingsError("invalid settings")

    monkeypatch.setattr(shared.settings, "get_settings", no_settings)
    base = {"kind": "resource", "name": "x"}
    assert monitors.parse_spec({**base, "source": table_source("orders")}).source.table == "orders"
    assert monitors.parse_spec({**base, "source": queue_source("backlog")}).source.queue == "backlog"
    for source in [table_source(t) for t in TABLES] + [queue_source(EVENTS_QUEUE), queue_source(POISON_QUEUE)]:
        with pytest.raises(ValidationError, match="is one of the app's own"):
            monitors.parse_spec({**base, "source": source})
