"""What every monitor has, whatever its kind: identity, schedule, alert policy and audience."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

Outcome = Literal["up", "degraded", "down", "error"]


class MonitorBase(BaseModel):
    """Fields common to all kinds. A kind's Config subclasses this and adds `kind: Literal[...]` and its own."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str | None = Field(None, description="Assigned by the server.", pattern=r"^[0-9a-f]{32}$")
    name: str = Field(..., min_length=1, max_length=200)
    enabled: bool = True
    interval_seconds: int | None = Field(None, ge=60, le=3600,
                                         description="Check every N seconds (60–3600; default 300 unless cron).")
    cron: str | None = Field(None, description="A 5-field cron expression (UTC) instead of interval_seconds.")
    recipients: list[EmailStr] = Field(default_factory=list, max_length=50,
                                       description="Who is e-mailed; empty = DEFAULT_EMAIL_RECIPIENTS.")
    failure_threshold: int = Field(3, ge=1, le=100, description="Consecutive failures before DOWN.")
    success_threshold: int = Field(1, ge=1, le=100, description="Consecutive successes before UP again.")
    renotify_minutes: int | None = Field(None, ge=5, le=10080,
                                         description="Remind every N minutes while DOWN (off when empty).")
    breaker_failures: int = Field(5, ge=1, le=1000,
                                  description="Circuit breaker: after this many consecutive failures…")
    breaker_interval_seconds: int = Field(300, ge=60, le=86400,
                                          description="…check at most this often until a success.")
    public: bool = Field(True, description="Shown on the public status page and its badges (false: hidden).")
    hide_url: bool = Field(False, description="On the public status page, show the monitor but not its URL.")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError("must be a valid 5-field cron expression, e.g. '*/5 * * * *'")
        return value

    @model_validator(mode="after")
    def _schedule(self) -> "MonitorBase":
        if self.cron and self.interval_seconds:
            raise ValueError("give interval_seconds or cron, not both")
        if not self.cron and not self.interval_seconds:
            self.interval_seconds = 300
        return self

    def unique_keys(self) -> list[str]:
        """Values that must be unique among monitors of this kind (e.g. a website's URL)."""
        return []


@dataclass(slots=True)
class CheckResult:
    """What one check observed. `data` holds the kind's own scalar fields (stored as table properties)."""

    outcome: Outcome
    latency_ms: float | None = None
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Evaluation:
    """What evaluate() decided: the new state, the events to publish and side effects (e.g. downtime windows)."""

    state: dict[str, Any]
    status: str
    events: list[Any] = field(default_factory=list)  # shared.events.Event
    ops: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ schedule


def phase(monitor_id: str, period: int) -> int:
    """A stable per-monitor offset so monitors with the same interval do not all fire on the same tick."""
    return zlib.crc32(monitor_id.encode()) % period


def latest_slot(monitor: MonitorBase, now: datetime, breaker_open: bool) -> datetime:
    """The most recent scheduled fire time at or before `now`."""
    if breaker_open:
        period = max(monitor.interval_seconds or 0, monitor.breaker_interval_seconds)
    elif monitor.cron:
        return croniter(monitor.cron, now + timedelta(microseconds=1)).get_prev(datetime).astimezone(timezone.utc)
    else:
        period = monitor.interval_seconds or 300
    epoch = int(now.timestamp())
    off = phase(monitor.id or "", period)
    return datetime.fromtimestamp(epoch - ((epoch - off) % period), tz=timezone.utc)


def next_slot(monitor: MonitorBase, after: datetime, breaker_open: bool = False) -> datetime:
    if monitor.cron and not breaker_open:
        return croniter(monitor.cron, after).get_next(datetime).astimezone(timezone.utc)
    period = max(monitor.interval_seconds or 0, monitor.breaker_interval_seconds) if breaker_open \
        else (monitor.interval_seconds or 300)
    return latest_slot(monitor, after, breaker_open) + timedelta(seconds=period)
