"""Alert-rule definitions: create, read, list, change, delete (at most MAX_RULES), each shown with its state and
the latest snapshot's value of its metric."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.errors import Duplicate, Invalid, NotFound, field_error, validation_details
from shared.manage.monitors import fits, iso, looks_like_id, strict_json
from shared.rules.model import MAX_RULES, RULE_KIND, AlertRule
from shared.snapshots.views import row_metrics
from shared.storage import Conflict, etag_of
from shared.storage.keys import RULES_PK

if TYPE_CHECKING:
    from shared.storage import Store


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _parse_rule(payload: Any) -> AlertRule:
    if not isinstance(payload, dict):
        raise Invalid("the body must be a JSON object", field_error("(body)", "expected an object"))
    try:
        return AlertRule.model_validate_json(strict_json(payload), strict=True)
    except ValidationError as error:
        raise Invalid("invalid alert rule", validation_details(error)) from None


def rule_of(entity: dict[str, Any]) -> AlertRule:
    return AlertRule.model_validate_json(entity["spec"])


def _rule_entity(rule: AlertRule, created_at: datetime) -> dict[str, Any]:
    return {"RowKey": rule.id, "name": rule.title(), "enabled": rule.enabled, "spec": rule.model_dump_json(),
            "created_at": created_at, "updated_at": _utcnow()}


def _rule_view(rule: AlertRule, entity: dict[str, Any], state: dict[str, Any] | None,
               value: float | None) -> dict[str, Any]:
    state = state or {}
    return {**rule.model_dump(mode="json"), "name": rule.title(), "created_at": iso(entity.get("created_at")),
            "updated_at": iso(entity.get("updated_at")),
            "state": {"firing": bool(state.get("firing")), "consecutive": int(state.get("consecutive", 0)),
                      "since": state.get("since"), "value": value}}


async def _latest_metrics(store: Store) -> dict[str, Any]:
    key = await store.latest_snapshot_key()
    entity = await store.get_snapshot(key) if key else None
    return row_metrics(entity) if entity else {}


async def list_rules(store: Store) -> list[dict[str, Any]]:
    entities, (states, _), values = await asyncio.gather(store.list_alert_rules(), store.load_states(RULE_KIND),
                                                         _latest_metrics(store))
    out = []
    for entity in sorted(entities, key=lambda e: (e.get("name", "").lower(), e["RowKey"])):
        rule = rule_of(entity)
        row = states.get(entity["RowKey"])
        out.append(_rule_view(rule, entity, row.data if row else None, values.get(rule.metric)))
    return out


async def _load_rule(store: Store, rule_id: str) -> tuple[dict[str, Any], AlertRule]:
    entity = await store.get_alert_rule(rule_id) if looks_like_id(rule_id) else None
    if entity is None:
        raise NotFound(f"no alert rule {rule_id}")
    return entity, rule_of(entity)


async def get_rule(store: Store, rule_id: str) -> dict[str, Any]:
    entity, rule = await _load_rule(store, rule_id)
    row, values = await asyncio.gather(store.get_state(RULE_KIND, rule_id), _latest_metrics(store))
    return _rule_view(rule, entity, row.data if row else None, values.get(rule.metric))


async def create_rule(store: Store, payload: Any) -> dict[str, Any]:
    if isinstance(payload, dict) and payload.get("id") is not None:
        raise Invalid("id is assigned by the server", field_error("id", "must not be given"))
    rule = _parse_rule(payload)
    if len(await store.list_alert_rules()) >= MAX_RULES:
        raise Invalid(f"at most {MAX_RULES} alert rules", field_error("(rules)", "delete one first"))
    rule.id = uuid.uuid4().hex
    entity = fits(_rule_entity(rule, _utcnow()), "alert rule", RULES_PK)  # 413 past Table Storage's limits
    await store.insert_alert_rule(entity)
    return _rule_view(rule, entity, None, (await _latest_metrics(store)).get(rule.metric))


async def update_rule(store: Store, rule_id: str, patch: Any) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise Invalid("the body must be a JSON object", field_error("(body)", "expected an object"))
    if patch.get("id", rule_id) != rule_id:
        raise Invalid("id cannot be changed", field_error("id", "read-only"))
    entity, rule = await _load_rule(store, rule_id)
    new = _parse_rule({**rule.model_dump(mode="json"), **patch, "id": rule_id})
    new_entity = fits(_rule_entity(new, entity.get("created_at") or _utcnow()), "alert rule", RULES_PK)
    try:
        await store.replace_alert_rule(new_entity, etag_of(entity))
    except Conflict:
        raise Duplicate("the rule was changed by someone else at the same time; retry",
                        field_error("(rule)", "concurrent update")) from None
    return await get_rule(store, rule_id)


async def delete_rule(store: Store, rule_id: str) -> None:
    await _load_rule(store, rule_id)
    await store.delete_alert_rule(rule_id, RULE_KIND)
