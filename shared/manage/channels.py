"""Channels: create, read, list, change, delete, send a test — what the HTTP API and the CLI both call.

A channel is referred to by its name (monitors' `channels`, escalation steps), so a name is unique, and a channel
that something still names can be neither deleted nor renamed (409 naming who uses it). Secrets are masked on
read ("***"); sent back unchanged in a PATCH they keep their value.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError

from shared.errors import Duplicate, Invalid, NotFound, field_error, validation_details
from shared.manage.monitors import MASK, fits, iso, looks_like_id, unmask
from shared.notify.definitions import CHANNEL_MODELS, ChannelBase, parse_channel
from shared.storage import Conflict, etag_of
from shared.storage.keys import CHANNELS_PK

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("monitor.manage")
MAX_CHANNELS = 200


def _parse(payload: Any) -> ChannelBase:
    if not isinstance(payload, dict):
        raise Invalid("the body must be a JSON object", field_error("(body)", "expected an object"))
    kind = payload.get("type")
    if not isinstance(kind, str) or kind not in CHANNEL_MODELS:
        raise Invalid("unknown channel type", field_error("type", f"one of: {', '.join(sorted(CHANNEL_MODELS))}"))
    try:
        return parse_channel(payload)
    except ValidationError as error:
        details = validation_details(error, drop_first=set(CHANNEL_MODELS))
        for detail in details:
            if detail.get("type") == "extra_forbidden":
                detail["message"] = f"not a field of {kind} channels"
        raise Invalid("invalid channel", details) from None
    except ValueError:  # NaN / Infinity: no JSON number
        raise Invalid("the body holds a number JSON does not have", field_error("(body)", "NaN or Infinity")) from None


def _spec(defn: ChannelBase) -> str:
    """The stored form: every field, secrets in clear (the table is the app's own)."""
    data = defn.model_dump(mode="json", exclude={"id"})
    for name, value in defn:
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return json.dumps(data, separators=(",", ":"))


def _masked_url(url: str) -> str:
    """A URL as shown: scheme and host; the path and query (which carry tokens in chat webhooks) masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    rest = "/" + MASK if (parts.path.strip("/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{rest}" if parts.scheme else MASK


def view(defn: ChannelBase, entity: dict[str, Any]) -> dict[str, Any]:
    data = defn.model_dump(mode="json")
    data["id"] = entity["RowKey"]
    if defn.type == "webhook":
        data["secret"] = MASK
        data["url"] = _masked_url(str(data["url"]))
    if defn.type == "apprise":
        scheme = defn.url.get_secret_value().partition("://")[0]  # type: ignore[attr-defined]
        data["url"] = f"{scheme}://{MASK}"
    data["created_at"] = iso(entity.get("created_at"))
    data["updated_at"] = iso(entity.get("updated_at"))
    return data


def _entity(defn: ChannelBase, created_at: datetime) -> dict[str, Any]:
    return fits({"RowKey": defn.id, "name": defn.name, "type": defn.type, "spec": _spec(defn),
                 "created_at": created_at, "updated_at": datetime.now(UTC)}, "channel", CHANNELS_PK)


def _stored(entity: dict[str, Any]) -> ChannelBase:
    from shared.notify.routing import definition_of

    try:
        return definition_of(entity)
    except Exception as error:  # noqa: BLE001 - stored garbage of any sort
        raise Duplicate(f"the stored definition of channel {entity.get('RowKey')} is unreadable "
                        f"({type(error).__name__}); delete it and create it again",
                        field_error("(channel)", "unreadable")) from None


async def _load(store: Store, ident: str) -> dict[str, Any]:
    """A channel's row by id, or by name."""
    entity = await store.get_definition("channels", ident) if looks_like_id(ident) else None
    if entity is None:
        for row in await store.list_definitions("channels"):
            if row.get("name") == ident:
                return row
        raise NotFound(f"no channel {ident}")
    return entity


async def channel_names(store: Store) -> set[str]:
    return {str(row.get("name")) for row in await store.list_definitions("channels")}


def _check_target(defn: ChannelBase) -> None:
    """A webhook or Apprise target naming an address the outbound guard refuses is a 422 now, not a failing
    delivery later (a host name is checked again, resolved, at every send)."""
    from shared.outbound.guard import Guard, OutboundRefused
    from shared.settings import get_settings

    url = getattr(defn, "url", None)
    if url is None:
        return
    text = url.get_secret_value() if isinstance(url, SecretStr) else str(url)
    guard = Guard.from_settings(get_settings())
    try:
        if defn.type == "webhook":
            guard.check_url(text)
        else:
            import apprise

            plugin = apprise.Apprise.instantiate(text)  # a literal address it names is checked now (a token is none)
            host = getattr(plugin, "host", None)
            if isinstance(host, str) and host:
                port = getattr(plugin, "port", None) or (443 if getattr(plugin, "secure", False) else 80)
                guard.check_host(host, int(port))
    except OutboundRefused as refused:
        raise Invalid("the channel names an address the app may not reach", field_error("url", str(refused))) \
            from None


async def _check_steps(store: Store, defn: ChannelBase) -> None:
    if not defn.escalation:
        return
    known = await channel_names(store)
    problems = [{"field": f"escalation.{n}.channels.{m}", "message": f"no channel named {name!r}"}
                for n, step in enumerate(defn.escalation) for m, name in enumerate(step.channels) if name not in known]
    if problems:
        raise Invalid("an escalation step names a channel that does not exist", problems)


async def _users(store: Store, name: str) -> list[str]:
    """Who names this channel: monitors (their names and ids) and other channels' escalation steps."""
    out = []
    for entity in await store.list_monitors():
        try:
            if name in (json.loads(entity.get("spec") or "{}").get("channels") or []):
                out.append(f"monitor {entity.get('name')} ({entity['RowKey']})")
        except (ValueError, AttributeError):
            continue
    for row in await store.list_definitions("channels"):
        if row.get("name") == name:
            continue
        try:
            steps = json.loads(row.get("spec") or "{}").get("escalation") or []
        except ValueError:
            continue
        if any(name in (step.get("channels") or []) for step in steps if isinstance(step, dict)):
            out.append(f"channel {row.get('name')} (escalation)")
    return out


async def create_channel(store: Store, payload: Any) -> dict[str, Any]:
    if isinstance(payload, dict) and payload.get("id") is not None:
        raise Invalid("id is assigned by the server", field_error("id", "must not be given"))
    defn = _parse(payload)
    _check_target(defn)
    await _check_steps(store, defn)
    if len(await store.list_definitions("channels")) >= MAX_CHANNELS:
        raise Invalid(f"at most {MAX_CHANNELS} channels", field_error("(body)", "too many channels"))
    defn.id = uuid.uuid4().hex
    entity = _entity(defn, datetime.now(UTC))
    try:
        await store.insert_definition("channels", entity, name=defn.name)
    except Conflict:
        raise Duplicate(f"a channel named {defn.name!r} exists already", field_error("name", "must be unique")) \
            from None
    return view(defn, entity)


async def get_channel(store: Store, ident: str) -> dict[str, Any]:
    entity = await _load(store, ident)
    return view(_stored(entity), entity)


async def list_channels(store: Store) -> list[dict[str, Any]]:
    out = []
    for entity in sorted(await store.list_definitions("channels"), key=lambda e: str(e.get("name"))):
        try:
            out.append(view(_stored(entity), entity))
        except Duplicate:
            out.append({"id": entity["RowKey"], "name": entity.get("name"), "type": entity.get("type"),
                        "error": "stored definition is unreadable"})
    return out


async def update_channel(store: Store, ident: str, patch: Any) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise Invalid("the body must be a JSON object", field_error("(body)", "expected an object"))
    if not patch:
        raise Invalid("nothing to change: give the fields to change", field_error("(body)", "empty object"))
    entity = await _load(store, ident)
    old = _stored(entity)
    if patch.get("id", old.id) != old.id:
        raise Invalid("id cannot be changed", field_error("id", "read-only"))
    if "type" in patch and patch["type"] != old.type:
        raise Invalid("type cannot be changed", field_error("type", "read-only"))
    stored = json.loads(entity["spec"])
    shown = view(old, entity)
    patch = {k: v for k, v in patch.items() if k not in ("created_at", "updated_at")}  # read-only, as shown
    merged = {**stored, **{k: unmask(v, shown.get(k), stored[k]) if k in stored else v for k, v in patch.items()},
              "type": old.type}
    merged.pop("id", None)
    new = _parse(merged)
    new.id = old.id
    _check_target(new)
    await _check_steps(store, new)
    if new.name != old.name:
        users = await _users(store, old.name)
        if users:
            raise Duplicate(f"channel {old.name!r} is named by {', '.join(users[:5])}: change them first",
                            field_error("name", "in use"))
    new_entity = _entity(new, entity.get("created_at") or datetime.now(UTC))
    try:
        await store.update_definition("channels", new_entity, etag_of(entity), old.name, new.name)
    except Conflict as conflict:
        if conflict.key:
            raise Duplicate(f"a channel named {new.name!r} exists already", field_error("name", "must be unique")) \
                from None
        raise Duplicate("the channel was changed by someone else at the same time; retry",
                        field_error("(channel)", "concurrent update")) from None
    return view(new, new_entity)


async def delete_channel(store: Store, ident: str) -> None:
    entity = await _load(store, ident)
    name = str(entity.get("name"))
    users = await _users(store, name)
    if users:
        raise Duplicate(f"channel {name!r} is named by {', '.join(users[:5])}"
                        + (f" and {len(users) - 5} more" if len(users) > 5 else "") + ": change them first",
                        field_error("(channel)", "in use"))
    await store.delete_definition("channels", entity["RowKey"], name)


async def test_channel(store: Store, settings: Settings, ident: str) -> dict[str, Any]:
    """Send a test message to every target of the channel now; what each service answered."""
    from shared.notify.channel import Notification, NotifyError
    from shared.notify.routing import targets_of
    from shared.notify.send import send_message

    entity = await _load(store, ident)
    defn = _stored(entity)
    targets = targets_of(defn, settings)
    if not targets:
        raise Invalid("this channel has nothing to send to now", field_error(
            "(channel)", "e-mail is off (GLOBAL_EMAIL_NOTIFICATIONS_ENABLED=false)"))
    results = []
    now = datetime.now(UTC)
    subject = f"[TEST] {defn.name}: a test message from the monitoring service"
    text = (f"This is a test message sent to channel {defn.name!r} ({defn.type}) at "
            f"{now.strftime('%Y-%m-%d %H:%M:%S')} UTC. If you read this, the channel works.")
    for target in targets:
        note = Notification(target.recipient, subject, text, None, ref=f"test.{defn.id}.{now.timestamp():.0f}",
                            short=f"{subject}\n{text}")
        try:
            answer = await send_message(target, note)
        except NotifyError as error:
            results.append({"target": target.label, "ok": False, "transient": error.transient, "answer": str(error)})
        except Exception as error:
            log.exception("test of channel %s failed", defn.name)
            results.append({"target": target.label, "ok": False, "transient": False,
                            "answer": f"{type(error).__name__}: the send failed (see the function logs)"})
        else:
            results.append({"target": target.label, "ok": True, "transient": False, "answer": answer or "accepted"})
    return {"channel": defn.name, "id": defn.id, "type": defn.type, "ok": all(r["ok"] for r in results),
            "results": results}
