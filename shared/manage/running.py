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


def outcome_view(outcome: engine.Outcome, kind: str | None = None,
                 names: dict[str, str] | None = None) -> dict[str, Any]:
    """A result just made, as the API shows it: the kind's own fields through its `result_view` (as GET
    …/results shows the stored ones); `names`: what the kind found for monitors it leaves unnamed."""
    r = outcome.result
    data = KINDS[kind].result_view(dict(r.data)) if kind is not None and kind in KINDS else r.data
    return {"monitor_id": outcome.monitor_id, "name": outcome.name or (names or {}).get(outcome.monitor_id, ""),
            "slot": outcome.slot.isoformat(), "checked_at": iso(outcome.checked_at), "ts": outcome.slot.isoformat(),
            "outcome": r.outcome, "status": outcome.status,
            "latency_ms": r.latency_ms, "error": r.error, "events": outcome.events,
            **{k: iso(v) for k, v in data.items()}}


async def found_names(store: Store, kind: str, outcomes: list[engine.Outcome]) -> dict[str, str]:
    """A kind may leave `name` empty and show what it found (stock: the product's name in WHMCS, in the state)."""
    unnamed = [o.monitor_id for o in outcomes if not o.name]
    if not unnamed:
        return {}
    if len(unnamed) == 1:
        row = await store.get_state(kind, unnamed[0])
        rows = {unnamed[0]: row} if row is not None else {}
    else:
        rows = (await store.load_states(kind))[0]
    return {mid: str(row.data.get("name") or "") for mid, row in rows.items()}


async def run_monitor(store: Store, settings: Settings, monitor_id: str) -> dict[str, Any]:
    _, cfg = await load(store, monitor_id)  # 404 unknown, 409 unreadable
    try:
        outcome = await engine.run_monitor(store, settings, monitor_id)
    except engine.MonitorNotFound:  # deleted while it was being checked
        raise NotFound(f"no monitor {monitor_id}") from None
    return outcome_view(outcome, cfg.kind, await found_names(store, cfg.kind, [outcome]))


def known_kind(kind: str) -> str:
    if kind not in KINDS:
        raise NotFound(f"no kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    return kind


async def run_kind(store: Store, settings: Settings, kind: str, trigger: str = "manual") -> dict[str, Any]:
    summary = await engine.run_kind(store, settings, known_kind(kind), trigger=trigger)
    record = {k: iso(v) for k, v in summary.record().items()}
    names = await found_names(store, kind, summary.outcomes)
    return {"kind": kind, **record, "results": [outcome_view(o, kind, names) for o in summary.outcomes]}


async def set_paused(store: Store, kind: str, paused: bool) -> dict[str, Any]:
    await store.set_kind_meta(known_kind(kind), paused=paused)
    return {"kind": kind, "paused": paused}
