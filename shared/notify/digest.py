"""The digest: one message per channel, daily or weekly, across every kind — what is wrong now (sites down or
flapping, stock breaches and stock-out forecasts, parts lists short, resources in WARNING/ALERT, alert rules
firing, checker errors), what changed in the period (events by type, the status changes) and each monitor's
uptime over it.

`build_digest` only reads storage: the monitors' live states (shared/snapshots/views.py `live_states`), the
events of the period (newest first, month partitions), the downtime windows, each kind's latest result where the
state does not carry the numbers (a resource's metrics, a parts list's shortfall), the alert rules' states, and
uptime from shared/uptime.py (the one home of uptime: nothing is recounted here). Rendering is
shared/notify/digest_render.py's, when a digest is due and how it is sent shared/notify/digest_due.py's.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from monitors import KINDS, from_entity, status_info
from shared import uptime as uptimes
from shared.aio import gather_bounded
from shared.events import SILENT_TYPES, EventType
from shared.text import clip

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Store

log = logging.getLogger("monitor.digest")

DAY, WEEK = timedelta(days=1), timedelta(days=7)
MAX_EVENTS = 20_000  # events read per digest (beyond: `events_truncated`)
MAX_CHANGES = 50  # status changes listed ("+N more" after them)
FLAPPING_DOWNS = 3  # DOWN events in the period that make a site "flapping"
CONCURRENCY = 16


class MonitorLine(BaseModel):
    id: str
    name: str
    kind: str
    status: str
    since: str | None = None
    uptime_percent: float | None = Field(None, description="Over the period (shared/uptime); None: no checks.")
    checks: int = 0


class Outage(BaseModel):
    """A site (any up/down monitor) that was down in the period, is down now, or is flapping."""

    id: str
    name: str
    down_now: bool
    flapping: bool
    down_events: int = Field(0, description="DOWN events in the period (reminders not counted).")
    outages: int = Field(0, description="Downtime windows overlapping the period.")
    downtime_seconds: int = Field(0, description="Downtime within the period (downtimes table).")
    down_since: str | None = None
    reason: str | None = None

    @property
    def problem(self) -> bool:
        return self.down_now or self.flapping


class StockLine(BaseModel):
    id: str
    name: str
    status: str
    quantity: int | None = None
    threshold: int | None = Field(None, description="The threshold breached (low or high).")
    breach_since: str | None = None
    consumption_per_day: float | None = None
    days_to_stockout: float | None = None
    stockout_at: str | None = None
    forecast_alert: bool = Field(False, description="The forecast is closer than the monitor's stockout_alert_days.")


class PartsLine(BaseModel):
    id: str
    name: str
    kits: int | None = None
    lines: int | None = None
    lines_short: int | None = None
    total_missing: float | None = None
    kits_buildable: int | None = None
    since: str | None = None


class ResourceLine(BaseModel):
    id: str
    name: str
    status: str
    since: str | None = None
    metrics: list[str] = Field(default_factory=list, description='The metrics not OK: "cpu 97.0 % (ALERT)".')


class RuleLine(BaseModel):
    id: str
    name: str
    metric: str
    severity: str
    value: float | None = None
    since: str | None = None


class ErrorLine(BaseModel):
    id: str
    name: str
    kind: str
    since: str | None = None
    error: str | None = None


class Change(BaseModel):
    monitor_id: str
    monitor: str
    kind: str
    from_status: str | None = None
    to_status: str
    at: datetime


class Digest(BaseModel):
    title: str = Field(..., description='"Daily digest" or "Weekly digest".')
    since: datetime
    until: datetime
    problems: int
    changes: int = Field(..., description="Status changes in the period (all of them; `status_changes` is capped).")
    events: int
    events_truncated: bool = False
    events_by_type: dict[str, int]
    outages: list[Outage]
    stock: list[StockLine]
    parts: list[PartsLine]
    resources: list[ResourceLine]
    rules: list[RuleLine]
    errors: list[ErrorLine]
    monitors: list[MonitorLine]
    status_changes: list[Change]
    more_changes: int = 0


def title_of(since: datetime, until: datetime) -> str:
    return "Weekly digest" if until - since > 2 * DAY else "Daily digest"


# ------------------------------------------------------------------------------------------- status changes

# event type → (the status it leaves, the status it enters); None: read from the event or the next one
_TRANSITIONS: dict[str, tuple[str | None, str | None]] = {
    EventType.MONITOR_DOWN: ("UP", "DOWN"),
    EventType.MONITOR_UP: ("DOWN", "UP"),
    EventType.MONITOR_DEGRADED: ("UP", "DEGRADED"),
    EventType.MONITOR_RECOVERED_FROM_DEGRADED: ("DEGRADED", "UP"),
    EventType.MONITOR_ERROR: (None, "ERROR"),
    EventType.MONITOR_ERROR_CLEARED: ("ERROR", None),
    EventType.THRESHOLD_BREACH_LOW: ("OK", "LOW"),
    EventType.THRESHOLD_BREACH_HIGH: ("OK", "HIGH"),
    EventType.THRESHOLD_CLEARED: (None, "OK"),
    EventType.RESOURCE_ALERT: (None, None),
    EventType.RESOURCE_WARNING: (None, None),
    EventType.RESOURCE_RECOVERED: (None, None),
    EventType.ALERT_RULE_FIRING: ("OK", "FIRING"),
    EventType.ALERT_RULE_RESOLVED: ("FIRING", "OK"),
    EventType.PARTS_REPORT: (None, None),
}


def _details(row: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(row.get("details") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _transition(row: dict[str, Any], details: dict[str, Any]) -> tuple[str | None, str | None] | None:
    """(from, to) of a status-changing event; None for other events and for reminders."""
    kind = row.get("type") or ""
    if kind not in _TRANSITIONS or details.get("reminder"):
        return None
    before, after = _TRANSITIONS[kind]
    if kind == EventType.THRESHOLD_CLEARED:
        before = str(details.get("cleared") or "").upper() or None
    elif kind.startswith("RESOURCE_"):
        before, after = details.get("previous_status"), details.get("status")
    elif kind == EventType.PARTS_REPORT:
        after = "ERROR" if details.get("critical") else "SHORT" if details.get("lines_short") else "OK"
    return before, after


def status_changes(events: list[dict[str, Any]], current: dict[str, str]) -> list[Change]:
    """The status changes the period's events tell, oldest first. A monitor's next change says where an unknown
    one went (a checker error cleared), its current status the last; a parts report that changed nothing is none."""
    per_monitor: dict[str, list[tuple[dict[str, Any], str | None, str | None]]] = {}
    for row in sorted(events, key=lambda r: r["occurred_at"]):
        details = row["_details"]
        step = _transition(row, details)
        if step is not None:
            per_monitor.setdefault(row.get("monitor_id") or "", []).append((row, *step))
    out: list[Change] = []
    for monitor_id, steps in per_monitor.items():
        previous: str | None = None
        for n, (row, before, after) in enumerate(steps):
            if after is None:
                after = next((b for _, b, _ in steps[n + 1:] if b), None) or current.get(monitor_id) or "?"
            before = previous or before
            previous = after
            if before == after or (row["type"] == EventType.PARTS_REPORT and before is None and after == "OK"):
                continue
            out.append(Change(monitor_id=monitor_id, monitor=row.get("monitor_name") or monitor_id,
                              kind=row.get("kind") or "", from_status=before, to_status=after,
                              at=row["occurred_at"]))
    return sorted(out, key=lambda c: c.at)


# ---------------------------------------------------------------------------------------------- problems


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


def _overlap(window: dict[str, Any], since: datetime, until: datetime) -> int:
    start = max(window["started_at"], since)
    end = min(window.get("ended_at") or until, until)
    return max(0, round((end - start).total_seconds()))


def _is_updown(kind: str) -> bool:
    from monitors.policy import UpDownKind

    return kind in KINDS and isinstance(KINDS[kind], UpDownKind)


async def _outages(store: Store, monitors: list[dict[str, Any]], downs: dict[str, int], since: datetime,
                   until: datetime) -> list[Outage]:
    touched = [m for m in monitors if _is_updown(m["kind"] or "")
               and (m["state"].get("down_since") or m["id"] in downs or m["status"] == "DOWN")]

    async def one(m: dict[str, Any]) -> Outage:
        windows = [w for w in await store.list_downtimes(m["id"], limit=500)
                   if w["started_at"] < until and (w.get("ended_at") is None or w["ended_at"] > since)]
        open_window = next((w for w in windows if w.get("ended_at") is None), None)
        return Outage(id=m["id"], name=m["name"], down_now=m["status"] == "DOWN",
                      flapping=downs.get(m["id"], 0) >= FLAPPING_DOWNS, down_events=downs.get(m["id"], 0),
                      outages=len(windows), downtime_seconds=sum(_overlap(w, since, until) for w in windows),
                      down_since=m["state"].get("down_since"),
                      reason=clip((open_window or (windows[0] if windows else {})).get("reason") or None, 300))

    found = await gather_bounded(touched, one, CONCURRENCY)
    return sorted((o for o in found if o.problem or o.downtime_seconds or o.down_events),
                  key=lambda o: (not o.down_now, not o.flapping, -o.downtime_seconds, o.name.lower()))


def _stock(m: dict[str, Any], until: datetime) -> StockLine | None:
    from monitors.stock import forecast

    state, status = m["state"], m["status"]
    quantity = state.get("quantity")
    try:
        cfg: Any = from_entity(m["entity"])
    except (ValueError, KeyError):  # an unreadable definition keeps its state: shown without thresholds
        cfg = None
    fc = forecast(state.get("history") or [], int(quantity), until) if quantity is not None else {}
    alert_days = getattr(cfg, "stockout_alert_days", None)
    days = fc.get("days_to_stockout")
    alert = bool(alert_days and days is not None and days <= alert_days)
    if not status_info(status).breach and not alert:
        return None
    breach = state.get("breach")
    threshold = getattr(cfg, f"threshold_{breach}", None) if breach in ("low", "high") else None
    return StockLine(id=m["id"], name=m["name"], status=status, quantity=quantity, threshold=threshold,
                     breach_since=state.get("breach_since"), consumption_per_day=fc.get("consumption_per_day"),
                     days_to_stockout=days, stockout_at=_iso(fc.get("stockout_at")), forecast_alert=alert)


async def _latest(store: Store, m: dict[str, Any]) -> dict[str, Any]:
    rows = await store.query_results(m["id"], limit=1)
    return rows[0] if rows else {}


async def _parts(store: Store, m: dict[str, Any]) -> PartsLine:
    row = await _latest(store, m)
    kits = m["entity"].get("spec")
    try:
        kits = json.loads(kits or "{}").get("kits")
    except ValueError:
        kits = None
    return PartsLine(id=m["id"], name=m["name"], kits=kits, lines=row.get("lines"), lines_short=row.get("lines_short"),
                     total_missing=row.get("total_missing"), kits_buildable=row.get("kits_buildable"),
                     since=m["state"].get("since"))


async def _resource(store: Store, m: dict[str, Any]) -> ResourceLine:
    from monitors.resource.evaluate import value_text

    view = KINDS[m["kind"]].readings(await _latest(store, m)) or {}
    bad = [d for d in view.get("details") or [] if isinstance(d, dict) and d.get("status") not in (None, "OK")]
    bad.sort(key=lambda d: -status_info(str(d.get("status"))).severity)
    texts = []
    for metric in bad:
        try:
            texts.append(f"{metric['name']} {value_text(metric)} ({metric['status']})")
        except (KeyError, TypeError, ValueError):
            texts.append(f"{metric.get('name')} ({metric.get('status')})")
    return ResourceLine(id=m["id"], name=m["name"], status=m["status"], since=m["state"].get("since"), metrics=texts)


async def _rules(store: Store) -> list[RuleLine]:
    from shared.rules.service import list_rules

    return [RuleLine(id=r["id"], name=r["name"], metric=r["metric"], severity=r["severity"],
                     value=r["state"]["value"], since=r["state"]["since"])
            for r in await list_rules(store) if r.get("enabled", True) and r["state"]["firing"]]


# ------------------------------------------------------------------------------------------------- build


async def build_digest(store: Store, settings: Settings, since: datetime, until: datetime,  # noqa: ARG001
                       title: str | None = None) -> Digest:
    """The digest of the period (since, until]: reads storage, sends nothing."""
    from shared.snapshots.views import live_states

    monitors = [m for m in await live_states(store) if m["enabled"]]
    events = await store.list_events_between(since, until, limit=MAX_EVENTS,
                                             select=["type", "kind", "monitor_id", "monitor_name", "occurred_at",
                                                     "details"])
    events = [e for e in events if e.get("type") not in SILENT_TYPES]
    by_type: dict[str, int] = {}
    downs: dict[str, int] = {}
    for row in events:
        row["_details"] = _details(row)
        by_type[row.get("type") or "?"] = by_type.get(row.get("type") or "?", 0) + 1
        if row.get("type") == EventType.MONITOR_DOWN and not row["_details"].get("reminder"):
            downs[row.get("monitor_id") or ""] = downs.get(row.get("monitor_id") or "", 0) + 1

    known = await uptimes.everyone(store, since, [m["id"] for m in monitors])
    tallies = [known.tally(m["id"]) for m in monitors]
    lines = [MonitorLine(id=m["id"], name=m["name"], kind=m["kind"] or "", status=m["status"], since=m["since"],
                         uptime_percent=t.percent, checks=t.checks) for m, t in zip(monitors, tallies, strict=True)]
    lines.sort(key=lambda line: (-status_info(line.status).severity, line.kind, line.name.lower()))

    outages = await _outages(store, monitors, downs, since, until)
    stock = [s for s in (_stock(m, until) for m in monitors if m["kind"] == "stock") if s is not None]
    stock.sort(key=lambda s: (s.status == "OK", s.days_to_stockout if s.days_to_stockout is not None else 1e9))
    parts = await gather_bounded([m for m in monitors if m["kind"] == "parts" and m["status"] == "SHORT"],
                                 lambda m: _parts(store, m), CONCURRENCY)
    readers = [m for m in monitors if m["kind"] in KINDS and KINDS[m["kind"]].readings(None) is not None
               and status_info(m["status"]).breach]
    resources = sorted(await gather_bounded(readers, lambda m: _resource(store, m), CONCURRENCY),
                       key=lambda r: (-status_info(r.status).severity, r.name.lower()))
    rules = await _rules(store)
    errors = [ErrorLine(id=m["id"], name=m["name"], kind=m["kind"] or "", since=m["since"],
                        error=clip(m["state"].get("error"), 300)) for m in monitors if m["status"] == "ERROR"]

    changes = status_changes(events, {m["id"]: m["status"] for m in monitors})
    problems = sum(o.problem for o in outages) + len(stock) + len(parts) + len(resources) + len(rules) + len(errors)
    return Digest(title=title or title_of(since, until), since=since, until=until, problems=problems,
                  changes=len(changes), events=len(events), events_truncated=len(events) >= MAX_EVENTS,
                  events_by_type=dict(sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))), outages=outages,
                  stock=stock, parts=parts, resources=resources, rules=rules, errors=errors, monitors=lines,
                  status_changes=changes[-MAX_CHANGES:], more_changes=max(0, len(changes) - MAX_CHANGES))
