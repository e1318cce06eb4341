"""Bounded concurrency for fan-out reads (a snapshot or a page reads a few rows per monitor)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def gather_bounded(items: Iterable[T], fn: Callable[[T], Awaitable[R]], limit: int = 16) -> list[R]:
    """fn(item) for every item, at most `limit` at once, results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with semaphore:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))
