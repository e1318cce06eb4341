"""What every monitor has, whatever its kind (identity, schedule, audience), the up/down alert policy fields for
kinds with an up/down target, and the schedule arithmetic."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, ClassVar

from croniter import croniter
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationInfo, field_validator, model_validator

from monitors.contract import CheckResult, Evaluation, Outcome  # noqa: F401 - re-exported for kind modules

# Fields of the up/down policy. A stored definition of a kind without that policy may still hold them (written by
# an older version): they are dropped on read; on write they are refused (extra="forbid"), naming the field.
STORED = {"stored": True}  # validation context of a stored definition: limits added later do not refuse it
UPDOWN_FIELDS = ("failure_threshold", "success_threshold", "breaker_failures", "breaker_interval_seconds",
                 "hide_url", "locations", "quorum")
# Periods are whole minutes: the timers tick once a minute, so 90 s could only be kept as 60 s, 120 s, 60 s, …
WholeMinutes = Annotated[int, Field(ge=60, le=3600, json_schema_extra={"multipleOf": 60})]


def whole_minutes(value: int | None, info: ValidationInfo) -> int | None:
    """A period in seconds must be a multiple of 60 (a stored definition from before this rule keeps loading)."""
    if value is not None and value % 60 and not (info.context or {}).get("stored"):
        lower = max(60, value // 60 * 60)
        raise ValueError(f"must be a multiple of 60 (the timers tick once a minute, so {value} s cannot be kept "
                         f"evenly): use {lower} or {lower + 60}")
    return value


class MonitorBase(BaseModel):
    """Fields common to all kinds. A kind's Config subclasses this and adds `kind: Literal[...]` and its own."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: str
    id: str | None = Field(None, description="Assigned by the server.", pattern=r"^[0-9a-f]{32}$")
    name: str = Field(..., min_length=1, max_length=200)
    enabled: bool = True
    interval_seconds: WholeMinutes | None = Field(None, description="Check every N seconds: whole minutes, 60–3600 "
                                                  "(the timers tick once a minute); default 300 unless cron.")
    cron: str | None = Field(None, description="A 5-field cron expression (UTC) instead of interval_seconds.")
    recipients: list[EmailStr] = Field(default_factory=list, max_length=50,
                                       description="Who is e-mailed; empty = DEFAULT_EMAIL_RECIPIENTS.")
    renotify_minutes: int | None = Field(None, ge=5, le=10080,
                                         description="Remind every N minutes while the problem lasts (off when "
                                                     "empty).")
    public: bool = Field(False, description="Shown on the public status page and its badges (default: hidden)")
    group: str | None = Field(None, min_length=1, max_length=100,
                              description="Its group on the public status page (default: its kind's).")
    channels: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]] = Field(
        default_factory=list, max_length=20, description="Channels (by name) its alerts go to; empty = the "
        "channels marked default (and `recipients` / DEFAULT_EMAIL_RECIPIENTS by e-mail).")
    tags: list[Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f]+$")]] = Field(
        default_factory=list, max_length=20, description="Free labels; maintenance windows can name them.")
    depends_on: list[Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]] = Field(
        default_factory=list, max_length=10, description="Monitors (ids) this one depends on: while one of them "
        "is DOWN, this one's alerts are held (it is still checked and stored).")

    updown: ClassVar[bool] = False

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError("must be a valid 5-field cron expression, e.g. '*/5 * * * *'")
        return value

    @field_validator("interval_seconds")
    @classmethod
    def _interval(cls, value: int | None, info: ValidationInfo) -> int | None:
        return whole_minutes(value, info)

    @model_validator(mode="after")
    def _schedule(self) -> MonitorBase:
        if self.cron and self.interval_seconds:
            raise ValueError("give interval_seconds or cron, not both")
        if not self.cron and not self.interval_seconds:
            self.interval_seconds = 300
        return self

    def unique_keys(self) -> list[str]:
        """Values that must be unique among monitors of this kind (e.g. a website's URL)."""
        return []

    @classmethod
    def from_stored(cls, spec: str) -> MonitorBase:
        """A stored definition (valid when it was written); up/down fields an older version stored for a kind
        without that policy are dropped."""
        if cls.updown or not any(f'"{name}"' in spec for name in UPDOWN_FIELDS):
            return cls.model_validate_json(spec, context=STORED)
        import json

        data = {k: v for k, v in json.loads(spec).items() if k not in UPDOWN_FIELDS}
        return cls.model_validate(data, context=STORED)


class UpDownPolicy(MonitorBase):
    """For kinds with an up/down target (websites, TCP, …): thresholds, circuit breaker, URL hiding."""

    updown: ClassVar[bool] = True

    failure_threshold: int = Field(3, ge=1, le=100, description="Consecutive failures before DOWN.")
    success_threshold: int = Field(1, ge=1, le=100, description="Consecutive successes before UP again.")
    breaker_failures: int = Field(5, ge=1, le=1000,
                                  description="Circuit breaker: after this many consecutive failures…")
    breaker_interval_seconds: int = Field(300, ge=60, le=86400, json_schema_extra={"multipleOf": 60},
                                          description="…check at most this often (whole minutes) until a success.")
    hide_url: bool = Field(False, description="On the public status page, show the monitor but not its URL.")
    locations: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]] | None = Field(
        None, min_length=1, max_length=16, description="The locations (CHECK_LOCATIONS) that check it; empty = all.")
    quorum: int | None = Field(None, ge=1, le=16, description="DOWN when at least this many of its locations are "
                               "down in their latest checks; fewer is a regional issue. Default: all but two, at "
                               "least one.")

    @field_validator("breaker_interval_seconds")
    @classmethod
    def _breaker_interval(cls, value: int, info: ValidationInfo) -> int:
        return whole_minutes(value, info) or value

    @field_validator("locations")
    @classmethod
    def _locations(cls, value: list[str] | None) -> list[str] | None:
        return sorted(set(value)) if value else None

    @model_validator(mode="after")
    def _quorum(self) -> UpDownPolicy:
        if self.quorum and self.locations and self.quorum > len(self.locations):
            raise ValueError(f"quorum: {self.quorum} is more than its {len(self.locations)} locations")
        return self


# ------------------------------------------------------------------------------------------ schedule


def phase(monitor_id: str, period: int) -> int:
    """A stable per-monitor offset so monitors with the same interval do not all fire on the same tick; whole
    minutes, as the timers tick once a minute: a slot is the minute of the tick that checks it."""
    return zlib.crc32(monitor_id.encode()) % max(1, period // 60) * 60 if period % 60 == 0 else 0


def latest_slot(monitor: MonitorBase, now: datetime, stretched_to: int | None = None) -> datetime:
    """The most recent scheduled fire time at or before `now`. `stretched_to`: a longer period while a circuit
    breaker is open (None or 0: the monitor's own schedule)."""
    if stretched_to:
        period = max(monitor.interval_seconds or 0, stretched_to)
    elif monitor.cron:
        return croniter(monitor.cron, now + timedelta(microseconds=1)).get_prev(datetime).astimezone(UTC)
    else:
        period = monitor.interval_seconds or 300
    epoch = int(now.timestamp())
    off = phase(monitor.id or "", period)
    return datetime.fromtimestamp(epoch - ((epoch - off) % period), tz=UTC)


def next_slot(monitor: MonitorBase, after: datetime, stretched_to: int | None = None) -> datetime:
    if monitor.cron and not stretched_to:
        return croniter(monitor.cron, after).get_next(datetime).astimezone(UTC)
    period = max(monitor.interval_seconds or 0, stretched_to or 0) or 300
    return latest_slot(monitor, after, stretched_to) + timedelta(seconds=period)
