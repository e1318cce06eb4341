"""The website check against real servers on 127.0.0.1 (tests/targets.py): what a user sees per check."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.resolver import ThreadedResolver
from pydantic import ValidationError
from targets import KEYWORD, refused_url, site, targets, tls_site, unresolvable_url  # noqa: F401 - fixtures

import monitors
from monitors import website
from monitors.base import CheckResult
from shared.engine import check_context
from shared.events import EventType
from shared.outbound import guard


class NoSuchName(ThreadedResolver):
    """DNS without the network: a name under .invalid (RFC 6761) does not exist, as a resolver answers it (the real
    resolver would ask a name server beyond loopback); other names resolve as usual (/etc/hosts for 127.0.0.1)."""

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        if host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return await super().resolve(host, port, family)


@pytest.fixture
def no_dns(monkeypatch):
    """The checks' resolver (behind the guard) answers without sending a DNS query."""
    monkeypatch.setattr(guard, "DefaultResolver", NoSuchName)


def spec(url: str, **fields: Any) -> website.Config:
    return monitors.parse_spec({"kind": "website", "name": "Shop", "url": url, "attempts": 1,
                                "timeout_seconds": 5, **fields})


@pytest.fixture
def settings(env):
    from shared.settings import get_settings

    return get_settings()


@pytest.fixture
async def check(settings):
    """check(url, **config) → CheckResult, through the app's own HTTP session."""
    async with check_context(settings, None) as ctx:

        async def run(url: str, **fields: Any) -> CheckResult:
            return await website.check(spec(url, **fields), ctx)

        yield run


# ---------------------------------------------------------------------------------------------- status


async def test_a_healthy_site_is_up_with_status_code_and_latency(check, site):
    result = await check(site.url)
    assert result.outcome == "up"
    assert result.error is None
    assert result.data["status_code"] == 200
    assert result.data["attempts"] == 1
    assert isinstance(result.latency_ms, float) and 0 < result.latency_ms < 2000
    assert "final_url" not in result.data  # no redirect happened
    assert site.hits == 1


async def test_a_server_error_is_down_with_a_readable_reason(check, site):
    site.set(status=500)
    result = await check(site.url)
    assert result.outcome == "down"
    assert result.error == "HTTP 500 Internal Server Error (expected 200-399)"
    assert result.data["status_code"] == 500


async def test_the_site_can_be_switched_between_up_and_down(check, site):
    outcomes = []
    for status in (200, 500, 200):
        site.set(status=status)
        outcomes.append((await check(site.url)).outcome)
    assert outcomes == ["up", "down", "up"]


@pytest.mark.parametrize(("served", "expected", "outcome", "words"), [
    (404, ["404"], "up", None),
    (404, ["4xx"], "up", None),
    (404, ["200", "400-404"], "up", None),
    (404, ["200-299"], "down", "HTTP 404 Not Found"),
    (204, ["2xx"], "up", None),
    (200, ["3xx"], "down", "HTTP 200 OK"),
    (503, ["200-399", "500-502"], "down", "HTTP 503 Service Unavailable"),
    (599, ["2xx"], "down", "HTTP 599"),  # no standard phrase: the code alone, never the server's own words
])
async def test_expected_status_codes_ranges_and_classes(check, site, served, expected, outcome, words):
    site.set(status=served)
    result = await check(site.url, expected_status=expected)
    assert result.outcome == outcome
    if outcome == "down":
        assert result.error == f"{words} (expected {', '.join(expected)})"


# ------------------------------------------------------------------------------------------------ body


async def test_keyword_present_is_up_and_missing_is_down(check, site):
    assert (await check(site.url, keyword=KEYWORD)).outcome == "up"
    missing = await check(site.url, keyword="Out of stock")
    assert missing.outcome == "down"
    assert missing.error == 'response does not contain "Out of stock"'


async def test_keyword_near_the_end_of_a_large_page_is_found(check, site):
    site.set(body="<p>" + "filler " * 90_000 + "</p><footer>All systems go</footer>")  # ~630 KB
    assert (await check(site.url, keyword="All systems go")).outcome == "up"


async def test_keyword_absent_inverts_the_keyword(check, site):
    assert (await check(site.url, keyword="Fatal error", keyword_absent=True)).outcome == "up"
    site.set(body="<h1>Fatal error</h1> in line 3")
    found = await check(site.url, keyword="Fatal error", keyword_absent=True)
    assert found.outcome == "down"
    assert found.error == 'response contains "Fatal error"'


async def test_body_regex(check, site):
    assert (await check(site.url, body_regex=r"build \d+")).outcome == "up"
    result = await check(site.url, body_regex=r"version \d+")
    assert result.outcome == "down"
    assert result.error == r"response does not match /version \d+/"


async def test_the_keyword_is_found_in_the_declared_charset(check, site):
    site.set(body="<p>Übergröße lieferbar</p>".encode("latin-1"), content_type="text/html; charset=iso-8859-1")
    assert (await check(site.url, keyword="Übergröße")).outcome == "up"


@pytest.mark.parametrize("charset", ["utf8mb4", "base64", "none"])
async def test_a_bogus_charset_does_not_break_the_keyword_check(check, site, charset):
    """Sites do send nonsense like charset=utf8mb4; the check must still judge the page, not crash."""
    site.set(content_type=f"text/html; charset={charset}")
    assert (await check(site.url, keyword=KEYWORD)).outcome == "up"
    missing = await check(site.url, keyword="Out of stock")
    assert missing.outcome == "down"
    assert "does not contain" in missing.error


# ---------------------------------------------------------------------------------------------- timing


async def test_slower_than_max_response_ms_is_degraded(check, site):
    site.set(delay=0.3)
    result = await check(site.url, max_response_ms=100)
    assert result.outcome == "degraded"
    assert result.latency_ms >= 300
    assert result.error.startswith("responded in ") and result.error.endswith(" ms (limit 100 ms)")
    site.set(delay=0)
    assert (await check(site.url, max_response_ms=1000)).outcome == "up"


async def test_a_site_slower_than_the_timeout_is_down_timed_out(check, site):
    site.set(delay=1.5)
    started = time.perf_counter()
    result = await check(site.url, timeout_seconds=0.3)
    assert time.perf_counter() - started < 1.2  # gave up at the timeout, did not wait for the answer
    assert result.outcome == "down"
    assert result.error == "no answer within 0.3 s"


# ------------------------------------------------------------------------------------------- redirects


async def test_a_redirect_loop_is_down(check, site):
    site.set(redirect="loop")
    result = await check(site.url_for("/a"))
    assert result.outcome == "down"
    assert result.error == "too many redirects (redirect loop?)"
    assert site.hits == 10  # aiohttp gives up at the 10th redirect answer


async def test_redirects_are_followed_by_default(check, site):
    site.set(redirect="once")
    result = await check(site.url_for("/old"))
    assert result.outcome == "up"
    assert result.data["status_code"] == 200
    assert result.data["final_url"] == site.url_for("/landed")
    assert site.paths == ["/old", "/landed"]


async def test_without_following_redirects_a_3xx_is_accepted_by_the_default_range(check, site):
    site.set(redirect="once")
    result = await check(site.url_for("/old"), follow_redirects=False)
    assert result.outcome == "up"
    assert result.data["status_code"] == 302
    assert site.paths == ["/old"]
    strict = await check(site.url_for("/old"), follow_redirects=False, expected_status=["200"])
    assert strict.outcome == "down"
    assert strict.error == "HTTP 302 Found (expected 200)"


# ------------------------------------------------------------------------------------------ connection


async def test_a_refused_port_is_down_cannot_connect(check, refused_url):
    result = await check(refused_url)
    assert result.outcome == "down"
    port = refused_url.rsplit(":", 1)[1].strip("/")
    assert result.error == f"cannot connect to 127.0.0.1:{port}: connection refused"


async def test_an_unresolvable_host_is_down_cannot_resolve(no_dns, check, unresolvable_url):
    result = await check(unresolvable_url)
    assert result.outcome == "down"
    assert result.error == "cannot resolve nonexistent.invalid: name not found"


# ------------------------------------------------------------------------------------------------- TLS


async def test_an_untrusted_certificate_is_down_with_a_tls_error(check, tls_site):
    result = await check(tls_site.url)
    assert result.outcome == "down"
    assert result.error == "TLS certificate rejected: certificate issued by an unknown authority (not trusted)"
    assert "cert_days_left" not in result.data


async def test_without_verification_the_site_is_up_and_the_expiry_is_reported(check, tls_site):
    result = await check(tls_site.url, verify_tls=False)
    assert result.outcome == "up"
    assert result.data["status_code"] == 200
    assert result.data["cert_days_left"] in (2, 3)
    expires = result.data["cert_expires_at"]
    assert abs(expires - (datetime.now(UTC) + timedelta(days=3))) < timedelta(minutes=5)


async def test_the_expiry_is_reported_for_head_requests_too(check, tls_site):
    """A HEAD answer has no body, so aiohttp lets go of the connection at once; the expiry must survive."""
    result = await check(tls_site.url, verify_tls=False, method="HEAD")
    assert result.outcome == "up"
    assert result.data["cert_days_left"] in (2, 3)


async def test_a_certificate_expiring_within_the_warning_window_raises_one_warning(check, tls_site):
    cfg = spec(tls_site.url, verify_tls=False, cert_warning_days=14, id="ab" * 16)
    result = await check(tls_site.url, verify_tls=False, cert_warning_days=14)
    now = datetime.now(UTC)
    first = website.evaluate(cfg, {}, result, now)
    warnings = [e for e in first.events if e.type == EventType.CERTIFICATE_EXPIRING]
    assert len(warnings) == 1
    assert warnings[0].severity == "warning"
    assert warnings[0].details["days_left"] == 3  # 3 days less the few seconds since the target started: still 3
    assert f"The TLS certificate of {tls_site.url} expires in 3 days (" in warnings[0].message
    again = website.evaluate(cfg, first.state, result, now + timedelta(minutes=5))
    assert not [e for e in again.events if e.type == EventType.CERTIFICATE_EXPIRING]  # once per certificate
    relaxed = spec(tls_site.url, verify_tls=False, cert_warning_days=1, id="ab" * 16)
    assert not website.evaluate(relaxed, {}, result, now).events


def cert_warnings(cfg: website.Config, result: CheckResult, days: list[float],
                  state: dict | None = None) -> tuple[list[tuple[int, str, str]], dict]:
    """Evaluate `result` at each of these remaining days before its certificate's expiry: the warnings, in order."""
    state, told = dict(state or {}), []
    expiry = result.data["cert_expires_at"]
    for left in days:
        evaluation = website.evaluate(cfg, state, result, expiry - timedelta(days=left))
        state = evaluation.state
        told += [(e.details["days_left"], e.severity, e.message) for e in evaluation.events
                 if e.type == EventType.CERTIFICATE_EXPIRING]
    return told, state


async def test_certificate_warnings_repeat_at_7_3_and_1_days_left_once_each(check, targets):
    """Days are counted as a person counts them (any part of a day is a day: 2.97 days left is "3 days"), each
    stage is told once per certificate, and a jump over stages is one warning, not several."""
    site = targets.https(days_valid=20)
    cfg = spec(site.url, verify_tls=False, cert_warning_days=14, id="cd" * 16)
    result = await check(site.url, verify_tls=False)
    told, state = cert_warnings(cfg, result, [15, 13.2, 12, 6.9, 6.5, 4, 2.97, 2.5, 1.5, 0.4, 0.1, -0.1, -3])
    assert [(days, severity) for days, severity, _ in told] == [
        (14, "warning"), (7, "warning"), (3, "warning"), (1, "critical"), (0, "critical")]
    words = [message.split(site.url, 1)[1] for _, _, message in told]
    assert [w.split(" (")[0] for w in words] == [" expires in 14 days", " expires in 7 days", " expires in 3 days",
                                                 " expires in 1 day", " has expired"]
    assert state["cert_warned_days"] == 0

    late, _ = cert_warnings(cfg, result, [2.2, 1.9, 0.5])  # first seen 3 days before: one warning, then 1 day
    assert [days for days, _, _ in late] == [3, 1]

    renewed = CheckResult("up", 12.0, None, {**result.data, "cert_expires_at": result.data["cert_expires_at"]
                                             + timedelta(days=90)})
    again, _ = cert_warnings(cfg, renewed, [10, 6.2], state)  # a new certificate: its own warnings
    assert [days for days, _, _ in again] == [10, 7]

    narrow = spec(site.url, verify_tls=False, cert_warning_days=5, id="cd" * 16)
    assert [d for d, _, _ in cert_warnings(narrow, result, [6, 4.5, 3, 2, 1, 0.5])[0]] == [5, 3, 1]

    # warned by a version without reminders: no second warning at once, the next at the next stage
    legacy = {"status": "UP", "fails": 0, "oks": 1, "cert_warned_for": result.data["cert_expires_at"].isoformat()}
    assert [d for d, _, _ in cert_warnings(cfg, result, [5, 4, 2.5], legacy)[0]] == [3]


# -------------------------------------------------------------------------------------------- attempts


async def test_a_flaky_site_that_recovers_within_the_attempts_is_up(check, site):
    site.set(fail_next=2)
    result = await check(site.url, attempts=3)
    assert result.outcome == "up"
    assert result.data["attempts"] == 3
    assert site.hits == 3


async def test_a_site_failing_every_attempt_is_down_after_all_attempts(check, site):
    site.set(fail_next=5)
    result = await check(site.url, attempts=2)
    assert result.outcome == "down"
    assert result.data["attempts"] == 2
    assert result.error == "HTTP 500 Internal Server Error (expected 200-399)"
    assert site.hits == 2


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(("fields", "field", "text"), [
    ({"url": "ftp://example.com/"}, "url", "must start with http:// or https://"),
    ({"url": "example.com"}, "url", "must start with http:// or https://"),
    ({"url": "http://a..b/"}, "url", "invalid host name"),
    ({"url": "http://example.com:99999/"}, "url", "invalid port"),
    ({"body_regex": "(unclosed"}, "body_regex", "invalid regular expression"),
    ({"expected_status": ["20x"]}, "expected_status", "is not a status code"),
    ({"expected_status": ["299-200"]}, "expected_status", "range end is below its start"),
    ({"headers": {"X-Trace": "a\x00b"}}, "headers", "invalid value for header"),
    ({"headers": {"Bad Name": "x"}}, "headers", "invalid header name"),
    ({"interval_seconds": 30}, "interval_seconds", "greater than or equal to 60"),
    ({"interval_seconds": 3601}, "interval_seconds", "less than or equal to 3600"),
    ({"cron": "every minute"}, "cron", "valid 5-field cron"),
    ({"cron": "*/5 * * * *", "interval_seconds": 300}, None, "give interval_seconds or cron, not both"),
])
def test_invalid_definitions_are_rejected_naming_the_field(fields, field, text):
    data = {"kind": "website", "name": "Shop", "url": "https://example.com/", **fields}
    with pytest.raises(ValidationError) as caught:
        monitors.parse_spec(data)
    errors = caught.value.errors()
    assert len(errors) == 1
    if field is not None:  # with several kinds registered, pydantic puts the union's tag ("website") first
        assert next(p for p in errors[0]["loc"] if p != "website") == field
    assert text in errors[0]["msg"]


def test_a_valid_definition_gets_the_documented_defaults():
    cfg = monitors.parse_spec({"kind": "website", "name": "Shop", "url": "https://Example.com"})
    assert cfg.interval_seconds == 300 and cfg.cron is None
    assert cfg.expected_status == ["200-399"]
    assert (cfg.attempts, cfg.failure_threshold, cfg.success_threshold) == (3, 3, 1)
    assert '"url":"https://example.com/"' in cfg.unique_keys()[0]  # what is checked, the URL normalised
    assert monitors.from_entity({"kind": "website", "spec": monitors.to_entity_spec(cfg)}) == cfg
