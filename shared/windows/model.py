"""A maintenance window as data: when it is (a one-off period, a cron schedule or an RFC 5545 RRULE in a time zone's
wall-clock time) and what it covers (monitor ids, tags, kinds, or all).

Validated strictly like monitor definitions (extra="forbid", pydantic strict mode through `parse`), so every 422
names the field. The rule checks here keep shared/windows/schedule.py simple and O(1): COUNT, UNTIL and DTSTART are
refused (they tie a rule to its first occurrence; `starts_on`/`ends_on` bound a window instead), and a rule whose
meaning would depend on where a search starts (INTERVAL > 1, or a MONTHLY/YEARLY/WEEKLY rule without a BYxxx part
to say which day) needs `starts_on`, which then anchors it.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from croniter import croniter
from dateutil.rrule import rrulestr
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import Invalid, field_error, validation_details

MAX_ONE_OFF = timedelta(days=31)
ALLOWED_FREQ = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY")
REFUSED_PARTS = {"DTSTART": "the start is `starts_on` plus `at`, not part of the rule",
                 "COUNT": "COUNT counts from the first occurrence; bound the window with `ends_on` instead",
                 "UNTIL": "bound the window with `ends_on` instead"}
DAY_PARTS = ("BYDAY", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYEASTER")
WEEKDAY_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
MonitorId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Tag = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f]+$")]


def rule_parts(value: str) -> dict[str, str]:
    """An RRULE value's parts by name ("FREQ=MONTHLY;BYDAY=1WE" -> {"FREQ": "MONTHLY", "BYDAY": "1WE"})."""
    parts: dict[str, str] = {}
    for item in value.split(";"):
        name, sep, part = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{item!r} is not NAME=VALUE (e.g. FREQ=WEEKLY;BYDAY=SA,SU)")
        parts[name.strip().upper()] = part.strip()
    return parts


def anchored_rule(value: str, starts_on: date | None) -> str:
    """The rule with the parts RFC 5545 would take from DTSTART spelled out (from `starts_on`), so the rule means the
    same whatever dtstart a search uses (shared/windows/schedule.py starts near the instant asked about)."""
    parts = rule_parts(value)
    if any(p in parts for p in DAY_PARTS) or starts_on is None:
        return value
    freq = parts.get("FREQ")
    if freq == "WEEKLY":
        return f"{value};BYDAY={WEEKDAY_CODES[starts_on.weekday()]}"
    if freq == "MONTHLY":
        return f"{value};BYMONTHDAY={starts_on.day}"
    if freq == "YEARLY":
        extra = "" if "BYMONTH" in parts else f";BYMONTH={starts_on.month}"
        return f"{value}{extra};BYMONTHDAY={starts_on.day}"
    return value


class MaintenanceWindow(BaseModel):
    """A maintenance window: checks of the monitors it covers still run and are stored (marked `maintenance`), but
    alerts are held and uptime leaves the period out."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str | None = Field(None, description="Assigned by the server.", pattern=r"^[0-9a-f]{32}$",
                           json_schema_extra={"readOnly": True})
    name: str = Field(..., min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    enabled: bool = True
    start: AwareDatetime | None = Field(None, description="One-off: its start (RFC 3339 with an offset).")
    end: AwareDatetime | None = Field(None, description="One-off: its end (after start, at most 31 days later).")
    cron: str | None = Field(None, description="Recurring: a 5-field cron expression of start times, in `timezone` "
                             "wall-clock time.")
    rrule: str | None = Field(None, max_length=500, description="Recurring: an RFC 5545 RRULE value, e.g. "
                              "FREQ=MONTHLY;BYDAY=1WE (HOURLY or coarser; no COUNT, UNTIL or DTSTART).")
    at: str | None = Field(None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                           description="With rrule: the local start time, HH:MM.")
    duration_minutes: int | None = Field(None, ge=1, le=10080, description="Recurring: how long each occurrence "
                                         "lasts (elapsed minutes, 1–10080).")
    timezone: str = Field("UTC", description="The IANA time zone of cron, rrule, at, starts_on and ends_on.")
    starts_on: date | None = Field(None, description="Recurring: no occurrence starts before this local date "
                                   "(also anchors INTERVAL and rules without a day part).")
    ends_on: date | None = Field(None, description="Recurring: no occurrence starts after this local date.")
    monitors: list[MonitorId] = Field(default_factory=list, max_length=500, description="Monitors (ids) covered.")
    tags: list[Tag] = Field(default_factory=list, max_length=50, description="Monitors with any of these tags.")
    kinds: list[str] = Field(default_factory=list, max_length=20, description="Monitors of these kinds.")
    all: bool = Field(False, description="Every monitor.")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from shared.notify.definitions import valid_timezone

        return valid_timezone(value)

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        from monitors import KINDS

        bad = [k for k in value if k not in KINDS]
        if bad:
            raise ValueError(f"unknown kind {bad[0]!r}: one of {', '.join(sorted(KINDS))}")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and (len(value.split()) != 5 or not croniter.is_valid(value)):
            raise ValueError("must be a valid 5-field cron expression, e.g. '0 2 * * 0' (Sundays 02:00)")
        return value

    @field_validator("rrule")
    @classmethod
    def _rrule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.upper().replace(" ", "")
        if value.startswith("RRULE:"):
            value = value[6:]
        if "\n" in value or "\r" in value:
            raise ValueError("one RRULE value only, e.g. FREQ=WEEKLY;BYDAY=SA,SU")
        parts = rule_parts(value)
        for name, why in REFUSED_PARTS.items():
            if name in parts:
                raise ValueError(f"{name} is not allowed: {why}")
        freq = parts.get("FREQ")
        if freq is None:
            raise ValueError("FREQ is required, e.g. FREQ=WEEKLY;BYDAY=SA,SU")
        if freq.upper() in ("MINUTELY", "SECONDLY"):
            raise ValueError(f"FREQ={freq} is too frequent for a maintenance window (HOURLY or coarser)")
        if freq.upper() not in ALLOWED_FREQ:
            raise ValueError(f"FREQ={freq} is not a frequency: one of {', '.join(ALLOWED_FREQ)}")
        if "BYSECOND" in parts:
            raise ValueError("BYSECOND is not allowed: windows start on whole minutes")
        try:
            rrulestr(value, dtstart=datetime(2000, 1, 3))
        except (ValueError, TypeError, KeyError, IndexError) as error:
            raise ValueError(f"not a valid RRULE: {error}") from None
        return value

    @model_validator(mode="after")
    def _shape(self) -> MaintenanceWindow:
        one_off = self.start is not None or self.end is not None
        given = [name for name, on in (("start/end", one_off), ("cron", self.cron is not None),
                                       ("rrule", self.rrule is not None)) if on]
        if len(given) != 1:
            raise ValueError("give exactly one of: start and end (one-off), cron, or rrule (recurring)"
                             + (f"; got {' and '.join(given)}" if given else ""))
        if not (self.monitors or self.tags or self.kinds or self.all):
            raise ValueError("say what it covers: monitors, tags, kinds, or all=true")
        if one_off:
            self._one_off()
        else:
            self._recurring()
        return self

    def _one_off(self) -> None:
        if self.start is None or self.end is None:
            raise ValueError("a one-off window needs both start and end")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.end - self.start > MAX_ONE_OFF:
            raise ValueError("a one-off window lasts at most 31 days")
        for name in ("at", "duration_minutes", "starts_on", "ends_on"):
            if getattr(self, name) is not None:
                raise ValueError(f"{name} is for recurring windows (cron or rrule), not a one-off")

    def _recurring(self) -> None:
        if self.duration_minutes is None:
            raise ValueError("duration_minutes is required for a recurring window")
        if self.starts_on and self.ends_on and self.ends_on < self.starts_on:
            raise ValueError("ends_on must not be before starts_on")
        if self.cron is not None and self.at is not None:
            raise ValueError("at is for rrule; a cron expression carries its own time")
        if self.rrule is None:
            return
        if self.at is None:
            raise ValueError("at (HH:MM, the local start time) is required with rrule")
        parts = rule_parts(self.rrule)
        if self.starts_on is None:
            if int(parts.get("INTERVAL", "1") or 1) > 1:
                raise ValueError("rrule with INTERVAL > 1 needs starts_on (the period to count from)")
            freq = parts["FREQ"].upper()
            if freq in ("WEEKLY", "MONTHLY", "YEARLY") and not any(p in parts for p in DAY_PARTS):
                raise ValueError(f"FREQ={freq} needs a day (BYDAY or BYMONTHDAY) or starts_on to take it from")

    @property
    def recurring(self) -> bool:
        return self.start is None


FIELD_OF = {"give exactly one": "(body)", "say what it covers": "(body)", "a one-off window needs": "start",
            "end must be after": "end", "a one-off window lasts": "end", "duration_minutes is": "duration_minutes",
            "ends_on must": "ends_on", "at is for rrule": "at", "at (HH:MM": "at", "rrule with INTERVAL": "starts_on",
            "FREQ=": "rrule"}


def _field_of(message: str, default: str) -> str:
    for start, field in FIELD_OF.items():
        if message.startswith(start):
            return field
    match = re.match(r"^(\w+) is for recurring", message)
    return match.group(1) if match else default


def parse(payload: Any) -> MaintenanceWindow:
    """A request body as a window (strict: `"enabled": 0` or `"duration_minutes": "60"` are 422); Invalid naming
    the field otherwise ("rrule: FREQ=MINUTELY is too frequent …")."""
    from shared.manage.monitors import strict_json

    if not isinstance(payload, dict):
        raise Invalid("the body must be a JSON object", field_error("(body)", "expected an object"))
    try:
        return MaintenanceWindow.model_validate_json(strict_json(payload), strict=True)
    except ValidationError as error:
        details = validation_details(error)
        for detail in details:
            if detail["field"] == "(body)":  # a whole-model rule: name the field it is about
                detail["field"] = _field_of(detail["message"], "(body)")
        first = details[0] if details else {"field": "(body)", "message": "invalid"}
        raise Invalid(f"invalid maintenance window: {first['field']}: {first['message']}", details) from None
