"""The retry policy of every outbound call, on stamina (exponential backoff with jitter, a cap on attempts and on
total time, retry only what is transient).

    async for attempt in WHMCS.tries(on=is_transient):
        with attempt:
            return await request()

`testing()` turns every backoff off (the attempts stay as configured), so tests see real retries without waits.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import stamina
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

log = logging.getLogger("monitor.retry")
R = TypeVar("R")


class _Again(Exception):
    """A result that asks for another try (RetryPolicy.until)."""


def _log_retry(details: RetryDetails) -> None:
    log.info("%s failed (try %d), trying again in %.1f s: %s", details.name, details.retry_num,
             details.wait_for, details.caused_by)


set_on_retry_hooks([_log_retry])  # only ours: no Prometheus counters or structlog lines of stamina's own


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries; waits grow from `wait_initial` by ×2 up to `wait_max`, plus up to `jitter`
    seconds at random; `timeout` bounds the whole (None: only the attempts do)."""

    attempts: int
    wait_initial: float
    wait_max: float
    jitter: float = 0.1
    timeout: float | None = None

    def tries(self, on: type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool],
              what: str, attempts: int | None = None) -> AsyncIterator[Any]:
        """An async iterator of attempts (use `with attempt:` around each try; `attempt.num` counts from 1); the
        last failure is raised. `what` names the call in the retry log lines."""
        context = stamina.retry_context(on=on, attempts=attempts or self.attempts, timeout=self.timeout,
                                        wait_initial=self.wait_initial, wait_max=self.wait_max,
                                        wait_jitter=self.jitter)
        return aiter(context.with_name(what, (), {}))

    async def until(self, attempt: Callable[[int], Awaitable[R]], good: Callable[[R], bool], what: str,
                    attempts: int | None = None) -> R:
        """Call `attempt(n)` until its result is `good` or the attempts are used up; the last result stands. The
        first call is made directly: the success path costs nothing of the retry machinery."""
        limit = attempts or self.attempts
        result = await attempt(1)
        if good(result) or limit <= 1:
            return result
        try:
            async for each in self.tries(_Again, what, attempts=limit):
                with each:
                    if each.num > 1:
                        result = await attempt(each.num)
                    if not good(result) and each.num < limit:
                        raise _Again(what)
        except _Again:  # the time budget ran out first: the last result stands
            pass
        return result


def testing(enabled: bool = True) -> None:
    """Tests: no backoff waits (every policy keeps its number of attempts)."""
    stamina.set_testing(enabled, attempts=1000, cap=True)


# The policies of the app's integrations, in one place.
WEBSITE = RetryPolicy(attempts=3, wait_initial=0.25, wait_max=2.0, jitter=0.05)  # a check's own tries
WHMCS = RetryPolicy(attempts=3, wait_initial=0.5, wait_max=2.0)
INVENTREE = RetryPolicy(attempts=3, wait_initial=0.5, wait_max=2.0)
SMTP = RetryPolicy(attempts=3, wait_initial=0.2, wait_max=0.5)
# The app's own storage: a request that never reached it (a pooled connection the server had closed, a reset
# while it was busy) is sent again; anything it answered is not retried here.
STORAGE = RetryPolicy(attempts=3, wait_initial=0.1, wait_max=1.0)
