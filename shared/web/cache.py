"""A small in-process cache for the anonymous pages, with single flight: while one request builds a value, the
others with the same key wait for it instead of building their own (a busy page costs the storage account one
build per expiry, however many visitors arrive at once)."""

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


async def cached(key: Hashable, seconds: float, make: Callable[[], Awaitable[Any]]) -> Any:
    hit = _values.get(key)
    now = time.monotonic()
    if hit and hit[0] > now:
        return hit[1]
    running = _building.get(key)
    if running is not None and running.get_loop() is asyncio.get_running_loop():
        return await asyncio.shield(running)
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
    if seconds > 0:
        if len(_values) > MAX_ENTRIES:
            _values.clear()
        _values[key] = (time.monotonic() + seconds, value)
    return value
