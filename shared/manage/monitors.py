"""Monitor definitions: create, read, list, change, delete — what the HTTP API and the CLI both call."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from monitors import KINDS, from_entity, kind_of, parse_spec, to_entity_spec
from monitors.base import next_slot
from shared.errors import Duplicate, Invalid, NotFound, field_error, validation_details
from shared.storage import Conflict, etag_of, unique_row

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from shared.storage import Store


def iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def looks_like_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def unknown_kind() -> Invalid:
    return Invalid("unknown kind", field_error("kind", f"one of: {', '.join(sorted(KINDS))}"))


def view(cfg: MonitorBase, entity: dict[str, Any], state: dict[str, Any] | None, status: str | None) -> dict:
    kind = kind_of(cfg.kind)
    data = kind.public_view(cfg)
    data["target"] = kind.target(cfg)
    data["created_at"] = iso(entity.get("created_at"))
    data["updated_at"] = iso(entity.get("updated_at"))
    state = state or {}
    if not data.get("name") and state.get("name"):  # a kind may leave `name` empty and show what it found
        data["name"] = state["name"]  # (stock: the product's name in WHMCS)
    breaker = kind.breaker_open(cfg, state)
    data["state"] = {
        "status": status or "PENDING",
        "since": state.get("since"),
        "consecutive_failures": state.get("fails", 0),
        "down_since": state.get("down_since"),
        "circuit_open": breaker,
        "error": state.get("error"),
        "next_check_at": next_slot(cfg, datetime.now(UTC),
                                   kind.breaker_interval(cfg) if breaker else None).isoformat()
        if cfg.enabled else None,
    }
    return data


def parse(payload: Any) -> MonitorBase:
    if not isinstance(payload, dict):
        raise Invalid("the body must be a JSON object", field_error("(body)", "expected an object"))
    if "kind" not in payload:
        raise Invalid("kind is required", field_error("kind", f"one of: {', '.join(sorted(KINDS))}"))
    if not isinstance(payload["kind"], str) or payload["kind"] not in KINDS:
        raise unknown_kind()
    try:
        return parse_spec(payload)
    except ValidationError as error:
        raise Invalid("invalid monitor", validation_details(error, set(KINDS))) from None


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


def _duplicate(cfg: MonitorBase) -> Duplicate:
    field = kind_of(cfg.kind).unique_field or "(unique key)"
    return Duplicate(f"another {cfg.kind} monitor already uses this {field}", field_error(field, "must be unique"))


async def create_monitor(store: Store, payload: Any) -> dict[str, Any]:
    if isinstance(payload, dict) and payload.get("id") is not None:
        raise Invalid("id is assigned by the server", field_error("id", "must not be given"))
    cfg = parse(payload)
    check_targets(cfg)
    cfg.id = uuid.uuid4().hex
    keys = [unique_row(cfg.kind, k) for k in cfg.unique_keys()]
    entity = _entity(cfg, datetime.now(UTC))
    try:
        await store.insert_monitor(entity, keys)
    except Conflict:
        raise _duplicate(cfg) from None
    return view(cfg, entity, None, None)


async def load(store: Store, monitor_id: str) -> tuple[dict[str, Any], MonitorBase]:
    entity = await store.get_monitor(monitor_id) if looks_like_id(monitor_id) else None
    if entity is None:
        raise NotFound(f"no monitor {monitor_id}")
    return entity, from_entity(entity)


async def get_monitor(store: Store, monitor_id: str) -> dict[str, Any]:
    entity, cfg = await load(store, monitor_id)
    row = await store.get_state(entity["kind"], monitor_id)
    return view(cfg, entity, row.data if row else None, row.status if row else None)


async def list_monitors(store: Store, kind: str | None = None) -> list[dict[str, Any]]:
    if kind is not None and kind not in KINDS:
        raise unknown_kind()
    entities = await store.list_monitors(kind)
    states: dict[str, Any] = {}
    for k in {e["kind"] for e in entities}:
        states.update((await store.load_states(k))[0])
    out = []
    for entity in sorted(entities, key=lambda e: (e.get("name", "").lower(), e["RowKey"])):
        row = states.get(entity["RowKey"])
        try:
            cfg = from_entity(entity)
        except Exception:  # noqa: BLE001 - one unreadable definition must not hide the others
            out.append({"id": entity["RowKey"], "kind": entity.get("kind"), "name": entity.get("name", "?"),
                        "enabled": entity.get("enabled"), "state": {"status": "ERROR",
                                                                    "error": "stored definition is unreadable"}})
            continue
        out.append(view(cfg, entity, row.data if row else None, row.status if row else None))
    return out


async def update_monitor(store: Store, monitor_id: str, patch: Any) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise Invalid("the body must be a JSON object", field_error("(body)", "expected an object"))
    if patch.get("id", monitor_id) != monitor_id:
        raise Invalid("id cannot be changed", field_error("id", "read-only"))
    entity, cfg = await load(store, monitor_id)
    if "kind" in patch and patch["kind"] != entity["kind"]:
        raise Invalid("kind cannot be changed", field_error("kind", "read-only"))
    merged = {**cfg.model_dump(mode="json"), **patch, "id": monitor_id, "kind": entity["kind"]}
    if "cron" in patch and patch["cron"] and "interval_seconds" not in patch:
        merged["interval_seconds"] = None
    if "interval_seconds" in patch and patch["interval_seconds"] and "cron" not in patch:
        merged["cron"] = None
    new = parse(merged)
    check_targets(new)
    old_keys = {unique_row(cfg.kind, k) for k in cfg.unique_keys()}
    new_keys = {unique_row(new.kind, k) for k in new.unique_keys()}
    new_entity = _entity(new, entity.get("created_at") or datetime.now(UTC))
    try:
        await store.update_monitor(new_entity, etag_of(entity), old_keys - new_keys, new_keys - old_keys)
    except Conflict as conflict:
        if conflict.key:
            raise _duplicate(new) from None
        raise Duplicate("the monitor was changed by someone else at the same time; retry",
                        field_error("(monitor)", "concurrent update")) from None
    row = await store.get_state(entity["kind"], monitor_id)
    return view(new, new_entity, row.data if row else None, row.status if row else None)


async def set_enabled(store: Store, monitor_id: str, enabled: bool) -> dict[str, Any]:
    return await update_monitor(store, monitor_id, {"enabled": enabled})


async def delete_monitor(store: Store, monitor_id: str) -> None:
    entity, cfg = await load(store, monitor_id)
    keys = [unique_row(cfg.kind, k) for k in cfg.unique_keys()]
    await store.delete_monitor(monitor_id, entity["kind"], keys)


def kinds() -> list[dict[str, Any]]:
    return [{"kind": name, "schema": KINDS[name].model.model_json_schema()} for name in sorted(KINDS)]
