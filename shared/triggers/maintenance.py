"""HTTP API of maintenance windows (shared/windows/service.py): CRUD under /api/v1/maintenance."""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

from shared.triggers.http import KEY, body_of, handle, query, respond

if TYPE_CHECKING:
    from shared.storage import Store

bp = func.Blueprint()


def active_filter(value: str | None) -> bool | None:
    """`?active=true|false` (absent: every window)."""
    from shared.errors import Invalid, field_error

    if not value:  # absent or empty (`?active=`): every window
        return None
    if value.lower() not in ("true", "false"):
        raise Invalid("active must be true or false", field_error("active", "true or false"))
    return value.lower() == "true"


@bp.route(route="v1/maintenance", methods=["GET", "POST"], auth_level=KEY)
async def maintenance_windows(req: func.HttpRequest) -> func.HttpResponse:
    from shared.windows import service

    async def work(store: Store) -> func.HttpResponse:
        if req.method == "POST":
            return respond(await service.create_window(store, body_of(req)), 201)
        return respond({"items": await service.list_windows(store, active_filter(query(req, "active")))})

    return await handle(work)


@bp.route(route="v1/maintenance/{window_id}", methods=["GET", "PATCH", "DELETE"], auth_level=KEY)
async def maintenance_window(req: func.HttpRequest) -> func.HttpResponse:
    from shared.windows import service

    window_id = req.route_params["window_id"]

    async def work(store: Store) -> func.HttpResponse:
        if req.method == "PATCH":
            return respond(await service.update_window(store, window_id, body_of(req)))
        if req.method == "DELETE":
            await service.delete_window(store, window_id)
            return func.HttpResponse(status_code=204)
        return respond(await service.get_window(store, window_id))

    return await handle(work)
