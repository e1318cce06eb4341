"""Checks from several locations (CHECK_LOCATIONS), and the quorum that turns them into one status.

Each location's app runs its own timers and checks the monitors that list it (`locations`; default: all). What a
location sees is judged by the kind exactly as a single-location monitor's results are (thresholds and all), in
that location's own state row, and its checks are stored under that row's id (`keys.series_id`: results, blocks,
uptime per location). The monitor's own state row holds the verdict over its fresh locations:

- DOWN (whatever the kind calls red) when at least `quorum` of them are down in their latest state — default all
  but two, at least one (Application Insights' rule), and never more than the locations that are fresh;
- the kind's `regional_status` (DEGRADED) while some, but fewer, are: a REGIONAL_ISSUE event, to the operator,
  and REGIONAL_ISSUE_CLEARED once none are;
- otherwise what the kind makes of the healthiest verdict (UP, or DEGRADED when a location finds it slow).

The verdict is fed to the kind's own `evaluate` (with `quorum_config`: its thresholds were already applied per
location), so DOWN, UP, downtime windows, reminders, maintenance and dependencies work as for one location, and
the events name the locations. A location whose timer has not run for STALE_PERIODS of the monitor's period is
stale: shown as such and left out of the quorum, never counted as a failure. Both rows are written in one
ETag-guarded transaction, only when one of them changes: a steady check writes nothing, as everywhere.

A kind without `regional_status` is checked by the first location only. With one location none of this runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitors.contract import CheckResult, Outcome
from shared.events import Event, EventType
from shared.storage import keys
from shared.text import clip

if TYPE_CHECKING:
    from monitors.base import MonitorBase
    from monitors.contract import Evaluation, Kind
    from shared.engine.gate import Hold
    from shared.engine.settle import Outcome as Settled
    from shared.settings import Settings
    from shared.storage import OutboxRow, StateRow, Store

LOC_KEY = "_loc"  # in the monitor's state: {location: [its own status, its error]}
REGIONAL_KEY = "_regional"  # the locations of an ongoing regional issue
TOLD_KEY = "_told"  # … and whether REGIONAL_ISSUE was sent for it
STALE_PERIODS = 3


@dataclass
class Where:
    """This app's location, the deployment's, and when each location's timer of the kind last ran."""

    here: str
    everywhere: tuple[str, ...]
    heartbeats: dict[str, datetime]
    now: datetime

    @classmethod
    def of(cls, settings: Settings, meta: dict[str, Any], now: datetime) -> Where | None:
        """From a kind's meta (kind_meta_and_defs); None with one location."""
        if not settings.locations or not settings.check_location:
            return None
        beats = {loc: row["last_tick_at"] for loc, row in meta.get("locations", {}).items()
                 if isinstance(row.get("last_tick_at"), datetime)}
        beats[settings.check_location] = now  # this one is running
        return cls(settings.check_location, settings.locations, beats, now)

    @property
    def primary(self) -> bool:
        return self.here == self.everywhere[0]

    def covers(self, kind: Kind[Any]) -> bool:
        """Whether the kind is checked from every location (else from the first one only)."""
        return kind.regional_status is not None

    def locations_of(self, cfg: MonitorBase) -> list[str]:
        listed = getattr(cfg, "locations", None)
        return [loc for loc in self.everywhere if not listed or loc in listed]

    def checks(self, cfg: MonitorBase) -> bool:
        return self.here in self.locations_of(cfg)

    def fresh(self, cfg: MonitorBase) -> list[str]:
        limit = self.now - timedelta(seconds=STALE_PERIODS * max(60, period_seconds(cfg)))
        return [loc for loc in self.locations_of(cfg) if self.heartbeats.get(loc, limit) > limit]

    def quorum(self, cfg: MonitorBase) -> int:
        return int(getattr(cfg, "quorum", None) or max(1, len(self.locations_of(cfg)) - 2))


async def where_now(store: Store, settings: Settings, kind: str, now: datetime) -> Where | None:
    if not settings.locations:
        return None
    meta, _ = await store.kind_meta_and_defs(kind)
    return Where.of(settings, meta, now)


def period_seconds(cfg: MonitorBase) -> int:
    from monitors.base import latest_slot, next_slot

    if not cfg.cron:
        return cfg.interval_seconds or 300
    now = datetime.now().astimezone()
    return int((next_slot(cfg, now) - latest_slot(cfg, now)).total_seconds())


def series_of(monitor_id: str, locations: tuple[str, ...]) -> list[str]:
    return keys.series_ids(monitor_id, locations)


# ------------------------------------------------------------------------------------------- the verdict


@dataclass
class Verdict:
    result: CheckResult  # what the kind's evaluate is given for the monitor as a whole
    down: list[str]  # fresh locations that see it down
    regional: list[str]  # … when fewer than the quorum (else empty)
    stale: list[str]
    alone: bool = False  # no location has a verdict yet: the monitor is judged on this check alone


def verdict(kind: Kind[Any], cfg: MonitorBase, where: Where, statuses: dict[str, list[Any]],
            own: CheckResult) -> Verdict:
    """Pure: the monitor's result from its locations' own statuses ({location: [status, error]})."""
    info = kind.statuses.info
    fresh = where.fresh(cfg)
    stale = [loc for loc in where.locations_of(cfg) if loc not in fresh]
    judged = [loc for loc in fresh if statuses.get(loc, ["PENDING"])[0] not in ("PENDING", "ERROR")]
    if not judged:  # nobody has a verdict yet (or every fresh location's checker is broken): this check's own
        return Verdict(own, [], [], stale, alone=True)
    down = [loc for loc in judged if _info(info, statuses[loc][0]).red]
    errors = [f"{loc}: {statuses[loc][1]}" for loc in down if statuses[loc][1]]
    own_ok = own.outcome in ("up", "degraded")
    if len(down) >= max(1, min(where.quorum(cfg), len(judged))):
        text = clip(f"down from {', '.join(down)}" + (f" ({'; '.join(errors)})" if errors else ""), 1000)
        return Verdict(CheckResult("down", None if own_ok else own.latency_ms, text,
                                   {} if own_ok else own.data, own.checked_at), down, [], stale)
    slow = [loc for loc in judged if loc not in down and not _info(info, statuses[loc][0]).healthy]
    if own_ok and (own.outcome == "degraded") == bool(slow):
        return Verdict(own, down, down, stale)
    outcome: Outcome = "degraded" if slow else "up"
    reason = f"slow from {', '.join(slow)}" if slow else None
    return Verdict(CheckResult(outcome, own.latency_ms if own_ok else None, reason, own.data if own_ok else {},
                               own.checked_at), down, down, stale)


def _info(info: dict[str, Any], status: str) -> Any:
    from monitors.contract import StatusInfo

    return info.get(status) or StatusInfo(status, "grey", 0)


def regional_events(kind: Kind[Any], cfg: MonitorBase, told: bool, regional: list[str], was_ok: bool, down: bool,
                    at: datetime) -> tuple[list[Event], bool]:
    """(events, whether the regional issue now stands told): REGIONAL_ISSUE when one starts on a monitor that was
    fine (one left over while a DOWN recovers location by location is part of that DOWN's story), and
    REGIONAL_ISSUE_CLEARED when a told one ends without becoming a DOWN (which tells its own story)."""
    if regional and not told and was_ok:
        return [Event(type=EventType.REGIONAL_ISSUE, kind=kind.name, monitor_id=cfg.id or "",
                      monitor_name=cfg.name, severity="warning", occurred_at=at,
                      message=f"{cfg.name} is down from {', '.join(regional)} (fewer than its quorum)",
                      details={"locations_down": regional})], True
    if told and not regional and not down:
        return [Event(type=EventType.REGIONAL_ISSUE_CLEARED, kind=kind.name, monitor_id=cfg.id or "",
                      monitor_name=cfg.name, severity="info", occurred_at=at,
                      message=f"{cfg.name} is seen up from every location again", details={"locations_down": []})], \
            False
    return [], told and bool(regional)


def name_locations(evaluation: Evaluation, statuses: dict[str, list[Any]], stale: list[str]) -> None:
    """Every event of the combined evaluation says what each location saw."""
    seen = {loc: ("stale" if loc in stale else value[0]) for loc, value in sorted(statuses.items())}
    for event in evaluation.events:
        event.details.setdefault("locations", seen)


# ------------------------------------------------------------------------------------------- settling


async def settle_located(store: Store, kind: Kind[Any], cfg: MonitorBase, where: Where,
                         states: dict[str, StateRow], result: CheckResult, slot: datetime, checked_at: datetime,
                         hold: Hold) -> tuple[Settled, list[OutboxRow]]:
    """One location's check of a monitor: its own state, then the monitor's verdict; both committed together
    when either changed (retried on ETag conflicts, re-read), nothing written when neither did. `states` is the
    run's view, updated with what was written."""
    from shared.engine.outbox import payloads
    from shared.engine.settle import ENGINE_KEYS, evaluate, unchanged
    from shared.engine.settle import Outcome as Settled
    from shared.storage import Conflict

    mid, sid, slot_key = cfg.id or "", keys.series_id(cfg.id or "", where.here), slot.isoformat()
    outcome = Settled(mid, cfg.name, slot, result, checked_at=checked_at, series_id=sid, location=where.here,
                      maintenance=hold.occurrence.window_id if hold.occurrence else None)
    for _ in range(6):
        own_row, row = states.get(sid), states.get(mid)
        if own_row is not None and own_row.data.get("last_slot") == slot_key:
            outcome.duplicate, outcome.status = True, row.status if row else own_row.status
            return outcome, []
        prev_own = {k: v for k, v in own_row.data.items() if k not in ENGINE_KEYS} if own_row else {}
        own = kind.evaluate(cfg, prev_own, result, checked_at)  # this location's judgement; its events are not sent
        own_changed = own.state != prev_own or own.status != (own_row.status if own_row else None)
        before: dict[str, list[Any]] = dict(row.data.get(LOC_KEY, {})) if row else {}
        statuses = dict(before)
        if own_changed or where.here not in statuses:
            healthy = _info(kind.statuses.info, own.status).healthy
            statuses[where.here] = [own.status, None if healthy else clip(result.error, 300)]
        found = verdict(kind, cfg, where, statuses, result)
        combined, held, prev = evaluate(kind, kind.quorum_config(cfg), row, found.result, checked_at, hold)
        was_regional = list(row.data.get(REGIONAL_KEY, [])) if row else []
        was_ok = not was_regional and not (row is not None and _info(kind.statuses.info, row.status).red)
        is_down = bool(found.down) and not found.regional
        regional_events_, told = regional_events(kind, cfg, bool(row and row.data.get(TOLD_KEY)), found.regional,
                                                 was_ok, is_down, checked_at)
        combined.events += regional_events_
        if not found.alone:  # this location's checker broke (or works again) while others still judge: the
            for event in own.events:  # operator hears it, naming the location
                if event.type in (EventType.MONITOR_ERROR, EventType.MONITOR_ERROR_CLEARED):
                    event.message = f"{event.message} (from {where.here})"
                    event.details["location"] = where.here
                    combined.events.append(event)
        name_locations(combined, statuses, found.stale)
        status = combined.status
        if found.regional and kind.regional_status and _info(kind.statuses.info, status).healthy:
            status = kind.regional_status
        state = {**combined.state, LOC_KEY: statuses,
                 **({REGIONAL_KEY: found.regional} if found.regional else {}), **({TOLD_KEY: True} if told else {})}
        changed = (not unchanged(combined, prev, held) or statuses != before or found.regional != was_regional
                   or status != (row.status if row else None))
        outcome.status = status
        if not own_changed and not changed:
            outcome.steady = True
            return outcome, []
        writes = []
        if own_changed:
            writes.append((sid, {**own.state, "last_slot": slot_key}, own.status, own_row.etag if own_row else None))
        if changed:
            writes.append((mid, state, status, row.etag if row else None))
        try:
            rows = await store.commit_states(kind.name, writes, mid, payloads(combined.events, combined.ops, held))
        except Conflict:
            for state_id in (sid, mid):
                fresh = await store.get_state(kind.name, state_id)
                if fresh is None:
                    states.pop(state_id, None)
                else:
                    states[state_id] = fresh
            continue
        outcome.events = [e.type.value for e in combined.events]
        return outcome, rows
    raise RuntimeError(f"state of monitor {mid} kept changing; gave up after 6 attempts")
