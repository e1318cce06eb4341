"""HTTP API under /api/v1 — thin adapters from HttpRequest to shared.manage and back to JSON. Only /health is
anonymous."""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

from shared.triggers.http import ANONYMOUS, KEY, body_of, error, handle, paging, query, respond

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store

bp = func.Blueprint()


def _settings() -> Settings:
    from shared.settings import get_settings

    return get_settings()


@bp.route(route="v1/health", methods=["GET"], auth_level=ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    from shared import manage

    async def work(store: Store) -> func.HttpResponse:
        ok, body = await manage.health(store, _settings())
        return respond(body, 200 if ok else 503)

    return await handle(work)


@bp.route(route="v1/monitors", methods=["GET", "POST"], auth_level=KEY)
async def monitors(req: func.HttpRequest) -> func.HttpResponse:
    from shared import manage

    async def work(store: Store) -> func.HttpResponse:
        if req.method == "POST":
            return respond(await manage.create_monitor(store, body_of(req)), 201)
        return respond({"items": await manage.list_monitors(store, query(req, "kind") or None)})

    return await handle(work)


@bp.route(route="v1/monitors/{monitor_id}", methods=["GET", "PATCH", "DELETE"], auth_level=KEY)
async def monitor(req: func.HttpRequest) -> func.HttpResponse:
    from shared import manage

    monitor_id = req.route_params["monitor_id"]

    async def work(store: Store) -> func.HttpResponse:
        if req.method == "PATCH":
            return respond(await manage.update_monitor(store, monitor_id, body_of(req)))
        if req.method == "DELETE":
            await manage.delete_monitor(store, monitor_id)
            return func.HttpResponse(status_code=204)
        return respond(await manage.get_monitor(store, monitor_id))

    return await handle(work)


@bp.route(route="v1/monitors/{monitor_id}/results", methods=["GET"], auth_level=KEY)
async def monitor_results(req: func.HttpRequest) -> func.HttpResponse:
    from shared import manage

    async def work(store: Store) -> func.HttpResponse:
        limit, before = paging(req)
        return respond(await manage.results(store, req.route_params["monitor_id"], limit, before))

    return await handle(work)


@bp.route(route="v1/monitors/{monitor_id}/downtimes", methods=["GET"], auth_level=KEY)
async def monitor_downtimes(req: func.HttpRequest) -> func.HttpResponse:
    from shared import manage

    async def work(store: Store) -> func.HttpResponse:
        limit = manage.parse_limit(query(req, "limit"), default=100)
        return respond(await manage.downtimes(store, req.route_params["monitor_id"], limit))

    return await handle(work)


@bp.route(route="v1/monitors/{monitor_id}/uptime", methods=["GET"], auth_level=KEY)
async def monitor_uptime(req: func.HttpRequest) -> func.HttpResponse:
    from shared import manage

    async def work(store: Store) -> func.HttpResponse:
        window = query(req, "window") or "24h"
        return respond(await manage.uptime(store, req.route_params["monitor_id"], window))

    return await handle(work)


@bp.route(route="v1/monitors/{monitor_id}/run", methods=["POST"], auth_level=KEY)
async def monitor_run(req: func.HttpRequest) -> func.HttpResponse:
    from shared import manage

    async def work(store: Store) -> func.HttpResponse:
        return respond(await manage.run_monitor(store, _settings(), req.route_params["monitor_id"]))

    return await handle(work)


@bp.route(route="v1/kinds/{kind}/{action}", methods=["POST"], auth_level=KEY)
async def kind_action(req: func.HttpRequest) -> func.HttpResponse:
    from shared import manage

    kind, action = req.route_params["kind"], req.route_params["action"]

    async def work(store: Store) -> func.HttpResponse:
        if action == "run":
            return respond(await manage.run_kind(store, _settings(), kind))
        if action in ("pause", "resume"):
            return respond(await manage.set_paused(store, kind, action == "pause"))
        return error(404, "not_found", f"no action {action!r}; use run, pause or resume")

    return await handle(work)


@bp.route(route="v1/events", methods=["GET"], auth_level=KEY)
async def events(req: func.HttpRequest) -> func.HttpResponse:
    from shared import manage

    async def work(store: Store) -> func.HttpResponse:
        limit, before = paging(req)
        return respond(await manage.events(store, limit, before, query(req, "monitor_id") or None,
                                           query(req, "type") or None))

    return await handle(work)


@bp.route(route="v1/metrics", methods=["GET"], auth_level=KEY)
async def metrics(req: func.HttpRequest) -> func.HttpResponse:
    """The latest stored metric readings (resources); nothing is measured here."""
    from shared import manage

    async def work(store: Store) -> func.HttpResponse:
        return respond(await manage.readings(store))

    return await handle(work)


@bp.route(route="v1/openapi.json", methods=["GET"], auth_level=KEY)
async def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    from shared.web import openapi

    return respond(openapi.document())
