"""Stored snapshots and alert-rule definitions.

Snapshots: one row per stored snapshot, newest first in month partitions. Each metric is its own column
(`m_{metric}`), so a time series reads only the columns it needs; the explanation (the whole snapshot as JSON) is
zlib-compressed over `bodyz_{n}` binary columns (rows stored before compression: `body_{n}` text columns, still
read). The latest snapshot's key is in `meta` row "_snapshot". Alert rules: definitions only (their evaluation
state is in `state`, partition "alert_rule").
"""

from __future__ import annotations

import contextlib
import zlib
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.storage import keys
from shared.storage.base import Conflict, is_conflict
from shared.storage.limits import check_entity
from shared.storage.meta import MetaTable

SNAPSHOT_META = "_snapshot"  # meta row: the latest stored snapshot's key and time
SNAPSHOT_CHUNK = 16_000  # characters per body_{n} column (snapshots stored before compression): under 64 KiB of UTF-16
SNAPSHOT_ZCHUNK = 60_000  # bytes per bodyz_{n} column: the zlib-compressed UTF-8 explanation


def snapshot_body(entity: dict[str, Any]) -> str:
    """A stored snapshot's explanation JSON (compressed, or as older versions stored it: text columns)."""
    parts = int(entity.get("body_parts") or 0)
    if entity.get("body_encoding") == "zlib":
        try:
            return zlib.decompress(b"".join(bytes(entity.get(f"bodyz_{n}") or b"") for n in range(parts))).decode()
        except zlib.error as error:
            raise ValueError(f"snapshot body: {error}") from None
    return "".join(entity.get(f"body_{n}") or "" for n in range(parts))


class SnapshotsTable(MetaTable):
    async def save_snapshot(self, taken_at: datetime, metrics: dict[str, float | None], body: str,
                            **fields: Any) -> str:
        """Store a snapshot (create: a second one with the same time fails) and point `meta` "_snapshot" at it;
        returns its key (the snapshot id)."""
        key = keys.inverted(taken_at)
        entity: dict[str, Any] = {"PartitionKey": keys.snapshot_pk(taken_at), "RowKey": key, "taken_at": taken_at,
                                  **fields, **{keys.snapshot_column(k): float(v) for k, v in metrics.items()
                                               if v is not None}}
        packed = zlib.compress(body.encode(), 6)  # member lists repeat their keys: a tenth of the UTF-16 text
        chunks = [packed[i:i + SNAPSHOT_ZCHUNK] for i in range(0, len(packed), SNAPSHOT_ZCHUNK)] or [b""]
        entity["body_parts"] = len(chunks)
        entity["body_encoding"] = "zlib"
        entity.update({f"bodyz_{n}": chunk for n, chunk in enumerate(chunks)})
        client = await self.table("snapshots")
        await client.create_entity(check_entity(entity))
        await self.set_kind_meta(SNAPSHOT_META, latest_key=key, latest_at=taken_at)
        return key

    async def get_snapshot(self, key: str) -> dict[str, Any] | None:
        try:
            at = keys.from_inverted(key)
        except ValueError:
            return None
        client = await self.table("snapshots")
        try:
            return dict(await client.get_entity(keys.snapshot_pk(at), key))
        except ResourceNotFoundError:
            return None

    async def latest_snapshot_key(self) -> str | None:
        return (await self.get_kind_meta(SNAPSHOT_META)).get("latest_key") or None

    async def list_snapshots(self, limit: int = 20, before: datetime | None = None, since: datetime | None = None,
                             select: list[str] | None = None) -> list[dict[str, Any]]:
        """Newest first; `before` exclusive, `since` inclusive. Starts at the latest snapshot's month (nothing
        stored yet: no request beyond the meta row) and walks month partitions back to `since` (default: 400
        days before the latest)."""
        meta = await self.get_kind_meta(SNAPSHOT_META)
        latest: datetime | None = meta.get("latest_at")
        if latest is None:
            return []
        top = min(before, latest + timedelta(microseconds=1)) if before else latest + timedelta(microseconds=1)
        floor = since or latest - timedelta(days=400)
        if floor >= top:
            return []
        return await self.walk("snapshots", keys.months_back(top, floor), "RowKey gt @lo and RowKey le @hi",
                               {"lo": keys.inverted(top), "hi": keys.inverted(floor)}, limit=limit, select=select)

    # -- alert rules --------------------------------------------------------------------------------------

    async def list_alert_rules(self) -> list[dict[str, Any]]:
        return await self.query("alertrules", f"PartitionKey eq '{keys.RULES_PK}'")

    async def get_alert_rule(self, rule_id: str) -> dict[str, Any] | None:
        client = await self.table("alertrules")
        try:
            return await client.get_entity(keys.RULES_PK, rule_id)
        except ResourceNotFoundError:
            return None

    async def insert_alert_rule(self, entity: dict[str, Any]) -> None:
        client = await self.table("alertrules")
        await client.create_entity(check_entity({**entity, "PartitionKey": keys.RULES_PK}))

    async def replace_alert_rule(self, entity: dict[str, Any], etag: str) -> None:
        """Raises Conflict when the rule changed since it was read (`etag`)."""
        client = await self.table("alertrules")
        try:
            await client.update_entity(check_entity({**entity, "PartitionKey": keys.RULES_PK}),
                                       mode=UpdateMode.REPLACE, etag=etag,
                                       match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError, HttpResponseError) as error:
            if isinstance(error, ResourceNotFoundError) or is_conflict(error):
                raise Conflict("the rule changed concurrently") from None
            raise

    async def delete_alert_rule(self, rule_id: str, state_kind: str) -> bool:
        """Delete a rule and its evaluation state (not its unpublished outbox rows: those still go out).
        Returns False when there was no such rule."""
        client = await self.table("alertrules")
        try:
            await client.delete_entity(keys.RULES_PK, rule_id)
        except ResourceNotFoundError:
            return False
        state = await self.table("state")
        with contextlib.suppress(ResourceNotFoundError):
            await state.delete_entity(state_kind, rule_id)
        return True
