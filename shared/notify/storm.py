"""The storm guard: checker errors with one cause become one operator notice, not one per monitor.

One WHMCS outage puts every stock monitor into ERROR in the same cycle, each with the same words; InvenTree
refusing the token does the same to every parts monitor. Telling the operator once per monitor (and once more per
monitor when it works again) buries the one thing to fix under dozens of mails.

- The *cause* of a MONITOR_ERROR is its kind plus its error text with the monitor-specific parts taken out
  (`normalise`): URL paths, quoted names, ids, product and part numbers, numbers — so "WHMCS: cannot connect to
  127.0.0.1:8443: connection refused" is one cause for all stock monitors and "product 12 is not in WHMCS's
  reply: …" one for every deleted product. Hosts stay: two websites behind different hosts are two causes.
- The first error of a cause opens a group (a row of the `alerting` table, pk "group", RowKey the cause's hash)
  and schedules the "group" task ERROR_GROUP_SECONDS later; errors of the cause meanwhile join it. Every member
  event is recorded `grouped`. The task publishes ONE notice (a MONITOR_ERROR with details["group"], so the
  pipeline delivers it like any operator notice instead of absorbing it again) naming every member.
- Members joining after the notice went out join silently, and are named in the cleared notice. A member's
  MONITOR_ERROR_CLEARED leaves the group; when the last one left, the task is scheduled again and sends ONE
  MONITOR_ERROR_CLEARED notice — unless a member failed again meanwhile. A group whose members all cleared before
  its notice went out sends nothing at all (a flap).
- A group's episodes are numbered (`gen`); a notice's id derives from the cause, the episode and what it says,
  and the notice is written to the row (its outbox) before it is published, so a redelivered task, or one that
  died halfway, publishes the same event once more at most — and the pipeline sends an event once per target.
- ERROR_GROUP_SECONDS = 0 turns grouping off: each error is told at once, on its own (a member of a group made
  before still leaves it, so its group's cleared notice goes out).
- Every change is an ETag-guarded read-modify-write of the group's row: twenty deliveries absorbing at once lose
  no member.

Limits: the row holds the members' ids and names (names are dropped past ~30,000 characters, ids stay); a member
that is deleted while in ERROR never clears, so its group never sends its cleared notice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.events import Event, EventType
from shared.storage import keys
from shared.storage.base import Conflict, etag_of
from shared.text import clip

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("shared.mailer")

PK = "group"
TRIES = 60  # read-modify-write rounds before giving up (the delivery is then retried by the queue)
NAMES_IN_NOTICE = 100  # monitors named in a notice's details (the count says how many there are)
MAX_MEMBERS_JSON = 30_000  # characters of the members' JSON before later members are kept by id only
LEFT_KEEP = timedelta(days=2)  # how long a member's last clear is remembered (to ignore stale redeliveries)

# States of a group's row: collecting (the error notice not out yet), told (the error notice is out), clearing
# (every member cleared, the cleared notice is scheduled), idle (the episode is over).
OPEN, TOLD, CLEARING, IDLE = "open", "told", "clearing", "idle"

# ------------------------------------------------------------------------------------------------ causes

_URL = re.compile(r"\b([a-z][a-z0-9+.-]*://[^\s/'\"<>()]+)(/(?:[^\s'\"<>()]*[^\s'\"<>().,:;!?])?)?", re.I)
_QUOTED = re.compile(r"(?<!\w)'[^'\n]{1,300}'(?!\w)|\"[^\"\n]{1,300}\"|“[^”\n]{1,300}”|«[^»\n]{1,300}»")
_PATH = re.compile(r"(?<![\w.:/…])/(?:[\w.~%{}:=@+-]+/?)+")  # /subscriptions/…/providers/…, /part/12/
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{12,}\b", re.I)
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_ID_NAME = re.compile(r"\b((?:product|part|pk|item|assembly) …)\s*\([^()\n]{1,200}\)", re.I)  # "product 11 (VPS)"
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?![\w])|\b\d+\b")
_SPACES = re.compile(r"\s+")


def normalise(error: str) -> str:
    """An error text without its monitor-specific parts ("…" in their place): URL paths, quoted names, ids,
    numbers (a product's, a part's, a port, a duration), the name after an id. Hosts and IP addresses stay."""
    text = _SPACES.sub(" ", str(error or "")).strip()
    hosts: list[str] = []

    def keep(value: str) -> str:  # shelter a host or an address from the number rule
        hosts.append(value)
        return f"\ue000{chr(0xE100 + len(hosts) - 1)}"

    text = _URL.sub(lambda m: keep(re.sub(r":\d+$", ":…", m[1])), text)
    text = _QUOTED.sub("'…'", text)
    text = _PATH.sub("/…", text)
    text = _UUID.sub("…", text)
    text = _HEX.sub("…", text)
    text = _IPV4.sub(lambda m: keep(m[0]), text)
    text = _NUMBER.sub("…", text)
    text = _ID_NAME.sub(r"\1", text)
    return re.sub("\ue000(.)", lambda m: hosts[ord(m[1]) - 0xE100], text)


def cause_of(kind: str, error: str) -> tuple[str, str]:
    """(the cause's id — a RowKey —, its normalised text)."""
    text = normalise(error)
    return keys.alerting_row(f"{kind}\n{text.casefold()}"), text


# ------------------------------------------------------------------------------------------- the group row


def _now() -> datetime:
    return datetime.now(UTC)


def _load(row: dict[str, Any], field: str) -> Any:
    try:
        return json.loads(row.get(field) or "{}")
    except ValueError:
        return {}


def _members_json(members: dict[str, str]) -> str:
    """{id: name} as JSON; past MAX_MEMBERS_JSON characters the later members keep their id only."""
    text = json.dumps(members, ensure_ascii=False)
    if len(text) <= MAX_MEMBERS_JSON:
        return text
    kept: dict[str, str] = {}
    size = 2
    for mid, name in members.items():
        size += len(mid) + len(name) + 8
        kept[mid] = name if size <= MAX_MEMBERS_JSON else ""
    return json.dumps(kept, ensure_ascii=False)


class _Group:
    """A group's row, read with its ETag; `save` writes it back only if nobody changed it meanwhile."""

    def __init__(self, cause: str, row: dict[str, Any] | None) -> None:
        self.cause = cause
        self.etag = etag_of(row) if row is not None else None
        self.row: dict[str, Any] = dict(row or {"PartitionKey": PK, "RowKey": cause, "gen": 0, "state": IDLE})
        self.members: dict[str, str] = _load(self.row, "members")  # in ERROR now
        self.episode: dict[str, str] = _load(self.row, "episode")  # told (or to be told) in this episode
        self.left: dict[str, str] = _load(self.row, "left")  # member → when it last cleared (ISO)

    @property
    def state(self) -> str:
        return str(self.row.get("state") or IDLE)

    @property
    def gen(self) -> int:
        return int(self.row.get("gen") or 0)

    async def save(self, store: Store) -> None:
        now = _now()
        self.left = {m: at for m, at in self.left.items() if _age(at, now) < LEFT_KEEP}
        self.row.update(members=_members_json(self.members), episode=_members_json(self.episode),
                        left=json.dumps(self.left), updated_at=now)
        await store.put_row(self.row, etag=self.etag, create=self.etag is None)


def _age(iso: str, now: datetime) -> timedelta:
    try:
        return now - datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return LEFT_KEEP


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))  # jittered, growing: contenders spread out


# ------------------------------------------------------------------------------------------------ absorb


async def absorb(store: Store, settings: Settings, event: Event) -> str | None:
    """A MONITOR_ERROR / MONITOR_ERROR_CLEARED folded into its cause's group: the delivery status to record
    ("grouped"); None: deliver it as it is (a clear whose error was never grouped, a notice, another type)."""
    if "group" in event.details or not event.monitor_id:
        return None
    if event.type == EventType.MONITOR_ERROR:
        if settings.error_group_seconds <= 0:
            return None  # grouping off: each error is told at once, on its own
        return await _join(store, settings, event)
    if event.type == EventType.MONITOR_ERROR_CLEARED:
        return await _leave(store, settings, event)  # also with grouping off: a member of a group leaves it
    return None


async def _join(store: Store, settings: Settings, event: Event) -> str:
    error = str(event.details.get("error") or event.message or "")
    cause, text = cause_of(event.kind, error)
    mid, at = event.monitor_id, event.occurred_at.isoformat()
    for attempt in range(TRIES):
        group = _Group(cause, await store.get_row(PK, cause))
        schedule = False
        left = group.left.get(mid)
        if left is not None and left >= at:
            return "grouped"  # a redelivered error older than this member's last clear: it is over already
        if mid in group.members:
            # a redelivered event: schedule again if it opened the episode (the first try may have died before
            # scheduling; a second task is harmless, the flush is idempotent)
            if group.state == OPEN and group.row.get("opened_by") == event.id:
                await _schedule(store, settings, cause, group.gen, "error")
            return "grouped"
        if group.state == IDLE:  # a new episode
            group.row.update(gen=group.gen + 1, state=OPEN, kind=event.kind, cause=text, error=clip(error, 2000),
                             same=True, opened_by=event.id, opened_at=event.occurred_at)
            group.members, group.episode = {}, {}
            schedule = True
        elif str(group.row.get("error") or "") != clip(error, 2000):
            group.row["same"] = False  # the members' words differ: the notice says the cause's normalised text
        if group.state == CLEARING:
            group.row["state"] = TOLD  # failing again before the cleared notice went out: no cleared notice
        group.members[mid] = clip(event.monitor_name, 200) or mid
        group.episode[mid] = group.members[mid]
        try:
            await group.save(store)
        except Conflict:
            await _backoff(attempt)
            continue
        if schedule:
            await _schedule(store, settings, cause, group.gen, "error")
        log.info("checker error of %s (%s) joined group %s (%d members, %s)", event.monitor_name, event.kind,
                 cause, len(group.members), group.state)
        return "grouped"
    raise Conflict(f"group {cause}: too many concurrent changes")


async def _find(store: Store, kind: str, error: str, mid: str) -> str | None:
    """The group a member is in: its error's cause, or (when the words changed) any group naming it."""
    cause, _ = cause_of(kind, error)
    row = await store.get_row(PK, cause)
    if row is not None and (mid in _load(row, "members") or mid in _load(row, "left")):
        return cause
    for other in await store.list_rows(PK):
        if mid in _load(other, "members") or mid in _load(other, "left"):
            return str(other["RowKey"])
    return None


async def _leave(store: Store, settings: Settings, event: Event) -> str | None:
    mid, at = event.monitor_id, event.occurred_at.isoformat()
    cause = await _find(store, event.kind, str(event.details.get("error") or ""), mid)
    if cause is None:
        return None  # its error was never grouped (it went out before the storm guard): deliver the clear as is
    for attempt in range(TRIES):
        group = _Group(cause, await store.get_row(PK, cause))
        if mid not in group.members:
            return "grouped"  # cleared already (a redelivered clear)
        del group.members[mid]
        group.left[mid] = at
        schedule = False
        if group.state == OPEN:
            group.episode.pop(mid, None)  # never told: nor is its clear
            if not group.members:
                group.row["state"] = IDLE  # a flap: every member cleared before the notice went out
        elif not group.members and group.state == TOLD:
            group.row.update(state=CLEARING, cleared_by=event.id)
            schedule = True
        try:
            await group.save(store)
        except Conflict:
            await _backoff(attempt)
            continue
        if schedule:
            await _schedule(store, settings, cause, group.gen, "cleared")
        return "grouped"
    raise Conflict(f"group {cause}: too many concurrent changes")


async def _schedule(store: Store, settings: Settings, cause: str, gen: int, action: str) -> None:
    from shared.notify import tasks

    await tasks.schedule(store, "group", settings.error_group_seconds, cause=cause, gen=gen, action=action)


# ------------------------------------------------------------------------------------------------- flush


def _kind_words(kind: str, count: int) -> str:
    return f"{count} {kind} monitor" + ("" if count == 1 else "s")


def _names(members: dict[str, str]) -> list[str]:
    return [name or mid for mid, name in members.items()][:NAMES_IN_NOTICE]


def _notice(group: _Group, type_: EventType, members: dict[str, str]) -> Event:
    """The group's notice: for one member as that monitor's own (its id and name), else for "N kind monitors"."""
    kind = str(group.row.get("kind") or "")
    error = str(group.row.get("error") or "") if group.row.get("same", True) else str(group.row.get("cause") or "")
    names = _names(members)
    count = len(members)
    more = f" (+{count - len(names)} more)" if count > len(names) else ""
    ident = hashlib.sha256(f"{type_.value}:group:{group.cause}:{group.gen}".encode()).hexdigest()[:32]
    lone = count == 1
    mid, name = next(iter(members.items())) if lone else ("", _kind_words(kind, count))
    details: dict[str, Any] = {"error": error, "group": group.cause, "monitors": names, "count": count}
    if type_ == EventType.MONITOR_ERROR:
        message = f"Checker error: {error}" if lone else \
            f"The checker fails for {name}: {error}\nMonitors: {', '.join(names)}{more}"
        severity = "critical"
    else:
        message = "The checker works again." if lone else \
            f"The checker works again for {name}: {', '.join(names)}{more}"
        severity = "info"
    return Event(id=ident, type=type_, kind=kind, monitor_id=mid, monitor_name=(name or mid) if lone else name,
                 severity=severity, occurred_at=_now(), message=message, details=details)


async def flush(store: Store, _settings: Settings, task: dict[str, Any]) -> str:
    """The "group" task: publish the group's notice (action "error": its members fail; "cleared": they all work
    again), unless the episode moved on meanwhile (a flap, a member failing again, an older task)."""
    cause, gen, action = str(task.get("cause") or ""), int(task.get("gen") or 0), str(task.get("action") or "")
    for attempt in range(TRIES):
        row = await store.get_row(PK, cause) if cause else None
        if row is None:
            return "no such group"
        group = _Group(cause, row)
        if group.row.get("outbox"):  # a notice written but maybe not published (an earlier run died)
            await _publish(store, group)
            continue
        if group.gen != gen:
            return "nothing to flush (a newer episode)"
        if action == "error" and group.state == OPEN and group.members:
            notice = _notice(group, EventType.MONITOR_ERROR, group.members)
            group.episode = dict(group.members)
            group.row.update(state=TOLD)
        elif action == "cleared" and group.state == CLEARING and not group.members:
            notice = _notice(group, EventType.MONITOR_ERROR_CLEARED, group.episode)
            group.episode = {}
            group.row.update(state=IDLE)
        else:
            return "nothing to flush"
        group.row["outbox"] = notice.model_dump_json()
        try:
            await group.save(store)
        except Conflict:
            await _backoff(attempt)
            continue
        return await _publish(store, group)
    raise Conflict(f"group {cause}: too many concurrent changes")


async def _publish(store: Store, group: _Group) -> str:
    """Publish the notice in the row's outbox, then empty the outbox (only that field: members may have joined)."""
    from shared.notify.operator import publish_notice

    notice = Event.model_validate_json(str(group.row["outbox"]))
    await publish_notice(store, notice)
    for attempt in range(TRIES):
        row = await store.get_row(PK, group.cause)
        if row is None or row.get("outbox") != group.row["outbox"]:
            break
        try:
            await store.put_row(dict(row, outbox=""), etag=etag_of(row))
        except Conflict:
            await _backoff(attempt)
            continue
        break
    log.info("group %s: %s published (%s)", group.cause, notice.type.value, notice.monitor_name)
    return f"{notice.type.value} notice for {notice.monitor_name}"
