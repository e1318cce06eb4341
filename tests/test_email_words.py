"""The words e-mails, results and the API share: failures put into plain words by shared/outbound/errors.py
(against real failures: real TLS servers with real certificates, a refused port, a name that does not resolve) and
how long / how many days, from shared/text.py."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from targets import _CA, refused_port, targets  # noqa: F401 - fixtures
from test_website import NoSuchName

from shared.outbound.errors import describe, http_status, plain
from shared.text import Window, days_left, duration, expires_in, span


async def failure(url: str, trust: bool = True, timeout: float = 5, **request: object) -> str | None:
    """describe() of what aiohttp raises for this request (with the targets' CA trusted unless trust=False; no DNS
    query leaves the machine: .invalid names do not exist)."""
    context = ssl.create_default_context()
    if trust:
        _CA.configure_trust(context)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=NoSuchName())) as session:
        try:
            async with session.get(url, ssl=context, timeout=aiohttp.ClientTimeout(total=timeout), **request):
                pass
        except Exception as error:
            return describe(error, timeout)
    raise AssertionError(f"{url} did not fail")


async def test_an_expired_certificate_is_told_as_such(targets):
    expired = targets.https(days_valid=-0.5)  # valid from 1 day ago until 12 hours ago, from a trusted CA
    assert await failure(expired.url) == "TLS certificate rejected: certificate has expired"


async def test_an_unknown_authority_and_a_wrong_host_name_are_told_without_openssl_codes(targets):
    site = targets.https(days_valid=30)
    assert await failure(site.url, trust=False) == \
        "TLS certificate rejected: certificate issued by an unknown authority (not trusted)"
    assert await failure(site.url, server_hostname="shop.example") == \
        "TLS certificate rejected: certificate is not valid for this host name"


async def test_refused_unresolvable_and_silent_are_told_in_plain_words(targets):
    port = refused_port()
    assert await failure(f"http://127.0.0.1:{port}/") == f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert await failure("http://nonexistent.invalid/") == "cannot resolve nonexistent.invalid: name not found"
    slow = targets.http(delay=1.0)
    assert await failure(slow.url, timeout=0.2) == "no answer within 0.2 s"


@pytest.mark.parametrize(("stored", "words"), [
    # what older versions (and Python's own messages) put into results, events and delivery errors
    ("cannot connect to 10.0.0.1:80: [Errno 111] Connect call failed ('10.0.0.1', 80)",
     "cannot connect to 10.0.0.1:80: connection refused"),
    ("Multiple exceptions: [Errno 111] Connect call failed ('::1', 443, 0, 0), "
     "[Errno 111] Connect call failed ('127.0.0.1', 443)", "connection refused"),
    ("TLS failed: [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", "TLS failed: wrong version number"),
    ("TLS certificate rejected: certificate has expired (CERTIFICATE_VERIFY_FAILED)",
     "TLS certificate rejected: certificate has expired"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)",
     "self-signed certificate"),
    ("[Errno -2] Name or service not known", "name not found"),
    ("[Errno 104] Connection reset by peer", "connection reset by peer"),
    ("HTTP 500 Internal Server Error (expected 200-399)", "HTTP 500 Internal Server Error (expected 200-399)"),
])
def test_stored_error_texts_read_in_plain_words(stored, words):
    assert plain(stored) == words


def test_http_answers_are_named_by_their_standard_phrase():
    assert http_status(503) == "HTTP 503 Service Unavailable"
    assert http_status(404) == "HTTP 404 Not Found"
    assert http_status(599) == "HTTP 599"


@pytest.mark.parametrize(("seconds", "words"), [
    (0, "0 s"), (42, "42 s"), (89, "89 s"), (90, "1 min 30 s"), (252, "4 min 12 s"), (300, "5 min"),
    (599, "9 min 59 s"), (600, "10 min"), (2890, "48 min"), (5410, "1 h 30 min"), (7200, "2 h"),
    (3 * 86400 + 4 * 3600, "3 days 4 h"), (None, "unknown"),
])
def test_one_duration_formatter(seconds, words):
    assert duration(seconds) == words


def test_outage_windows_read_the_same_in_every_part_of_a_message():
    start = datetime(2024, 12, 1, 9, 14, 3, tzinfo=UTC)
    window = Window(start, start + timedelta(seconds=252))
    assert window.after("down") == "after 4 min 12 s (down 09:14-09:18 UTC)"
    assert span(start, start + timedelta(seconds=6)) == "09:14:03-09:14:09 UTC"  # within one minute
    late = datetime(2024, 11, 30, 23, 50, tzinfo=UTC)
    assert span(late, late + timedelta(minutes=20)) == "30 Nov 23:50 - 1 Dec 00:10 UTC"


@pytest.mark.parametrize(("left", "days", "words"), [
    (timedelta(days=2.97), 3, "expires in 3 days"),  # any part of a day is a day
    (timedelta(days=3), 3, "expires in 3 days"),
    (timedelta(days=1), 1, "expires in 1 day"),
    (timedelta(hours=5), 1, "expires in 1 day"),
    (timedelta(seconds=-1), 0, "has expired"),
    (timedelta(days=-2.5), -2, "has expired"),
])
def test_days_left_are_counted_as_a_person_counts_them(left, days, words):
    now = datetime(2024, 12, 1, 9, 0, tzinfo=UTC)
    assert days_left(now + left, now) == days
    assert expires_in(days) == words
