"""Parts lists against InvenTree: can we build `kits` of this list, or of this assembly's BOM, now?

One check resolves every line in InvenTree (by pk, IPN, or exact name + revision; IPNs and names in bulk, an
assembly's BOM with every part's stock in three requests), reads its stock (INVENTREE_AVAILABLE_FIELD) and
computes, as InvenTree does (monitors/parts_bom.py): per part required for `kits` kits (quantity, setup quantity,
attrition, rounding multiple; two lines of one part together), missing = max(0, required − available), and
overall: lines, lines short, total missing, kits buildable now (InvenTree's `can_build`: virtual parts and
consumable lines do not count, substitutes and variants do) and warnings (not found, ambiguous, inactive). An
assembly that is not one part with a BOM in InvenTree (not found, ambiguous, no lines) is an ERROR, like
InvenTree not answering. `expand_subassemblies` builds what a sub-assembly lacks from its own BOM;
`include_on_order` shows what is on open purchase orders (never counted as available).

The InvenTree client (shared/clients/inventree.py) is plain aiohttp on the run's trusted session, not the
`inventree` PyPI client (docs/kinds/parts.md says why); every parts monitor of a run shares one client
(`check_batch`), so common parts are fetched once. The report itself is computed in monitors/parts_report.py.

How a run becomes e-mails:
- InvenTree unreachable after the retries, refusing the token, or not configured → outcome "error" → the
  shared ERROR policy (monitors/policy.py `error_policy`): MONITOR_ERROR to the operator once, and
  MONITOR_ERROR_CLEARED when it works again. That run's report is "critical" (it has no data).
- `notify_condition` "always" → a PARTS_REPORT event every run; "on_change" → only when the report's
  significance hash differs from the state's `last_hash`.
- `last_hash` is written by the delivery path only (the report event's `confirm`, recorded by
  shared/notify/pipeline.py through Store.confirm_state), once SMTP accepted the report for at least one
  recipient; evaluate only reads it. So a report that could not be e-mailed is
  sent again by the next run, and with the global e-mail switch off nothing is confirmed.

The significance hash covers what a person acts on: which lines are short and by how much, the kits buildable
capped at the kits wanted (stock moving above the requirement changes nothing), and the critical state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from monitors.base import MonitorBase
from monitors.contract import CheckContext, CheckResult, Evaluation, Kind, Sample, Vocabulary, as_text, healthy, warning
from monitors.parts_report import (  # noqa: F401
    DETAIL_BUDGET,
    MAX_WARNINGS,
    REPORT_BUDGET,
    Bom,
    Found,
    Need,
    PartLine,
    PartRef,
    assess,
    build_report,
    capped,
    critical_report,
    fit,
    public_row,
    result_data,
    significance_hash,
    summarize,
    summary_line,
)
from monitors.policy import error_policy
from shared.clients.inventree import (  # noqa: F401
    MAX_IN_FLIGHT,
    InvenTree,
    InvenTreeError,
    NotConfigured,
    Unresolved,
)
from shared.events import Event, EventType
from shared.text import clip

KIND = "parts"

log = logging.getLogger("monitor.parts")


class PartsStatus(StrEnum):
    PENDING = "PENDING"
    OK = "OK"
    SHORT = "SHORT"
    ERROR = "ERROR"


class Config(MonitorBase):
    kind: Literal["parts"] = "parts"
    parts: list[PartLine] | None = Field(None, min_length=1, max_length=500,
                                         description="The parts list: [{pk | ipn | name, quantity, version?}]. "
                                         "Give this or `assembly`.")
    assembly: PartRef | None = Field(None, description="An assembly part whose BOM is read from InvenTree on "
                                     "every check, instead of `parts`.")
    kits: int = Field(1, ge=1, le=1_000_000, description="How many to build: required = quantity × kits.")
    notify_condition: Literal["on_change", "always"] = Field(
        "on_change", description="on_change: e-mail a report when shortages or buildable kits change; always: "
        "every run.")
    include_optional: bool = Field(True, description="Assembly mode: count BOM lines marked optional (InvenTree's "
                                   "can_build counts them).")
    expand_subassemblies: bool = Field(False, description="A line whose part is itself an assembly, with too "
                                       "little stock, builds the rest from its own BOM (sharing the stock of every "
                                       "other line).")
    include_on_order: bool = Field(False, description="Show what is on open purchase orders for each part "
                                   "(never counted as available).")

    @model_validator(mode="after")
    def _one_source(self) -> Config:
        if (self.parts is None) == (self.assembly is None):
            raise ValueError("give either parts (a list) or assembly (its BOM is read from InvenTree), not both")
        return self


# ---------------------------------------------------------------------------------------------- checking


@dataclass(slots=True)
class PartsResult(CheckResult):
    """A CheckResult that also carries the whole report to evaluate (`data` holds its scalar summary)."""

    report: dict[str, Any] | None = None


def _failed(cfg: Config, error: Exception, latency: float | None, reason: str) -> PartsResult:
    # an assembly that is not in InvenTree is the definition's problem: its audience may read what to fix
    report = critical_report(cfg, reason, str(error) if isinstance(error, Unresolved) else None)
    return PartsResult("error", latency, clip(str(error), 1000), result_data(report), report=report)


def monitor_page(cfg: Config, settings: Any) -> str | None:
    """Where a recipient can look at the monitor: its place on the public status page, when it is public (every
    other route needs a key)."""
    base = getattr(settings, "public_base_url", None)
    if not cfg.public or not base or not cfg.id:
        return None
    return f"{base.rstrip('/')}/api/status-page#m-{cfg.id}"


async def check_batch(configs: list[Config], ctx: CheckContext) -> dict[str, CheckResult]:
    """Every due parts monitor of a run against one client: shared lookups, MAX_IN_FLIGHT requests at once."""
    settings = ctx.settings
    try:
        client = InvenTree.from_settings(ctx.trusted_http, settings)
    except NotConfigured as error:
        return {cfg.id or "": _failed(cfg, error, None, error.reason) for cfg in configs}
    field = settings.inventree_available_field

    async def one(cfg: Config) -> tuple[str, CheckResult]:
        started = time.perf_counter()
        try:
            report = await build_report(cfg, client, field)
        except InvenTreeError as error:
            result = _failed(cfg, error, _ms(started), error.reason)
        except Exception as error:
            log.exception("parts check of monitor %s (%s) failed", cfg.id, cfg.name)
            result = _failed(cfg, RuntimeError(f"checker failed: {type(error).__name__}: {error}"), _ms(started),
                             "the check failed")
        else:
            report["inventree_url"] = client.url
            report["available_field"] = field
            result = PartsResult("down" if report["lines_short"] else "up", _ms(started), None, result_data(report),
                                 report=report)
        if result.report is not None:
            result.report["monitor_page"] = monitor_page(cfg, settings)
        return cfg.id or "", result

    return dict(await asyncio.gather(*(one(cfg) for cfg in configs)))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


# -------------------------------------------------------------------------------------------- evaluating


def report_event(cfg: Config, report: dict[str, Any], digest: str, now: datetime) -> Event:
    title = f"{cfg.name} ×{cfg.kits}"
    summary = summary_line(report)
    severity = "critical" if report["critical"] else ("warning" if report["lines_short"] else "info")
    details: dict[str, Any] = {"hash": digest, "title": title, "summary": summary,
                               "notify_condition": cfg.notify_condition,
                               **{k: v for k, v in report.items() if k != "rows"},
                               "warnings": capped(report["warnings"])}
    details["rows"], details["omitted_rows"] = fit([public_row(r) for r in report["rows"]], details, REPORT_BUDGET)
    return Event(type=EventType.PARTS_REPORT, kind=KIND, monitor_id=cfg.id or "", monitor_name=cfg.name,
                 severity=severity, occurred_at=now, message=f"{title}: {summary}", details=details,
                 # on_change: the hash is recorded once people were told, so this report is not sent twice
                 confirm={"last_hash": digest} if cfg.notify_condition == "on_change" else {}, replaces="report")


def evaluate(cfg: Config, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
    # `last_slot` is the engine's bookkeeping: leaving it out keeps an unchanged state equal (no write).
    state = {k: v for k, v in prev.items() if k != "last_slot"} if prev else {"status": "PENDING"}
    before = state.get("status")
    events: list[Event] = []
    report = getattr(result, "report", None)
    if report is None:  # an ERROR the engine made (the checker crashed) carries no report
        report = critical_report(cfg, "the check failed")
    if not error_policy(cfg, KIND, state, result, now, events):
        state["status"] = "SHORT" if report["lines_short"] else "OK"
    if state["status"] != before:
        state["since"] = now.isoformat()
    digest = significance_hash(report, cfg.kits)
    # last_hash is the hash of the last report SMTP accepted (the mail path writes it), never set here.
    if cfg.notify_condition == "always" or digest != state.get("last_hash"):
        events.append(report_event(cfg, report, digest, now))
    return Evaluation(state, state["status"], events)


class Parts(Kind[Config]):
    name = KIND
    model = Config
    title = "Parts lists"
    statuses = Vocabulary(PartsStatus, {"OK": healthy(), "SHORT": warning("Parts short", 55, breach=True)})
    metrics: ClassVar[dict[str, str]] = {"parts_lines_short": "Lines of the parts list that are short.",
               "parts_total_missing": "Units missing over all lines of the parts list.",
               "parts_kits_buildable": "Kits buildable now from the parts list."}
    email_templates: ClassVar[dict[EventType, str]] = {EventType.PARTS_REPORT: "parts_report"}

    async def check_batch(self, cfgs: list[Config], ctx: CheckContext) -> dict[str, CheckResult]:
        return await check_batch(cfgs, ctx)

    def evaluate(self, cfg: Config, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
        return evaluate(cfg, prev, result, now)

    def target(self, cfg: Config) -> str:
        """"8 lines ×10" or "BOM of Widget rev 2 ×10"."""
        if cfg.parts:
            what = f"{len(cfg.parts)} line{'' if len(cfg.parts) == 1 else 's'}"
        else:
            what = f"BOM of {cfg.assembly.label() if cfg.assembly else '?'}"
        return f"{what} ×{cfg.kits}"

    def samples(self, row: dict[str, Any]) -> list[Sample]:
        return [Sample(f"parts_{field}", row.get(field)) for field in ("lines_short", "total_missing",
                                                                         "kits_buildable")]

    def result_columns(self, row: dict[str, Any]) -> dict[str, str]:
        short, lines = as_text(row.get("lines_short")), row.get("lines")
        return {"lines short": f"{short} of {lines}" if short and lines is not None else short,
                "kits": as_text(row.get("kits_buildable")), "missing": as_text(row.get("total_missing"))}


PLUGIN = Parts()
