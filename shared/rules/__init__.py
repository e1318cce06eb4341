"""Alert rules over snapshot metrics: the model (model.py), their definitions (service.py), and evaluating them on
every stored snapshot (evaluate.py)."""

from shared.rules.evaluate import evaluate_rules, step
from shared.rules.model import MAX_RULES, OPERATORS, RULE_KIND, AlertRule
from shared.rules.service import create_rule, delete_rule, get_rule, list_rules, update_rule

__all__ = ["MAX_RULES", "OPERATORS", "RULE_KIND", "AlertRule", "create_rule", "delete_rule", "evaluate_rules",
           "get_rule", "list_rules", "step", "update_rule"]
