"""Resources: local disk / memory / CPU, Azure Monitor metrics and log queries, and application metrics (a Storage
queue's depth, the entities of a table matching a filter), against warn / alert thresholds.

A monitor watches one `source`; a source yields one or more metrics, each OK / WARNING / ALERT, and the monitor's
status is the worst of them (ERROR when the check itself fails: throttled, refused, a malformed reply, an unknown
metric, an empty series, a missing queue — the operator hears once, through the shared error policy).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from monitors.contract import (
    CheckContext,
    CheckResult,
    Evaluation,
    Kind,
    Sample,
    Vocabulary,
    as_text,
    healthy,
    red,
    warning,
)
from monitors.resource.config import Config
from monitors.resource.evaluate import (  # noqa: F401 - the kind's API
    KIND,
    LEVELS,
    MAX_SAMPLES,
    decode_metrics,
    evaluate,
    project_full,
    readings_view,
    result_view,
)


class ResourceStatus(StrEnum):
    PENDING = "PENDING"
    OK = "OK"
    WARNING = "WARNING"
    ALERT = "ALERT"
    ERROR = "ERROR"


async def check(cfg: Config, ctx: CheckContext) -> CheckResult:
    from monitors.resource import sources

    return await sources.check(cfg, ctx)


class Resource(Kind[Config]):
    name = KIND
    model = Config
    title = "Resources"
    statuses = Vocabulary(ResourceStatus, {"OK": healthy(), "WARNING": warning("Warning", 40, breach=True),
                                           "ALERT": red("Alert", 90, breach=True)})
    metrics: ClassVar[dict[str, str]] = {
        "resource_metric_value": "Latest value of a resource metric (unit in the unit label).",
        "resource_metric_level": "Level of a resource metric: 0 OK, 1 WARNING, 2 ALERT."}

    async def check_batch(self, cfgs: list[Config], ctx: CheckContext) -> dict[str, CheckResult]:
        from monitors.resource import sources

        return await sources.check_batch(cfgs, ctx)

    def evaluate(self, cfg: Config, prev: dict[str, Any], result: CheckResult, now: datetime) -> Evaluation:
        return evaluate(cfg, prev, result, now)

    def target(self, cfg: Config) -> str:
        return cfg.source.type

    def result_view(self, row: dict[str, Any]) -> dict[str, Any]:
        return result_view(row)

    def readings(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        return readings_view(row)

    def samples(self, row: dict[str, Any]) -> list[Sample]:
        out = []
        for metric in decode_metrics(row.get("metrics")):
            if not isinstance(metric, dict) or "name" not in metric:
                continue
            labels = {"metric": str(metric["name"]), "unit": str(metric.get("unit") or "")}
            out.append(Sample("resource_metric_value", metric.get("value"), labels))
            out.append(Sample("resource_metric_level", LEVELS.get(str(metric.get("status"))), labels))
        return out

    def result_columns(self, row: dict[str, Any]) -> dict[str, str]:
        """A column per metric: its value and unit, and its status unless OK."""
        return {str(m["name"]): f"{as_text(m.get('value'))} {m.get('unit') or ''}".rstrip()
                + ("" if m.get("status") in (None, "OK") else f" {m['status']}")
                for m in decode_metrics(row.get("metrics")) if isinstance(m, dict) and "name" in m}


PLUGIN = Resource()
