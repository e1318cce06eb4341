"""The check types. Adding a kind = one module here (Config, check, evaluate) + one line in KINDS."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from monitors import parts, resource, stock, website
from monitors.base import MonitorBase

KINDS: dict[str, ModuleType] = {
    website.KIND: website,
    stock.KIND: stock,
    parts.KIND: parts,
    resource.KIND: resource,
}


def kind_module(kind: str) -> ModuleType:
    try:
        return KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}") from None


_configs = tuple(module.Config for module in KINDS.values())
MonitorSpec = Annotated[Union[_configs], Field(discriminator="kind")] if len(_configs) > 1 else _configs[0]
SPEC = TypeAdapter(MonitorSpec)


def parse_spec(data: dict[str, Any]) -> MonitorBase:
    """Validate a full monitor definition (raises pydantic.ValidationError with field details)."""
    return SPEC.validate_python(data)


def from_entity(entity: dict[str, Any]) -> MonitorBase:
    """A stored definition back to its Config (stored specs were valid when written)."""
    return kind_module(entity["kind"]).Config.model_validate_json(entity["spec"])


def to_entity_spec(config: MonitorBase) -> str:
    return json.dumps(config.model_dump(mode="json"), separators=(",", ":"))
