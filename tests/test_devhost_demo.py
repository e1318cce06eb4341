"""The local host's demo set: created on the first run, never duplicated by the next, and on the status page."""

from __future__ import annotations

from apphelp import functions, request

from shared.storage import Store
from shared.web.cache import clear_cache


async def test_demo_monitors_are_seeded_once(settings):
    from devhost.__main__ import DEMO, seed_demo

    await seed_demo(7071)
    await seed_demo(7071)
    async with Store.open(settings) as store:
        names = sorted(m["name"] for m in await store.list_monitors())
    assert names == sorted(spec["name"] for spec in DEMO)
    assert all(name.startswith("[demo] ") for name in names)
    clear_cache()
    page = (await functions()["status_page"](request("GET", "status-page"))).get_body().decode()
    clear_cache()
    assert all(spec["name"].replace("'", "&#39;") in page for spec in DEMO)  # marked public: shown
