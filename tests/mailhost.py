"""The Functions host's queue listener, for tests: `Host` receives a message from Azurite, invokes the real
queue-triggered function with an azure.functions.QueueMessage (as the Python worker builds it), deletes the message
on success, makes it visible again on failure, and moves it to `<queue>-poison` once it failed maxDequeueCount
times (host.json's)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessageInConverter
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from shared.triggers.mail import bp

ROOT = Path(__file__).resolve().parent.parent
MAX_DEQUEUE = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]["maxDequeueCount"]


def registered_functions() -> dict[str, Any]:
    """The blueprint's functions as the worker indexes them (FunctionApp.register_functions → get_functions)."""
    app = func.FunctionApp()
    app.register_functions(bp)
    return {fn.get_function_name(): fn for fn in app.get_functions()}


def user_function(name: str) -> Callable[[func.QueueMessage], Awaitable[None]]:
    return registered_functions()[name].get_user_function()


@dataclass
class Run:
    outcome: str  # "ok", "failed" (made visible again) or "poisoned" (moved to <queue>-poison)
    dequeue_count: int
    error: BaseException | None = None


def as_trigger_input(msg: Any) -> func.QueueMessage:
    """What the Python worker hands the function: the queue binding's converter applied to the host's data
    (the body, base64-decoded by the host, and the trigger metadata)."""
    def stamp(dt: datetime | None) -> Datum | None:
        return Datum(dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"), "string") if dt else None

    metadata = {"Id": Datum(msg.id, "string"), "DequeueCount": Datum(msg.dequeue_count, "int"),
                "PopReceipt": Datum(msg.pop_receipt, "string"), "InsertionTime": stamp(msg.inserted_on),
                "ExpirationTime": stamp(msg.expires_on), "NextVisibleTime": stamp(msg.next_visible_on)}
    qm = QueueMessageInConverter.decode(Datum(msg.content, "string"),
                                        trigger_metadata={k: v for k, v in metadata.items() if v is not None})
    assert isinstance(qm, func.QueueMessage) and qm.dequeue_count == msg.dequeue_count
    return qm


class Host:
    """The Functions host's queue listener, reduced to what matters here (visibility timeout 0 for speed)."""

    def __init__(self, conn: str) -> None:
        self.conn = conn

    def client(self, name: str) -> QueueClient:
        return QueueClient.from_connection_string(self.conn, name, message_encode_policy=TextBase64EncodePolicy(),
                                                  message_decode_policy=TextBase64DecodePolicy())

    async def run_once(self, queue: str, function: str, complete: bool = True) -> Run | None:
        """Receive one message and invoke the function. complete=False: the function succeeds but the host
        dies before deleting the message, so it comes back (at-least-once delivery)."""
        fn = user_function(function)
        async with self.client(queue) as q:
            msg = await q.receive_message(visibility_timeout=30)
            if msg is None:
                return None
            qm = as_trigger_input(msg)
            try:
                await fn(qm)
            except Exception as error:
                if msg.dequeue_count >= MAX_DEQUEUE:
                    async with self.client(f"{queue}-poison") as poison:
                        with contextlib.suppress(ResourceExistsError):
                            await poison.create_queue()
                        await poison.send_message(msg.content)
                    await q.delete_message(msg)
                    return Run("poisoned", msg.dequeue_count, error)
                await q.update_message(msg, visibility_timeout=0)
                return Run("failed", msg.dequeue_count, error)
            if complete:
                await q.delete_message(msg)
            else:
                await q.update_message(msg, visibility_timeout=0)
            return Run("ok", msg.dequeue_count)

    async def drain(self, queue: str, function: str, limit: int = 20) -> list[Run]:
        runs = []
        for _ in range(limit):
            run = await self.run_once(queue, function)
            if run is None:
                return runs
            runs.append(run)
        raise AssertionError(f"{queue} did not drain in {limit} runs: {runs}")

    async def send(self, queue: str, content: str) -> None:
        async with self.client(queue) as q:
            await q.send_message(content)

    async def count(self, queue: str) -> int:
        async with self.client(queue) as q:
            try:
                props = await q.get_queue_properties()
            except Exception:
                return 0
            return props.approximate_message_count
