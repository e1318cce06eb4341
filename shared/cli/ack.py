"""CLI commands of acknowledgements (shared/cli EXTENSIONS):

    python -m monitors ack ID [--note TEXT] [--by NAME]   acknowledge the monitor's current problem
    python -m monitors unack ID                           take the acknowledgement back
"""

from __future__ import annotations

import argparse
from typing import Any


async def _ack(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    from shared.notify import ack

    body = {key: value for key, value in (("note", args.note), ("by", args.by)) if value is not None}
    return await ack.acknowledge(store, args.id, body, by="cli")


async def _unack(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    from shared.notify import ack

    await ack.unacknowledge(store, args.id)
    return {"id": args.id, "acknowledged": False}


def _acked(data: dict[str, Any]) -> str:
    note = f" ({data['note']})" if data.get("note") else ""
    return f"acknowledged {data['monitor_id']}: {data['status']} since {data['since']}, by {data['by']}{note}"


def _unacked(data: dict[str, Any]) -> str:
    return f"not acknowledged any more: {data['id']}"


def add_commands(command: Any, common: Any) -> None:  # noqa: ARG001 - shared/cli's extension signature
    from shared.cli import COMMANDS, TABLES

    a = command("ack", help="acknowledge a monitor's current problem (its reminders and escalations stop)")
    a.add_argument("id")
    a.add_argument("--note", help="what is being done about it")
    a.add_argument("--by", help="who acknowledges (default: cli)")
    command("unack", help="take back the acknowledgement of a monitor's problem").add_argument("id")
    COMMANDS["ack"] = lambda store, _, args: _ack(store, args)
    COMMANDS["unack"] = lambda store, _, args: _unack(store, args)
    TABLES["ack"] = _acked
    TABLES["unack"] = _unacked
