"""Acknowledgements: someone says "I am on it" about a monitor's current problem; its reminders and escalation steps
stop until the problem ends.

- A *problem* is a state whose status is red or a threshold breach in its kind's vocabulary (monitors/contract.py
  StatusInfo): DOWN, ALERT, WARNING, LOW, HIGH, SHORT. DEGRADED (slow, not a breach), PENDING, ERROR (the checker,
  told to the operator) and the healthy statuses are not.
- An acknowledgement is a row of the `alerting` table (pk "ack", rk the monitor id): {since, by, note, at}. `since`
  is the state's `since` when it was given, so it holds for that problem only: once the status changes (recovery,
  WARNING → ALERT, a checker error in between) the state's `since` moves on and the old row means nothing (a new
  problem needs a new acknowledgement). Stale rows are left alone (a GET never writes); the next ack replaces them.
- `suppressed`: a reminder (Event.replaces == "reminder", details["reminder"]) or an escalation of an acknowledged
  problem is not sent; the pipeline records it "acknowledged".
- The one-click link (`ack_url`; its page: `link_page`): `{PUBLIC_BASE_URL}/api/ack?t=…`, the token
  `b64url(payload).b64url(HMAC-SHA256(payload))` with payload {m: monitor id, o: the event's
  occurred_at in µs, e: expiry in s}. The key is ACK_SIGNING_KEY, else a random 32-byte key created once in the
  `alerting` table (pk "key"; create-only, so two instances racing keep the first). A GET of the link only shows
  the page (mail scanners and link previews open links); its button POSTs the token. Tokens and the key are never
  logged.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets as random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import secrets
from shared.errors import Invalid, NotFound, ServiceError, validation_details
from shared.events import Event, EventType

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("shared.mailer")

PK = "ack"
KEY_ROW = ("key", "ack-link")  # the generated signing key (alerting table)
# The problem events of monitors that can be acknowledged (alert rules have no state with a `since`: not these).
PROBLEM_TYPES = frozenset({EventType.MONITOR_DOWN, EventType.RESOURCE_ALERT, EventType.RESOURCE_WARNING,
                           EventType.THRESHOLD_BREACH_LOW, EventType.THRESHOLD_BREACH_HIGH})
BY_LINK = "one-click link"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_B64 = re.compile(r"^[A-Za-z0-9_-]+$")
SIG_BYTES = 32


class AckRequest(BaseModel):
    """The optional body of POST …/ack."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    note: str | None = Field(None, max_length=500, description="What is being done about it.")
    by: str | None = Field(None, min_length=1, max_length=100, description="Who acknowledges (default: api).")


class AckView(BaseModel):
    """A monitor's acknowledged problem."""

    monitor_id: str
    status: str = Field(description="The problem's status (DOWN, ALERT, WARNING, LOW, HIGH, SHORT).")
    since: datetime = Field(description="When the problem began (the state's `since`).")
    acknowledged_at: datetime
    by: str
    note: str | None


class NoProblem(ServiceError):
    status = 409
    code = "no_problem"


# ------------------------------------------------------------------------------------------ the problem


@dataclass(frozen=True)
class Problem:
    monitor_id: str
    name: str
    status: str
    label: str  # what a person reads ("Down", "Low stock")
    since: str  # the state's `since`, exactly as stored (the acknowledgement's key)

    @property
    def since_at(self) -> datetime:
        return datetime.fromisoformat(self.since)


def is_problem(kind: str, status: str) -> bool:
    from monitors import KINDS

    if kind not in KINDS:
        return False
    info = KINDS[kind].statuses.of(status)
    return info.red or info.breach


async def problem_of(store: Store, entity: dict[str, Any]) -> Problem | None:
    """The monitor's current problem, None when it has none (healthy, never checked, ERROR, DEGRADED)."""
    kind, monitor_id = str(entity.get("kind")), str(entity["RowKey"])
    row = await store.get_state(kind, monitor_id)
    if row is None:
        return None
    status = str(row.data.get("status") or row.status)
    since = row.data.get("since")
    if not since or not is_problem(kind, status):
        return None
    from monitors import KINDS

    return Problem(monitor_id, str(entity.get("name") or ""), status, KINDS[kind].statuses.of(status).label,
                   str(since))


async def _held(store: Store, problem: Problem) -> dict[str, Any] | None:
    """The acknowledgement of this very problem, or None (none, or one of an earlier problem)."""
    row = await store.get_row(PK, problem.monitor_id)
    return row if row is not None and row.get("since") == problem.since else None


async def standing(store: Store, event: Event) -> str:
    """What became of a problem event's problem: "resolved" (over, or its monitor deleted), "acknowledged" or
    "ongoing"."""
    entity = await store.get_monitor(event.monitor_id) if event.monitor_id else None
    problem = await problem_of(store, entity) if entity is not None else None
    if problem is None or problem.since_at > event.occurred_at:
        return "resolved"
    return "acknowledged" if await _held(store, problem) is not None else "ongoing"


async def suppressed(store: Store, event: Event) -> bool:
    """True for a reminder (or an escalation) of a problem someone acknowledged: it is not sent."""
    if event.type not in PROBLEM_TYPES or not (event.details.get("reminder") or event.details.get("escalation")):
        return False
    return await standing(store, event) == "acknowledged"


# ------------------------------------------------------------------------------------------ the API


def _view(problem: Problem, row: dict[str, Any]) -> dict[str, Any]:
    return AckView(monitor_id=problem.monitor_id, status=problem.status, since=problem.since_at,
                   acknowledged_at=row["at"], by=row["by"], note=row.get("note") or None).model_dump(mode="json")


async def _entity(store: Store, monitor_id: str) -> dict[str, Any]:
    from shared.manage.monitors import load_entity

    return await load_entity(store, monitor_id)


async def acknowledge(store: Store, monitor_id: str, body: Any = None, by: str = "api",
                      now: datetime | None = None) -> dict[str, Any]:
    """Acknowledge the monitor's current problem (NotFound: no such monitor; NoProblem: nothing to acknowledge)."""
    try:
        request = AckRequest.model_validate(body if body is not None else {})
    except ValidationError as error:
        raise Invalid("invalid acknowledgement", validation_details(error)) from None
    problem = await problem_of(store, await _entity(store, monitor_id))
    if problem is None:
        raise NoProblem(f"monitor {monitor_id} has no problem to acknowledge (it is not down or in breach)")
    row = {"PartitionKey": PK, "RowKey": monitor_id, "since": problem.since, "by": request.by or by,
           "note": request.note or "", "at": now or datetime.now(UTC)}
    await store.put_row(row)
    log.info("monitor %s: %s acknowledged by %s", monitor_id, problem.status, row["by"])
    return _view(problem, row)


async def unacknowledge(store: Store, monitor_id: str) -> None:
    await _entity(store, monitor_id)
    await store.delete_row(PK, monitor_id)


async def get_ack(store: Store, monitor_id: str) -> dict[str, Any]:
    problem = await problem_of(store, await _entity(store, monitor_id))
    row = await _held(store, problem) if problem is not None else None
    if problem is None or row is None:
        raise NotFound(f"monitor {monitor_id}'s current problem is not acknowledged")
    return _view(problem, row)


# ------------------------------------------------------------------------------------------ signed links


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict base64url without padding: ValueError for any other character or a non-canonical form."""
    if not _B64.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # unused low bits set: another spelling of the same bytes
        raise ValueError("not canonical base64url")
    return data


def _micros(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


async def signing_key(store: Store, settings: Settings) -> bytes:
    if settings.ack_signing_key is not None and settings.ack_signing_key.get_secret_value():
        return settings.ack_signing_key.get_secret_value().encode()
    from shared.storage import Conflict

    row = await store.get_row(*KEY_ROW)
    if row is None:
        with contextlib.suppress(Conflict):  # another instance created it first: theirs is the key
            await store.put_row({"PartitionKey": KEY_ROW[0], "RowKey": KEY_ROW[1],
                                 "key": _b64(random.token_bytes(32))}, create=True)
        row = await store.get_row(*KEY_ROW)
    if row is None:
        raise RuntimeError("the acknowledgement signing key could not be stored")
    secrets.register(row["key"])
    return _unb64(row["key"])


def make_token(key: bytes, monitor_id: str, occurred_at: datetime, expires: datetime) -> str:
    payload = _b64(json.dumps({"m": monitor_id, "o": _micros(occurred_at), "e": int(expires.timestamp())},
                              separators=(",", ":")).encode())
    return f"{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


@dataclass(frozen=True)
class Claim:
    monitor_id: str
    occurred_at: datetime
    expires: datetime


class LinkError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def read_token(key: bytes, token: str | None, now: datetime) -> Claim:
    """The token's claim; LinkError 403 when forged or garbled, 410 when expired."""
    forged = LinkError(403, "This link is not valid. Use the link in the message as it is, or acknowledge in "
                            "the app.")
    payload, dot, signature = (token or "").partition(".")
    try:
        given = _unb64(signature)
    except ValueError:
        raise forged from None
    expected = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    if not dot or len(given) != SIG_BYTES or not hmac.compare_digest(given, expected):
        raise forged
    try:
        data = json.loads(_unb64(payload))
        claim = Claim(str(data["m"]), EPOCH + timedelta(microseconds=int(data["o"])),
                      datetime.fromtimestamp(int(data["e"]), UTC))
    except (ValueError, TypeError, KeyError, OverflowError):
        raise forged from None
    if now >= claim.expires:
        raise LinkError(410, "This link expired. Acknowledge in the app, or use the link of a newer message.")
    return claim


async def ack_url(store: Store, settings: Settings, event: Event) -> str | None:
    """The signed, expiring one-click acknowledgement link of a problem event; None for other events (and when
    PUBLIC_BASE_URL is not set). A storage failure leaves the link out rather than the message."""
    from monitors import KINDS

    if not settings.public_base_url or event.type not in PROBLEM_TYPES or not event.monitor_id \
            or event.kind not in KINDS:
        return None
    try:
        key = await signing_key(store, settings)
    except Exception:  # a message without the link beats no message
        log.exception("event %s: no acknowledgement link (the signing key could not be read)", event.id)
        return None
    expires = datetime.now(UTC) + timedelta(hours=settings.ack_link_hours)
    token = make_token(key, event.monitor_id, event.occurred_at, expires)
    return f"{settings.public_base_url.rstrip('/')}/api/ack?t={token}"


# ------------------------------------------------------------------------------------------ the link's page


def _render(**values: Any) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    folder = Path(__file__).resolve().parent.parent / "web" / "templates"
    env = Environment(loader=FileSystemLoader(str(folder)), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    page = {"name": None, "problem": None, "since": None, "token": None, "detail": None, **values}
    return env.get_template("ack.html").render(**page)


def _since_text(problem: Problem) -> str:
    return f"{problem.since_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


async def link_page(store: Store, settings: Settings, token: str | None, act: bool,
                    now: datetime | None = None) -> tuple[int, str]:
    """(HTTP status, HTML) of the one-click link: GET (act=False) shows the problem and the button and changes
    nothing; POST (act=True) acknowledges."""
    now = now or datetime.now(UTC)
    try:
        claim = read_token(await signing_key(store, settings), token, now)
    except LinkError as error:
        heading = "This link expired" if error.status == 410 else "Invalid link"
        return error.status, _render(title=heading, heading=heading, message=error.message, tone="grey")
    entity = await store.get_monitor(claim.monitor_id)
    if entity is None:
        return 404, _render(title="Unknown monitor", heading="Unknown monitor", tone="grey",
                            message="This monitor no longer exists.")
    problem = await problem_of(store, entity)
    name = str(entity.get("name") or "")
    if problem is None or problem.since_at > claim.occurred_at:
        return 409, _render(title="Already recovered", heading="Already recovered", name=name, tone="ok",
                            message="The problem this message was about is over; there is nothing to acknowledge.")
    shown = {"name": name, "problem": problem.label, "since": _since_text(problem)}
    held = await _held(store, problem)
    if act:
        if held is None:
            await acknowledge(store, claim.monitor_id, by=BY_LINK, now=now)
        return 200, _render(title="Acknowledged", heading="Acknowledged by link", tone="ok", **shown,
                            message="Reminders and escalations of this problem stop until it is over.")
    if held is not None:
        at = held["at"].astimezone(UTC) if isinstance(held["at"], datetime) else held["at"]
        return 200, _render(title="Acknowledged", heading="Already acknowledged", tone="ok", **shown,
                            message=f"Acknowledged by {held['by']} at {at:%Y-%m-%d %H:%M} UTC.",
                            detail=held.get("note") or None)
    return 200, _render(title=f"Acknowledge: {name}", heading="Acknowledge this problem?", tone="down",
                        token=token, **shown, message="Acknowledging stops its reminders and escalations.")
