"""TCP connect checks: can a TCP connection to host:port be opened, and how long does it take?

A kind written only against the kind contract (monitors/contract.py), to prove that a new kind is this module plus
one line in monitors/__init__.py REGISTRY. tests/test_kind_plugin.py copies it to monitors/tcpconnect.py in a copy
of the app. Every connection goes through the outbound guard (shared/outbound/tcp.py).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from monitors.base import UpDownPolicy
from monitors.contract import CheckContext, CheckResult, Sample
from monitors.policy import UpDownKind

KIND = "tcpconnect"


class Config(UpDownPolicy):
    kind: Literal["tcpconnect"] = "tcpconnect"
    host: str = Field(..., min_length=1, max_length=253, description="Host name or IP address to connect to.")
    port: int = Field(..., ge=1, le=65535, description="TCP port.")
    timeout_seconds: float = Field(10.0, gt=0, le=60, description="Give up connecting after this long.")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        host = value.strip("[]")
        if not host or any(c in host for c in " /?#@\\") or any(ord(c) < 33 for c in host):
            raise ValueError("must be a host name or an IP address (no scheme, path or port)")
        try:
            host.encode("idna")
        except UnicodeError:
            raise ValueError("has an invalid host name") from None
        return host

    def unique_keys(self) -> list[str]:
        return [f"{self.host.lower()}:{self.port}"]




def _hostport(cfg: Config) -> str:
    return f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"


class TcpConnect(UpDownKind[Config]):
    name = KIND
    model = Config
    title = "TCP ports"
    unique_field = "host"
    metrics: ClassVar[dict[str, str]] = {
        "tcpconnect_connect_seconds": "Time to open a TCP connection in the monitor's latest check."}

    async def check(self, cfg: Config, ctx: CheckContext) -> CheckResult:
        from shared.outbound.errors import describe
        from shared.outbound.guard import OutboundRefused
        from shared.outbound.tcp import open_connection

        if ctx.guard is None:
            return CheckResult("error", error="no outbound guard in the check context")
        started = time.perf_counter()
        try:
            _, writer = await open_connection(ctx.guard, cfg.host, cfg.port, cfg.timeout_seconds)
        except OutboundRefused as refused:  # the operator's problem (the allow-list), not the target's
            return CheckResult("error", error=str(refused))
        except (TimeoutError, OSError) as error:
            words = describe(error, cfg.timeout_seconds) or type(error).__name__
            return CheckResult("down", error=f"cannot connect to {_hostport(cfg)}: {words}")
        latency = round((time.perf_counter() - started) * 1000, 1)
        writer.close()
        with contextlib.suppress(OSError):  # the peer may close first; the connection was made: that is checked
            await writer.wait_closed()
        return CheckResult("up", latency)

    def outbound_targets(self, cfg: Config) -> dict[str, str]:
        return {"host": f"tcp://{_hostport(cfg)}"}

    def target(self, cfg: Config) -> str:
        return _hostport(cfg)

    def public_url(self, cfg: Config) -> str | None:
        return None

    def samples(self, row: dict[str, Any]) -> list[Sample]:
        latency = row.get("latency_ms") if row.get("outcome") == "up" else None
        return [Sample("tcpconnect_connect_seconds", None if latency is None else float(latency) / 1000)]


PLUGIN = TcpConnect()
