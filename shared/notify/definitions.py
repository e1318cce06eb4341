"""Channels as data: a stored, named definition of where messages go (e-mail, a signed webhook, or any of
Apprise's services), which events it takes (its route filter), its escalation steps and its digest.

Monitors name the channels they alert on (`channels`, by name); a monitor that names none alerts on the channels
marked `default`. Operator notices (checker errors, delivery problems) go to ADMIN_EMAIL_RECIPIENTS and to the
channels marked `operator`, never to a monitor's audience. Secrets (a webhook's signing secret, an Apprise URL,
which carries the service's tokens) are SecretStr: masked on read, scrubbed from logs, events and results.
"""

from __future__ import annotations

import json
import re
from datetime import time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, EmailStr, Field, SecretStr, ValidationInfo, field_validator, model_validator

from shared.events import EventType, Severity

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
ChannelName = Annotated[str, Field(pattern=NAME_PATTERN, description="A channel's name (lower case letters, digits, "
                                   "`_ . -`; at most 63).")]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def valid_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin, UTC)") from None
    return value


class EventFilter(BaseModel):
    """Which events a channel takes (every condition given must hold; empty = all)."""

    model_config = ConfigDict(extra="forbid")

    types: list[EventType] = Field(default_factory=list, max_length=50,
                                   description="Event types (e.g. MONITOR_DOWN, RESOURCE_ALERT); empty = all.")
    min_severity: Severity = Field("info", description="Only events at least this severe (info < warning < "
                                   "critical).")
    kinds: list[str] = Field(default_factory=list, max_length=20,
                             description="Only events of these kinds (website, stock, parts, resource, alert_rule); "
                                         "empty = all.")

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        from monitors import KINDS

        known = {*KINDS, "alert_rule"}
        bad = [k for k in value if k not in known]
        if bad:
            raise ValueError(f"unknown kind {bad[0]!r}: one of {', '.join(sorted(known))}")
        return value

    def takes(self, event_type: str, severity: str, kind: str) -> bool:
        if self.types and event_type not in self.types:
            return False
        if SEVERITIES.index(severity if severity in SEVERITIES else "info") < SEVERITIES.index(self.min_severity):
            return False
        return not self.kinds or kind in self.kinds


class EscalationStep(BaseModel):
    """If a DOWN or ALERT sent on this channel is neither acknowledged nor recovered `after_minutes` after it
    happened, it is sent to `channels` too (steps in order, each counted from the event)."""

    model_config = ConfigDict(extra="forbid")

    after_minutes: int = Field(..., ge=1, le=10080)
    channels: list[ChannelName] = Field(..., min_length=1, max_length=10)


def _type_required(schema: dict[str, Any]) -> None:
    """A request names its channel's type (the union's discriminator), although code may leave it to the class."""
    schema["required"] = ["type", *(f for f in schema.get("required", []) if f != "type")]
    schema.get("properties", {}).get("type", {}).pop("default", None)


class ChannelBase(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, json_schema_extra=_type_required)

    id: str | None = Field(None, description="Assigned by the server.", pattern=r"^[0-9a-f]{32}$")
    name: ChannelName
    type: str
    enabled: bool = True
    default: bool = Field(False, description="Monitors that name no channels alert here.")
    operator: bool = Field(False, description="Operator notices (checker errors, delivery problems) go here.")
    filter: EventFilter = Field(default_factory=EventFilter, description="Which events this channel takes.")
    escalation: list[EscalationStep] = Field(default_factory=list, max_length=5,
                                             description="Escalation steps for unacknowledged problems.")
    digest: Literal["off", "daily", "weekly"] = Field("off", description="A digest across every kind, daily or "
                                                      "weekly.")
    digest_at: str = Field("08:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                           description="When the digest goes out (HH:MM, in digest_timezone).")
    digest_weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = Field(
        "monday", description="The day of a weekly digest.")
    digest_timezone: str = Field("UTC", max_length=64, description="IANA time zone of digest_at.")

    @field_validator("digest_timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return valid_timezone(value)

    @model_validator(mode="after")
    def _no_self_escalation(self) -> ChannelBase:
        for n, step in enumerate(self.escalation):
            if self.name in step.channels:
                raise ValueError(f"escalation step {n + 1} names this channel itself")
        return self

    def digest_time(self) -> time:
        hour, minute = self.digest_at.split(":")
        return time(int(hour), int(minute))

    def secret_values(self) -> list[str]:
        """Every secret this definition holds (scrubbed wherever text leaves the app)."""
        return []


class EmailChannelDef(ChannelBase):
    """E-mail over the app's SMTP settings to these recipients."""

    type: Literal["email"] = "email"
    recipients: list[EmailStr] = Field(..., min_length=1, max_length=50)


class WebhookChannelDef(ChannelBase):
    """A POST of the versioned JSON body (docs/CHANNELS.md) to `url`, signed: `X-Signature-256: sha256=<hex>`,
    the HMAC-SHA256 of the body under `secret`."""

    type: Literal["webhook"] = "webhook"
    url: str = Field(..., max_length=2000, description="http(s) URL that receives the POST.")
    secret: SecretStr = Field(..., description="Signing secret (16–200 characters); never shown again.",
                              json_schema_extra={"minLength": 16, "maxLength": 200})
    timeout_seconds: float = Field(10.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
        except ValueError:
            raise ValueError("must be an http(s) URL") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
            raise ValueError("must be an http(s) URL, e.g. https://hooks.example.com/monitor")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if not 16 <= len(value.get_secret_value()) <= 200:
            raise ValueError("must be 16 to 200 characters (a long random string: the receiver checks the signature "
                             "with it)")
        return value

    def secret_values(self) -> list[str]:
        return [self.secret.get_secret_value(), *_url_secrets(self.url)]


class AppriseChannelDef(ChannelBase):
    """Any Apprise service URL (slack://…, workflows://… (Teams), tgram://…, pagerduty://…, ntfy://…, …)."""

    type: Literal["apprise"] = "apprise"
    url: SecretStr = Field(..., max_length=2000, description="An Apprise URL (it carries the service's tokens: "
                           "masked on read).")

    @field_validator("url")
    @classmethod
    def _apprise(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if (info.context or {}).get("stored"):
            return value  # validated when written; importing Apprise costs 0.5 s of a cold start
        from shared.notify.apprise_channel import validate_url

        problem = validate_url(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    def secret_values(self) -> list[str]:
        url = self.url.get_secret_value()
        return [url, *_url_secrets(url)]


ChannelDef = Annotated[EmailChannelDef | WebhookChannelDef | AppriseChannelDef, Field(discriminator="type")]
CHANNEL_MODELS: dict[str, type[ChannelBase]] = {"email": EmailChannelDef, "webhook": WebhookChannelDef,
                                                "apprise": AppriseChannelDef}


def _url_secrets(url: str) -> list[str]:
    """The parts of a URL that are credentials: user info, a path or query that holds tokens."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    out = [parts.password] if parts.password else []  # a user name is no secret (and may be a common word)
    out += [seg for seg in re.split(r"[/?&=]", parts.path + "?" + parts.query) if _looks_like_token(seg)]
    return out


def _looks_like_token(segment: str) -> bool:
    """A path or query part that is a credential, not a word: long, with digits or mixed case ("T0K3n…", a hex
    key) — so "notifications" in a URL is not scrubbed out of every message."""
    return len(segment) >= 16 and (any(c.isdigit() for c in segment)
                                   or (any(c.isupper() for c in segment) and any(c.islower() for c in segment)))


def parse_channel(data: Any, stored: bool = False) -> ChannelBase:
    """A channel definition from a request body or a stored spec (pydantic's ValidationError when invalid)."""
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(ChannelDef)
    context = {"stored": True} if stored else None
    if isinstance(data, str):
        return adapter.validate_json(data, context=context)
    return adapter.validate_json(json.dumps(data, allow_nan=False), strict=not stored, context=context)
