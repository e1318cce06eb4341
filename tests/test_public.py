"""The public face: the status page (HTML), badges (SVG) and the anonymous/keyed split — through the real functions
(and the local host), against real Azurite, with data seeded through shared/storage.py. The page in a browser:
tests/test_status_page_chromium.py; what the page says at a glance: tests/test_status_page_truth.py; Prometheus:
tests/test_prometheus.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from apphelp import functions, request
from conftest import DEV_KEY, free_port
from prometheus_client.parser import text_string_to_metric_families

from monitors import parse_spec, to_entity_spec
from shared import manage
from shared.storage import Store, hour_floor
from shared.web import cache as public

ROOT = Path(__file__).resolve().parent.parent
KEY = "public-test-key"
SECRETS = ("hunter2", "QUERY-SECRET-7f3a", "Bearer HEADER-SECRET-91c2", "HEADER-SECRET-91c2", "ERROR-SECRET-55d1",
           "BODY-SECRET-0b7e", DEV_KEY, "AccountKey", "AzureWebJobsStorage", KEY)


@pytest.fixture(autouse=True)
def fresh_cache():
    public.clear_cache()
    yield
    public.clear_cache()


async def get(name: str, path: str, params: dict[str, str] | None = None, route: dict[str, str] | None = None):
    """status, body text, headers — with Content-Type as the host sends it (from mimetype unless set)."""
    response = await functions()[name](request("GET", path, params=params, route=route))
    headers = dict(response.headers)
    headers.setdefault("Content-Type", f"{response.mimetype}; charset={response.charset}")
    return response.status_code, response.get_body().decode(), headers


# ------------------------------------------------------------------------------------------------ demo data


def _agg(count: int, up: int, latency: float) -> dict:
    return {"count": count, "up": up, "degraded": 0, "latency_sum": latency * up, "latency_count": up,
            "latency_min": latency * 0.6, "latency_max": latency * 1.8}


async def seed_demo(store: Store, now: datetime | None = None) -> dict[str, str]:
    """A handful of monitors with 90 days of hourly rollups, recent results and current states: what a real
    status page looks like after a quarter. Returns {name: id}."""
    now = now or datetime.now(UTC)
    rng = random.Random(7)
    top = hour_floor(now)
    ids: dict[str, str] = {}
    writes: list[Awaitable[Any]] = []

    async def monitor(spec: dict, status: str, latency: float, age_days: int = 90, bad_days: dict | None = None,
                      per_hour: int = 60, state: dict | None = None, recent_down: int = 0,
                      slow_recent: bool = False) -> str:
        mid = (await manage.create_monitor(store, spec))["id"]
        ids[spec["name"]] = mid
        hours = {}
        start = top - timedelta(days=min(age_days, 90) - 1, hours=top.hour)
        h = start
        while h < top:
            day = (top - hour_floor(h)).days
            up = per_hour
            if bad_days and day in bad_days and h.hour in (9, 10, 11, 14):
                up = max(0, per_hour - bad_days[day])
            elif rng.random() < 0.004:
                up = per_hour - 1
            hours[h] = _agg(per_hour, up, latency * rng.uniform(0.85, 1.15))
            h += timedelta(hours=1)
        writes.append(store.write_rollups(mid, hours))  # written together at the end: the data stays the same
        results = []
        for n in range(48):
            at = now - timedelta(minutes=47 - n)
            down = n >= 48 - recent_down
            lat = None if down else round(latency * rng.uniform(0.7, 1.3) * (1 + (n / 12 if slow_recent and n > 30
                                                                               else 0)), 1)
            outcome = "down" if down else ("degraded" if slow_recent and n > 40 else "up")
            results.append(store.result_entity(mid, at, {k: v for k, v in {
                "outcome": outcome, "latency_ms": lat, "checked_at": at, "trigger": "timer",
                "status": status if n == 47 else ("UP" if spec["kind"] == "website" else "OK"),
                "error": "HTTP 502 (expected 200-399)" if down else None}.items() if v is not None}))
        writes.append(store.write_results(results))
        data = {"status": status, "since": (now - timedelta(days=3)).isoformat(), **(state or {})}
        writes.append(store.commit_state(spec["kind"], mid, data, status, None, []))
        return mid

    await monitor({"kind": "website", "name": "Web shop", "url": "https://shop.example.com/", "public": True}, "UP",
                  182, bad_days={23: 40, 61: 4})
    await monitor({"kind": "website", "name": "Customer API", "url": "https://api.example.com/v2/health",
                   "max_response_ms": 800, "public": True}, "DEGRADED", 240, bad_days={12: 9, 40: 2, 77: 25},
                  slow_recent=True)
    await monitor({"kind": "website", "name": "Documentation", "url": "https://docs.example.com/", "hide_url": True,
                   "public": True}, "UP", 95, age_days=45)
    started = now - timedelta(minutes=27)
    pay = await monitor({"kind": "website", "name": "Payment gateway", "url": "https://pay.example.com/checkout",
                         "public": True}, "DOWN", 310, bad_days={5: 60, 33: 12}, recent_down=27,
                        state={"down_since": started.isoformat(), "fails": 5})
    await store.open_downtime(pay, started, "HTTP 502 (expected 200-399)")
    await monitor({"kind": "stock", "name": "Widget Pro stock", "product_id": 42, "threshold_low": 5, "public": True},
                  "LOW", 420,
                  per_hour=12, state={"quantity": 3, "breach": "low"})
    await monitor({"kind": "resource", "name": "Build server disk", "source": {"type": "local"}, "public": True}, "OK",
                  35, age_days=60)
    await monitor({"kind": "website", "name": "Internal admin", "url": "https://admin.example.com/",
                   "public": False}, "DOWN", 120)
    await asyncio.gather(*writes)  # ~15,000 rollup rows: one partition per monitor, all monitors at once
    await store.set_kind_meta("_rollup", rolled_until=top)
    return ids


# ------------------------------------------------------------------------------------------- HTML parsing


class Page(HTMLParser):
    """The status page's monitors (name, status, url, bars, sparkline), incidents, banner and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.monitors: list[dict] = []
        self.incidents: list[str] = []
        self.tags: set[str] = set()
        self.banner = ""
        self._stack: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        cls = a.get("class") or ""
        self.tags.add(tag)
        if tag == "section" and "monitor" in cls.split():
            self.monitors.append({"id": a["id"], "status": a["data-status"], "name": "", "url": None, "bars": [],
                                  "spark": False, "pill": ""})
        elif self.monitors and tag == "span" and self._inside("bars"):
            self.monitors[-1]["bars"].append((cls, a.get("title")))
        elif self.monitors and tag == "polyline" and self._inside("monitor"):
            self.monitors[-1]["spark"] = True
        if tag not in ("meta", "br"):
            self._stack.append((tag, cls))

    def handle_startendtag(self, tag: str, attrs: list) -> None:  # <rect/>: opened and closed at once
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if any(t == tag for t, _ in self._stack):
            while self._stack.pop()[0] != tag:
                pass

    def _inside(self, cls: str) -> bool:
        return any(cls in c.split() for _, c in self._stack)

    def handle_data(self, data: str) -> None:
        text = data.strip()
        if not text or not self._stack:
            return
        tag, cls = self._stack[-1]
        if self._inside("banner"):
            if "icon" not in cls.split():
                self.banner += text
        elif self._inside("incident") and tag == "strong":
            self.incidents.append(text)
        elif self.monitors and "name" in cls.split():
            self.monitors[-1]["name"] += text
        elif self.monitors and "url" in cls.split():
            self.monitors[-1]["url"] = text
        elif self.monitors and "pill" in cls.split():
            self.monitors[-1]["pill"] = text


def parse_page(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


# ------------------------------------------------------------------------------------------------ tests


async def test_empty_public_endpoints(settings):
    status, html, headers = await get("status_page", "status-page")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = parse_page(html)
    assert page.banner == "No public monitors yet" and page.monitors == [] and "script" not in page.tags
    status, svg, headers = await get("badge", "badge/x/status.svg", route={"monitor_id": "x", "badge": "status.svg"})
    assert status == 404 and headers["Content-Type"].startswith("image/svg+xml") and svg_root(svg) is not None
    status, text, headers = await get("prometheus_metrics", "v1/metrics/prometheus")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "monitor_status" in families and families["monitor_status"].samples == []


async def test_status_page_shows_public_monitors_and_never_a_secret(settings):
    async with Store.open(settings) as store:
        ids = await seed_demo(store)
        hook = (await manage.create_monitor(store, {
            "kind": "website", "name": "Deploy hook", "url": "https://deploy:hunter2@hooks.example.com/ping?"
            "token=QUERY-SECRET-7f3a#frag", "method": "POST", "body": "BODY-SECRET-0b7e",
            "headers": {"X-Deploy-Token": "Bearer HEADER-SECRET-91c2"}, "public": True}))["id"]  # login: in the URL
        await store.commit_state("website", hook, {"status": "UP"}, "UP", None, [])
        broken = (await manage.create_monitor(store, {"kind": "stock", "name": "Gadget stock", "product_id": 7,
                                                      "public": True}))
        await store.commit_state("stock", broken["id"], {"status": "ERROR", "error": "ERROR-SECRET-55d1",
                                                         "since": datetime.now(UTC).isoformat()},
                                 "ERROR", None, [])
    status, html, headers = await get("status_page", "status-page")
    assert status == 200 and "max-age" in headers["Cache-Control"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    for secret in SECRETS:
        assert secret not in html, secret
    page = parse_page(html)
    assert "script" not in page.tags  # readable without any script
    names = [m["name"] for m in page.monitors]
    assert "Internal admin" not in names and ids["Internal admin"] not in html  # public=false: not there at all
    assert set(names) == {"Web shop", "Customer API", "Documentation", "Payment gateway", "Deploy hook",
                          "Widget Pro stock", "Gadget stock", "Build server disk"}
    by_name = {m["name"]: m for m in page.monitors}
    assert by_name["Web shop"]["url"] == "https://shop.example.com/"
    assert by_name["Deploy hook"]["url"] == "https://hooks.example.com/ping"  # no user info, query, fragment
    assert by_name["Documentation"]["url"] is None and "docs.example.com" not in html  # hide_url
    assert by_name["Widget Pro stock"]["url"] is None
    assert (by_name["Payment gateway"]["status"], by_name["Payment gateway"]["pill"]) == ("DOWN", "Down")
    assert by_name["Customer API"]["pill"] == "Degraded" and by_name["Widget Pro stock"]["pill"] == "Low stock"
    assert by_name["Gadget stock"]["pill"] == "No data"
    for m in page.monitors:
        assert len(m["bars"]) == 90, m["name"]
    shop_bars = by_name["Web shop"]["bars"]
    assert all(cls != "none" for cls, _ in shop_bars)  # 90 days of data
    assert any(cls == "warn" for cls, _ in shop_bars)  # the day with a 160-minute outage (97 %)
    assert sum(cls == "none" for cls, _ in by_name["Documentation"]["bars"]) == 45  # added 45 days ago: grey
    assert sum(cls == "none" for cls, _ in by_name["Deploy hook"]["bars"]) == 90  # no checks yet
    assert any("no data" in (title or "") for _, title in by_name["Documentation"]["bars"])
    assert by_name["Web shop"]["spark"] and not by_name["Deploy hook"]["spark"]
    assert page.banner == "Some systems are down"
    assert page.incidents == ["Gadget stock: monitoring interrupted", "Payment gateway is down"]  # newest first


async def test_monitors_are_hidden_unless_marked_public(settings):
    """Opt-in, as in Uptime Kuma: a new monitor is not on the page and its badges are the 404 badge until it is
    marked `public: true`; a definition stored before keeps the `public` value it was stored with."""
    async with Store.open(settings) as store:
        hidden = (await manage.create_monitor(store, {"kind": "website", "name": "Unmarked",
                                                       "url": "https://unmarked.example.com/"}))
        shown = (await manage.create_monitor(store, {"kind": "website", "name": "Marked",
                                                      "url": "https://marked.example.com/", "public": True}))
        old_id = uuid.uuid4().hex  # written by a version where public defaulted to true: it is in the spec
        old = {**json.loads(to_entity_spec(parse_spec({"kind": "stock", "name": "Stored before", "product_id": 3}))),
               "id": old_id, "public": True}
        await store.insert_monitor({"RowKey": old_id, "kind": "stock", "name": "Stored before", "enabled": True,
                                    "spec": json.dumps(old)})
        for mid, kind, status in ((hidden["id"], "website", "UP"), (shown["id"], "website", "UP"),
                                  (old_id, "stock", "OK")):
            await store.commit_state(kind, mid, {"status": status}, status, None, [])
    assert hidden["public"] is False and shown["public"] is True
    status, html, _ = await get("status_page", "status-page")
    page = parse_page(html)
    assert status == 200 and sorted(m["name"] for m in page.monitors) == ["Marked", "Stored before"]
    assert hidden["id"] not in html and "unmarked.example.com" not in html
    for name in ("status.svg", "uptime.svg"):
        code, svg, headers = await get("badge", f"badge/{hidden['id']}/{name}",
                                       route={"monitor_id": hidden["id"], "badge": name})
        assert code == 404 and "not found" in svg_text(svg_root(svg)) and headers["Cache-Control"] == "no-cache"
        for mid in (shown["id"], old_id):
            code, _, _ = await get("badge", f"badge/{mid}/{name}", route={"monitor_id": mid, "badge": name})
            assert code == 200, (mid, name)

    public.clear_cache()
    async with Store.open(settings) as store:
        await manage.update_monitor(store, hidden["id"], {"public": True})
    page = parse_page((await get("status_page", "status-page"))[1])
    assert sorted(m["name"] for m in page.monitors) == ["Marked", "Stored before", "Unmarked"]


async def test_a_new_install_shows_no_monitor(settings):
    async with Store.open(settings) as store:
        for n in range(3):
            mid = (await manage.create_monitor(store, {"kind": "website", "name": f"Site {n}",
                                                        "url": f"https://site{n}.example.com/"}))["id"]
            await store.commit_state("website", mid, {"status": "UP"}, "UP", None, [])
    status, html, _ = await get("status_page", "status-page")
    page = parse_page(html)
    assert status == 200 and page.monitors == [] and page.banner == "No public monitors yet"
    assert "public: true" in html  # the empty page says how a monitor gets on it


async def test_ten_concurrent_requests_after_the_cache_expired_build_the_page_once(settings, monkeypatch):
    from shared.web import status_page as page_module

    async with Store.open(settings) as store:
        await manage.create_monitor(store, {"kind": "website", "name": "Before", "url": "https://before.example.com/",
                                            "public": True})
    builds, reads = [], []
    build, read = page_module.status_page_model, page_module.live_states

    async def counted_build(store: Store, now: datetime | None = None) -> dict:
        builds.append(now)
        await asyncio.sleep(0.3)  # a slow build: every other request arrives while it runs
        return await build(store, now)

    async def counted_read(store: Store) -> list:
        reads.append(store)
        return await read(store)

    monkeypatch.setattr(page_module, "status_page_model", counted_build)
    monkeypatch.setattr(page_module, "live_states", counted_read)
    first = await get("status_page", "status-page")
    assert first[0] == 200 and (len(builds), len(reads)) == (1, 1)
    assert (await get("status_page", "status-page"))[1] == first[1] and len(builds) == 1  # cached

    async with Store.open(settings) as store:
        await manage.create_monitor(store, {"kind": "website", "name": "After", "url": "https://after.example.com/",
                                            "public": True})
    clock = time.monotonic
    monkeypatch.setattr(public, "time", SimpleNamespace(monotonic=lambda: clock() + page_module.PAGE_CACHE_SECONDS
                                                        + 1))  # the cached page has expired
    answers = await asyncio.gather(*(get("status_page", "status-page") for _ in range(10)))
    assert (len(builds), len(reads)) == (2, 2)  # one build (one read of the monitors) for the ten
    assert {status for status, _, _ in answers} == {200}
    assert len({html for _, html, _ in answers}) == 1  # all ten got the same page: the new one
    assert sorted(m["name"] for m in parse_page(answers[0][1]).monitors) == ["After", "Before"]


async def test_waiters_carry_on_when_the_request_building_the_page_is_cancelled():
    """Single flight without a single point of failure: the request that builds may be cancelled (its client went
    away); the requests waiting for it then build once among themselves instead of failing with it. A waiter that is
    cancelled itself is cancelled, and the build goes on for the others."""
    builds: list[int] = []

    async def make() -> str:
        builds.append(len(builds) + 1)
        if len(builds) == 1:
            await asyncio.Event().wait()  # never finishes: its request is cancelled below
        await asyncio.sleep(0.1)
        return f"page {len(builds)}"

    builder = asyncio.create_task(public.cached(("page",), 30, make))
    await asyncio.sleep(0.01)
    waiters = [asyncio.create_task(public.cached(("page",), 30, make)) for _ in range(5)]
    await asyncio.sleep(0.01)
    builder.cancel()
    await asyncio.sleep(0.01)
    waiters[-1].cancel()  # this one goes away itself while the second build (by the first waiter) runs
    with pytest.raises(asyncio.CancelledError):
        await builder
    with pytest.raises(asyncio.CancelledError):
        await waiters[-1]
    assert await asyncio.gather(*waiters[:-1]) == ["page 2"] * 4
    assert builds == [1, 2]  # one build after the cancelled one, for all of them
    assert await public.cached(("page",), 30, make) == "page 2" and builds == [1, 2]  # and cached


def test_an_ipv6_address_keeps_its_brackets_in_the_url_shown():
    from shared.web.status_page import display_url

    assert display_url("http://[2001:db8::1]:8080/x") == "http://[2001:db8::1]:8080/x"
    assert display_url("https://user:pw@[2001:DB8::2]/health?token=t#f") == "https://[2001:db8::2]/health"
    assert display_url("http://[::1]/") == "http://[::1]/"
    assert display_url("https://192.0.2.7:8443/a?b=c") == "https://192.0.2.7:8443/a"  # IPv4 and names as before
    assert display_url("https://Shop.Example.com/") == "https://shop.example.com/"


def svg_root(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert int(root.get("width")) > 20 and int(root.get("height")) == 20
    return root


def svg_text(root: ET.Element) -> str:
    return " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))


async def test_badges_are_svg_and_only_for_public_monitors(settings):
    async with Store.open(settings) as store:
        ids = await seed_demo(store)
        odd = (await manage.create_monitor(store, {"kind": "website", "name": "Odd <&> \"quotes\"",
                                                    "url": "https://odd.example.com/", "public": True}))["id"]

    async def badge(mid: str, name: str, window: str | None = None) -> tuple[int, ET.Element, dict]:
        status, svg, headers = await get("badge", f"badge/{mid}/{name}", params={"window": window} if window else None,
                                         route={"monitor_id": mid, "badge": name})
        assert headers["Content-Type"].startswith("image/svg+xml")
        return status, svg_root(svg), headers

    status, root, headers = await badge(ids["Web shop"], "status.svg")
    assert status == 200 and svg_text(root).split()[-1] == "operational" and "max-age=60" in headers["Cache-Control"]
    assert (await badge(ids["Payment gateway"], "status.svg"))[1].find(
        "{http://www.w3.org/2000/svg}title").text == "status: down"
    status, root, _ = await badge(ids["Web shop"], "uptime.svg", "30d")
    label = svg_text(root)
    assert status == 200 and "uptime 30d" in label and label.split()[-1].endswith("%")
    value = float(label.split()[-1].rstrip("%"))
    assert 99.0 < value < 100.0  # one 160-minute outage in 30 days, and a few single failures
    status, root, _ = await badge(ids["Documentation"], "uptime.svg", "90d")
    assert status == 200
    status, root, _ = await badge(odd, "uptime.svg", "24h")
    assert status == 200 and svg_text(root).split()[-2:] == ["no", "data"]
    status, root, _ = await badge(odd, "status.svg")
    assert status == 200  # a name with markup characters never reaches the SVG (only labels do)

    for mid, name in ((ids["Internal admin"], "status.svg"), (ids["Internal admin"], "uptime.svg"),
                      ("0" * 32, "status.svg"), ("nope", "uptime.svg"), (ids["Web shop"], "other.svg")):
        status, root, headers = await badge(mid, name)
        assert status == 404 and "not found" in svg_text(root) and headers["Cache-Control"] == "no-cache"
    status, root, _ = await badge(ids["Web shop"], "uptime.svg", "1y")
    assert status == 422 and "24h" in svg_text(root)


async def test_anonymous_page_and_badges_but_keyed_metrics_through_the_local_host(storage, env):
    import aiohttp

    import function_app
    from devhost import LocalHost, read_host_json

    port = free_port()
    host = LocalHost(function_app.app, read_host_json(), port, function_key=KEY)
    await host.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.get("/api/status-page") as resp:
                assert resp.status == 200 and "No public monitors yet" in await resp.text()
            async with http.get(f"/api/badge/{'0' * 32}/status.svg") as resp:
                assert resp.status == 404 and resp.content_type == "image/svg+xml"
            async with http.get("/api/v1/metrics/prometheus") as resp:
                assert resp.status == 401
            async with http.get("/api/v1/metrics/prometheus", headers={"x-functions-key": KEY}) as resp:
                assert resp.status == 200 and "# TYPE monitor_status gauge" in await resp.text()
            async with http.get("/api/v1/status") as resp:
                assert resp.status == 401
    finally:
        await host.stop()
