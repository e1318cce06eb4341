"""The status page rendered by headless Chromium (through the local host), with the demo data of test_public.

`STATUS_PAGE_SCREENSHOT=docs/status-page.png python -m pytest tests/test_status_page_chromium.py` also writes the
screenshot of the demo data to that path (the README's picture).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from conftest import free_port
from test_public import KEY, ROOT, seed_demo

from monitors import KINDS
from shared.storage import Store


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def png_top(data: bytes, rows: int) -> tuple[int, int, list[tuple[int, ...]]]:
    """Decode the first `rows` rows of an 8-bit RGB/RGBA PNG (zlib, the five scanline filters): width, height and
    the pixels of those rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompressobj().decompress(idat, (width * bpp + 1) * rows)
    stride = width * bpp
    prev = bytearray(stride)
    pixels: list[tuple[int, ...]] = []
    for r in range(min(rows, height)):
        line = raw[r * (stride + 1):(r + 1) * (stride + 1)]
        ftype, cur = line[0], bytearray(line[1:])
        for i in range(stride):
            left = cur[i - bpp] if i >= bpp else 0
            up, corner = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if ftype == 1:
                cur[i] = (cur[i] + left) & 0xFF
            elif ftype == 2:
                cur[i] = (cur[i] + up) & 0xFF
            elif ftype == 3:
                cur[i] = (cur[i] + ((left + up) >> 1)) & 0xFF
            elif ftype == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                cur[i] = (cur[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        pixels += [tuple(cur[i:i + 3]) for i in range(0, stride, bpp)]
        prev = cur
    return width, height, pixels


async def test_status_page_renders_in_headless_chromium(storage, env):
    browser = chromium()
    if browser is None:
        pytest.skip("SKIPPED: Chromium is not installed (apt-get install chromium; .ci/run installs it) — the status "
                    "page was NOT rendered in a browser")
    import function_app
    from devhost import LocalHost, read_host_json
    from shared.settings import get_settings

    async with Store.open(get_settings()) as store:
        await seed_demo(store)
        for kind in KINDS:  # the host's timers must not check the demo's example.com sites meanwhile
            await store.set_kind_meta(kind, paused=True)
    port = free_port()
    host = LocalHost(function_app.app, read_host_json(), port, function_key=KEY)
    await host.start()
    out_dir = Path(tempfile.mkdtemp(prefix="status-page-"))
    shot = out_dir / "status-page.png"
    try:
        proc = await asyncio.create_subprocess_exec(
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
            f"--user-data-dir={out_dir / 'profile'}", f"--screenshot={shot}", "--window-size=1280,1600",
            f"http://127.0.0.1:{port}/api/status-page",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError("Chromium did not finish within 180 s") from None
        assert shot.exists(), f"no screenshot; Chromium said:\n{output.decode(errors='replace')[-3000:]}"
        data = shot.read_bytes()
        assert host.invocations.get("status_page", 0) >= 1  # it was served by the function, through the host
    finally:
        await host.stop()
    target = os.environ.get("STATUS_PAGE_SCREENSHOT")
    if target:
        Path(ROOT / target).write_bytes(data)
    shutil.rmtree(out_dir, ignore_errors=True)

    assert len(data) > 30_000  # a flat 1280×1600 PNG is a few KiB
    width, height, pixels = png_top(data, 360)  # header, banner, incidents
    assert (width, height) == (1280, 1600)
    counts: dict[tuple[int, ...], int] = {}
    for px in pixels:
        counts[px] = counts.get(px, 0) + 1
    assert len(counts) > 50, "the page is (nearly) one flat colour"
    assert max(counts.values()) < 0.9 * len(pixels)
    red = sum(n for (r, g, b), n in counts.items() if r > 200 and g < 60 and b < 60)
    assert red > 5000, "the red 'Some systems are down' banner is not in the picture"


