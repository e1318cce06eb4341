"""The one typed event model every check type emits, and who hears about each type."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class EventType(StrEnum):
    # website / any up-down monitor
    MONITOR_DOWN = "MONITOR_DOWN"
    MONITOR_UP = "MONITOR_UP"  # recovered after DOWN
    MONITOR_DEGRADED = "MONITOR_DEGRADED"
    MONITOR_RECOVERED_FROM_DEGRADED = "MONITOR_RECOVERED_FROM_DEGRADED"
    CERTIFICATE_EXPIRING = "CERTIFICATE_EXPIRING"
    # checker problems: go to the operator, never to a monitor's audience
    MONITOR_ERROR = "MONITOR_ERROR"
    MONITOR_ERROR_CLEARED = "MONITOR_ERROR_CLEARED"
    # several locations: some (fewer than the monitor's quorum) see it down, and when none do any more
    REGIONAL_ISSUE = "REGIONAL_ISSUE"
    REGIONAL_ISSUE_CLEARED = "REGIONAL_ISSUE_CLEARED"
    # delivery problems, for the operator: an event not delivered in DELIVERY_MAX_AGE_HOURS (or that crashed the
    # delivery function), a recipient the mail server refuses for good, a channel refusing everything
    DELIVERY_FAILED = "DELIVERY_FAILED"
    RECIPIENT_REFUSED = "RECIPIENT_REFUSED"
    CHANNEL_FAILING = "CHANNEL_FAILING"
    # stock
    STOCK_INCREASED = "STOCK_INCREASED"
    STOCK_DECREASED = "STOCK_DECREASED"
    THRESHOLD_BREACH_LOW = "THRESHOLD_BREACH_LOW"
    THRESHOLD_BREACH_HIGH = "THRESHOLD_BREACH_HIGH"
    THRESHOLD_CLEARED = "THRESHOLD_CLEARED"
    STOCKOUT_FORECAST = "STOCKOUT_FORECAST"  # projected stock-out closer than stockout_alert_days
    # parts lists: the availability report, e-mailed to the monitor's recipients
    PARTS_REPORT = "PARTS_REPORT"
    # resources: a metric's status changed (one event per check naming every change), or a reminder
    RESOURCE_WARNING = "RESOURCE_WARNING"
    RESOURCE_ALERT = "RESOURCE_ALERT"
    RESOURCE_RECOVERED = "RESOURCE_RECOVERED"  # every changed metric is back to OK
    # alert rules over snapshot metrics: kind "alert_rule", monitor_id = the rule's id; they go to the rule's
    # recipients (carried in details["recipients"]; see shared/notify/pipeline.py recipients_for)
    ALERT_RULE_FIRING = "ALERT_RULE_FIRING"
    ALERT_RULE_RESOLVED = "ALERT_RULE_RESOLVED"
    # timer-run lifecycle: recorded as tick records for /health, never e-mailed
    MONITOR_STARTED = "MONITOR_STARTED"
    MONITOR_COMPLETED = "MONITOR_COMPLETED"


Severity = Literal["info", "warning", "critical"]


class DeliveryStatus(StrEnum):
    """An event's delivery, as stored on its row and shown by GET /events."""

    NONE = "none"  # nobody is told (tick records)
    QUEUED = "queued"
    PENDING = "pending"  # a try failed transiently; the next one is at `next_try_at`
    RETRYING = "retrying"  # (rows written by earlier versions)
    SENT = "sent"
    PARTIAL = "partial"  # some recipients got it, others failed permanently
    FAILED = "failed"
    DISABLED = "disabled"  # GLOBAL_EMAIL_NOTIFICATIONS_ENABLED is false
    NO_RECIPIENTS = "no_recipients"
    DROPPED = "dropped"  # its monitor was deleted before it went out
    SUPERSEDED = "superseded"  # a newer event made it moot (a newer reminder or report, a confirmed report)
    GROUPED = "grouped"  # a checker error told in its cause's one operator notice (shared/notify/storm.py)
    ACKNOWLEDGED = "acknowledged"  # a reminder of a problem someone acknowledged (shared/notify/ack.py)
    FOLDED = "folded"  # over the rate cap everywhere: told in the hour's summary (shared/notify/ratecap.py)
    HELD = "held"  # not sent: the monitor was in maintenance or a monitor it depends on was down (engine gate)

# Who is told: the monitor's recipients ("audience") or the operator (ADMIN_EMAIL_RECIPIENTS); None = nobody.
OPERATOR_TYPES = {EventType.MONITOR_ERROR, EventType.MONITOR_ERROR_CLEARED, EventType.DELIVERY_FAILED,
                  EventType.REGIONAL_ISSUE, EventType.REGIONAL_ISSUE_CLEARED,
                  EventType.RECIPIENT_REFUSED, EventType.CHANNEL_FAILING}
NOTICE_TYPES = {EventType.DELIVERY_FAILED, EventType.RECIPIENT_REFUSED, EventType.CHANNEL_FAILING}
SILENT_TYPES = {EventType.MONITOR_STARTED, EventType.MONITOR_COMPLETED}


def audience_of(event_type: str) -> Literal["monitor", "operator", "none"]:
    """Who hears about an event type: the monitor's recipients, the operator, or nobody."""
    if event_type in SILENT_TYPES:
        return "none"
    return "operator" if event_type in OPERATOR_TYPES else "monitor"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: EventType
    kind: str
    monitor_id: str
    monitor_name: str
    severity: Severity = "info"
    occurred_at: datetime = Field(default_factory=utcnow)
    message: str = ""
    details: dict[str, Any] = Field(default_factory=dict)
    confirm: dict[str, str] = Field(default_factory=dict, description="State fields the delivery path records once "
                                    "a recipient accepted this event's message (e.g. a report's hash).")
    public: bool = Field(False, description="The monitor is on the public status page: e-mails may link to it "
                         "there (every other page needs a key, so a private monitor's e-mails carry no link).")
    replaces: str | None = Field(None, description="A newer event of the same monitor with the same key makes this "
                                 "one moot if it has not gone out yet (reminders, reports).")

    @property
    def audience(self) -> Literal["monitor", "operator", "none"]:
        return audience_of(self.type)
