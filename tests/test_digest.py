"""Digests: what a channel's daily or weekly digest says, when it is due, and that it arrives.

Real parts throughout: Azurite, local web sites (tests/targets.py) checked by the engine, the WHMCS and InvenTree
stand-ins, a local disk measured by psutil, an alert rule evaluated on a stored snapshot, and the SMTP server
(tests/smtp_server.py) the digest is sent to.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from inventree_fake import FakeInvenTree, inventree  # noqa: F401 - fixture
from standins import ntfy_server, webhook_server  # noqa: F401 - fixtures
from targets import targets  # noqa: F401 - fixture
from whmcs_fake import whmcs  # noqa: F401 - fixture

from shared import manage, rules, snapshots
from shared.manage.channels import create_channel
from shared.notify.definitions import EmailChannelDef
from shared.notify.digest import Digest, build_digest
from shared.notify.digest_due import WATERMARK_PK, Slot, due, latest_slot, send_due_digests
from shared.notify.digest_render import SHORT_MAX, render_digest
from shared.settings import get_settings
from shared.storage import Store
from tests.smtp_server import smtp, smtp_ca  # noqa: F401 - fixtures

SENSOR = [{"ipn": "RES-10K-0603", "quantity": 4}, {"name": "STM32F103C8T6", "quantity": 1},
          {"pk": 8, "quantity": 1}]  # at 30 kits the MCU is 5 short, 25 kits buildable
OPS = "ops@example.org"


def utcnow() -> datetime:
    return datetime.now(UTC)


async def website(store: Store, url: str, name: str) -> str:
    view = await manage.create_monitor(store, {"kind": "website", "name": name, "url": url, "attempts": 1,
                                               "timeout_seconds": 5, "failure_threshold": 1})
    return str(view["id"])


async def check(store: Store, settings: Any, mid: str) -> str:
    return str((await manage.run_monitor(store, settings, mid))["status"])


async def tick() -> datetime:
    """A moment strictly between what happened before and what happens after (event times are exact)."""
    await asyncio.sleep(0.01)
    mark = utcnow()
    await asyncio.sleep(0.01)
    return mark


async def spread_history(store: Store, mid: str, step: timedelta) -> None:
    """The stock kind's quantity history as if its checks had been `step` apart (they ran a moment apart), written
    the way the engine writes a state."""
    row = await store.get_state("stock", mid)
    assert row is not None
    history = row.data["history"]
    last = datetime.fromisoformat(history[-1][0])
    spread = [[(last - step * (len(history) - 1 - n)).isoformat(), qty] for n, (_, qty) in enumerate(history)]
    await store.commit_state("stock", mid, {**row.data, "history": spread}, row.status, row.etag, [])


# ------------------------------------------------------------------------------------------- the content


@pytest.fixture
async def world(storage: Any, env: Any, targets: Any, whmcs: Any, inventree: Any,
                smtp: Any) -> AsyncIterator[dict[str, Any]]:
    """Every kind with something to tell, checked by the engine; `since` splits what happened before the last
    digest from what happened after it."""
    env(**whmcs.settings(), **inventree.settings(), **smtp.settings(), ADMIN_EMAIL_RECIPIENTS=OPS)
    settings = get_settings()
    shop_site, old_site, flaky_site = targets.http(), targets.http(), targets.http()
    async with Store.open(settings) as store:
        old = await website(store, old_site.url, "Old site")
        old_site.set(status=500)
        assert await check(store, settings, old) == "DOWN"
        old_site.set(status=200)
        assert await check(store, settings, old) == "UP"

        whmcs.add(42, "VPS Small", 20)
        stock = (await manage.create_monitor(store, {"kind": "stock", "product_id": 42, "threshold_low": 5,
                                                     "stockout_alert_days": 3}))["id"]
        assert await check(store, settings, stock) == "OK"
        whmcs.set(42, 12)
        assert await check(store, settings, stock) == "OK"

        since = await tick()  # ------------------------------------------------ the last digest went out here

        shop = await website(store, shop_site.url, "Shop")
        assert await check(store, settings, shop) == "UP"
        shop_site.set(status=500)
        assert await check(store, settings, shop) == "DOWN"
        flaky = await website(store, flaky_site.url, "Flaky blog")
        for _ in range(3):
            flaky_site.set(status=503)
            assert await check(store, settings, flaky) == "DOWN"
            flaky_site.set(status=200)
            assert await check(store, settings, flaky) == "UP"
        whmcs.set(42, 4)
        assert await check(store, settings, stock) == "LOW"
        await spread_history(store, stock, timedelta(days=1))
        parts = (await manage.create_monitor(store, {"kind": "parts", "name": "Sensor board", "parts": SENSOR,
                                                     "kits": 30}))["id"]
        assert await check(store, settings, parts) == "SHORT"
        disk = (await manage.create_monitor(store, {"kind": "resource", "name": "App disk", "source": {
            "type": "local", "paths": ["/"], "disk": {"warn": 0.001, "alert": 0.002}, "memory": None}}))["id"]
        assert await check(store, settings, disk) == "ALERT"
        rule = await rules.create_rule(store, {"metric": "monitors_down", "operator": ">=", "threshold": 1,
                                               "name": "Something is down"})
        await snapshots.take_snapshot(store, settings, persist=True)
        until = await tick()
        digest = await build_digest(store, settings, since, until)
        yield {"digest": digest, "since": since, "until": until, "store": store, "settings": settings,
               "ids": {"old": old, "shop": shop, "flaky": flaky, "stock": stock, "parts": parts, "disk": disk,
                       "rule": rule["id"]}}


async def test_the_digest_names_every_problem_with_its_numbers(world: Any) -> None:
    digest: Digest = world["digest"]
    ids = world["ids"]
    outages = {o.name: o for o in digest.outages}
    assert set(outages) == {"Shop", "Flaky blog"}  # the old site's outage ended before the period
    shop = outages["Shop"]
    assert shop.down_now and not shop.flapping and shop.outages == 1 and (shop.reason or "").startswith("HTTP 500")
    (window,) = await world["store"].list_downtimes(ids["shop"])
    assert shop.downtime_seconds == round((world["until"] - window["started_at"]).total_seconds())
    flaky = outages["Flaky blog"]
    assert flaky.flapping and not flaky.down_now and flaky.down_events == 3 and flaky.outages == 3

    (stock,) = digest.stock
    assert (stock.name, stock.status, stock.quantity, stock.threshold) == ("VPS Small", "LOW", 4, 5)
    # 20 → 12 → 4 over two days: 8 a day, so the 4 left last half a day (alert at 3 days)
    assert stock.consumption_per_day == pytest.approx(8, abs=0.01) and stock.days_to_stockout == 0.5
    assert stock.forecast_alert
    (parts,) = digest.parts
    assert (parts.name, parts.kits, parts.lines_short, parts.total_missing, parts.kits_buildable) == \
        ("Sensor board", 30, 1, 5.0, 25)
    (resource,) = digest.resources
    assert resource.name == "App disk" and resource.status == "ALERT"
    assert resource.metrics and all("(ALERT)" in m for m in resource.metrics)
    (rule,) = digest.rules
    assert (rule.id, rule.name, rule.metric, rule.value) == (ids["rule"], "Something is down", "monitors_down", 1)
    assert digest.errors == []
    assert digest.problems == 6  # Shop down, the flapping blog, stock, parts, disk, the rule

    uptime = {m.name: (m.status, m.uptime_percent, m.checks) for m in digest.monitors}
    assert uptime["Shop"] == ("DOWN", 50.0, 2)
    assert uptime["Flaky blog"] == ("UP", 50.0, 6)
    assert uptime["Old site"] == ("UP", None, 0)  # checked only before the period
    assert uptime["VPS Small"] == ("LOW", 100.0, 1)
    assert uptime["App disk"][0] == "ALERT"
    assert digest.monitors[0].status == "DOWN"  # worst first


async def test_what_changed_is_what_happened_since_the_last_digest_only(world: Any) -> None:
    digest: Digest = world["digest"]
    ids = world["ids"]
    changes = [(c.monitor, c.from_status, c.to_status) for c in digest.status_changes]
    assert ("Shop", "UP", "DOWN") in changes
    assert changes.count(("Flaky blog", "UP", "DOWN")) == 3 and changes.count(("Flaky blog", "DOWN", "UP")) == 3
    assert ("VPS Small", "OK", "LOW") in changes
    assert ("Sensor board", None, "SHORT") in changes
    assert ("App disk", "PENDING", "ALERT") in changes
    assert ("Something is down", "OK", "FIRING") in changes
    assert not [c for c in digest.status_changes if c.monitor_id == ids["old"]]
    assert digest.changes == len(changes) == 11
    assert all(world["since"] < c.at <= world["until"] for c in digest.status_changes)
    assert [c.at for c in digest.status_changes] == sorted(c.at for c in digest.status_changes)
    assert digest.events_by_type["MONITOR_DOWN"] == 4 and digest.events_by_type["MONITOR_UP"] == 3
    assert "STOCK_DECREASED" in digest.events_by_type  # 12 → 4 in the period; 20 → 12 was before it
    assert digest.events_by_type["STOCK_DECREASED"] == 1


async def test_the_rendered_digest_puts_problems_first_in_text_html_and_the_short_form(world: Any) -> None:
    digest: Digest = world["digest"]
    out = render_digest(digest)
    day = digest.until
    assert out.subject == f"[DIGEST] Daily digest: 6 problems, 11 changes ({day:%a} {day.day} {day:%b})"
    text = out.text
    assert text.index("PROBLEMS") < text.index("What changed") < text.index("Uptime over the period")
    assert "Shop: DOWN since " in text and "HTTP 500" in text
    assert "Flaky blog: flapping; down " in text and "(3 outages, 3 DOWN events)" in text
    assert "VPS Small: low stock, 4 left (low threshold 5)" in text
    assert "runs out in about 0.5 days" in text
    assert "Sensor board ×30: 1 of 3 lines short, 5 missing, 25 kits buildable now" in text
    assert "App disk: ALERT" in text and "Something is down: monitors_down is 1 (warning)" in text
    assert re.search(r"Shop\s+website\s+DOWN\s+50 %\s+2", text)
    assert re.search(r"Old site\s+website\s+UP\s+-\s+0", text)
    assert "UP -> DOWN" in text and "Old site: " not in text.split("What changed")[1].split("Uptime")[0]
    for fact in ("Shop: DOWN since", "VPS Small: low stock", "Sensor board ×30", "App disk: ALERT",
                 "Something is down"):
        assert fact in out.html and fact in out.short
    assert "<ul" in out.html and "Uptime over the period" in out.html
    assert len(out.short) <= SHORT_MAX and out.short.startswith("Daily digest: 6 problems, 11 changes")
    assert "Uptime" not in out.short  # the short form is the headline and the problems


async def test_html_escapes_what_monitors_are_called(storage: Any, env: Any, targets: Any) -> None:
    settings = get_settings()
    async with Store.open(settings) as store:
        site = targets.http(status=500)
        mid = await website(store, site.url, 'Shop <script>alert("x")</script>')
        since = await tick()
        assert await check(store, settings, mid) == "DOWN"
        out = render_digest(await build_digest(store, settings, since, await tick()))
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert 'Shop <script>alert("x")</script>: DOWN since' in out.text


async def test_a_quiet_period_says_nothing_is_wrong(storage: Any, env: Any, targets: Any) -> None:
    settings = get_settings()
    async with Store.open(settings) as store:
        mid = await website(store, targets.http().url, "Shop")
        assert await check(store, settings, mid) == "UP"
        digest = await build_digest(store, settings, utcnow() - timedelta(days=7), await tick())
    assert digest.title == "Weekly digest" and digest.problems == 0 and digest.outages == []
    out = render_digest(digest)
    assert "Nothing is wrong now." in out.text and "Nothing is wrong now." in out.short
    assert out.subject.startswith("[DIGEST] Weekly digest: 0 problems, 0 changes (")


# --------------------------------------------------------------------------------------------- due logic


def channel(**fields: Any) -> EmailChannelDef:
    return EmailChannelDef(id="ab" * 16, name="ops", recipients=[OPS], **fields)


def slot_at(defn: EmailChannelDef, now: datetime) -> Slot:
    found = latest_slot(defn, now)
    assert found is not None
    return found


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_daily_at_0800_berlin_stays_0800_across_both_dst_changes() -> None:
    daily = channel(digest="daily", digest_at="08:00", digest_timezone="Europe/Berlin")
    # winter: 08:00 CET is 07:00 UTC; from 31 March (CEST) 06:00 UTC; from 27 October (CET) 07:00 UTC again
    assert slot_at(daily, at("2024-03-30T07:00:00")).at == at("2024-03-30T07:00:00")
    assert slot_at(daily, at("2024-03-31T05:59:00")).period == "2024-03-30"
    slot = slot_at(daily, at("2024-03-31T06:00:00"))
    assert (slot.period, slot.at) == ("2024-03-31", at("2024-03-31T06:00:00"))
    assert slot_at(daily, at("2024-10-26T06:30:00")).at == at("2024-10-26T06:00:00")
    assert slot_at(daily, at("2024-10-27T06:30:00")).period == "2024-10-26"  # 07:30 CET: not yet
    assert slot_at(daily, at("2024-10-27T07:00:00")).at == at("2024-10-27T07:00:00")


def test_weekly_is_due_on_its_weekday_only() -> None:
    weekly = channel(digest="weekly", digest_weekday="tuesday", digest_at="09:30", digest_timezone="UTC")
    assert slot_at(weekly, at("2024-12-02T23:00:00")).period == "2024-11-26"  # Monday: last Tuesday's
    assert slot_at(weekly, at("2024-12-03T09:29:00")).period == "2024-11-26"
    assert slot_at(weekly, at("2024-12-03T09:30:00")).period == "2024-12-03"
    assert slot_at(weekly, at("2024-12-09T12:00:00")).period == "2024-12-03"  # all week
    sent = {"period": "2024-12-03"}
    assert due(weekly, sent, at("2024-12-09T12:00:00")) is None
    assert due(weekly, sent, at("2024-12-10T09:30:00")) == slot_at(weekly, at("2024-12-10T09:30:00"))
    assert slot_at(weekly, at("2024-12-10T09:30:00")).period == "2024-12-10"
    assert due(channel(digest="off"), None, at("2024-12-10T09:30:00")) is None
    assert due(channel(digest="daily", enabled=False), None, at("2024-12-10T09:30:00")) is None


async def test_a_missed_run_sends_late_once_and_another_run_of_the_period_sends_nothing(storage: Any, env: Any, smtp: Any, targets: Any) -> None:
    env(**smtp.settings())
    settings = get_settings()
    async with Store.open(settings) as store:
        created = await create_channel(store, {"type": "email", "name": "ops", "recipients": [OPS],
                                               "digest": "daily", "digest_at": "08:00",
                                               "digest_timezone": "Europe/Berlin"})
        await create_channel(store, {"type": "email", "name": "quiet", "recipients": ["q@example.org"]})
        runs = ["2024-12-01T07:05:00", "2024-12-01T08:05:00",  # Sun 1 Dec 08:05 CET: sent; 09:05: nothing
                "2024-12-02T09:05:00", "2024-12-02T10:05:00",  # Mon: 08:05 and 09:05 CET missed (down): sent late
                "2024-12-03T06:05:00"]  # Tue 07:05 CET: not yet
        answers = [await send_due_digests(store, settings, at(run)) for run in runs]
        assert [len(a["sent"]) for a in answers] == [1, 0, 1, 0, 0]
        assert [m.subject.rpartition(" (")[2] for m in smtp.messages] == ["Sun 1 Dec)", "Mon 2 Dec)"]
        assert all(m.rcpt_tos == [OPS] for m in smtp.messages)
        mark = await store.get_row(WATERMARK_PK, created["id"])
        assert mark is not None
        assert mark["period"] == "2024-12-02" and mark["until"] == at("2024-12-02T09:05:00")
        # the second digest covers the time since the first one went out
        assert "2024-12-01 07:05:00 UTC - 2024-12-02 09:05:00 UTC" in smtp.messages[1].part("plain")

        await store.delete_row(WATERMARK_PK, created["id"])  # a run that lost its watermark write
        again = await send_due_digests(store, settings, at("2024-12-02T11:05:00"))
        assert again["sent"][0]["sent"] == [] and len(smtp.messages) == 2  # the claim: never two for one period


async def test_a_due_digest_arrives_by_email_with_its_content(storage: Any, env: Any, smtp: Any, targets: Any) -> None:
    env(**smtp.settings())
    settings = get_settings()
    async with Store.open(settings) as store:
        site = targets.http(status=500)
        mid = await website(store, site.url, "Shop")
        assert await check(store, settings, mid) == "DOWN"
        await create_channel(store, {"type": "email", "name": "sales", "recipients": [OPS, "b@example.org"],
                                     "digest": "weekly", "digest_weekday": "monday", "digest_at": "00:00"})
        answer = await send_due_digests(store, settings, await tick())
    assert answer["errors"] == [] and sorted(answer["sent"][0]["sent"]) == ["sales <b@example.org>", f"sales <{OPS}>"]
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == ["b@example.org", OPS]
    mail = smtp.to(OPS)[0]
    assert re.fullmatch(r"\[DIGEST\] Weekly digest: 1 problem, 1 change \(\w{3} \d{1,2} \w{3}\)", mail.subject)
    for part in (mail.part("plain"), mail.part("html")):
        assert "Shop: DOWN since" in part and "Weekly digest" in part and "50 %" not in part
        assert "HTTP 500" in part
    assert mail.message["Message-ID"]


# ---------------------------------------------------------------------------------------------------- CLI


def test_the_cli_prints_the_digest_as_text_or_json_and_sends_it_to_a_channel(storage: Any, env: Any, smtp: Any,
                                                                             targets: Any, capsys: Any) -> None:
    import json

    from shared.cli import main

    env(**smtp.settings())

    async def arrange() -> None:
        settings = get_settings()
        async with Store.open(settings) as store:
            mid = await website(store, targets.http(status=500).url, "Shop")
            assert await check(store, settings, mid) == "DOWN"
            await create_channel(store, {"type": "email", "name": "ops", "recipients": [OPS]})

    asyncio.run(arrange())
    assert main(["digest", "--weekly"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Weekly digest: 1 problem, 1 change") and "Shop: DOWN since" in text
    assert main(["--json", "digest"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["title"] == "Daily digest" and data["problems"] == 1 and data["outages"][0]["name"] == "Shop"
    assert main(["digest", "--send", "ops"]) == 0
    assert capsys.readouterr().out.strip() == f"digest sent to ops <{OPS}>"
    (mail,) = smtp.messages
    assert mail.subject.startswith("[DIGEST] Daily digest: 1 problem, 1 change (") and mail.rcpt_tos == [OPS]
    assert main(["digest", "--send", "nobody"]) == 1
    assert "no channel nobody" in capsys.readouterr().err


async def test_chat_channels_get_the_short_form_and_webhooks_the_digest_as_data(storage: Any, env: Any,
                                                                               targets: Any, ntfy_server: Any,
                                                                               webhook_server: Any) -> None:
    settings = get_settings()
    async with Store.open(settings) as store:
        mid = await website(store, targets.http(status=500).url, "Shop")
        assert await check(store, settings, mid) == "DOWN"
        await create_channel(store, {"type": "apprise", "name": "phone", "url": ntfy_server.url("digests"),
                                     "digest": "daily"})
        await create_channel(store, {"type": "webhook", "name": "hook", "url": webhook_server.url(),
                                     "secret": webhook_server.secret, "digest": "daily"})
        answer = await send_due_digests(store, settings, await tick())
    assert sorted(e["channel"] for e in answer["sent"]) == ["hook", "phone"] and answer["errors"] == []
    (push,) = ntfy_server.received
    assert push.json["title"].startswith("[DIGEST] Daily digest: 1 problem")
    assert "Shop: DOWN since" in push.json["message"] and "Uptime" not in push.json["message"]
    assert len(push.json["message"]) <= SHORT_MAX
    (body,) = webhook_server.bodies
    assert body["type"] == "DIGEST" and body["version"] == 1 and body["subject"].startswith("[DIGEST] Daily")
    assert body["details"]["problems"] == 1 and body["details"]["outages"][0]["name"] == "Shop"
    assert "Shop: DOWN since" in body["text"]


async def test_the_hourly_timer_at_five_past_sends_what_is_due(storage: Any, env: Any, smtp: Any) -> None:
    import json

    import azure.functions as func
    from azure.functions.timer import TimerRequest

    from shared.triggers.digests import bp

    app = func.FunctionApp()
    app.register_functions(bp)
    (timer,) = [f for f in app.get_functions() if f.get_function_name() == "digest_timer"]
    (binding,) = json.loads(timer.get_function_json())["bindings"]
    assert binding["type"] == "timerTrigger" and binding["schedule"] == "0 5 * * * *"
    env(**smtp.settings())
    async with Store.open(get_settings()) as store:
        await create_channel(store, {"type": "email", "name": "ops", "recipients": [OPS], "digest": "daily"})
    run = timer.get_user_function()
    await run(TimerRequest(past_due=False))
    await run(TimerRequest(past_due=True))  # the same period: nothing more
    (mail,) = smtp.messages
    assert mail.subject.startswith("[DIGEST] Daily digest: 0 problems, 0 changes (")
