"""HTTP of acknowledgements (thin adapters over shared/notify/ack.py).

- /api/v1/monitors/{monitor_id}/ack (function key): GET the acknowledgement of the current problem, POST to
  acknowledge it (body optional: {"note", "by"}), DELETE to take it back.
- /api/ack?t=<token> (anonymous: the one-click link in messages): GET shows the problem and an "Acknowledge"
  button and changes nothing (mail scanners and link previews open links); the button POSTs the token (form field
  `t`) and acknowledges. HTML, never cached, no referrer (the token is in the URL).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import azure.functions as func

from shared.triggers.http import ANONYMOUS, KEY, body_of, handle, respond

if TYPE_CHECKING:
    from shared.storage import Store

log = logging.getLogger("monitor.api")
bp = func.Blueprint()
LINK_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "X-Robots-Tag": "noindex", "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"}


@bp.route(route="v1/monitors/{monitor_id}/ack", methods=["GET", "POST", "DELETE"], auth_level=KEY)
async def monitor_ack(req: func.HttpRequest) -> func.HttpResponse:
    from shared.notify import ack

    monitor_id = req.route_params["monitor_id"]

    async def work(store: Store) -> func.HttpResponse:
        if req.method == "POST":
            return respond(await ack.acknowledge(store, monitor_id, body_of(req) if req.get_body() else None))
        if req.method == "DELETE":
            await ack.unacknowledge(store, monitor_id)
            return func.HttpResponse(status_code=204)
        return respond(await ack.get_ack(store, monitor_id))

    return await handle(work)


def _token(req: func.HttpRequest) -> str | None:
    """The token: the form field `t` of a POST (what the page's button sends), the query's `t` of a GET."""
    from urllib.parse import parse_qs

    if req.method != "POST":
        return req.params.get("t")
    try:
        fields = parse_qs(req.get_body().decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return None
    return fields["t"][0] if fields.get("t") else None


@bp.route(route="ack", methods=["GET", "POST"], auth_level=ANONYMOUS)
async def ack_link(req: func.HttpRequest) -> func.HttpResponse:
    from shared.notify.ack import link_page
    from shared.settings import get_settings
    from shared.storage import Store

    try:
        settings = get_settings()
        async with Store.open(settings) as store:
            status, html = await link_page(store, settings, _token(req), act=req.method == "POST")
    except Exception:
        log.exception("acknowledgement link failed")  # never the token: it is not in the exception's text
        status, html = 503, ("<!DOCTYPE html><title>Acknowledge</title><p>This page is temporarily unavailable. "
                             "Please try again in a minute.</p>")
    return func.HttpResponse(html, status_code=status, mimetype="text/html", charset="utf-8", headers=LINK_HEADERS)
