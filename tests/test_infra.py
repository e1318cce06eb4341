"""The Azure deployment (infra/, azure.yaml), checked offline over pycep-parser's parse tree of every .bicep file.

The most important check is the settings cross-check: every name in `shared.settings.SETTING_NAMES` (read at test
time, so a setting added to the model is covered without touching this file) must be an app setting (in
infra/main.bicep's shared `appSettings`, or added per location by infra/modules/region.bicep), fed by a parameter
with the app's default, mapped in infra/main.parameters.json, and present in local.settings.json.example.
`test_cross_check_reports_a_removed_setting` proves the check bites. The exceptions are DERIVED_SETTINGS, which
the template works out per location from `locations`.

Locations: main.bicep deploys modules/region.bicep (plan, app, app settings) and a VNet once per entry of
`locations`; `evaluate` works the template out for parameter values (the loops, the conditions, the names, the
settings of each app), so the tests check what one and three locations deploy, not only the text. The postdeploy
hook (infra/hooks/postdeploy.sh) is run for real with stand-ins for the azd and az CLIs.

No Azure, no Bicep CLI: this is structure, not a deployment (`az deployment group what-if` is the next step).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
import typing
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from shared import settings as settings_module
from shared import storage as storage_module

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
REGION = INFRA / "modules" / "region.bicep"
HOOK = INFRA / "hooks" / "postdeploy.sh"
PARAMETERS = INFRA / "main.parameters.json"
EXAMPLE = ROOT / "local.settings.json.example"

CONNECTION_STRING_SETTING = "AzureWebJobsStorage"  # local only; must never be set in Azure
IDENTITY_PREFIX = "AzureWebJobsStorage__"          # computed from the deployed resources, not parameters
# Settings the template derives per location from `locations` instead of taking a parameter of their own:
DERIVED_SETTINGS = {
    "CHECK_LOCATION": "the location's region name (modules/region.bicep, from main.bicep's apps[i].location)",
    "CHECK_LOCATIONS": "every location, comma-separated, the same in every app (join(regions, ','))",
    "CHECKS_QUEUE": "monitor-checks with one location, monitor-checks-<location> with several (apps[i].checksQueue)",
}

# Built-in role definitions (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
MONITORING_READER = "43d0d8ad-25c7-4714-9337-8ba259a9fe05"
LOG_ANALYTICS_READER = "73c42c96-874c-492b-b04d-ab87d138a893"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"

# Settings that Flex Consumption rejects or that would bypass the identity-based setup.
FORBIDDEN_APP_SETTINGS = (
    CONNECTION_STRING_SETTING, "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "APPINSIGHTS_INSTRUMENTATIONKEY",
)

# One deployment's inputs: the resource group's region, and the hash in every name (uniqueString() is Azure's).
HOME = "westeurope"
TOKEN = "abcdefghijklm"
THREE = ["westeurope", "northeurope", "eastus2"]


# ============================================================================================ parse helpers


@lru_cache(maxsize=1)
def _parser() -> BicepParser:
    return BicepParser()


@cache
def _parse_cached(path: str, mtime: float) -> dict[str, Any]:
    return _parser().parse(file_path=Path(path))


def parse(path: Path) -> dict[str, Any]:
    return _parse_cached(str(path), path.stat().st_mtime)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's own body, without the `if (…)` condition or `[for …]` loop around it."""
    config = resource["config"]
    while isinstance(config, dict) and "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def loop(resource: dict[str, Any]) -> dict[str, Any]:
    """The `[for …]` of a resource, module or variable value: item_name, index_name, array_name."""
    config = resource.get("config", resource.get("value"))
    assert isinstance(config, dict) and "loop_type" in config, "not a loop"
    return config["loop_type"]["detail"]


def render(node: Any) -> str:
    """An expression from the parse tree as compact text: `identity.properties.principalId`, `empty(x)`, …"""
    if isinstance(node, (str, int, bool)) or node is None:
        return str(node)
    if isinstance(node, dict) and "operator" in node:
        op = node["operator"]
        operands = op.get("operands", {})
        if op["type"] == "property_accessor":
            return f"{render(operands['operand_1'])}.{render(operands['operand_2'])}"
        return f"{op['type']}({', '.join(render(v) for v in operands.values())})"
    if isinstance(node, dict) and "function" in node:
        fn = node["function"]
        return f"{fn['type']}({', '.join(render(v) for v in fn.get('parameters', {}).values() if v is not None)})"
    return json.dumps(node, sort_keys=True)


def words(node: Any) -> set[str]:
    """Every string leaf of an expression, plus the identifiers inside `${…}` interpolations."""
    found: set[str] = set()
    if isinstance(node, str):
        found.add(node)
        for inner in re.findall(r"\$\{([^}]*)\}", node):
            found.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", inner))
    elif isinstance(node, dict):
        for value in node.values():
            found |= words(value)
    elif isinstance(node, list):
        for value in node:
            found |= words(value)
    return found


def resources(tree: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    """symbol -> resource (with 'config') of one type that the file deploys (not `existing`), api version ignored."""
    return {name: r for name, r in tree.get("resources", {}).items()
            if r["type"].lower() == type_.lower() and not r.get("existing")}


def one(tree: dict[str, Any], type_: str) -> tuple[str, dict[str, Any]]:
    found = resources(tree, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found.items()))


def role_guid(assignment_body: dict[str, Any]) -> str:
    role = assignment_body["properties"]["roleDefinitionId"]["function"]
    assert role["type"] == "subscription_resource_id", render(assignment_body["properties"]["roleDefinitionId"])
    assert role["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    return role["parameters"]["resource_name_1"]


def camel(setting: str) -> str:
    """The Bicep parameter of an app setting: CHECK_CONCURRENCY -> checkConcurrency."""
    first, *rest = setting.lower().split("_")
    return first + "".join(part.capitalize() for part in rest)


def decorator(param: dict[str, Any], kind: str) -> Any:
    for item in param.get("decorators", []):
        if item["type"] == kind:
            return item.get("argument", True)
    return None


def region_module(tree: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """main.bicep's module of modules/region.bicep (one plan + app per location)."""
    found = {name: m for name, m in tree.get("modules", {}).items() if m["detail"]["path"] == "modules/region.bicep"}
    assert len(found) == 1, f"expected one module of modules/region.bicep, found {sorted(found)}"
    return next(iter(found.items()))


def region_params(tree: dict[str, Any]) -> dict[str, Any]:
    """What main.bicep passes to modules/region.bicep, parameter by parameter (unevaluated)."""
    return body(region_module(tree)[1])["params"]


def _union_objects(node: Any) -> list[dict[str, Any]]:
    """The object literals of a `union(…)` and of the `?:` branches inside it (what region.bicep adds)."""
    if isinstance(node, dict) and "function" in node and node["function"]["type"] == "union":
        return [o for arg in node["function"]["parameters"].values() for o in _union_objects(arg)]
    if isinstance(node, dict) and "operator" in node and node["operator"]["type"] == "conditional":
        operands = node["operator"]["operands"]
        return _union_objects(operands["true_value"]) + _union_objects(operands["false_value"])
    return [node] if isinstance(node, dict) and "function" not in node and "operator" not in node else []


def region_settings_resource(region: dict[str, Any]) -> dict[str, Any]:
    blocks = [r for r in resources(region, "Microsoft.Web/sites/config").values() if body(r).get("name") == "appsettings"]
    assert len(blocks) == 1, f"expected one appsettings resource in region.bicep, found {len(blocks)}"
    return blocks[0]


def app_settings(main: dict[str, Any], region: dict[str, Any]) -> dict[str, Any]:
    """name -> expression of every app setting: main.bicep's shared `appSettings` object, then what region.bicep's
    appsettings resource adds per location (its union's object literals, in region.bicep's own parameters)."""
    shared = main["variables"]["appSettings"]["value"]
    assert isinstance(shared, dict) and "function" not in shared, "appSettings should be one object literal"
    properties = body(region_settings_resource(region))["properties"]
    own = {k: v for obj in _union_objects(properties) for k, v in obj.items()}
    return {**shared, **own}


def fed_by(name: str, main: dict[str, Any], region: dict[str, Any]) -> set[str]:
    """The names in main.bicep a setting's value comes from (through region.bicep's parameters for its own)."""
    shared = main["variables"]["appSettings"]["value"]
    if name in shared:
        return words(shared[name])
    own = app_settings(main, region)[name]
    passed = region_params(main)
    return {w for word in words(own) if word in region.get("parameters", {}) for w in words(passed.get(word, ""))}


# ================================================================================================ evaluate


class Opaque(str):
    """What `evaluate` cannot work out offline, as text: a resource's property (`storage.name`), uniqueString(), …"""


def _key(key: str) -> str:
    return key[1:-1] if len(key) > 1 and key[0] == key[-1] == "'" else key


def concrete(value: Any) -> bool:
    """Fully known: no Opaque part and no `${…}` left in a string."""
    if isinstance(value, Opaque):
        return False
    if isinstance(value, str):
        return "${" not in value
    if isinstance(value, list):
        return all(concrete(v) for v in value)
    if isinstance(value, dict):
        return all(concrete(v) for v in value.values())
    return True


@cache
def _expression(text: str) -> Any:
    """pycep's tree of one expression (what is inside an interpolation's `${…}`)."""
    return _parser().parse(text=f"var x = {text}\n")["variables"]["x"]["value"]


def _cidr_subnet(network: str, bits: int, index: int) -> str:
    net = ipaddress.ip_network(network)
    size = 2 ** (net.max_prefixlen - bits)
    subnet = ipaddress.ip_network(f"{ipaddress.ip_address(int(net.network_address) + index * size)}/{bits}")
    assert subnet.subnet_of(net), f"cidrSubnet({network}, {bits}, {index}) is outside {network}: Bicep fails here"
    return str(subnet)


_BINARY = {
    "equals": lambda a, b: a == b, "not_equals": lambda a, b: a != b, "and": lambda a, b: a and b,
    "or": lambda a, b: a or b, "greater_than": lambda a, b: a > b, "greater_than_or_equals": lambda a, b: a >= b,
    "less_than": lambda a, b: a < b, "less_than_or_equals": lambda a, b: a <= b, "add": lambda a, b: a + b,
    "substract": lambda a, b: a - b, "multiply": lambda a, b: a * b, "divide": lambda a, b: a // b,
    "modulo": lambda a, b: a % b,
}


class _Evaluator:
    """Enough of Bicep for this template: names, `${…}`, `?:`, `!`, comparisons and arithmetic, objects, arrays,
    `[for …]`, `a.b`, `a[i]` and the functions it uses. pycep gives a name and a string literal alike, so a string
    is a name when one is declared (a loop variable, a parameter, a variable, a resource or module symbol).
    Parameters take their default unless given; variables are worked out in the outer scope (never a loop's)."""

    def __init__(self, tree: dict[str, Any], names: dict[str, Any], root: _Evaluator | None = None) -> None:
        self.tree, self.names, self.root = tree, names, root or self

    def scoped(self, **names: Any) -> _Evaluator:
        return _Evaluator(self.tree, {**self.names, **names}, self.root)

    def value(self, node: Any) -> Any:
        if isinstance(node, str):
            return self.name(node)
        if isinstance(node, list):
            return [self.value(item) for item in node]
        if isinstance(node, dict):
            if "loop_type" in node:
                return self.loop(node)
            if "operator" in node:
                return self.operator(node)
            if "function" in node:
                return self.function(node)
            return {self.interpolate(_key(k)): self.value(v) for k, v in node.items()}
        return node

    def name(self, text: str) -> Any:
        if text in self.names:
            return self.names[text]
        symbols = {**self.tree.get("resources", {}), **self.tree.get("modules", {})}
        params, variables = self.tree.get("parameters", {}), self.tree.get("variables", {})
        if text in params:
            if text in self.root.names:
                return self.root.names[text]
            declared = params[text].get("default")
            default = Opaque(text) if declared is None else self.root.value(declared)
            return Opaque(text) if isinstance(default, Opaque) else default
        if text in variables:
            value = self.root.value(variables[text]["value"])
            return Opaque(text) if isinstance(value, Opaque) else value
        if text in symbols:
            return Opaque(text)
        return self.interpolate(text)

    def interpolate(self, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            value = self.value(_expression(match.group(1)))
            if isinstance(value, bool):
                return str(value).lower()
            if isinstance(value, (str, int)) and not isinstance(value, Opaque):
                return str(value)
            return "${" + (value if isinstance(value, Opaque) else match.group(1)) + "}"
        return re.sub(r"\$\{([^}]*)\}", one, text) if "${" in text else text

    def loop(self, node: dict[str, Any]) -> Any:
        detail = node["loop_type"]["detail"]
        items = self.value(detail["array_name"])
        if not isinstance(items, list):
            return Opaque(f"[for … in {render(detail['array_name'])}]")
        out = []
        for index, item in enumerate(items):
            scope = self.scoped(**{detail["item_name"]: item}, **({detail["index_name"]: index}
                                                                   if "index_name" in detail else {}))
            if node.get("condition") is None or scope.value(node["condition"]):
                out.append(scope.value(node["config"]))
        return out

    def operator(self, node: dict[str, Any]) -> Any:
        op = node["operator"]
        kind, operands = op["type"], op.get("operands", {})
        if kind == "conditional":
            condition = self.value(operands["condition"])
            if not concrete(condition):
                return Opaque(render(node))
            return self.value(operands["true_value" if condition else "false_value"])
        if kind == "not":
            value = self.value(operands["bool_value"])
            return not value if concrete(value) else Opaque(render(node))
        if kind in ("property_accessor", "index_accessor"):
            base = self.value(operands["operand_1"])
            if kind == "index_accessor":
                index = self.value(operands["operand_2"])
                if isinstance(base, (list, dict)) and not isinstance(index, Opaque):
                    return base[index]
                return Opaque(f"{base}[{index}]")
            for attribute in render(operands["operand_2"]).split("."):
                base = base[attribute] if isinstance(base, dict) and attribute in base else Opaque(f"{base}.{attribute}")
            return base
        if kind in _BINARY:
            a, b = self.value(operands["operand_1"]), self.value(operands["operand_2"])
            return _BINARY[kind](a, b) if concrete(a) and concrete(b) else Opaque(render(node))
        return Opaque(render(node))

    def function(self, node: dict[str, Any]) -> Any:
        fn = node["function"]
        kind, raw = fn["type"], [v for v in fn.get("parameters", {}).values() if v is not None]
        if kind in ("map", "filter"):
            items, lam = self.value(raw[0]), raw[1]["detail"]
            if not isinstance(items, list):
                return Opaque(render(node))
            results = [self.scoped(**{lam["var_1"]: item}).value(lam["expression"]) for item in items]
            return results if kind == "map" else [item for item, keep in zip(items, results) if keep]
        args = [self.value(arg) for arg in raw]
        try:
            return self._call(kind, args)
        except (TypeError, ValueError, KeyError):
            return Opaque(render(node))

    @staticmethod
    def _call(kind: str, args: list[Any]) -> Any:
        structural = {
            "concat": lambda *a: [x for lst in a for x in lst] if all(isinstance(x, list) for x in a)
            else "".join(map(str, a)),
            "flatten": lambda a: [x for sub in a for x in sub],
            "union": lambda *a: ({k: v for d in a for k, v in d.items()} if all(isinstance(d, dict) for d in a)
                                 else list(dict.fromkeys(x for lst in a for x in lst))),
            "length": lambda a: len(a) if isinstance(a, (list, dict)) or concrete(a) else _raise(),
            "empty": lambda a: len(a) == 0,
            "skip": lambda a, n: a[n:] if isinstance(a, list) or concrete(a) else _raise(),
            "take": lambda a, n: a[:n] if isinstance(a, list) or concrete(a) else _raise(),
            "join": lambda a, d: d.join(str(x) for x in a),
            "range": lambda start, count: list(range(start, start + count)),
        }
        textual = {
            "to_lower": str.lower, "to_upper": str.upper, "trim": str.strip, "split": lambda s, d: s.split(d),
            "replace": lambda s, old, new: s.replace(old, new), "cidrSubnet": _cidr_subnet,
            "string": lambda v: str(v).lower() if isinstance(v, bool) else str(v),
        }
        if kind in structural:
            return structural[kind](*args)
        if kind in textual and all(concrete(a) for a in args):
            return textual[kind](*args)
        raise ValueError(kind)


def _raise() -> typing.NoReturn:
    raise ValueError("not concrete")


def evaluate(node: Any, tree: dict[str, Any], **params: Any) -> Any:
    """The value of an expression for parameter (or variable) values: defaults, or `params`."""
    return _Evaluator(tree, params).value(node)


def instances(resource: dict[str, Any], tree: dict[str, Any], **params: Any) -> list[Any]:
    """Each copy a resource or module deploys, evaluated: one per loop item, none when its `if` is false."""
    config, evaluator = resource["config"], _Evaluator(tree, params)
    if isinstance(config, dict) and "loop_type" in config:
        return evaluator.loop(config)
    if isinstance(config, dict) and "condition" in config and "config" in config:
        return [evaluator.value(config["config"])] if evaluator.value(config["condition"]) else []
    return [evaluator.value(config)]


def located(**params: Any) -> dict[str, Any]:
    """Parameters of a deployment in resource group region HOME, with the hash fixed (`TOKEN`)."""
    return {"location": HOME, "resourceToken": TOKEN, **params}


def deployed_apps(**params: Any) -> list[dict[str, Any]]:
    """What each location's modules/region.bicep gets (evaluated module bodies, in the order of `locations`)."""
    return instances(region_module(parse(MAIN))[1], parse(MAIN), **params)


def effective_settings(**params: Any) -> list[dict[str, Any]]:
    """Each location's app settings as deployed: region.bicep's appsettings evaluated with what main passes it."""
    properties = body(region_settings_resource(parse(REGION)))["properties"]
    return [evaluate(properties, parse(REGION), **app["params"]) for app in deployed_apps(**params)]


# ============================================================================================ the cross-check


def setting_names() -> tuple[str, ...]:
    """Every setting the app reads, from the model itself (colleagues add more; nothing here lists them)."""
    return tuple(settings_module.SETTING_NAMES)


def deployable_settings() -> list[str]:
    return [name for name in setting_names() if name != CONNECTION_STRING_SETTING]


def parameter_settings() -> list[str]:
    """Settings that come from a parameter (the identity-based storage ones are computed from the resources, the
    DERIVED_SETTINGS from `locations`)."""
    return [name for name in deployable_settings()
            if not name.startswith(IDENTITY_PREFIX) and name not in DERIVED_SETTINGS]


def missing_from_bicep(main: dict[str, Any], region: dict[str, Any], names: typing.Iterable[str]) -> list[str]:
    """Setting names the Bicep app settings do not define (the connection string is never expected)."""
    defined = set(app_settings(main, region))
    return [name for name in names if name != CONNECTION_STRING_SETTING and name not in defined]


def missing_from_example(values: dict[str, Any], names: typing.Iterable[str]) -> list[str]:
    return [name for name in names if name not in values]


def example_values() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())["Values"]


def test_every_setting_the_app_reads_is_an_app_setting_in_bicep():
    assert len(setting_names()) >= 20, "SETTING_NAMES looks empty: the cross-check would prove nothing"
    assert missing_from_bicep(parse(MAIN), parse(REGION), setting_names()) == [], \
        "add these settings to appSettings in infra/main.bicep (and a parameter named in camelCase)"


def test_every_setting_the_app_reads_is_in_local_settings_example():
    assert missing_from_example(example_values(), setting_names()) == [], \
        "add these settings to local.settings.json.example"


def test_region_module_writes_the_shared_settings_and_its_own():
    """region.bicep's appsettings is union(sharedAppSettings, own): drop the shared half and every app loses them."""
    properties = body(region_settings_resource(parse(REGION)))["properties"]
    assert properties["function"]["type"] == "union"
    assert properties["function"]["parameters"]["arg_1"] == "sharedAppSettings"
    assert region_params(parse(MAIN))["sharedAppSettings"] == "appSettings"
    assert set(DERIVED_SETTINGS) <= set(setting_names()), "a derived setting the app no longer reads: drop it here"


@pytest.mark.parametrize("name", deployable_settings())
def test_cross_check_reports_a_removed_setting(name, tmp_path):
    """Delete one app-setting line from a copy of the templates: the copy still parses and the check names it."""
    line = re.compile(rf"^[ \t]*{re.escape(name)}[ \t]*:.*\n", re.M)
    where = {path: len(line.findall(path.read_text())) for path in (MAIN, REGION)}
    assert sorted(where.values()) == [0, 1], f"{name} should be exactly one app-setting line in main or region.bicep"
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    path = next(p for p, n in where.items() if n == 1)
    target = copy / path.relative_to(INFRA)
    target.write_text(line.sub("", path.read_text()))
    trees = [_parser().parse(file_path=copy / p.relative_to(INFRA)) for p in (MAIN, REGION)]
    assert missing_from_bicep(*trees, setting_names()) == [name]


@pytest.mark.parametrize("name", deployable_settings())
def test_cross_check_reports_a_setting_removed_from_the_example(name):
    values = {k: v for k, v in example_values().items() if k != name}
    assert missing_from_example(values, setting_names()) == [name]


def test_cross_check_reports_a_setting_new_in_the_model():
    main, region = parse(MAIN), parse(REGION)
    assert missing_from_bicep(main, region, (*setting_names(), "BRAND_NEW_SETTING")) == ["BRAND_NEW_SETTING"]
    assert missing_from_example(example_values(), (*setting_names(), "BRAND_NEW_SETTING"))[-1] == "BRAND_NEW_SETTING"


def _field(name: str) -> Any:
    return next(f for f in settings_module.Settings.model_fields.values() if f.alias == name)


def _app_default(name: str) -> Any:
    field = _field(name)
    if field.default_factory is not None:
        return field.default_factory()
    return None if field.default is PydanticUndefined else field.default


def _is_secret(name: str) -> bool:
    field = _field(name)
    return field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)


@pytest.mark.parametrize("name", parameter_settings())
def test_setting_has_a_parameter_with_the_apps_default(name):
    main, region = parse(MAIN), parse(REGION)
    param_name = camel(name)
    params = main["parameters"]
    assert param_name in params, f"{name}: add `param {param_name}` to infra/main.bicep"
    param = params[param_name]
    assert name in app_settings(main, region), f"{name} is not an app setting in infra/main.bicep"
    assert param_name in fed_by(name, main, region), f"{name} is not fed by param {param_name}"

    default, bicep_default = _app_default(name), param.get("default")
    if default is None or default == []:
        assert bicep_default == "", f"{param_name}: the app has no default, so the parameter's should be ''"
    elif isinstance(default, bool):
        assert param["type"] == "bool" and bicep_default is default
    elif isinstance(default, int):
        assert param["type"] == "int" and bicep_default == default
    elif isinstance(default, float):  # Bicep has no floats: a string parameter holding the number
        assert param["type"] == "string" and float(bicep_default) == default
    else:
        assert bicep_default == str(default), f"{param_name}: default {bicep_default!r}, the app's is {default!r}"

    field = _field(name)
    literal = [a for a in (field.annotation, *typing.get_args(field.annotation)) if typing.get_origin(a) is typing.Literal]
    if literal:
        assert decorator(param, "allowed") == list(typing.get_args(literal[0])), f"{param_name}: @allowed differs"
    for constraint in field.metadata if param["type"] == "int" else ():  # string params (floats) have no bounds
        if hasattr(constraint, "ge"):
            assert decorator(param, "min_value") == constraint.ge, f"{param_name}: @minValue differs from the app"
        if hasattr(constraint, "le"):
            assert decorator(param, "max_value") == constraint.le, f"{param_name}: @maxValue differs from the app"
    if _is_secret(name):
        assert decorator(param, "secure"), f"{param_name} holds a secret: mark it @secure()"


@pytest.mark.parametrize("name", parameter_settings())
def test_setting_can_be_set_from_the_azd_environment(name):
    """azd fills main.parameters.json from its environment: `azd env set NAME value` works for every setting."""
    values = json.loads(PARAMETERS.read_text())["parameters"]
    param_name = camel(name)
    assert param_name in values, f"map {param_name} in infra/main.parameters.json"
    default = parse(MAIN)["parameters"][param_name].get("default")
    expected_default = str(default).lower() if isinstance(default, bool) else str(default)
    assert values[param_name]["value"] == f"${{{name}={expected_default}}}"


@pytest.mark.parametrize("name", sorted(DERIVED_SETTINGS))
def test_derived_setting_has_no_parameter_of_its_own(name):
    """CHECK_LOCATION / CHECK_LOCATIONS / CHECKS_QUEUE follow `locations`: a parameter could contradict it."""
    assert camel(name) not in parse(MAIN)["parameters"]
    assert camel(name) not in json.loads(PARAMETERS.read_text())["parameters"]


# ======================================================================================== files and outputs


def test_every_bicep_file_parses_and_modules_resolve():
    files = bicep_files()
    assert MAIN in files and REGION in files
    for path in files:
        tree = parse(path)
        assert tree.get("resources") or tree.get("modules"), f"{path} parsed to nothing"
    for name, module in parse(MAIN).get("modules", {}).items():
        assert (INFRA / module["detail"]["path"]).is_file(), f"module {name}: {module['detail']['path']} not found"
    module_params = set(region_params(parse(MAIN)))
    declared = parse(REGION)["parameters"]
    required = {n for n, p in declared.items() if "default" not in p}
    assert required <= module_params <= set(declared), "main.bicep's region module and region.bicep's params differ"


def test_no_keys_or_connection_strings_anywhere_in_bicep():
    for path in bicep_files():
        text = path.read_text()
        for pattern in ("listKeys(", "AccountKey=", "InstrumentationKey=", "SharedAccessSignature", "listSecrets("):
            assert pattern not in text, f"{path.name} uses {pattern}: everything here is identity-based"


# Every output a one-location deployment had, and what it is (azd keeps them; docs and scripts read them).
OUTPUTS = {
    "AZURE_LOCATION": "location",
    "AZURE_TENANT_ID": "tenant().tenantId",
    "AZURE_FUNCTION_APP_NAME": "index_accessor(regionApps, 0).outputs.name",
    "SERVICE_API_NAME": "index_accessor(regionApps, 0).outputs.name",
    "SERVICE_API_BASE_URL": "https://${regionApps[0].outputs.defaultHostName}",
    "AZURE_STORAGE_ACCOUNT_NAME": "storage.name",
    "AZURE_KEY_VAULT_NAME": "keyVault.name",
    "AZURE_VIRTUAL_NETWORK_NAME": "index_accessor(vnets, 0).name",
    "APPLICATIONINSIGHTS_NAME": "appInsights.name",
    "AZURE_LOG_ANALYTICS_WORKSPACE_ID": "logAnalytics.properties.customerId",
}


def test_outputs_app_name_base_url_and_storage_account():
    outputs = parse(MAIN)["outputs"]
    assert {name: render(outputs[name]["value"]) for name in OUTPUTS if name in outputs} == OUTPUTS
    region_outputs = {name: render(out["value"]) for name, out in parse(REGION)["outputs"].items()}
    assert region_outputs == {"name": "functionApp.name", "defaultHostName": "functionApp.properties.defaultHostName"}
    assert region_module(parse(MAIN))[0] == "regionApps"


@pytest.mark.parametrize("locations", [[HOME], THREE], ids=["one", "three"])
def test_outputs_list_every_locations_app_and_url(locations):
    outputs = parse(MAIN)["outputs"]
    names = evaluate(outputs["AZURE_FUNCTION_APP_NAMES"]["value"], parse(MAIN), **located(locations=locations))
    urls = evaluate(outputs["SERVICE_API_BASE_URLS"]["value"], parse(MAIN), **located(locations=locations))
    assert names == [f"regionApps[{i}].outputs.name" for i in range(len(locations))]
    assert urls == [f"https://${{regionApps[{i}].outputs.defaultHostName}}" for i in range(len(locations))]
    assert outputs["AZURE_FUNCTION_APP_NAMES"]["type"] == outputs["SERVICE_API_BASE_URLS"]["type"] == "array"
    assert evaluate(outputs["AZURE_FUNCTION_APP_LOCATIONS"]["value"], parse(MAIN), **located(locations=locations)) \
        == locations
    others = evaluate(outputs["AZURE_OTHER_FUNCTION_APP_NAMES"]["value"], parse(MAIN), **located(locations=locations))
    assert others.split() == [app["params"]["appName"] for app in deployed_apps(**located(locations=locations))[1:]]


def test_parameters_file_fits_main_bicep():
    tree = parse(MAIN)
    values = json.loads(PARAMETERS.read_text())["parameters"]
    unknown = set(values) - set(tree["parameters"])
    assert not unknown, f"main.parameters.json sets parameters main.bicep does not have: {sorted(unknown)}"
    required = {name for name, p in tree["parameters"].items() if "default" not in p or p.get("default") is None}
    assert required <= set(values), f"required parameters missing from main.parameters.json: {required - set(values)}"
    assert values["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert values["location"]["value"] == "${AZURE_LOCATION}"


def _mini_yaml(text: str) -> dict[str, Any]:
    """Nested `key: value` mappings only (what azure.yaml uses); no PyYAML needed."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        if value.strip():
            stack[-1][1][key] = value.strip().strip("'\"")
        else:
            stack[-1][1][key] = child = {}
            stack.append((indent, child))
    return root


def test_azure_yaml_deploys_this_folder_as_the_tagged_function_app():
    config = _mini_yaml((ROOT / "azure.yaml").read_text())
    api = config["services"]["api"]
    assert (api["project"], api["language"], api["host"]) == (".", "python", "function")
    assert (config["infra"]["provider"], config["infra"]["path"], config["infra"]["module"]) == ("bicep", "infra", "main")
    for locations in ([HOME], THREE):
        tags = [app["params"]["tags"] for app in deployed_apps(**located(locations=locations))]
        assert [t.get("azd-service-name") for t in tags] == ["api"] + [None] * (len(locations) - 1), \
            "exactly one app (the first location's) is azd's service"
        assert all(t["azd-env-name"] == "environmentName" for t in tags)
    site = body(one(parse(REGION), "Microsoft.Web/sites")[1])
    assert site["tags"] == "tags" and body(one(parse(REGION), "Microsoft.Web/serverfarms")[1])["tags"] == "tags"


def test_azure_yaml_runs_the_postdeploy_hook_for_the_other_locations():
    hook = _mini_yaml((ROOT / "azure.yaml").read_text())["hooks"]["postdeploy"]
    assert hook["run"] == HOOK.relative_to(ROOT).as_posix()
    assert hook["shell"] == "sh"  # azd runs `bash <file>`
    assert HOOK.stat().st_mode & stat.S_IXUSR, "the hook should be executable"
    assert HOOK.read_text().startswith("#!/usr/bin/env bash\n")


# ===================================================================================== plan, app and storage


def test_plan_is_flex_consumption_fc1():
    _, plan = one(parse(REGION), "Microsoft.Web/serverfarms")
    plan = body(plan)
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["kind"] == "functionapp" and plan["properties"]["reserved"] is True
    assert plan["name"] == "planName" and plan["location"] == "location"


def test_function_app_runs_python_311_on_flex_with_identity_deployment_storage():
    main, region = parse(MAIN), parse(REGION)
    site = body(one(region, "Microsoft.Web/sites")[1])
    identity_symbol, _ = one(main, "Microsoft.ManagedIdentity/userAssignedIdentities")
    plan_symbol, _ = one(region, "Microsoft.Web/serverfarms")
    props = site["properties"]
    assert site["kind"] == "functionapp,linux"
    assert render(props["serverFarmId"]) == f"{plan_symbol}.id"
    assert props["httpsOnly"] is True
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    scale = config["scaleAndConcurrency"]
    passed = region_params(main)
    for name in ("instanceMemoryMB", "maximumInstanceCount"):  # main's parameter, through the module's
        assert scale[name] == name and passed[name] == name and name in main["parameters"]
    deployment = config["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["value"] == "${storage.properties.primaryEndpoints.blob}${deploymentContainerName}"
    assert region["resources"]["storage"]["existing"] and body(region["resources"]["storage"])["name"] == "storageAccountName"
    _, container = one(region, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert body(container)["name"] == "deploymentContainerName" and body(container)["properties"] == {"publicAccess": "None"}
    assert deployment["authentication"]["type"] == "UserAssignedIdentity"
    assert deployment["authentication"]["userAssignedIdentityResourceId"] == "identityId"
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    assert render(passed["identityId"]) == f"{identity_symbol}.id"
    storage_symbol, _ = one(main, "Microsoft.Storage/storageAccounts")
    assert render(passed["storageAccountName"]) == f"{storage_symbol}.name"


def test_storage_account_is_locked_down():
    _, account = one(parse(MAIN), "Microsoft.Storage/storageAccounts")
    props = body(account)["properties"]
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False
    assert props["allowSharedKeyAccess"] is False


def _checks_queues(locations: list[str]) -> set[str]:
    """The checks queues the app reads (CHECKS_QUEUE) and the poison queues the host makes for them."""
    if len(locations) == 1:
        names = [_app_default("CHECKS_QUEUE")]
    else:
        names = [f"monitor-checks-{location}" for location in locations]
    return {q for name in names for q in (name, f"{name}-poison")}


@pytest.mark.parametrize("locations", [[HOME], THREE], ids=["one", "three"])
def test_every_table_and_queue_of_the_app_is_created(locations):
    tree = parse(MAIN)
    for type_, var, expected in (
        ("Microsoft.Storage/storageAccounts/tableServices/tables", "tableNames", set(storage_module.TABLES)),
        ("Microsoft.Storage/storageAccounts/queueServices/queues", "queueNames",
         {storage_module.EVENTS_QUEUE, storage_module.POISON_QUEUE} | _checks_queues(locations)),
    ):
        (_, loop_resource), = resources(tree, type_).items()
        detail = loop(loop_resource)
        assert detail["array_name"] == var and body(loop_resource)["name"] == detail["item_name"]
        created = evaluate(var, tree, **located(locations=locations))
        assert len(created) == len(set(created)) and set(created) == expected, f"{var} differs from the app"


def test_storage_settings_are_identity_based():
    main, region = parse(MAIN), parse(REGION)
    settings = app_settings(main, region)
    storage_symbol, _ = one(main, "Microsoft.Storage/storageAccounts")
    identity_symbol, _ = one(main, "Microsoft.ManagedIdentity/userAssignedIdentities")
    assert render(settings["AzureWebJobsStorage__accountName"]) == f"{storage_symbol}.name"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert render(settings["AzureWebJobsStorage__clientId"]) == f"{identity_symbol}.properties.clientId"
    assert render(settings["AzureWebJobsStorage__tableServiceUri"]) == f"{storage_symbol}.properties.primaryEndpoints.table"
    assert render(settings["AzureWebJobsStorage__queueServiceUri"]) == f"{storage_symbol}.properties.primaryEndpoints.queue"
    present = [name for name in FORBIDDEN_APP_SETTINGS if name in settings]
    assert present == [], f"must not be set on a Flex Consumption app with identity-based storage: {present}"


# ================================================================================================ identity


def _main_assignments(tree: dict[str, Any]) -> list[dict[str, Any]]:
    return [body(r) for r in resources(tree, "Microsoft.Authorization/roleAssignments").values()]


@pytest.mark.parametrize("role, scope_type", [
    (STORAGE_BLOB_DATA_OWNER, "Microsoft.Storage/storageAccounts"),
    (STORAGE_QUEUE_DATA_CONTRIBUTOR, "Microsoft.Storage/storageAccounts"),
    (STORAGE_TABLE_DATA_CONTRIBUTOR, "Microsoft.Storage/storageAccounts"),
    (MONITORING_METRICS_PUBLISHER, "Microsoft.Insights/components"),
    (KEY_VAULT_SECRETS_USER, "Microsoft.KeyVault/vaults"),
], ids=["blob-data-owner", "queue-data-contributor", "table-data-contributor", "metrics-publisher",
        "key-vault-secrets-user"])
def test_role_assignment_to_the_app_identity(role, scope_type):
    tree = parse(MAIN)
    identity_symbol, _ = one(tree, "Microsoft.ManagedIdentity/userAssignedIdentities")
    scope_symbol, _ = one(tree, scope_type)
    matches = [a for a in _main_assignments(tree) if role_guid(a) == role]
    assert len(matches) == 1, f"expected one assignment of role {role}"
    assignment = matches[0]
    assert assignment["scope"] == scope_symbol
    assert render(assignment["properties"]["principalId"]) == f"{identity_symbol}.properties.principalId"
    assert assignment["properties"]["principalType"] == "ServicePrincipal"
    assert role in render(assignment["name"]) and scope_symbol in render(assignment["name"])
    module = region_module(tree)[1]
    assert module["config"]["config"].get("dependsOn"), "the apps should wait for their roles"
    for symbol, resource in tree["resources"].items():
        if body(resource) is assignment:
            assert symbol in module["config"]["config"]["dependsOn"], f"the apps do not wait for {symbol}"


@pytest.mark.parametrize("role", [MONITORING_READER, LOG_ANALYTICS_READER], ids=["monitoring-reader", "log-analytics-reader"])
def test_resource_reader_roles_at_the_scope_given_by_parameter(role):
    tree = parse(MAIN)
    identity_symbol, _ = one(tree, "Microsoft.ManagedIdentity/userAssignedIdentities")
    params = tree["parameters"]
    assert params["resourceReaderScope"]["default"] == "resourceGroup"
    assert decorator(params["resourceReaderScope"], "allowed") == ["resourceGroup", "subscription"]
    assert render(params["resourceReaderResourceGroupName"]["default"]) == "resource_group().name"

    modules = {n: m for n, m in tree["modules"].items() if m["detail"]["path"].startswith("modules/reader-roles-")}
    by_scope = {}
    for module in modules.values():
        config = module["config"]
        condition = render(config["condition"])
        assert condition.startswith("equals(resourceReaderScope, "), condition
        by_scope[condition] = module
        module_body = body(module)
        assert render(module_body["params"]["principalId"]) == f"{identity_symbol}.properties.principalId"
        module_tree = parse(INFRA / module["detail"]["path"])
        assert module_tree["parameters"]["principalId"]["type"] == "string"
        assignments = [body(r) for r in resources(module_tree, "Microsoft.Authorization/roleAssignments").values()]
        matches = [a for a in assignments if role_guid(a) == role]
        assert len(matches) == 1, f"{module['detail']['path']}: expected one assignment of {role}"
        assert matches[0]["properties"]["principalId"] == "principalId"
        assert matches[0]["properties"]["principalType"] == "ServicePrincipal"
        scope = render(module_body["scope"])
        if module_tree["globals"]["scope"]["value"] == "resourceGroup":
            assert scope == "resource_group(resourceReaderResourceGroupName, resourceReaderSubscriptionId)" or \
                scope == "resource_group(resourceReaderSubscriptionId, resourceReaderResourceGroupName)", scope
        else:
            assert module_tree["globals"]["scope"]["value"] == "subscription"
            assert scope == "subscription(resourceReaderSubscriptionId)", scope
    assert set(by_scope) == {"equals(resourceReaderScope, resourceGroup)", "equals(resourceReaderScope, subscription)"}


def test_no_other_role_assignments():
    known = {STORAGE_BLOB_DATA_OWNER, STORAGE_QUEUE_DATA_CONTRIBUTOR, STORAGE_TABLE_DATA_CONTRIBUTOR, MONITORING_READER,
             LOG_ANALYTICS_READER, MONITORING_METRICS_PUBLISHER, KEY_VAULT_SECRETS_USER}
    for path in bicep_files():
        tree = parse(path)
        for assignment in (body(r) for r in resources(tree, "Microsoft.Authorization/roleAssignments").values()):
            assert role_guid(assignment) in known, f"{path.name}: unexpected role {role_guid(assignment)}"


# ============================================================================================ telemetry


def test_app_insights_accepts_only_entra_auth_and_the_app_uses_its_identity():
    tree = parse(MAIN)
    insights_symbol, insights = one(tree, "Microsoft.Insights/components")
    workspace_symbol, _ = one(tree, "Microsoft.OperationalInsights/workspaces")
    identity_symbol, _ = one(tree, "Microsoft.ManagedIdentity/userAssignedIdentities")
    props = body(insights)["properties"]
    assert props["DisableLocalAuth"] is True
    assert render(props["WorkspaceResourceId"]) == f"{workspace_symbol}.id"
    settings = app_settings(tree, parse(REGION))
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == \
        f"ClientId=${{{identity_symbol}.properties.clientId}};Authorization=AAD"
    assert render(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == f"{insights_symbol}.properties.ConnectionString"
    # OpenTelemetry: the host's telemetryMode (host.json, overridden by app setting) and the Python worker's exporter
    assert settings["AzureFunctionsJobHost__telemetryMode"] == "OpenTelemetry"
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"


# ============================================================================================ Key Vault


def _secret_settings() -> list[str]:
    return [name for name in deployable_settings() if _is_secret(name)]


def test_key_vault_is_rbac_and_the_app_resolves_references_with_its_identity():
    tree = parse(MAIN)
    vault_symbol, vault = one(tree, "Microsoft.KeyVault/vaults")
    identity_symbol, _ = one(tree, "Microsoft.ManagedIdentity/userAssignedIdentities")
    props = body(vault)["properties"]
    assert props["enableRbacAuthorization"] is True
    assert "accessPolicies" not in props
    site = body(one(parse(REGION), "Microsoft.Web/sites")[1])
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityId"
    assert render(region_params(tree)["identityId"]) == f"{identity_symbol}.id"
    assert render(tree["variables"]["keyVaultUri"]["value"]) == f"{vault_symbol}.properties.vaultUri"
    assert len(_secret_settings()) >= 3  # SMTP password, WHMCS secret, InvenTree token (and more as they come)


@pytest.mark.parametrize("name", _secret_settings())
def test_secret_setting_is_a_key_vault_reference(name):
    tree = parse(MAIN)
    vault_symbol, _ = one(tree, "Microsoft.KeyVault/vaults")
    param_name = camel(name)
    value = tree["variables"]["appSettings"]["value"][name]  # shared: every location reads the one vault
    assert value.get("operator", {}).get("type") == "conditional", f"{name}: `empty({param_name}) ? '' : <reference>`"
    operands = value["operator"]["operands"]
    assert render(operands["condition"]) == f"empty({param_name})" and operands["true_value"] == ""
    reference = re.fullmatch(r"@Microsoft\.KeyVault\(SecretUri=\$\{keyVaultUri\}secrets/([a-z0-9-]+)/\)",
                             operands["false_value"])
    assert reference, f"{name}: not a Key Vault reference: {operands['false_value']!r}"
    secrets = {body(r)["name"]: r for r in resources(tree, "Microsoft.KeyVault/vaults/secrets").values()}
    secret = secrets.get(reference.group(1))
    assert secret is not None, f"{name}: no secret {reference.group(1)!r} in the vault"
    assert render(secret["config"]["condition"]) == f"not(empty({param_name}))"
    assert body(secret)["parent"] == vault_symbol
    assert body(secret)["properties"]["value"] == param_name
    assert decorator(tree["parameters"][param_name], "secure")


# ============================================================================================== network


def deployed_vnets(**params: Any) -> list[dict[str, Any]]:
    """Each location's VNet as deployed (evaluated), with its subnets by name."""
    _, vnets = one(parse(MAIN), "Microsoft.Network/virtualNetworks")
    out = instances(vnets, parse(MAIN), **params)
    for vnet in out:
        vnet["subnets"] = {s["name"]: s["properties"] for s in vnet["properties"]["subnets"]}
    return out


def test_function_app_is_vnet_integrated_through_a_flex_delegated_subnet_with_service_endpoints():
    main = parse(MAIN)
    vnet_symbol, vnets = one(main, "Microsoft.Network/virtualNetworks")
    assert loop(vnets)["array_name"] == "apps", "one VNet per location"
    app_subnet = evaluate("appSubnetName", main)
    assert "_" not in app_subnet, "Flex Consumption rejects subnet names with '_'"
    for locations in ([HOME], THREE):
        params = located(locations=locations)
        for i, vnet in enumerate(deployed_vnets(**params)):
            subnet = vnet["subnets"][app_subnet]
            assert [d["properties"]["serviceName"] for d in subnet["delegations"]] == ["Microsoft.App/environments"]
            storage_endpoint = "Microsoft.Storage" if locations[i] == HOME else "Microsoft.Storage.Global"
            assert [e["service"] for e in subnet["serviceEndpoints"]] == [storage_endpoint, "Microsoft.KeyVault"]
            assert vnet["location"] == locations[i]
        subnet_ids = evaluate("appSubnetIds", main, **params)
        assert subnet_ids == [f"${{{vnet_symbol}[{i}].id}}/subnets/{app_subnet}" for i in range(len(locations))]
        assert [app["params"]["subnetId"] for app in deployed_apps(**params)] == subnet_ids
    site = body(one(parse(REGION), "Microsoft.Web/sites")[1])
    assert site["properties"]["virtualNetworkSubnetId"] == "subnetId"
    assert "vnetRouteAllEnabled" not in site["properties"]  # Flex routes everything; the property is not used there


def _firewall_subnets(resource_type: str, **params: Any) -> list[str]:
    _, resource = one(parse(MAIN), resource_type)
    rules = instances(resource, parse(MAIN), **params)[0]["properties"]["networkAcls"]["virtualNetworkRules"]
    extra = {"Microsoft.Storage/storageAccounts": {"action": "Allow"},
             "Microsoft.KeyVault/vaults": {"ignoreMissingVnetServiceEndpoint": False}}[resource_type]
    assert all({k: v for k, v in rule.items() if k != "id"} == extra for rule in rules), rules
    return [rule["id"] for rule in rules]


def test_storage_firewall_denies_by_default_and_admits_the_app_subnet():
    tree = parse(MAIN)
    props = body(one(tree, "Microsoft.Storage/storageAccounts")[1])["properties"]
    acls = props["networkAcls"]
    assert acls["defaultAction"] == "Deny"
    assert acls["bypass"] == "AzureServices"
    assert loop({"value": acls["virtualNetworkRules"]})["array_name"] == "appSubnetIds"
    assert _firewall_subnets("Microsoft.Storage/storageAccounts", **located()) == \
        evaluate("appSubnetIds", tree, **located())
    ip_rules = acls["ipRules"]
    assert ip_rules["loop_type"]["detail"]["array_name"] == "allowedIps"
    assert ip_rules["config"] == {"value": ip_rules["loop_type"]["detail"]["item_name"], "action": "Allow"}
    assert evaluate(props["publicNetworkAccess"], tree) == "Enabled"  # firewall mode: public endpoint, rules apply


def test_key_vault_firewall_denies_by_default_and_purge_protection_is_on():
    tree = parse(MAIN)
    props = body(one(tree, "Microsoft.KeyVault/vaults")[1])["properties"]
    assert props["enablePurgeProtection"] is True
    assert props["enableSoftDelete"] is True and props["softDeleteRetentionInDays"] >= 7
    acls = props["networkAcls"]
    assert acls["defaultAction"] == "Deny"
    assert acls["bypass"] == "AzureServices"
    assert _firewall_subnets("Microsoft.KeyVault/vaults", **located()) == evaluate("appSubnetIds", tree, **located())
    ip_rules = acls["ipRules"]
    assert ip_rules["loop_type"]["detail"]["array_name"] == "allowedIps"
    assert ip_rules["config"] == {"value": ip_rules["loop_type"]["detail"]["item_name"]}
    assert evaluate(props["publicNetworkAccess"], tree) == "Enabled"


def test_deployer_addresses_come_from_one_comma_separated_parameter():
    tree = parse(MAIN)
    param = tree["parameters"]["allowedIpAddresses"]
    assert param["type"] == "string" and param["default"] == ""
    values = json.loads(PARAMETERS.read_text())["parameters"]
    assert values["allowedIpAddresses"]["value"] == "${ALLOWED_IP_ADDRESSES=}"
    ips = tree["variables"]["allowedIps"]["value"]["function"]
    assert ips["type"] == "filter"  # empty entries dropped, so '' means no rule at all
    split = ips["parameters"]["input_array"]["function"]["parameters"]["arg_1"]["function"]
    assert split == {"type": "split", "parameters": {"input_string": "allowedIpAddresses", "delimiter": ","}}
    assert evaluate("allowedIps", tree, allowedIpAddresses=" 203.0.113.7, ,198.51.100.0/24") == \
        ["203.0.113.7", "198.51.100.0/24"]
    assert evaluate("allowedIps", tree) == []


def test_ftp_and_basic_publishing_credentials_are_disabled():
    tree = parse(REGION)
    site_symbol, site = one(tree, "Microsoft.Web/sites")
    assert body(site)["properties"]["siteConfig"]["ftpsState"] == "Disabled"
    policies = {body(r)["name"]: body(r) for r in resources(tree, "Microsoft.Web/sites/basicPublishingCredentialsPolicies").values()}
    assert set(policies) == {"ftp", "scm"}
    for name, policy in policies.items():
        assert policy["parent"] == site_symbol, name
        assert policy["properties"] == {"allow": False}, name


def test_log_analytics_accepts_no_local_auth():
    _, workspace = one(parse(MAIN), "Microsoft.OperationalInsights/workspaces")
    assert body(workspace)["properties"]["features"]["disableLocalAuth"] is True


# resource type -> (file, log category group, metric category) of its diagnostic setting (None: no logs expected)
DIAGNOSTICS = {
    "Microsoft.Web/sites": (REGION, "allLogs", "AllMetrics"),  # each location's app
    "Microsoft.Storage/storageAccounts": (MAIN, None, "Transaction"),  # the account has metrics only
    "Microsoft.Storage/storageAccounts/blobServices": (MAIN, "storageLogCategoryGroup", "Transaction"),
    "Microsoft.Storage/storageAccounts/queueServices": (MAIN, "storageLogCategoryGroup", "Transaction"),
    "Microsoft.Storage/storageAccounts/tableServices": (MAIN, "storageLogCategoryGroup", "Transaction"),
    "Microsoft.KeyVault/vaults": (MAIN, "audit", "AllMetrics"),
}


@pytest.mark.parametrize("scope_type", list(DIAGNOSTICS), ids=lambda t: t.rsplit("/", 1)[-1])
def test_resource_sends_its_logs_and_metrics_to_the_workspace(scope_type):
    path, category_group, metric = DIAGNOSTICS[scope_type]
    tree, main = parse(path), parse(MAIN)
    workspace_symbol, _ = one(main, "Microsoft.OperationalInsights/workspaces")
    scope_symbol, _ = one(tree, scope_type)
    settings = [body(r) for r in resources(tree, "Microsoft.Insights/diagnosticSettings").values()
                if body(r)["scope"] == scope_symbol]
    assert len(settings) == 1, f"expected one diagnostic setting on {scope_symbol}"
    props = settings[0]["properties"]
    workspace = props["workspaceId"] if path == MAIN else region_params(main)[props["workspaceId"]]
    assert render(workspace) == f"{workspace_symbol}.id"
    if category_group is None:
        assert "logs" not in props
    else:
        assert props["logs"] == [{"categoryGroup": category_group, "enabled": True}]
    assert props["metrics"] == [{"category": metric, "enabled": True}]


def test_storage_log_category_group_is_audit_unless_chosen():
    param = parse(MAIN)["parameters"]["storageLogCategoryGroup"]
    assert param["default"] == "audit" and decorator(param, "allowed") == ["audit", "allLogs"]


@pytest.mark.parametrize("path", [MAIN, REGION], ids=["main", "region"])
def test_every_diagnostic_setting_targets_a_known_resource(path):
    tree = parse(path)
    known = {one(tree, scope_type)[0] for scope_type, (file, *_) in DIAGNOSTICS.items() if file == path}
    scopes = [body(r)["scope"] for r in resources(tree, "Microsoft.Insights/diagnosticSettings").values()]
    assert sorted(scopes) == sorted(known)


PRIVATE_LINK_TYPES = {
    "Microsoft.Network/privateDnsZones": "privateEndpointsToDeploy",
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks": "privateDnsZoneLinkPairs",
    "Microsoft.Network/privateEndpoints": "privateEndpointsToDeploy",
    "Microsoft.Network/privateEndpoints/privateDnsZoneGroups": "privateEndpointsToDeploy",
}


def _private_link_loops(tree: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """type -> (symbol, resource) of the four private-link resources, each a loop (nothing without endpoints)."""
    found = {}
    for type_, array in PRIVATE_LINK_TYPES.items():
        symbol, resource = one(tree, type_)
        assert loop(resource)["array_name"] == array, symbol
        found[type_] = (symbol, resource)
    return found


def test_private_endpoints_are_off_by_default_and_then_nothing_of_them_is_deployed():
    tree = parse(MAIN)
    param = tree["parameters"]["usePrivateEndpoints"]
    assert param["type"] == "bool" and param["default"] is False
    values = json.loads(PARAMETERS.read_text())["parameters"]
    assert values["usePrivateEndpoints"]["value"] == "${USE_PRIVATE_ENDPOINTS=false}"
    loops = _private_link_loops(tree)
    for locations in ([HOME], THREE):
        for symbol, resource in loops.values():
            assert instances(resource, tree, **located(locations=locations)) == [], f"{symbol} without endpoints"
        for symbol in ("peeringsToFirstLocation", "peeringsFromFirstLocation"):
            assert instances(tree["resources"][symbol], tree, **located(locations=locations)) == []


def test_private_endpoints_on_cover_blob_queue_table_and_vault_and_switch_public_access_off():
    tree = parse(MAIN)
    storage_symbol, storage = one(tree, "Microsoft.Storage/storageAccounts")
    vault_symbol, vault = one(tree, "Microsoft.KeyVault/vaults")
    vnet_symbol, _ = one(tree, "Microsoft.Network/virtualNetworks")
    targets = evaluate("privateEndpointsToDeploy", tree, usePrivateEndpoints=True)
    by_group = {t["groupId"]: t for t in targets}
    assert sorted(by_group) == ["blob", "queue", "table", "vault"] and len(targets) == 4
    for group in ("blob", "queue", "table"):
        assert by_group[group]["resourceId"] == f"{storage_symbol}.id"
        assert by_group[group]["zone"] == f"privatelink.{group}.${{environment().suffixes.storage}}"
    assert by_group["vault"]["resourceId"] == f"{vault_symbol}.id"
    assert by_group["vault"]["zone"] == "privatelink${keyVaultDnsSuffix}"  # privatelink.vaultcore.azure.net
    assert render(tree["variables"]["keyVaultDnsSuffix"]["value"]) == \
        "replace(environment().suffixes.keyvaultDns, .vault., .vaultcore.)"

    loops = _private_link_loops(tree)
    params = located(usePrivateEndpoints=True)
    zones_symbol, zones = loops["Microsoft.Network/privateDnsZones"]
    endpoints_symbol, endpoints = loops["Microsoft.Network/privateEndpoints"]
    for endpoint in instances(endpoints, tree, **params):  # in the first location, on its endpoint subnet
        assert endpoint["location"] == HOME and endpoint["properties"]["subnet"]["id"] == \
            f"${{{vnet_symbol}[0].id}}/subnets/snet-private-endpoints"
    item = loop(endpoints)["item_name"]
    (connection,) = body(endpoints)["properties"]["privateLinkServiceConnections"]
    assert render(connection["properties"]["privateLinkServiceId"]) == f"{item}.resourceId"
    assert [render(g) for g in connection["properties"]["groupIds"]] == [f"{item}.groupId"]
    assert render(body(zones)["name"]) == f"{loop(zones)['item_name']}.zone"
    assert body(zones)["location"] == "global"

    _, links = loops["Microsoft.Network/privateDnsZones/virtualNetworkLinks"]
    deployed = instances(links, tree, **params)
    assert [(link["parent"], link["name"], link["properties"]["virtualNetwork"]["id"]) for link in deployed] == [
        (f"{zones_symbol}[{i}]", f"vnet-{TOKEN}-{group}", f"{vnet_symbol}[0].id")
        for i, group in enumerate(["blob", "queue", "table", "vault"])]  # one location: as it always was
    assert all(link["properties"]["registrationEnabled"] is False for link in deployed)

    groups_symbol, groups = loops["Microsoft.Network/privateEndpoints/privateDnsZoneGroups"]
    index = loop(groups)["index_name"]
    assert render(body(groups)["parent"]) == f"index_accessor({endpoints_symbol}, {index})"
    (zone_config,) = body(groups)["properties"]["privateDnsZoneConfigs"]
    assert render(zone_config["properties"]["privateDnsZoneId"]) == f"index_accessor({zones_symbol}, {index}).id"

    (vnet,) = deployed_vnets(**params)
    assert vnet["subnets"][evaluate("privateEndpointSubnetName", tree)]["addressPrefix"] == \
        tree["parameters"]["privateEndpointSubnetAddressPrefix"]["default"]

    for resource in (storage, vault):
        access = body(resource)["properties"]["publicNetworkAccess"]
        assert evaluate(access, tree, usePrivateEndpoints=True) == "Disabled"
        assert evaluate(access, tree, usePrivateEndpoints=False) == "Enabled"
    waits_for = body(region_module(tree)[1])["dependsOn"]
    assert groups_symbol in waits_for  # the apps start once the names resolve to the endpoints
    assert {"peeringsToFirstLocation", "peeringsFromFirstLocation", loops[
        "Microsoft.Network/privateDnsZones/virtualNetworkLinks"][0]} <= set(waits_for)


# ============================================================================================== locations
# `locations` (default: [ location ]): one plan + app + VNet per entry, everything else once. `located()` fixes the
# resource group's region (HOME) and the name hash (TOKEN), so names come out as Azure would make them.

# What a one-location deployment is made of (the names it always had, so azd and existing deployments find them).
ONE_LOCATION = {
    "appName": "func-${resourceToken}",
    "planName": "plan-${resourceToken}",
    "vnetName": "vnet-${resourceToken}",
    "deploymentContainerName": "app-package-${take(appName, 32)}-${take(resourceToken, 7)}",
}


def test_locations_parameter_defaults_to_the_resource_groups_region_and_azd_can_set_it():
    tree = parse(MAIN)
    param = tree["parameters"]["locations"]
    assert param["type"] == "array" and param["default"] == ["location"]
    assert decorator(param, "max_length") == 17  # the other locations' /20s of a /16
    values = json.loads(PARAMETERS.read_text())["parameters"]
    # azd (1.23.4 and later) reads an array parameter's env var as JSON; unset, the parameter is left out (default)
    assert values["locations"]["value"] == "${CHECK_LOCATIONS_JSON=}"
    assert evaluate("regions", tree, location=HOME) == [HOME]
    assert evaluate("regions", tree, location=HOME, locations=[]) == [HOME]  # `azd env set CHECK_LOCATIONS_JSON '[]'`
    assert evaluate("regions", tree, location=HOME, locations=THREE) == THREE


def test_one_location_by_default_is_todays_deployment():
    """Default parameters: one app in the resource group's region, under the names it always had, reading the
    checks queue the app defaults to, with CHECK_LOCATION its region."""
    tree = parse(MAIN)
    (app,) = evaluate("apps", tree, location=HOME)  # the hash left symbolic: the names' text
    assert {k: app[k] for k in ONE_LOCATION} == ONE_LOCATION
    assert tree["variables"]["deploymentContainerName"]["value"] == ONE_LOCATION["deploymentContainerName"]
    assert tree["variables"]["appName"]["value"]["operator"]["operands"]["true_value"] == ONE_LOCATION["appName"]

    (module,) = deployed_apps(**located())
    assert module["name"] == f"app-{TOKEN}-{HOME}"
    params = module["params"]
    assert (params["location"], params["appName"], params["planName"]) == (HOME, f"func-{TOKEN}", f"plan-{TOKEN}")
    assert params["deploymentContainerName"] == f"app-package-func-{TOKEN}-{TOKEN[:7]}"
    assert params["hostId"] == ""  # the host id Azure always derived from the name
    assert params["tags"] == {"azd-env-name": "environmentName", "azd-service-name": "api"}

    (settings,) = effective_settings(**located())
    assert settings["CHECK_LOCATION"] == settings["CHECK_LOCATIONS"] == HOME
    assert settings["CHECKS_QUEUE"] == _app_default("CHECKS_QUEUE") == "monitor-checks"
    assert settings["PUBLIC_BASE_URL"] == "https://${functionApp.properties.defaultHostName}"
    app = settings_module.Settings(**{"AzureWebJobsStorage__accountName": "st", "GLOBAL_EMAIL_NOTIFICATIONS_ENABLED":
                                      False, **{name: settings[name] for name in DERIVED_SETTINGS}})
    assert app.locations == () and app.checks_queue == "monitor-checks"  # the app: one location, as before
    assert "AzureFunctionsWebHost__hostid" not in settings
    (vnet,) = deployed_vnets(**located())
    assert vnet["name"] == f"vnet-{TOKEN}" and vnet["location"] == HOME
    assert vnet["properties"]["addressSpace"]["addressPrefixes"] == ["10.42.0.0/16"]
    assert vnet["subnets"]["snet-app"]["addressPrefix"] == "10.42.0.0/24"
    assert vnet["subnets"]["snet-app"]["serviceEndpoints"][0] == {"service": "Microsoft.Storage"}
    outputs = parse(MAIN)["outputs"]
    assert evaluate(outputs["AZURE_OTHER_FUNCTION_APP_NAMES"]["value"], tree, **located()) == ""


def test_three_locations_run_one_app_each_on_the_one_storage_account():
    tree = parse(MAIN)
    params = located(locations=THREE)
    modules = deployed_apps(**params)
    assert [m["params"]["location"] for m in modules] == THREE
    assert [m["params"]["appName"] for m in modules] == [f"func-{TOKEN}", f"func-{TOKEN}-northeurope",
                                                         f"func-{TOKEN}-eastus2"]
    for key in ("appName", "planName", "deploymentContainerName"):
        assert len({m["params"][key] for m in modules}) == 3, f"{key} is not unique per location"
    assert [m["params"]["deploymentContainerName"] for m in modules][1:] == \
        [f"app-package-{TOKEN[:7]}-northeurope", f"app-package-{TOKEN[:7]}-eastus2"]

    settings = effective_settings(**params)
    assert [s["CHECK_LOCATION"] for s in settings] == THREE
    assert [s["CHECKS_QUEUE"] for s in settings] == [f"monitor-checks-{loc}" for loc in THREE]
    assert {s["CHECK_LOCATIONS"] for s in settings} == {",".join(THREE)}
    for location, s in zip(THREE, settings):  # what each app makes of them (its own validation)
        app = settings_module.Settings(**{"AzureWebJobsStorage__accountName": "st", "GLOBAL_EMAIL_NOTIFICATIONS_ENABLED":
                                          False, **{name: s[name] for name in DERIVED_SETTINGS}})
        assert (app.check_location, app.checks_queue) == (location, f"monitor-checks-{location}")
        assert app.locations == tuple(THREE)  # in order: the first runs the deployment's own jobs

    # one storage account, one identity, one vault, one App Insights: every app's settings name the same ones
    for type_ in ("Microsoft.Storage/storageAccounts", "Microsoft.ManagedIdentity/userAssignedIdentities",
                  "Microsoft.KeyVault/vaults", "Microsoft.Insights/components"):
        _, resource = one(tree, type_)
        assert "loop_type" not in resource["config"], f"{type_} should be deployed once"
        assert resources(parse(REGION), type_) == {}, f"region.bicep should not deploy a {type_}"
    shared = {k: v for k, v in settings[0].items() if k not in DERIVED_SETTINGS and k != "AzureFunctionsWebHost__hostid"}
    for s in settings[1:]:
        assert {k: v for k, v in s.items() if k in shared} == shared, "the locations differ in a shared setting"
    assert {s["AzureWebJobsStorage__accountName"] for s in settings} == {"storage.name"}
    assert {m["params"]["storageAccountName"] for m in modules} == {"storage.name"}
    assert {m["params"]["identityId"] for m in modules} == {"identity.id"}
    assert [s.get("AzureFunctionsWebHost__hostid", "") for s in settings] == [m["params"]["hostId"] for m in modules]

    tags = [m["params"]["tags"].get("azd-service-name") for m in modules]
    assert tags == ["api", None, None], "azd deploys to the first location only; the hook to the others"


@pytest.mark.parametrize("locations, app_name", [
    (THREE, ""), (["westeurope", "australiacentral", "australiacentral2"], ""),
    (["westeurope", "australiacentral", "australiacentral2"], "monitoring-production-checks"),
], ids=["three", "names-alike", "long-name"])
def test_every_location_has_its_own_host_id_on_the_shared_storage(locations, app_name):
    """The Functions host keeps timer locks and schedules in the storage account under its host id, which Azure
    derives from the app name cut to 32 characters: apps whose names start alike would share them (and the host
    stops on the collision), so every app but the first gets an explicit AzureFunctionsWebHost__hostid."""
    params = located(locations=locations, functionAppName=app_name)
    settings = effective_settings(**params)
    names = [m["params"]["appName"] for m in deployed_apps(**params)]
    host_ids = [s.get("AzureFunctionsWebHost__hostid") or name[:32] for s, name in zip(settings, names)]
    assert "AzureFunctionsWebHost__hostid" not in settings[0]  # the first app keeps the id it always had
    assert len(set(host_ids)) == len(locations), f"host ids collide: {host_ids}"
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}[a-z0-9]", h) for h in host_ids), host_ids


def test_three_locations_every_app_subnet_is_admitted_by_the_storage_and_vault_firewalls():
    params = located(locations=THREE)
    subnets = [m["params"]["subnetId"] for m in deployed_apps(**params)]
    assert len(set(subnets)) == 3
    assert _firewall_subnets("Microsoft.Storage/storageAccounts", **params) == subnets
    assert _firewall_subnets("Microsoft.KeyVault/vaults", **params) == subnets
    vnets = deployed_vnets(**params)
    assert [v["location"] for v in vnets] == THREE
    assert len({v["name"] for v in vnets}) == 3
    # a storage account in another region is reached through the cross-region (global) service endpoint only
    endpoints = [v["subnets"]["snet-app"]["serviceEndpoints"][0]["service"] for v in vnets]
    assert endpoints == ["Microsoft.Storage", "Microsoft.Storage.Global", "Microsoft.Storage.Global"]


def test_three_locations_vnets_do_not_overlap_and_each_subnet_is_inside_its_vnet():
    vnets = deployed_vnets(**located(locations=THREE))
    spaces = [ipaddress.ip_network(v["properties"]["addressSpace"]["addressPrefixes"][0]) for v in vnets]
    for i, a in enumerate(spaces):
        for b in spaces[i + 1:]:
            assert not a.overlaps(b), f"{a} and {b} overlap: the peered VNets would not route"
    for space, vnet in zip(spaces, vnets):
        subnets = [ipaddress.ip_network(s["addressPrefix"]) for s in vnet["subnets"].values()]
        assert all(s.subnet_of(space) for s in subnets) and not subnets[0].overlaps(subnets[1])
        assert vnet["subnets"]["snet-app"]["delegations"][0]["properties"]["serviceName"] == "Microsoft.App/environments"
    assert [str(s) for s in spaces] == ["10.42.0.0/16", "10.43.0.0/20", "10.43.16.0/20"]


def test_three_locations_with_private_endpoints_peer_every_vnet_with_the_first_and_link_every_zone():
    tree = parse(MAIN)
    params = located(locations=THREE, usePrivateEndpoints=True)
    vnet_symbol, _ = one(tree, "Microsoft.Network/virtualNetworks")
    to_first = instances(tree["resources"]["peeringsToFirstLocation"], tree, **params)
    from_first = instances(tree["resources"]["peeringsFromFirstLocation"], tree, **params)
    assert [(p["parent"], p["properties"]["remoteVirtualNetwork"]["id"]) for p in to_first] == \
        [(f"{vnet_symbol}[1]", f"{vnet_symbol}[0].id"), (f"{vnet_symbol}[2]", f"{vnet_symbol}[0].id")]
    assert [(p["parent"], p["properties"]["remoteVirtualNetwork"]["id"]) for p in from_first] == \
        [(f"{vnet_symbol}[0]", f"{vnet_symbol}[1].id"), (f"{vnet_symbol}[0]", f"{vnet_symbol}[2].id")]
    for peering in to_first + from_first:
        assert peering["properties"]["allowVirtualNetworkAccess"] is True
    for symbol in ("peeringsToFirstLocation", "peeringsFromFirstLocation"):
        assert decorator(tree["resources"][symbol], "batchSize") == 1  # one VNet's peerings change one at a time
    links = instances(one(tree, "Microsoft.Network/privateDnsZones/virtualNetworkLinks")[1], tree, **params)
    pairs = {(link["parent"], link["properties"]["virtualNetwork"]["id"]) for link in links}
    assert pairs == {(f"privateDnsZones[{z}]", f"{vnet_symbol}[{v}].id") for z in range(4) for v in range(3)}
    assert len({link["name"] for link in links}) == 12
    endpoints = instances(one(tree, "Microsoft.Network/privateEndpoints")[1], tree, **params)
    assert len(endpoints) == 4, "one set of endpoints, in the first location, however many locations"


# ========================================================================================= postdeploy hook
# infra/hooks/postdeploy.sh run for real by bash, with stand-ins for the two CLIs it calls on PATH: `azd` writes
# the package it is asked for, `az` records the deployment (and fails for the app named in FAIL_APP).

STAND_INS = {
    "azd": """#!/usr/bin/env bash
echo "azd $*" >>"$CALLS"
while (($#)); do [[ $1 == --output-path ]] && { printf 'PK\\005\\006package' >"$2"; exit 0; }; shift; done
exit 2
""",
    "az": """#!/usr/bin/env bash
echo "az $*" >>"$CALLS"
for arg in "$@"; do [[ -n ${FAIL_APP:-} && $arg == "$FAIL_APP" ]] && { echo "deployment failed" >&2; exit 1; }; done
exit 0
""",
}


def run_hook(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, script in STAND_INS.items():
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls.log"
    calls.touch()
    environment = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path), "CALLS": str(calls),
                   "TMPDIR": str(tmp_path), **env}
    done = subprocess.run(["bash", str(HOOK)], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)
    return done, [line.split() for line in calls.read_text().splitlines()]


def _option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def _other_apps(locations: list[str]) -> str:
    """AZURE_OTHER_FUNCTION_APP_NAMES as azd puts it in the hook's environment (the output, evaluated)."""
    return evaluate(parse(MAIN)["outputs"]["AZURE_OTHER_FUNCTION_APP_NAMES"]["value"], parse(MAIN),
                    **located(locations=locations))


def test_hook_with_one_location_deploys_nothing(tmp_path):
    done, calls = run_hook(tmp_path, AZURE_OTHER_FUNCTION_APP_NAMES=_other_apps([HOME]),
                           AZURE_RESOURCE_GROUP="rg-monitor")
    assert done.returncode == 0, done.stderr
    assert calls == [] and "nothing more to deploy" in done.stdout
    done, calls = run_hook(tmp_path)  # not even the variable (an environment provisioned before locations)
    assert done.returncode == 0 and calls == []


def test_hook_deploys_the_same_package_to_every_other_locations_app(tmp_path):
    modules = deployed_apps(**located(locations=THREE))
    done, calls = run_hook(tmp_path, AZURE_OTHER_FUNCTION_APP_NAMES=_other_apps(THREE),
                           AZURE_RESOURCE_GROUP="rg-monitor", AZURE_SUBSCRIPTION_ID="0000-sub")
    assert done.returncode == 0, done.stderr
    (package, *deploys) = calls
    assert package[:3] == ["azd", "package", "api"]  # the service azure.yaml deploys, packaged as azd does
    zip_path = _option(package, "--output-path")
    assert [call[:5] for call in deploys] == [["az", "functionapp", "deployment", "source", "config-zip"]] * 2
    assert [_option(call, "--name") for call in deploys] == [m["params"]["appName"] for m in modules[1:]]
    for call in deploys:
        assert _option(call, "--src") == zip_path
        assert _option(call, "--resource-group") == "rg-monitor"
        assert _option(call, "--subscription") == "0000-sub"
        assert _option(call, "--build-remote") == "true"  # Flex Consumption builds the Python packages remotely
    assert modules[0]["params"]["appName"] not in {_option(call, "--name") for call in deploys}  # azd's own
    assert not Path(zip_path).exists(), "the hook leaves its package behind"


def test_hook_fails_the_deployment_when_one_location_fails(tmp_path):
    others = _other_apps(THREE).split()
    done, calls = run_hook(tmp_path, AZURE_OTHER_FUNCTION_APP_NAMES=" ".join(others),
                           AZURE_RESOURCE_GROUP="rg-monitor", FAIL_APP=others[0])
    assert done.returncode != 0 and "deployment failed" in done.stderr
    assert [_option(call, "--name") for call in calls if call[0] == "az"] == [others[0]]  # stops there


def test_hook_refuses_what_is_not_an_app_name_and_needs_the_resource_group(tmp_path):
    done, calls = run_hook(tmp_path, AZURE_OTHER_FUNCTION_APP_NAMES="func-a;rm -rf ~", AZURE_RESOURCE_GROUP="rg")
    assert done.returncode != 0 and "not a function app name" in done.stderr and calls == []
    done, calls = run_hook(tmp_path, AZURE_OTHER_FUNCTION_APP_NAMES="func-a-northeurope")
    assert done.returncode != 0 and "AZURE_RESOURCE_GROUP" in done.stderr and calls == []
