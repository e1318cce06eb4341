"""The errors every front end renders: services raise these, the HTTP API maps them to status codes with field
details, the CLI to a message and an exit code."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class Invalid(ServiceError):
    status = 422
    code = "validation_error"


class Duplicate(ServiceError):
    status = 409
    code = "conflict"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class TooLarge(ServiceError):
    status = 413
    code = "too_large"


class StorageError(RuntimeError):
    """Our own storage failed; the checker is broken (state ERROR, operator notified)."""


def field_error(field: str, message: str) -> list[dict[str, Any]]:
    return [{"field": field, "message": message}]


def validation_details(error: ValidationError, drop_first: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """pydantic's errors as {field, message, type}; `drop_first`: union tags (kind names) to leave out of the
    location."""
    out = []
    for item in error.errors(include_url=False):
        loc = [str(p) for p in item.get("loc", ())]
        if loc and loc[0] in drop_first:
            kind, loc = loc[0], loc[1:]
        else:
            kind = None
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if item.get("type") == "extra_forbidden":
            message = f"not a field of {kind} monitors" if kind else "not a known field"
        out.append({"field": ".".join(loc) or "(body)", "message": message, "type": item.get("type")})
    return out
