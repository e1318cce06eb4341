"""The outbound (SSRF) guard: what a check may reach, and what an operator reads when it may not.

Network rule of this file: nothing leaves 127.0.0.0/8 or ::1. Link-local, private, public and the other address
forms are tested with the pure classifier and Guard methods only (no sockets). End to end, refusals use loopback
addresses outside the test allow-list (127.0.0.1/32, tests/conftest.py): real servers bound to 127.0.0.2 (Linux
routes all of 127/8 to lo), which must never see a connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from apphelp import call
from pydantic import SecretStr

import monitors
from monitors import website
from monitors.contract import CheckResult
from shared.engine import check_context
from shared.outbound import http as outbound_http
from shared.outbound import tcp
from shared.outbound.guard import (
    HINT,
    Guard,
    GuardedResolver,
    OutboundRefused,
    classify,
    embedded_ipv4,
    literal_address,
    parse_cidrs,
    storage_endpoints,
)

ip = ipaddress.ip_address
TEST_ALLOW = "127.0.0.1/32"  # what tests/conftest.py sets for every test


def refused_text(address: str, reason: str) -> str:
    return f"address {ip(address)} is not allowed: {reason}; {HINT}"


# ------------------------------------------------------------------------------------- loopback servers


class Listener:
    """A small HTTP server on one loopback address that records every connection it accepts and every request
    line it reads; it answers each request with `status` (and `headers`), then closes the connection."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None, body: bytes = b"ok") -> None:
        self.status, self.headers, self.body = status, headers or {}, body
        self.connections = 0
        self.requests: list[str] = []
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str) -> Listener:
        self._server = await asyncio.start_server(self._serve, host, 0)
        self.host, self.port = host, self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            self.requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
            extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
            writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(self.body)}\r\nConnection: close\r\n"
                         f"{extra}\r\n".encode() + self.body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # a raw TCP client that sends nothing
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


Listen = Callable[..., Awaitable[Listener]]


@pytest.fixture
async def listen() -> AsyncIterator[Listen]:
    """listen(host, status=…, headers=…) → a started Listener; all are closed at the end of the test."""
    started: list[Listener] = []

    async def start(host: str, **answer: Any) -> Listener:
        listener = await Listener(**answer).start(host)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        await listener.close()


async def settle() -> None:
    """Let a connection that was (wrongly) made reach the listener's accept callback before counting."""
    await asyncio.sleep(0.05)


def spec(url: str, **fields: Any) -> website.Config:
    return monitors.parse_spec({"kind": "website", "id": uuid.uuid4().hex, "name": "Target", "url": url,
                                "attempts": 1, "timeout_seconds": 2, **fields})


async def run_check(url: str, **fields: Any) -> CheckResult:
    """One website check through the engine's own guarded session, under the current settings. Built with
    parse_spec, so a URL the create-time validation would refuse reaches the check."""
    from shared.settings import get_settings

    async with check_context(get_settings(), None) as ctx:
        return await website.check(spec(url, **fields), ctx)


# ------------------------------------------------------------------------------------ 1. classification


@pytest.mark.parametrize(("address", "reason"), [
    ("169.254.169.254", "link-local"),  # the instance metadata service
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared address space (carrier-grade NAT)"),
    ("fc00::1", "private"),  # unique local
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
])
def test_non_public_addresses_are_classified_with_a_reason(address, reason):
    assert classify(ip(address)) == reason
    assert Guard().refusal(ip(address)) == refused_text(address, reason)
    assert not Guard().allowed(ip(address))


@pytest.mark.parametrize(("address", "inner", "reason"), [
    ("::ffff:127.0.0.1", "127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "169.254.169.254", "link-local"),
    ("::7f00:1", "127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
    ("2002:7f00:1::1", "127.0.0.1", "loopback"),  # 6to4
    ("64:ff9b::a9fe:a9fe", "169.254.169.254", "link-local"),  # NAT64
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1", "loopback"),  # Teredo, client 127.0.0.1 (bits inverted)
])
def test_ipv4_inside_ipv6_is_judged_by_the_ipv4_address_and_named(address, inner, reason):
    assert embedded_ipv4(ip(address)) == ip(inner)
    assert classify(ip(address)) == f"{reason} (IPv4 {inner} inside {ip(address)})"
    assert Guard().refusal(ip(address)) == refused_text(address, f"{reason} (IPv4 {inner} inside {ip(address)})")


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"])
def test_public_addresses_are_not_refused(address):
    assert classify(ip(address)) is None
    assert Guard().allowed(ip(address))
    assert Guard().refusal(ip(address)) is None
    Guard().check_host(address, 443)  # no exception, and no traffic: a literal address is not resolved


# ------------------------------------------------------------------------------------ 2. literal spellings


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "0x7f000001"])
def test_legacy_ipv4_spellings_are_understood(host):
    assert literal_address(host) == ip("127.0.0.1")


def test_a_bracketed_mapped_address_is_an_address():
    assert literal_address("[::ffff:127.0.0.1]") == ip("::ffff:127.0.0.1")
    assert embedded_ipv4(literal_address("[::ffff:127.0.0.1]")) == ip("127.0.0.1")
    assert literal_address("[::1]") == ip("::1")


@pytest.mark.parametrize("host", ["localhost", "shop.example.com", "cafe.be", "deadbeef", "1e3", ""])
def test_host_names_are_not_addresses(host):
    assert literal_address(host) is None


@pytest.mark.parametrize("host", ["127.2", "2130706434", "0x7f.0.0.2", "0177.0.0.2"])
def test_legacy_spellings_are_refused_as_the_address_they_mean(host):
    with pytest.raises(OutboundRefused) as refused:
        Guard(parse_cidrs(TEST_ALLOW)).check_host(host, 80)
    assert str(refused.value) == refused_text("127.0.0.2", "loopback")


# ------------------------------------------------------------------------------------ 3. the allow-list


def test_the_allow_list_lets_exactly_its_networks_through():
    guard = Guard(parse_cidrs(TEST_ALLOW))
    assert guard.allowed(ip("127.0.0.1"))
    assert guard.allowed(ip("::ffff:127.0.0.1"))  # the mapped form of an allowed address
    assert guard.refusal(ip("127.0.0.1")) is None
    assert not guard.allowed(ip("127.0.0.2"))
    assert guard.refusal(ip("127.0.0.2")) == refused_text("127.0.0.2", "loopback")
    assert not guard.allowed(ip("::1"))
    assert not Guard().allowed(ip("127.0.0.1"))  # nothing allowed without the list


def test_allow_list_entries_are_separated_by_commas_spaces_or_semicolons():
    nets = parse_cidrs(" 10.0.0.0/8, 192.168.1.5  fd00::/8;127.0.0.1 ,")
    assert nets == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.1.5/32"),
                    ipaddress.ip_network("fd00::/8"), ipaddress.ip_network("127.0.0.1/32")]
    guard = Guard(nets)
    assert guard.allowed(ip("10.20.30.40")) and guard.allowed(ip("fd12::1")) and guard.allowed(ip("192.168.1.5"))
    assert not guard.allowed(ip("192.168.1.6"))
    assert parse_cidrs("") == [] and parse_cidrs(None) == []
    assert parse_cidrs("10.1.2.3/8") == [ipaddress.ip_network("10.0.0.0/8")]  # host bits are forgiven


def test_an_invalid_allow_list_stops_the_app_naming_the_setting(env):
    from shared.settings import SettingsError, get_settings

    env(OUTBOUND_ALLOW_CIDRS="127.0.0.1/32, nonsense")
    with pytest.raises(SettingsError) as caught:
        get_settings()
    assert "OUTBOUND_ALLOW_CIDRS" in str(caught.value)
    assert "'nonsense' is not a network" in str(caught.value)
    env(OUTBOUND_ALLOW_CIDRS="127.0.0.1/32, 10.0.0.0/8")
    assert get_settings().outbound_allow_cidrs == "127.0.0.1/32, 10.0.0.0/8"


# ------------------------------------------------------------------------------------ 4. the app's storage


def azurite_endpoints(conn: str) -> dict[str, int]:
    found = {name.lower(): int(port) for name, port in re.findall(r"(Blob|Queue|Table)Endpoint=http://127\.0\.0\.1:(\d+)/",
                                                                   conn)}
    assert set(found) == {"blob", "queue", "table"}, conn
    return found


def test_the_apps_own_storage_endpoints_are_refused(settings, storage):
    guard = Guard.from_settings(settings)
    ports = azurite_endpoints(storage)
    for service, port in ports.items():
        with pytest.raises(OutboundRefused) as refused:
            guard.check_host("127.0.0.1", port)
        assert str(refused.value) == f"127.0.0.1:{port} is the app's own storage account; checks may not read it", \
            service
        with pytest.raises(OutboundRefused, match="own storage account"):
            guard.check_url(f"http://127.0.0.1:{port}/devstoreaccount1/monitors()")
    free = next(p for p in range(20000, 20100) if p not in ports.values())
    guard.check_host("127.0.0.1", free)  # 127.0.0.1 itself is allowed: only the storage ports are refused


def test_the_apps_storage_is_refused_under_any_spelling_of_its_address(settings, storage):
    port = azurite_endpoints(storage)["table"]
    guard = Guard.from_settings(settings)
    for host in ("127.1", "2130706433", "[::ffff:127.0.0.1]"):
        with pytest.raises(OutboundRefused, match="own storage account"):
            guard.check_url(f"http://{host}:{port}/devstoreaccount1/monitors()")
    for family, sockaddr in ((socket.AF_INET, ("127.0.0.1", port)), (socket.AF_INET6, ("::ffff:127.0.0.1", port, 0, 0))):
        with pytest.raises(OutboundRefused, match="own storage account"):
            guard.socket_factory((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))


async def test_a_check_of_the_apps_storage_by_host_name_is_refused_before_connecting(settings, storage):
    port = azurite_endpoints(storage)["table"]
    result = await run_check(f"http://localhost:{port}/devstoreaccount1/Tables")
    assert result.outcome == "error"
    assert result.error == f"127.0.0.1:{port} is the app's own storage account; checks may not read it"
    assert "status_code" not in result.data  # no answer: the connection was never opened


def identity_settings(**values: Any) -> SimpleNamespace:
    base = {"storage_connection": None, "storage_account_name": None, "storage_table_uri": None,
            "storage_queue_uri": None, "outbound_allow_cidrs": None}
    return SimpleNamespace(**{**base, **values})


def test_identity_based_storage_is_refused_by_host_name():
    guard = Guard.from_settings(identity_settings(storage_account_name="acct"))
    for service in ("table", "queue", "blob"):
        with pytest.raises(OutboundRefused) as refused:
            guard.check_host(f"acct.{service}.core.windows.net", 443)
        assert str(refused.value) == \
            f"acct.{service}.core.windows.net:443 is the app's own storage account; checks may not read it"
    with pytest.raises(OutboundRefused, match="own storage account"):
        guard.check_url("https://acct.table.core.windows.net/monitors()")
    for spelled in ("ACCT.Table.Core.Windows.Net", "acct.table.core.windows.net."):  # same host for DNS
        with pytest.raises(OutboundRefused, match="own storage account"):
            guard.check_url(f"https://{spelled}/monitors()")
    guard.check_url("https://other.table.core.windows.net/")  # somebody else's account is a public site
    guard.check_url("http://acct.table.core.windows.net:8080/")  # not an endpoint of the account


def test_explicit_service_uris_and_connection_strings_name_the_storage_endpoints():
    uris = identity_settings(storage_table_uri="https://tables.internal.example:8443",
                             storage_queue_uri="https://queues.internal.example")
    assert set(storage_endpoints(uris)) == {("tables.internal.example", 8443), ("queues.internal.example", 443)}
    conn = identity_settings(storage_connection=SecretStr(
        "DefaultEndpointsProtocol=https;AccountName=prod;AccountKey=a2V5;EndpointSuffix=core.windows.net"))
    guard = Guard.from_settings(conn)
    with pytest.raises(OutboundRefused, match="own storage account"):
        guard.check_url("https://prod.blob.core.windows.net/container/secret.txt")


# ------------------------------------------------------------------------------------ 5. create time (422)


REFUSED_AT_CREATE = [
    ("http://127.0.0.2:8080/", "127.0.0.2"),
    ("http://[::ffff:127.0.0.2]/", "127.0.0.2"),
    ("http://0.0.0.0/", "0.0.0.0"),
    ("http://127.2/", "127.0.0.2"),  # legacy short form
    ("http://2130706434/", "127.0.0.2"),  # decimal
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
]


def assert_refused_url(status: int, body: Any, address: str) -> None:
    assert status == 422, body
    assert body["error"]["code"] == "validation_error"
    details = body["error"]["details"]
    assert [d["field"] for d in details] == ["url"]
    assert address in details[0]["message"]
    assert "OUTBOUND_ALLOW_CIDRS" in details[0]["message"]


@pytest.mark.parametrize(("url", "address"), REFUSED_AT_CREATE)
async def test_creating_a_monitor_for_a_refused_address_is_a_422(settings, url, address):
    status, body = await call("monitors", "POST", "v1/monitors",
                              {"kind": "website", "name": "Sneaky", "url": url, "attempts": 1})
    assert_refused_url(status, body, address)
    assert await call("monitors", "GET", "v1/monitors") == (200, {"items": []})  # nothing was stored


async def test_patching_a_monitor_to_a_refused_address_is_a_422_and_changes_nothing(settings):
    status, created = await call("monitors", "POST", "v1/monitors",
                                 {"kind": "website", "name": "Shop", "url": "https://shop.example.com/"})
    assert status == 201, created
    mid = created["id"]
    for url, address in REFUSED_AT_CREATE:
        status, body = await call("monitor", "PATCH", f"v1/monitors/{mid}", {"url": url}, route={"monitor_id": mid})
        assert_refused_url(status, body, address)
    status, body = await call("monitor", "GET", f"v1/monitors/{mid}", route={"monitor_id": mid})
    assert status == 200 and body["url"] == "https://shop.example.com/"


async def test_the_allow_list_admits_an_address_at_create_time(settings):
    status, body = await call("monitors", "POST", "v1/monitors",
                              {"kind": "website", "name": "Local", "url": "http://127.0.0.1:8080/"})
    assert status == 201, body


# ------------------------------------------------------------------------------------ 6. check time


async def test_a_check_of_a_refused_address_never_contacts_it(env, listen):
    target = await listen("127.0.0.2")
    result = await run_check(target.url)
    await settle()
    assert result.outcome == "error"
    assert result.error == refused_text("127.0.0.2", "loopback")
    assert target.connections == 0 and target.requests == []

    env(OUTBOUND_ALLOW_CIDRS="127.0.0.1/32, 127.0.0.2/32")  # control: allowed, the same check reaches it
    allowed = await run_check(target.url)
    assert allowed.outcome == "up", allowed.error
    assert target.requests == ["GET / HTTP/1.1"]


async def test_a_check_of_the_mapped_form_of_a_refused_address_never_contacts_it(env, listen):
    target = await listen("127.0.0.2")
    result = await run_check(f"http://[::ffff:127.0.0.2]:{target.port}/")
    await settle()
    assert result.outcome == "error"
    inner = "loopback (IPv4 127.0.0.2 inside " + str(ip("::ffff:127.0.0.2")) + ")"
    assert result.error == refused_text("::ffff:127.0.0.2", inner)
    assert target.connections == 0 and target.requests == []

    try:  # control: where the mapped form is routable here, it does reach the listener without the guard
        _, writer = await asyncio.wait_for(asyncio.open_connection("::ffff:127.0.0.2", target.port), 2)
    except OSError:
        return  # no IPv6 / no mapped addresses on this host: the refusal above is all there is to see
    writer.close()
    await settle()
    assert target.connections == 1


@pytest.mark.parametrize("host", ["127.2", "2130706434", "0177.0.0.2", "0x7f.0.0.2"])
async def test_a_check_of_a_legacy_spelling_never_contacts_the_address(env, listen, host):
    """aiohttp itself refuses the non-canonical IPv4 forms it recognises ("invalid URL", judged DOWN); the others
    reach the guard's resolver, which refuses the address they mean. Either way nothing is connected."""
    target = await listen("127.0.0.2")
    result = await run_check(f"http://{host}:{target.port}/")
    await settle()
    assert result.outcome in ("error", "down")
    if result.outcome == "error":
        assert result.error == refused_text("127.0.0.2", "loopback")
    else:
        assert result.error.startswith(f"invalid URL: {host}")
    assert target.connections == 0 and target.requests == []


# ------------------------------------------------------------------------------------ 7. redirects


async def test_a_redirect_to_a_refused_address_is_refused_without_contacting_it(env, listen):
    hidden = await listen("127.0.0.2")
    front = await listen("127.0.0.1", status=302, headers={"Location": hidden.url + "secret"})
    result = await run_check(front.url)
    await settle()
    assert result.outcome == "error"
    assert result.error == refused_text("127.0.0.2", "loopback")
    assert front.requests == ["GET / HTTP/1.1"]
    assert hidden.connections == 0 and hidden.requests == []


async def test_without_following_redirects_the_302_itself_is_judged(env, listen):
    hidden = await listen("127.0.0.2")
    front = await listen("127.0.0.1", status=302, headers={"Location": hidden.url})
    result = await run_check(front.url, follow_redirects=False)
    assert result.outcome == "up", result.error
    assert result.data["status_code"] == 302
    assert hidden.connections == 0

    strict = await run_check(front.url, follow_redirects=False, expected_status=["200"])
    assert strict.outcome == "down" and strict.error == "HTTP 302 Found (expected 200)"  # judged, not refused


# ------------------------------------------------------------------------------------ 8. host names


async def test_a_host_name_resolving_to_a_refused_address_is_refused(env, listen):
    target = await listen("127.0.0.1")
    env(OUTBOUND_ALLOW_CIDRS="")
    result = await run_check(f"http://localhost:{target.port}/")
    await settle()
    assert result.outcome == "error"
    match = re.fullmatch(r"localhost resolves to address (\S+) is not allowed: loopback; "
                         r"allow it with OUTBOUND_ALLOW_CIDRS", result.error or "")
    assert match, result.error
    assert match.group(1) in ("127.0.0.1", "::1")  # whichever the resolver answers first
    assert target.connections == 0 and target.requests == []


async def test_the_allow_list_lets_a_loopback_test_target_through_by_name(env, listen):
    target = await listen("127.0.0.1")
    result = await run_check(f"http://localhost:{target.port}/")
    assert result.outcome == "up", result.error
    assert result.data["status_code"] == 200
    assert target.requests == ["GET / HTTP/1.1"]


# ------------------------------------------------------------------------------------ 9. DNS rebinding


class FakeResolver:
    """Answers each resolve() with the next list of addresses (the last list repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        self.asked.append(host)
        addresses = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": socket.IPPROTO_TCP, "flags": socket.AI_NUMERICHOST} for a in addresses]

    async def close(self) -> None:
        pass


def guarded_resolver(fake: FakeResolver, allow: str = TEST_ALLOW) -> GuardedResolver:
    resolver = Guard(parse_cidrs(allow)).resolver()
    assert isinstance(resolver, GuardedResolver)
    resolver.inner = fake
    return resolver


async def test_a_name_answering_only_refused_addresses_is_refused():
    resolver = guarded_resolver(FakeResolver(["127.0.0.2"]))
    with pytest.raises(OutboundRefused) as refused:
        await resolver.resolve("rebind.test", 80)
    assert str(refused.value) == "rebind.test resolves to " + refused_text("127.0.0.2", "loopback")

    metadata = guarded_resolver(FakeResolver(["169.254.169.254"]))  # pure: the fake answers, nothing connects
    with pytest.raises(OutboundRefused, match=r"resolves to address 169\.254\.169\.254 is not allowed: link-local"):
        await metadata.resolve("metadata.test", 80)


async def test_only_the_allowed_addresses_of_an_answer_are_kept():
    resolver = guarded_resolver(FakeResolver(["127.0.0.1", "127.0.0.2", "::ffff:127.0.0.3"]))
    kept = await resolver.resolve("mixed.test", 80)
    assert [r["host"] for r in kept] == ["127.0.0.1"]


async def test_a_name_that_rebinds_is_checked_on_every_resolution():
    resolver = guarded_resolver(FakeResolver(["127.0.0.1"], ["127.0.0.2"]))
    assert [r["host"] for r in await resolver.resolve("rebind.test", 80)] == ["127.0.0.1"]
    with pytest.raises(OutboundRefused, match=r"address 127\.0\.0\.2 is not allowed"):
        await resolver.resolve("rebind.test", 80)


async def test_the_resolver_refuses_literal_refused_hosts_before_resolving():
    fake = FakeResolver(["127.0.0.1"])
    with pytest.raises(OutboundRefused, match=r"address 127\.0\.0\.2 is not allowed"):
        await guarded_resolver(fake).resolve("127.2", 80)
    assert fake.asked == []


async def test_a_check_connects_only_to_the_allowed_address_of_a_mixed_answer(listen):
    hidden = await listen("127.0.0.2")
    allowed = await listen("127.0.0.1")
    fake = FakeResolver(["127.0.0.2", "127.0.0.1"])

    class FakeDNSGuard(Guard):
        def resolver(self) -> GuardedResolver:
            resolver = GuardedResolver(self)
            resolver.inner = fake
            return resolver

    guard = FakeDNSGuard(parse_cidrs(TEST_ALLOW))
    async with outbound_http.session(4, guard) as http:
        ctx = SimpleNamespace(http=http, guard=guard)
        up = await website.check(spec(f"http://rebind.test:{allowed.port}/"), ctx)
        assert up.outcome == "up", up.error
        assert allowed.requests == ["GET / HTTP/1.1"]
        fake.answers = [["127.0.0.2"]]
        refused = await website.check(spec(f"http://other-rebind.test:{hidden.port}/"), ctx)
    await settle()
    assert refused.outcome == "error"
    assert refused.error == "other-rebind.test resolves to " + refused_text("127.0.0.2", "loopback")
    assert hidden.connections == 0


def test_the_socket_factory_refuses_a_refused_address_without_a_socket(monkeypatch):
    guard = Guard(parse_cidrs(TEST_ALLOW))
    made: list[tuple[Any, ...]] = []
    real_socket = socket.socket

    def recording_socket(*args: Any, **kwargs: Any) -> socket.socket:
        made.append((args, kwargs))
        return real_socket(*args, **kwargs)

    monkeypatch.setattr(socket, "socket", recording_socket)
    for family, sockaddr in ((socket.AF_INET, ("127.0.0.2", 80)), (socket.AF_INET6, ("::ffff:127.0.0.2", 80, 0, 0)),
                             (socket.AF_INET6, ("::1", 80, 0, 0))):
        with pytest.raises(OutboundRefused, match="is not allowed: loopback"):
            guard.socket_factory((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
    with pytest.raises(OutboundRefused, match="not an address"):
        guard.socket_factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("localhost", 80)))
    assert made == []

    sock = guard.socket_factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80)))
    try:  # an allowed address gets a plain, unconnected socket
        assert made and sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
    finally:
        sock.close()


# ------------------------------------------------------------------------------------ 10. raw TCP


@pytest.mark.parametrize("host", ["127.0.0.2", "127.2", "::ffff:127.0.0.2"])
async def test_raw_tcp_to_a_refused_address_never_connects(listen, host):
    target = await listen("127.0.0.2")
    with pytest.raises(OutboundRefused) as refused:
        await tcp.open_connection(Guard(parse_cidrs(TEST_ALLOW)), host, target.port, 2.0)
    assert str(refused.value).startswith(f"address {literal_address(host)} is not allowed: loopback")
    assert "127.0.0.2" in str(refused.value) and str(refused.value).endswith(HINT)
    await settle()
    assert target.connections == 0


async def test_raw_tcp_to_an_allowed_address_works(listen):
    target = await listen("127.0.0.1")
    reader, writer = await tcp.open_connection(Guard(parse_cidrs(TEST_ALLOW)), "127.0.0.1", target.port, 2.0)
    try:
        writer.write(b"GET /raw HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 2)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert target.requests == ["GET /raw HTTP/1.1"]


async def test_raw_tcp_by_name_is_refused_when_the_name_resolves_to_refused_addresses(listen):
    target = await listen("127.0.0.1")
    with pytest.raises(OutboundRefused, match=r"^localhost resolves to address \S+ is not allowed: loopback"):
        await tcp.open_connection(Guard(), "localhost", target.port, 2.0)
    await settle()
    assert target.connections == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "localhost", "::ffff:127.0.0.1"])
async def test_raw_tcp_to_the_apps_own_storage_is_refused_under_any_spelling(listen, host):
    storage = await listen("127.0.0.1")  # stands in for the storage endpoint; 127.0.0.1 itself is allowed
    guard = Guard(parse_cidrs(TEST_ALLOW), own_endpoints=[("127.0.0.1", storage.port)])
    with pytest.raises(OutboundRefused, match="own storage account"):
        await tcp.open_connection(guard, host, storage.port, 2.0)
    await settle()
    assert storage.connections == 0
