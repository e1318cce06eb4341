"""The outbound guard: checks reach public addresses only, unless the operator allowed more.

Anyone with a function key defines what a check requests, so without a guard a monitor could read the instance
metadata service (169.254.169.254), the app's own storage endpoint, or anything on the private network, and leak it
back piece by piece through `keyword`/`body_regex`. Every connection a check opens is decided here:

- a host name is resolved, and only the addresses the guard allows are connected to (the resolver drops the
  others; none left is a refusal) — the address connected to is the one that was checked, so a DNS answer that
  changes between check and connect (rebinding) cannot slip through;
- the socket factory checks the exact address of every connection attempt, whatever produced it: a literal IP in
  the URL, a redirect, a cached DNS answer;
- refused: loopback, link-local, private, shared (CGNAT), unspecified, multicast, reserved and other non-global
  addresses, IPv4 addresses embedded in IPv6 (mapped ::ffff:a.b.c.d, compatible, 6to4, Teredo, NAT64) by the
  IPv4 address inside, and the app's own storage endpoints by host name;
- `OUTBOUND_ALLOW_CIDRS` (comma-separated networks, empty by default) lets addresses through: the local host and
  the demo allow loopback; an internal webhook or a private site needs its network listed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
HINT = "allow it with OUTBOUND_ALLOW_CIDRS"


class OutboundRefused(Exception):
    """A check tried to reach an address the guard does not allow. The message says which and why."""


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo client, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    packed = int(ip)
    if packed >> 32 == 0 and packed > 1:  # deprecated IPv4-compatible ::a.b.c.d (not :: or ::1)
        return ipaddress.IPv4Address(packed)
    return None


def classify(ip: IPAddress) -> str | None:
    """Why an address is not a public unicast address; None when it is one."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        reason = classify(inner)
        return f"{reason} (IPv4 {inner} inside {ip})" if reason else None
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared address space (carrier-grade NAT)"
    if ip.is_reserved:  # before is_private, which also covers 240.0.0.0/4
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not globally routable"
    return None


def parse_cidrs(text: str | None) -> list[Network]:
    """`OUTBOUND_ALLOW_CIDRS`: comma- or space-separated networks (a bare address is a /32 or /128)."""
    out: list[Network] = []
    for part in (text or "").replace(";", ",").replace(" ", ",").split(","):
        if part.strip():
            out.append(ipaddress.ip_network(part.strip(), strict=False))
    return out


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host names when it is an address: dotted quads, IPv6 (brackets optional), and the
    legacy IPv4 spellings resolvers accept (127.1, 2130706433, 0x7f.0.0.1, 0177.0.0.1)."""
    host = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _endpoint(host: str, port: int) -> tuple[str, int]:
    """An endpoint as it is compared with the app's own: lower case, without brackets or a trailing dot, an address
    by the IPv4 address it carries (127.1, 2130706433 and [::ffff:127.0.0.1] are all 127.0.0.1)."""
    host = host.strip().strip("[]").rstrip(".").lower()
    ip = literal_address(host)
    if ip is not None:
        host = str(embedded_ipv4(ip) or ip)
    return host, int(port)


class Guard:
    """What may be connected to: an allow-list of networks and the app's own storage endpoints (host, port)."""

    def __init__(self, allow: Iterable[Network] = (), own_endpoints: Iterable[tuple[str, int]] = ()) -> None:
        self.allow = list(allow)
        self.own = {_endpoint(host, port) for host, port in own_endpoints}

    @classmethod
    def from_settings(cls, settings: Any) -> Guard:
        return cls(parse_cidrs(getattr(settings, "outbound_allow_cidrs", None)), storage_endpoints(settings))

    def allowed(self, ip: IPAddress) -> bool:
        inner = embedded_ipv4(ip)
        if any(ip in net for net in self.allow) or (inner is not None and any(inner in net for net in self.allow)):
            return True
        return classify(ip) is None

    def refusal(self, ip: IPAddress) -> str | None:
        """The operator's explanation of why `ip` is refused; None when it is allowed."""
        if self.allowed(ip):
            return None
        return f"address {ip} is not allowed: {classify(ip)}; {HINT}"

    def check_address(self, ip: IPAddress) -> None:
        reason = self.refusal(ip)
        if reason:
            raise OutboundRefused(reason)

    def check_host(self, host: str, port: int) -> None:
        """Refuse the app's own storage endpoints and literal addresses the guard does not allow."""
        if _endpoint(host, port) in self.own:
            raise OutboundRefused(f"{host}:{port} is the app's own storage account; checks may not read it")
        ip = literal_address(host)
        if ip is not None:
            self.check_address(ip)

    def check_url(self, url: str) -> None:
        """For create time: a URL naming a refused literal address or the app's storage (hosts are resolved
        only when checked)."""
        parts = urlsplit(url)
        if parts.hostname:
            self.check_host(parts.hostname, parts.port or (443 if parts.scheme.lower() in ("https", "wss") else 80))

    # -- aiohttp ------------------------------------------------------------------------------------------

    def resolver(self) -> AbstractResolver:
        return GuardedResolver(self)

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's socket_factory: called with the exact address of every connection attempt."""
        family, type_, proto, _, sockaddr = addr_info
        ip = literal_address(str(sockaddr[0]))
        if ip is None:
            raise OutboundRefused(f"refusing to connect to {sockaddr[0]!r}: not an address")
        if _endpoint(str(ip), int(sockaddr[1])) in self.own:
            raise OutboundRefused(f"{ip}:{sockaddr[1]} is the app's own storage account; checks may not read it")
        self.check_address(ip)
        return socket.socket(family=family, type=type_, proto=proto)


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver and keeps only the addresses the guard allows."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.guard.check_host(host, port)
        found = await self.inner.resolve(host, port, family)
        kept = [r for r in found if self.guard.allowed(_address(r["host"]))]
        if not kept:
            raise OutboundRefused(f"{host} resolves to {self.guard.refusal(_address(found[0]['host']))}")
        return kept

    async def close(self) -> None:
        await self.inner.close()


def _address(text: str) -> IPAddress:
    return ipaddress.ip_address(str(text).split("%")[0])


def storage_endpoints(settings: Any) -> list[tuple[str, int]]:
    """(host, port) of the app's own storage account's endpoints, from AzureWebJobsStorage or its identity-based
    settings."""
    hosts: list[tuple[str, int]] = []
    account = getattr(settings, "storage_account_name", None)
    if account:
        hosts += [(f"{account}.{svc}.core.windows.net", 443) for svc in ("blob", "queue", "table", "file", "dfs")]
    for attr in ("storage_table_uri", "storage_queue_uri"):
        uri = getattr(settings, attr, None)
        if uri:
            hosts.append(_host_port(uri))
    secret = getattr(settings, "storage_connection", None)
    if secret is not None:
        from shared.storage.base import expand_dev_storage

        conn = expand_dev_storage(secret.get_secret_value())
        parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
        for key, value in parts.items():
            if key.endswith("Endpoint") and "://" in value:
                hosts.append(_host_port(value))
        if parts.get("AccountName") and "EndpointSuffix" in parts:
            hosts += [(f"{parts['AccountName']}.{svc}.{parts['EndpointSuffix']}", 443)
                      for svc in ("blob", "queue", "table", "file")]
        elif parts.get("AccountName") and not any(k.endswith("Endpoint") for k in parts):
            hosts += [(f"{parts['AccountName']}.{svc}.core.windows.net", 443) for svc in ("blob", "queue", "table")]
    return hosts


def _host_port(uri: str) -> tuple[str, int]:
    parts = urlsplit(uri)
    return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)
