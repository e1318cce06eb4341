"""What a chat, SMS or push channel and a webhook get from an event: a short text with the essential facts and at
most one link (plus the acknowledgement link), and the webhook's versioned JSON body (docs/CHANNELS.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.notify.updown import UPDOWN_TYPES, tell
from shared.text import clip, timestamp

if TYPE_CHECKING:
    from shared.events import Event
    from shared.notify.render import Rendered

WEBHOOK_VERSION = 1
SHORT_MAX = 700
_PRIVATE = {"recipients"}  # who else is told is nobody else's business


def short_text(event: Event, rendered: Rendered, link: str | None = None) -> str:
    """The subject line, up to four facts, one link: what fits a phone's notification."""
    lines = [rendered.subject]
    if event.type in UPDOWN_TYPES:
        facts = [f"{label}: {value}" for label, value in tell(event).facts if label not in ("Monitor", "Status")]
        lines += facts[:4]
    else:
        message = " ".join(event.message.split())
        if message and message not in rendered.subject:
            lines.append(clip(message, 300) or "")
        lines.append(f"Time: {timestamp(event.occurred_at)}")
    held = event.details.get("held_dependents")
    if isinstance(held, list) and held:
        lines.append(f"Held (depend on it): {', '.join(str(h) for h in held[:5])}"
                     + (f" +{len(held) - 5} more" if len(held) > 5 else ""))
    if link:
        lines.append(link)
    text = "\n".join(line for line in lines if line)
    return text if len(text) <= SHORT_MAX else text[:SHORT_MAX - 1] + "…"


def webhook_body(event: Event, rendered: Rendered, short: str, link: str | None) -> dict[str, Any]:
    """The webhook's JSON body, version 1: stable field names; new fields may be added, none removed or renamed
    without a new version."""
    return {
        "version": WEBHOOK_VERSION,
        "id": event.id,
        "type": event.type.value,
        "kind": event.kind,
        "severity": event.severity,
        "audience": event.audience,
        "monitor": {"id": event.monitor_id or None, "name": event.monitor_name},
        "occurred_at": event.occurred_at.isoformat(),
        "message": event.message,
        "subject": rendered.subject,
        "text": short,
        "details": {k: v for k, v in event.details.items() if k not in _PRIVATE},
        "link": link,
    }
