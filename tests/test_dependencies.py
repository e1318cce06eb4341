"""`depends_on` through the engine and the management service: real Azurite, real sites on 127.0.0.1.

What a user notices: while a monitor's parent is down its own alerts are held (stored `held`, not sent), checks
and results go on; when the parent is back, one alert if the child is still down, nothing if it recovered first;
a definition that names an unknown monitor, itself or a cycle is refused with a 422 that names the path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from helpers import add_monitor, events_of, queued
from targets import Target, targets  # noqa: F401 - fixtures

from shared.engine import run_kind
from shared.errors import Invalid
from shared.manage.dependencies import dependents
from shared.manage.monitors import create_monitor, update_monitor
from shared.storage import Store

KIND = "website"


@pytest.fixture
async def store(settings):
    async with Store.open(settings) as opened:
        yield opened


@pytest.fixture
def sites():
    router, shop = Target(), Target()
    yield router, shop
    router.close()
    shop.close()


class Ticks:
    def __init__(self, store, settings) -> None:
        self.store, self.settings = store, settings
        self.at = datetime.now(UTC).replace(second=0, microsecond=0)

    async def __call__(self) -> dict[str, str | None]:
        self.at += timedelta(minutes=1)
        summary = await run_kind(self.store, self.settings, KIND, trigger="manual", now=self.at)
        assert summary.errors == 0
        return {o.name: o.status for o in summary.outcomes}


async def pair(store, sites):
    router_site, shop_site = sites
    router = await add_monitor(store, router_site.url, name="Router", failure_threshold=1, breaker_failures=1)
    shop = await add_monitor(store, shop_site.url, name="Shop", failure_threshold=1, breaker_failures=1,
                             depends_on=[router.id])
    return router, shop


async def test_a_down_parent_holds_the_childs_alert_and_one_down_follows_when_it_is_back(store, storage, settings,
                                                                                         sites):
    router, shop = await pair(store, sites)
    tick = Ticks(store, settings)
    assert await tick() == {"Router": "UP", "Shop": "UP"}
    for site in sites:
        site.set(status=500)
    assert await tick() == {"Router": "DOWN", "Shop": "DOWN"}  # both in the same tick: the router counts already
    assert [e["monitor_name"] for e in await queued(storage)] == ["Router"]
    (child,) = await events_of(store, shop.id)
    assert (child["type"], child["delivery"], child["held"]) == ("MONITOR_DOWN", "held",
                                                                 "depends on Router which is down")
    state = await store.get_state(KIND, shop.id)
    assert await tick() == {"Router": "DOWN", "Shop": "DOWN"}
    assert (await store.get_state(KIND, shop.id)).etag == state.etag  # held and steady: nothing written
    assert len(await store.query_results(shop.id)) == 3  # checked and stored all along
    assert await dependents(store, router.id) == [{"id": shop.id, "name": "Shop", "kind": KIND, "status": "DOWN"}]

    sites[0].set(status=200)
    assert await tick() == {"Router": "UP", "Shop": "DOWN"}
    told = await queued(storage)
    assert [(e["monitor_name"], e["type"]) for e in told] == [("Router", "MONITOR_DOWN"), ("Router", "MONITOR_UP"),
                                                               ("Shop", "MONITOR_DOWN")]
    assert told[-1]["message"].startswith("Shop is still down (its alerts were held while Router was down).")
    assert await tick() == {"Router": "UP", "Shop": "DOWN"}
    assert len(await queued(storage)) == 3  # one, and only one


async def test_a_child_that_recovers_before_its_parent_tells_nothing(store, storage, settings, sites):
    router, shop = await pair(store, sites)
    tick = Ticks(store, settings)
    await tick()
    for site in sites:
        site.set(status=500)
    await tick()
    sites[1].set(status=200)
    assert await tick() == {"Router": "DOWN", "Shop": "UP"}
    sites[0].set(status=200)
    assert await tick() == {"Router": "UP", "Shop": "UP"}
    assert [e["monitor_name"] for e in await queued(storage)] == ["Router", "Router"]
    assert [(e["type"], e["delivery"]) for e in await events_of(store, shop.id)] == [("MONITOR_DOWN", "held"),
                                                                                     ("MONITOR_UP", "held")]


async def test_a_parent_of_another_run_counts_with_its_stored_state(store, storage, settings, sites):
    """A run-now of the child alone reads the parent's state row (the parent is not checked in it)."""
    from shared.engine import run_monitor

    router, shop = await pair(store, sites)
    tick = Ticks(store, settings)
    await tick()
    sites[0].set(status=500)
    await tick()  # the router is down, the shop is up
    sites[1].set(status=500)
    assert (await run_monitor(store, settings, shop.id)).status == "DOWN"
    assert [e["monitor_name"] for e in await queued(storage)] == ["Router"]
    assert [e["delivery"] for e in await events_of(store, shop.id)] == ["held"]


async def problems(call) -> list[dict]:
    with pytest.raises(Invalid) as refused:
        await call
    assert refused.value.status == 422
    return refused.value.details


async def test_unknown_ids_itself_and_cycles_through_any_depth_are_a_422(store, storage, settings, sites):
    url = sites[0].url
    a = await create_monitor(store, {"kind": KIND, "name": "A", "url": url})
    b = await create_monitor(store, {"kind": KIND, "name": "B", "url": url + "b", "depends_on": [a["id"]]})
    c = await create_monitor(store, {"kind": KIND, "name": "C", "url": url + "c", "depends_on": [b["id"]]})

    unknown = "f" * 32
    (detail,) = await problems(create_monitor(store, {"kind": KIND, "name": "D", "url": url + "d",
                                                      "depends_on": [unknown]}))
    assert detail["field"] == "depends_on.0" and unknown in detail["message"]
    (detail,) = await problems(update_monitor(store, a["id"], {"depends_on": [a["id"]]}))
    assert detail["message"] == "a monitor cannot depend on itself"
    (detail,) = await problems(update_monitor(store, a["id"], {"depends_on": [b["id"]]}))
    assert detail["message"] == f"a cycle: A ({a['id']}) → B ({b['id']}) → A ({a['id']})"
    (detail,) = await problems(update_monitor(store, a["id"], {"depends_on": [c["id"]]}))
    assert detail["field"] == "depends_on.0"
    assert detail["message"] == f"a cycle: A ({a['id']}) → C ({c['id']}) → B ({b['id']}) → A ({a['id']})"
    stored = await store.get_monitor(a["id"])
    assert '"depends_on":[]' in stored["spec"]  # refused: nothing changed

    assert (await update_monitor(store, c["id"], {"depends_on": [a["id"], b["id"]]}))["depends_on"] == [a["id"],
                                                                                                       b["id"]]
    assert [d["name"] for d in await dependents(store, a["id"])] == ["B", "C"]


async def test_a_stored_cycle_does_not_hang_a_run(store, storage, settings, sites):
    """Cycles are refused on write; one made by two concurrent writes must still not stall the engine: the two
    count with each other's stored state."""
    import uuid

    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    await add_monitor(store, sites[0].url, id=first, name="Router", failure_threshold=1, depends_on=[second])
    await add_monitor(store, sites[1].url, id=second, name="Shop", failure_threshold=1, depends_on=[first])
    tick = Ticks(store, settings)
    assert await tick() == {"Router": "UP", "Shop": "UP"}
    for site in sites:
        site.set(status=500)
    assert await tick() == {"Router": "DOWN", "Shop": "DOWN"}
    assert sorted(e["monitor_name"] for e in await queued(storage)) == ["Router", "Shop"]
