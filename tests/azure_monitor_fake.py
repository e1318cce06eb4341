"""A local stand-in for Azure Monitor that speaks the wire formats the SDKs send and expect, over TLS.

- Metrics: `POST /subscriptions/{sub}/metrics:getBatch?api-version=2024-02-01&metricnamespace=…&metricnames=…
  &starttime=…&endtime=…&interval=PT1M&aggregation=average[&filter=…]` with `{"resourceids": [...]}` (what
  azure-monitor-querymetrics' MetricsClient sends to the regional endpoint) → `{"values": [{"starttime",
  "endtime", "interval", "namespace", "resourceregion", "resourceid", "value": [{"id", "type", "name": {"value",
  "localizedValue"}, "displayDescription", "errorCode", "unit", "timeseries": [{"metadatavalues": [], "data":
  [{"timeStamp", "average"}, …]}]}]}]}` — the newest grain left empty, as Azure does until it is ingested. An
  unknown metric or namespace is a 400 `{"error": {"code": "BadRequest", "message": "Failed to find metric
  configuration …"}}` as the service answers.
- Logs: `POST /v1/workspaces/{id}/query` with `{"query", "timespan"}` (azure-monitor-query's LogsQueryClient) →
  `{"tables": [{"name": "PrimaryResult", "columns": [{"name", "type"}], "rows": [[…]]}]}`; an unknown workspace is
  a 404 `PathNotFoundError`.
- Both: `Authorization: Bearer <token>` or 401; `fail_next` answers the next requests with canned replies
  (429 + Retry-After, 403, malformed bodies), and every request is recorded.

The SDKs send bearer tokens over https only, so the server presents a trustme certificate for 127.0.0.1 and the
clients trust its CA through `monitors.resource.azure.CONNECTION_VERIFY`; `FakeCredential` stands in for
DefaultAzureCredential (an async `get_token` returning a fixed AccessToken).
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from azure.core.credentials import AccessToken

from monitors.resource import azure as resource

TOKEN = "fake-azure-token"
SUBSCRIPTION = "00000000-0000-4000-8000-000000000001"
WORKSPACE = "11111111-2222-4333-8444-555555555555"
VM = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/shop/providers/Microsoft.Compute/virtualMachines/web-1"


class FakeCredential:
    """An AsyncTokenCredential: a fixed token; records the scopes asked for and whether it was closed."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.scopes: list[str] = []
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass
class Canned:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class FakeAzureMonitor:
    def __init__(self, ca: trustme.CA) -> None:
        self.ca = ca
        self.resources: dict[str, dict[str, Any]] = {}  # resource id (lower) → {"namespace", "metrics": {…}}
        self.workspaces: dict[str, Any] = {}  # workspace id → {"columns": [(name, type)], "rows": [[…]]} / Canned
        self.canned: list[Canned] = []
        self.requests: list[Seen] = []
        self.credentials: list[FakeCredential] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    # -- scripting ------------------------------------------------------------------------------------------

    def add_metric(self, resource_id: str, namespace: str, name: str, values: list[float | None],
                   unit: str = "Percent", series: int = 1) -> None:
        """The metric's values at 1-minute grain, oldest first, ending at the current minute (None = no data);
        `series` > 1: as many time series (a dimension filter), the n-th one's values scaled by 1/n."""
        entry = self.resources.setdefault(resource_id.lower(), {"namespace": namespace, "metrics": {}})
        entry["metrics"][name] = {"values": values, "unit": unit, "series": series}

    def set_query_result(self, workspace: str, columns: list[tuple[str, str]], rows: list[list[Any]]) -> None:
        self.workspaces[workspace] = {"columns": columns, "rows": rows}

    def fail_next(self, status: int, body: bytes | str | dict, headers: dict[str, str] | None = None,
                  times: int = 1) -> None:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
        self.canned += [Canned(status, raw, headers or {})] * times

    def metric_requests(self) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/metrics:getBatch")]

    def log_requests(self) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/query")]

    # -- server ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/subscriptions/{sub}/metrics:getBatch", self._metrics)
        app.router.add_post("/v1/workspaces/{workspace}/query", self._logs)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> tuple[Seen, web.Response | None]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        seen = Seen(request.method, request.path, dict(request.query), dict(request.headers), body)
        self.requests.append(seen)
        if self.canned:
            canned = self.canned.pop(0)
            return seen, web.Response(status=canned.status, body=canned.body, headers=canned.headers,
                                      content_type="application/json")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return seen, web.Response(status=401, body=error_body(
                "InvalidAuthenticationTokenTenant", "The access token is missing or invalid."),
                content_type="application/json")
        return seen, None

    async def _metrics(self, request: web.Request) -> web.Response:
        seen, early = await self._record(request)
        if early is not None:
            return early
        q = seen.query
        if q.get("api-version") != "2024-02-01" or not q.get("metricnamespace") or not q.get("metricnames"):
            return web.Response(status=400, body=error_body(
                "BadRequest", "api-version, metricnamespace and metricnames are required"),
                content_type="application/json")
        ids = (seen.body or {}).get("resourceids") or []
        aggregation = (q.get("aggregation") or "average").lower()
        start = datetime.fromisoformat(q["starttime"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(q["endtime"].replace("Z", "+00:00"))
        values = []
        for rid in ids:
            entry = self.resources.get(rid.lower())
            if entry is None or entry["namespace"].lower() != q["metricnamespace"].lower():
                return web.Response(status=400, body=error_body(
                    "BadRequest", f"Failed to find metric configuration for provider: {q['metricnamespace']}, "
                    f"resource Type: {q['metricnamespace']}, metric: {q['metricnames']}, Valid metrics: "
                    + ", ".join(entry["metrics"] if entry else [])), content_type="application/json")
            out = []
            for name in q["metricnames"].split(","):
                metric = next((v for k, v in entry["metrics"].items() if k.lower() == name.lower()), None)
                if metric is None:
                    return web.Response(status=400, body=error_body(
                        "BadRequest", f"Failed to find metric configuration for provider: "
                        f"{entry['namespace'].split('/')[0]}, resource Type: {entry['namespace'].split('/', 1)[1]}, "
                        f"metric: {name}, Valid metrics: {', '.join(entry['metrics'])}"),
                        content_type="application/json")
                minute = end.replace(second=0, microsecond=0)
                stamps = [minute - timedelta(minutes=len(metric["values"]) - 1 - i)
                          for i in range(len(metric["values"]))]
                series = []
                for n in range(1, metric["series"] + 1):
                    data = []
                    for at, value in zip(stamps, metric["values"]):
                        if at < start.replace(second=0, microsecond=0):
                            continue
                        point = {"timeStamp": _iso(at)}
                        if value is not None:
                            point[aggregation] = value / n
                        data.append(point)
                    series.append({"metadatavalues": [{"name": {"value": "instance", "localizedValue": "instance"},
                                                       "value": f"i{n}"}] if metric["series"] > 1 else [],
                                   "data": data})
                out.append({"id": f"{rid}/providers/Microsoft.Insights/metrics/{name}",
                            "type": "Microsoft.Insights/metrics", "name": {"value": name, "localizedValue": name},
                            "displayDescription": f"{name} of the resource",
                            "errorCode": "Success", "unit": metric["unit"], "timeseries": series})
            values.append({"starttime": q["starttime"], "endtime": q["endtime"], "interval": q.get("interval", "PT1M"),
                           "namespace": entry["namespace"], "resourceregion": "westeurope", "resourceid": rid,
                           "value": out})
        return web.json_response({"values": values})

    async def _logs(self, request: web.Request) -> web.Response:
        seen, early = await self._record(request)
        if early is not None:
            return early
        workspace = request.match_info["workspace"]
        result = self.workspaces.get(workspace)
        if result is None:
            return web.Response(status=404, body=error_body(
                "PathNotFoundError", f"The requested path does not exist: workspace {workspace}"),
                content_type="application/json")
        if not isinstance(seen.body, dict) or not seen.body.get("query"):
            return web.Response(status=400, body=error_body("BadArgumentError", "The request had some invalid "
                                                            "properties"), content_type="application/json")
        return web.json_response({"tables": [{
            "name": "PrimaryResult", "columns": [{"name": n, "type": t} for n, t in result["columns"]],
            "rows": result["rows"]}]})


@pytest.fixture(scope="session")
def azure_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def azure_monitor(azure_ca, monkeypatch, tmp_path: Path):
    """The stand-in, with monitors.resource pointed at it: endpoints, TLS trust and a fake credential."""
    fake = FakeAzureMonitor(azure_ca)
    await fake.start()
    ca_file = tmp_path / "azure-ca.pem"
    azure_ca.cert_pem.write_to_path(str(ca_file))

    def credential(settings: Any) -> FakeCredential:
        made = FakeCredential()
        fake.credentials.append(made)
        return made

    monkeypatch.setattr(resource, "METRICS_ENDPOINT", fake.url)
    monkeypatch.setattr(resource, "LOGS_ENDPOINT", fake.url)
    monkeypatch.setattr(resource, "CONNECTION_VERIFY", str(ca_file))
    monkeypatch.setattr(resource, "make_credential", credential)
    yield fake
    await fake.stop()
