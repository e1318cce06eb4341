"""Maintenance window definitions: create, read, list, change, delete — what the HTTP API and the CLI both call.

Stored in the `windows` table (shared/storage/alerting.py: RowKey = id, `name`, `spec` JSON, created_at,
updated_at). A change is ETag-guarded (409 when someone else changed it meanwhile), checked against Table Storage's
limits before anything is written, and validated whole (bad input never changes what is stored). A view adds when
the window is: `active_now`, `current` and `next` ({start, end} in UTC, or null), from shared/windows/schedule.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.errors import Duplicate, Invalid, NotFound, field_error
from shared.manage.monitors import fits, iso, looks_like_id
from shared.storage import Conflict, etag_of
from shared.storage.keys import WINDOWS_PK
from shared.windows.model import MaintenanceWindow, parse
from shared.windows.schedule import Compiled, Occurrence

if TYPE_CHECKING:
    from shared.storage import Store

TABLE = "windows"
# Which fields each way of saying "when" uses: a PATCH that switches to one drops the others it does not restate.
WHEN_FIELDS = {"start": ("start", "end"), "end": ("start", "end"), "cron": ("cron", "duration_minutes", "starts_on",
               "ends_on"), "rrule": ("rrule", "at", "duration_minutes", "starts_on", "ends_on")}
ALL_WHEN = ("start", "end", "cron", "rrule", "at", "duration_minutes", "starts_on", "ends_on")


def from_entity(entity: dict[str, Any]) -> MaintenanceWindow:
    """A stored definition (valid when it was written)."""
    window = MaintenanceWindow.model_validate_json(entity["spec"])
    window.id = entity["RowKey"]
    return window


def _span(occ: Occurrence | None) -> dict[str, str] | None:
    return None if occ is None else {"start": occ.start.isoformat(), "end": occ.end.isoformat()}


def view(window: MaintenanceWindow, entity: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """A window as the API and the CLI show it: its definition, and when it is (UTC)."""
    current, nxt = Compiled(window).current_and_next(now or datetime.now(UTC))
    data = window.model_dump(mode="json")
    data["created_at"] = iso(entity.get("created_at"))
    data["updated_at"] = iso(entity.get("updated_at"))
    on = window.enabled
    data["active_now"] = on and current is not None
    data["current"] = _span(current) if on else None
    data["next"] = _span(nxt) if on else None
    return data


def _entity(window: MaintenanceWindow, created_at: datetime) -> dict[str, Any]:
    spec = window.model_dump_json(exclude={"id"})
    return fits({"RowKey": window.id, "name": window.name, "spec": spec, "created_at": created_at,
                 "updated_at": datetime.now(UTC)}, "maintenance window", WINDOWS_PK)


async def check_monitors(store: Store, ids: list[str]) -> None:
    """Every monitor named in the scope exists (422 naming the first that does not)."""
    if not ids:
        return
    if len(ids) > 5:
        known = {e["RowKey"] for e in await store.list_monitors(engine_fields=True)}
        missing = [i for i in ids if i not in known]
    else:
        missing = [i for i in ids if await store.get_monitor(i) is None]
    if missing:
        index = ids.index(missing[0])
        raise Invalid(f"no monitor {missing[0]}", field_error(f"monitors.{index}", f"no monitor {missing[0]}"))


async def create_window(store: Store, payload: Any) -> dict[str, Any]:
    if isinstance(payload, dict) and payload.get("id") is not None:
        raise Invalid("id is assigned by the server", field_error("id", "must not be given"))
    window = parse(payload)
    await check_monitors(store, window.monitors)
    window.id = uuid.uuid4().hex
    entity = _entity(window, datetime.now(UTC))
    await store.insert_definition(TABLE, entity)
    return view(window, entity)


async def load(store: Store, window_id: str) -> tuple[dict[str, Any], MaintenanceWindow]:
    entity = await store.get_definition(TABLE, window_id) if looks_like_id(window_id) else None
    if entity is None:
        raise NotFound(f"no maintenance window {window_id}")
    try:
        return entity, from_entity(entity)
    except Exception:  # noqa: BLE001 - stored garbage: show it as a conflict, it can still be deleted
        raise Duplicate(f"the stored maintenance window {window_id} is unreadable; delete it and create it again",
                        field_error("(window)", "stored definition is unreadable")) from None


async def get_window(store: Store, window_id: str) -> dict[str, Any]:
    entity, window = await load(store, window_id)
    return view(window, entity)


async def list_windows(store: Store, active: bool | None = None) -> list[dict[str, Any]]:
    """Every readable window by name; `active`: only those active now (True) or not (False)."""
    now = datetime.now(UTC)
    out = []
    for entity in await store.list_definitions(TABLE):
        try:
            window = from_entity(entity)
        except Exception:  # noqa: BLE001 - one unreadable definition must not hide the others
            continue
        item = view(window, entity, now)
        if active is None or item["active_now"] == active:
            out.append(item)
    return sorted(out, key=lambda w: (w["name"].lower(), w["id"]))


def merged(stored: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The stored definition with the patch applied; switching how "when" is said (start/end, cron, rrule) drops
    the fields of the old way that the patch does not restate."""
    out = {**stored, **patch}
    switched = [f for f in ("start", "end", "cron", "rrule") if patch.get(f) is not None and stored.get(f) is None]
    if switched:
        keep = {f for s in switched for f in WHEN_FIELDS[s]} | set(patch)
        for name in ALL_WHEN:
            if name not in keep:
                out[name] = None
    return {k: v for k, v in out.items() if v is not None or k in patch}


async def update_window(store: Store, window_id: str, patch: Any) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise Invalid("the body must be a JSON object", field_error("(body)", "expected an object"))
    if not patch:
        raise Invalid("nothing to change: give the fields to change", field_error("(body)", "empty object"))
    if patch.get("id", window_id) != window_id:
        raise Invalid("id cannot be changed", field_error("id", "read-only"))
    entity, old = await load(store, window_id)
    stored = old.model_dump(mode="json", exclude={"id"})
    new = parse(merged(stored, {k: v for k, v in patch.items() if k != "id"}))
    added = [m for m in new.monitors if m not in set(old.monitors)]
    await check_monitors(store, added)
    new.id = window_id
    new_entity = _entity(new, entity.get("created_at") or datetime.now(UTC))
    try:
        await store.update_definition(TABLE, new_entity, etag_of(entity))
    except Conflict:
        raise Duplicate("the maintenance window was changed by someone else at the same time; retry",
                        field_error("(window)", "concurrent update")) from None
    return view(new, new_entity)


async def delete_window(store: Store, window_id: str) -> None:
    entity = await store.get_definition(TABLE, window_id) if looks_like_id(window_id) else None
    if entity is None:
        raise NotFound(f"no maintenance window {window_id}")
    await store.delete_definition(TABLE, window_id)
