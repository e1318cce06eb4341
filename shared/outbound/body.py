"""The one capped body reader: a reply is read up to a limit, never into memory whole (a 10 GB "page" costs the
same as a 1 MB one)."""

from __future__ import annotations

from typing import Any


async def read_capped(resp: Any, limit: int, chunk: int = 64 * 1024) -> tuple[bytes, bool]:
    """Up to `limit` bytes of an aiohttp response's body, and whether there was more (`content.read(n)` returns
    only what is buffered so far, so the chunks are iterated)."""
    chunks: list[bytes] = []
    size = 0
    async for piece in resp.content.iter_chunked(chunk):
        chunks.append(piece)
        size += len(piece)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def decode(body: bytes, charset: str | None) -> str:
    """The body in its declared charset, or UTF-8 when none or a bogus one is declared (never raises)."""
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except (LookupError, ValueError):  # unknown ("utf8mb4"), or not a text codec ("base64")
        return body.decode("utf-8", errors="replace")
