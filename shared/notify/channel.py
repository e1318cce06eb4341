"""Notification channels: one small interface, like Healthchecks' `Transport.notify` or Gatus' `AlertProvider`.

A channel sends one message to one recipient and says how it failed, with the outbound error model
(shared/outbound/errors.py): `PermanentError` (never retried: a mailbox refused with 5xx, credentials refused)
or `TransientError` (retried: server down, timeouts, 4xx answers), each scoped to the recipient or the whole
channel, so a caller need not try every other recipient against a server that is down.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from shared.outbound.errors import OutboundError, PermanentError, Scope, TransientError

NotifyError = OutboundError

__all__ = ["Channel", "Notification", "NotifyError", "PermanentError", "Scope", "TransientError", "message_id"]


@dataclass(frozen=True)
class Notification:
    recipient: str
    subject: str
    text: str
    html: str | None = None
    # A stable id of what this notifies about (an event id, "poison.{event id}"): the Message-ID is derived from
    # it and the recipient, so a re-sent message carries the same Message-ID and mail clients can fold duplicates.
    ref: str | None = None
    # For chat, SMS and push services: the essential facts in a few lines and at most one link (render.short_text).
    short: str = ""
    # Where to look at it (the public status page), and the signed one-click acknowledgement link; None: none.
    link: str | None = None
    ack_url: str | None = None
    # The event as the webhook's versioned JSON body carries it (render.webhook_body); None for test messages.
    body: dict[str, Any] | None = None


class Channel(Protocol):
    name: str

    def send(self, message: Notification) -> str | None:
        """Deliver one message (blocking: the pipeline calls it in a thread); returns what the service answered
        (a short text, for `POST /channels/{id}/test`), raises PermanentError or TransientError when it was not
        accepted. A channel may instead define `async def asend(message)` with the same contract."""
        ...


def message_id(ref: str, recipient: str, sender: str) -> str:
    """A Message-ID derived from what is notified and who receives it (the address itself is not disclosed)."""
    domain = sender.rpartition("@")[2] or "localhost"
    digest = hashlib.sha256(f"{ref}\n{recipient.lower()}".encode()).hexdigest()[:12]
    safe_ref = "".join(c for c in ref if c.isalnum() or c in ".-_")[:64] or "n"
    return f"<{safe_ref}.{digest}@{domain}>"
