"""A check that changes nothing writes nothing but its (batched) result: the cost model the design rests on."""

from __future__ import annotations

import gc
import uuid

from targets import site, targets  # noqa: F401 - fixtures

from monitors import parse_spec, to_entity_spec
from shared import engine
from shared.storage import Store


async def test_steady_ticks_send_a_handful_of_requests_and_touch_no_state(settings, site, monkeypatch):
    from shared.engine.writer import ResultWriter

    # a tick slower than the writer's flush interval (a loaded machine) sends its blocks in two transactions: the
    # count below is of a tick that fits one
    monkeypatch.setattr(ResultWriter, "FLUSH_SECONDS", 60.0)
    async with Store.open(settings) as store:
        for i in range(60):
            mid = uuid.uuid4().hex
            cfg = parse_spec({"kind": "website", "id": mid, "name": f"m{i}", "url": f"{site.url}p{i}",
                              "attempts": 1, "interval_seconds": 60})
            await store.insert_monitor({"RowKey": mid, "kind": "website", "name": cfg.name, "enabled": True,
                                        "spec": to_entity_spec(cfg)})
        cold = await engine.run_kind(store, settings, "website", trigger="manual")
        assert cold.checked == 60 and all(o.status == "UP" for o in cold.outcomes)
        states = (await store.load_states("website"))[0]
        assert all(row.data.get("since") for row in states.values())  # UP since the first check
        before = {k: row.etag for k, row in states.items()}

        sent = store.request_count
        steady = await engine.run_kind(store, settings, "website", trigger="manual")
        sent = store.request_count - sent
        after = {k: row.etag for k, row in (await store.load_states("website"))[0].items()}
        assert steady.checked == 60 and steady.errors == 0
        assert after == before  # no state row was rewritten
        # meta and versions + the states changed since + one blocks transaction + the tick record: the monitors and
        # windows are not listed again while their versions stay
        assert sent == 4, sent
        assert steady.storage_requests == 3  # the tick record counts what came before it
        assert len(await store.query_results(next(iter(before)), limit=10)) == 2
        assert len(await store.query("results", "PartitionKey ne ''")) == 60  # the first checks only: a change
        assert gc.isenabled()  # the collector is paused only while a run is in progress


async def test_a_run_sees_what_another_process_wrote_since_its_last_read(settings, site):
    """The states a run keeps between ticks are brought up to date by what changed: a state another process wrote
    (here DOWN, written straight to storage) is what the next tick evaluates on, and a new monitor is checked."""
    async with Store.open(settings) as store:
        ids = []
        for i in range(3):
            mid = uuid.uuid4().hex
            cfg = parse_spec({"kind": "website", "id": mid, "name": f"m{i}", "url": f"{site.url}p{i}", "attempts": 1})
            await store.insert_monitor({"RowKey": mid, "kind": "website", "name": cfg.name, "enabled": True,
                                        "spec": to_entity_spec(cfg)})
            ids.append(mid)
        await engine.run_kind(store, settings, "website", trigger="manual")
        await engine.run_kind(store, settings, "website", trigger="manual")
        row = await store.get_state("website", ids[0])
        assert row is not None and row.status == "UP"
        await store.commit_state("website", ids[0], {**row.data, "down_since": "2026-01-01T00:00:00+00:00"},
                                 "DOWN", row.etag, [])
        mid = uuid.uuid4().hex
        cfg = parse_spec({"kind": "website", "id": mid, "name": "new", "url": f"{site.url}new", "attempts": 1})
        await store.insert_monitor({"RowKey": mid, "kind": "website", "name": "new", "enabled": True,
                                    "spec": to_entity_spec(cfg)})
        third = await engine.run_kind(store, settings, "website", trigger="manual")
        assert third.checked == 4
        by_id = {o.monitor_id: o for o in third.outcomes}
        assert not by_id[ids[0]].steady  # evaluated on the DOWN state it did not write itself: a change
        again = await store.get_state("website", ids[0])
        assert again is not None and again.status == "UP"  # … written back (kept UP in memory, it would stay DOWN)
        assert by_id[mid].status == "UP"
