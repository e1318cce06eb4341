"""Fan-out: above FANOUT_THRESHOLD a timer tick hands its due monitors to the checks queue in batches, and the
queue worker (the real `check_batch` function, given real queue messages) checks and settles them as the tick
would have — one result per monitor and slot, one DOWN per failing monitor, however often a message is delivered."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from apphelp import functions
from azure.core.exceptions import ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient
from helpers import add_monitor, events_of
from targets import targets  # noqa: F401 - fixture

from monitors import parse_spec
from shared import engine
from shared.engine import fanout
from shared.storage import Store

QUEUE = "monitor-checks"


async def _messages(conn: str) -> list[str]:
    """Every message on the checks queue, taken off it (as a worker would)."""
    out: list[str] = []
    async with QueueClient.from_connection_string(conn, QUEUE, message_decode_policy=TextBase64DecodePolicy()) as q:
        if not await _exists(q):  # never created: nothing was sent
            return out
        while batch := [m async for m in q.receive_messages(max_messages=32, visibility_timeout=60)]:
            for m in batch:
                out.append(m.content)
                await q.delete_message(m)
    return out


async def _exists(q: QueueClient) -> bool:
    try:
        await q.get_queue_properties()
    except ResourceNotFoundError:
        return False
    return True


async def _deliver(text: str) -> None:
    worker = functions()["check_batch"]
    await worker(QueueMessage(id="m", body=text.encode(), dequeue_count=1))


async def test_a_big_tick_is_checked_by_the_queue_worker_once_per_slot(storage, env, targets):
    env(FANOUT_THRESHOLD="5", FANOUT_BATCH_SIZE="4")
    from shared.settings import get_settings

    settings = get_settings()
    good, bad = targets.http(), targets.http(status=500)
    async with Store.open(settings) as store:
        ups = [await add_monitor(store, f"{good.url}p{i}?token=s3cret-{i}", name=f"up{i}", interval_seconds=60)
               for i in range(8)]
        downs = [await add_monitor(store, f"{bad.url}d{i}", name=f"down{i}", interval_seconds=60,
                                   failure_threshold=1) for i in range(2)]
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        tick = await engine.run_kind(store, settings, "website", trigger="timer", now=now)
        assert (tick.dispatched, tick.checked, good.hits + bad.hits) == (3, 0, 0)  # 10 due, 4 a batch: 3 messages

        texts = await _messages(storage)
        assert len(texts) == 3
        assert not any("s3cret" in t or "127.0.0.1" in t for t in texts)  # ids and slots, never a definition
        batches = [fanout.decode(t) for t in texts]
        assert sorted(mid for _, _, slots in batches for mid in slots) == sorted(c.id for c in ups + downs)

        for text in texts + texts:  # every message delivered twice (a worker that died before deleting it)
            await _deliver(text)
        assert good.hits + bad.hits == 20  # checked twice …
        for cfg in ups + downs:  # … stored once: one result, at the tick's slot
            rows = await store.query_results(cfg.id or "", limit=10)
            assert [r["ts"] for r in rows] == [now], cfg.name
        down_events = [e for e in await events_of(store) if e["type"] == "MONITOR_DOWN"]
        assert sorted(e["monitor_name"] for e in down_events) == ["down0", "down1"]  # one DOWN each, not two
        states = (await store.load_states("website"))[0]
        assert {states[c.id or ""].status for c in ups} == {"UP"}

        again = await engine.run_kind(store, settings, "website", trigger="timer", now=now + timedelta(seconds=20))
        assert again.dispatched == 0 and again.checked == 0  # the window moved on: nothing is due twice


async def test_a_small_tick_checks_inline_and_manual_runs_never_fan_out(storage, env, targets):
    env(FANOUT_THRESHOLD="5")
    from shared.settings import get_settings

    settings = get_settings()
    site = targets.http()
    async with Store.open(settings) as store:
        for i in range(4):
            await add_monitor(store, f"{site.url}{i}", name=f"m{i}", interval_seconds=60)
        tick = await engine.run_kind(store, settings, "website", trigger="timer")
        assert (tick.dispatched, tick.checked) == (0, 4)
        for i in range(4, 8):
            await add_monitor(store, f"{site.url}{i}", name=f"m{i}", interval_seconds=60)
        manual = await engine.run_kind(store, settings, "website", trigger="manual")
        assert (manual.dispatched, manual.checked) == (0, 8)
        assert await _messages(storage) == []


async def test_a_broken_a_stale_and_a_deleted_monitors_batch_check_nothing_and_fail_nothing(storage, env, targets):
    from shared.settings import get_settings

    settings = get_settings()
    site = targets.http()
    async with Store.open(settings) as store:
        cfg = await add_monitor(store, site.url, interval_seconds=60)
        old = datetime.now(UTC) - fanout.MAX_AGE - timedelta(minutes=1)
        for text in ("not json", json.dumps({"v": 99}), json.dumps({"v": 1, "k": "nope", "t": old.isoformat(),
                                                                      "s": {}}),
                     fanout.encode("website", old, [(cfg, old)]),  # waited too long in the queue
                     fanout.encode("website", datetime.now(UTC), [(parse_spec(
                         {"kind": "website", "id": "f" * 32, "name": "gone", "url": site.url}), datetime.now(UTC))])):
            await _deliver(text)  # dropped or done: nothing raises, so nothing is retried
        assert site.hits == 0
        assert await store.query_results(cfg.id or "", limit=5) == []


def test_a_monitor_and_its_parents_share_a_batch():
    def cfg(name: str, *parents: str) -> object:
        return parse_spec({"kind": "website", "id": name * 32, "name": name, "url": "https://example.test/",
                           "depends_on": [p * 32 for p in parents]})

    now = datetime.now(UTC)
    due = [(cfg("a"), now), (cfg("b"), now), (cfg("c", "a"), now), (cfg("d"), now), (cfg("e", "c"), now),
           (cfg("f"), now)]
    found = [[c.name for c, _ in batch] for batch in fanout.batches(due, 2)]  # type: ignore[attr-defined]
    assert ["a", "c", "e"] in found  # a parent, its child and grandchild: one batch, though larger than 2
    assert sorted(n for batch in found for n in batch) == list("abcdef")
    assert all(len(batch) <= 2 for batch in found if "a" not in batch)
