"""The entity limits of Azure Table Storage, enforced before every write (Azurite does not enforce them).

Sizes follow the documented formula: 4 bytes + 2 × (PartitionKey + RowKey characters) + per property 8 bytes +
2 × name characters + the value (strings UTF-16 + 4, binary + 4, bool 1, numbers and times 8).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

MAX_PROPERTIES = 252
MAX_STRING_BYTES = 64 * 1024  # UTF-16
MAX_ENTITY_BYTES = 1024 * 1024
MAX_BATCH_ENTITIES = 100
MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024  # 4 MiB request, with headroom for the multipart envelope


class EntityTooLarge(ValueError):
    """An entity would break Azure Table Storage limits: `size` against `limit` (bytes, or properties when
    `prop` is None and the message says so), `prop` the property at fault (None: the whole entity)."""

    def __init__(self, message: str, size: int = 0, limit: int = 0, prop: str | None = None) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.prop = prop


def value_size(value: Any) -> int:
    if isinstance(value, str):  # UTF-16: two bytes a character, four outside the BMP (never in ASCII)
        return 2 * len(value) + 4 if value.isascii() else len(value.encode("utf-16-le")) + 4
    if isinstance(value, (bytes, bytearray)):
        return len(value) + 4
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float, datetime)):
        return 8
    return 16


def entity_size(entity: dict[str, Any]) -> int:
    """The entity's size as Table Storage counts it; raises EntityTooLarge past a limit."""
    props = [k for k in entity if k not in ("PartitionKey", "RowKey")]
    if len(props) > MAX_PROPERTIES:
        raise EntityTooLarge(f"{len(props)} properties; Table Storage allows {MAX_PROPERTIES}", len(props),
                             MAX_PROPERTIES)
    size = 4 + 2 * len(str(entity.get("PartitionKey", ""))) + 2 * len(str(entity.get("RowKey", "")))
    for name in props:
        value = entity[name]
        vsize = value_size(value)
        if isinstance(value, (str, bytes, bytearray)) and vsize - 4 > MAX_STRING_BYTES:
            raise EntityTooLarge(f"property {name!r} is {vsize - 4} bytes; a property may hold {MAX_STRING_BYTES}",
                                 vsize - 4, MAX_STRING_BYTES, name)
        size += 8 + 2 * len(name) + vsize
    if size > MAX_ENTITY_BYTES:
        raise EntityTooLarge(f"entity is {size} bytes; Table Storage allows {MAX_ENTITY_BYTES}", size,
                             MAX_ENTITY_BYTES)
    return size


def check_entity(entity: dict[str, Any]) -> dict[str, Any]:
    """Raise EntityTooLarge when the entity breaks a Table Storage limit; returns it unchanged otherwise."""
    entity_size(entity)
    return entity
