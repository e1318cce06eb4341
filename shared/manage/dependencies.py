"""`depends_on`: the monitors a monitor depends on. While one of them is down, the monitor's alerts are held (the
engine's gate, shared/engine/gate.py); here, what is checked when a definition is written (every id exists, not
itself, no cycle through any depth) and who depends on a monitor (listed in the parent's alert by the delivery).

The graph is read from the stored definitions in one query (`list_monitors`): definitions are few and written
rarely, so a write may afford it; the engine never walks it (it reads only a due monitor's direct parents).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from shared.storage import Store


def _parents_of(entity: dict[str, Any]) -> list[str]:
    """The `depends_on` of a stored definition ([] when it has none or cannot be read)."""
    try:
        spec = json.loads(entity.get("spec") or "{}")
    except ValueError:
        return []
    parents = spec.get("depends_on") if isinstance(spec, dict) else None
    return [p for p in parents if isinstance(p, str)] if isinstance(parents, list) else []


async def _graph(store: Store) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    entities = {e["RowKey"]: e for e in await store.list_monitors()}
    return {mid: _parents_of(e) for mid, e in entities.items()}, entities


def _cycle(graph: dict[str, list[str]], start: str, target: str) -> list[str] | None:
    """A path start → … → target along depends_on (depth-first, each monitor visited once), None if none."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        if node == target:
            return path
        if node in seen:
            continue
        seen.add(node)
        stack.extend((parent, [*path, parent]) for parent in reversed(graph.get(node, [])))
    return None


async def dependency_problems(store: Store, cfg: MonitorBase) -> list[dict[str, Any]]:
    """Field problems of cfg.depends_on (each a 422 detail): an unknown id, the monitor itself, a repeated id, a
    cycle through any depth (the path named: "A → B → A")."""
    if not cfg.depends_on:
        return []
    graph, entities = await _graph(store)
    own = cfg.id or ""
    graph[own] = list(cfg.depends_on)  # the definition being written, not the stored one

    def label(mid: str) -> str:
        name = cfg.name if mid == own else entities.get(mid, {}).get("name")
        return f"{name} ({mid})" if name else mid

    problems = []
    for n, parent in enumerate(cfg.depends_on):
        where = f"depends_on.{n}"
        if parent == own:
            problems.append({"field": where, "message": "a monitor cannot depend on itself"})
        elif parent in cfg.depends_on[:n]:
            problems.append({"field": where, "message": f"{parent} is listed twice"})
        elif parent not in entities:
            problems.append({"field": where, "message": f"no monitor {parent} (GET /api/v1/monitors lists them)"})
        elif own and (path := _cycle(graph, parent, own)) is not None:
            names = " → ".join(label(mid) for mid in [own, *path])
            problems.append({"field": where, "message": f"a cycle: {names}"})
    return problems


async def dependents(store: Store, monitor_id: str) -> list[dict[str, Any]]:
    """The monitors that depend directly on `monitor_id`, by name: {id, name, kind, status} (status from their
    state row; PENDING when never checked). For the parent's alert, which lists the children it holds."""
    graph, entities = await _graph(store)
    out = []
    for mid, parents in graph.items():
        if monitor_id in parents:
            entity = entities[mid]
            row = await store.get_state(entity["kind"], mid)
            out.append({"id": mid, "name": entity.get("name") or mid, "kind": entity["kind"],
                        "status": row.status if row is not None else "PENDING"})
    return sorted(out, key=lambda d: (str(d["name"]).lower(), d["id"]))
