"""What every HTTP trigger shares: JSON responses, the error body, reading the request, and `handle` — open
storage for the request, map service errors to HTTP, never leak internals.

Errors are always `{"error": {"code", "message", "details"}}`. Kept light: this is imported when the host indexes
the app, so the services and the Azure SDKs are imported on the first request, not at start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import azure.functions as func

if TYPE_CHECKING:
    from shared.storage import Store

log = logging.getLogger("monitor.api")
KEY = func.AuthLevel.FUNCTION
ANONYMOUS = func.AuthLevel.ANONYMOUS


def respond(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


def error(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> func.HttpResponse:
    return respond({"error": {"code": code, "message": message, "details": details or []}}, status)


def body_of(req: func.HttpRequest) -> Any:
    from shared.errors import Invalid, ServiceError, field_error

    raw = req.get_body()
    if not raw:
        raise Invalid("a JSON body is required", field_error("(body)", "empty"))
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServiceError("the body is not valid JSON", field_error("(body)", str(exc))) from None
    except RecursionError:
        raise ServiceError("the body is nested too deeply", field_error("(body)", "nested too deeply")) from None


def query(req: func.HttpRequest, name: str) -> str | None:
    """A query parameter, given at most once (`?limit=1&limit=2` is a 422 naming it, not whichever one the host
    kept); None when absent."""
    from urllib.parse import parse_qsl, urlsplit

    from shared.errors import Invalid, field_error

    given = sum(1 for key, _ in parse_qsl(urlsplit(req.url).query, keep_blank_values=True) if key == name)
    if given > 1:
        raise Invalid(f"{name} is given {given} times", field_error(name, "give it at most once"))
    return req.params.get(name)


def paging(req: func.HttpRequest, default: int = 50, maximum: int = 1000) -> tuple[int, Any]:
    """`?limit=&before=` of a cursor-paged listing, validated (422 with the field named)."""
    from shared.manage.history import parse_limit, parse_time

    return (parse_limit(query(req, "limit"), default=default, maximum=maximum),
            parse_time(query(req, "before"), "before"))


async def handle(work: Callable[[Store], Awaitable[func.HttpResponse]]) -> func.HttpResponse:
    """Open storage for the request, map service errors to HTTP, never leak internals."""
    from shared.errors import ServiceError
    from shared.settings import get_settings
    from shared.storage import Store

    try:
        settings = get_settings()
        async with Store.open(settings) as store:
            return await work(store)
    except ServiceError as exc:
        return error(exc.status, exc.code, exc.message, exc.details)
    except Exception:
        log.exception("request failed")
        return error(500, "internal_error", "the request failed; see the function logs")
