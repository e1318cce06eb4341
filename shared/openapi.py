"""The OpenAPI 3.1 document, generated from the pydantic models (so it cannot drift from validation)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from monitors import KINDS
from shared.events import Event
from shared.service import VERSION, WINDOWS


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
        "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({})}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Azure monitor functions", "version": VERSION},
        "security": key,
        "components": {"schemas": schemas, "securitySchemes": {"functionKey": {
            "type": "apiKey", "in": "header", "name": "x-functions-key"}}},
        "paths": paths,
    }
