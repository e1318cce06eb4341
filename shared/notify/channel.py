"""Notification channels: one small interface, like Healthchecks' `Transport.notify` or Gatus' `AlertProvider`.

A channel sends one message to one recipient and says how it failed, with the outbound error model
(shared/outbound/errors.py): `PermanentError` (never retried: a mailbox refused with 5xx, credentials refused)
or `TransientError` (retried: server down, timeouts, 4xx answers), each scoped to the recipient or the whole
channel, so a caller need not try every other recipient against a server that is down.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

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


class Channel(Protocol):
    name: str

    def send(self, message: Notification) -> None:
        """Deliver one message; raise PermanentError or TransientError when it was not accepted."""
        ...


def message_id(ref: str, recipient: str, sender: str) -> str:
    """A Message-ID derived from what is notified and who receives it (the address itself is not disclosed)."""
    domain = sender.rpartition("@")[2] or "localhost"
    digest = hashlib.sha256(f"{ref}\n{recipient.lower()}".encode()).hexdigest()[:12]
    safe_ref = "".join(c for c in ref if c.isalnum() or c in ".-_")[:64] or "n"
    return f"<{safe_ref}.{digest}@{domain}>"
