"""A small in-process cache for the anonymous pages, with single flight: while one request builds a value, the
others with the same key wait for it instead of building their own (a busy page costs the storage account one
build per expiry, however many visitors arrive at once). When the request that builds is cancelled, the waiting
ones do not fail with it: one of them builds instead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

_values: dict[Hashable, tuple[float, Any]] = {}
_building: dict[Hashable, asyncio.Future[Any]] = {}
MAX_ENTRIES = 2000


def clear_cache() -> None:
    _values.clear()


async def cached(key: Hashable, seconds: float | Callable[[Any], float], make: Callable[[], Awaitable[Any]]) -> Any:
    """The value of `make()` under `key`, kept `seconds` (or `seconds(value)`: a lifetime that depends on it)."""
    while True:
        hit = _values.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        running = _building.get(key)
        if running is None or running.get_loop() is not asyncio.get_running_loop():
            break
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not running.cancelled() or (task is not None and task.cancelling()):
                raise  # we were cancelled ourselves
            # the request that was building was cancelled (its client went away): the waiters carry on, one of
            # them builds
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    _building[key] = future
    try:
        value = await make()
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as error:
        future.set_exception(error)
        future.exception()  # marked retrieved: the waiters get it too
        raise
    finally:
        if _building.get(key) is future:
            del _building[key]
    future.set_result(value)
    if callable(seconds):
        seconds = seconds(value)
    if seconds > 0:
        if len(_values) > MAX_ENTRIES:
            _values.clear()
        _values[key] = (time.monotonic() + seconds, value)
    return value
