"""`body_regex` runs on RE2 (linear time), never on Python's backtracking `re`: a catastrophic pattern against a real
page on 127.0.0.1 finishes at once, and what RE2 cannot do (backreferences, lookarounds) is refused when the monitor
is written — a 422 naming body_regex — while a stored definition that holds one still loads and checks as ERROR."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from apphelp import call
from pydantic import ValidationError
from targets import site, targets  # noqa: F401 - fixtures

import monitors
from monitors import website
from monitors.base import CheckResult
from shared.engine import check_context

CATASTROPHIC = "(a+)+$"  # with backtracking: 2**n steps for n a's that end in a non-match
EVIL_BODY = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"  # 41 a's: hours with `re`


def spec(url: str, **fields: Any) -> website.Config:
    return monitors.parse_spec({"kind": "website", "name": "Shop", "url": url, "attempts": 1,
                                "timeout_seconds": 5, **fields})


@pytest.fixture
async def ctx(settings):
    async with check_context(settings, None) as made:
        yield made


@pytest.fixture
async def check(ctx):
    async def run(url: str, **fields: Any) -> CheckResult:
        return await website.check(spec(url, **fields), ctx)

    return run


async def timed(check: Any, *args: Any, **fields: Any) -> tuple[CheckResult, float]:
    """The check's result and the CPU time the process spent on it (lenient on a loaded machine)."""
    started = time.process_time()
    result = await check(*args, **fields)
    return result, time.process_time() - started


# ------------------------------------------------------------------------------------------- check time


async def test_a_catastrophic_pattern_against_a_real_page_finishes_quickly_and_is_down(check, site):
    site.set(body=EVIL_BODY, content_type="text/plain; charset=utf-8")
    result, cpu = await timed(check, site.url, body_regex=CATASTROPHIC)
    assert cpu < 0.5, f"the regex search took {cpu:.2f} s of CPU"
    assert result.outcome == "down"
    assert result.error == "response does not match /(a+)+$/"
    assert site.hits == 1


async def test_a_catastrophic_pattern_against_a_full_size_page_stays_linear(check, site):
    """The largest body a check reads (1 MiB) costs milliseconds, not an exponential search."""
    site.set(body="a" * (website.MAX_BODY_BYTES - 1) + "!", content_type="text/plain; charset=utf-8")
    result, cpu = await timed(check, site.url, body_regex=CATASTROPHIC)
    assert cpu < 1.0, f"the regex search took {cpu:.2f} s of CPU"
    assert result.outcome == "down"
    assert result.error == "response does not match /(a+)+$/"


async def test_a_large_body_is_searched_off_the_event_loop(check, site, monkeypatch):
    """Linear is not free: up to ~0.3 s of CPU for 1 MiB and a pattern RE2 cannot run as a DFA. That search runs in a
    worker thread (RE2 releases the GIL), so the other checks of the tick go on; a small page is searched inline."""
    loop_thread = threading.get_ident()
    searched: list[tuple[int, int]] = []
    compiled = website.body_pattern

    class Spy:
        def __init__(self, pattern: Any) -> None:
            self.pattern = pattern

        def search(self, text: str) -> Any:
            searched.append((len(text), threading.get_ident()))
            return self.pattern.search(text)

    monkeypatch.setattr(website, "body_pattern", lambda pattern: Spy(compiled(pattern)))
    assert (await check(site.url, body_regex=r"build \d+")).outcome == "up"
    site.set(body="ab" * (website.MAX_BODY_BYTES // 2 - 16) + " build 4711")
    assert (await check(site.url, body_regex=r"build \d+")).outcome == "up"
    (small, small_thread), (large, large_thread) = searched
    assert small < website.REGEX_INLINE_CHARS < large
    assert small_thread == loop_thread and large_thread != loop_thread


async def test_re2_matches_the_patterns_people_write(check, site):
    assert (await check(site.url, body_regex=r"build \d+")).outcome == "up"
    assert (await check(site.url, body_regex=r"(?i)ALL SYSTEMS\s+operational")).outcome == "up"
    assert (await check(site.url, body_regex=r"<h1>(?P<status>[^<]+)</h1>")).outcome == "up"
    site.set(body="<p>Übergröße lieferbar</p>")
    assert (await check(site.url, body_regex=r"Übergr.ße")).outcome == "up"


async def test_a_pattern_is_compiled_once_and_reused(check, site):
    website.body_pattern.cache_clear()
    for _ in range(3):
        assert (await check(site.url, body_regex=r"build \d{4}")).outcome == "up"
    info = website.body_pattern.cache_info()
    assert (info.misses, info.hits) == (1, 5)  # compiled when first validated; 2 more validations and 3 checks reuse it


# --------------------------------------------------------------------------------------- definitions


@pytest.mark.parametrize(("pattern", "construct"), [
    (r"(a)\1", r"\1"),
    (r"(?P<x>a)(?P=x)", "(?P"),
    (r"foo(?=bar)", "(?="),
    (r"(?<!x)foo", "(?<!"),
])
def test_patterns_re2_cannot_run_are_refused_saying_what_is_not_supported(pattern, construct):
    with pytest.raises(ValidationError) as caught:
        spec("https://example.com/", body_regex=pattern)
    (error,) = caught.value.errors()
    assert error["loc"][-1] == "body_regex"
    assert "not supported" in error["msg"] and "backreferences" in error["msg"] and construct in error["msg"]


def test_a_broken_pattern_is_still_an_invalid_regular_expression():
    with pytest.raises(ValidationError) as caught:
        spec("https://example.com/", body_regex="(unclosed")
    (error,) = caught.value.errors()
    assert error["loc"][-1] == "body_regex"
    assert "invalid regular expression: missing ): (unclosed" in error["msg"]
    assert "not supported" not in error["msg"]


async def test_a_backreference_is_a_422_naming_body_regex(settings):
    status, body = await call("monitors", "POST", "v1/monitors", {
        "kind": "website", "name": "Shop", "url": "http://127.0.0.1:9/", "body_regex": r"(a)\1"})
    assert status == 422, body
    (detail,) = body["error"]["details"]
    assert detail["field"] == "body_regex"
    assert "backreferences" in detail["message"] and "not supported" in detail["message"]
    assert await call("monitors", "GET", "v1/monitors") == (200, {"items": []})  # nothing was stored


async def test_a_stored_definition_with_an_unsupported_pattern_loads_and_checks_as_error(ctx, site):
    """Written before RE2: it must not make the monitor unreadable; its check says why it cannot run."""
    stored = json.dumps({"kind": "website", "id": "c" * 32, "name": "Old", "url": site.url, "attempts": 1,
                         "timeout_seconds": 5, "body_regex": r"(a)\1"})
    cfg = monitors.from_entity({"kind": "website", "spec": stored})
    assert cfg.body_regex == r"(a)\1"
    result = await website.check(cfg, ctx)
    assert result.outcome == "error"
    assert result.error.startswith(r"body_regex (a)\1: ") and "not supported" in result.error
