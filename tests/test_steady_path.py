"""A check that changes nothing writes nothing but its (batched) result: the cost model the design rests on."""

from __future__ import annotations

import gc
import uuid

from targets import site, targets  # noqa: F401 - fixtures

from monitors import parse_spec, to_entity_spec
from shared import engine
from shared.storage import SHARDS, Store


async def test_steady_ticks_send_a_handful_of_requests_and_touch_no_state(settings, site):
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

        steady = await engine.run_kind(store, settings, "website", trigger="manual")
        after = {k: row.etag for k, row in (await store.load_states("website"))[0].items()}
        assert steady.checked == 60 and steady.errors == 0
        assert after == before  # no state row was rewritten
        # meta + monitors + states + one results transaction per shard + the tick record
        assert steady.storage_requests <= 3 + SHARDS + 1, steady.storage_requests
        assert len(await store.query_results(next(iter(before)), limit=10)) == 2
        assert gc.isenabled()  # the collector is paused only while a run is in progress
