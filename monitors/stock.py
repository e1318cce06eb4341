"""Stock of WHMCS products: quantity, change type, thresholds and a stock-out forecast.

One `GetProducts` request per cycle fetches every monitored product (`pid` as a comma list), whatever the
number of monitors; `evaluate` turns each product's quantity into a record and events:

- record (result row): `quantity`, `delta` (current − previous; 0 for the first record), `change_type`
  (initial / restock / purchase / unchanged), `threshold_breached`, `threshold_type` (low: qty ≤ low,
  high: qty ≥ high; low wins when both hold), the forecast (`consumption_per_day`, `days_to_stockout`,
  `stockout_at`), and `product_name` as WHMCS calls it.
- events: STOCK_INCREASED / STOCK_DECREASED (notify_on_restock / notify_on_purchase), THRESHOLD_BREACH_LOW /
  HIGH when a breach begins and again every `renotify_minutes` while it lasts, THRESHOLD_CLEARED when it
  ends (all three: notify_on_threshold), STOCKOUT_FORECAST once between restocks when the projected stock-out
  is closer than `stockout_alert_days`. A check that cannot read the product is an ERROR result: the shared
  policy (monitors/policy.py) tells the operator once, never the monitor's audience.
- status: OK, LOW, HIGH (ERROR, PENDING as for every kind).

The state changes only when the quantity, the breach or the WHMCS product name changes (or a reminder is
due), so an unchanged product costs one batched result row per cycle and no state write.

Forecast: the average purchase rate over the last `HISTORY` quantity changes kept in the state — units sold
(the sum of the decreases) divided by the time from the oldest kept change until now — needs at least
`MIN_PURCHASES` decreases; stock-out = quantity / rate from now. Restocks do not count as negative demand.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from monitors.base import MonitorBase
from monitors.contract import CheckContext, CheckResult, Evaluation, Kind, Sample, Vocabulary, as_text, healthy, warning
from monitors.policy import REMINDER, error_policy
from shared.events import Event, EventType
from shared.secrets import scrub
from shared.text import clip

KIND = "stock"
HISTORY = 10  # quantity changes kept in the state for the forecast
MIN_PURCHASES = 2  # decreases needed before a forecast is made
FORECAST_KEYS = ("consumption_per_day", "days_to_stockout", "stockout_at")
# The fields of a stock record that may be null (the first record has no previous quantity, a record without a
# breach no threshold type, one without a trend no forecast). Table Storage keeps no nulls, so `result_view` puts
# them back: a record reads the same from run-now and from storage.
NULLABLE = ("previous_quantity", "threshold_type", *FORECAST_KEYS)

log = logging.getLogger("monitor.stock")


class StockStatus(StrEnum):
    PENDING = "PENDING"
    OK = "OK"
    LOW = "LOW"
    HIGH = "HIGH"
    ERROR = "ERROR"


class Config(MonitorBase):
    kind: Literal["stock"] = "stock"
    name: str = Field("", max_length=200, description="Display name; empty = the product's name in WHMCS.")
    product_id: int = Field(..., ge=1, le=2**31 - 1, description="The WHMCS product id (pid); one monitor per "
                            "product.")
    threshold_low: int | None = Field(None, ge=0, description="Low stock: quantity ≤ this (off when empty).")
    threshold_high: int | None = Field(None, ge=0, description="High stock: quantity ≥ this (off when empty).")
    notify_on_restock: bool = Field(True, description="STOCK_INCREASED when the quantity goes up.")
    notify_on_purchase: bool = Field(True, description="STOCK_DECREASED when the quantity goes down.")
    notify_on_threshold: bool = Field(True, description="THRESHOLD_BREACH_LOW/HIGH and THRESHOLD_CLEARED.")
    stockout_alert_days: float | None = Field(None, gt=0, le=365, description="STOCKOUT_FORECAST when the "
                                              "projected stock-out is sooner than this many days (off when empty).")

    @model_validator(mode="after")
    def _thresholds(self) -> Config:
        low, high = self.threshold_low, self.threshold_high
        if low is not None and high is not None and low > high:
            # one error per field, so a 422 names both (a plain ValueError would name neither)
            error = PydanticCustomError("threshold_order", "threshold_low must not be greater than threshold_high "
                                        "({low} > {high})", {"low": low, "high": high})
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type=error, loc=("threshold_low",), input=low),
                InitErrorDetails(type=error, loc=("threshold_high",), input=high)])
        return self

    def unique_keys(self) -> list[str]:
        return [str(self.product_id)]


# ------------------------------------------------------------------------------------------------ check


def stock_of(product: dict[str, Any]) -> tuple[int | None, str]:
    """(quantity, field it came from) or (None, why not).

    Older releases send `stockcontrol` and `stocklevel` only for products with stock control; 8.12+ sends
    `quantity_available`. An explicit `stockcontrol` that is off means there is no stock to watch."""
    from shared.clients.whmcs import as_int

    control = product.get("stockcontrol")
    explicit_off = control is not None and not _on(control)
    if _on(control) and product.get("stocklevel") is not None:
        field = "stocklevel"
    elif product.get("quantity_available") is not None and not explicit_off:
        field = "quantity_available"
    elif _on(control):
        return None, "stock control is on but WHMCS sent no stock level for it"
    else:
        return None, "it has no stock control in WHMCS (turn on Stock Control for the product, or delete " \
                     "this monitor)"
    quantity = as_int(product[field])
    if quantity is None:
        return None, f"WHMCS sent a stock level that is not a whole number ({field}={clip(str(product[field]), 40)!r})"
    return quantity, field


def _on(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "on", "yes")
    return bool(value)


async def check_batch(configs: list[Config], ctx: CheckContext) -> dict[str, CheckResult]:
    """Every monitor of the cycle from one GetProducts request; a failed request is an ERROR for each."""
    from shared.clients import whmcs
    from shared.outbound.errors import OutboundError

    settings = ctx.settings
    if not configs:
        return {}
    missing = whmcs.not_configured(settings)
    if missing:
        text = f"WHMCS is not configured: set {', '.join(missing)}"
        return {c.id or "": CheckResult("error", error=text, data={"product_id": c.product_id}) for c in configs}
    started = time.perf_counter()
    try:
        products, attempts = await whmcs.get_products(ctx.trusted_http, settings,
                                                      sorted({c.product_id for c in configs}))
    except OutboundError as error:
        latency = round((time.perf_counter() - started) * 1000, 1)
        tries = getattr(error, "attempts", 1)
        log.error("WHMCS GetProducts failed after %d tr%s: %s", tries, "y" if tries == 1 else "ies", error)
        text = clip(str(error), 1000) or ""
        return {c.id or "": CheckResult("error", latency, text, {"product_id": c.product_id, "attempts": tries})
                for c in configs}
    latency = round((time.perf_counter() - started) * 1000, 1)
    out: dict[str, CheckResult] = {}
    for cfg in configs:
        data: dict[str, Any] = {"product_id": cfg.product_id, "attempts": attempts}
        product = products.get(cfg.product_id)
        if product is None:
            out[cfg.id or ""] = CheckResult("error", latency, f"product {cfg.product_id} is not in WHMCS's reply: "
                                            "it was deleted, or these API credentials cannot see it", data)
            continue
        name = clip(" ".join(str(product.get("name") or "").split()), 200) or None
        if name:
            data["product_name"] = name
        quantity, where = stock_of(product)
        if quantity is None:
            label = f"product {cfg.product_id}" + (f" ({name})" if name else "")
            out[cfg.id or ""] = CheckResult("error", latency, scrub(f"{label}: {where}"), data)
            continue
        out[cfg.id or ""] = CheckResult("up", latency, None, {**data, "quantity": quantity, "stock_field": where})
    return out


# --------------------------------------------------------------------------------------------- evaluate


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def forecast(history: list[list[Any]], quantity: int, now: datetime) -> dict[str, Any]:
    """Projected stock-out from the kept quantity changes (see the module docstring); {} when unknown."""
    samples = [(datetime.fromisoformat(at), int(qty)) for at, qty in history]
    drops = [a - b for (_, a), (_, b) in itertools.pairwise(samples) if b < a]
    if len(drops) < MIN_PURCHASES:
        return {}
    if quantity <= 0:
        return {"days_to_stockout": 0.0}
    span = (now - samples[0][0]).total_seconds()
    if span <= 0:
        return {}
    per_day = sum(drops) / span * 86400
    days = quantity / per_day
    return {"consumption_per_day": round(per_day, 3), "days_to_stockout": round(days, 1),
            "stockout_at": now + timedelta(days=days)}


def _rate(per_day: float) -> str:
    return f"{per_day:,.0f}" if per_day >= 10 else f"{per_day:.1f}".removesuffix(".0")


def _forecast_text(fc: dict[str, Any]) -> str:
    if "stockout_at" not in fc:
        return ""
    return (f"; at {_rate(fc['consumption_per_day'])} a day it runs out in about {fc['days_to_stockout']:g} days, "
            f"around {fc['stockout_at']:%Y-%m-%d}")


def display_name(cfg: Config, state: dict[str, Any], result: CheckResult) -> str:
    return cfg.name or result.data.get("product_name") or state.get("name") or f"WHMCS product {cfg.product_id}"


@dataclass
class _Step:
    """One evaluation in progress: the monitor, its new state, the quantity and forecast, the events so far."""

    cfg: Config
    state: dict[str, Any]
    now: datetime
    name: str
    qty: int = 0
    fc: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    @property
    def fc_details(self) -> dict[str, Any]:
        return {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in self.fc.items()}

    def event(self, type_: EventType, severity: str, message: str, **details: Any) -> None:
        self.events.append(Event(type=type_, kind=KIND, monitor_id=self.cfg.id or "", monitor_name=self.name,
                                 severity=severity, occurred_at=self.now, message=message,
                                 details={"product_id": self.cfg.product_id, **details}))


def evaluate(cfg: Config, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
    """Pure in the engine's sense: the same inputs give the same evaluation. It also writes the fields that
    need the previous record (delta, change_type, threshold and forecast fields) into `result.data`, recomputed
    on every call, so the engine stores them with the result row."""
    # `last_slot` is the engine's bookkeeping, not ours: leaving it out keeps an unchanged state equal.
    state: dict[str, Any] = {k: v for k, v in prev.items() if k != "last_slot"} if prev else {"status": "PENDING"}
    step = _Step(cfg, state, now, display_name(cfg, state, result))
    if error_policy(cfg, KIND, state, result, now, step.events, name=step.name):
        return Evaluation(state, state["status"], step.events)

    if state.get("product_id") != cfg.product_id:  # first record, or the monitor was moved to another product
        for key in ("quantity", "history", "forecast_alerted", "name"):
            state.pop(key, None)
        state["product_id"] = cfg.product_id
    step.qty = int(result.data["quantity"])
    previous, delta, change = _record(step)
    product_name = result.data.get("product_name")
    if product_name and state.get("name") != product_name:
        state["name"] = product_name
    step.fc = forecast(state.get("history", []), step.qty, now)
    _quantity_events(step, previous, delta, change)
    breach = _thresholds(step)
    _forecast_alert(step)

    status = {"low": "LOW", "high": "HIGH"}.get(breach or "", "OK")
    if status != (prev or {}).get("status"):
        state["since"] = _iso(now)
    state["status"] = status

    result.data.update({"delta": delta, "change_type": change, "threshold_breached": breach is not None,
                        "threshold_type": breach, "previous_quantity": previous,
                        **{key: step.fc.get(key) for key in FORECAST_KEYS}})
    return Evaluation(state, status, step.events)


def _record(step: _Step) -> tuple[int | None, int, str]:
    """The change against the last record (previous quantity, delta, change type), kept in the history."""
    state, qty = step.state, step.qty
    previous = state.get("quantity")
    delta = qty - previous if previous is not None else 0
    change = "initial" if previous is None else "restock" if delta > 0 else "purchase" if delta < 0 \
        else "unchanged"
    if change != "unchanged":
        state["quantity"] = qty
        state["history"] = [*state.get("history", []), [_iso(step.now), qty]][-HISTORY:]
    if change == "restock":
        state.pop("forecast_alerted", None)  # a new episode for the stock-out alert
    return previous, delta, change


def _quantity_events(step: _Step, previous: int | None, delta: int, change: str) -> None:
    cfg, name, qty = step.cfg, step.name, step.qty
    if change == "restock" and cfg.notify_on_restock:
        step.event(EventType.STOCK_INCREASED, "info", f"{name} was restocked: {previous} → {qty} ({delta:+d}).",
                   quantity=qty, previous_quantity=previous, delta=delta, **step.fc_details)
    elif change == "purchase" and cfg.notify_on_purchase:
        step.event(EventType.STOCK_DECREASED, "info", f"{name} stock went down: {previous} → {qty} ({delta:+d})"
                   f"{_forecast_text(step.fc)}.", quantity=qty, previous_quantity=previous, delta=delta,
                   **step.fc_details)


def _thresholds(step: _Step) -> str | None:
    """Events when a breach begins or ends; reminders every renotify_minutes while it lasts. The breach."""
    cfg, state, now, qty = step.cfg, step.state, step.now, step.qty
    breach = "low" if cfg.threshold_low is not None and qty <= cfg.threshold_low else \
        "high" if cfg.threshold_high is not None and qty >= cfg.threshold_high else None
    limits = {"threshold_low": cfg.threshold_low, "threshold_high": cfg.threshold_high}
    was = state.get("breach")
    if breach != was:
        if was is not None:
            since = state.get("breach_since")
            seconds = round((now - datetime.fromisoformat(since)).total_seconds()) if since else None
            if cfg.notify_on_threshold:
                step.event(EventType.THRESHOLD_CLEARED, "info", f"{step.name} stock is no longer {was}: {qty}.",
                           quantity=qty, cleared=was, breach_seconds=seconds, **limits)
            for key in ("breach", "breach_since", "notified_at"):
                state.pop(key, None)
        if breach is not None:
            state["breach"] = breach
            state["breach_since"] = _iso(now)
            if cfg.notify_on_threshold:
                state["notified_at"] = _iso(now)
                _breach_event(step, breach, limits, reminder=False)
    elif breach is not None and cfg.notify_on_threshold and cfg.renotify_minutes:
        last = state.get("notified_at")
        if last is None or (now - datetime.fromisoformat(last)).total_seconds() >= cfg.renotify_minutes * 60:
            state["notified_at"] = _iso(now)
            _breach_event(step, breach, limits, reminder=True, since=state.get("breach_since"))
    return breach


def _forecast_alert(step: _Step) -> None:
    """The stock-out forecast: at most once between two restocks."""
    cfg, fc, qty = step.cfg, step.fc, step.qty
    if cfg.stockout_alert_days and qty > 0 and "days_to_stockout" in fc \
            and fc["days_to_stockout"] <= cfg.stockout_alert_days and not step.state.get("forecast_alerted"):
        step.state["forecast_alerted"] = True
        step.event(EventType.STOCKOUT_FORECAST, "warning", f"{step.name} is projected to run out of stock in about "
                   f"{fc['days_to_stockout']:g} days, around {fc['stockout_at']:%Y-%m-%d} ({qty} left, "
                   f"{_rate(fc['consumption_per_day'])} sold a day).", quantity=qty,
                   alert_days=cfg.stockout_alert_days, **step.fc_details)


def _breach_event(step: _Step, breach: str, limits: dict[str, Any], reminder: bool, since: str | None = None) -> None:
    cfg, name, qty = step.cfg, step.name, step.qty
    still = "still " if reminder else ""
    extra = {"reminder": True, "since": since} if reminder else {}
    if breach == "low":
        severity = "critical" if qty <= 0 else "warning"
        step.event(EventType.THRESHOLD_BREACH_LOW, severity, f"{name} stock is {still}low: {qty} (low threshold "
                   f"{cfg.threshold_low}){_forecast_text(step.fc)}.", quantity=qty, **limits, **step.fc_details,
                   **extra)
    else:
        step.event(EventType.THRESHOLD_BREACH_HIGH, "warning", f"{name} stock is {still}high: {qty} (high "
                   f"threshold {cfg.threshold_high}).", quantity=qty, **limits, **extra)
    if reminder:
        step.events[-1].replaces = REMINDER


class Stock(Kind[Config]):
    name = KIND
    model = Config
    title = "Stock"
    unique_field = "product_id"
    statuses = Vocabulary(StockStatus, {"OK": healthy(), "LOW": warning("Low stock", 50, breach=True),
                                        "HIGH": warning("High stock", 45, breach=True)})
    metrics: ClassVar[dict[str, str]] = {"stock_quantity": "Stock level of the WHMCS product, from the latest check."}

    async def check_batch(self, cfgs: list[Config], ctx: CheckContext) -> dict[str, CheckResult]:
        return await check_batch(cfgs, ctx)

    def evaluate(self, cfg: Config, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
        return evaluate(cfg, prev, result, now)

    def target(self, cfg: Config) -> str:
        return f"pid {cfg.product_id}"

    def result_view(self, row: dict[str, Any]) -> dict[str, Any]:
        return result_view(row)

    def samples(self, row: dict[str, Any]) -> list[Sample]:
        return [Sample("stock_quantity", row.get("quantity"))]

    def result_columns(self, row: dict[str, Any]) -> dict[str, str]:
        delta, days = row.get("delta"), row.get("days_to_stockout")
        return {"quantity": as_text(row.get("quantity")), "delta": f"{delta:+g}" if delta else as_text(delta),
                "change": as_text(row.get("change_type")), "stock-out in": f"{days:g} days" if days is not None else ""}


def result_view(row: dict[str, Any]) -> dict[str, Any]:
    """A record as the API shows it: a stock reading (it has a quantity) with every NULLABLE field, null when
    unknown, whether it comes from a check just made or from Table Storage (which stores no nulls)."""
    if row.get("quantity") is None:
        return row
    return {**row, **{key: row.get(key) for key in NULLABLE}}


PLUGIN = Stock()
