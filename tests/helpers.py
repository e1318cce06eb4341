"""Small read helpers shared by the scenario tests (they read through public storage and the real queue)."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

import monitors
from monitors.base import MonitorBase
from shared.storage import EVENTS_QUEUE, Store, unique_row


async def events_of(store: Store, monitor_id: str | None = None) -> list[dict[str, Any]]:
    """Stored events (of one monitor, or all), oldest first."""
    rows = await store.list_events(limit=500, monitor_id=monitor_id)
    return sorted(rows, key=lambda e: e["occurred_at"])


async def queued(conn: str) -> list[dict[str, Any]]:
    """The event messages waiting in the queue (peeked, so they stay there)."""
    async with QueueClient.from_connection_string(conn, EVENTS_QUEUE,
                                                  message_decode_policy=TextBase64DecodePolicy()) as queue:
        try:
            messages = await queue.peek_messages(max_messages=32)
        except ResourceNotFoundError:
            return []
    return [json.loads(m.content)["event"] for m in messages]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def stop_process(proc: subprocess.Popen, wait: float = 10) -> None:
    """Terminate a child, kill it if it does not go within `wait` seconds, and close its output pipe."""
    proc.terminate()
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if proc.stdout:
        proc.stdout.close()


async def add_monitor(store: Store, url: str, **fields: Any) -> MonitorBase:
    """Store a website monitor the way the API does (one try of at most 5 s unless `fields` say otherwise)."""
    cfg = monitors.parse_spec({"kind": "website", "id": uuid.uuid4().hex, "name": fields.pop("name", "Shop"),
                               "url": url, "attempts": 1, "timeout_seconds": 5, **fields})
    await store.insert_monitor({"RowKey": cfg.id, "kind": "website", "name": cfg.name, "enabled": cfg.enabled,
                                "spec": monitors.to_entity_spec(cfg)},
                               [unique_row("website", key) for key in cfg.unique_keys()])
    return cfg


def timer_names() -> list[str]:
    """The app's timer functions (to disable them on a local host: AzureWebJobs.<name>.Disabled)."""
    import function_app
    from devhost import discover

    return [fn.name for fn in discover(function_app.app) if fn.trigger["type"] == "timerTrigger"]
