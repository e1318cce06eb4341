"""HTTP API under /api/v1 — thin adapters from HttpRequest to shared.service and back to JSON.

Errors are always `{"error": {"code", "message", "details"}}`; only /health is anonymous.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

import azure.functions as func

from shared import openapi, service
from shared.settings import get_settings
from shared.storage import Store

log = logging.getLogger("monitor.api")
bp = func.Blueprint()
KEY = func.AuthLevel.FUNCTION


def respond(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


def error(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> func.HttpResponse:
    return respond({"error": {"code": code, "message": message, "details": details or []}}, status)


def body_of(req: func.HttpRequest) -> Any:
    raw = req.get_body()
    if not raw:
        raise service.Invalid("a JSON body is required", [{"field": "(body)", "message": "empty"}])
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise service.ServiceError("the body is not valid JSON", [{"field": "(body)", "message": str(exc)}]) \
            from None


def paging(req: func.HttpRequest, default: int = 50, maximum: int = 1000) -> tuple[int, Any]:
    """`?limit=&before=` of a cursor-paged listing, validated (422 with the field named)."""
    return (service.parse_limit(req.params.get("limit"), default=default, maximum=maximum),
            service.parse_time(req.params.get("before"), "before"))


async def handle(work: Callable[[Store], Awaitable[func.HttpResponse]]) -> func.HttpResponse:
    """Open storage for the request, map service errors to HTTP, never leak internals."""
    try:
        settings = get_settings()
        async with Store.open(settings) as store:
            return await work(store)
    except service.ServiceError as exc:
        return error(exc.status, exc.code, exc.message, exc.details)
    except Exception:  # noqa: BLE001 - logged with its traceback; the client gets no internals
        log.exception("request failed")
        return error(500, "internal_error", "the request failed; see the function logs")


@bp.route(route="v1/health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    async def work(store: Store) -> func.HttpResponse:
        ok, body = await service.health(store, get_settings())
        return respond(body, 200 if ok else 503)

    return await handle(work)


@bp.route(route="v1/monitors", methods=["GET", "POST"], auth_level=KEY)
async def monitors(req: func.HttpRequest) -> func.HttpResponse:
    async def work(store: Store) -> func.HttpResponse:
        if req.method == "POST":
            return respond(await service.create_monitor(store, body_of(req)), 201)
        return respond({"items": await service.list_monitors(store, req.params.get("kind") or None)})

    return await handle(work)


@bp.route(route="v1/monitors/{monitor_id}", methods=["GET", "PATCH", "DELETE"], auth_level=KEY)
async def monitor(req: func.HttpRequest) -> func.HttpResponse:
    monitor_id = req.route_params["monitor_id"]

    async def work(store: Store) -> func.HttpResponse:
        if req.method == "PATCH":
            return respond(await service.update_monitor(store, monitor_id, body_of(req)))
        if req.method == "DELETE":
            await service.delete_monitor(store, monitor_id)
            return func.HttpResponse(status_code=204)
        return respond(await service.get_monitor(store, monitor_id))

    return await handle(work)


@bp.route(route="v1/monitors/{monitor_id}/results", methods=["GET"], auth_level=KEY)
async def monitor_results(req: func.HttpRequest) -> func.HttpResponse:
    async def work(store: Store) -> func.HttpResponse:
        limit, before = paging(req)
        return respond(await service.results(store, req.route_params["monitor_id"], limit, before))

    return await handle(work)


@bp.route(route="v1/monitors/{monitor_id}/downtimes", methods=["GET"], auth_level=KEY)
async def monitor_downtimes(req: func.HttpRequest) -> func.HttpResponse:
    async def work(store: Store) -> func.HttpResponse:
        limit = service.parse_limit(req.params.get("limit"), default=100)
        return respond(await service.downtimes(store, req.route_params["monitor_id"], limit))

    return await handle(work)


@bp.route(route="v1/monitors/{monitor_id}/uptime", methods=["GET"], auth_level=KEY)
async def monitor_uptime(req: func.HttpRequest) -> func.HttpResponse:
    async def work(store: Store) -> func.HttpResponse:
        window = req.params.get("window") or "24h"
        return respond(await service.uptime(store, req.route_params["monitor_id"], window))

    return await handle(work)


@bp.route(route="v1/monitors/{monitor_id}/run", methods=["POST"], auth_level=KEY)
async def monitor_run(req: func.HttpRequest) -> func.HttpResponse:
    async def work(store: Store) -> func.HttpResponse:
        return respond(await service.run_monitor(store, get_settings(), req.route_params["monitor_id"]))

    return await handle(work)


@bp.route(route="v1/kinds/{kind}/{action}", methods=["POST"], auth_level=KEY)
async def kind_action(req: func.HttpRequest) -> func.HttpResponse:
    kind, action = req.route_params["kind"], req.route_params["action"]

    async def work(store: Store) -> func.HttpResponse:
        if action == "run":
            return respond(await service.run_kind(store, get_settings(), kind))
        if action in ("pause", "resume"):
            return respond(await service.set_paused(store, kind, action == "pause"))
        return error(404, "not_found", f"no action {action!r}; use run, pause or resume")

    return await handle(work)


@bp.route(route="v1/events", methods=["GET"], auth_level=KEY)
async def events(req: func.HttpRequest) -> func.HttpResponse:
    async def work(store: Store) -> func.HttpResponse:
        limit, before = paging(req)
        return respond(await service.events(store, limit, before, req.params.get("monitor_id") or None,
                                            req.params.get("type") or None))

    return await handle(work)


@bp.route(route="v1/metrics", methods=["GET"], auth_level=KEY)
async def metrics(req: func.HttpRequest) -> func.HttpResponse:
    """Resource monitors' latest stored metrics and statuses (seed 004's /metrics); nothing is measured here."""

    async def work(store: Store) -> func.HttpResponse:
        return respond(await service.resource_metrics(store))

    return await handle(work)


@bp.route(route="v1/openapi.json", methods=["GET"], auth_level=KEY)
async def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    return respond(openapi.document())
