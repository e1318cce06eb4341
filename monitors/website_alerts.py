"""What a website monitor tells besides up and down: certificate warnings at 14 (`cert_warning_days`), 7, 3 and 1
days left and once expired — once each per certificate — and what its recovery e-mails need from the state (the
cause of an outage, when a slow spell began)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from monitors.contract import CheckResult, Evaluation
from shared.events import Event, EventType
from shared.text import clock, date, days_left, expires_in

if TYPE_CHECKING:
    from monitors.website import Config


CERT_REMINDERS = (7, 3, 1)  # days left at which a certificate warning is repeated, once each per certificate


def cert_stages(warning_days: int) -> list[int]:
    """Days left at which a certificate is warned about, largest first: `cert_warning_days`, the reminders below
    it, and 0 (it has expired)."""
    return sorted({warning_days, 0, *(d for d in CERT_REMINDERS if d < warning_days)}, reverse=True)


def certificate_warning(cfg: Config, state: dict[str, Any], result: CheckResult, now: datetime,
                         url: str) -> Event | None:
    """A CERTIFICATE_EXPIRING when the certificate reaches a stage (14, 7, 3, 1 days left, expired) it was not yet
    warned about; days are counted as a person does (days_left: 2.97 days is 3)."""
    expiry = result.data.get("cert_expires_at")
    if not isinstance(expiry, datetime):
        return None
    left = days_left(expiry, now)
    stages = cert_stages(cfg.cert_warning_days)
    reached = [stage for stage in stages if left <= stage]
    if not reached:
        return None
    stage, key = reached[-1], expiry.isoformat()
    if state.get("cert_warned_for") == key:
        warned = state.get("cert_warned_days")
        if warned is None:  # warned by a version without reminders: the next one at the next stage
            state["cert_warned_days"] = stage
            return None
        if stage >= int(warned):
            return None
    state["cert_warned_for"], state["cert_warned_days"] = key, stage
    later = [s for s in stages if s < stage]
    when = f"{date(expiry)}, {clock(expiry)}"
    return Event(type=EventType.CERTIFICATE_EXPIRING, kind=cfg.kind, monitor_id=cfg.id or "", monitor_name=cfg.name,
                 severity="warning" if left > 1 else "critical", occurred_at=now,
                 message=f"The TLS certificate of {url} {expires_in(left)} ({when}).",
                 details={"url": url, "days_left": left, "expires_at": expiry.isoformat(),
                          "next_warning_days": later[0] if later else None})


def remember_spells(ev: Evaluation, prev: dict[str, Any], result: CheckResult, now: datetime) -> None:
    """What the recovery e-mails tell: the cause of an outage (`down_reason`) and when a slow spell began
    (`slow_since`), kept in the state while they last and put into the events that end them."""
    state = ev.state
    for event in ev.events:
        details = event.details
        if event.type == EventType.MONITOR_DOWN and not details.get("reminder"):
            state["down_reason"] = result.error
        elif event.type == EventType.MONITOR_UP:
            details.update({k: v for k, v in (("since", prev.get("down_since")), ("cause", prev.get("down_reason")),
                                              ("still_slow", result.error if result.outcome == "degraded" else None))
                            if v is not None})
        elif event.type == EventType.MONITOR_DEGRADED:
            details["since"] = now.isoformat()
        elif event.type == EventType.MONITOR_RECOVERED_FROM_DEGRADED and prev.get("slow_since"):
            details["since"] = prev["slow_since"]
    if ev.status == "DEGRADED":
        state.setdefault("slow_since", now.isoformat())
    elif ev.status != "ERROR":
        state.pop("slow_since", None)
    if ev.status not in ("DOWN", "ERROR"):
        state.pop("down_reason", None)
