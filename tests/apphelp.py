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


async def post_monitor(body: dict[str, Any]) -> tuple[int, Any]:
    return await call("monitors", "POST", "v1/monitors", body)


async def run_now(mid: str) -> dict[str, Any]:
    """POST /monitors/{id}/run, which must answer 200."""
    status, body = await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route={"monitor_id": mid})
    assert status == 200, body
    return body


async def results(mid: str) -> list[dict[str, Any]]:
    """GET /monitors/{id}/results (the first page), which must answer 200."""
    status, page = await call("monitor_results", "GET", f"v1/monitors/{mid}/results", route={"monitor_id": mid})
    assert status == 200, page
    return page["items"]
