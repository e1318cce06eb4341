"""What the CLI prints for people: a table (tabulate) per command, long text wrapped in its cell, never cut.

Every command has a table; `--json` prints the service's answer instead (shared/cli/__init__.py). A result's own
columns come from its kind (`Kind.result_columns`), so no kind is named here.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

WRAP = 60  # characters: longer cell text is wrapped onto more lines of its cell (never cut)


def cell(value: Any) -> Any:
    """A value as a table shows it: text longer than WRAP wrapped at its spaces onto more lines of the cell
    (a URL or an id, which has none, stays whole), never cut."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as field=value takes it
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False, default=str) if value else ""
    if isinstance(value, str) and len(value) > WRAP:
        return "\n".join(part for line in value.splitlines()
                         for part in textwrap.wrap(line, WRAP, break_long_words=False, break_on_hyphens=False) or [""])
    return value


def table(rows: list[dict[str, Any]], columns: Iterable[str] | None = None, empty: str = "(none)") -> str:
    """Rows under a header; `columns` default: every key of the rows in the order first seen."""
    if not rows:
        return empty
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    return tabulate([[cell(row.get(c)) for c in cols] for row in rows], headers=cols, disable_numparse=True)


def fields(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested answer flattened to (dotted name, value) pairs; empty dicts and lists are left out."""
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += fields(value, name + ".")
        elif value not in ({}, []):
            out.append((name, value))
    return out


def pairs(items: Iterable[tuple[str, Any]]) -> str:
    """(field, value) pairs as a two-column table without a header; fields without a value are left out."""
    rows = [(name, cell(value)) for name, value in items if value not in (None, "", [], {})]
    return tabulate(rows, tablefmt="plain", disable_numparse=True) if rows else "(none)"


def vertical(data: dict[str, Any]) -> str:
    """One object as a two-column table: field, value (nested fields dotted)."""
    return pairs(fields(data))


# ------------------------------------------------------------------------------------------------ monitors


def monitors(data: dict[str, Any]) -> str:
    rows = [{"id": m["id"], "kind": m["kind"], "name": m["name"], "enabled": m["enabled"],
             "status": (m.get("state") or {}).get("status"),
             "schedule": m.get("cron") or f"{m.get('interval_seconds')} s", "target": m.get("target", "")}
            for m in data["items"]]
    return table(rows, ["id", "kind", "name", "enabled", "status", "schedule", "target"])


def monitor(data: dict[str, Any]) -> str:
    """One monitor: its id first (what `add` prints, for the commands that take it), then every field that has a
    value (--json shows the empty ones too)."""
    state = data.get("state") or {}
    head = {k: data[k] for k in ("id", "kind", "name") if k in data}
    rest = {k: v for k, v in data.items() if k not in (*head, "state")}
    return pairs([*head.items(), *rest.items(), *((f"state.{k}", v) for k, v in state.items())])


# ------------------------------------------------------------------------------------------------- results


def _latency(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def result_rows(items: list[dict[str, Any]], kind: Any, lead: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each result: the `lead` columns, outcome and status, the kind's own columns, then the error."""
    rows = []
    for item in items:
        row = {c: item.get(c) for c in lead}
        row.update({"outcome": item.get("outcome"), "status": item.get("status")})
        own = kind.result_columns(item) if kind is not None else {"latency": _latency(item.get("latency_ms"))}
        row.update({k: v for k, v in own.items() if k not in row})
        row["error"] = item.get("error")
        rows.append(row)
    return rows


def results(data: dict[str, Any], kind: Any) -> str:
    lead = ("ts", "checked_at") if any(i.get("checked_at") for i in data["items"]) else ("ts",)
    more = f"\n(more: --before {data['next_before']})" if data.get("next_before") else ""
    return table(result_rows(data["items"], kind, lead)) + more


def run(data: dict[str, Any], kind: Any) -> str:
    """`run ID` (one result) or `run --kind K` (the run's summary, then a row per monitor)."""
    items = data.get("results", [data])
    rows = [{**row, "events": ", ".join(map(str, item.get("events") or []))}
            for row, item in zip(result_rows(items, kind, ("name",)), items, strict=True)]
    out = table(rows, empty="(no monitor of this kind)")
    if "results" not in data:
        return out
    head = (f"{data.get('kind')}: {data.get('checked', len(items))} of {data.get('monitors', len(items))} "
            f"monitors checked in {data.get('duration_ms', '?')} ms, {data.get('errors', 0)} error(s), "
            f"{data.get('events', 0)} event(s)")
    return f"{head}\n\n{out}"


# ----------------------------------------------------------------------------------------- what happened


def downtimes(data: dict[str, Any]) -> str:
    return table(data["items"], ["started_at", "ended_at", "duration_seconds", "reason"])


def events(data: dict[str, Any]) -> str:
    more = f"\n(more: --before {data['next_before']})" if data.get("next_before") else ""
    return table(data["items"], ["occurred_at", "type", "monitor_name", "severity", "delivery", "message"]) + more


def uptime(data: dict[str, Any]) -> str:
    percent = data.get("uptime_percent")
    head = (f"uptime over {data.get('window')}: " + (f"{percent:g} %" if isinstance(percent, (int, float))
                                                     else "no checks yet")
            + f" ({data.get('up', 0)} of {data.get('checks', 0)} checks up)")
    rest = {k: v for k, v in data.items() if k not in ("window", "uptime_percent", "up", "checks")}
    return f"{head}\n\n{vertical(rest)}"


def _delivery(delivery: dict[str, Any]) -> dict[str, Any]:
    """/health's delivery part, problems only: failing channels, lost notices, messages in poison queues."""
    out: dict[str, Any] = {"delivery": delivery.get("status")}
    for channel, problem in (delivery.get("channels_failing") or {}).items():
        out[f"delivery: {channel} failing"] = f"since {problem.get('since') or '?'}: {problem.get('error')}"
    if delivery.get("notices_lost"):
        out["delivery: notices lost"] = f"{delivery['notices_lost']} (last {delivery.get('last_lost_at')}: " \
                                        f"{delivery.get('last_lost')})"
    for queue, depth in (delivery.get("poison_queues") or {}).items():
        if depth:
            out[f"delivery: {queue}"] = f"{depth} message(s)"
    return out


def health(data: dict[str, Any]) -> str:
    head = vertical({"status": data.get("status"), "version": data.get("version"), "storage": data.get("storage"),
                     "e-mail": "on" if data.get("email_enabled") else "off",
                     **(_delivery(data["delivery"]) if data.get("delivery") else {})})
    timers = []
    for kind, timer in (data.get("timers") or {}).items():
        last = timer.get("last_run") or {}
        timers.append({"timer": kind, "paused": timer.get("paused"), "last run": last.get("started_at"),
                       "took ms": last.get("duration_ms"), "checked": last.get("checked"),
                       "errors": last.get("errors"), "runs 24 h": timer.get("runs_24h"),
                       "missed 24 h": sum(int(g.get("missed_runs") or 0) for g in timer.get("gaps_24h") or []),
                       "next due": timer.get("next_due")})
    return f"{head}\n\n{table(timers)}" if timers else head


def paused(data: dict[str, Any]) -> str:
    return table([{"kind": data["kind"], "timer": "paused" if data["paused"] else "running"}])


def deleted(data: dict[str, Any]) -> str:
    return f"deleted {data['id']}"


# ----------------------------------------------------------------------------------- rules and snapshots


def rules(data: dict[str, Any]) -> str:
    if data.get("deleted"):
        return deleted(data)
    rows = [{"id": r["id"], "name": r["name"], "condition": f"{r['metric']} {r['operator']} {r['threshold']:g}",
             "for": r["for_snapshots"], "severity": r["severity"], "enabled": r["enabled"],
             "firing": r["state"]["firing"], "value": r["state"]["value"]} for r in data.get("items", [data])]
    return table(rows, ["id", "name", "condition", "for", "severity", "enabled", "firing", "value"])


def _members(bucket: dict[str, Any]) -> str:
    names = [m.get("name") or m.get("id") or "?" for m in bucket.get("monitors", bucket.get("items", []))]
    return ", ".join(names)


def snapshot(data: dict[str, Any]) -> str:
    head = f"snapshot {data.get('id') or '(not stored)'} taken {data['taken_at']}" + (
        " (built by a concurrent request)" if data.get("coalesced") else "")
    metrics = table([{"metric": k, "value": v} for k, v in data["metrics"].items()], ["metric", "value"])
    buckets = [{"bucket": f"status {s}", "count": b["count"], "monitors": _members(b)}
               for s, b in data.get("by_status", {}).items()]
    buckets += [{"bucket": k.replace("_", " "), "count": data[k]["count"], "monitors": _members(data[k])}
                for k in ("open_downtimes", "threshold_breaches", "checker_errors") if data[k]["count"]]
    buckets += [{"bucket": "stale kind", "count": 1, "monitors": f"{s['kind']}: {s['reason']}"}
                for s in data["stale_kinds"]["items"]]
    return "\n\n".join([head, metrics, table(buckets, ["bucket", "count", "monitors"])])


def status(data: dict[str, Any]) -> str:
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


def anything(data: Any) -> str:
    """A command without a table of its own: its items as a table, or its fields as a two-column one."""
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        return table(data["items"])
    return vertical(data) if isinstance(data, dict) else str(data)
