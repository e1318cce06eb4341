"""What every part of the local host shares: a discovered function and how it is invoked, binding expressions and
host.json time spans, and the app settings the host itself reads (not the app's: those are shared/settings.py).

- `AzureWebJobs.<FunctionName>.Disabled` (or the Linux form `AzureWebJobs_<FunctionName>_Disabled`) set to `true`
  or `1`, any case: the function is disabled, as on the real host (read once, at start).
- `DEVHOST_QUEUE_LEASE_SECONDS` (devhost only, default 60): how long a received queue message stays hidden at a
  time while it waits and runs (renewed meanwhile), so how soon a host that died gives it back.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

LEASE_SECONDS = 60  # a received queue message is hidden this long at a time…
RENEW_SECONDS = 20.0  # …and its lease renewed this often (a third of a shorter lease) while it waits or runs
LEASE_SETTING = "DEVHOST_QUEUE_LEASE_SECONDS"
MAX_LEASE_SECONDS = 7 * 24 * 3600  # the longest visibility timeout Azure Storage queues accept


class BadSetting(SystemExit):
    """A devhost setting that cannot be used: a SystemExit carrying one line (`python -m devhost` ends with it)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


@dataclass
class Function:
    name: str
    handler: Callable[..., Any]
    trigger: dict[str, Any]
    arg: str


async def invoke(fn: Function, value: Any) -> Any:
    result = fn.handler(**{fn.arg: value})
    if inspect.isawaitable(result):
        result = await result
    return result


def resolve(value: str) -> str:
    """`%NAME%` app-setting expressions, as the host resolves them in binding attributes."""
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise KeyError(f"binding expression %{name}% names a setting that is not set")
        return os.environ[name]

    return re.sub(r"%([^%]+)%", sub, value)


def seconds(value: Any) -> float:
    """host.json TimeSpan "hh:mm:ss" (or a number of seconds)."""
    if isinstance(value, (int, float)):
        return float(value)
    h, m, s = str(value).split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def disabled_by(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The app setting that disables function `name` (`AzureWebJobs.<name>.Disabled` or, as Linux app settings
    cannot hold dots, `AzureWebJobs_<name>_Disabled`, set to "true" or "1" in any case), or None. Setting names are
    matched without regard to case, as the host's configuration does."""
    wanted = {f"azurewebjobs.{name}.disabled".lower(), f"azurewebjobs_{name}_disabled".lower()}
    for key, value in (os.environ if environ is None else environ).items():
        if key.lower() in wanted and value.strip().lower() in ("true", "1"):
            return key
    return None


def queue_lease_seconds(environ: Mapping[str, str] | None = None) -> int:
    """DEVHOST_QUEUE_LEASE_SECONDS: whole seconds, 1 to 7 days; unset or empty: LEASE_SECONDS."""
    raw = (os.environ if environ is None else environ).get(LEASE_SETTING, "").strip()
    if not raw:
        return LEASE_SECONDS
    try:
        lease = int(raw)
    except ValueError:
        lease = 0
    if not 1 <= lease <= MAX_LEASE_SECONDS:
        raise BadSetting(f"{LEASE_SETTING}={raw!r}: give whole seconds from 1 to {MAX_LEASE_SECONDS} (default "
                         f"{LEASE_SECONDS})")
    return lease


def renew_seconds(lease: float) -> float:
    """How often a lease of `lease` seconds is renewed: every RENEW_SECONDS, or a third of a shorter lease."""
    return min(RENEW_SECONDS, lease / 3)
