"""The HTTP API through the real function objects, against real Azurite and a real local website."""

from __future__ import annotations

import pytest
from aiohttp import web
from apphelp import call, functions


@pytest.fixture
async def site():
    """A local website whose status can be flipped; yields (base_url, state): `hits`, and the `headers` of the
    latest request."""
    state = {"status": 200, "hits": 0, "headers": {}}

    async def handler(request: web.Request) -> web.Response:
        state["hits"] += 1
        state["headers"] = dict(request.headers)
        return web.Response(status=state["status"], text="welcome to the shop")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", state
    await runner.cleanup()


async def create(url: str, **extra) -> dict:
    status, body = await call("monitors", "POST", "v1/monitors",
                              {"kind": "website", "name": "Shop", "url": url, "attempts": 1, **extra})
    assert status == 201, body
    return body


async def test_empty_state_is_valid(settings):
    assert await call("monitors", "GET", "v1/monitors") == (200, {"items": []})
    status, body = await call("events", "GET", "v1/events")
    assert status == 200 and body["items"] == []
    status, body = await call("health", "GET", "v1/health")
    assert status == 200
    assert body["storage"] == "ok" and body["timers"]["website"]["last_run"] is None


async def test_invalid_input_gets_422_with_field_details(settings):
    status, body = await call("monitors", "POST", "v1/monitors",
                              {"kind": "website", "name": "", "url": "ftp://x", "interval_seconds": 5,
                               "body_regex": "(", "expected_status": ["2zz"]})
    assert status == 422
    fields = {d["field"] for d in body["error"]["details"]}
    assert {"name", "url", "interval_seconds", "body_regex", "expected_status"} <= fields
    assert body["error"]["code"] == "validation_error"

    status, body = await call("monitors", "POST", "v1/monitors", {"name": "x"})
    assert status == 422 and body["error"]["details"][0]["field"] == "kind"
    status, body = await call("monitors", "POST", "v1/monitors", b"{not json")
    assert status == 400 and body["error"]["message"] == "the body is not valid JSON"
    status, body = await call("monitors", "POST", "v1/monitors", {"kind": "website", "name": "x",
                                                                  "url": "http://a.example", "colour": "red"})
    assert status == 422 and body["error"]["details"][0]["field"] == "colour"
    assert (await call("monitors", "GET", "v1/monitors"))[1] == {"items": []}  # nothing half-stored


async def test_crud_and_duplicate_url(settings):
    created = await create("https://Shop.example.com/")
    mid = created["id"]
    assert created["state"]["status"] == "PENDING" and created["interval_seconds"] == 300

    status, body = await call("monitors", "POST", "v1/monitors",
                              {"kind": "website", "name": "Again", "url": "https://shop.example.com:443/"})
    assert status == 409 and body["error"]["details"][0]["field"] == "url"

    status, body = await call("monitor", "PATCH", f"v1/monitors/{mid}", {"name": "Shop front", "cron": "*/5 * * * *"},
                              route={"monitor_id": mid})
    assert status == 200 and body["name"] == "Shop front" and body["cron"] == "*/5 * * * *"
    assert body["interval_seconds"] is None

    status, body = await call("monitor", "PATCH", f"v1/monitors/{mid}", {"timeout_seconds": -1},
                              route={"monitor_id": mid})
    assert status == 422 and body["error"]["details"][0]["field"] == "timeout_seconds"
    status, body = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert body["timeout_seconds"] == 15.0 and body["name"] == "Shop front"  # the bad patch changed nothing (15: the default)

    other = await create("https://other.example.com/")
    status, body = await call("monitor", "PATCH", f"v1/monitors/{other['id']}", {"url": "https://shop.example.com"},
                              route={"monitor_id": other["id"]})
    assert status == 409

    assert (await call("monitor", "DELETE", f"v1/monitors/{mid}", route={"monitor_id": mid}))[0] == 204
    status, body = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert status == 404 and body["error"]["code"] == "not_found"
    await create("https://shop.example.com/")  # the URL is free again
    status, _ = await call("monitor", "GET", "v1/monitors/nope", route={"monitor_id": "nope"})
    assert status == 404


async def test_secret_headers_are_never_shown(settings):
    created = await create("https://api.example.com/", headers={"Authorization": "Bearer s3cr3t", "Accept": "x"})
    assert created["headers"] == {"Authorization": "***", "Accept": "x"}
    status, body = await call("monitors", "GET", "v1/monitors")
    assert "s3cr3t" not in str(body)


async def test_saving_back_what_get_returned_keeps_the_secret(settings, site):
    base, state = site
    mid = (await create(base + "/", headers={"Authorization": "Bearer s3cret", "X-Api-Key": "k3y",
                                             "Accept": "text/html"}))["id"]
    route = {"monitor_id": mid}
    _, shown = await call("monitor", "GET", f"v1/monitors/{mid}", route=route)
    assert shown["headers"] == {"Authorization": "***", "X-Api-Key": "***", "Accept": "text/html"}

    body = {k: v for k, v in shown.items() if k not in ("target", "created_at", "updated_at", "state")}  # read-only
    status, patched = await call("monitor", "PATCH", f"v1/monitors/{mid}", {**body, "name": "Shop front"},
                                 route=route)
    assert status == 200 and patched["name"] == "Shop front" and patched["headers"] == shown["headers"]
    await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route=route)
    assert state["headers"]["Authorization"] == "Bearer s3cret" and state["headers"]["X-Api-Key"] == "k3y"
    _, again = await call("monitor", "GET", f"v1/monitors/{mid}", route=route)
    assert again["headers"] == shown["headers"] and "s3cret" not in str(again) and "k3y" not in str(again)

    # a new value replaces the secret, a header left out is removed, "***" where nothing was masked is a value
    status, _ = await call("monitor", "PATCH", f"v1/monitors/{mid}", {"headers": {
        "Authorization": "Bearer n3w", "Accept": "***"}}, route=route)
    assert status == 200
    await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route=route)
    assert state["headers"]["Authorization"] == "Bearer n3w" and state["headers"]["Accept"] == "***"
    assert "X-Api-Key" not in state["headers"]
    _, listed = await call("monitors", "GET", "v1/monitors")
    assert listed["items"][0]["headers"] == {"Authorization": "***", "Accept": "***"} and "n3w" not in str(listed)


async def test_run_results_paging_downtimes_uptime(settings, site):
    base, state = site
    mid = (await create(base + "/", failure_threshold=1))["id"]
    status, body = await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route={"monitor_id": mid})
    assert status == 200 and body["outcome"] == "up" and body["status_code"] == 200 and body["status"] == "UP"
    state["status"] = 503
    status, body = await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route={"monitor_id": mid})
    assert body["outcome"] == "down" and body["status"] == "DOWN" and body["events"] == ["MONITOR_DOWN"]
    assert "HTTP 503" in body["error"]
    state["status"] = 200
    for _ in range(3):
        await call("monitor_run", "POST", f"v1/monitors/{mid}/run", route={"monitor_id": mid})

    status, page1 = await call("monitor_results", "GET", f"v1/monitors/{mid}/results", params={"limit": "2"},
                               route={"monitor_id": mid})
    assert status == 200 and len(page1["items"]) == 2 and page1["next_before"]
    _, page2 = await call("monitor_results", "GET", f"v1/monitors/{mid}/results",
                          params={"limit": "10", "before": page1["next_before"]}, route={"monitor_id": mid})
    outcomes = [r["outcome"] for r in page1["items"] + page2["items"]]
    assert outcomes == ["up", "up", "up", "down", "up"] and page2["next_before"] is None

    _, downs = await call("monitor_downtimes", "GET", f"v1/monitors/{mid}/downtimes", route={"monitor_id": mid})
    assert len(downs["items"]) == 1 and downs["items"][0]["open"] is False

    _, up = await call("monitor_uptime", "GET", f"v1/monitors/{mid}/uptime", params={"window": "7d"},
                       route={"monitor_id": mid})
    assert up["checks"] == 5 and up["up"] == 4 and up["uptime_percent"] == 80.0
    status, body = await call("monitor_uptime", "GET", f"v1/monitors/{mid}/uptime", params={"window": "1y"},
                              route={"monitor_id": mid})
    assert status == 422 and body["error"]["details"][0]["field"] == "window"
    status, body = await call("monitor_results", "GET", f"v1/monitors/{mid}/results", params={"limit": "0"},
                              route={"monitor_id": mid})
    assert status == 422

    _, evs = await call("events", "GET", "v1/events", params={"monitor_id": mid})
    assert [e["type"] for e in evs["items"]] == ["MONITOR_UP", "MONITOR_DOWN"]


async def test_kind_pause_resume_and_run(settings, site):
    from azure.functions.timer import TimerRequest

    base, state = site
    await create(base + "/a")
    await create(base + "/b")
    assert (await call("kind_action", "POST", "v1/kinds/website/pause", route={"kind": "website",
                                                                              "action": "pause"}))[1]["paused"]
    await functions()["website_timer"](TimerRequest())
    assert state["hits"] == 0  # the timer honoured the pause
    status, body = await call("kind_action", "POST", "v1/kinds/website/run", route={"kind": "website",
                                                                                   "action": "run"})
    assert status == 200 and body["checked"] == 2 and state["hits"] == 2  # a manual run still runs
    await call("kind_action", "POST", "v1/kinds/website/resume", route={"kind": "website", "action": "resume"})
    await create(base + "/c")
    await functions()["website_timer"](TimerRequest())
    # resumed: the never-checked monitor is due at once; the two just checked wait for their next slot
    assert state["hits"] == 3
    _, health = await call("health", "GET", "v1/health")
    assert health["timers"]["website"]["last_run"]["checked"] == 1
    assert health["timers"]["website"]["paused"] is False
    assert (await call("kind_action", "POST", "v1/kinds/nope/run", route={"kind": "nope", "action": "run"}))[0] \
        == 404


async def test_openapi_is_generated_from_the_models(settings):
    status, doc = await call("openapi_document", "GET", "v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert "/api/v1/monitors/{monitor_id}/results" in doc["paths"]
    website = doc["components"]["schemas"]["WebsiteMonitor"]
    assert website["properties"]["interval_seconds"]["anyOf"][0]["minimum"] == 60


async def test_secrets_never_in_responses(env, storage):
    env(GLOBAL_EMAIL_NOTIFICATIONS_ENABLED="true", SMTP_HOST="127.0.0.1", SMTP_USERNAME="u",
        SMTP_PASSWORD="hunter2-very-secret")
    _, health = await call("health", "GET", "v1/health")
    _, doc = await call("openapi_document", "GET", "v1/openapi.json")
    assert "hunter2" not in str(health) + str(doc)
    assert "AccountKey" not in str(health)
