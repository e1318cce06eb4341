"""The Apprise channel: one URL reaches any of Apprise's services (Slack, Teams, Telegram, Discord, PagerDuty,
Opsgenie, Pushover, Matrix, ntfy, Gotify, …; https://github.com/caronc/apprise/wiki), so we do not write a sender
per chat service.

- `apprise` is imported on first use, never at module import: it takes half a second, and every function
  invocation imports this module through the channel definitions.
- Sending is blocking (requests): the pipeline runs `send` in a thread. It goes through the outbound guard for
  blocking clients (shared/outbound/sync_guard.py), so a URL naming a private address is refused before any
  connection (a PermanentError naming the address; the operator allows it with OUTBOUND_ALLOW_CIDRS).
- Apprise's `notify` says only whether it worked; the reason is in what it logged. Apprise 2.x collects the log
  of each call on the result it returns (`AppriseResult.logs()`, kept per call through a ContextVar), which is
  what `apprise.LogCapture` gives too, but without LogCapture's one process-wide handler that would mix the
  reasons of sends running at the same time in other threads. The reason is scrubbed and classified: an HTTP
  4xx other than 408/429 is permanent (a token or URL refused), anything else transient.
- The URL carries the service's tokens: it is registered with shared.secrets at construction, and no message
  here echoes it (a refused URL is described by its scheme only).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from shared import secrets
from shared.notify.channel import Notification, PermanentError, TransientError
from shared.notify.definitions import AppriseChannelDef
from shared.outbound.errors import http_status
from shared.outbound.guard import Guard
from shared.outbound.sync_guard import guarded
from shared.text import one_line

WIKI = "https://github.com/caronc/apprise/wiki"
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]{0,31})://")
_STATUS = re.compile(r"\berror=(\d{3})(?:\d{2})?\b")  # "…, error=401." (ntfy: its own code 40101)
_PERMANENT_EXCEPT = frozenset({408, 425, 429})
# Schemes Apprise no longer has, and what replaced them
RETIRED = {
    "msteams": "Microsoft retired Teams' Office 365 connectors and Apprise 2.x dropped msteams://; add a Teams "
               "Workflow and use its URL (workflows://… or the https://…logic.azure.com/… address itself); see "
               "https://appriseit.com/services/workflows/",
}


def _apprise() -> Any:
    import apprise

    return apprise


def _asset() -> Any:
    """Apprise's settings for us: no persistent store on disk, secure logging (tokens masked in its own lines)."""
    apprise = _apprise()
    return apprise.AppriseAsset(storage_mode="memory", secure_logging=True)


class _ThreadLog(logging.Handler):
    """Warnings and errors the `apprise` logger emits in this thread (for validation, where no result exists)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            try:
                self.lines.append(record.getMessage())
            except Exception:  # noqa: BLE001 - a malformed record of someone else's is not our failure
                return


@contextmanager
def _captured() -> Iterator[_ThreadLog]:
    handler = _ThreadLog()
    logger = logging.getLogger("apprise")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _without(text: str, url: str) -> str:
    """`text` without any part of `url` but its scheme (tokens, host names and paths are what a URL carries)."""
    match = _SCHEME.match(url)
    scheme = match[1].lower() if match else ""
    for part in sorted(set(re.split(r"[/:?&=@#,;\s]+", url)), key=len, reverse=True):
        if len(part) >= 4 and part.lower() != scheme:
            text = text.replace(part, "***")
    return secrets.scrub(text)


def service_of(url: str) -> Any:
    """The Apprise plugin class an URL's scheme names (None: none)."""
    match = _SCHEME.match(url)
    if match is None:
        return None
    manager = _apprise().NotificationManager()
    scheme = match[1].lower()
    if scheme not in manager:  # a plugin manager, not a dict: no .get
        return None
    return manager[scheme]


def validate_url(url: str) -> str | None:
    """None when Apprise accepts the URL (parsed into a service, no network), else what is wrong with it — in
    words that name the scheme, never the URL's tokens."""
    apprise = _apprise()
    match = _SCHEME.match(url or "")
    if match is None or any(c.isspace() for c in url.strip()):
        return (f"not an Apprise URL: expected service://… (e.g. ntfy://ntfy.sh/topic, slack://…); see {WIKI}")
    scheme = match[1].lower()
    with _captured() as log:
        service = apprise.Apprise.instantiate(url.strip(), asset=_asset())
    if service is not None:
        return None
    plugin = service_of(url)
    if plugin is None and scheme in RETIRED:
        return RETIRED[scheme]
    if plugin is None:
        return f"unknown service '{scheme}://'; see {WIKI}"
    name = getattr(plugin, "service_name", scheme)
    where = getattr(plugin, "setup_url", None) or WIKI
    if not getattr(plugin, "enabled", True):
        return f"the {name} service ('{scheme}://') is not available on this server; see {where}"
    reasons = [line for line in log.lines if "Unparseable" not in line and "Unsupported URL" not in line]
    reason = f": {_without(one_line(reasons[-1], 200), url)}" if reasons else ""
    return f"not a valid {name} URL ('{scheme}://'){reason}; see {where}"


class AppriseChannel:
    name = "apprise"

    def __init__(self, definition: AppriseChannelDef, settings: Any) -> None:
        self.definition = definition
        self.guard = Guard.from_settings(settings)
        secrets.register(*definition.secret_values())
        match = _SCHEME.match(definition.url.get_secret_value())
        self.scheme = match[1].lower() if match else "?"

    def __repr__(self) -> str:
        return f"AppriseChannel({self.scheme}://***)"

    def send(self, note: Notification) -> str:
        apprise = _apprise()
        url = self.definition.url.get_secret_value()
        asset = _asset()
        service = apprise.Apprise.instantiate(url, asset=asset)
        if service is None:
            raise PermanentError(validate_url(url) or f"Apprise cannot use this '{self.scheme}://' URL",
                                 scope="channel")
        label = str(getattr(service, "service_name", self.scheme))
        notifier = apprise.Apprise(asset=asset)
        notifier.add(service)
        with guarded(self.guard) as guarding:
            result = notifier.notify(body=note.short or note.text, title=note.subject,
                                     body_format=apprise.NotifyFormat.TEXT)
        if guarding.refused:
            raise PermanentError(f"{label}: refused by the outbound guard: {guarding.refused[0]}", scope="channel")
        if result:
            return f"accepted by {label}"
        lines = [_without(one_line(entry.message, 300), url) for entry in result.logs()
                 if entry.level in ("WARNING", "ERROR", "CRITICAL")]
        raise classify(label, lines, guarding.failed[-1:])


def classify(label: str, lines: Sequence[str], network: Sequence[str] = ()) -> PermanentError | TransientError:
    """What Apprise logged about a failed send → the error: an HTTP 4xx (but 408/425/429) is permanent. `network`:
    what the guard saw of a failed connection ("cannot connect to host:port: connection refused")."""
    reason = "; ".join(dict.fromkeys([*network, *lines]))[:400] or "no reason given"
    for line in lines:
        found = _STATUS.search(line)
        if found:
            status = int(found[1])
            words = f"{label} answered {http_status(status)} ({reason})"
            if 400 <= status < 500 and status not in _PERMANENT_EXCEPT:
                return PermanentError(words, scope="channel", code=status)
            return TransientError(words, scope="channel", code=status)
    return TransientError(f"{label} did not accept the message: {reason}", scope="channel")
