"""Monitor definitions: create, read, list, change, delete — what the HTTP API and the CLI both call."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from monitors import KINDS, from_entity, kind_of, to_entity_spec
from shared.engine.due import next_check_at
from shared.engine.located import LOC_KEY, Where
from shared.errors import Duplicate, Invalid, NotFound, TooLarge, field_error, validation_details
from shared.manage.references import check_references
from shared.storage import Conflict, EntityTooLarge, check_entity, etag_of, unique_row
from shared.storage.keys import MONITORS_PK

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from shared.storage import Store

log = logging.getLogger("monitor.manage")
MASK = "***"  # what a kind's public view shows instead of a secret; sent back in a PATCH it means "unchanged"
UNREADABLE = "stored definition is unreadable"


class Unreadable(Duplicate):
    """The stored definition no longer parses (409): it can be shown, its history read and it can be deleted, but
    it cannot be changed or run."""


def iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def looks_like_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def unknown_kind() -> Invalid:
    return Invalid("unknown kind", field_error("kind", f"one of: {', '.join(sorted(KINDS))}"))


def view(cfg: MonitorBase, entity: dict[str, Any], state: dict[str, Any] | None, status: str | None,
         paused: bool = False, where: Where | None = None) -> dict:
    """A monitor as the API and the CLI show it. `state`: its stored state (None: never checked); `paused`: its
    kind's timer is paused (no next check until it is resumed); `where`: several locations (what each saw)."""
    kind = kind_of(cfg.kind)
    checked = state is not None
    data = kind.public_view(cfg)
    data["target"] = kind.target(cfg)
    data["created_at"] = iso(entity.get("created_at"))
    data["updated_at"] = iso(entity.get("updated_at"))
    state = state or {}
    if not data.get("name") and state.get("name"):  # a kind may leave `name` empty and show what it found
        data["name"] = state["name"]  # (stock: the product's name in WHMCS)
    data["state"] = {
        "status": status or "PENDING",
        "since": state.get("since"),
        "consecutive_failures": state.get("fails", 0),
        "down_since": state.get("down_since"),
        "circuit_open": kind.breaker_open(cfg, state),
        "error": state.get("error"),
        # the tick that will check it, from the timers' own due rule (shared/engine/due.py)
        "next_check_at": next_check_at(cfg, state if checked else None).isoformat()
        if cfg.enabled and not paused else None,
    }
    if where is not None and where.covers(kind):
        data["state"]["locations"] = located_view(cfg, state, where)
    return data


def located_view(cfg: MonitorBase, state: dict[str, Any], where: Where) -> dict[str, Any]:
    """Each of the monitor's locations: its own status and error, and whether it is stale (its timer stopped: left
    out of the quorum)."""
    seen = state.get(LOC_KEY, {})
    fresh = where.fresh(cfg)
    return {loc: {"status": seen.get(loc, ["PENDING"])[0], "error": (seen.get(loc) or [None, None])[1],
                  "stale": loc not in fresh} for loc in where.locations_of(cfg)}


async def paused_kinds(store: Store, kinds: set[str]) -> set[str]:
    """The kinds among `kinds` whose timer is paused."""
    return {k for k in kinds if (await store.get_kind_meta(k)).get("paused")}


async def kind_states(store: Store, kinds: set[str]) -> tuple[set[str], dict[str, Where | None]]:
    """(the kinds whose timer is paused, each kind's locations (None with one)), from each kind's meta."""
    from shared.settings import get_settings

    paused, where, now = set(), {}, datetime.now(UTC)
    for k in kinds:
        meta, _ = await store.kind_meta_and_defs(k)
        if meta.get("paused"):
            paused.add(k)
        where[k] = Where.of(get_settings(), meta, now)
    return paused, where


def parse(payload: Any) -> MonitorBase:
    if not isinstance(payload, dict):
        raise Invalid("the body must be a JSON object", field_error("(body)", "expected an object"))
    if "kind" not in payload:
        raise Invalid("kind is required", field_error("kind", f"one of: {', '.join(sorted(KINDS))}"))
    if not isinstance(payload["kind"], str) or payload["kind"] not in KINDS:
        raise unknown_kind()
    kind = payload["kind"]
    try:
        return kind_of(kind).model.model_validate_json(strict_json(payload), strict=True)
    except ValidationError as error:
        details = validation_details(error)
        for detail in details:
            if detail.get("type") == "extra_forbidden":
                detail["message"] = f"not a field of {kind} monitors"
        raise Invalid("invalid monitor", details) from None


def strict_json(payload: dict[str, Any]) -> str:
    """A request body as JSON, for validation in pydantic's strict mode: the types the schema names and no others
    (`"enabled": 0`, `"interval_seconds": "60"` or `5.0` are 422, not quietly coerced)."""
    try:
        return json.dumps(payload, allow_nan=False)
    except ValueError:  # NaN or Infinity (Python's json reads them): no JSON number
        raise Invalid("the body holds a number JSON does not have", field_error("(body)", "NaN or Infinity")) from None
    except RecursionError:
        raise Invalid("the body is nested too deeply", field_error("(body)", "nested too deeply")) from None


def check_targets(cfg: MonitorBase) -> None:
    """A target that names an address the outbound guard refuses is a 422 now, not a failing check later."""
    from shared.outbound.guard import Guard, OutboundRefused
    from shared.settings import get_settings

    targets = kind_of(cfg.kind).outbound_targets(cfg)
    if not targets:
        return
    guard = Guard.from_settings(get_settings())
    problems = []
    for field, url in targets.items():
        try:
            guard.check_url(url)
        except OutboundRefused as refused:
            problems.append({"field": field, "message": str(refused)})
    if problems:
        raise Invalid("the monitor names an address checks may not reach", problems)


def _entity(cfg: MonitorBase, created_at: datetime) -> dict[str, Any]:
    return {"RowKey": cfg.id, "kind": cfg.kind, "name": cfg.name, "enabled": cfg.enabled,
            "spec": to_entity_spec(cfg), "created_at": created_at, "updated_at": datetime.now(UTC)}


# -- uniqueness: an enabled monitor holds one guard row per unique key (Config.unique_keys); a disabled one holds
# none, so it blocks nobody — enabling it takes its rows again (409 if another monitor took them meanwhile).


def unique_rows(cfg: MonitorBase) -> set[str]:
    """The guard rows `cfg` must hold."""
    return {unique_row(cfg.kind, k) for k in cfg.unique_keys()} if cfg.enabled else set()


async def held_rows(store: Store, monitor_id: str) -> set[str]:
    """The guard rows a monitor holds, as stored (whichever version of unique_keys wrote them)."""
    rows = await store.query("monitors", "PartitionKey eq @pk and RowKey ge @lo and monitor_id eq @id",
                             {"pk": MONITORS_PK, "lo": "~", "id": monitor_id}, select=["RowKey"])
    return {row["RowKey"] for row in rows}


async def _duplicate(store: Store, cfg: MonitorBase, taken: str | None) -> Duplicate:
    """The 409 for a unique key another monitor holds, naming that monitor."""
    kind = kind_of(cfg.kind)
    field = kind.unique_field or "(unique key)"
    does = kind.unique_means or f"uses this {field}"
    holder = None
    if taken:
        rows = await store.query("monitors", "PartitionKey eq @pk and RowKey eq @rk", {"pk": MONITORS_PK, "rk": taken},
                                 select=["monitor_id"])
        holder = rows[0].get("monitor_id") if rows else None
    if holder is None:
        return Duplicate(f"another {cfg.kind} monitor already {does}", field_error(field, "must be unique"))
    return Duplicate(f"another {cfg.kind} monitor ({holder}) already {does}: change this one, or disable or delete "
                     "that one", field_error(field, f"must be unique: monitor {holder} already {does}"))


async def create_monitor(store: Store, payload: Any) -> dict[str, Any]:
    if isinstance(payload, dict) and payload.get("id") is not None:
        raise Invalid("id is assigned by the server", field_error("id", "must not be given"))
    cfg = parse(payload)
    check_targets(cfg)
    cfg.id = uuid.uuid4().hex
    await check_references(store, cfg)
    entity = fits(_entity(cfg, datetime.now(UTC)), "monitor", MONITORS_PK)
    try:
        await store.insert_monitor(entity, sorted(unique_rows(cfg)))
    except Conflict as conflict:
        raise await _duplicate(store, cfg, conflict.key) from None
    return view(cfg, entity, None, None, paused=bool(await paused_kinds(store, {cfg.kind})))


def too_large(error: EntityTooLarge, what: str) -> TooLarge:
    """A definition that Table Storage cannot hold (413, nothing written): its size, the limit, what to shorten."""
    if error.prop is None and error.limit < 1024:
        message = f"the {what} has too many fields to store ({error.size}; at most {error.limit})"
    else:
        part = "the definition" if error.prop in (None, "spec") else f"its {error.prop!r}"
        message = (f"the {what} is too large to store: {part} takes {error.size:,} bytes in Table Storage, which "
                   f"allows {error.limit:,}; shorten its longest fields (headers, body, lists, queries, names)")
    return TooLarge(message, field_error("(body)", message))


def fits(entity: dict[str, Any], what: str, partition: str) -> dict[str, Any]:
    """The entity, checked against Table Storage's limits before anything is written (413 past one)."""
    try:
        check_entity({**entity, "PartitionKey": partition})
    except EntityTooLarge as error:
        raise too_large(error, what) from None
    return entity


async def load_entity(store: Store, monitor_id: str) -> dict[str, Any]:
    """The stored row of a monitor, unparsed: what its results, downtimes, uptime and deletion need."""
    entity = await store.get_monitor(monitor_id) if looks_like_id(monitor_id) else None
    if entity is None:
        raise NotFound(f"no monitor {monitor_id}")
    return entity


def readable(entity: dict[str, Any]) -> MonitorBase:
    """The stored definition parsed; Unreadable (409) when it no longer parses."""
    try:
        return from_entity(entity)
    except Exception as error:  # noqa: BLE001 - any stored garbage: a broken spec, a kind that is gone
        log.warning("monitor %s: %s: %s", entity.get("RowKey"), UNREADABLE, error)
        raise Unreadable(f"the {UNREADABLE} (monitor {entity.get('RowKey')}); it cannot be changed or run — delete "
                         "it and create it again", field_error("(monitor)", UNREADABLE)) from None


async def load(store: Store, monitor_id: str) -> tuple[dict[str, Any], MonitorBase]:
    entity = await load_entity(store, monitor_id)
    return entity, readable(entity)


def unreadable_view(entity: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a definition that no longer parses (so it can be seen and deleted)."""
    kind, name, enabled = entity.get("kind"), entity.get("name"), entity.get("enabled")
    return {"id": entity["RowKey"], "kind": kind if isinstance(kind, str) else None,
            "name": name if isinstance(name, str) else "?", "enabled": enabled if isinstance(enabled, bool) else None,
            "state": {"status": "ERROR", "error": UNREADABLE}}


async def get_monitor(store: Store, monitor_id: str) -> dict[str, Any]:
    entity = await load_entity(store, monitor_id)
    try:
        cfg = readable(entity)
    except Unreadable:
        return unreadable_view(entity)
    row = await store.get_state(entity["kind"], monitor_id)
    paused, where = await kind_states(store, {cfg.kind})
    return view(cfg, entity, row.data if row else None, row.status if row else None, bool(paused),
                where[cfg.kind])


async def list_monitors(store: Store, kind: str | None = None) -> list[dict[str, Any]]:
    if kind is not None and kind not in KINDS:
        raise unknown_kind()
    entities = await store.list_monitors(kind)
    states: dict[str, Any] = {}
    present = {str(e.get("kind")) for e in entities} & set(KINDS)
    for k in present:
        states.update((await store.load_states(k))[0])
    paused, where = await kind_states(store, present)
    out = []
    for entity in sorted(entities, key=lambda e: (e.get("name", "").lower(), e["RowKey"])):
        row = states.get(entity["RowKey"])
        try:
            cfg = readable(entity)
        except Unreadable:  # one unreadable definition must not hide the others
            out.append(unreadable_view(entity))
            continue
        out.append(view(cfg, entity, row.data if row else None, row.status if row else None, cfg.kind in paused,
                        where.get(cfg.kind)))
    return out


async def update_monitor(store: Store, monitor_id: str, patch: Any) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise Invalid("the body must be a JSON object", field_error("(body)", "expected an object"))
    if patch.get("id", monitor_id) != monitor_id:
        raise Invalid("id cannot be changed", field_error("id", "read-only"))
    entity, cfg = await load(store, monitor_id)
    if "kind" in patch and patch["kind"] != entity["kind"]:
        raise Invalid("kind cannot be changed", field_error("kind", "read-only"))
    stored = cfg.model_dump(mode="json")
    shown = kind_of(cfg.kind).public_view(cfg)
    patch = {k: unmask(v, shown.get(k), stored[k]) if k in stored else v for k, v in patch.items()}
    merged = {**stored, **patch, "id": monitor_id, "kind": entity["kind"]}
    if "cron" in patch and patch["cron"] and "interval_seconds" not in patch:
        merged["interval_seconds"] = None
    if "interval_seconds" in patch and patch["interval_seconds"] and "cron" not in patch:
        merged["cron"] = None
    new = parse(merged)
    check_targets(new)
    await check_references(store, new)
    old_keys, new_keys = await held_rows(store, monitor_id), unique_rows(new)
    new_entity = fits(_entity(new, entity.get("created_at") or datetime.now(UTC)), "monitor", MONITORS_PK)
    try:
        await store.update_monitor(new_entity, etag_of(entity), sorted(old_keys - new_keys),
                                   sorted(new_keys - old_keys))
    except Conflict as conflict:
        if conflict.key:
            raise await _duplicate(store, new, conflict.key) from None
        raise Duplicate("the monitor was changed by someone else at the same time; retry",
                        field_error("(monitor)", "concurrent update")) from None
    row = await store.get_state(entity["kind"], monitor_id)
    paused = bool(await paused_kinds(store, {new.kind}))
    return view(new, new_entity, row.data if row else None, row.status if row else None, paused)


async def set_enabled(store: Store, monitor_id: str, enabled: bool) -> dict[str, Any]:
    return await update_monitor(store, monitor_id, {"enabled": enabled})


def unmask(sent: Any, shown: Any, stored: Any) -> Any:
    """What a PATCH value means: where the public view showed a masked value (MASK, or a URL with its credentials
    masked) and the patch sends exactly that back (at the same path, in any nesting of objects), the stored value;
    anything else as sent (a new value replaces the secret, a key left out of an object removes it)."""
    if isinstance(sent, str) and sent == shown and MASK in shown and shown != stored:
        return stored
    if isinstance(sent, dict) and isinstance(shown, dict) and isinstance(stored, dict):
        return {k: unmask(v, shown.get(k), stored[k]) if k in stored else v for k, v in sent.items()}
    return sent


async def delete_monitor(store: Store, monitor_id: str) -> None:
    entity = await load_entity(store, monitor_id)
    kind = entity.get("kind")
    guards = await held_rows(store, monitor_id)  # as stored: an unreadable definition's too
    await store.delete_monitor(monitor_id, kind if isinstance(kind, str) else "", sorted(guards))


def kinds() -> list[dict[str, Any]]:
    return [{"kind": name, "schema": KINDS[name].model.model_json_schema()} for name in sorted(KINDS)]
