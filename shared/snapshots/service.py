"""Taking a snapshot: one build at a time, under the `snapshot` lease (Table Storage, with expiry, renewed while
building). A build that finds the lease taken waits up to `wait` seconds; if the holder stores a snapshot
meanwhile, that snapshot is the answer (`coalesced: true`) — so two concurrent "build and store" calls store
exactly one snapshot; if the wait runs out first, Busy (HTTP 409, code snapshot_in_progress). Previews
(persist=false) take the lease too, so a preview never overlaps a stored build's load either. A stored snapshot
is then checked against every enabled alert rule (shared/rules), and old snapshots are purged.

The scheduler holds no logic: the timer and the HTTP endpoints call take_snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.errors import ServiceError
from shared.snapshots.build import SCHEMA_VERSION, build, iso
from shared.snapshots.views import stored
from shared.storage import inverted, months_back

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("monitor.snapshots")

LEASE = "snapshot"
LEASE_SECONDS = 120.0  # renewed every third of it while a build runs
WAIT_SECONDS = 10.0  # default wait of an HTTP build for a running one (?wait=0…30)
TIMER_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.25
BODY_BUDGET = 600_000  # bytes of UTF-16 for the stored explanation; longer member lists are cut (counts stay)


class Busy(ServiceError):
    status = 409
    code = "snapshot_in_progress"


def fit(snapshot: dict[str, Any], budget: int = BODY_BUDGET) -> str:
    """The snapshot as JSON within `budget` bytes of UTF-16: member lists are cut (and say how many were left
    out) at 1000, 200, 50, 10 and finally 0 members, the counts stay exact."""
    text = json.dumps(snapshot, separators=(",", ":"), default=str)
    for cap in (1000, 200, 50, 10, 0):
        if len(text.encode("utf-16-le")) <= budget:
            return text
        trimmed = json.loads(text)
        _cut(trimmed, cap)
        text = json.dumps(trimmed, separators=(",", ":"), default=str)
    return text


def _cut(node: Any, cap: int) -> None:
    if isinstance(node, dict):
        for key in ("monitors", "items"):
            value = node.get(key)
            if isinstance(value, list) and len(value) > cap:
                node[f"{key}_omitted"] = node.get(f"{key}_omitted", 0) + len(value) - cap
                node[key] = value[:cap]
        for value in node.values():
            _cut(value, cap)
    elif isinstance(node, list):
        for value in node:
            _cut(value, cap)


class Held:
    def __init__(self, store: Store, owner: str, etag: str) -> None:
        self.store, self.owner, self.etag, self.lost = store, owner, etag, False

    async def keep(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            etag = await self.store.renew_lease(LEASE, self.owner, self.etag, LEASE_SECONDS)
            if etag is None:
                self.lost = True
                log.error("the snapshot lease expired and was taken over while building")
                return
            self.etag = etag


@asynccontextmanager
async def _holding(store: Store, held: Held) -> AsyncIterator[Held]:
    renew = asyncio.create_task(held.keep())
    try:
        yield held
    finally:
        renew.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # only the renewal loop
            await renew
        if not held.lost:
            await asyncio.shield(store.release_lease(LEASE, held.etag))


async def take_snapshot(store: Store, settings: Settings, persist: bool, wait: float = WAIT_SECONDS) -> dict:
    """Build a snapshot under the lease (and store it, evaluate the alert rules, purge old ones when `persist`).
    While another build holds the lease, wait up to `wait` seconds: a snapshot it stores meanwhile is returned
    (`coalesced: true`); when the wait runs out, Busy."""
    owner = uuid.uuid4().hex
    seen = await store.latest_snapshot_key()  # read before trying, so a snapshot stored meanwhile is noticed
    deadline = time.monotonic() + max(0.0, wait)
    waited = False
    while True:
        etag = await store.acquire_lease(LEASE, owner, LEASE_SECONDS)
        if etag is not None:
            break
        waited = True
        latest = await store.latest_snapshot_key()
        if latest and latest != seen:
            found = await stored(store, latest)
            if found:
                return {**found, "coalesced": True}
        if time.monotonic() >= deadline:
            lease = await store.get_lease(LEASE) or {}
            raise Busy("a snapshot is being built right now; retry in a few seconds",
                       [{"field": "(snapshot)", "message": "another build holds the snapshot lease since "
                         f"{iso(lease.get('acquired_at'))} (until {iso(lease.get('expires_at'))} at the latest)"}])
        await asyncio.sleep(POLL_SECONDS)
    async with _holding(store, Held(store, owner, etag)) as held:
        if waited:  # the holder we waited for may have stored one just before releasing
            latest = await store.latest_snapshot_key()
            if latest and latest != seen:
                found = await stored(store, latest)
                if found:
                    return {**found, "coalesced": True}
        snapshot = await build(store)
        if not persist:
            return {**snapshot, "coalesced": False}
        if held.lost:
            raise RuntimeError("the snapshot lease was lost while building; nothing stored")
        taken_at = datetime.fromisoformat(snapshot["taken_at"])
        snapshot["id"] = inverted(taken_at)  # the row's key
        snapshot["persisted"] = True
        key = await store.save_snapshot(taken_at, snapshot["metrics"], fit(snapshot),
                                        period_from=datetime.fromisoformat(snapshot["period"]["from"]),
                                        build_ms=snapshot["build_ms"], schema_version=SCHEMA_VERSION)
        log.info("snapshot %s stored: %s", key, json.dumps(snapshot["metrics"], separators=(",", ":")))
        try:
            from shared.rules.evaluate import evaluate_rules

            snapshot["alert_rules"] = await evaluate_rules(store, snapshot)
        except Exception:
            log.exception("alert rules could not be evaluated on snapshot %s", key)
            snapshot["alert_rules"] = {"evaluated": 0, "fired": [], "resolved": [], "error": "see the logs"}
        try:
            await _purge(store, settings, taken_at)
        except Exception:
            log.exception("old snapshots could not be purged")
        return {**snapshot, "coalesced": False}


async def _purge(store: Store, settings: Settings, now: datetime) -> int:
    """Snapshots older than RESULT_RETENTION_DAYS; only the months around the cut (builds purge continuously)."""
    cut = now - timedelta(days=settings.result_retention_days)
    return await store.purge("snapshots", months_back(cut, cut - timedelta(days=62)), cut, "taken_at")
