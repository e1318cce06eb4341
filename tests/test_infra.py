"""The Azure deployment (infra/, azure.yaml), checked offline over pycep-parser's parse tree of every .bicep file.

The most important check is the settings cross-check: every name in `shared.settings.SETTING_NAMES` (read at test
time, so a setting added to the model is covered without touching this file) must be an app setting in
infra/main.bicep, fed by a parameter with the app's default, mapped in infra/main.parameters.json, and present in
local.settings.json.example. `test_cross_check_reports_a_removed_setting` proves the check bites.

The network hardening (firewalls, VNet integration, publishing credentials, diagnostic settings, the optional
private endpoints) is checked the same way; `evaluate` works out the template's conditions for a parameter value.

No Azure, no Bicep CLI: this is structure, not a deployment (`az deployment group what-if` is the next step).
"""

from __future__ import annotations

import json
import re
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
PARAMETERS = INFRA / "main.parameters.json"
EXAMPLE = ROOT / "local.settings.json.example"

CONNECTION_STRING_SETTING = "AzureWebJobsStorage"  # local only; must never be set in Azure
IDENTITY_PREFIX = "AzureWebJobsStorage__"          # computed from the deployed resources, not parameters

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
    """symbol -> resource (with 'config') of one type, api version ignored."""
    return {name: r for name, r in tree.get("resources", {}).items() if r["type"].lower() == type_.lower()}


def one(tree: dict[str, Any], type_: str) -> tuple[str, dict[str, Any]]:
    found = resources(tree, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found.items()))


def app_settings_block(tree: dict[str, Any]) -> dict[str, Any]:
    """The properties of the function app's `Microsoft.Web/sites/config` 'appsettings' resource."""
    blocks = [body(r) for r in resources(tree, "Microsoft.Web/sites/config").values() if body(r).get("name") == "appsettings"]
    assert len(blocks) == 1, f"expected one appsettings resource, found {len(blocks)}"
    return blocks[0].get("properties", {})


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


# ============================================================================================ the cross-check


def setting_names() -> tuple[str, ...]:
    """Every setting the app reads, from the model itself (colleagues add more; nothing here lists them)."""
    return tuple(settings_module.SETTING_NAMES)


def deployable_settings() -> list[str]:
    return [name for name in setting_names() if name != CONNECTION_STRING_SETTING]


def parameter_settings() -> list[str]:
    """Settings that come from a parameter (the identity-based storage ones are computed from the resources)."""
    return [name for name in deployable_settings() if not name.startswith(IDENTITY_PREFIX)]


def missing_from_bicep(tree: dict[str, Any], names: typing.Iterable[str]) -> list[str]:
    """Setting names the Bicep app settings do not define (the connection string is never expected)."""
    defined = set(app_settings_block(tree))
    return [name for name in names if name != CONNECTION_STRING_SETTING and name not in defined]


def missing_from_example(values: dict[str, Any], names: typing.Iterable[str]) -> list[str]:
    return [name for name in names if name not in values]


def example_values() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())["Values"]


def test_every_setting_the_app_reads_is_an_app_setting_in_bicep():
    assert len(setting_names()) >= 20, "SETTING_NAMES looks empty: the cross-check would prove nothing"
    assert missing_from_bicep(parse(MAIN), setting_names()) == [], \
        "add these settings to the appsettings resource in infra/main.bicep (and a parameter named in camelCase)"


def test_every_setting_the_app_reads_is_in_local_settings_example():
    assert missing_from_example(example_values(), setting_names()) == [], \
        "add these settings to local.settings.json.example"


@pytest.mark.parametrize("name", deployable_settings())
def test_cross_check_reports_a_removed_setting(name, tmp_path):
    """Delete one app-setting line from a copy of main.bicep: the copy still parses and the check names it."""
    text = MAIN.read_text()
    line = re.compile(rf"^[ \t]*{re.escape(name)}[ \t]*:.*\n", re.M)
    assert len(line.findall(text)) == 1, f"{name} should be exactly one app-setting line in main.bicep"
    copy = tmp_path / "main.bicep"
    copy.write_text(line.sub("", text))
    assert missing_from_bicep(_parser().parse(file_path=copy), setting_names()) == [name]


@pytest.mark.parametrize("name", deployable_settings())
def test_cross_check_reports_a_setting_removed_from_the_example(name):
    values = {k: v for k, v in example_values().items() if k != name}
    assert missing_from_example(values, setting_names()) == [name]


def test_cross_check_reports_a_setting_new_in_the_model():
    tree = parse(MAIN)
    assert missing_from_bicep(tree, (*setting_names(), "BRAND_NEW_SETTING")) == ["BRAND_NEW_SETTING"]
    assert missing_from_example(example_values(), (*setting_names(), "BRAND_NEW_SETTING"))[-1] == "BRAND_NEW_SETTING"


def _app_default(name: str) -> Any:
    field = next(f for f in settings_module.Settings.model_fields.values() if f.alias == name)
    if field.default_factory is not None:
        return field.default_factory()
    return None if field.default is PydanticUndefined else field.default


def _is_secret(name: str) -> bool:
    field = next(f for f in settings_module.Settings.model_fields.values() if f.alias == name)
    return field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)


@pytest.mark.parametrize("name", parameter_settings())
def test_setting_has_a_parameter_with_the_apps_default(name):
    tree = parse(MAIN)
    param_name = camel(name)
    params = tree["parameters"]
    assert param_name in params, f"{name}: add `param {param_name}` to infra/main.bicep"
    param = params[param_name]
    block = app_settings_block(tree)
    assert name in block, f"{name} is not an app setting in infra/main.bicep"
    assert param_name in words(block[name]), f"{name} is not fed by param {param_name}"

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

    field = next(f for f in settings_module.Settings.model_fields.values() if f.alias == name)
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


# ======================================================================================== files and outputs


def test_every_bicep_file_parses_and_modules_resolve():
    files = bicep_files()
    assert MAIN in files and len(files) >= 2
    for path in files:
        tree = parse(path)
        assert tree.get("resources") or tree.get("modules"), f"{path} parsed to nothing"
    for name, module in parse(MAIN).get("modules", {}).items():
        assert (INFRA / module["detail"]["path"]).is_file(), f"module {name}: {module['detail']['path']} not found"


def test_no_keys_or_connection_strings_anywhere_in_bicep():
    for path in bicep_files():
        text = path.read_text()
        for pattern in ("listKeys(", "AccountKey=", "InstrumentationKey=", "SharedAccessSignature", "listSecrets("):
            assert pattern not in text, f"{path.name} uses {pattern}: everything here is identity-based"


def test_outputs_app_name_base_url_and_storage_account():
    outputs = {name: out["value"] for name, out in parse(MAIN)["outputs"].items()}
    rendered = {render(v) for v in outputs.values()}
    assert "functionApp.name" in rendered
    assert "https://${functionApp.properties.defaultHostName}" in rendered
    assert "storage.name" in rendered


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
    site = body(one(parse(MAIN), "Microsoft.Web/sites")[1])
    assert "'azd-service-name'" in json.dumps(site["tags"]) and '"api"' in json.dumps(site["tags"])


# ===================================================================================== plan, app and storage


def test_plan_is_flex_consumption_fc1():
    _, plan = one(parse(MAIN), "Microsoft.Web/serverfarms")
    plan = body(plan)
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["kind"] == "functionapp" and plan["properties"]["reserved"] is True


def test_function_app_runs_python_311_on_flex_with_identity_deployment_storage():
    tree = parse(MAIN)
    site = body(one(tree, "Microsoft.Web/sites")[1])
    identity_symbol, _ = one(tree, "Microsoft.ManagedIdentity/userAssignedIdentities")
    plan_symbol, _ = one(tree, "Microsoft.Web/serverfarms")
    props = site["properties"]
    assert site["kind"] == "functionapp,linux"
    assert render(props["serverFarmId"]) == f"{plan_symbol}.id"
    assert props["httpsOnly"] is True
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    scale = config["scaleAndConcurrency"]
    assert scale["instanceMemoryMB"] == "instanceMemoryMB" and "instanceMemoryMB" in tree["parameters"]
    assert scale["maximumInstanceCount"] == "maximumInstanceCount" and "maximumInstanceCount" in tree["parameters"]
    deployment = config["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["value"].startswith("${storage.properties.primaryEndpoints.blob}")
    assert deployment["authentication"]["type"] == "UserAssignedIdentity"
    assert render(deployment["authentication"]["userAssignedIdentityResourceId"]) == f"{identity_symbol}.id"
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == [f"'${{{identity_symbol}.id}}'"]
    containers = [body(r) for r in resources(tree, "Microsoft.Storage/storageAccounts/blobServices/containers").values()]
    assert deployment["value"].endswith("${" + containers[0]["name"] + "}")


def test_storage_account_is_locked_down():
    _, account = one(parse(MAIN), "Microsoft.Storage/storageAccounts")
    props = body(account)["properties"]
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False
    assert props["allowSharedKeyAccess"] is False


def test_every_table_and_queue_of_the_app_is_created():
    tree = parse(MAIN)
    for type_, var, expected in (
        ("Microsoft.Storage/storageAccounts/tableServices/tables", "tableNames", set(storage_module.TABLES)),
        ("Microsoft.Storage/storageAccounts/queueServices/queues", "queueNames",
         {storage_module.EVENTS_QUEUE, storage_module.POISON_QUEUE}),
    ):
        (_, loop_resource), = resources(tree, type_).items()
        loop = loop_resource["config"]["loop_type"]["detail"]
        assert loop["array_name"] == var and body(loop_resource)["name"] == loop["item_name"]
        assert set(tree["variables"][var]["value"]) == expected, f"{var} differs from shared/storage.py"


def test_storage_settings_are_identity_based():
    tree = parse(MAIN)
    settings = app_settings_block(tree)
    storage_symbol, _ = one(tree, "Microsoft.Storage/storageAccounts")
    identity_symbol, _ = one(tree, "Microsoft.ManagedIdentity/userAssignedIdentities")
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


@pytest.mark.parametrize("role", [MONITORING_READER, LOG_ANALYTICS_READER], ids=["monitoring-reader", "log-analytics-reader"])
def test_resource_reader_roles_at_the_scope_given_by_parameter(role):
    tree = parse(MAIN)
    identity_symbol, _ = one(tree, "Microsoft.ManagedIdentity/userAssignedIdentities")
    params = tree["parameters"]
    assert params["resourceReaderScope"]["default"] == "resourceGroup"
    assert decorator(params["resourceReaderScope"], "allowed") == ["resourceGroup", "subscription"]
    assert render(params["resourceReaderResourceGroupName"]["default"]) == "resource_group().name"

    modules = tree["modules"]
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
    settings = app_settings_block(tree)
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
    site = body(one(tree, "Microsoft.Web/sites")[1])
    assert render(site["properties"]["keyVaultReferenceIdentity"]) == f"{identity_symbol}.id"
    assert render(tree["variables"]["keyVaultUri"]["value"]) == f"{vault_symbol}.properties.vaultUri"
    assert len(_secret_settings()) >= 3  # SMTP password, WHMCS secret, InvenTree token (and more as they come)


@pytest.mark.parametrize("name", _secret_settings())
def test_secret_setting_is_a_key_vault_reference(name):
    tree = parse(MAIN)
    vault_symbol, _ = one(tree, "Microsoft.KeyVault/vaults")
    param_name = camel(name)
    value = app_settings_block(tree)[name]
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


def evaluate(node: Any, tree: dict[str, Any], **overrides: Any) -> Any:
    """The value of an expression for parameter values (defaults, or `overrides`): enough of Bicep for the conditions
    and arrays here (names, `?:`, `!`, `==`, objects, arrays, `a.b` of an object); anything else comes back rendered
    (`storage.id`). pycep gives a name and a string literal alike, so a string is a name when one is declared."""
    params, variables = tree["parameters"], tree["variables"]
    if isinstance(node, str):
        if node in overrides:
            return overrides[node]
        if node in params:
            return params[node].get("default")
        if node in variables:
            return evaluate(variables[node]["value"], tree, **overrides)
        return node
    if isinstance(node, list):
        return [evaluate(item, tree, **overrides) for item in node]
    if isinstance(node, dict) and "operator" in node:
        op = node["operator"]
        operands = op.get("operands", {})
        if op["type"] == "conditional":
            branch = "true_value" if evaluate(operands["condition"], tree, **overrides) else "false_value"
            return evaluate(operands[branch], tree, **overrides)
        if op["type"] == "not":
            return not evaluate(operands["bool_value"], tree, **overrides)
        if op["type"] == "equals":
            return evaluate(operands["operand_1"], tree, **overrides) == evaluate(operands["operand_2"], tree, **overrides)
        if op["type"] == "property_accessor":
            base = evaluate(operands["operand_1"], tree, **overrides)
            if isinstance(base, dict):
                return base[operands["operand_2"]]
        return render(node)
    if isinstance(node, dict) and "function" not in node:
        return {key: evaluate(value, tree, **overrides) for key, value in node.items()}
    return render(node)


def _app_subnet(tree: dict[str, Any]) -> dict[str, Any]:
    _, vnet = one(tree, "Microsoft.Network/virtualNetworks")
    subnets = {evaluate(s["name"], tree): s["properties"] for s in body(vnet)["properties"]["subnets"]}
    return subnets[evaluate("appSubnetName", tree)]


def test_function_app_is_vnet_integrated_through_a_flex_delegated_subnet_with_service_endpoints():
    tree = parse(MAIN)
    vnet_symbol, _ = one(tree, "Microsoft.Network/virtualNetworks")
    subnet = _app_subnet(tree)
    assert "_" not in evaluate("appSubnetName", tree), "Flex Consumption rejects subnet names with '_'"
    assert [d["properties"]["serviceName"] for d in subnet["delegations"]] == ["Microsoft.App/environments"]
    assert {e["service"] for e in subnet["serviceEndpoints"]} == {"Microsoft.Storage", "Microsoft.KeyVault"}
    assert subnet["addressPrefix"] == "appSubnetAddressPrefix"
    assert tree["variables"]["appSubnetId"]["value"] == f"${{{vnet_symbol}.id}}/subnets/${{appSubnetName}}"
    site = body(one(tree, "Microsoft.Web/sites")[1])
    assert site["properties"]["virtualNetworkSubnetId"] == "appSubnetId"
    assert "vnetRouteAllEnabled" not in site["properties"]  # Flex routes everything; the property is not used there


def test_storage_firewall_denies_by_default_and_admits_the_app_subnet():
    tree = parse(MAIN)
    props = body(one(tree, "Microsoft.Storage/storageAccounts")[1])["properties"]
    acls = props["networkAcls"]
    assert acls["defaultAction"] == "Deny"
    assert acls["bypass"] == "AzureServices"
    assert acls["virtualNetworkRules"] == [{"id": "appSubnetId", "action": "Allow"}]
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
    assert acls["virtualNetworkRules"] == [{"id": "appSubnetId", "ignoreMissingVnetServiceEndpoint": False}]
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


def test_ftp_and_basic_publishing_credentials_are_disabled():
    tree = parse(MAIN)
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


# resource type -> (log category group, metric category) its diagnostic setting must send (None: none expected)
DIAGNOSTICS = {
    "Microsoft.Web/sites": ("allLogs", "AllMetrics"),
    "Microsoft.Storage/storageAccounts": (None, "Transaction"),  # the account has metrics only
    "Microsoft.Storage/storageAccounts/blobServices": ("storageLogCategoryGroup", "Transaction"),
    "Microsoft.Storage/storageAccounts/queueServices": ("storageLogCategoryGroup", "Transaction"),
    "Microsoft.Storage/storageAccounts/tableServices": ("storageLogCategoryGroup", "Transaction"),
    "Microsoft.KeyVault/vaults": ("audit", "AllMetrics"),
}


@pytest.mark.parametrize("scope_type", list(DIAGNOSTICS), ids=lambda t: t.rsplit("/", 1)[-1])
def test_resource_sends_its_logs_and_metrics_to_the_workspace(scope_type):
    tree = parse(MAIN)
    workspace_symbol, _ = one(tree, "Microsoft.OperationalInsights/workspaces")
    scope_symbol, _ = one(tree, scope_type)
    settings = [body(r) for r in resources(tree, "Microsoft.Insights/diagnosticSettings").values()
                if body(r)["scope"] == scope_symbol]
    assert len(settings) == 1, f"expected one diagnostic setting on {scope_symbol}"
    props = settings[0]["properties"]
    assert render(props["workspaceId"]) == f"{workspace_symbol}.id"
    category_group, metric = DIAGNOSTICS[scope_type]
    if category_group is None:
        assert "logs" not in props
    else:
        assert props["logs"] == [{"categoryGroup": category_group, "enabled": True}]
    assert props["metrics"] == [{"category": metric, "enabled": True}]


def test_storage_log_category_group_is_audit_unless_chosen():
    param = parse(MAIN)["parameters"]["storageLogCategoryGroup"]
    assert param["default"] == "audit" and decorator(param, "allowed") == ["audit", "allLogs"]


def test_every_diagnostic_setting_targets_a_known_resource():
    tree = parse(MAIN)
    known = {one(tree, scope_type)[0] for scope_type in DIAGNOSTICS}
    scopes = [body(r)["scope"] for r in resources(tree, "Microsoft.Insights/diagnosticSettings").values()]
    assert sorted(scopes) == sorted(known)


PRIVATE_LINK_TYPES = (
    "Microsoft.Network/privateDnsZones", "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
    "Microsoft.Network/privateEndpoints", "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
)


def _private_link_loops(tree: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """type -> (symbol, resource) of the four private-link resources, each a loop over privateEndpointsToDeploy."""
    found = {}
    for type_ in PRIVATE_LINK_TYPES:
        symbol, resource = one(tree, type_)
        assert resource["config"]["loop_type"]["detail"]["array_name"] == "privateEndpointsToDeploy", symbol
        found[type_] = (symbol, resource)
    return found


def test_private_endpoints_are_off_by_default_and_then_nothing_of_them_is_deployed():
    tree = parse(MAIN)
    param = tree["parameters"]["usePrivateEndpoints"]
    assert param["type"] == "bool" and param["default"] is False
    values = json.loads(PARAMETERS.read_text())["parameters"]
    assert values["usePrivateEndpoints"]["value"] == "${USE_PRIVATE_ENDPOINTS=false}"
    _private_link_loops(tree)
    assert evaluate("privateEndpointsToDeploy", tree) == []


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
    zones_symbol, zones = loops["Microsoft.Network/privateDnsZones"]
    endpoints_symbol, endpoints = loops["Microsoft.Network/privateEndpoints"]
    item = endpoints["config"]["loop_type"]["detail"]["item_name"]
    endpoint = body(endpoints)["properties"]
    assert endpoint["subnet"]["id"] == "privateEndpointSubnetId"
    (connection,) = endpoint["privateLinkServiceConnections"]
    assert render(connection["properties"]["privateLinkServiceId"]) == f"{item}.resourceId"
    assert [render(g) for g in connection["properties"]["groupIds"]] == [f"{item}.groupId"]
    assert render(body(zones)["name"]) == f"{zones['config']['loop_type']['detail']['item_name']}.zone"
    assert body(zones)["location"] == "global"

    _, links = loops["Microsoft.Network/privateDnsZones/virtualNetworkLinks"]
    index = links["config"]["loop_type"]["detail"]["index_name"]
    assert render(body(links)["parent"]) == f"index_accessor({zones_symbol}, {index})"
    assert render(body(links)["properties"]["virtualNetwork"]["id"]) == f"{vnet_symbol}.id"
    assert body(links)["properties"]["registrationEnabled"] is False

    groups_symbol, groups = loops["Microsoft.Network/privateEndpoints/privateDnsZoneGroups"]
    index = groups["config"]["loop_type"]["detail"]["index_name"]
    assert render(body(groups)["parent"]) == f"index_accessor({endpoints_symbol}, {index})"
    (zone_config,) = body(groups)["properties"]["privateDnsZoneConfigs"]
    assert render(zone_config["properties"]["privateDnsZoneId"]) == f"index_accessor({zones_symbol}, {index}).id"

    _, vnet = one(tree, "Microsoft.Network/virtualNetworks")
    subnets = {evaluate(s["name"], tree): s["properties"] for s in body(vnet)["properties"]["subnets"]}
    assert subnets[evaluate("privateEndpointSubnetName", tree)]["addressPrefix"] == "privateEndpointSubnetAddressPrefix"
    assert tree["variables"]["privateEndpointSubnetId"]["value"] == f"${{{vnet_symbol}.id}}/subnets/${{privateEndpointSubnetName}}"

    for resource in (storage, vault):
        access = body(resource)["properties"]["publicNetworkAccess"]
        assert evaluate(access, tree, usePrivateEndpoints=True) == "Disabled"
        assert evaluate(access, tree, usePrivateEndpoints=False) == "Enabled"
    site = body(one(tree, "Microsoft.Web/sites")[1])
    assert groups_symbol in site["dependsOn"]  # the app starts once the names resolve to the endpoints
