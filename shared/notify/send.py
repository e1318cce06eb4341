"""Sending one event to its targets, each guarded by its delivery record (`deliveries` table, key = event id ×
target key): a completed send is never repeated, however often the message is redelivered.

A channel-wide transient failure (the SMTP server or a webhook down) stops the round for that channel — its other
recipients wait for the next try, unclaimed; a channel-wide permanent one (credentials refused) fails its other
recipients at once. Channels are independent: Slack being down delays nobody's e-mail.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.notify import operator
from shared.notify.channel import Notification, NotifyError, PermanentError, TransientError
from shared.outbound.errors import is_transient
from shared.outbound.retry import SMTP
from shared.storage import Claim

if TYPE_CHECKING:
    from shared.events import Event
    from shared.notify.channel import Channel
    from shared.notify.routing import Target
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("shared.mailer")
FOLDED = "folded"  # a delivery record the rate cap folded into its summary (shared/notify/ratecap.py)


@dataclass
class Tally:
    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)  # finished by an earlier invocation
    retry: dict[str, str] = field(default_factory=dict)
    busy: list[str] = field(default_factory=list)  # another invocation is sending to them
    folded: list[str] = field(default_factory=list)  # over the rate cap: told in the hour's summary
    keys: dict[str, str] = field(default_factory=dict)  # label → delivery key
    took: list[Target] = field(default_factory=list)  # the targets that accepted it now
    failures: dict[str, NotifyError] = field(default_factory=dict)  # channel group → its channel-wide failure

    @property
    def channel_failure(self) -> NotifyError | None:
        return next(iter(self.failures.values()), None)


def lease_seconds(settings: Settings) -> int:
    """How long a claim protects a send in progress: every try may wait a full timeout, plus the waits."""
    return int(SMTP.attempts * settings.smtp_timeout_seconds + SMTP.attempts * (SMTP.wait_max + SMTP.jitter)) + 30


def group_of(target: Target) -> str:
    """Targets that fail together: every e-mail (one SMTP server), else one stored channel."""
    if target.definition is None or target.definition.type == "email":
        return "email"
    return target.definition.name


async def send_message(target: Target, note: Notification) -> str | None:
    """One send with the retry policy (transient failures tried again), no delivery record. Blocking senders
    (smtplib, Apprise) run in a thread."""
    channel: Channel = target.channel
    answer: str | None = None
    async for attempt in SMTP.tries(is_transient, f"{channel.name} send"):
        with attempt:
            asend = getattr(channel, "asend", None)
            if asend is not None and inspect.iscoroutinefunction(asend):
                answer = await asend(note)
            else:
                answer = await asyncio.to_thread(channel.send, note)
    return answer


def note_for(target: Target, event: Event, rendered: Any, extra: dict[str, Any]) -> Notification:
    """The message of one target: every channel gets the same facts, each in its own form; a problem's
    acknowledgement link is in all of them."""
    text, html, short = rendered.text, rendered.html, str(extra.get("short", ""))
    body = dict(extra["body"]) if extra.get("body") else None
    url = extra.get("ack_url")
    if url:
        words = "Acknowledge (stops reminders and escalation)"
        text = f"{text.rstrip()}\n\n{words}: {url}\n"
        if html is not None:
            from markupsafe import escape

            para = f'<p style="margin:16px 0"><a href="{escape(url)}">{escape(words)}</a></p>'
            html = html.replace("</body>", para + "</body>", 1) if "</body>" in html else html + para
        short = f"{short}\nAck: {url}"
        if body is not None:
            body["ack_url"] = url
    return Notification(target.recipient, rendered.subject, text, html, ref=event.id, short=short,
                        link=extra.get("link"), ack_url=url, body=body)


async def send_event(store: Store, settings: Settings, event: Event, targets: list[Target], key_prefix: str = "",
                     extra: dict[str, Any] | None = None) -> Tally:
    """Send an event to targets, each once (idempotent per event × key_prefix + target key)."""
    from shared.notify import ratecap
    from shared.notify.render import message_parts

    lease = lease_seconds(settings)
    rendered, parts = message_parts(event, settings)
    parts.update(extra or {})
    tally = Tally()
    for target in targets:
        label, key, group = target.label, key_prefix + target.key, group_of(target)
        tally.keys[label] = key
        failure = tally.failures.get(group)
        if isinstance(failure, TransientError):
            tally.retry[label] = str(failure)
            continue
        claim = await store.claim_delivery(event.id, key, lease)
        if claim == Claim.DONE:
            tally.done.append(label)
            continue
        if claim == Claim.BUSY:
            tally.busy.append(label)
            continue
        if isinstance(failure, PermanentError):  # e.g. credentials refused: the same for everyone
            await store.finish_delivery(event.id, key, "failed", str(failure))
            tally.failed[label] = str(failure)
            continue
        try:
            admitted = await ratecap.admit(store, settings, target.key, label, event)
        except BaseException:
            await asyncio.shield(store.finish_delivery(event.id, key, "released"))
            raise
        if not admitted:
            await store.finish_delivery(event.id, key, FOLDED)
            tally.folded.append(label)
            continue
        try:
            await send_message(target, note_for(target, event, rendered, parts))
        except PermanentError as error:
            await store.finish_delivery(event.id, key, "failed", str(error))
            tally.failed[label] = str(error)
            log.error("event %s: %s to %s failed permanently: %s", event.id, target.channel.name, label, error)
            if error.scope == "channel":
                tally.failures[group] = error
        except TransientError as error:
            await store.finish_delivery(event.id, key, "released")
            tally.retry[label] = str(error)
            if error.scope == "channel":
                tally.failures[group] = error
        except BaseException:
            await asyncio.shield(store.finish_delivery(event.id, key, "released"))
            raise
        else:
            await store.finish_delivery(event.id, key, "sent")
            tally.sent.append(label)
            tally.took.append(target)
    for group in {group_of(t) for t in tally.took}:
        await operator.channel_works(store, group)
    return tally


async def report(store: Store, event: Event, targets: list[Target], tally: Tally) -> None:
    """Permanent refusals of this round, to the operator: per channel group (a channel-wide one at most hourly)."""
    by_group: dict[str, dict[str, str]] = {}
    for target in targets:
        if target.label in tally.failed:
            by_group.setdefault(group_of(target), {})[target.label] = tally.failed[target.label]
    for group in sorted(set(by_group) | set(tally.failures)):
        await operator.report_refusals(store, event, group, by_group.get(group, {}), tally.failures.get(group))
