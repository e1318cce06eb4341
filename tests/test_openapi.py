"""The OpenAPI document (shared/web/openapi.py): it lists exactly the routes of the HTTP blueprints, it is valid
OpenAPI 3.1, real answers of the real functions (empty system, every kind, errors) validate against it — with the
small JSON Schema 2020-12 validator below (no new dependency) — and importing it builds nothing."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock

import pytest
from apphelp import functions, request
from targets import site, targets  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
ANNOTATIONS = {"title", "description", "default", "examples", "readOnly", "writeOnly", "deprecated", "discriminator",
               "$comment", "format"}
KEYWORDS = {"$ref", "type", "enum", "const", "properties", "required", "additionalProperties", "minProperties",
            "maxProperties", "items", "prefixItems", "minItems", "maxItems", "anyOf", "oneOf", "allOf", "minimum",
            "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
            "pattern"}  # all checked
TYPES = {"null": lambda v: v is None, "boolean": lambda v: isinstance(v, bool), "object": lambda v: isinstance(v, dict),
         "array": lambda v: isinstance(v, list), "string": lambda v: isinstance(v, str),
         "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
         "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())}
DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")  # RFC 3339
NO_ID = "0" * 32


def _same(a: Any, b: Any) -> bool:  # JSON equality: true is not 1
    return a == b and isinstance(a, bool) == isinstance(b, bool)


class Schemas:
    """JSON Schema 2020-12 validation of the keywords in KEYWORDS (+ format date-time), $refs into the document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def resolve(self, ref: str) -> Any:
        assert ref.startswith("#/"), f"not a local reference: {ref}"
        node: Any = self.doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def problems(self, value: Any, schema: Any, at: str = "$") -> list[str]:
        if isinstance(schema, bool):
            return [] if schema else [f"{at}: no value is allowed here"]
        out = self.problems(value, self.resolve(schema["$ref"]), at) if "$ref" in schema else []
        types = schema.get("type")
        if types is not None and not any(TYPES[t](value) for t in ([types] if isinstance(types, str) else types)):
            return [*out, f"{at}: {json.dumps(value)[:80]} is not of type {types}"]
        if "const" in schema and not _same(value, schema["const"]):
            out.append(f"{at}: {value!r} is not {schema['const']!r}")
        if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
            out.append(f"{at}: {value!r} is not one of {schema['enum']}")
        for key in ("anyOf", "oneOf"):
            if key in schema:
                fits = [self.problems(value, s, at) for s in schema[key]]
                n = sum(not f for f in fits)
                if n == 0 or (key == "oneOf" and n > 1):
                    out.append(f"{at}: {n} of {key} match: " + " | ".join("; ".join(f[:3]) for f in fits))
        for sub in schema.get("allOf", []):
            out += self.problems(value, sub, at)
        if isinstance(value, dict):
            out += self._object(value, schema, at)
        elif isinstance(value, list):
            prefix = schema.get("prefixItems", [])
            for i, item in enumerate(value):
                out += self.problems(item, prefix[i] if i < len(prefix) else schema.get("items", True), f"{at}[{i}]")
            if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
                out.append(f"{at}: {len(value)} items")
        elif isinstance(value, str):
            if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
                out.append(f"{at}: length {len(value)}")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                out.append(f"{at}: {value!r} does not match {schema['pattern']}")
            if schema.get("format") == "date-time" and not DATE_TIME.match(value):
                out.append(f"{at}: {value!r} is not an RFC 3339 date-time")
        elif TYPES["number"](value):
            out += [f"{at}: {value} breaks {k} {schema[k]}" for k, ok in (
                ("minimum", lambda b: value >= b), ("maximum", lambda b: value <= b),
                ("exclusiveMinimum", lambda b: value > b), ("exclusiveMaximum", lambda b: value < b),
                ("multipleOf", lambda b: value % b == 0))
                if k in schema and not ok(schema[k])]
        return out

    def _object(self, value: dict[str, Any], schema: dict[str, Any], at: str) -> list[str]:
        out = [f"{at}: {k} is required" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        for key, item in value.items():
            out += self.problems(item, props[key] if key in props else schema.get("additionalProperties", True),
                                 f"{at}.{key}")
        if not schema.get("minProperties", 0) <= len(value) <= schema.get("maxProperties", len(value)):
            out.append(f"{at}: {len(value)} properties")
        return out

    def schema_problems(self, schema: Any, at: str) -> list[str]:
        """Is this a schema of the OpenAPI 3.1 dialect that `problems` fully checks?"""
        if not isinstance(schema, dict):
            return [] if isinstance(schema, bool) else [f"{at}: not a schema"]
        out = [f"{at}: unknown or unchecked keyword {k!r}" for k in schema if k not in KEYWORDS | ANNOTATIONS]
        types = schema.get("type", [])
        out += [f"{at}: unknown type {t!r}" for t in ([types] if isinstance(types, str) else types) if t not in TYPES]
        required, enum = schema.get("required", []), schema.get("enum", [None])
        out += [f"{at}: {what}" for what, bad in (
            ("required must be a list of distinct names", not isinstance(required, list) or len(set(required))
             != len(required)), ("enum must be a non-empty list", not isinstance(enum, list) or not enum),
            ("items must be one schema (a list is prefixItems in 3.1)", not isinstance(schema.get("items", {}),
                                                                                       dict | bool))) if bad]
        re.compile(schema.get("pattern", ""))
        if "default" in schema:
            out += [f"{at}: default: {p}" for p in self.problems(schema["default"], schema)]
        if "discriminator" in schema:
            name = schema["discriminator"]["propertyName"]
            branches = schema.get("oneOf") or schema.get("anyOf") or []
            out += [f"{at}: a branch does not require {name}" for b in branches
                    if name not in self.resolve(b["$ref"]).get("required", [])]
            for ref in schema["discriminator"].get("mapping", {}).values():
                self.resolve(ref)
        subs = [*schema.get("properties", {}).values(), *(s for k in ("prefixItems", "anyOf", "oneOf", "allOf")
                                                            for s in schema.get(k, [])),
                *(schema[k] for k in ("items", "additionalProperties") if k in schema)]
        return out + [p for i, sub in enumerate(subs) for p in self.schema_problems(sub, f"{at}/{i}")]


def document_problems(doc: dict[str, Any]) -> list[str]:
    """OpenAPI 3.1 structure: version, info, security, paths, parameters, operations, responses, schemas, $refs."""
    s, out, ids, reqs = Schemas(doc), [], [], list(doc["security"])
    if not re.fullmatch(r"3\.1\.\d+", doc.get("openapi", "")) or not {"title", "version"} <= set(doc["info"]):
        out.append("openapi must be 3.1.x with info.title and info.version")
    schemes = doc["components"]["securitySchemes"]
    out += [f"scheme {n}" for n, v in schemes.items() if v["type"] != "apiKey" or v["in"] not in ("query", "header")
            or not v["name"]]
    for name, schema in doc["components"]["schemas"].items():
        out += s.schema_problems(schema, f"#/components/schemas/{name}")
    for path, item in doc["paths"].items():
        out += [f"{path}: {k}" for k in set(item) - METHODS - {"parameters", "summary", "description"}]
        for method in sorted(set(item) & METHODS):
            op, at = item[method], f"{method.upper()} {path}"
            ids.append(op.get("operationId"))
            params = {(p["name"], p["in"]): p for p in item.get("parameters", []) + op.get("parameters", [])}
            for (name, where), p in params.items():
                out += s.schema_problems(p["schema"], f"{at} {name}")
                if where not in ("query", "header", "path", "cookie") or (where == "path" and not p["required"]):
                    out.append(f"{at}: parameter {name} in {where}")
            if set(re.findall(r"{([^}]+)}", path)) != {n for n, w in params if w == "path"}:
                out.append(f"{at}: path parameters do not match the template")
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                out += s.schema_problems(content["schema"], f"{at} body {media}")
            out += [] if op.get("responses") else [f"{at}: no responses"]
            for code, response in op.get("responses", {}).items():
                if not re.fullmatch(r"[1-5](\d\d|XX)|default", code) or not response.get("description"):
                    out.append(f"{at}: response {code}")
                for media, content in response.get("content", {}).items():
                    out += s.schema_problems(content["schema"], f"{at} {code} {media}")
            reqs += op.get("security", [])
    out += [f"unknown security scheme {n}" for r in reqs for n in r if n not in schemes]
    if None in ids or len(set(ids)) != len(ids):
        out.append("every operation needs its own operationId")
    for ref in set(re.findall(r'"\$ref": "([^"]*)"', json.dumps(doc))):
        s.resolve(ref)  # every $ref resolves (KeyError otherwise)
    return out


class Api:
    """Calls the real functions; checks every answer against the document (status documented, media type, body)."""

    def __init__(self) -> None:
        import function_app
        from devhost import discover
        from shared.web import openapi

        self.doc = openapi.document()
        self.schemas = Schemas(self.doc)
        self.http = {("/api/" + f.trigger["route"], m.lower()): f for f in discover(function_app.app)
                     if f.trigger["type"] == "httpTrigger" for m in f.trigger["methods"]}  # (path, method) → Function
        self.operations = {(p, m) for p, item in self.doc["paths"].items() for m in item if m in METHODS}
        self.called: set[tuple[str, str]] = set()

    async def __call__(self, method: str, template: str, expect: int, body: Any = None, **params: str) -> Any:
        route = {k: params.pop(k) for k in re.findall(r"{([^}]+)}", template)}
        path = template.removeprefix("/api/").format(**route)
        response = await functions()[self.http[template, method.lower()].name](request(method, path, body, params, route))
        raw, status = response.get_body(), response.status_code
        assert status == expect, f"{method} {path}: {status} {raw[:300]!r}"
        documented = self.doc["paths"][template][method.lower()]["responses"].get(str(status))
        assert documented, f"{method} {template}: {status} is not documented"
        self.called.add((template, method.lower()))
        if "content" not in documented:
            assert not raw
            return None
        media = (response.headers.get("content-type") or response.mimetype).split(";")[0].strip()
        assert media in documented["content"], f"{method} {template}: {media} is not documented for {status}"
        if media != "application/json":
            return raw.decode()
        data = json.loads(raw)
        problems = self.schemas.problems(data, documented["content"][media]["schema"])
        assert not problems, f"{method} {path} → {status}:\n" + "\n".join(problems[:15])
        return data


@pytest.fixture
def api(settings, monkeypatch):
    for name in [n for n in os.environ if n.startswith(("WHMCS_", "INVENTREE_"))]:
        monkeypatch.delenv(name)  # stock and parts checks then end in ERROR (not configured): no fakes needed
    from shared.settings import get_settings

    get_settings.cache_clear()
    return Api()


# ------------------------------------------------------------------------------------------------ tests


def test_the_document_lists_exactly_the_http_routes(api):
    prefix = json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    assert prefix == "api"
    assert api.operations == set(api.http)  # a route without documentation, or documentation without a route
    for (path, method), fn in api.http.items():
        assert (api.doc["paths"][path][method].get("security") == []) == (fn.trigger["authLevel"] == "ANONYMOUS"), path


def test_the_document_is_valid_openapi_3_1(api):
    assert document_problems(api.doc) == []
    from monitors import KINDS

    schemas = api.doc["components"]["schemas"]
    assert schemas["MonitorSpec"]["discriminator"]["propertyName"] == "kind"
    assert set(schemas["MonitorView"]["discriminator"]["mapping"]) == set(KINDS) == set(schemas["Timers"]["required"])
    points = schemas["Series"]["properties"]["points"]["items"]
    assert points["prefixItems"][1] == {"anyOf": [{"type": "number"}, {"type": "null"}]} and points["maxItems"] == 2


def test_the_validator_catches_what_it_must(api):
    s, error = api.schemas, {"$ref": "#/components/schemas/Error"}
    assert not s.problems({"error": {"code": "x", "message": "y", "details": [{"field": "f", "message": "m"}]}}, error)
    assert s.problems({"error": {"code": "x", "message": "y", "details": [], "extra": 1}}, error)
    assert s.problems({"error": {"code": 1, "message": "y", "details": []}}, error)
    assert s.problems(["2024-01-01T00:00:00"], {"items": {"type": "string", "format": "date-time"}})  # no zone
    assert s.problems([1], {"oneOf": [{"type": "integer"}, {"type": "number"}]})
    assert s.schema_problems({"type": "string", "nullable": True}, "x")  # 3.0, not 3.1
    assert s.schema_problems({"type": "array", "items": [{"type": "string"}]}, "x")


async def test_the_empty_system_answers_as_documented(api):
    assert (await api("GET", "/api/v1/monitors", 200)) == {"items": []}
    health = await api("GET", "/api/v1/health", 200)
    assert set(health["timers"]) == set(api.doc["components"]["schemas"]["Timers"]["required"])
    for path in ("/api/v1/events", "/api/v1/metrics", "/api/v1/status", "/api/v1/history", "/api/v1/bootstrap",
                 "/api/v1/alert-rules", "/api/v1/openapi.json", "/api/v1/metrics/prometheus", "/api/status-page"):
        await api("GET", path, 200)
    assert (await api("GET", "/api/v1/snapshot", 200))["persisted"] is False
    assert (await api("GET", "/api/v1/timeseries", 200, metric="monitors_total"))["count"] == 0
    for monitor_id in (NO_ID, "nope"):
        await api("GET", "/api/v1/monitors/{monitor_id}", 404, monitor_id=monitor_id)
        await api("GET", "/api/v1/monitors/{monitor_id}/results", 404, monitor_id=monitor_id)
        await api("GET", "/api/badge/{monitor_id}/{badge}", 404, monitor_id=monitor_id, badge="status.svg")
    await api("GET", "/api/v1/alert-rules/{rule_id}", 404, rule_id=NO_ID)
    assert (await api("POST", "/api/v1/kinds/{kind}/{action}", 200, kind="website", action="run"))["results"] == []
    await api("GET", "/api/v1/timeseries", 422)
    await api("GET", "/api/v1/events", 422, limit="0")


async def test_a_degraded_health_answers_as_documented(api, monkeypatch):
    from shared.storage import Store

    monkeypatch.setattr(Store, "ping", AsyncMock(side_effect=ConnectionError("no storage")))
    assert (await api("GET", "/api/v1/health", 503))["storage"] == "unreachable: ConnectionError"


async def test_an_unreadable_definition_is_listed_as_documented(api, settings):
    from shared.storage import Store

    async with Store.open(settings) as store:
        await store.insert_monitor({"RowKey": "a" * 32, "kind": "website", "name": "Old", "enabled": True, "spec": "{}",
                                    "created_at": datetime.now(UTC), "updated_at": datetime.now(UTC)})
    items = (await api("GET", "/api/v1/monitors", 200))["items"]
    assert items == [{"id": "a" * 32, "kind": "website", "name": "Old", "enabled": True,
                      "state": {"status": "ERROR", "error": "stored definition is unreadable"}}]


async def test_unreadable_too_large_and_refused_inputs_answer_as_documented(api, settings):
    from shared.storage import Store

    async with Store.open(settings) as store:
        await store.insert_monitor({"RowKey": "a" * 32, "kind": "website", "name": "Old", "enabled": True,
                                    "spec": "{", "created_at": datetime.now(UTC), "updated_at": datetime.now(UTC)})
    one, m = "/api/v1/monitors/{monitor_id}", "/api/v1/monitors"
    assert (await api("GET", one, 200, monitor_id="a" * 32))["state"]["status"] == "ERROR"
    await api("PATCH", one, 409, {"name": "New"}, monitor_id="a" * 32)
    await api("POST", one + "/run", 409, monitor_id="a" * 32)
    for tail in ("/results", "/downtimes", "/uptime"):
        await api("GET", one + tail, 200, monitor_id="a" * 32)
    big = {"kind": "website", "name": "Big", "url": "https://big.example.com/", "method": "POST",
           "body": "\U0001f600" * 16384}
    assert (await api("POST", m, 413, big))["error"]["code"] == "too_large"
    mid = (await api("POST", m, 201, {**big, "body": "small"}))["id"]
    await api("PATCH", one, 413, {"body": big["body"]}, monitor_id=mid)
    await api("DELETE", one, 204, monitor_id="a" * 32)
    for params in ({"type": "NOPE"}, {"limit": " 5 "}, {"before": "0001-01-01T00:00:00Z"}, {"monitor_id": "x"}):
        await api("GET", "/api/v1/events", 422, **params)
    await api("GET", "/api/v1/timeseries", 422, metric="monitors_total", to="9999-12-31T23:59:59.999999Z")


async def test_optional_query_parameters_may_be_empty_as_documented(api, site):
    mid = (await api("POST", "/api/v1/monitors", 201, {"kind": "website", "name": "Shop", "url": site.url,
                                                       "public": True}))["id"]
    optional = [(path, method, p["name"]) for path, item in api.doc["paths"].items() for method in METHODS & set(item)
                for p in item.get("parameters", []) + item[method].get("parameters", [])
                if p["in"] == "query" and not p["required"]]
    assert len(optional) > 15
    for path, method, name in optional:
        assert next(p for p in api.doc["paths"][path][method]["parameters"] if p["name"] == name)["allowEmptyValue"]
        route = {k: {"monitor_id": mid, "badge": "uptime.svg"}[k] for k in re.findall(r"{([^}]+)}", path)}
        extra = {"metric": "monitors_total"} if path == "/api/v1/timeseries" else {}
        await api(method.upper(), path, 200, **route, **extra, **{name: ""})  # empty: the same as left out
    events = next(p for p in api.doc["paths"]["/api/v1/events"]["get"]["parameters"] if p["name"] == "type")
    assert "MONITOR_DOWN" in events["schema"]["enum"]


async def test_every_route_answers_as_documented(api, site):
    m, one, runs = "/api/v1/monitors", "/api/v1/monitors/{monitor_id}", "/api/v1/kinds/{kind}/{action}"
    web = await api("POST", m, 201, {"kind": "website", "name": "Shop", "url": site.url, "attempts": 1,
                                     "failure_threshold": 1, "headers": {"Authorization": "Bearer 0penapi-7f3a9c"},
                                     "public": True})
    other = await api("POST", m, 201, {"kind": "website", "name": "Other", "url": site.url_for("/other")})
    await api("POST", m, 409, {"kind": "website", "name": "Again", "url": site.url,  # checks it the same way
                               "headers": {"Authorization": "Bearer 0penapi-7f3a9c"}})
    server = await api("POST", m, 201, {"kind": "resource", "name": "Server", "source": {
        "type": "local", "disk": {"warn": 0.1, "alert": 99.9}, "memory": None}})
    for expect, body in ((201, {"kind": "stock", "product_id": 42}), (400, b"{nope"), (422, {"kind": "nope"}),
                         (201, {"kind": "parts", "name": "Kit", "parts": [{"pk": 1, "quantity": 2}]}),
                         (422, {"kind": "website", "name": "", "url": "ftp://x"})):
        await api("POST", m, expect, body)

    for status in (200, 500, 200, 500):  # up, down (a downtime opens), up (it closes), down (another opens)
        site.set(status=status)
        await api("POST", one + "/run", 200, monitor_id=web["id"])
    await api("POST", one + "/run", 404, monitor_id=NO_ID)
    for kind in ("resource", "stock", "parts", "website"):
        assert (await api("POST", runs, 200, kind=kind, action="run"))["kind"] == kind
    assert (await api("POST", runs, 200, kind="website", action="pause")) == {"kind": "website", "paused": True}
    await api("POST", runs, 200, kind="website", action="resume")
    for kind, action in (("nope", "run"), ("website", "explode")):
        await api("POST", runs, 404, kind=kind, action=action)

    ackp = "/api/v1/monitors/{monitor_id}/ack"  # the website is DOWN here
    assert (await api("POST", ackp, 200, {"note": "on it"}, monitor_id=web["id"]))["status"] == "DOWN"
    await api("POST", ackp, 422, {"by": ""}, monitor_id=web["id"])
    await api("GET", ackp, 200, monitor_id=web["id"])
    await api("GET", ackp, 404, monitor_id=NO_ID)
    await api("DELETE", ackp, 204, monitor_id=web["id"])
    assert "not valid" in await api("GET", "/api/ack", 403, t="forged.token")
    await api("POST", "/api/ack", 403)

    chans, chan = "/api/v1/channels", "/api/v1/channels/{channel_id}"
    hook = await api("POST", chans, 201, {"type": "webhook", "name": "hook", "url": site.url_for("/hook"),
                                          "secret": "0123456789abcdef-openapi"})
    await api("POST", chans, 201, {"type": "email", "name": "sales", "recipients": ["sales@example.com"],
                                   "filter": {"kinds": ["stock"], "min_severity": "warning"}})
    await api("POST", chans, 409, {"type": "email", "name": "sales", "recipients": ["b@example.com"]})
    await api("POST", chans, 422, {"type": "apprise", "name": "x", "url": "foo://bar"})
    await api("POST", chans, 400, b"{")
    await api("GET", chans, 200)
    await api("GET", chan, 200, channel_id="hook")
    await api("GET", chan, 404, channel_id="nope")
    await api("PATCH", chan, 200, {"timeout_seconds": 5}, channel_id=hook["id"])
    await api("PATCH", chan, 422, {"url": "ftp://x"}, channel_id=hook["id"])
    tested = await api("POST", chan + "/test", 200, channel_id="hook")
    assert tested["results"][0]["target"] == "hook"
    await api("POST", chan + "/test", 404, channel_id="nope")
    await api("DELETE", chan, 204, channel_id="sales")
    await api("DELETE", chan, 404, channel_id="sales")

    wmany, wone = "/api/v1/maintenance", "/api/v1/maintenance/{window_id}"
    win = await api("POST", wmany, 201, {"name": "Patch day", "rrule": "FREQ=MONTHLY;BYDAY=1WE", "at": "02:00",
                                         "duration_minutes": 120, "timezone": "Europe/Berlin", "all": True})
    await api("GET", wmany, 200, active="true")
    await api("GET", wone, 200, window_id=win["id"])
    await api("PATCH", wone, 200, {"duration_minutes": 60}, window_id=win["id"])
    await api("POST", wmany, 422, {"name": "x", "rrule": "FREQ=MINUTELY", "at": "01:00", "duration_minutes": 5,
                                   "all": True})
    await api("DELETE", wone, 204, window_id=win["id"])

    rules, rule_path = "/api/v1/alert-rules", "/api/v1/alert-rules/{rule_id}"
    rule = await api("POST", rules, 201, {"metric": "monitors_total", "operator": ">", "threshold": 0})
    await api("POST", rules, 422, {"metric": "nope", "operator": ">", "threshold": 0})
    await api("POST", rules, 400, b"{")
    stored = await api("POST", "/api/v1/snapshot", 200, persist="true")
    assert stored["persisted"] and stored["alert_rules"]["fired"]
    await api("GET", "/api/v1/snapshot", 200, persist="no", wait="0")
    for method, params in (("GET", {"persist": "maybe"}), ("POST", {"wait": "99"})):
        await api(method, "/api/v1/snapshot", 422, **params)

    listing = await api("GET", m, 200)
    assert {i["kind"] for i in listing["items"]} == {"website", "resource", "stock", "parts"}
    assert next(i for i in listing["items"] if i["id"] == web["id"])["headers"] == {"Authorization": "***"}
    await api("GET", m, 200, kind="website")
    await api("GET", m, 422, kind="nope")
    for item in listing["items"]:  # every kind's view, results, downtimes and uptime
        for tail, params in (("", {}), ("/results", {}), ("/downtimes", {}), ("/uptime", {"window": "7d"})):
            await api("GET", one + tail, 200, monitor_id=item["id"], **params)
    page = await api("GET", one + "/results", 200, monitor_id=web["id"], limit="1")
    await api("GET", one + "/results", 200, monitor_id=web["id"], before=page["next_before"])
    windows = (await api("GET", one + "/downtimes", 200, monitor_id=web["id"]))["items"]
    assert [w["open"] for w in windows] == [True, False]
    for tail, params in (("/results", {"limit": "0"}), ("/results", {"before": "yesterday"}),
                         ("/downtimes", {"limit": "x"}), ("/uptime", {"window": "1y"})):
        await api("GET", one + tail, 422, monitor_id=web["id"], **params)
        await api("GET", one + tail, 404, monitor_id=NO_ID)

    events = await api("GET", "/api/v1/events", 200)
    assert {"MONITOR_DOWN", "MONITOR_UP", "MONITOR_ERROR", "ALERT_RULE_FIRING"} <= {e["type"] for e in events["items"]}
    assert (await api("GET", "/api/v1/events", 200, limit="2"))["next_before"]
    await api("GET", "/api/v1/events", 200, type="MONITOR_DOWN", monitor_id=web["id"])
    await api("GET", "/api/v1/events", 422, before="soon")
    readings = await api("GET", "/api/v1/metrics", 200)
    assert [r["id"] for r in readings["monitors"]] == [server["id"]]
    health = await api("GET", "/api/v1/health", 200)
    assert health["timers"]["website"]["paused"] is False
    status = await api("GET", "/api/v1/status", 200)
    assert status["snapshot"]["id"] == stored["id"] and status["alert_rules"]["firing"]
    await api("GET", "/api/v1/history", 200)
    assert (await api("GET", "/api/v1/history", 200, full="TRUE", limit="1"))["items"][0]["snapshot"]["persisted"]
    for params in ({"limit": "501"}, {"full": "maybe"}):
        await api("GET", "/api/v1/history", 422, **params)
    series = await api("GET", "/api/v1/timeseries", 200, metric="monitors_total, website_monitors")
    assert series["series"][0]["points"][0][1] == 5
    await api("GET", "/api/v1/timeseries", 422, metric="nope")
    boot = await api("GET", "/api/v1/bootstrap", 200)
    assert boot["latest_snapshot"]["id"] == stored["id"] and boot["alert_rules"][0]["id"] == rule["id"]
    await api("GET", "/api/v1/alert-rules", 200)
    assert (await api("GET", rule_path, 200, rule_id=rule["id"]))["state"]["firing"] is True
    await api("GET", "/api/v1/openapi.json", 200)
    assert "website_http_status_code" in await api("GET", "/api/v1/metrics/prometheus", 200)
    assert (await api("GET", "/api/status-page", 200)).startswith("<!DOCTYPE html>")
    badge = "/api/badge/{monitor_id}/{badge}"
    for expect, params in ((200, {"badge": "status.svg"}), (200, {"badge": "uptime.svg", "window": "7d"}),
                           (422, {"badge": "uptime.svg", "window": "1y"}), (404, {"badge": "other.svg"}),
                           (422, {"badge": "status.svg", "window": "1y"})):  # a window given is checked
        assert (await api("GET", badge, expect, monitor_id=web["id"], **params)).startswith("<svg")

    assert (await api("PATCH", one, 200, {"name": "Shop front"}, monitor_id=web["id"]))["name"] == "Shop front"
    await api("PATCH", one, 409, {"url": site.url, "headers": {"Authorization": "Bearer 0penapi-7f3a9c"}},
              monitor_id=other["id"])
    for expect, body, mid in ((422, {"timeout_seconds": -1}, web["id"]), (422, {"kind": "stock"}, web["id"]),
                              (400, b"{", web["id"]), (404, {"name": "x"}, NO_ID)):
        await api("PATCH", one, expect, body, monitor_id=mid)
    assert (await api("PATCH", rule_path, 200, {"threshold": 5}, rule_id=rule["id"]))["threshold"] == 5
    for expect, body, rid in ((422, {"operator": "~"}, rule["id"]), (400, b"{", rule["id"]), (404, {}, NO_ID)):
        await api("PATCH", rule_path, expect, body, rule_id=rid)
    for expect in (204, 404):
        await api("DELETE", rule_path, expect, rule_id=rule["id"])
        await api("DELETE", one, expect, monitor_id=other["id"])
    await api("GET", one, 404, monitor_id=other["id"])
    assert api.called == api.operations, api.operations - api.called


async def test_several_locations_answer_as_documented(api, site, env, settings):
    from datetime import UTC, datetime, timedelta

    from shared import engine
    from shared.settings import get_settings
    from shared.storage import Store

    env(CHECK_LOCATION="eu", CHECK_LOCATIONS="eu,us")
    mid = (await api("POST", "/api/v1/monitors", 201, {"kind": "website", "name": "Shop", "url": site.url,
                                                       "public": True, "quorum": 1, "locations": ["eu", "us"]}))["id"]
    await api("POST", "/api/v1/monitors", 422, {"kind": "website", "name": "Far", "url": site.url,
                                                "locations": ["mars"]})
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    for location in ("us", "eu"):
        env(CHECK_LOCATION=location)
        async with Store.open(get_settings()) as store:
            await engine.run_kind(store, get_settings(), "website", trigger="timer", now=now)
    one = await api("GET", "/api/v1/monitors/{monitor_id}", 200, monitor_id=mid)
    assert set(one["state"]["locations"]) == {"eu", "us"}
    assert {i["location"] for i in (await api("GET", "/api/v1/monitors/{monitor_id}/results", 200,
                                              monitor_id=mid))["items"]} == {"eu", "us"}
    assert set((await api("GET", "/api/v1/monitors/{monitor_id}/uptime", 200, monitor_id=mid))["by_location"]) == \
        {"eu", "us"}
    assert set((await api("GET", "/api/v1/health", 200))["timers"]["website"]["locations"]) == {"eu", "us"}
    await api("GET", "/api/v1/monitors", 200)
    await api("POST", "/api/v1/monitors/{monitor_id}/run", 200, monitor_id=mid)
    await api("POST", "/api/v1/kinds/{kind}/{action}", 200, kind="website", action="run")


def test_importing_the_module_builds_nothing():
    exports = subprocess.run([sys.executable, str(ROOT / "scripts" / "example_env.py")], capture_output=True,
                             text=True, check=True).stdout
    env = dict(os.environ)  # with the example settings (function_app checks them at import)
    for name, _, value in (line.removeprefix("export ").partition("=") for line in exports.splitlines()):
        env[name] = "".join(shlex.split(value))
    code = ("import json, sys, function_app, shared.web.openapi as o; print(json.dumps({'built': "
            "o.document.cache_info().currsize, 'modules': sorted(m for m in sys.modules if m.startswith(("
            "'monitors.', 'shared.web.schemas')))}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["built"] == 0 and "monitors.website" not in loaded["modules"], loaded
    assert not [m for m in loaded["modules"] if m.startswith("shared.web.schemas")
                or m.split(".")[1] in ("website", "stock", "parts", "resource")], loaded["modules"]
