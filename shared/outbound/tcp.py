"""Raw TCP (and TLS) connections for checks, behind the outbound guard: the host is resolved once, only allowed
addresses are tried, and the address connected to is the one that was checked."""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module

from shared.outbound.guard import Guard, OutboundRefused, literal_address


async def open_connection(guard: Guard, host: str, port: int, timeout: float,
                          tls: ssl_module.SSLContext | None = None,
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A guarded asyncio connection to host:port (TLS with SNI = host when `tls` is given). Raises
    OutboundRefused, TimeoutError or OSError."""
    guard.check_host(host, port)
    literal = literal_address(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        addresses = [a for a in found if (ip := literal_address(a)) is not None and guard.allowed(ip)]
        if not addresses:
            first = literal_address(found[0]) if found else None
            raise OutboundRefused(f"{host} resolves to {guard.refusal(first) if first else 'nothing'}")
    last: BaseException | None = None
    for address in addresses:
        ip = literal_address(address)
        if ip is None:
            continue
        guard.check_host(address, port)  # the address and the app's own storage endpoints
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(address, port, ssl=tls, server_hostname=host if tls is not None else None),
                timeout)
        except OSError as error:
            last = error
    raise last or OSError(f"cannot connect to {host}:{port}")
