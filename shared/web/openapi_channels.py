"""The OpenAPI operations of channels (shared/triggers/alerting.py): generated from the channel models of
shared/notify/definitions.py, so the document cannot drift from what is validated."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel

from shared.notify.definitions import ChannelDef


class ChannelSpec(RootModel[ChannelDef]):
    """A channel: `type` chooses e-mail, a signed webhook, or an Apprise URL (Slack, Teams, Telegram, …)."""


class ChannelView(BaseModel):
    """A channel as stored, secrets masked ("***"): a webhook's secret and its URL's path, an Apprise URL but for
    its scheme."""

    id: str
    name: str
    type: Literal["email", "webhook", "apprise"]
    enabled: bool
    default: bool
    operator: bool
    filter: dict[str, Any]
    escalation: list[dict[str, Any]]
    digest: Literal["off", "daily", "weekly"]
    digest_at: str
    digest_weekday: str
    digest_timezone: str
    recipients: list[str] | None = None
    url: str | None = None
    secret: str | None = None
    timeout_seconds: float | None = None
    created_at: str | None = None
    updated_at: str | None = None


class ChannelList(BaseModel):
    items: list[dict[str, Any]] = Field(description="ChannelView items (an unreadable stored one: id, name, type, "
                                        "error)")


class ChannelTargetResult(BaseModel):
    target: str = Field(description="The recipient or the channel's name.")
    ok: bool
    transient: bool = Field(description="A failure that may pass (server down, timeout); false: configuration.")
    answer: str = Field(description="What the service answered, or why it failed.")


class ChannelTest(BaseModel):
    channel: str
    id: str
    type: str
    ok: bool
    results: list[ChannelTargetResult]


def models() -> tuple[list[Any], list[Any]]:
    return [ChannelSpec], [ChannelView, ChannelList, ChannelTest]


def paths(ref: Any) -> dict[str, Any]:
    from shared.web.openapi import DELETED, _json, _op, _path

    cid = _path("channel_id", "The channel's id or its name.")
    patch = {"type": "object", "description": "The fields to change (`type` and `id` cannot change; a masked "
             "secret sent back as shown keeps its value).", "minProperties": 1}
    return {
        "/api/v1/channels": {
            "get": _op("listChannels", "Channels, by name", {"200": _json(ref("ChannelList"))}),
            "post": _op("createChannel", "Create a channel", {"201": _json(ref("ChannelView"), "Created")},
                        400, 409, 413, 422, body=ref("ChannelSpec"))},
        "/api/v1/channels/{channel_id}": {
            "parameters": [cid],
            "get": _op("getChannel", "One channel (secrets masked)", {"200": _json(ref("ChannelView"))}, 404, 409),
            "patch": _op("updateChannel", "Change fields of a channel", {"200": _json(ref("ChannelView"))},
                         400, 404, 409, 413, 422, body=patch),
            "delete": _op("deleteChannel", "Delete a channel nothing names any more (409 names who does)", DELETED,
                          404, 409)},
        "/api/v1/channels/{channel_id}/test": {
            "parameters": [cid],
            "post": _op("testChannel", "Send a test message to every target of the channel now; what each service "
                        "answered", {"200": _json(ref("ChannelTest"))}, 404, 409, 422)},
    }
