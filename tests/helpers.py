"""Small read helpers shared by the scenario tests (they read through public storage and the real queue)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from shared.storage import EVENTS_QUEUE, Store


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
