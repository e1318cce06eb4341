"""The OpenAPI operations of acknowledgements (shared/web/openapi.py EXTENSIONS): shared/triggers/ack.py."""

from __future__ import annotations

from typing import Any


def models() -> tuple[list[Any], list[Any]]:
    from shared.notify.ack import AckRequest, AckView

    return [AckRequest], [AckView]


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


LINK_ANSWERS = {
    "200": _page("The problem and its Acknowledge button (GET), or \"Acknowledged by link\" (POST); a problem "
                 "acknowledged already says by whom"),
    "403": _page("The token is forged or garbled (bad signature, bad base64, wrong length, tampered payload)"),
    "404": _page("The monitor no longer exists"),
    "409": _page("Already recovered: the problem the message was about is over"),
    "410": _page("This link expired (ACK_LINK_HOURS after the message)"),
    "503": _page("The page is temporarily unavailable"),
}


def paths(ref: Any) -> dict[str, Any]:
    from shared.web.openapi import MID, _json, _op, _query

    post = _op("acknowledge", "Acknowledge the monitor's current problem (DOWN, ALERT, WARNING, LOW, HIGH, SHORT): "
               "its reminders and escalation steps stop until it is over", {"200": _json(ref("AckView"))},
               400, 404, 409, 422, body=ref("AckRequest"))
    post["requestBody"]["required"] = False  # the body is optional
    token = _query("t", {"type": "string"}, "The signed token of the message's link.", required=True)
    form = {"required": False, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": {"t": {"type": "string", "description": "The token (the page's form)."}}}}}}
    return {
        "/api/v1/monitors/{monitor_id}/ack": {
            "parameters": [MID],
            "get": _op("getAck", "The acknowledgement of the monitor's current problem (404: none)",
                       {"200": _json(ref("AckView"))}, 404),
            "post": post,
            "delete": _op("deleteAck", "Take back the acknowledgement (reminders and escalation resume)",
                          {"204": {"description": "Not acknowledged (any more)"}}, 404)},
        "/api/ack": {
            "get": {"operationId": "ackLinkPage", "summary": "The one-click acknowledgement link of a message "
                    "(anonymous, HTML): shows the problem and a button; changes nothing", "security": [],
                    "parameters": [token], "responses": LINK_ANSWERS},
            "post": {"operationId": "ackLink", "summary": "The page's button: acknowledge the problem of the signed "
                     "token (form field `t`)", "security": [], "requestBody": form, "responses": LINK_ANSWERS}},
    }
