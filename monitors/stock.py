"""Stock of WHMCS products (seed 000): quantity, change type, thresholds and a stock-out forecast.

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

import asyncio
import json
import logging
import re
import time
from datetime import datetime, timedelta
from typing import Any, Literal

import aiohttp
from pydantic import Field, model_validator

from monitors.base import CheckResult, Evaluation, MonitorBase
from monitors.policy import error_policy
from shared.events import Event, EventType
from shared.storage import clip

KIND = "stock"
UNIQUE_FIELD = "product_id"  # the 409 message of shared/service.py names it
HISTORY = 10  # quantity changes kept in the state for the forecast
MIN_PURCHASES = 2  # decreases needed before a forecast is made
RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0)  # waits between the tries of one cycle's request (3 tries)
MAX_REPLY_BYTES = 32 * 1024 * 1024
FORECAST_KEYS = ("consumption_per_day", "days_to_stockout", "stockout_at")

log = logging.getLogger("monitor.stock")


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
    def _thresholds(self) -> "Config":
        if self.threshold_low is not None and self.threshold_high is not None \
                and self.threshold_low > self.threshold_high:
            raise ValueError("threshold_low must not be greater than threshold_high")
        return self

    def unique_keys(self) -> list[str]:
        return [str(self.product_id)]


# ------------------------------------------------------------------------------------------- WHMCS client


class WhmcsError(Exception):
    """GetProducts failed for the whole cycle. `transient` ones are retried within the cycle."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def _secrets(settings: Any) -> list[str]:
    values = [s.get_secret_value() for s in (settings.whmcs_secret, settings.whmcs_access_key) if s is not None]
    return sorted((v for v in values if v), key=len, reverse=True)


def scrub(text: str, settings: Any) -> str:
    """The text with the WHMCS secret and access key blanked (in case a server or library echoes them)."""
    for secret in _secrets(settings):
        text = text.replace(secret, "***")
    return text


def _int(value: Any) -> int | None:
    """WHMCS sends numbers as numbers or as strings ("12", "12.00"); anything else is None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,12}(?:\.0*)?\s*", value):
        return int(float(value))
    return None


def _on(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "on", "yes")
    return bool(value)


def products_of(reply: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """{pid: product} from a GetProducts reply: `products.product` is a list, or one object when there is
    a single product (XML-style replies), and `products` is missing or "" when nothing matched."""
    products = reply.get("products")
    if products in (None, "", [], {}):
        return {}
    if not isinstance(products, dict):
        raise WhmcsError(f"unexpected GetProducts reply: 'products' is a {type(products).__name__}")
    items = products.get("product")
    if items in (None, "", [], {}):
        return {}
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise WhmcsError(f"unexpected GetProducts reply: 'products.product' is a {type(items).__name__}")
    out: dict[int, dict[str, Any]] = {}
    for item in items:
        pid = _int(item.get("pid")) if isinstance(item, dict) else None
        if pid is not None:
            out[pid] = item
    return out


def stock_of(product: dict[str, Any]) -> tuple[int | None, str]:
    """(quantity, field it came from) or (None, why not).

    Older releases send `stockcontrol` and `stocklevel` only for products with stock control; 8.12+ sends
    `quantity_available`. An explicit `stockcontrol` that is off means there is no stock to watch."""
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
    quantity = _int(product[field])
    if quantity is None:
        return None, f"WHMCS sent a stock level that is not a whole number ({field}={clip(str(product[field]), 40)!r})"
    return quantity, field


def _hint(message: str) -> str:
    text = message.lower()
    if "authentication" in text:
        return " (check WHMCS_IDENTIFIER and WHMCS_SECRET)"
    if "invalid ip" in text or "ip address" in text:
        return " (allow this app's outbound IP under API IP Access Restriction in WHMCS, or set WHMCS_ACCESS_KEY)"
    return ""


async def _request(http: aiohttp.ClientSession, settings: Any, form: dict[str, str]) -> dict[int, dict[str, Any]]:
    timeout = settings.whmcs_timeout_seconds
    try:
        # No redirects: a POST would be turned into a GET (losing the form) or re-sent with the secret elsewhere.
        async with http.post(settings.whmcs_api_url, data=form, allow_redirects=False,
                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = bytearray()
            async for chunk in resp.content.iter_chunked(256 * 1024):  # read(n) returns what is buffered
                body += chunk
                if len(body) > MAX_REPLY_BYTES:
                    break
            status, content_type = resp.status, resp.content_type
    except (asyncio.TimeoutError, TimeoutError):
        raise WhmcsError(f"WHMCS did not answer within {timeout:g} s", transient=True) from None
    except aiohttp.ClientConnectorError as error:
        reason = error.os_error.strerror if error.os_error and error.os_error.strerror else type(error).__name__
        raise WhmcsError(f"cannot connect to WHMCS at {error.host}:{error.port}: {reason}", transient=True) from None
    except aiohttp.ClientError as error:
        raise WhmcsError(f"the request to WHMCS failed: {type(error).__name__}: {error}", transient=True) from None

    reply: Any = None
    try:
        reply = json.loads(bytes(body).decode("utf-8-sig"))
    except ValueError:
        pass
    if isinstance(reply, dict) and reply.get("result") == "error":
        message = clip(" ".join(str(reply.get("message") or "no reason given").split()), 300) or ""
        where = "" if status == 200 else f" (HTTP {status})"
        raise WhmcsError(f"WHMCS refused GetProducts{where}: {message}{_hint(message)}",
                         transient=status >= 500 or status == 429)
    if status >= 500 or status == 429:
        raise WhmcsError(f"WHMCS answered HTTP {status}", transient=True)
    if 300 <= status < 400:
        raise WhmcsError(f"WHMCS answered HTTP {status} (a redirect): set WHMCS_API_URL to the final URL of "
                         "includes/api.php")
    if status >= 400:
        raise WhmcsError(f"WHMCS answered HTTP {status}" + (" (is WHMCS_API_URL …/includes/api.php?)"
                                                             if status == 404 else ""))
    if len(body) > MAX_REPLY_BYTES:
        raise WhmcsError(f"WHMCS's reply is larger than {MAX_REPLY_BYTES // 2**20} MiB")
    if not isinstance(reply, dict):
        raise WhmcsError(f"WHMCS answered with something that is not a JSON object ({content_type or 'no type'}, "
                         f"{len(body)} bytes): is WHMCS_API_URL the URL of includes/api.php?")
    if reply.get("result") != "success":
        raise WhmcsError(f"unexpected GetProducts reply (result={clip(str(reply.get('result')), 40)!r})")
    return products_of(reply)


async def get_products(http: aiohttp.ClientSession, settings: Any, pids: list[int]) -> tuple[dict[int, dict], int]:
    """One GetProducts request for all `pids` (retried on transient failures); ({pid: product}, tries)."""
    form = {"action": "GetProducts", "identifier": settings.whmcs_identifier or "",
            "secret": settings.whmcs_secret.get_secret_value() if settings.whmcs_secret else "",
            "responsetype": "json", "pid": ",".join(str(p) for p in pids)}
    if settings.whmcs_access_key is not None and settings.whmcs_access_key.get_secret_value():
        form["accesskey"] = settings.whmcs_access_key.get_secret_value()
    tries = len(RETRY_DELAYS) + 1
    for attempt, delay in enumerate((*RETRY_DELAYS, None), start=1):
        try:
            return await _request(http, settings, form), attempt
        except WhmcsError as error:
            error.args = (scrub(str(error), settings),)
            if not error.transient or delay is None:
                error.attempts = attempt  # type: ignore[attr-defined]
                raise
            log.warning("WHMCS GetProducts failed (try %d of %d), trying again in %.1f s: %s", attempt, tries,
                        delay, error)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def _not_configured(settings: Any) -> list[str]:
    return [name for name, value in (("WHMCS_API_URL", settings.whmcs_api_url),
                                     ("WHMCS_IDENTIFIER", settings.whmcs_identifier),
                                     ("WHMCS_SECRET", settings.whmcs_secret)) if not value]


async def check_batch(configs: list[Config], ctx: Any) -> dict[str, CheckResult]:
    """Every monitor of the cycle from one GetProducts request; a failed request is an ERROR for each."""
    settings = ctx.settings
    if not configs:
        return {}
    missing = _not_configured(settings)
    if missing:
        text = f"WHMCS is not configured: set {', '.join(missing)}"
        return {c.id or "": CheckResult("error", error=text, data={"product_id": c.product_id}) for c in configs}
    started = time.perf_counter()
    try:
        products, attempts = await get_products(ctx.http, settings, sorted({c.product_id for c in configs}))
    except WhmcsError as error:
        latency = round((time.perf_counter() - started) * 1000, 1)
        tries = getattr(error, "attempts", 1)
        log.error("WHMCS GetProducts failed after %d tr%s: %s", tries, "y" if tries == 1 else "ies", error)
        text = clip(str(error), 1000)
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
            out[cfg.id or ""] = CheckResult("error", latency, scrub(f"{label}: {where}", settings), data)
            continue
        out[cfg.id or ""] = CheckResult("up", latency, None, {**data, "quantity": quantity, "stock_field": where})
    return out


# --------------------------------------------------------------------------------------------- evaluate


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def forecast(history: list[list[Any]], quantity: int, now: datetime) -> dict[str, Any]:
    """Projected stock-out from the kept quantity changes (see the module docstring); {} when unknown."""
    samples = [(datetime.fromisoformat(at), int(qty)) for at, qty in history]
    drops = [a - b for (_, a), (_, b) in zip(samples, samples[1:]) if b < a]
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


def evaluate(cfg: Config, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
    """Pure in the engine's sense: the same inputs give the same evaluation. It also writes the fields that
    need the previous record (delta, change_type, threshold and forecast fields) into `result.data`, recomputed
    on every call, so the engine stores them with the result row."""
    # `last_slot` is the engine's bookkeeping, not ours: leaving it out keeps an unchanged state equal.
    state = {k: v for k, v in prev.items() if k != "last_slot"} if prev else {"status": "PENDING"}
    events: list[Event] = []
    name = display_name(cfg, state, result)

    def event(type_: EventType, severity: str, message: str, **details: Any) -> None:
        events.append(Event(type=type_, kind=KIND, monitor_id=cfg.id or "", monitor_name=name, severity=severity,
                            occurred_at=now, message=message,
                            details={"product_id": cfg.product_id, **details}))

    if error_policy(cfg, KIND, state, result, now, events, name=name):
        return Evaluation(state, state["status"], events)

    if state.get("product_id") != cfg.product_id:  # first record, or the monitor was moved to another product
        for key in ("quantity", "history", "forecast_alerted", "name"):
            state.pop(key, None)
        state["product_id"] = cfg.product_id
    qty = int(result.data["quantity"])
    previous = state.get("quantity")
    delta = qty - previous if previous is not None else 0
    change = "initial" if previous is None else "restock" if delta > 0 else "purchase" if delta < 0 \
        else "unchanged"
    if change != "unchanged":
        state["quantity"] = qty
        state["history"] = [*state.get("history", []), [_iso(now), qty]][-HISTORY:]
    if change == "restock":
        state.pop("forecast_alerted", None)  # a new episode for the stock-out alert
    product_name = result.data.get("product_name")
    if product_name and state.get("name") != product_name:
        state["name"] = product_name

    fc = forecast(state.get("history", []), qty, now)
    fc_details = {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in fc.items()}
    fc_text = _forecast_text(fc)

    if change == "restock" and cfg.notify_on_restock:
        event(EventType.STOCK_INCREASED, "info", f"{name} was restocked: {previous} → {qty} ({delta:+d}).",
              quantity=qty, previous_quantity=previous, delta=delta, **fc_details)
    elif change == "purchase" and cfg.notify_on_purchase:
        event(EventType.STOCK_DECREASED, "info", f"{name} stock went down: {previous} → {qty} ({delta:+d})"
              f"{fc_text}.", quantity=qty, previous_quantity=previous, delta=delta, **fc_details)

    # thresholds: events when a breach begins or ends; reminders every renotify_minutes while it lasts
    breach = "low" if cfg.threshold_low is not None and qty <= cfg.threshold_low else \
        "high" if cfg.threshold_high is not None and qty >= cfg.threshold_high else None
    limits = {"threshold_low": cfg.threshold_low, "threshold_high": cfg.threshold_high}
    was = state.get("breach")
    if breach != was:
        if was is not None:
            since = state.get("breach_since")
            seconds = round((now - datetime.fromisoformat(since)).total_seconds()) if since else None
            if cfg.notify_on_threshold:
                event(EventType.THRESHOLD_CLEARED, "info", f"{name} stock is no longer {was}: {qty}.",
                      quantity=qty, cleared=was, breach_seconds=seconds, **limits)
            for key in ("breach", "breach_since", "notified_at"):
                state.pop(key, None)
        if breach is not None:
            state["breach"] = breach
            state["breach_since"] = _iso(now)
            if cfg.notify_on_threshold:
                state["notified_at"] = _iso(now)
                _breach_event(event, breach, name, qty, cfg, fc_text, fc_details, limits, reminder=False)
    elif breach is not None and cfg.notify_on_threshold and cfg.renotify_minutes:
        last = state.get("notified_at")
        if last is None or (now - datetime.fromisoformat(last)).total_seconds() >= cfg.renotify_minutes * 60:
            state["notified_at"] = _iso(now)
            _breach_event(event, breach, name, qty, cfg, fc_text, fc_details, limits, reminder=True,
                          since=state.get("breach_since"))

    # stock-out forecast: at most once between two restocks
    if cfg.stockout_alert_days and qty > 0 and "days_to_stockout" in fc \
            and fc["days_to_stockout"] <= cfg.stockout_alert_days and not state.get("forecast_alerted"):
        state["forecast_alerted"] = True
        event(EventType.STOCKOUT_FORECAST, "warning", f"{name} is projected to run out of stock in about "
              f"{fc['days_to_stockout']:g} days, around {fc['stockout_at']:%Y-%m-%d} ({qty} left, "
              f"{_rate(fc['consumption_per_day'])} sold a day).", quantity=qty,
              alert_days=cfg.stockout_alert_days, **fc_details)

    status = {"low": "LOW", "high": "HIGH"}.get(breach or "", "OK")
    if status != (prev or {}).get("status"):
        state["since"] = _iso(now)
    state["status"] = status

    for key in FORECAST_KEYS:
        result.data.pop(key, None)
    result.data.update({"delta": delta, "change_type": change, "threshold_breached": breach is not None,
                        "threshold_type": breach, "previous_quantity": previous, **fc})
    return Evaluation(state, status, events)


def _breach_event(event: Any, breach: str, name: str, qty: int, cfg: Config, fc_text: str,
                  fc_details: dict[str, Any], limits: dict[str, Any], reminder: bool, since: str | None = None) -> None:
    still = "still " if reminder else ""
    extra = {"reminder": True, "since": since} if reminder else {}
    if breach == "low":
        severity = "critical" if qty <= 0 else "warning"
        event(EventType.THRESHOLD_BREACH_LOW, severity, f"{name} stock is {still}low: {qty} (low threshold "
              f"{cfg.threshold_low}){fc_text}.", quantity=qty, **limits, **fc_details, **extra)
    else:
        event(EventType.THRESHOLD_BREACH_HIGH, "warning", f"{name} stock is {still}high: {qty} (high threshold "
              f"{cfg.threshold_high}).", quantity=qty, **limits, **extra)
