"""HTTP API of channels (shared/manage/channels.py): CRUD under /api/v1/channels and a test message. A channel is
addressed by its id or its name."""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

from shared.triggers.http import KEY, body_of, handle, respond

if TYPE_CHECKING:
    from shared.storage import Store

bp = func.Blueprint()


@bp.route(route="v1/channels", methods=["GET", "POST"], auth_level=KEY)
async def channels(req: func.HttpRequest) -> func.HttpResponse:
    from shared.manage import channels as service

    async def work(store: Store) -> func.HttpResponse:
        if req.method == "POST":
            return respond(await service.create_channel(store, body_of(req)), 201)
        return respond({"items": await service.list_channels(store)})

    return await handle(work)


@bp.route(route="v1/channels/{channel_id}", methods=["GET", "PATCH", "DELETE"], auth_level=KEY)
async def channel(req: func.HttpRequest) -> func.HttpResponse:
    from shared.manage import channels as service

    ident = req.route_params["channel_id"]

    async def work(store: Store) -> func.HttpResponse:
        if req.method == "PATCH":
            return respond(await service.update_channel(store, ident, body_of(req)))
        if req.method == "DELETE":
            await service.delete_channel(store, ident)
            return func.HttpResponse(status_code=204)
        return respond(await service.get_channel(store, ident))

    return await handle(work)


@bp.route(route="v1/channels/{channel_id}/test", methods=["POST"], auth_level=KEY)
async def channel_test(req: func.HttpRequest) -> func.HttpResponse:
    from shared.manage import channels as service
    from shared.settings import get_settings

    async def work(store: Store) -> func.HttpResponse:
        return respond(await service.test_channel(store, get_settings(), req.route_params["channel_id"]))

    return await handle(work)
