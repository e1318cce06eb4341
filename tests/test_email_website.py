"""Website e-mails a person can act on, through the real pipeline: a site on 127.0.0.1 (tests/targets.py), the
engine (run-now: check, evaluate, settle, publish to the Azurite queue), the queue-triggered delivery function, and
the real SMTP server (STARTTLS + AUTH) — asserting on the received MIME message's subject, text and HTML parts.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from targets import refused_port, site, targets  # noqa: F401 - fixtures
from test_email import ALICE, Host, publish, setup

import monitors
from shared.engine import run_monitor
from shared.events import Event, EventType
from shared.storage import EVENTS_QUEUE, Store, unique_row
from tests.smtp_server import SmtpServer, smtp, smtp_ca  # noqa: F401 - fixtures

# internal names a recipient must never read: field names, the kind, event types, severities
INTERNAL = ("Latency ms", "latency_ms", "Kind", "website", "Event:", "MONITOR_", "Severity", "critical",
            "downtime_seconds", "Failures", "Connect call failed", "Errno", "_ssl.c", "CERTIFICATE_VERIFY_FAILED")


async def add_website(store: Store, url: str, **fields: Any) -> str:
    cfg = monitors.parse_spec({"kind": "website", "id": uuid.uuid4().hex, "name": "Shop", "url": url,
                               "attempts": 1, "timeout_seconds": 5, "recipients": [ALICE], **fields})
    await store.insert_monitor({"RowKey": cfg.id, "kind": "website", "name": cfg.name, "enabled": True,
                                "spec": monitors.to_entity_spec(cfg)},
                               [unique_row("website", key) for key in cfg.unique_keys()])
    return cfg.id or ""


class Mailbox:
    """Run the monitor now, deliver what it queued, and read what arrived."""

    def __init__(self, storage: str, store: Store, settings: Any, smtp: SmtpServer, monitor_id: str) -> None:
        self.host, self.store, self.settings, self.smtp, self.id = Host(storage), store, settings, smtp, monitor_id

    async def run(self) -> str:
        await self.store.ensure_queues()
        outcome = await run_monitor(self.store, self.settings, self.id)
        await self.host.drain(EVENTS_QUEUE, "send_event_email")
        return outcome.status or ""

    @property
    def subjects(self) -> list[str]:
        return [m.subject for m in self.smtp.to(ALICE)]

    async def results(self) -> list[dict[str, Any]]:
        return list(reversed(await self.store.query_results(self.id)))  # oldest first


def parts(message: Any) -> tuple[str, str]:
    return message.part("plain"), message.part("html")


def first_line(text: str) -> str:
    return text.splitlines()[0]


def span(start: datetime, end: datetime) -> str:
    if start.replace(second=0, microsecond=0) == end.replace(second=0, microsecond=0):
        return f"{start:%H:%M:%S}-{end:%H:%M:%S} UTC"
    return f"{start:%H:%M}-{end:%H:%M} UTC"


def stamp(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def assert_human(message: Any) -> None:
    for part in parts(message):
        for internal in INTERNAL:
            assert internal not in part, (internal, part)
    for internal in ("MONITOR_", "Connect call", "_ssl.c"):
        assert internal not in message.subject


async def test_down_and_up_again_say_the_url_the_cause_and_the_outage_in_agreeing_words(storage, env, smtp, site):
    settings, store = await setup(env, smtp)
    async with store:
        url = site.url_for("/shop/cart").replace("http://", "http://buyer:Hunter2-secret@") + "?token=s3cr3t&page=2"
        box = Mailbox(storage, store, settings, smtp, await add_website(store, url, failure_threshold=2))
        shown = f"http://***@127.0.0.1:{site.port}/shop/cart?token=***&page=2"
        assert await box.run() == "UP" and box.subjects == []
        site.set(status=503)
        assert [await box.run(), await box.run()] == ["UP", "DOWN"]
        site.set(status=200)
        assert await box.run() == "UP"
        results = await box.results()
    start, end = results[1]["checked_at"], results[3]["checked_at"]  # the first failing check, the recovery

    down, up = smtp.to(ALICE)
    cause = "HTTP 503 Service Unavailable (expected 200-399)"
    assert results[1]["error"] == results[2]["error"] == cause  # the API's results say it in the same words
    assert down.subject == f"[DOWN] Shop: {cause}"
    text, html = parts(down)
    assert first_line(text) == f"Shop is DOWN since {start:%H:%M} UTC: {cause}."
    for part, url_shown in ((text, shown), (html, escape(shown))):  # & is &amp; in HTML
        assert url_shown in part and "Hunter2-secret" not in part and "s3cr3t" not in part
        assert f"Shop is DOWN since {start:%H:%M} UTC: {cause}." in part
        assert "Cause" in part and f"{stamp(start)}" in part and "2 in a row" in part

    match = re.fullmatch(r"\[UP\] Shop: up again after (\d+) s \(down (.+)\)", up.subject)
    assert match, up.subject
    seconds, window = match.groups()
    assert abs(int(seconds) - (end - start).total_seconds()) <= 1 and window == span(start, end)
    text, html = parts(up)
    assert first_line(text) == f"Shop is UP again after {seconds} s (down {window})."
    for part, url_shown in ((text, shown), (html, escape(shown))):
        assert f"Shop is UP again after {seconds} s (down {window})." in part
        assert url_shown in part and stamp(start) in part and stamp(end) in part  # Down from, Back up at
        assert "Downtime" in part and f"{seconds} s" in part and cause in part and "Response time" in part
    for message in (down, up):
        assert_human(message)
        assert "Hunter2-secret" not in message.raw.decode() and "s3cr3t" not in message.raw.decode()


async def test_a_refused_connection_is_told_as_connection_refused(storage, env, smtp):
    settings, store = await setup(env, smtp)
    async with store:
        port = refused_port()
        box = Mailbox(storage, store, settings, smtp, await add_website(store, f"http://127.0.0.1:{port}/",
                                                                         failure_threshold=1))
        assert await box.run() == "DOWN"
        (result,) = await box.results()
    (down,) = smtp.to(ALICE)
    cause = f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert result["error"] == cause
    assert down.subject == f"[DOWN] Shop: {cause}"
    for part in parts(down):
        assert f"http://127.0.0.1:{port}/" in part and cause in part
    assert_human(down)


async def test_a_mail_links_to_the_status_page_only_for_a_public_monitor(storage, env, smtp):
    """A recipient has no function key: the only page they can open is the public status page."""
    settings, store = await setup(env, smtp, PUBLIC_BASE_URL="https://status.example.org/")
    async with store:
        port = refused_port()
        shown = await add_website(store, f"http://127.0.0.1:{port}/", failure_threshold=1, public=True)
        hidden = await add_website(store, f"http://127.0.0.1:{port}/x", failure_threshold=1)
        for mid in (shown, hidden):
            assert await Mailbox(storage, store, settings, smtp, mid).run() == "DOWN"
    public_mail, private_mail = smtp.to(ALICE)
    for part in parts(public_mail):
        assert f"https://status.example.org/api/status-page#m-{shown}" in part
    for part in parts(private_mail):
        assert "status.example.org" not in part
    for message in (public_mail, private_mail):
        assert "/api/v1/" not in message.raw.decode()  # never a route that needs a key


async def test_degraded_from_the_first_check_is_announced_before_its_recovery(storage, env, smtp, site):
    settings, store = await setup(env, smtp)
    async with store:
        site.set(delay=0.3)
        box = Mailbox(storage, store, settings, smtp, await add_website(store, site.url, max_response_ms=100))
        assert await box.run() == "DEGRADED"
        assert await box.run() == "DEGRADED"  # still slow: nothing new
        site.set(delay=0)
        assert await box.run() == "UP"
        results = await box.results()
    assert [s.split("]")[0] + "]" for s in box.subjects] == ["[DEGRADED]", "[RECOVERED]"]
    slow, recovered = smtp.to(ALICE)
    start, end = results[0]["checked_at"], results[2]["checked_at"]

    latency = round(results[0]["latency_ms"])
    reason = f"responded in {latency} ms (limit 100 ms)"
    assert results[0]["error"] == reason
    assert slow.subject == f"[DEGRADED] Shop: {reason}"
    text, html = parts(slow)
    assert first_line(text) == f"Shop is slow (DEGRADED) since {start:%H:%M} UTC: {reason}."
    for part in (text, html):
        assert site.url in part and "Response time" in part and f"{latency} ms" in part and stamp(start) in part

    match = re.fullmatch(r"\[RECOVERED\] Shop: responds normally again after (\d+) s \(slow (.+)\)", recovered.subject)
    assert match, recovered.subject
    seconds, window = match.groups()
    assert abs(int(seconds) - (end - start).total_seconds()) <= 1 and window == span(start, end)
    text, html = parts(recovered)
    assert first_line(text) == f"Shop responds normally again after {seconds} s (slow {window})."
    for part in (text, html):
        assert stamp(start) in part and stamp(end) in part and "Slow for" in part
    for message in (slow, recovered):
        assert_human(message)


async def test_certificate_warning_counts_days_as_a_person_does_and_comes_once(storage, env, smtp, targets):
    settings, store = await setup(env, smtp)
    async with store:
        tls = targets.https(days_valid=2.97)  # 2.97 days left is "3 days"
        box = Mailbox(storage, store, settings, smtp, await add_website(store, tls.url, verify_tls=False))
        assert await box.run() == "UP"
        assert await box.run() == "UP"  # the same certificate, the same stage: no second mail
        (result,) = (await box.results())[-1:]
        soon = targets.https(days_valid=0.4)  # any part of a day is a day: "1 day", never "0 days"
        other = Mailbox(storage, store, settings, smtp, await add_website(store, soon.url, verify_tls=False,
                                                                           name="Blog"))
        await other.run()
    assert result["cert_days_left"] == 3  # the API's results count the same way
    warning, last_day = smtp.to(ALICE)
    expiry = datetime.now(UTC) + timedelta(days=2.97)
    assert warning.subject == f"[CERTIFICATE] Shop: TLS certificate expires in 3 days ({expiry.day} {expiry:%b %Y})"
    text, html = parts(warning)
    assert first_line(text).startswith(f"The TLS certificate of {tls.url} expires in 3 days ({expiry.day} ")
    for part in (text, html):
        assert "Certificate expires" in part and "3 days" in part and "Next reminder" in part
        assert "at 1 day left" in part
    assert last_day.subject.startswith("[CERTIFICATE] Blog: TLS certificate expires in 1 day (")
    assert "Days left" in last_day.part("plain") and "1 day\r\n" in last_day.part("plain")
    assert "when it has expired" in last_day.part("plain")
    for message in (warning, last_day):
        assert_human(message)


async def test_back_up_but_slow_says_so_and_its_recovery_follows(storage, env, smtp, site):
    settings, store = await setup(env, smtp)
    async with store:
        box = Mailbox(storage, store, settings, smtp, await add_website(store, site.url, failure_threshold=1,
                                                                         max_response_ms=100))
        site.set(status=500)
        assert await box.run() == "DOWN"
        site.set(status=200, delay=0.3)
        assert await box.run() == "DEGRADED"
        site.set(delay=0)
        assert await box.run() == "UP"
        results = await box.results()
    down, up, recovered = smtp.to(ALICE)
    assert [down.subject.split("]")[0], up.subject.split("]")[0], recovered.subject.split("]")[0]] == [
        "[DOWN", "[UP", "[RECOVERED"]
    slow = results[1]["error"]
    assert slow.startswith("responded in ") and slow.endswith(" ms (limit 100 ms)")
    text = up.part("plain")
    assert first_line(text).endswith(f" It is still slow: {slow}.")
    assert f"UP, but slow: {slow}" in text and "HTTP 500 Internal Server Error (expected 200-399)" in text
    start, end = results[1]["checked_at"], results[2]["checked_at"]
    assert recovered.subject.endswith(f"(slow {span(start, end)})")  # the slow spell began with the recovery
    for message in (down, up, recovered):
        assert_human(message)


async def test_a_reminder_says_for_how_long_it_has_been_down(storage, env, smtp):
    """A reminder (renotify_minutes) as the engine queues it, delivered and received."""
    settings, store = await setup(env, smtp)
    async with store:
        mid = await add_website(store, "https://shop.example.org/")
        since = datetime(2024, 12, 1, 9, 14, 3, tzinfo=UTC)
        cause = "cannot connect to shop.example.org:443: connection refused"
        await publish(store, Event(type=EventType.MONITOR_DOWN, kind="website", monitor_id=mid, monitor_name="Shop",
                                   severity="critical", occurred_at=since + timedelta(minutes=65),
                                   message=f"Shop is still down: {cause}",
                                   details={"error": cause, "since": since.isoformat(), "reminder": True,
                                            "url": "https://shop.example.org/"}))
        await Host(storage).drain(EVENTS_QUEUE, "send_event_email")
    (reminder,) = smtp.to(ALICE)
    assert reminder.subject == f"[STILL DOWN] Shop: down for 65 min (since 09:14 UTC): {cause}"
    text = reminder.part("plain")
    assert first_line(text) == f"Shop is still DOWN, for 65 min now (since 09:14 UTC): {cause}."
    assert "2024-12-01 09:14:03 UTC" in text and "65 min so far" in text
    assert_human(reminder)
