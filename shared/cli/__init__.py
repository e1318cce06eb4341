"""Command-line management: the same services as the HTTP API, tables for people, --json for scripts.

    python -m monitors add website name="Shop" url="https://shop.example/" interval_seconds=60
    python -m monitors list [--kind website]
    python -m monitors show ID | update ID field=value… | enable ID | disable ID | delete ID
    python -m monitors run ID | run --kind website
    python -m monitors results ID [--limit 20] [--before ISO]
    python -m monitors downtimes ID | uptime ID [--window 7d] | events [--limit 20] [--monitor ID]
    python -m monitors pause website | resume website | health
    python -m monitors status | snapshot [--persist] [--wait 10]
    python -m monitors rules list | add field=value… | update ID field=value… | delete ID
    python -m monitors channels list | add TYPE field=value… | show ID | update ID … | delete ID | test ID
    python -m monitors digest [--weekly] [--send CHANNEL]

Settings come from the environment and, for what it does not set, from `local.settings.json` in the current
folder (its "Values", as the Functions host reads them). `--json` (before or after the command) prints the
service's answer as JSON. field=value: the value is read as JSON when it parses (numbers, true/false, lists),
else as text. A lone `#` and what follows it are ignored (a shell that does not treat `#` as a comment, like
zsh by default, passes a trailing comment on as arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shared import manage, rules, snapshots
from shared.cli import render
from shared.errors import Invalid, NotFound, ServiceError
from shared.manage.history import WINDOWS
from shared.settings import SettingsError, get_settings, load_local_settings


def _fields(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise Invalid(f"expected field=value, got {pair!r}", [{"field": pair, "message": "no '='"}])
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


@dataclass
class Reply:
    """A service's answer and, for results, the kind whose columns the table shows."""

    data: Any
    kind: str | None = None


async def _kind_of(store: Any, monitor_id: str) -> str | None:
    from shared.manage.monitors import load_entity

    kind = (await load_entity(store, monitor_id)).get("kind")
    return kind if isinstance(kind, str) else None


async def _results(store: Any, args: argparse.Namespace) -> Reply:
    data = await manage.results(store, args.id, manage.parse_limit(args.limit),
                                manage.parse_time(args.before, "before"))
    return Reply(data, await _kind_of(store, args.id))


async def _run(store: Any, settings: Any, args: argparse.Namespace) -> Reply:
    if bool(args.id) == bool(args.kind):
        raise Invalid("give a monitor id or --kind, not both", [{"field": "id/--kind", "message": "exactly one"}])
    if args.kind:
        return Reply(await manage.run_kind(store, settings, args.kind), args.kind)
    data = await manage.run_monitor(store, settings, args.id)
    return Reply(data, await _kind_of(store, args.id))


async def _deleted(done: Any, ident: str) -> dict[str, Any]:
    await done
    return {"id": ident, "deleted": True}


async def _listed(items: Any) -> dict[str, Any]:
    return {"items": await items}


async def _health(store: Any, settings: Any) -> dict[str, Any]:
    return (await manage.health(store, settings))[1]


def _rules(store: Any, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return _listed(rules.list_rules(store))
    if args.action == "add":
        return rules.create_rule(store, _fields(args.fields))
    if args.action == "update":
        return rules.update_rule(store, args.id, _fields(args.fields))
    return _deleted(rules.delete_rule(store, args.id), args.id)


# command → (store, settings, args) → awaitable of what to print (a Reply or the answer itself)
COMMANDS: dict[str, Callable[[Any, Any, argparse.Namespace], Awaitable[Any]]] = {
    "add": lambda st, _, a: manage.create_monitor(st, {"kind": a.kind, **_fields(a.fields)}),
    "list": lambda st, _, a: _listed(manage.list_monitors(st, a.kind)),
    "show": lambda st, _, a: manage.get_monitor(st, a.id),
    "update": lambda st, _, a: manage.update_monitor(st, a.id, _fields(a.fields)),
    "enable": lambda st, _, a: manage.set_enabled(st, a.id, True),
    "disable": lambda st, _, a: manage.set_enabled(st, a.id, False),
    "delete": lambda st, _, a: _deleted(manage.delete_monitor(st, a.id), a.id),
    "run": _run,
    "results": lambda st, _, a: _results(st, a),
    "downtimes": lambda st, _, a: manage.downtimes(st, a.id),
    "uptime": lambda st, _, a: manage.uptime(st, a.id, a.window),
    "events": lambda st, _, a: manage.events(st, manage.parse_limit(a.limit), monitor_id=a.monitor),
    "pause": lambda st, _, a: manage.set_paused(st, a.kind, True),
    "resume": lambda st, _, a: manage.set_paused(st, a.kind, False),
    "health": lambda st, se, _: _health(st, se),
    "status": lambda st, _, __: snapshots.status(st),
    "snapshot": lambda st, se, a: snapshots.take_snapshot(st, se, a.persist, a.wait),
    "rules": lambda st, _, a: _rules(st, a),
}

# command → its table (commands not named here: render.anything)
TABLES: dict[str, Callable[[Any], str]] = {
    "list": render.monitors, "add": render.monitor, "show": render.monitor, "update": render.monitor,
    "enable": render.monitor, "disable": render.monitor, "delete": render.deleted, "downtimes": render.downtimes,
    "uptime": render.uptime, "events": render.events, "pause": render.paused, "resume": render.paused,
    "health": render.health, "status": render.status, "snapshot": render.snapshot, "rules": render.rules,
}


def show(command: str, reply: Reply) -> str:
    """What a person reads for a command's answer."""
    if command in ("results", "run"):
        from monitors import KINDS

        kind = KINDS.get(reply.kind or "")
        return render.results(reply.data, kind) if command == "results" else render.run(reply.data, kind)
    return TABLES.get(command, render.anything)(reply.data)


async def _dispatch(args: argparse.Namespace) -> Reply:
    from shared.storage import Store

    settings = get_settings()
    async with Store.open(settings) as store:
        answer = await COMMANDS[args.command](store, settings, args)
    return answer if isinstance(answer, Reply) else Reply(answer)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m monitors", description="Manage and run monitors.")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    # --json after the command too: SUPPRESS keeps a sub-command from resetting what came before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of tables")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    a = command("add", help="create a monitor: add KIND field=value …")
    a.add_argument("kind")
    a.add_argument("fields", nargs="*")
    command("list", help="list monitors").add_argument("--kind")
    for name in ("show", "enable", "disable", "delete", "downtimes"):
        command(name).add_argument("id")
    u = command("update", help="change fields: update ID field=value …")
    u.add_argument("id")
    u.add_argument("fields", nargs="+")
    r = command("run", help="check one monitor (ID) or every monitor of --kind now")
    r.add_argument("id", nargs="?")
    r.add_argument("--kind")
    res = command("results", help="latest results, newest first")
    res.add_argument("id")
    res.add_argument("--limit", default="20")
    res.add_argument("--before")
    up = command("uptime")
    up.add_argument("id")
    up.add_argument("--window", default="24h", choices=list(WINDOWS))
    ev = command("events")
    ev.add_argument("--limit", default="20")
    ev.add_argument("--monitor")
    for name in ("pause", "resume"):
        command(name, help=f"{name} a kind's timer").add_argument("kind")
    command("health")
    command("status", help="current state: latest snapshot and live monitor states")
    snap = command("snapshot", help="build a snapshot of the whole system now (--persist: store it)")
    snap.add_argument("--persist", action="store_true", help="store it and evaluate the alert rules")
    snap.add_argument("--wait", type=float, default=snapshots.WAIT_SECONDS,
                      help="seconds to wait for a build already running (default %(default)s)")
    rules_ = command("rules", help="alert rules over snapshot metrics").add_subparsers(dest="action", required=True)
    rules_.add_parser("list", parents=[common])
    ra = rules_.add_parser("add", parents=[common], help="add field=value … (metric, operator, threshold, …)")
    ra.add_argument("fields", nargs="+")
    ru = rules_.add_parser("update", parents=[common], help="update ID field=value …")
    ru.add_argument("id")
    ru.add_argument("fields", nargs="+")
    rules_.add_parser("delete", parents=[common]).add_argument("id")
    for module in _extensions():
        module.add_commands(command, common)
    return p


# Modules that add their own commands: each has `add_commands(command, common)`, which adds sub-parsers with
# `command(name, help=…)` and registers what they run in COMMANDS (and their table in TABLES).
EXTENSIONS = ("shared.cli.channels", "shared.cli.maintenance", "shared.cli.ack", "shared.cli.digest")


def _extensions() -> list[Any]:
    import importlib

    return [importlib.import_module(name) for name in EXTENSIONS]


def _storage_unreachable(error: BaseException) -> str | None:
    """The one line for storage that does not answer (Azurite not started), instead of a traceback."""
    from azure.core.exceptions import ServiceRequestError

    if isinstance(error, (ServiceRequestError, ConnectionError)):
        return (f"error: the storage does not answer ({type(error).__name__}): is Azurite running? "
                "`bash scripts/run` starts it")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "#" in argv:  # a comment a shell passed on as words
        argv = argv[:argv.index("#")]
    args = parser().parse_args(argv)
    try:
        load_local_settings()
        reply = asyncio.run(_dispatch(args))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for d in exc.details:
            print(f"  {d['field']}: {d['message']}", file=sys.stderr)
        return 1 if isinstance(exc, NotFound) else 2
    except Exception as exc:
        line = _storage_unreachable(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2
    print(json.dumps(reply.data, indent=2, default=str) if args.json else show(args.command, reply))
    if args.command == "run":
        rows = reply.data.get("results", [reply.data])
        return 0 if all(r.get("outcome") != "error" for r in rows) else 3
    return 0
