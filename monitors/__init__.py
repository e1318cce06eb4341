"""The check types. Adding a kind = one module `monitors/<name>.py` with a `Kind` subclass instance named PLUGIN
(monitors/contract.py) + one line in REGISTRY.

The registry is read lazily: the kinds' names are known without importing them (the timers need only the names
when the Functions host indexes the app); a kind's module is imported the first time its plugin is asked for.
"""

from __future__ import annotations

import importlib
import json
import operator
from collections.abc import Iterator, Mapping
from functools import lru_cache, reduce
from typing import TYPE_CHECKING, Annotated, Any

from monitors.contract import COMMON, Kind, StatusInfo

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from monitors.base import MonitorBase

REGISTRY = (
    "website",
    "stock",
    "parts",
    "resource",
)


class Registry(Mapping[str, Kind[Any]]):
    """name → plugin, importing `monitors.<name>` on first use."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names
        self._loaded: dict[str, Kind[Any]] = {}

    def __getitem__(self, name: str) -> Kind[Any]:
        plugin = self._loaded.get(name)
        if plugin is None:
            if name not in self._names:
                raise KeyError(name)
            plugin = importlib.import_module(f"monitors.{name}").PLUGIN
            if plugin.name != name:
                raise RuntimeError(f"monitors/{name}.py registers a kind named {plugin.name!r}")
            self._loaded[name] = plugin
        return plugin

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names


KINDS = Registry(REGISTRY)


def kind_of(name: str) -> Kind[Any]:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown kind {name!r}; known: {', '.join(sorted(KINDS))}") from None


@lru_cache(maxsize=1)
def _spec() -> TypeAdapter[Any]:
    from pydantic import Field, TypeAdapter

    configs = [plugin.model for plugin in KINDS.values()]
    union: Any = Annotated[reduce(operator.or_, configs), Field(discriminator="kind")] if len(configs) > 1 \
        else configs[0]
    return TypeAdapter(union)


def parse_spec(data: dict[str, Any]) -> MonitorBase:
    """Validate a full monitor definition (raises pydantic.ValidationError with field details)."""
    return _registered(_spec().validate_python(data))


def from_entity(entity: dict[str, Any]) -> MonitorBase:
    """A stored definition back to its Config (stored specs were valid when written)."""
    return _registered(kind_of(entity["kind"]).model.from_stored(entity["spec"]))


def _registered(cfg: MonitorBase) -> MonitorBase:
    """Its secrets made known to shared.secrets, so nothing the monitor produces can show them."""
    from shared.secrets import register

    register(*kind_of(cfg.kind).secrets(cfg))
    return cfg


def to_entity_spec(config: MonitorBase) -> str:
    return json.dumps(config.model_dump(mode="json"), separators=(",", ":"))


@lru_cache(maxsize=1)
def statuses() -> dict[str, StatusInfo]:
    """Every status any kind declares (the worst reading where two kinds share a name)."""
    out = dict(COMMON)
    for plugin in KINDS.values():
        for status, info in plugin.statuses.info.items():
            if status not in out or info.severity > out[status].severity:
                out[status] = info
    return out


def status_info(status: str) -> StatusInfo:
    return statuses().get(status) or StatusInfo(status.title(), "warn", 50)


def status_rank(status: str) -> tuple[int, str]:
    """Sort key: worst first, then by name."""
    return -status_info(status).severity, status
