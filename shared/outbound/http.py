"""The HTTP sessions of a check run: one behind the outbound guard for targets that monitor definitions name, one
for endpoints the operator configured in settings (WHMCS, InvenTree, Azure Monitor)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from shared.outbound.guard import Guard

USER_AGENT = "azure-monitor-functions/0.1 (+https://github.com/)"


class PeerCertResponse(aiohttp.ClientResponse):
    """A response that remembers the server's TLS certificate (DER) in `peer_cert`.

    aiohttp releases `response.connection` as soon as the whole body has arrived, which for small bodies and HEAD
    requests happens before the caller gets the response (aio-libs/aiohttp#2205), so the certificate must be taken
    when the response starts.
    """

    peer_cert: bytes | None = None

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        transport = connection.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is not None:
            self.peer_cert = ssl_object.getpeercert(binary_form=True)
        return await super().start(connection)


def peer_cert(resp: aiohttp.ClientResponse) -> bytes | None:
    return getattr(resp, "peer_cert", None)


def user_agent(location: str | None) -> str:
    """What checks send as User-Agent: the app's, and the location checking (several CHECK_LOCATIONS), so a target's
    logs can tell them apart."""
    return f"{USER_AGENT} location/{location}" if location else USER_AGENT


def session(limit: int, guard: Guard | None, agent: str = USER_AGENT) -> aiohttp.ClientSession:
    """A session for one run: no cookies, no proxies from the environment, the peer certificate kept; with a
    guard, every connection goes through its resolver and socket factory."""
    kwargs: dict[str, Any] = {}
    if guard is not None:
        kwargs = {"resolver": guard.resolver(), "socket_factory": guard.socket_factory}
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True,
                                     **kwargs)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 headers={"User-Agent": agent}, trust_env=False,
                                 response_class=PeerCertResponse)


@asynccontextmanager
async def sessions(limit: int, guard: Guard,
                   agent: str = USER_AGENT) -> AsyncIterator[tuple[aiohttp.ClientSession, aiohttp.ClientSession]]:
    """(guarded, trusted) sessions, closed together."""
    async with session(limit, guard, agent) as guarded, session(limit, None, agent) as trusted:
        yield guarded, trusted
