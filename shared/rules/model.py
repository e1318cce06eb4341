"""Alert rules over snapshot metrics: a rule fires after `for_snapshots` consecutive breaching snapshots and
resolves on the first one that does not breach (a null value never breaches)."""

from __future__ import annotations

import operator as op
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from shared.snapshots.metrics import metric_names, unknown_metric

RULE_KIND = "alert_rule"  # the rules' partition of the `state` table, and the `kind` of their events
MAX_RULES = 200
OPERATORS = {">": op.gt, ">=": op.ge, "<": op.lt, "<=": op.le, "==": op.eq, "!=": op.ne}
Operator = Literal[">", ">=", "<", "<=", "==", "!="]


class AlertRule(BaseModel):
    """A rule over one snapshot metric: fires after `for_snapshots` consecutive snapshots where
    `value <operator> threshold`, resolves on the first one where it does not (a null value never breaches)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str | None = Field(None, description="Assigned by the server.", pattern=r"^[0-9a-f]{32}$")
    name: str = Field("", max_length=200, description="Empty: '<metric> <operator> <threshold>'.")
    metric: str = Field(..., description="A snapshot metric (GET /api/v1/bootstrap → metrics).",
                        json_schema_extra=lambda schema: schema.update(enum=list(metric_names())))
    operator: Operator
    threshold: float = Field(..., allow_inf_nan=False)
    for_snapshots: int = Field(1, ge=1, le=100, description="Consecutive breaching snapshots before it fires.")
    severity: Literal["info", "warning", "critical"] = "warning"
    recipients: list[EmailStr] = Field(default_factory=list, max_length=50,
                                       description="Who is e-mailed; empty = DEFAULT_EMAIL_RECIPIENTS.")
    enabled: bool = True

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in metric_names():
            raise ValueError(unknown_metric(value))
        return value

    def title(self) -> str:
        return self.name or f"{self.metric} {self.operator} {self.threshold:g}"
