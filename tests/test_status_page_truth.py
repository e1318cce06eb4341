"""The status page tells the truth at a glance (issue 13, item 21), through the real function against real Azurite:

- the uptime figure says what period it covers: "since 14:37 UTC" five minutes after a monitor was made, "since
  22 Nov" when the data starts inside the 90 days, "90 days" only when there are 90 days of data;
- failed checks are marked on the sparkline, also when every check failed (and checker errors, in grey);
- monitors with a problem come first, in their group, and their group before the others;
- a title (STATUS_PAGE_TITLE), a logo (STATUS_PAGE_LOGO_URL: https or a path on this site, escaped, never fetched
  by the app) and groups (a monitor's `group`) can be set; a bad logo URL or group is refused, naming it.
"""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime, timedelta

import pytest
from apphelp import call, functions, request

from shared import manage
from shared.settings import SettingsError, get_settings
from shared.storage import Store, hour_floor
from shared.web import cache


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear_cache()
    yield
    cache.clear_cache()


async def page() -> tuple[str, dict[str, str]]:
    response = await functions()["status_page"](request("GET", "status-page"))
    assert response.status_code == 200
    return response.get_body().decode(), dict(response.headers)


def sections(html: str) -> dict[str, str]:
    """monitor name → its <section> (in page order)."""
    out = {}
    for body in re.findall(r'<section class="monitor".*?</section>', html, re.S):
        name = re.search(r'<span class="name grow">(.*?)</span>', body, re.S)
        assert name, body
        out[name.group(1).strip()] = body
    return out


def uptime_text(section: str) -> str:
    match = re.search(r'<span class="uptime"[^>]*><b>(.*?)</b> <span class="period">(.*?)</span>', section, re.S)
    assert match, section
    return f"{match.group(1)} {match.group(2)}"


def groups(html: str) -> list[tuple[str, list[str]]]:
    """[(group title, [monitor names in order])] in page order."""
    out = []
    for title, body in re.findall(r"<h2>([^<]*)</h2>\s*<div class=\"card\">(.*?)(?=<h2>|<footer>)", html, re.S):
        if title != "Open incidents":
            out.append((title, list(sections(body))))
    return out


async def website(store: Store, name: str, status: str | None = None, **extra: object) -> str:
    spec = {"kind": "website", "name": name, "url": f"https://{name.lower().replace(' ', '-')}.example.com/",
            "public": True, **extra}
    mid = (await manage.create_monitor(store, spec))["id"]
    if status:
        await store.commit_state("website", mid, {"status": status, "since": datetime.now(UTC).isoformat(),
                                                  **({"down_since": datetime.now(UTC).isoformat()}
                                                     if status == "DOWN" else {})}, status, None, [])
    return mid


def result(store: Store, mid: str, at: datetime, outcome: str, latency: float | None = 100.0) -> dict:
    return store.result_entity(mid, at, {k: v for k, v in {"outcome": outcome, "checked_at": at, "trigger": "timer",
                                                           "latency_ms": latency if outcome != "down" else None,
                                                           "status": "UP"}.items() if v is not None})


def rollup(count: int, up: int) -> dict:
    return {"count": count, "up": up, "degraded": 0, "latency_sum": 100.0 * up, "latency_count": up,
            "latency_min": 80.0, "latency_max": 120.0}


async def test_uptime_says_over_what_period_data_exists(settings):
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    async with Store.open(settings) as store:
        fresh = await website(store, "Fresh", "UP")
        created = (await manage.get_monitor(store, fresh))["created_at"]
        await store.write_results([result(store, fresh, now - timedelta(minutes=n), "up") for n in range(5)])
        recent = await website(store, "Ten days", "UP")
        first = today - timedelta(days=9)
        await store.write_rollups(recent, {first + timedelta(days=d, hours=12): rollup(60, 60) for d in range(9)})
        old = await website(store, "Quarter", "UP")
        await store.write_rollups(old, {today - timedelta(days=89, hours=-1): rollup(60, 59),
                                        today - timedelta(days=3, hours=-5): rollup(60, 60)})
        await website(store, "Never", "UP")
        await store.set_kind_meta("_rollup", rolled_until=hour_floor(now))
    html, _ = await page()
    shown = sections(html)
    since = datetime.fromisoformat(created)
    assert uptime_text(shown["Fresh"]) == f"100% uptime since {since:%H:%M} UTC"  # not "100%, 90 days"
    assert uptime_text(shown["Ten days"]) == f"100% uptime since {first.day} {first:%b}"
    assert uptime_text(shown["Quarter"]) == "99.16% uptime, 90 days"  # 119 of 120 checks, data from day one
    assert uptime_text(shown["Never"]) == "– no checks yet"
    assert f"since {first.day} {first:%b} {first.year}, the first day with checks (540 checks)" in shown["Ten days"]


async def test_failed_checks_are_marked_on_the_sparkline_even_when_all_failed(settings):
    now = datetime.now(UTC)
    async with Store.open(settings) as store:
        dead = await website(store, "All failed", "DOWN")
        await store.write_results([result(store, dead, now - timedelta(minutes=n), "down") for n in range(6)])
        mixed = await website(store, "Mixed", "UP")
        await store.write_results([result(store, mixed, now - timedelta(minutes=n), "down" if n in (1, 3) else "up")
                                   for n in range(6)])
        broken = await website(store, "Checker broken", "ERROR")
        await store.write_results([result(store, broken, now - timedelta(minutes=n), "error", None)
                                   for n in range(3)])
        single = await website(store, "One check", "UP")
        await store.write_results([result(store, single, now, "up", 42.0)])
    html, _ = await page()
    shown = sections(html)

    dead_marks = re.findall(r'<rect class="fail" x="[\d.]+" y="0" width="2.5" height="36"', shown["All failed"])
    assert len(dead_marks) == 6 and "<polyline" not in shown["All failed"]  # today: no sparkline at all
    assert "all 6 checks failed" in shown["All failed"]

    assert "<polyline" in shown["Mixed"]
    assert len(re.findall(r'<rect class="fail"[^>]*height="6"', shown["Mixed"])) == 2
    assert "2 failed" in shown["Mixed"]  # the tooltip counts them

    assert len(re.findall(r'<rect class="error"', shown["Checker broken"])) == 3
    assert "not checked" in shown["Checker broken"] and '<rect class="fail"' not in shown["Checker broken"]

    assert '<circle class="point"' in shown["One check"] and "last 42 ms" in shown["One check"]


async def test_monitors_with_a_problem_come_first_in_groups_that_come_first(settings):
    async with Store.open(settings) as store:
        await website(store, "A fine", "UP")
        await website(store, "C slow", "DEGRADED")
        await website(store, "D unreadable", "ERROR")
        await website(store, "E paused", "DOWN", enabled=False)  # paused: not a problem a visitor sees
        await website(store, "F new")  # pending
        await website(store, "Z1 fine", "UP", group="Zeta")
        await website(store, "Z2 down", "DOWN", group="Zeta")
        await website(store, "Al fine", "UP", group="Alpha")
    html, _ = await page()
    assert groups(html) == [
        ("Zeta", ["Z2 down", "Z1 fine"]),  # a monitor down: the group and the monitor first
        ("Websites", ["D unreadable", "C slow", "A fine", "E paused", "F new"]),  # worst first, then by name
        ("Alpha", ["Al fine"]),
    ]


async def test_title_and_logo_are_settings_escaped_and_the_logo_is_never_fetched(settings, env):
    with socket.socket() as listener:  # where the logo "is": nothing may connect to it while the page is made
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        env(STATUS_PAGE_TITLE="Acme <Status> & Co", STATUS_PAGE_LOGO_URL=f"https://127.0.0.1:{port}/logo.png?v=1&s=2")
        async with Store.open(get_settings()) as store:
            await website(store, "Shop", "UP")
        html, headers = await page()
        with pytest.raises(TimeoutError):
            listener.accept()
    assert "<title>Acme &lt;Status&gt; &amp; Co</title>" in html and "<h1>Acme &lt;Status&gt; &amp; Co</h1>" in html
    assert f'<img class="logo" src="https://127.0.0.1:{port}/logo.png?v=1&amp;s=2" alt=""' in html
    assert "img-src data: https: 'self'" in headers["Content-Security-Policy"]  # the browser may load it

    cache.clear_cache()
    env(STATUS_PAGE_LOGO_URL="/static/logo.svg", STATUS_PAGE_TITLE="Status")
    html, _ = await page()
    assert 'src="/static/logo.svg"' in html and "<h1>Status</h1>" in html


@pytest.mark.parametrize("value", ["http://cdn.example.com/logo.png", "javascript:alert(1)", "//evil.example/x.png",
                                   "https://user:pw@cdn.example.com/logo.png", 'https://cdn.example.com/"onerror=x',
                                   "data:image/png;base64,AAAA", "logo.png", "https:///logo.png"])
def test_a_logo_url_that_is_not_https_or_a_path_is_refused_naming_the_setting(env, value):
    env(STATUS_PAGE_LOGO_URL=value)
    with pytest.raises(SettingsError, match="STATUS_PAGE_LOGO_URL: must be an https:// URL or a path"):
        get_settings()


def test_a_title_must_be_one_line(env):
    env(STATUS_PAGE_TITLE="Two\nlines")
    with pytest.raises(SettingsError, match="STATUS_PAGE_TITLE"):
        get_settings()


async def test_group_is_an_optional_field_checked_like_the_others(settings):
    base = {"kind": "website", "name": "Grouped", "url": "https://grouped.example.com/", "public": True}
    for bad, words in (("", "at least 1"), ("x" * 101, "at most 100"), (7, "string")):
        status, body = await call("monitors", "POST", "v1/monitors", {**base, "group": bad})
        assert status == 422, body
        (detail,) = body["error"]["details"]
        assert detail["field"] == "group" and words in detail["message"], detail
    status, made = await call("monitors", "POST", "v1/monitors", {**base, "group": "Shop"})
    assert status == 201 and made["group"] == "Shop"
    status, patched = await call("monitor", "PATCH", f"v1/monitors/{made['id']}", {"group": None},
                                 route={"monitor_id": made["id"]})
    assert status == 200 and patched["group"] is None
