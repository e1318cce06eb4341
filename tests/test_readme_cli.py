"""Every CLI line of README.md runs as written, as a new user runs it: from a fresh copy of the project with only
`local.settings.json` (made from the example, as `scripts/run` makes it), with the app running.

The lines are the `python -m monitors …` / `.venv/bin/python -m monitors …` commands of README.md's fenced code
blocks (continuation lines and quotes spanning lines joined), whatever the README holds at the time. Each runs in
a shell as written — bash with `failglob`, which refuses an unquoted `?`, `*` or `[…]` that matches no file as zsh
does (URLs must be quoted for zsh) — with `$ID` set to the id the latest `add` printed. A line fails when it exits
non-zero or prints a traceback.

Everything runs in a network namespace of its own that has nothing but loopback (`unshare --net`, as the
schemathesis test): Azurite on its default ports, the app (`python -m devhost` with its demo data), the WHMCS and
InvenTree stand-ins named in local.settings.json, and the CLI lines. Whatever a README line names, nothing leaves
the machine (no DNS query either).

Run by hand:  unshare --net --map-root-user .venv/bin/python tests/test_readme_cli.py /tmp/readme.json
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from netns import can_isolate_network, loopback_up, run_isolated

ROOT = Path(__file__).resolve().parent.parent
PREFIXES = (".venv/bin/python -m monitors", "python -m monitors")
TIMEOUT = 900  # seconds for the whole run (app start + every line, on a loaded 2-core machine)
LINE_TIMEOUT = 120
COPIED = ("function_app.py", "host.json", "local.settings.json.example", "monitors", "shared", "devhost",
          "README.md")
LINKED = (".venv", "node_modules")
ID = re.compile(r"\b[0-9a-f]{32}\b")


# ---------------------------------------------------------------------------------------------- the lines


def _complete(command: str) -> bool:
    """True when a shell would run `command` as it is: no trailing backslash, every quote closed."""
    if command.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True


def cli_lines(markdown: str) -> list[str]:
    """The CLI commands of the fenced code blocks of `markdown`, each with its continuation lines."""
    commands: list[str] = []
    lines = markdown.splitlines()
    inside, i = False, 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.lstrip().startswith(("```", "~~~")):
            inside = not inside
            continue
        text = line.strip().removeprefix("$ ")
        if not inside or not text.startswith(PREFIXES):
            continue
        while not _complete(text) and i < len(lines) and not lines[i].lstrip().startswith(("```", "~~~")):
            text += "\n" + lines[i]
            i += 1
        commands.append(text)
    return commands


def comment_of(command: str) -> str:
    """What follows the command's first unquoted ` #` ("" when none)."""
    quote = ""
    for i, char in enumerate(command):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and i and command[i - 1].isspace():
            return command[i + 1:]
    return ""


def test_the_lines_are_found_with_their_continuations():
    markdown = "\n".join([
        "text: python -m monitors list (not in a block)", "```bash", "curl -s 'http://x'",
        ".venv/bin/python -m monitors list                 # all of them",
        ".venv/bin/python -m monitors add parts name=W kits=10 \\",
        "    parts='[{\"ipn\": \"MCU\", \"quantity\": 1},", "            {\"pk\": 10, \"quantity\": 8}]'",
        "$ python -m monitors results $ID --json", "```", "python -m monitors show x", "~~~", "python -m monitors health",
        "~~~"])
    assert comment_of(".venv/bin/python -m monitors add x name='a # b'  # made") == " made"
    assert cli_lines(markdown) == [
        ".venv/bin/python -m monitors list                 # all of them",
        ".venv/bin/python -m monitors add parts name=W kits=10 \\\n    parts='[{\"ipn\": \"MCU\", \"quantity\": 1},\n"
        "            {\"pk\": 10, \"quantity\": 8}]'",
        "python -m monitors results $ID --json",
        "python -m monitors health"]


def test_the_readme_has_cli_lines():
    assert len(cli_lines((ROOT / "README.md").read_text())) >= 3, "README.md shows no `python -m monitors` lines"


ZSH_SPECIAL = set("`;|&()<>'\"*?[]{}\\")


def test_trailing_comments_paste_into_zsh():
    """An interactive zsh does not take `#` as a comment by default (INTERACTIVE_COMMENTS is off): it passes the
    words on, which the CLI ignores after a lone `#` — unless the comment holds something the shell acts on (a
    backquote runs a command, `;` starts one, a quote waits for its twin, `?`/`*` fail to match)."""
    bad = []
    for command in cli_lines((ROOT / "README.md").read_text()):
        comment = comment_of(command)
        if set(comment) & ZSH_SPECIAL:
            bad.append(f"{command!r}: {''.join(sorted(set(comment) & ZSH_SPECIAL))}")
    assert bad == [], "README CLI lines whose trailing comment breaks in zsh:\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------------------ the run




@pytest.mark.skipif(not can_isolate_network(), reason="cannot make a network namespace (unshare --net): README lines may "
                    "name any address, so they run only where nothing can leave")
def test_every_cli_line_of_the_readme_runs_as_written(tmp_path: Path) -> None:
    out = tmp_path / "readme.json"
    run_isolated(__file__, out, TIMEOUT)
    ran = json.loads(out.read_text())
    assert len(ran) == len(cli_lines((ROOT / "README.md").read_text())) >= 3
    failed = [f"$ {r['command']}\n(exit {r['rc']}, {r['seconds']:.1f} s)\n{r['stdout'][-1500:]}{r['stderr'][-1500:]}"
              for r in ran if r["rc"] != 0 or "Traceback" in r["stdout"] + r["stderr"]]
    print("\n".join(f"{r['seconds']:5.1f} s  exit {r['rc']}  {r['command'].splitlines()[0]}" for r in ran))
    assert failed == [], "README lines that do not run as written:\n\n" + "\n\n".join(failed)


# ------------------------------------------------------------------------------- inside the namespace




def _fresh_copy(into: Path) -> Path:
    """The project as a clone has it, with this checkout's venv and node_modules linked in."""
    app = into / "app"
    app.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, app / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, app / name)
    for name in LINKED:
        (app / name).symlink_to(ROOT / name)
    return app


def _wait(port: int, what: str, proc: subprocess.Popen | None = None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not open port {port} within {timeout} s")


def _healthy(base: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/api/v1/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the app did not answer /api/v1/health within {timeout} s")


def _run_lines(app: Path, commands: list[str], env: dict[str, str]) -> list[dict[str, Any]]:
    ran: list[dict[str, Any]] = []
    last_id: str | None = None
    for command in commands:
        line_env = {**env, **({"ID": last_id} if last_id else {})}
        started = time.monotonic()
        try:
            done = subprocess.run(["bash", "-O", "failglob", "-u", "-c", command], cwd=app, env=line_env,
                                  capture_output=True, text=True, timeout=LINE_TIMEOUT)
            rc, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as late:
            rc, stdout, stderr = -1, str(late.stdout or ""), f"{late.stderr or ''}\n(no answer in {LINE_TIMEOUT} s)"
        ran.append({"command": command, "rc": rc, "stdout": stdout, "stderr": stderr,
                    "seconds": time.monotonic() - started})
        words = shlex.split(command, comments=True)
        if "add" in words[3:5] and rc == 0:
            found = ID.search(stdout)
            last_id = found.group(0) if found else last_id
    return ran


def _inside(out: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from inventree_fake import FakeInvenTree
    from whmcs_fake import WhmcsFake

    loopback_up()
    work = Path(tempfile.mkdtemp(prefix="readme-"))
    app = _fresh_copy(work)
    whmcs, inventree = WhmcsFake(), FakeInvenTree()
    whmcs.add(1, "VPS Small", 12)
    whmcs.add(42, "VPS Large", 8)
    whmcs.start()
    inventree.start()
    settings = json.loads((app / "local.settings.json.example").read_text())  # what scripts/run does
    settings["Values"].update({**whmcs.settings(), **inventree.settings()})  # the stand-ins, as a user sets them
    (app / "local.settings.json").write_text(json.dumps(settings, indent=2))

    env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "TERM")}
    env["PATH"] = f"{app / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    procs: list[subprocess.Popen] = []
    try:
        azurite = subprocess.Popen(
            [str(app / "node_modules/.bin/azurite"), "--silent", "--location", str(work / ".azurite"),
             "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1",
             "--tableHost", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(azurite)
        for port in (10000, 10001, 10002):
            _wait(port, "Azurite", azurite)
        log = (work / "app.log").open("w")
        host = subprocess.Popen([str(app / ".venv/bin/python"), "-m", "devhost"], cwd=app, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        procs.append(host)
        _healthy("http://127.0.0.1:7071", host)
        ran = _run_lines(app, cli_lines((app / "README.md").read_text()), env)
        out.write_text(json.dumps(ran, indent=2))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        whmcs.stop()
        inventree.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    _inside(Path(sys.argv[1]))
