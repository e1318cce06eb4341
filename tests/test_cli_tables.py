"""The CLI's tables as a person reads them: every command prints a table unless --json, each kind's results show
its own columns (Kind.result_columns), and long text is wrapped inside its cell, never cut.

Real parts: Azurite, the WHMCS and InvenTree stand-ins and a web site on loopback; the CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable

import pytest
from inventree_fake import inventree  # noqa: F401 - fixture
from targets import Target, site, targets  # noqa: F401 - fixtures
from test_cli import monitors_cli
from whmcs_fake import WhmcsFake, whmcs  # noqa: F401 - fixture

Cli = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def cli(storage, tmp_path) -> Cli:
    """The CLI with the settings the test has set so far (read at each call), from a folder without
    local.settings.json. cli(*args) must succeed; its stdout is returned."""

    def run(*args: str, code: int = 0) -> str:
        out = monitors_cli(*args, cwd=tmp_path, env={**os.environ})
        assert out.returncode == code, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr, out.stderr
        return out.stdout

    return run


def added(cli: Cli, *args: str) -> str:
    return json.loads(cli("add", *args, "--json"))["id"]


def table_of(text: str) -> tuple[list[str], list[list[str]]]:
    """A tabulate table's header and rows, split on its column rule (the line of dashes)."""
    lines = text.rstrip("\n").splitlines()
    at = next(i for i, line in enumerate(lines) if re.fullmatch(r"[- ]+", line) and "--" in line)
    spans = [m.span() for m in re.finditer(r"-+", lines[at])]

    def cut(line: str) -> list[str]:
        return [line[a:b + 2].strip() for a, b in spans]

    return cut(lines[at - 1]), [cut(line) for line in lines[at + 1:] if line.strip()]


def column(text: str, name: str) -> list[str]:
    header, rows = table_of(text)
    assert name in header, (name, header)
    return [row[header.index(name)] for row in rows]


def test_each_kind_shows_its_own_result_columns(cli, env, site: Target, whmcs: WhmcsFake, inventree):
    env(**whmcs.settings(), **inventree.settings())

    website = added(cli, "website", "name=Shop", f"url={site.url}", "attempts=1")
    cli("run", website)
    shown = cli("results", website)
    assert column(shown, "http") == ["200"] and column(shown, "latency")[0].endswith(" ms"), shown
    assert column(shown, "status") == ["UP"]

    whmcs.add(7, "VPS Small", 12)
    stock = added(cli, "stock", "product_id=7")
    cli("run", stock)
    whmcs.set(7, 9)  # three sold
    ran = cli("run", stock)
    assert column(ran, "quantity") == ["9"] and column(ran, "delta") == ["-3"], ran  # run shows them too
    shown = cli("results", stock)
    assert column(shown, "quantity") == ["9", "12"], shown
    assert column(shown, "delta") == ["-3", "0"] and column(shown, "change") == ["purchase", "initial"], shown
    assert "http" not in table_of(shown)[0]

    parts = added(cli, "parts", "name=Widget", "kits=2", 'parts=[{"pk": 9, "quantity": 1}, {"pk": 5, "quantity": 1}]')
    cli("run", parts, code=0)
    shown = cli("results", parts)
    assert column(shown, "lines short") == ["1 of 2"], shown  # pk 5 (USB-C receptacle) has no stock
    assert column(shown, "kits") == ["0"] and column(shown, "missing") == ["2"], shown

    resource = added(cli, "resource", "name=This box", 'source={"type": "local"}')
    cli("run", resource)
    shown = cli("results", resource)
    header, rows = table_of(shown)
    metrics = [h for h in header if h not in ("ts", "checked_at", "outcome", "status", "error")]
    assert metrics and all(re.fullmatch(r"[\d.]+ %( WARNING| ALERT)?", rows[0][header.index(m)]) for m in metrics), \
        shown


def test_uptime_health_pause_and_the_rest_print_tables_unless_json(cli, site: Target):
    mid = added(cli, "website", "name=Shop", f"url={site.url}", "attempts=1")
    cli("run", mid)

    up = cli("uptime", mid)
    assert up.startswith("uptime over 24h: 100 % (1 of 1 checks up)"), up
    health = cli("health")
    assert re.search(r"^status\s+ok$", health, re.M) and re.search(r"^storage\s+ok$", health, re.M), health
    assert column(health, "timer") == ["parts", "resource", "stock", "website"], health
    assert column(cli("pause", "website"), "timer") == ["paused"]
    assert column(cli("health"), "paused")[-1] == "true"
    assert column(cli("resume", "website"), "timer") == ["running"]
    assert column(cli("list"), "status") == ["UP"]
    assert cli("downtimes", mid).strip() == "(none)"
    assert cli("rules", "list").strip() == "(none)"
    assert re.search(rf"^id\s+{mid}$", cli("show", mid), re.M)  # the id first: what `add` prints
    for args in (("uptime", mid), ("health",), ("pause", "website"), ("resume", "website"), ("list",),
                 ("show", mid), ("events",), ("status",)):
        with pytest.raises(ValueError):
            json.loads(cli(*args))
        json.loads(cli(*args, "--json"))  # and JSON when asked


def test_long_text_is_wrapped_never_cut(cli, site: Target):
    """Prose (an error) is wrapped at its spaces inside its cell; a URL, which has none, is shown whole."""
    keyword = "words this page will never say, " * 4
    url = site.url_for("/" + "/".join(["a-rather-long-path-segment"] * 4))
    mid = added(cli, "website", "name=Picky", f"url={url}", f"keyword={keyword}", "attempts=1")
    cli("run", mid)
    error = json.loads(cli("results", mid, "--json"))["items"][0]["error"]
    assert keyword.strip() in error and len(error) > 120
    for shown in (cli("results", mid), cli("run", mid), cli("show", mid)):
        assert "…" not in shown, shown
        assert " ".join(keyword.split()) in " ".join(shown.split()), shown  # the whole text, over its lines
        assert max(len(line) for line in shown.splitlines()) < 200, shown  # wrapped: no line runs on
    assert any(line.split()[-1] == url for line in cli("show", mid).splitlines() if line.startswith("url ")), url
