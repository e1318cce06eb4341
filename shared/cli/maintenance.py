"""`python -m monitors maintenance list [--active] | add field=value… | show ID | update ID field=value… |
delete ID` — maintenance windows (shared/windows/service.py).

    python -m monitors maintenance add name="Patch day" rrule="FREQ=MONTHLY;BYDAY=1WE" at=02:00 \
        duration_minutes=120 timezone=Europe/Berlin tags=db,shop

`monitors`, `tags` and `kinds` also take a comma-separated list (`tags=db,shop`), as well as a JSON list.
"""

from __future__ import annotations

import argparse
from typing import Any

from shared.cli import render

LISTS = ("monitors", "tags", "kinds")


def _fields(pairs: list[str]) -> dict[str, Any]:
    from shared.cli import _fields as parse_pairs

    out = parse_pairs(pairs)
    for name in LISTS:
        if isinstance(out.get(name), str):
            out[name] = [part.strip() for part in out[name].split(",") if part.strip()]
    return out


def _run(store: Any, _settings: Any, args: argparse.Namespace) -> Any:
    from shared.cli import _deleted, _listed
    from shared.windows import service

    if args.action == "list":
        return _listed(service.list_windows(store, True if args.active else None))
    if args.action == "add":
        return service.create_window(store, _fields(args.fields))
    if args.action == "show":
        return service.get_window(store, args.id)
    if args.action == "update":
        return service.update_window(store, args.id, _fields(args.fields))
    return _deleted(service.delete_window(store, args.id), args.id)


def when(w: dict[str, Any], zone: bool = True) -> str:
    """A window's schedule in one line (`zone`: with its time zone)."""
    if w.get("start"):
        return f"once {w['start']} → {w.get('end')}"
    rule = f"cron {w['cron']}" if w.get("cron") else f"rrule {w.get('rrule')} at {w.get('at')}"
    bounds = "".join(f" {word} {w[key]}" for word, key in (("from", "starts_on"), ("until", "ends_on")) if w.get(key))
    tz = f" ({w.get('timezone')})" if zone else ""
    return f"{rule} for {w.get('duration_minutes')} min{tz}{bounds}"


def scope(w: dict[str, Any]) -> str:
    if w.get("all"):
        return "all monitors"
    parts = [f"{name} {','.join(w[name])}" for name in ("tags", "kinds") if w.get(name)]
    if w.get("monitors"):
        parts.insert(0, f"{len(w['monitors'])} monitor(s)")
    return "; ".join(parts)


def _span(value: dict[str, Any] | None) -> str | None:
    return None if not value else f"{value['start']} → {value['end']}"


def _table(data: dict[str, Any]) -> str:
    if data.get("deleted"):
        return render.deleted(data)
    if "items" not in data:  # one window: every field
        shown = {**data, "when": when(data), "scope": scope(data), "current": _span(data.get("current")),
                 "next": _span(data.get("next"))}
        return render.vertical(shown)
    rows = [{"id": w.get("id"), "name": w.get("name"), "enabled": w.get("enabled"), "when": when(w, zone=False),
             "zone": w.get("timezone"), "scope": scope(w), "active": w.get("active_now"),
             "next (UTC)": (w.get("next") or {}).get("start")} for w in data["items"]]
    return render.table(rows, ["id", "name", "enabled", "when", "zone", "scope", "active",
                                "next (UTC)"])


def add_commands(command: Any, common: Any) -> None:
    from shared import cli

    sub = command("maintenance", help="maintenance windows (alerts held, uptime excludes them)")
    actions = sub.add_subparsers(dest="action", required=True)
    actions.add_parser("list", parents=[common]).add_argument("--active", action="store_true",
                                                              help="only the windows active now")
    add = actions.add_parser("add", parents=[common], help="add field=value … (name, rrule/cron/start+end, …)")
    add.add_argument("fields", nargs="+")
    for name in ("show", "delete"):
        actions.add_parser(name, parents=[common]).add_argument("id", help="the window's id")
    upd = actions.add_parser("update", parents=[common], help="update ID field=value …")
    upd.add_argument("id")
    upd.add_argument("fields", nargs="+")
    cli.COMMANDS["maintenance"] = _run
    cli.TABLES["maintenance"] = _table
