"""Command-line management: the same services as the HTTP API, readable tables by default, --json for scripts.

    python -m monitors add website name="Shop" url=https://shop.example interval_seconds=60
    python -m monitors list [--kind website]
    python -m monitors show ID | update ID field=value… | enable ID | disable ID | delete ID
    python -m monitors run ID | run --kind website
    python -m monitors results ID [--limit 20] [--before ISO]
    python -m monitors downtimes ID | uptime ID [--window 7d] | events [--limit 20]
    python -m monitors pause website | resume website | health
    python -m monitors status | snapshot [--persist] [--wait 10]
    python -m monitors rules list | add field=value… | update ID field=value… | delete ID

field=value: the value is read as JSON when it parses (numbers, true/false, lists), else as text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from tabulate import tabulate

from shared import manage, rules, snapshots
from shared.errors import Invalid, NotFound, ServiceError
from shared.manage.history import WINDOWS
from shared.settings import SettingsError, get_settings


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


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    return tabulate([[_cell(r.get(c)) for c in columns] for r in rows], headers=columns)


def _cell(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 60:
        return value[:57] + "…"
    return "" if value is None else value


def _monitor_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": m["id"], "kind": m["kind"], "name": m["name"], "enabled": m["enabled"],
             "status": m["state"]["status"], "schedule": m.get("cron") or f"{m.get('interval_seconds')} s",
             "target": m.get("target", "")} for m in items]


def _render(command: str, data: Any) -> str:
    if command in ("list",):
        return _table(_monitor_rows(data["items"]), ["id", "kind", "name", "enabled", "status", "schedule",
                                                     "target"])
    if command in ("add", "show", "update", "enable", "disable"):
        state = data.pop("state", {})
        lines = [f"{k:>26}: {json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in data.items()]
        lines += [f"{'state.' + k:>26}: {v}" for k, v in state.items()]
        return "\n".join(lines)
    if command == "results":
        return _table(data["items"], ["ts", "outcome", "status", "latency_ms", "status_code", "error"]) + (
            f"\n(more: --before {data['next_before']})" if data.get("next_before") else "")
    if command == "downtimes":
        return _table(data["items"], ["started_at", "ended_at", "duration_seconds", "reason"])
    if command == "events":
        return _table(data["items"], ["occurred_at", "type", "monitor_name", "severity", "delivery", "message"])
    if command == "run":
        rows = data.get("results", [data])
        return _table(rows, ["name", "outcome", "status", "latency_ms", "error", "events"])
    if command == "delete":
        return f"deleted {data['id']}"
    if command == "rules":
        return _render_rules(data)
    if command == "snapshot":
        return _render_snapshot(data)
    if command == "status":
        return _render_status(data)
    return json.dumps(data, indent=2, default=str)


def _rule_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": r["id"], "name": r["name"], "condition": f"{r['metric']} {r['operator']} {r['threshold']:g}",
             "for": r["for_snapshots"], "severity": r["severity"], "enabled": r["enabled"],
             "firing": r["state"]["firing"], "value": r["state"]["value"]} for r in items]


def _render_rules(data: dict[str, Any]) -> str:
    if data.get("deleted"):
        return f"deleted {data['id']}"
    items = data.get("items", [data])
    return _table(_rule_rows(items), ["id", "name", "condition", "for", "severity", "enabled", "firing", "value"])


def _members(bucket: dict[str, Any]) -> str:
    names = [m.get("name") or m.get("id") or "?" for m in bucket.get("monitors", bucket.get("items", []))]
    return ", ".join(names)


def _render_snapshot(data: dict[str, Any]) -> str:
    head = f"snapshot {data.get('id') or '(not stored)'} taken {data['taken_at']}" + (
        " (built by a concurrent request)" if data.get("coalesced") else "")
    metrics = _table([{"metric": k, "value": v} for k, v in data["metrics"].items()], ["metric", "value"])
    buckets = [{"bucket": f"status {s}", "count": b["count"], "monitors": _members(b)}
               for s, b in data.get("by_status", {}).items()]
    buckets += [{"bucket": k.replace("_", " "), "count": data[k]["count"], "monitors": _members(data[k])}
                for k in ("open_downtimes", "threshold_breaches", "checker_errors") if data[k]["count"]]
    buckets += [{"bucket": "stale kind", "count": 1, "monitors": f"{s['kind']}: {s['reason']}"}
                for s in data["stale_kinds"]["items"]]
    return "\n\n".join([head, metrics, _table(buckets, ["bucket", "count", "monitors"])])


def _render_status(data: dict[str, Any]) -> str:
    snap = data.get("snapshot")
    lines = [f"overall: {data['overall']} ({data['live']['enabled']} enabled of {data['live']['monitors']} "
             "monitors)",
             "live: " + (", ".join(f"{s} {n}" for s, n in data["live"]["by_status"].items()) or "(none)"),
             f"snapshot: {snap['id']} taken {snap['taken_at']} ({snap['age_seconds']} s ago)" if snap
             else "snapshot: none stored yet"]
    for change in data["changed_since_snapshot"]:
        lines.append(f"  changed since: {change['name']} {change['snapshot_status']} → {change['live_status']}")
    firing = data["alert_rules"]["firing"]
    lines.append(f"alert rules: {data['alert_rules']['total']}, firing: "
                 + (", ".join(f"{r['name']} ({r['severity']})" for r in firing) or "none"))
    return "\n".join(lines)


async def _deleted(done: Any, ident: str) -> dict[str, Any]:
    await done
    return {"id": ident, "deleted": True}


def _run(store: Any, settings: Any, args: argparse.Namespace) -> Any:
    if bool(args.id) == bool(args.kind):
        raise Invalid("give a monitor id or --kind, not both", [{"field": "id/--kind", "message": "exactly one"}])
    if args.kind:
        return manage.run_kind(store, settings, args.kind)
    return manage.run_monitor(store, settings, args.id)


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


# command → (store, settings, args) → awaitable of what to print
COMMANDS: dict[str, Callable[[Any, Any, argparse.Namespace], Awaitable[Any]]] = {
    "add": lambda st, _, a: manage.create_monitor(st, {"kind": a.kind, **_fields(a.fields)}),
    "list": lambda st, _, a: _listed(manage.list_monitors(st, a.kind)),
    "show": lambda st, _, a: manage.get_monitor(st, a.id),
    "update": lambda st, _, a: manage.update_monitor(st, a.id, _fields(a.fields)),
    "enable": lambda st, _, a: manage.set_enabled(st, a.id, True),
    "disable": lambda st, _, a: manage.set_enabled(st, a.id, False),
    "delete": lambda st, _, a: _deleted(manage.delete_monitor(st, a.id), a.id),
    "run": _run,
    "results": lambda st, _, a: manage.results(st, a.id, manage.parse_limit(a.limit),
                                               manage.parse_time(a.before, "before")),
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


async def _dispatch(args: argparse.Namespace) -> Any:
    from shared.storage import Store

    settings = get_settings()
    async with Store.open(settings) as store:
        return await COMMANDS[args.command](store, settings, args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m monitors", description="Manage and run monitors.")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="create a monitor: add KIND field=value …")
    a.add_argument("kind")
    a.add_argument("fields", nargs="*")
    sub.add_parser("list", help="list monitors").add_argument("--kind")
    for name in ("show", "enable", "disable", "delete", "downtimes"):
        sub.add_parser(name).add_argument("id")
    u = sub.add_parser("update", help="change fields: update ID field=value …")
    u.add_argument("id")
    u.add_argument("fields", nargs="+")
    r = sub.add_parser("run", help="check one monitor (ID) or every monitor of --kind now")
    r.add_argument("id", nargs="?")
    r.add_argument("--kind")
    res = sub.add_parser("results", help="latest results, newest first")
    res.add_argument("id")
    res.add_argument("--limit", default="20")
    res.add_argument("--before")
    up = sub.add_parser("uptime")
    up.add_argument("id")
    up.add_argument("--window", default="24h", choices=list(WINDOWS))
    ev = sub.add_parser("events")
    ev.add_argument("--limit", default="20")
    ev.add_argument("--monitor")
    for name in ("pause", "resume"):
        sub.add_parser(name, help=f"{name} a kind's timer").add_argument("kind")
    sub.add_parser("health")
    sub.add_parser("status", help="current state: latest snapshot and live monitor states")
    snap = sub.add_parser("snapshot", help="build a snapshot of the whole system now (--persist: store it)")
    snap.add_argument("--persist", action="store_true", help="store it and evaluate the alert rules")
    snap.add_argument("--wait", type=float, default=snapshots.WAIT_SECONDS,
                      help="seconds to wait for a build already running (default %(default)s)")
    rules = sub.add_parser("rules", help="alert rules over snapshot metrics").add_subparsers(dest="action",
                                                                                            required=True)
    rules.add_parser("list")
    ra = rules.add_parser("add", help="add field=value … (metric, operator, threshold, for_snapshots, …)")
    ra.add_argument("fields", nargs="+")
    ru = rules.add_parser("update", help="update ID field=value …")
    ru.add_argument("id")
    ru.add_argument("fields", nargs="+")
    rules.add_parser("delete").add_argument("id")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        data = asyncio.run(_dispatch(args))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for d in exc.details:
            print(f"  {d['field']}: {d['message']}", file=sys.stderr)
        return 1 if isinstance(exc, NotFound) else 2
    print(json.dumps(data, indent=2, default=str) if args.json else _render(args.command, data))
    if args.command == "run":
        rows = data.get("results", [data])
        return 0 if all(r.get("outcome") != "error" for r in rows) else 3
    return 0
