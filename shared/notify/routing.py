"""Routing: who gets an event — the targets (a sender and a recipient) of one event.

- A monitor's event goes to the channels the monitor names (`channels`), or, when it names none, to the channels
  marked `default`; each channel takes only what its filter lets through (event types, minimum severity, kinds).
  E-mail to the monitor's `recipients` keeps working as the built-in route (no `recipients`: DEFAULT_EMAIL_RECIPIENTS,
  for monitors that name no channels).
- An alert rule's event goes to the rule's recipients (or DEFAULT_EMAIL_RECIPIENTS) and the default channels.
- Operator notices (checker errors, delivery problems) go to ADMIN_EMAIL_RECIPIENTS and the channels marked
  `operator` — never to a monitor's audience.
- E-mail (built-in or an e-mail channel) goes out only while GLOBAL_EMAIL_NOTIFICATIONS_ENABLED is true.

A target's `key` names its delivery record (idempotency per event × channel × recipient): "email:{address}" for the
built-in e-mail (as before channels existed), "c.{channel id}:{address or -}" for a stored channel.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared import secrets
from shared.notify.definitions import (
    AppriseChannelDef,
    ChannelBase,
    EmailChannelDef,
    WebhookChannelDef,
    parse_channel,
)

if TYPE_CHECKING:
    from shared.events import Event
    from shared.notify.channel import Channel
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("shared.mailer")


@dataclass(frozen=True)
class Target:
    channel: Channel
    key: str
    label: str
    definition: ChannelBase | None = None

    @property
    def recipient(self) -> str:
        """The address a message names (e-mail), or the channel's name."""
        return self.key.partition(":")[2] if self.key.startswith("email:") or self.definition is None \
            or self.definition.type == "email" else self.label


def dedupe(addresses: Any) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for address in addresses:
        text = str(address).strip()
        if text and text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    return out


# ------------------------------------------------------------------------------------------ definitions


def definition_of(entity: dict[str, Any]) -> ChannelBase:
    """A stored channel (its spec as written, secrets in clear), with its id; ValueError when unreadable."""
    spec = json.loads(entity["spec"])
    spec["id"] = entity["RowKey"]
    defn = parse_channel(spec, stored=True)
    secrets.register(*defn.secret_values())
    return defn


async def stored_channels(store: Store) -> list[ChannelBase]:
    """Every stored channel definition that can be read (an unreadable one is logged and left out)."""
    out = []
    for entity in await store.list_definitions("channels"):
        try:
            out.append(definition_of(entity))
        except Exception:
            log.exception("channel %s has an unreadable definition; it is skipped", entity.get("RowKey"))
    return out


# -------------------------------------------------------------------------------------------- senders


def email_sender(settings: Settings) -> Channel:
    from shared.notify.email import EmailChannel

    return EmailChannel(settings)


def sender_for(defn: ChannelBase, settings: Settings) -> Channel:
    if isinstance(defn, EmailChannelDef):
        return email_sender(settings)
    if isinstance(defn, WebhookChannelDef):
        from shared.notify.webhook import WebhookChannel

        return WebhookChannel(defn, settings)
    if isinstance(defn, AppriseChannelDef):
        from shared.notify.apprise_channel import AppriseChannel

        return AppriseChannel(defn, settings)
    raise ValueError(f"no sender for channel type {defn.type!r}")


def targets_of(defn: ChannelBase, settings: Settings) -> list[Target]:
    """The targets of a stored channel: one per recipient of an e-mail channel, else the channel itself."""
    if isinstance(defn, EmailChannelDef):
        if not settings.email_enabled:
            return []
        sender = email_sender(settings)
        return [Target(sender, f"c.{defn.id}:{rcpt}", f"{defn.name} <{rcpt}>", defn)
                for rcpt in dedupe(defn.recipients)]
    return [Target(sender_for(defn, settings), f"c.{defn.id}:-", defn.name, defn)]


def builtin_email(addresses: list[str], settings: Settings) -> list[Target]:
    if not settings.email_enabled or not addresses:
        return []
    sender = email_sender(settings)
    return [Target(sender, f"email:{rcpt}", rcpt) for rcpt in dedupe(addresses)]


# -------------------------------------------------------------------------------------------- routing


def _takes(defn: ChannelBase, event: Event) -> bool:
    return defn.enabled and defn.filter.takes(event.type.value, event.severity, event.kind)


async def targets_for(event: Event, settings: Settings, store: Store,
                      channels: list[ChannelBase] | None = None) -> list[Target] | None:
    """Every target of an event; None when its monitor was deleted (its events are dropped, never sent to the
    default recipients); [] for "nobody"."""
    audience = event.audience
    if audience == "none":
        return []
    if channels is None:
        channels = await stored_channels(store)
    out: list[Target] = []
    if audience == "operator":
        out += builtin_email(list(settings.admin_recipients), settings)
        chosen = [c for c in channels if c.operator]
    elif event.kind == "alert_rule":  # shared/rules: the rule's recipients travel with its events
        out += builtin_email(list(event.details.get("recipients") or settings.default_recipients), settings)
        chosen = [c for c in channels if c.default]
    else:
        entity = await store.get_monitor(event.monitor_id) if event.monitor_id else None
        if entity is None:
            return None
        try:
            spec = json.loads(entity.get("spec") or "{}")
        except ValueError:
            log.warning("monitor %s has an unreadable spec; using the default channels", event.monitor_id)
            spec = {}
        named = [str(n) for n in spec.get("channels") or []]
        own = list(spec.get("recipients") or [])
        out += builtin_email(own or ([] if named else list(settings.default_recipients)), settings)
        by_name = {c.name: c for c in channels}
        missing = [n for n in named if n not in by_name]
        if missing:
            log.warning("monitor %s names channels that do not exist (any more): %s", event.monitor_id,
                        ", ".join(missing))
        chosen = [by_name[n] for n in named if n in by_name] if named else [c for c in channels if c.default]
    for defn in chosen:
        if _takes(defn, event):
            out += targets_of(defn, settings)
    return _unique(out)


def _unique(targets: list[Target]) -> list[Target]:
    seen: set[str] = set()
    out = []
    for t in targets:
        if t.key not in seen:
            seen.add(t.key)
            out.append(t)
    return out


async def targets_of_channels(names: list[str], settings: Settings, store: Store) -> list[Target]:
    """The targets of the enabled stored channels with these names (unknown names are logged and skipped)."""
    by_name = {c.name: c for c in await stored_channels(store)}
    out: list[Target] = []
    for name in names:
        defn = by_name.get(name)
        if defn is None:
            log.warning("channel %r does not exist (any more)", name)
        elif defn.enabled:
            out += targets_of(defn, settings)
    return _unique(out)


async def target_by_key(key: str, settings: Settings, store: Store) -> Target | None:
    """The target a delivery key names, as configured now (None: the channel or recipient is gone)."""
    if key.startswith("email:"):
        targets = builtin_email([key.partition(":")[2]], settings)
        return targets[0] if targets else None
    channel_id = key.partition(":")[0].removeprefix("c.")
    entity = await store.get_definition("channels", channel_id)
    if entity is None:
        return None
    try:
        defn = definition_of(entity)
    except Exception:
        log.exception("channel %s has an unreadable definition", channel_id)
        return None
    return next((t for t in targets_of(defn, settings) if t.key == key), None)
