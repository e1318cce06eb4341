"""The signed webhook channel: a POST of the versioned JSON body (docs/CHANNELS.md) to the channel's URL.

The receiver checks who sent it the way GitHub's webhooks do: `X-Signature-256: sha256=<hex>` is the HMAC-SHA256
of the exact body bytes under the channel's secret (compare with `hmac.compare_digest`). `X-Monitor-Event` names
the event type, `X-Monitor-Delivery` the event (a re-sent message carries the same one, so a receiver can fold
duplicates).

The URL comes from whoever may define channels, so the POST goes through the outbound guard like a check does
(a refused address is permanent: the operator allows it with OUTBOUND_ALLOW_CIDRS); redirects are not followed
(a signed POST re-sent somewhere else is not what the receiver signed up for). At most 4 KB of the answer is read.
Neither the secret nor a token in the URL can appear in an error or a log line: both are registered with
shared.secrets at construction and every error text is scrubbed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp

from shared import secrets
from shared.notify.channel import Notification, PermanentError, TransientError
from shared.notify.definitions import WebhookChannelDef
from shared.outbound import http
from shared.outbound.body import decode, read_capped
from shared.outbound.errors import OutboundError, describe, http_status
from shared.outbound.guard import Guard, OutboundRefused
from shared.text import one_line

BODY_VERSION = 1
ANSWER_LIMIT = 4096
TRANSIENT_STATUS = frozenset({408, 425, 429})


def test_body(note: Notification) -> dict[str, Any]:
    """The body of a test message (`POST /channels/{id}/test`): version 1, type TEST."""
    return {"version": BODY_VERSION, "type": "TEST", "subject": note.subject, "text": note.short or note.text,
            "sent_at": datetime.now(UTC).isoformat()}


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent (compact, keys sorted: the same body is the same bytes)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, payload: bytes) -> str:
    """`X-Signature-256`'s value: "sha256=" and the hex HMAC-SHA256 of the payload under the secret."""
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


class WebhookChannel:
    name = "webhook"

    def __init__(self, definition: WebhookChannelDef, settings: Any) -> None:
        self.definition = definition
        self.settings = settings
        secrets.register(*definition.secret_values())

    def __repr__(self) -> str:
        return secrets.scrub(f"WebhookChannel({secrets.mask_url(self.definition.url)})")

    def send(self, note: Notification) -> str:
        """The blocking form (the Channel protocol's): `asend` on a loop of its own, for callers in a thread."""
        return asyncio.run(self.asend(note))

    async def asend(self, note: Notification) -> str:
        body = note.body or test_body(note)
        payload = encode(body)
        headers = {
            "Content-Type": "application/json",
            "X-Signature-256": signature(self.definition.secret.get_secret_value(), payload),
            "X-Monitor-Event": one_line(str(body.get("type", "")), 64),
            "X-Monitor-Delivery": one_line(note.ref or "", 200),
            "User-Agent": http.USER_AGENT,
        }
        timeout = self.definition.timeout_seconds
        try:
            async with http.session(4, Guard.from_settings(self.settings)) as session, session.post(
                    self.definition.url, data=payload, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                raw, _ = await read_capped(resp, ANSWER_LIMIT)
                answer = one_line(decode(raw, resp.charset), 200)
                return self.classify(resp.status, answer, resp.headers)
        except OutboundError:
            raise
        except Exception as error:  # noqa: BLE001 - classified below; a bug is re-raised
            raise self.failure(error, timeout) from None

    # -- classification -------------------------------------------------------------------------------------

    def classify(self, status: int, answer: str, headers: Any) -> str:
        """An answer → the result text, or the error it means."""
        said = f": {answer}" if answer else ""
        if 200 <= status < 300:
            return secrets.scrub(f"HTTP {status}{said}")
        if 300 <= status < 400:
            where = secrets.mask_url(str(headers.get("Location", "")))[:200] or "elsewhere"
            raise PermanentError(f"the webhook answered {status} to {where} (redirects are not followed); give "
                                 "the final URL", scope="channel", code=status)
        if status in TRANSIENT_STATUS or status >= 500:
            retry = headers.get("Retry-After") if status == 429 else None
            later = f" (Retry-After: {one_line(str(retry), 40)})" if retry else ""
            raise TransientError(f"the webhook answered {http_status(status)}{later}{said}", scope="channel",
                                 code=status)
        raise PermanentError(f"the webhook answered {http_status(status)}{said}", scope="channel", code=status)

    def failure(self, error: BaseException, timeout: float) -> OutboundError:
        refused = _refusal(error)
        if refused is not None:
            return PermanentError(f"the webhook's address is refused: {refused}", scope="channel")
        words = describe(error, timeout)
        if words is None:
            raise error
        if isinstance(error, aiohttp.InvalidURL):
            return PermanentError(f"the webhook URL cannot be used: {words}", scope="channel")
        return TransientError(f"the webhook cannot be reached: {words}", scope="channel")


def _refusal(error: BaseException) -> str | None:
    """The guard's words when `error` is (or wraps) its refusal."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, OutboundRefused):
            return str(seen)
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return None


__all__ = ["WebhookChannel", "encode", "signature", "test_body"]
