"""`python -m monitors channels list | add TYPE field=value… | show ID | update ID field=value… | delete ID |
test ID` — channels by id or name (shared/manage/channels.py)."""

from __future__ import annotations

import argparse
from typing import Any

from shared.cli import render


def _run(store: Any, settings: Any, args: argparse.Namespace) -> Any:
    from shared.cli import _deleted, _fields, _listed
    from shared.manage import channels as service

    if args.action == "list":
        return _listed(service.list_channels(store))
    if args.action == "add":
        return service.create_channel(store, {"type": args.type, **_fields(args.fields)})
    if args.action == "show":
        return service.get_channel(store, args.id)
    if args.action == "update":
        return service.update_channel(store, args.id, _fields(args.fields))
    if args.action == "test":
        return service.test_channel(store, settings, args.id)
    return _deleted(service.delete_channel(store, args.id), args.id)


def _table(data: dict[str, Any]) -> str:
    if data.get("deleted"):
        return render.deleted(data)
    if "results" in data:  # a test
        rows = [{"target": r["target"], "ok": r["ok"], "answer": r["answer"]} for r in data["results"]]
        return render.table(rows, ["target", "ok", "answer"])
    items = data.get("items", [data])
    rows = [{"id": c.get("id"), "name": c.get("name"), "type": c.get("type"), "enabled": c.get("enabled"),
             "default": c.get("default"), "operator": c.get("operator"),
             "to": ", ".join(c.get("recipients") or []) or c.get("url"),
             "filter": _filter(c.get("filter") or {}), "digest": c.get("digest")} for c in items]
    return render.table(rows, ["id", "name", "type", "enabled", "default", "operator", "to", "filter", "digest"])


def _filter(flt: dict[str, Any]) -> str:
    parts = []
    if flt.get("types"):
        parts.append(",".join(flt["types"]))
    if flt.get("min_severity") not in (None, "info"):
        parts.append(f">={flt['min_severity']}")
    if flt.get("kinds"):
        parts.append("kinds " + ",".join(flt["kinds"]))
    return "; ".join(parts) or "all"


def add_commands(command: Any, common: Any) -> None:
    from shared import cli

    sub = command("channels", help="notification channels (e-mail, webhook, Apprise: Slack, Teams, Telegram, …)")
    actions = sub.add_subparsers(dest="action", required=True)
    actions.add_parser("list", parents=[common])
    add = actions.add_parser("add", parents=[common], help="add TYPE field=value … (email, webhook, apprise)")
    add.add_argument("type")
    add.add_argument("fields", nargs="*")
    for name in ("show", "delete", "test"):
        actions.add_parser(name, parents=[common]).add_argument("id", help="the channel's id or name")
    upd = actions.add_parser("update", parents=[common], help="update ID field=value …")
    upd.add_argument("id")
    upd.add_argument("fields", nargs="+")
    cli.COMMANDS["channels"] = _run
    cli.TABLES["channels"] = _table
