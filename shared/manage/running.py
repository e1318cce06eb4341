"""Running checks by hand and pausing timers — the same engine as the timers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monitors import KINDS
from shared import engine
from shared.errors import NotFound
from shared.manage.monitors import iso, load

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store


def outcome_view(outcome: engine.Outcome) -> dict[str, Any]:
    r = outcome.result
    return {"monitor_id": outcome.monitor_id, "name": outcome.name, "ts": outcome.slot.isoformat(),
            "outcome": r.outcome, "status": outcome.status, "latency_ms": r.latency_ms, "error": r.error,
            "events": outcome.events, **{k: iso(v) for k, v in r.data.items()}}


async def run_monitor(store: Store, settings: Settings, monitor_id: str) -> dict[str, Any]:
    await load(store, monitor_id)  # 404 unknown, 409 unreadable
    try:
        return outcome_view(await engine.run_monitor(store, settings, monitor_id))
    except engine.MonitorNotFound:  # deleted while it was being checked
        raise NotFound(f"no monitor {monitor_id}") from None


def known_kind(kind: str) -> str:
    if kind not in KINDS:
        raise NotFound(f"no kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    return kind


async def run_kind(store: Store, settings: Settings, kind: str, trigger: str = "manual") -> dict[str, Any]:
    summary = await engine.run_kind(store, settings, known_kind(kind), trigger=trigger)
    record = {k: iso(v) for k, v in summary.record().items()}
    return {"kind": kind, **record, "results": [outcome_view(o) for o in summary.outcomes]}


async def set_paused(store: Store, kind: str, paused: bool) -> dict[str, Any]:
    await store.set_kind_meta(known_kind(kind), paused=paused)
    return {"kind": kind, "paused": paused}
