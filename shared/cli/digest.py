"""CLI commands of digest (shared/cli EXTENSIONS):

    python -m monitors digest [--weekly]          the digest of the last day (week), as its e-mail's text
    python -m monitors digest --send CHANNEL      build it and send it to that channel now (by name or id)
    python -m monitors --json digest              the digest as JSON (shared/notify/digest.py `Digest`)

A digest sent with --send is not one of the channel's scheduled digests: it does not move the channel's watermark.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from shared.errors import NotFound
from shared.notify.digest import DAY, WEEK, Digest, build_digest
from shared.notify.digest_render import render_digest


async def _digest(store: Any, settings: Any, args: argparse.Namespace) -> dict[str, Any]:
    until = datetime.now(UTC)
    since = until - (WEEK if args.weekly else DAY)
    title = "Weekly digest" if args.weekly else "Daily digest"
    if not args.send:
        return (await build_digest(store, settings, since, until, title=title)).model_dump(mode="json")
    from shared.notify.digest_due import send_digest
    from shared.notify.routing import stored_channels

    defn = next((c for c in await stored_channels(store) if args.send in (c.name, c.id)), None)
    if defn is None:
        raise NotFound(f"no channel {args.send}")
    defn = defn.model_copy(update={"digest": "weekly" if args.weekly else "daily"})
    outcome = await send_digest(store, settings, defn, since, until)
    return {"channel": defn.name, "sent": outcome.sent, "failed": outcome.failed, "retry": outcome.retry}


def _show(data: dict[str, Any]) -> str:
    if "channel" in data:
        lines = [f"digest sent to {label}" for label in data["sent"]]
        lines += [f"not sent to {label}: {error}" for label, error in {**data["failed"], **data["retry"]}.items()]
        return "\n".join(lines) or f"channel {data['channel']} has no one to send to (e-mail switched off?)"
    return render_digest(Digest.model_validate(data)).text.rstrip()


def add_commands(command: Any, common: Any) -> None:  # noqa: ARG001 - the extension interface
    from shared.cli import COMMANDS, TABLES

    d = command("digest", help="the digest of the last day (or --weekly); --send CHANNEL sends it there now")
    d.add_argument("--weekly", action="store_true", help="the last 7 days instead of the last day")
    d.add_argument("--send", metavar="CHANNEL", help="send it to this channel (name or id) now")
    COMMANDS["digest"] = _digest
    TABLES["digest"] = _show
