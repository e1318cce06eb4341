"""What an e-mail about an up/down monitor says (DOWN, UP, DEGRADED, RECOVERED, a certificate expiring): the URL,
the cause in plain words, when it started and ended and for how long — the subject, the first line and the table
of facts all from one `Window` (shared/text.py), so they agree — and human labels only.

Works on the event alone (its details as the website kind writes them; older events without some of them are told
with what they have).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.events import Event, EventType
from shared.outbound.errors import plain
from shared.text import Window, clock, date, expires_in, plural, timestamp

UPDOWN_TYPES = frozenset({EventType.MONITOR_DOWN, EventType.MONITOR_UP, EventType.MONITOR_DEGRADED,
                          EventType.MONITOR_RECOVERED_FROM_DEGRADED, EventType.CERTIFICATE_EXPIRING})


@dataclass
class Told:
    tag: str  # the subject's [TAG]
    summary: str  # the subject after "name: "
    headline: str  # the first line
    facts: list[tuple[str, str]] = field(default_factory=list)


def _dt(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _ms(value: Any) -> str | None:
    return f"{value:.0f} ms" if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _facts(event: Event, *rows: tuple[str, str | None]) -> list[tuple[str, str]]:
    url = event.details.get("url") or event.details.get("target")
    head: list[tuple[str, str | None]] = [("Monitor", event.monitor_name), ("URL", url)]
    return [(label, value) for label, value in (*head, *rows) if value]


def _down(event: Event) -> Told:
    d, at = event.details, event.occurred_at
    cause = plain(d.get("error")) or "unknown cause"
    since = _dt(d.get("since")) or at
    so_far = Window(since, at)
    failures = d.get("failures")
    rows = [("Status", "DOWN"), ("Cause", cause), ("Down since", timestamp(since)),
            ("Down for", f"{so_far.length} so far"),
            ("Failed checks", f"{failures} in a row" if isinstance(failures, int) else None),
            ("Last check", timestamp(at))]
    if d.get("reminder"):
        return Told("STILL DOWN", f"down for {so_far.length} (since {clock(since)}): {cause}",
                    f"{event.monitor_name} is still DOWN, for {so_far.length} now (since {clock(since)}): {cause}.",
                    _facts(event, *rows))
    return Told("DOWN", cause, f"{event.monitor_name} is DOWN since {clock(since)}: {cause}.", _facts(event, *rows))


def _up(event: Event) -> Told:
    d, at = event.details, event.occurred_at
    seconds = d.get("downtime_seconds")
    start = _dt(d.get("since")) or (at - timedelta(seconds=seconds) if isinstance(seconds, (int, float)) else None)
    slow = plain(d.get("still_slow"))
    status = f"UP, but slow: {slow}" if slow else "UP"
    tail = f" It is still slow: {slow}." if slow else ""
    cause = plain(d.get("cause")) or None
    if start is None:
        return Told("UP", "up again", f"{event.monitor_name} is UP again.{tail}",
                    _facts(event, ("Status", status), ("Back up at", timestamp(at)), ("Outage cause", cause),
                           ("Response time", _ms(d.get("latency_ms")))))
    window = Window(start, at)
    return Told("UP", f"up again {window.after('down')}", f"{event.monitor_name} is UP again {window.after('down')}."
                + tail, _facts(event, ("Status", status), ("Down from", timestamp(start)),
                               ("Back up at", timestamp(at)), ("Downtime", window.length), ("Outage cause", cause),
                               ("Response time", _ms(d.get("latency_ms")))))


def _degraded(event: Event) -> Told:
    d, at = event.details, event.occurred_at
    reason = plain(d.get("reason")) or "slow"
    since = _dt(d.get("since")) or at
    return Told("DEGRADED", reason, f"{event.monitor_name} is slow (DEGRADED) since {clock(since)}: {reason}.",
                _facts(event, ("Status", "DEGRADED (slow)"), ("Cause", reason), ("Slow since", timestamp(since)),
                       ("Response time", _ms(d.get("latency_ms")))))


def _recovered(event: Event) -> Told:
    d, at = event.details, event.occurred_at
    start = _dt(d.get("since"))
    latency = ("Response time", _ms(d.get("latency_ms")))
    if start is None:
        return Told("RECOVERED", "responds normally again", f"{event.monitor_name} responds normally again.",
                    _facts(event, ("Status", "UP"), ("Normal again at", timestamp(at)), latency))
    window = Window(start, at)
    return Told("RECOVERED", f"responds normally again {window.after('slow')}",
                f"{event.monitor_name} responds normally again {window.after('slow')}.",
                _facts(event, ("Status", "UP"), ("Slow from", timestamp(start)), ("Normal again at", timestamp(at)),
                       ("Slow for", window.length), latency))


def _certificate(event: Event) -> Told:
    d = event.details
    left = d.get("days_left")
    expiry = _dt(d.get("expires_at"))
    if not isinstance(left, int) or expiry is None:
        return Told("CERTIFICATE", event.message, event.message, _facts(event))
    words = expires_in(left)
    url = d.get("url")
    nxt = d.get("next_warning_days")
    reminder = (None if not isinstance(nxt, int) else
                f"at {plural(nxt, 'day')} left" if nxt > 0 else "when it has expired")
    return Told("CERTIFICATE", f"TLS certificate {words} ({date(expiry)})",
                f"The TLS certificate of {url or event.monitor_name} {words} ({date(expiry)}, {clock(expiry)}).",
                _facts(event, ("Certificate expires", timestamp(expiry)),
                       ("Days left", plural(left, "day") if left > 0 else "none: it has expired"),
                       ("Next reminder", reminder or "none")))


_TELL = {EventType.MONITOR_DOWN: _down, EventType.MONITOR_UP: _up, EventType.MONITOR_DEGRADED: _degraded,
         EventType.MONITOR_RECOVERED_FROM_DEGRADED: _recovered, EventType.CERTIFICATE_EXPIRING: _certificate}


def tell(event: Event) -> Told:
    """The subject's tag and summary, the first line and the facts of an up/down event."""
    return _TELL[event.type](event)
