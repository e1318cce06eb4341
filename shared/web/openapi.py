"""The OpenAPI 3.1 document of the HTTP API (both blueprints: shared/triggers/api.py and web.py), generated from
the pydantic models — the kinds' Configs, the alert rule and the response models of shared/web/schemas*.py — so it
cannot drift from what is validated and answered (tests/test_openapi.py checks real answers against it).

Built on the first call of `document()`: importing this module imports neither pydantic models nor the kinds.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

REF = "#/components/schemas/{model}"
JSON = "application/json"
FLAG_PATTERN = "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|1|0)?$"
ERRORS = {
    400: "The body is not valid JSON",
    404: "Unknown id (or route parameter)",
    409: "Conflict: a unique field is taken, the definition was changed concurrently, or the stored definition is "
         "unreadable (it can only be read and deleted)",
    413: "The definition is too large to store (Azure Table Storage's limits; the message has its size and the "
         "limit); nothing was written",
    422: "Invalid input; `details` names each field",
    500: "The request failed unexpectedly (the function logs have the cause)",
}
UNAUTHORIZED = {"description": "No or a wrong function key (answered by the Functions host: in Azure without a "
                "body; the local host sends the JSON error body)"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _op(op_id: str, summary: str, ok: dict[str, Any], *errors: int, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, public: bool = False) -> dict[str, Any]:
    """An operation: its success responses, its error responses (the Error body) and, unless public, the 401 of
    the host."""
    responses = {**ok, **{str(code): _json(_ref("Error"), ERRORS[code]) for code in sorted({*errors, 500})}}
    if not public:
        responses["401"] = UNAUTHORIZED
    out: dict[str, Any] = {"operationId": op_id, "summary": summary}
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    if public:
        out["security"] = []
    out["responses"] = dict(sorted(responses.items()))
    return out


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    """A query parameter (given at most once: twice is a 422). An optional one may be empty (`?kind=`), which
    means the same as leaving it out."""
    out = {"name": name, "in": "query", "required": required, "description": description, "schema": schema}
    return out if required else {**out, "allowEmptyValue": True}


def _limit(default: int, maximum: int) -> dict[str, Any]:
    return _query("limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
                  f"Items per page (1–{maximum}; empty: {default}).")


def _flag(name: str, description: str) -> dict[str, Any]:
    return _query(name, {"type": "string", "pattern": FLAG_PATTERN, "default": "false", "examples": ["true", "false"]},
                  f"{description} true/false (also yes/no, 1/0, any case; empty: false).")


MID = _path("monitor_id", "The monitor's id (32 hex digits; anything else is unknown: 404).")
RID = _path("rule_id", "The rule's id (32 hex digits; anything else is unknown: 404).")
TIME = {"type": "string", "format": "date-time", "pattern": "^2[0-9]{3}-"}  # shared/manage/history.py parse_time
ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
BEFORE = _query("before", TIME, "Cursor: an RFC 3339 time in the years 2000–2999, exclusive (the previous page's "
                "`next_before`).")
DELETED = {"204": {"description": "Deleted"}}


def _components() -> tuple[dict[str, Any], dict[str, str]]:
    """Every model's JSON Schema as components ($defs hoisted, names de-duplicated by pydantic); the names of the
    top-level models, by model name."""
    from pydantic.json_schema import models_json_schema

    from shared.rules.model import AlertRule
    from shared.web import schemas, schemas_snapshots

    kinds = schemas.monitor_models()
    requests = [*kinds.requests.values(), kinds.spec, AlertRule]
    responses = [kinds.view, kinds.listing, schemas.Error, schemas.Health, schemas.HealthDegraded,
                 schemas.ResultsPage, schemas.DowntimesPage, schemas.Uptime, schemas.EventsPage, schemas.RunResult,
                 schemas.KindRun, schemas.Paused, schemas.readings_model(), schemas_snapshots.Snapshot,
                 schemas_snapshots.Status, schemas_snapshots.History, schemas_snapshots.TimeSeries,
                 schemas_snapshots.Bootstrap, schemas_snapshots.AlertRuleView, schemas_snapshots.AlertRuleList]
    for module in _extensions():
        more_requests, more_responses = module.models()
        requests += more_requests
        responses += more_responses
    pairs: list[Any] = [(m, "validation") for m in requests] + [(m, "serialization") for m in responses]
    keys, top = models_json_schema(pairs, ref_template=REF)
    names = {model.__name__: ref["$ref"].rsplit("/", 1)[1] for (model, _), ref in keys.items()}
    components = top.get("$defs", {})
    _tidy(components)
    for kind, model in kinds.requests.items():  # request bodies: `kind` names the schema, `id` is the server's
        schema = components[names[model.__name__]]
        schema["required"] = ["kind", *(f for f in schema.get("required", []) if f != "kind")]
        schema["properties"]["id"]["readOnly"] = True
        patch = _partial(schema)
        components[f"{schemas.title(kind)}MonitorPatch"] = {**patch, "title": f"{schemas.title(kind)}MonitorPatch",
                                                            "description": f"Fields of a {kind} monitor to change."}
    components["MonitorPatch"] = {"title": "MonitorPatch", "description": "The fields to change; the others keep "
                                  "their values (`kind` and `id` cannot change).",
                                  "anyOf": [_ref(f"{schemas.title(k)}MonitorPatch") for k in sorted(kinds.requests)]}
    rule = components[names["AlertRule"]]
    rule["properties"]["id"]["readOnly"] = True
    components["AlertRulePatch"] = {**_partial(rule), "title": "AlertRulePatch",
                                    "description": "The fields of the rule to change."}
    return dict(sorted(components.items())), names


def _partial(schema: dict[str, Any]) -> dict[str, Any]:
    """A PATCH body: the same fields, none required, no defaults (what is not given keeps its value)."""
    out = {k: v for k, v in copy.deepcopy(schema).items() if k != "required"}
    for prop in out.get("properties", {}).values():
        prop.pop("default", None)
    return out


def _tidy(node: Any) -> None:
    """Drop `"default": null` where null is not a valid value (pydantic writes it for fields that may be absent)."""
    if isinstance(node, dict):
        if "default" in node and node["default"] is None and not _allows_null(node):
            del node["default"]
        for value in node.values():
            _tidy(value)
    elif isinstance(node, list):
        for value in node:
            _tidy(value)


def _allows_null(schema: dict[str, Any]) -> bool:
    types = schema.get("type")
    return types == "null" or (isinstance(types, list) and "null" in types) or any(
        _allows_null(s) for s in schema.get("anyOf", []) + schema.get("oneOf", []))


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    from shared import VERSION

    components, names = _components()

    def ref(model: str) -> dict[str, str]:
        return _ref(names.get(model, model))

    return {
        "openapi": "3.1.0",
        "info": {"title": "Azure monitor functions", "version": VERSION,
                 "description": "Monitors (websites, stock, parts lists, resources), their results, events and "
                                "snapshots. Every error is `{\"error\": {code, message, details}}`."},
        "security": [{"functionKey": []}, {"functionKeyQuery": []}],
        "components": {"schemas": components, "securitySchemes": {
            "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                            "description": "A function (or host) key of the Function App."},
            "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code",
                                 "description": "The same key as the `code` query parameter."}}},
        "paths": {**_api_paths(ref), **_web_paths(ref),
                  **{path: item for module in _extensions() for path, item in module.paths(ref).items()}},
    }


# Modules that document their own operations: each has `models() -> (request models, response models)` and
# `paths(ref) -> {path: path item}` (built with this module's _op, _json, _path, _query helpers).
EXTENSIONS = ("shared.web.openapi_channels", "shared.web.openapi_maintenance", "shared.web.openapi_ack")


def _extensions() -> list[Any]:
    import importlib

    return [importlib.import_module(name) for name in EXTENSIONS]


def _api_paths(ref: Any) -> dict[str, Any]:
    """shared/triggers/api.py."""
    from monitors import KINDS
    from shared.events import EventType
    from shared.manage.history import WINDOWS

    kinds = {"type": "string", "enum": sorted(KINDS)}
    return {
        "/api/v1/health": {"get": _op(
            "health", "Storage reachability, every kind's timer (last and next run, gaps), version",
            {"200": _json(ref("Health")), "503": _json(ref("HealthDegraded"), "Storage is unreachable")},
            public=True)},
        "/api/v1/monitors": {
            "get": _op("listMonitors", "Monitors with their state, by name", {"200": _json(ref("MonitorList"))}, 422,
                       params=[_query("kind", kinds, "Only monitors of this kind (empty: all).")]),
            "post": _op("createMonitor", "Create a monitor", {"201": _json(ref("MonitorView"), "Created")},
                        400, 409, 413, 422, body=ref("MonitorSpec"))},
        "/api/v1/monitors/{monitor_id}": {
            "parameters": [MID],
            "get": _op("getMonitor", "One monitor with its state (a stored definition that no longer parses: "
                       "UnreadableMonitor, as the list shows it)", {"200": _json(
                           {"anyOf": [ref("MonitorView"), ref("UnreadableMonitor")]})}, 404),
            "patch": _op("updateMonitor", "Change fields of a monitor (a secret shown as \"***\" and sent back as "
                         "\"***\" keeps its value)", {"200": _json(ref("MonitorView"))},
                         400, 404, 409, 413, 422, body=ref("MonitorPatch")),
            "delete": _op("deleteMonitor", "Delete a monitor (an unreadable one too)", DELETED, 404)},
        "/api/v1/monitors/{monitor_id}/results": {"parameters": [MID], "get": _op(
            "listResults", "Check results, newest first, cursor-paged", {"200": _json(ref("ResultsPage"))}, 404, 422,
            params=[_limit(50, 1000), BEFORE])},
        "/api/v1/monitors/{monitor_id}/downtimes": {"parameters": [MID], "get": _op(
            "listDowntimes", "Downtime windows, newest first", {"200": _json(ref("DowntimesPage"))}, 404, 422,
            params=[_limit(100, 1000)])},
        "/api/v1/monitors/{monitor_id}/uptime": {"parameters": [MID], "get": _op(
            "getUptime", "Uptime and latency over a window (hourly rollups and the results since)",
            {"200": _json(ref("Uptime"))}, 404, 422,
            params=[_query("window", {"type": "string", "enum": list(WINDOWS), "default": "24h"},
                           "How far back (empty: 24h).")])},
        "/api/v1/monitors/{monitor_id}/run": {"parameters": [MID], "post": _op(
            "runMonitor", "Check the monitor now (enabled or not) and store the result",
            {"200": _json(ref("RunResult"))}, 404, 409)},
        "/api/v1/kinds/{kind}/{action}": {"parameters": [
            {**_path("kind", "A monitor kind (any other: 404)."), "schema": kinds},
            {**_path("action", "run: check every due monitor of the kind now; pause/resume its timer (any other: "
                     "404)."), "schema": {"type": "string", "enum": ["run", "pause", "resume"]}}],
            "post": _op("kindAction", "Run every monitor of a kind now, or pause/resume its timer",
                        {"200": _json({"oneOf": [ref("KindRun"), ref("Paused")]}, "run: the run; pause/resume: "
                                      "the timer's state")}, 404)},
        "/api/v1/events": {"get": _op(
            "listEvents", "Events with their delivery status, newest first, cursor-paged",
            {"200": _json(ref("EventsPage"))}, 422, params=[
                _limit(50, 1000), BEFORE, _query("monitor_id", ID, "Only this monitor's (or alert rule's) events."),
                _query("type", {"type": "string", "enum": [t.value for t in EventType]},
                       "Only events of this type (any other: 422).")])},
        "/api/v1/metrics": {"get": _op(
            "getReadings", "Metric readings of the monitors that have them (resources), from their stored results "
            "(nothing is measured)", {"200": _json(ref("Readings"))})},
        "/api/v1/openapi.json": {"get": _op("openapi", "This document", {"200": _json(
            {"type": "object", "required": ["openapi", "info", "paths"], "description": "An OpenAPI 3.1 document"})})},
    }


def _web_paths(ref: Any) -> dict[str, Any]:
    """shared/triggers/web.py."""
    from shared.manage.history import WINDOWS
    from shared.snapshots import metric_names

    svg = {"content": {"image/svg+xml": {"schema": {"type": "string"}}}}
    html = {"content": {"text/html": {"schema": {"type": "string"}}}}
    busy = {**_json(ref("Error"), "Another build held the lease for the whole wait (code snapshot_in_progress)"),
            "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}}}
    snapshot: dict[str, Any] = {"summary": "Build a snapshot now (persist=true: store it and evaluate the alert rules)",
                "ok": {"200": _json(ref("Snapshot"), "The snapshot (`persisted`: stored; `coalesced`: stored by a "
                                                     "concurrent build this one waited for)"), "409": busy},
                "params": [_flag("persist", "Store the snapshot and evaluate the alert rules:"), _query(
                    "wait", {"type": "number", "minimum": 0, "maximum": 30, "default": 10},
                    "Seconds to wait for a build already running (its stored snapshot is the answer; empty: 10).")]}
    metric = _query("metric", {"type": "string", "minLength": 1, "examples": [metric_names()[0]]},
                    f"Comma-separated snapshot metric names (1–20), of: {', '.join(metric_names())}.", required=True)
    return {
        "/api/v1/status": {"get": _op("getStatus", "Current state: live monitor states and the latest snapshot",
                                      {"200": _json(ref("Status"))})},
        "/api/v1/snapshot": {
            method: _op(f"{method}Snapshot", snapshot["summary"], snapshot["ok"], 422, params=snapshot["params"])
            for method in ("get", "post")},
        "/api/v1/history": {"get": _op(
            "listSnapshots", "Stored snapshots, newest first, cursor-paged", {"200": _json(ref("History"))}, 422,
            params=[_limit(20, 500), BEFORE, _flag("full", "Include each whole snapshot:")])},
        "/api/v1/timeseries": {"get": _op(
            "getTimeSeries", "Snapshot metrics over time, oldest first", {"200": _json(ref("TimeSeries"))}, 422,
            params=[metric, _query("from", TIME, "Start, inclusive (empty: 24 h before `to`; at most 400 days "
                                   "before it; years 2000–2999)."),
                    _query("to", TIME, "End, inclusive (empty: now; years 2000–2999).")])},
        "/api/v1/bootstrap": {"get": _op(
            "bootstrap", "What a UI needs in one call: kinds and their schemas, metrics, latest snapshot, alert "
            "rules, version", {"200": _json(ref("Bootstrap"))})},
        "/api/v1/alert-rules": {
            "get": _op("listAlertRules", "Alert rules with their state", {"200": _json(ref("AlertRuleList"))}),
            "post": _op("createAlertRule", "Create an alert rule", {"201": _json(ref("AlertRuleView"), "Created")},
                        400, 413, 422, body=ref("AlertRule"))},
        "/api/v1/alert-rules/{rule_id}": {
            "parameters": [RID],
            "get": _op("getAlertRule", "One alert rule with its state", {"200": _json(ref("AlertRuleView"))}, 404),
            "patch": _op("updateAlertRule", "Change fields of an alert rule", {"200": _json(ref("AlertRuleView"))},
                         400, 404, 409, 413, 422, body=ref("AlertRulePatch")),
            "delete": _op("deleteAlertRule", "Delete an alert rule", DELETED, 404)},
        "/api/v1/metrics/prometheus": {"get": _op(
            "prometheus", "Every monitor in the Prometheus text format 0.0.4",
            {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}})},
        "/api/status-page": {"get": {
            "operationId": "statusPage", "summary": "Public status page (HTML, no script)", "security": [],
            "responses": {"200": {"description": "The page", **html},
                          "503": {"description": "The page is temporarily unavailable", **html}}}},
        "/api/badge/{monitor_id}/{badge}": {"get": {
            "operationId": "badge", "summary": "Status or uptime badge of a public monitor", "security": [],
            "parameters": [
                MID, {**_path("badge", "Which badge (any other name: the 404 badge)."),
                      "schema": {"type": "string", "enum": ["status.svg", "uptime.svg"]}},
                _query("window", {"type": "string", "enum": list(WINDOWS), "default": "30d"},
                       "uptime.svg: how far back (empty: 30d).")],
            "responses": {"200": {"description": "The badge", **svg},
                          "404": {"description": "Unknown or not public monitor, or unknown badge", **svg},
                          "422": {"description": "Unknown window", **svg},
                          "503": {"description": "Storage is unavailable", **svg}}}},
    }
