"""The OpenAPI operations of maintenance windows (shared/triggers/maintenance.py): the request schema is the model
that validates (shared/windows/model.py), so the document cannot drift from what is accepted."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from shared.windows.model import MaintenanceWindow


class Span(BaseModel):
    start: str = Field(json_schema_extra={"format": "date-time"}, description="UTC, inclusive.")
    end: str = Field(json_schema_extra={"format": "date-time"}, description="UTC, exclusive.")


class MaintenanceWindowView(MaintenanceWindow):
    """A window as stored, and when it is (UTC): `current` is the occurrence running now, `next` the next one to
    start (null: none; a disabled window shows neither)."""

    id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    created_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    updated_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    active_now: bool = False
    current: Span | None = None
    next: Span | None = None


class MaintenanceWindowList(BaseModel):
    items: list[MaintenanceWindowView] = Field(description="By name.")


def models() -> tuple[list[Any], list[Any]]:
    return [MaintenanceWindow], [MaintenanceWindowView, MaintenanceWindowList]


def paths(ref: Any) -> dict[str, Any]:
    from shared.web.openapi import DELETED, _json, _op, _path, _query

    wid = _path("window_id", "The window's id (32 hex digits; anything else is unknown: 404).")
    patch = {"type": "object", "minProperties": 1, "description": "The fields to change (`id` cannot change); "
             "setting `start`/`end`, `cron` or `rrule` on a window that had another kind of schedule drops the "
             "old schedule's fields the patch does not restate."}
    active = _query("active", {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])?$"},
                    "true: only the windows active now; false: only the others (empty: all).")
    return {
        "/api/v1/maintenance": {
            "get": _op("listMaintenanceWindows", "Maintenance windows, by name, with their current and next "
                       "occurrence", {"200": _json(ref("MaintenanceWindowList"))}, 422, params=[active]),
            "post": _op("createMaintenanceWindow", "Create a maintenance window (one-off, cron or RRULE)",
                        {"201": _json(ref("MaintenanceWindowView"), "Created")}, 400, 413, 422,
                        body=ref("MaintenanceWindow"))},
        "/api/v1/maintenance/{window_id}": {
            "parameters": [wid],
            "get": _op("getMaintenanceWindow", "One maintenance window with its current and next occurrence",
                       {"200": _json(ref("MaintenanceWindowView"))}, 404, 409),
            "patch": _op("updateMaintenanceWindow", "Change fields of a maintenance window (409: changed by someone "
                         "else meanwhile)", {"200": _json(ref("MaintenanceWindowView"))}, 400, 404, 409, 413, 422,
                         body=patch),
            "delete": _op("deleteMaintenanceWindow", "Delete a maintenance window", DELETED, 404)},
    }
