"""Call the app's real functions the way the host does: with azure.functions request objects."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import azure.functions as func


def functions() -> dict[str, Any]:
    """name → user function, discovered from function_app.app (import after settings are in place)."""
    import function_app
    from devhost import discover

    return {fn.name: fn.handler for fn in discover(function_app.app)}


def request(method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
            route: dict[str, str] | None = None) -> func.HttpRequest:
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    url = f"http://localhost:7071/api/{path}" + (f"?{urlencode(params)}" if params else "")
    return func.HttpRequest(method, url, headers={"content-type": "application/json"}, params=params or {},
                            route_params=route or {}, body=raw)


async def call(name: str, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
               route: dict[str, str] | None = None) -> tuple[int, Any]:
    response: func.HttpResponse = await functions()[name](request(method, path, body, params, route))
    raw = response.get_body()
    return response.status_code, (json.loads(raw) if raw else None)
