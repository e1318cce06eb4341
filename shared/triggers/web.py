"""HTTP for snapshots, alert rules and the public face — thin adapters over shared.snapshots, shared.rules and
shared.web.

Under /api/v1 with a function key, like the rest of the API: status, snapshot, history, timeseries, bootstrap,
alert-rules, metrics/prometheus. Anonymous and read-only: /api/status-page and /api/badge/{id}/{status|uptime}.svg.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import azure.functions as func

from shared.triggers.http import ANONYMOUS, KEY, body_of, handle, paging, query, respond

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("monitor.public")
bp = func.Blueprint()
WAIT_SECONDS = 10.0  # a build's default wait for a running one (shared/snapshots/service.py WAIT_SECONDS)
PAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                           "img-src data: https: 'self'; frame-ancestors 'none'"}


def _settings() -> Settings:
    from shared.settings import get_settings

    return get_settings()


def _flag(value: str | None, field: str) -> bool:
    from shared.errors import Invalid, field_error

    if value in (None, ""):
        return False
    assert value is not None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise Invalid(f"{field} must be true or false", field_error(field, "true or false"))


def _wait(value: str | None) -> float:
    from shared.errors import Invalid, field_error

    if value in (None, ""):
        return WAIT_SECONDS
    assert value is not None
    # a JSON number, nothing looser (" 5 ", "1_0", "nan" and "٥" are 422)
    seconds = float(value) if re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", value) else -1.0
    if not 0 <= seconds <= 30:
        raise Invalid("wait must be 0–30 seconds", field_error("wait", "between 0 and 30"))
    return seconds


@bp.route(route="v1/status", methods=["GET"], auth_level=KEY)
async def status(req: func.HttpRequest) -> func.HttpResponse:
    from shared import snapshots

    async def work(store: Store) -> func.HttpResponse:
        return respond(await snapshots.status(store))

    return await handle(work)


@bp.route(route="v1/snapshot", methods=["GET", "POST"], auth_level=KEY)
async def snapshot(req: func.HttpRequest) -> func.HttpResponse:
    """Build a snapshot now; `?persist=true` stores it (and evaluates the alert rules). `?wait=` seconds (0–30,
    default 10) to wait for a build already running: its stored snapshot is the answer, else 409."""
    from shared import snapshots

    async def work(store: Store) -> func.HttpResponse:
        persist = _flag(query(req, "persist"), "persist")
        body = await snapshots.take_snapshot(store, _settings(), persist, _wait(query(req, "wait")))
        return respond(body)  # 200 always: `persisted` and `coalesced` say what happened

    response = await handle(work)
    if response.status_code == 409:
        response.headers["Retry-After"] = "5"
    return response


@bp.route(route="v1/history", methods=["GET"], auth_level=KEY)
async def history(req: func.HttpRequest) -> func.HttpResponse:
    from shared import snapshots

    async def work(store: Store) -> func.HttpResponse:
        limit, before = paging(req, default=20, maximum=500)
        return respond(await snapshots.history(store, limit, before, _flag(query(req, "full"), "full")))

    return await handle(work)


@bp.route(route="v1/timeseries", methods=["GET"], auth_level=KEY)
async def timeseries(req: func.HttpRequest) -> func.HttpResponse:
    from shared import snapshots

    async def work(store: Store) -> func.HttpResponse:
        return respond(await snapshots.timeseries(store, query(req, "metric"), query(req, "from"),
                                                  query(req, "to")))

    return await handle(work)


@bp.route(route="v1/bootstrap", methods=["GET"], auth_level=KEY)
async def bootstrap(req: func.HttpRequest) -> func.HttpResponse:
    from shared import snapshots

    async def work(store: Store) -> func.HttpResponse:
        return respond(await snapshots.bootstrap(store))

    return await handle(work)


@bp.route(route="v1/alert-rules", methods=["GET", "POST"], auth_level=KEY)
async def alert_rules(req: func.HttpRequest) -> func.HttpResponse:
    from shared import rules

    async def work(store: Store) -> func.HttpResponse:
        if req.method == "POST":
            return respond(await rules.create_rule(store, body_of(req)), 201)
        return respond({"items": await rules.list_rules(store)})

    return await handle(work)


@bp.route(route="v1/alert-rules/{rule_id}", methods=["GET", "PATCH", "DELETE"], auth_level=KEY)
async def alert_rule(req: func.HttpRequest) -> func.HttpResponse:
    from shared import rules

    rule_id = req.route_params["rule_id"]

    async def work(store: Store) -> func.HttpResponse:
        if req.method == "PATCH":
            return respond(await rules.update_rule(store, rule_id, body_of(req)))
        if req.method == "DELETE":
            await rules.delete_rule(store, rule_id)
            return func.HttpResponse(status_code=204)
        return respond(await rules.get_rule(store, rule_id))

    return await handle(work)


@bp.route(route="v1/metrics/prometheus", methods=["GET"], auth_level=KEY)
async def prometheus_metrics(req: func.HttpRequest) -> func.HttpResponse:
    from shared.web.prometheus import CONTENT_TYPE, prometheus_text

    async def work(store: Store) -> func.HttpResponse:
        return func.HttpResponse(await prometheus_text(store), status_code=200, headers={"Content-Type": CONTENT_TYPE})

    return await handle(work)


# ------------------------------------------------------------------------------------- anonymous, read-only


@bp.route(route="status-page", methods=["GET"], auth_level=ANONYMOUS)
async def status_page(req: func.HttpRequest) -> func.HttpResponse:
    from shared.storage import Store
    from shared.web.status_page import PAGE_CACHE_SECONDS
    from shared.web.status_page import status_page as page

    try:
        async with Store.open(_settings()) as store:
            html = await page(store)
    except Exception:
        log.exception("status page failed")
        return func.HttpResponse("<!DOCTYPE html><title>Status</title><p>The status page is temporarily "
                                 "unavailable. Please try again in a minute.</p>", status_code=503,
                                 mimetype="text/html", charset="utf-8")
    return func.HttpResponse(html, status_code=200, mimetype="text/html", charset="utf-8",
                             headers={"Cache-Control": f"public, max-age={int(PAGE_CACHE_SECONDS)}", **PAGE_HEADERS})


def _badge_window(req: func.HttpRequest) -> str:
    """`?window=` of the uptime badge (empty: 30d); given more than once it is no window (the 422 badge)."""
    from shared.errors import ServiceError

    try:
        return query(req, "window") or "30d"
    except ServiceError:
        return "(repeated)"


@bp.route(route="badge/{monitor_id}/{badge}", methods=["GET"], auth_level=ANONYMOUS)
async def badge(req: func.HttpRequest) -> func.HttpResponse:
    from shared.manage.history import WINDOWS
    from shared.storage import Store
    from shared.web import badges

    monitor_id, name = req.route_params["monitor_id"], req.route_params["badge"]
    try:
        window = _badge_window(req)
        if name not in ("status.svg", "uptime.svg"):
            code, svg = badges.not_found_badge()
        elif window not in WINDOWS:  # for either badge: a parameter that is given is checked
            code, svg = 422, badges.badge_svg("window", ", ".join(WINDOWS), badges.BADGE_COLORS["grey"])
        else:
            async with Store.open(_settings()) as store:
                if name == "status.svg":
                    code, svg = await badges.status_badge(store, monitor_id)
                else:
                    code, svg = await badges.uptime_badge(store, monitor_id, window)
    except Exception:
        log.exception("badge failed")
        code, svg = 503, badges.badge_svg("status", "unavailable", badges.BADGE_COLORS["grey"])
    return func.HttpResponse(svg, status_code=code, mimetype="image/svg+xml", charset="utf-8",
                             headers={"Cache-Control": f"public, max-age={int(badges.BADGE_CACHE_SECONDS)}"
                                      if code == 200 else "no-cache", "X-Content-Type-Options": "nosniff"})
