"""Every PartitionKey and RowKey format of the app's tables, and nothing else. Writers, readers and retention all
build keys here, so a format changes in one place.

"Inverted ticks" are `DateTime.MaxValue.Ticks − ticks`, 19 digits, so RowKeys sort newest first. Partitions are
bounded by month (by year for rollups); results and rollups are also split into SHARDS shards by monitor id, so a
tick's results go out in a few large transactions while "the latest results of monitor X" stays one range query.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from datetime import UTC, datetime, timedelta

SHARDS = 4
MONITORS_PK = "m"
RULES_PK = "r"
META_PK = "kind"
LEASE_PK = "lease"
OUTBOX_MARK = "|ob|"

_MAX_TICKS = 3155378975999999999  # DateTime.MaxValue.Ticks
_EPOCH_TICKS = 621355968000000000  # ticks at 1970-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ----------------------------------------------------------------------------------------------- time


def ticks(dt: datetime) -> int:
    dt = dt.astimezone(UTC)
    seconds = int(dt.replace(tzinfo=UTC).timestamp())
    return _EPOCH_TICKS + seconds * 10_000_000 + dt.microsecond * 10


def inverted(dt: datetime) -> str:
    """A 19-digit key that sorts newest first."""
    return f"{_MAX_TICKS - ticks(dt):019d}"


def from_inverted(key: str) -> datetime:
    t = _MAX_TICKS - int(key)
    return _EPOCH + timedelta(microseconds=(t - _EPOCH_TICKS) // 10)


def month_key(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y%m")


def months_back(start: datetime, stop: datetime) -> list[str]:
    """Month keys from start's month back to stop's month, inclusive (newest first)."""
    out, y, m = [], start.year, start.month
    while (y, m) >= (stop.year, stop.month):
        out.append(f"{y:04d}{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out


def hour_floor(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def shard(monitor_id: str) -> int:
    return zlib.crc32(monitor_id.encode()) % SHARDS


# ------------------------------------------------------------------------------------------- monitors


def unique_row(kind: str, value: str) -> str:
    """The RowKey of a uniqueness guard (monitors partition): one per kind and unique value."""
    return f"~u~{kind}~{hashlib.sha256(value.encode()).hexdigest()}"


# ----------------------------------------------------------------------------------------- state, outbox


def outbox_row(owner_id: str, event_id: str) -> str:
    return f"{owner_id}{OUTBOX_MARK}{event_id}"


def is_outbox_row(row_key: str) -> bool:
    return OUTBOX_MARK in row_key


def outbox_owner(row_key: str) -> str:
    """The monitor (or rule) id an outbox row belongs to."""
    return row_key.split(OUTBOX_MARK)[0]


def owned_range(owner_id: str) -> tuple[str, str]:
    """RowKey bounds (lo inclusive, hi exclusive) of a state row and its outbox rows."""
    return owner_id, owner_id + "}"


# ------------------------------------------------------------------------------------ results, rollups


def results_pk(monitor_id: str, at: datetime) -> str:
    return f"{shard(monitor_id)}-{month_key(at)}"


def result_row(monitor_id: str, at: datetime) -> str:
    return f"{monitor_id}_{inverted(at)}"


def result_bounds(monitor_id: str, before: datetime | None, since: datetime | None) -> tuple[str, str]:
    """Exclusive RowKey bounds of a monitor's results with since <= time < before (open ends when None); the fold
    rows of since's hour are inside (they hold checks after `since` too): the caller filters by time."""
    lo = result_row(monitor_id, before) if before else f"{monitor_id}_"
    hi = f"{monitor_id}_{inverted(hour_floor(since))}~~" if since else f"{monitor_id}`"
    return lo, hi


def results_partitions(monitor_id: str, top: datetime, floor: datetime) -> list[str]:
    """The result partitions of one monitor from top's month back to floor's, newest first."""
    return [f"{shard(monitor_id)}-{month}" for month in months_back(top, floor)]


def all_results_partitions(months: list[str]) -> list[str]:
    return [f"{s}-{m}" for s in range(SHARDS) for m in months]


def rollup_pk(monitor_id: str, year: int) -> str:
    return f"{shard(monitor_id)}-{year:04d}"


def rollup_row(monitor_id: str, hour: datetime) -> str:
    return f"{monitor_id}_{inverted(hour)}"


def rollup_bounds(monitor_id: str, since: datetime) -> tuple[str, str]:
    """(lo exclusive, hi inclusive) RowKeys of a monitor's rollups from the hour of `since` on."""
    return f"{monitor_id}_", rollup_row(monitor_id, hour_floor(since))


def all_rollup_partitions(years: range) -> list[str]:
    return [f"{s}-{y:04d}" for s in range(SHARDS) for y in years]


# ------------------------------------------------------------------------------------ events, deliveries


def events_pk(at: datetime) -> str:
    return month_key(at)


def event_row(at: datetime, event_id: str) -> str:
    return f"{inverted(at)}_{event_id}"


def delivery_row(key: str) -> str:
    """RowKeys may not hold / \\ # ? or control characters; such keys (an odd address) are encoded."""
    if any(c in key for c in "/\\#?") or any(ord(c) < 32 for c in key):
        return "b64:" + base64.urlsafe_b64encode(key.encode()).decode()
    return key


# --------------------------------------------------------------------------------------- ticks, windows


def ticks_pk(kind: str, at: datetime) -> str:
    return f"{kind}-{month_key(at)}"


def ticks_partitions(kinds: list[str], months: list[str]) -> list[str]:
    return [f"{k}-{m}" for k in kinds for m in months]


def downtime_row(started_at: datetime) -> str:
    return inverted(started_at)


def snapshot_pk(at: datetime) -> str:
    return month_key(at)


def snapshot_column(metric: str) -> str:
    """The snapshots-table column of a snapshot metric (property names are identifiers: no dots)."""
    return "m_" + metric.replace(".", "_")


# ------------------------------------------------------------------------------ alerting definitions, bookkeeping

CHANNELS_PK = "c"  # channels table: definitions by id; "~n~{name}" guards a name's uniqueness
WINDOWS_PK = "w"  # windows table: maintenance window definitions by id


def name_row(name: str) -> str:
    """The RowKey of a definition name's uniqueness guard (channels are referred to by name)."""
    return f"~n~{name}"


def alerting_row(key: str) -> str:
    """A RowKey of the `alerting` table built from a free-form key (a cause, a channel and recipient): hashed,
    so any text fits the RowKey rules and length."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


# ------------------------------------------------------------------------------- compact results (packing.py)

BLOCK_SHARDS = 64  # a tick's block entities per hour: one transaction; a monitor's tail reads 1/64 of them
SUMMARY_PREFIX = "h"  # rollups partition "h-{yyyy}": one entity (or a few) per hour with every monitor's rollup


def block_shard(monitor_id: str) -> int:
    return zlib.crc32(monitor_id.encode()) % BLOCK_SHARDS


def block_pk(hour: datetime) -> str:
    return hour.astimezone(UTC).strftime("%Y%m%d%H")


def block_row(shard_no: int, tick: datetime, run: str, flush: int) -> str:
    """A block's RowKey: its shard first (a monitor's blocks are one range), then the tick newest first, the run
    (two runs of one tick never overwrite each other's checks) and the flush within the run."""
    return f"{shard_no:02d}_{inverted(tick)}_{run}_{flush:04d}"


def block_shard_bounds(shard_no: int) -> tuple[str, str]:
    """RowKey bounds (lo inclusive, hi exclusive) of one shard's blocks in an hour partition."""
    return f"{shard_no:02d}_", f"{shard_no:02d}`"


def fold_row(monitor_id: str, hour: datetime, part: int = 0) -> str:
    """A fold row sorts right after the rows of its hour (newest first): `~` follows every digit."""
    return f"{monitor_id}_{inverted(hour)}~{part:02d}"


def summary_pk(hour: datetime) -> str:
    return f"{SUMMARY_PREFIX}-{hour.year:04d}"


def summary_row(hour: datetime, part: int) -> str:
    return f"{inverted(hour)}_{part:03d}"


# ------------------------------------------------------------------------------------------- locations


def located_meta(kind: str, location: str) -> str:
    """The RowKey of one location's own meta row of a kind (its timer's `last_tick_at`: its heartbeat)."""
    return f"{kind}@{location}"


def located_meta_bounds(kind: str) -> tuple[str, str]:
    """RowKey bounds [lo, hi) of every location's meta row of a kind; a row's location is RowKey[len(lo):]."""
    return f"{kind}@", f"{kind}@~"


def series_id(monitor_id: str, location: str) -> str:
    """The id one location's checks of a monitor are stored under (results, blocks, its own state row): 32 hex
    digits like a monitor id, so every table and codec takes it as one."""
    return hashlib.blake2b(f"{monitor_id}@{location}".encode(), digest_size=16).hexdigest()


def series_ids(monitor_id: str, locations: tuple[str, ...]) -> list[str]:
    """Every id a monitor's checks are stored under: its own (one location, or from before there were several)
    and one per location."""
    return [monitor_id, *(series_id(monitor_id, loc) for loc in locations)]
