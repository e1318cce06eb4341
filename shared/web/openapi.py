"""The OpenAPI 3.1 document, generated from the pydantic models (so it cannot drift from validation)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from monitors import KINDS
from shared import VERSION
from shared.events import Event
from shared.manage.history import WINDOWS


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "404": _json(_ref("Error"), "Unknown id"),
    "422": _json(_ref("Error"), "Invalid input, with field details"),
}
LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
BEFORE = {"name": "before", "in": "query", "description": "Cursor: ISO time, exclusive (use next_before).",
          "schema": {"type": "string", "format": "date-time"}}
MID = {"name": "monitor_id", "in": "path", "required": True, "schema": {"type": "string"}}


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    mapping = {}
    for kind, module in sorted(KINDS.items()):
        name = f"{kind.title().replace('_', '')}Monitor"
        schema = module.Config.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = {**schema, "title": name}
        mapping[kind] = f"#/components/schemas/{name}"
    schemas["MonitorSpec"] = {"oneOf": [{"$ref": ref} for ref in mapping.values()],
                              "discriminator": {"propertyName": "kind", "mapping": mapping}}
    event_schema = Event.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(event_schema.pop("$defs", {}))
    schemas["Event"] = event_schema
    schemas["Error"] = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "details"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object", "properties": {
                "field": {"type": "string"}, "message": {"type": "string"}}}}}}}}
    listing = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object"}},
                                                "next_before": {"type": ["string", "null"]}}}
    key = [{"functionKey": []}]
    paths = {
        "/api/v1/health": {"get": {"summary": "Storage reachability, timers' last/next runs and gaps, version",
                                   "security": [], "responses": {"200": _json({"type": "object"}),
                                                                 "503": _json({"type": "object"})}}},
        "/api/v1/monitors": {
            "get": {"summary": "List monitors with their state", "parameters": [
                {"name": "kind", "in": "query", "schema": {"enum": sorted(KINDS)}}],
                    "responses": {"200": _json(listing)}},
            "post": {"summary": "Create a monitor", "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("MonitorSpec")}}},
                     "responses": {"201": _json(_ref("MonitorSpec")), "409": _json(_ref("Error"), "Duplicate"),
                                   "422": ERRORS["422"]}}},
        "/api/v1/monitors/{monitor_id}": {
            "parameters": [MID],
            "get": {"summary": "One monitor with its state", "responses": {"200": _json(_ref("MonitorSpec")),
                                                                          **ERRORS}},
            "patch": {"summary": "Change fields of a monitor", "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"type": "object"}}}},
                      "responses": {"200": _json(_ref("MonitorSpec")), "409": _json(_ref("Error")), **ERRORS}},
            "delete": {"summary": "Delete a monitor", "responses": {"204": {"description": "Deleted"}, **ERRORS}}},
        "/api/v1/monitors/{monitor_id}/results": {"parameters": [MID], "get": {
            "summary": "Check results, newest first, cursor-paged", "parameters": [LIMIT, BEFORE],
            "responses": {"200": _json(listing), **ERRORS}}},
        "/api/v1/monitors/{monitor_id}/downtimes": {"parameters": [MID], "get": {
            "summary": "Downtime windows, newest first", "parameters": [LIMIT],
            "responses": {"200": _json(listing), **ERRORS}}},
        "/api/v1/monitors/{monitor_id}/uptime": {"parameters": [MID], "get": {
            "summary": "Uptime and latency over a window (from hourly rollups)",
            "parameters": [{"name": "window", "in": "query", "schema": {"enum": list(WINDOWS)}}],
            "responses": {"200": _json({"type": "object"}), **ERRORS}}},
        "/api/v1/monitors/{monitor_id}/run": {"parameters": [MID], "post": {
            "summary": "Check now; returns the result", "responses": {"200": _json({"type": "object"}), **ERRORS}}},
        "/api/v1/kinds/{kind}/{action}": {"parameters": [
            {"name": "kind", "in": "path", "required": True, "schema": {"enum": sorted(KINDS)}},
            {"name": "action", "in": "path", "required": True, "schema": {"enum": ["run", "pause", "resume"]}}],
            "post": {"summary": "Run every monitor of a kind now, or pause/resume its timer",
                     "responses": {"200": _json({"type": "object"}), "404": ERRORS["404"]}}},
        "/api/v1/events": {"get": {"summary": "Events, newest first", "parameters": [
            LIMIT, BEFORE, {"name": "monitor_id", "in": "query", "schema": {"type": "string"}},
            {"name": "type", "in": "query", "schema": _ref("EventType")}],
            "responses": {"200": _json(listing)}}},
        "/api/v1/metrics": {"get": {
            "summary": "Resource monitors' latest metrics and statuses, from stored results (nothing is measured)",
            "responses": {"200": _json({"type": "object", "required": ["metrics", "statuses", "overall",
                                                                       "last_updated", "monitors"], "properties": {
                "metrics": {"type": "object", "additionalProperties": {"type": "number"},
                            "description": '"{monitor}/{metric}" → latest value'},
                "statuses": {"type": "object", "additionalProperties": {"type": "string"},
                             "description": '"{monitor}/{metric}" → OK, WARNING or ALERT; "overall" → `overall`'},
                "overall": {"enum": ["OK", "WARNING", "ERROR", "ALERT", "UNKNOWN"]},
                "last_updated": {"type": ["string", "null"], "format": "date-time"},
                "monitors": {"type": "array", "items": {"type": "object"}}}})}}},
        "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({})}}},
        **_snapshot_paths(schemas),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Azure monitor functions", "version": VERSION},
        "security": key,
        "components": {"schemas": schemas, "securitySchemes": {"functionKey": {
            "type": "apiKey", "in": "header", "name": "x-functions-key"}}},
        "paths": paths,
    }


def _snapshot_paths(schemas: dict[str, Any]) -> dict[str, Any]:
    """Snapshots, alert rules and the public face (shared/blueprints/public.py); adds their schemas."""
    from shared import snapshots
    from shared.rules.model import AlertRule

    rule = AlertRule.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(rule.pop("$defs", {}))
    schemas["AlertRule"] = rule
    metric = {"enum": snapshots.metric_names()}
    bucket = {"type": "object", "required": ["count", "monitors"], "properties": {
        "count": {"type": "integer"}, "monitors": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "kind": {"type": "string"}}}}}}
    items = {"type": "object", "required": ["count", "items"], "properties": {
        "count": {"type": "integer"}, "items": {"type": "array", "items": {"type": "object"}}}}
    schemas["Snapshot"] = {"type": "object", "required": [
        "schema_version", "id", "taken_at", "persisted", "period", "monitors", "by_status", "kinds", "open_downtimes",
        "threshold_breaches", "checker_errors", "stale_kinds", "events", "uptime_24h", "metrics"], "properties": {
        "schema_version": {"type": "integer"}, "id": {"type": ["string", "null"]},
        "taken_at": {"type": "string", "format": "date-time"}, "persisted": {"type": "boolean"},
        "coalesced": {"type": "boolean", "description": "built by a concurrent request this one waited for"},
        "period": {"type": "object"}, "monitors": {"type": "object"},
        "by_status": {"type": "object", "additionalProperties": bucket},
        "kinds": {"type": "object", "additionalProperties": {"type": "object"}},
        "open_downtimes": items, "threshold_breaches": items, "checker_errors": items, "stale_kinds": items,
        "events": {"type": "object"}, "uptime_24h": {"type": "object"},
        "metrics": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        "alert_rules": {"type": "object", "description": "rules evaluated on a stored snapshot"}}}
    rid = {"name": "rule_id", "in": "path", "required": True, "schema": {"type": "string"}}
    flag = {"type": "boolean", "default": False}
    svg = {"description": "SVG badge", "content": {"image/svg+xml": {"schema": {"type": "string"}}}}
    return {
        "/api/v1/status": {"get": {"summary": "Current state: the latest snapshot and live monitor states",
                                   "responses": {"200": _json({"type": "object", "required": [
                                       "time", "overall", "live", "snapshot", "changed_since_snapshot",
                                       "alert_rules"]})}}},
        "/api/v1/snapshot": {
            "parameters": [{"name": "persist", "in": "query", "schema": flag},
                           {"name": "wait", "in": "query", "description": "seconds to wait for a running build "
                            "(its stored snapshot is returned)", "schema": {"type": "number", "minimum": 0,
                                                                            "maximum": 30, "default": 10}}],
            **{method: {"summary": "Build a snapshot now (persist=true: store it and evaluate the alert rules)",
                        "responses": {"200": _json(_ref("Snapshot"), "The snapshot (`persisted`: stored; "
                                                                     "`coalesced`: built by a concurrent build "
                                                                     "this one waited for)"),
                                      "409": _json(_ref("Error"), "Another build held the lease all along"),
                                      "422": ERRORS["422"]}} for method in ("get", "post")}},
        "/api/v1/history": {"get": {"summary": "Stored snapshots, newest first", "parameters": [
            {**LIMIT, "schema": {"type": "integer", "minimum": 1, "maximum": 500}}, BEFORE,
            {"name": "full", "in": "query", "schema": flag, "description": "include each whole snapshot"}],
            "responses": {"200": _json(listing_schema()), "422": ERRORS["422"]}}},
        "/api/v1/timeseries": {"get": {"summary": "Snapshot metrics over time, oldest first", "parameters": [
            {"name": "metric", "in": "query", "required": True, "description": "comma-separated metric names",
             "schema": {"type": "string"}, "examples": {"one": {"value": metric["enum"][0]}}},
            {"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}},
            {"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"}}],
            "responses": {"200": _json({"type": "object", "properties": {"series": {"type": "array", "items": {
                "type": "object", "properties": {"metric": metric, "unit": {"type": "string"}, "points": {
                    "type": "array", "items": {"type": "array", "prefixItems": [
                        {"type": "string", "format": "date-time"}, {"type": ["number", "null"]}]}}}}}}}),
                          "422": ERRORS["422"]}}},
        "/api/v1/bootstrap": {"get": {"summary": "What a UI needs in one call: kinds and their schemas, metrics, "
                                                 "latest snapshot, alert rules, version",
                                      "responses": {"200": _json({"type": "object"})}}},
        "/api/v1/alert-rules": {
            "get": {"summary": "Alert rules with their state", "responses": {"200": _json(listing_schema())}},
            "post": {"summary": "Create an alert rule", "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("AlertRule")}}},
                     "responses": {"201": _json(_ref("AlertRule")), "422": ERRORS["422"]}}},
        "/api/v1/alert-rules/{rule_id}": {
            "parameters": [rid],
            "get": {"summary": "One alert rule", "responses": {"200": _json(_ref("AlertRule")), **ERRORS}},
            "patch": {"summary": "Change fields of an alert rule", "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"type": "object"}}}},
                      "responses": {"200": _json(_ref("AlertRule")), "409": _json(_ref("Error")), **ERRORS}},
            "delete": {"summary": "Delete an alert rule", "responses": {"204": {"description": "Deleted"},
                                                                        **ERRORS}}},
        "/api/v1/metrics/prometheus": {"get": {"summary": "Every monitor in the Prometheus text format 0.0.4",
                                               "responses": {"200": {"description": "OK", "content": {
                                                   "text/plain": {"schema": {"type": "string"}}}}}}},
        "/api/status-page": {"get": {"summary": "Public status page (HTML, no script)", "security": [],
                                     "responses": {"200": {"description": "OK", "content": {
                                         "text/html": {"schema": {"type": "string"}}}}}}},
        "/api/badge/{monitor_id}/{badge}": {"get": {
            "summary": "Status or uptime badge of a public monitor", "security": [], "parameters": [
                MID, {"name": "badge", "in": "path", "required": True,
                      "schema": {"enum": ["status.svg", "uptime.svg"]}},
                {"name": "window", "in": "query", "schema": {"enum": list(WINDOWS), "default": "30d"}}],
            "responses": {"200": svg, "404": {**svg, "description": "Unknown or not public"},
                          "422": {**svg, "description": "Unknown window"}}}},
    }


def listing_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object"}},
                                             "next_before": {"type": ["string", "null"]}}}
