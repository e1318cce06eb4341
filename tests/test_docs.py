"""The README is a front door and the reference in docs/ is complete: every setting, every HTTP route and every
monitor field is described there, and every link between the pages leads somewhere."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_readme_is_short_and_keeps_exactly_the_two_commands():
    readme = _text(ROOT / "README.md")
    assert len(readme.encode()) <= 8 * 1024, f"README.md is {len(readme.encode())} bytes; the reference goes to docs/"
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["bash scripts/run", "bash scripts/test"]


def test_every_link_of_the_readme_and_the_docs_leads_to_a_file():
    pages = [ROOT / "README.md", *DOCS.rglob("*.md")]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _text(page)):
            if re.match(r"[a-z]+:", target):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def _unquoted_words(line: str) -> list[str]:
    """The words of a shell line with what was inside quotes blanked out (`a'?b'` → `a__b`)."""
    words, word, quote = [], "", ""
    for char in line:
        if quote:
            word += "_"
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
            word += "_"
        elif char.isspace():
            words, word = [*words, word], ""
        else:
            word += char
    return [w for w in [*words, word] if w]


def test_urls_in_the_shell_examples_are_quoted_for_zsh():
    """zsh expands an unquoted `?` or `*` in a URL and stops with "no matches found"; `&` forks."""
    assert _unquoted_words("curl localhost:7071/x?limit=20") == ["curl", "localhost:7071/x?limit=20"]
    assert "?" not in "".join(_unquoted_words("curl \"localhost:7071/x?limit=20\""))
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for block in re.findall(r"```bash\n(.*?)```", _text(page), re.S):
            for line in block.splitlines():
                for word in _unquoted_words(line.split(" # ", 1)[0]):
                    if "/" in word and re.search(r"[?*&\[]", word.replace("2>&1", "")):
                        raise AssertionError(f"{page.relative_to(ROOT)}: quote {word!r} in {line.strip()!r}")


def test_every_setting_is_in_the_settings_page_and_the_example():
    import json

    from shared.settings import Settings

    page = _text(DOCS / "SETTINGS.md")
    example = json.loads(_text(ROOT / "local.settings.json.example"))["Values"]
    for field in Settings.model_fields.values():
        name = field.alias
        assert name, "every setting has its environment name as alias"
        assert f"`{name}`" in page, f"{name} is not described in docs/SETTINGS.md"
        assert name in example, f"{name} is missing from local.settings.json.example"


def _routes() -> list[tuple[list[str], str]]:
    import function_app
    from devhost import discover  # get_functions() may run once per app: discover keeps its answer

    routes = []
    for function in discover(function_app.app):
        if function.trigger["type"] == "httpTrigger":
            methods = [str(m).upper() for m in function.trigger.get("methods") or ["GET"]]
            routes.append((methods, "/api/" + function.trigger["route"]))
    return routes


def test_every_route_is_in_the_api_page_with_its_methods():
    rows = [line for line in _text(DOCS / "API.md").splitlines() if line.startswith("| `")]
    routes = _routes()
    assert len(routes) > 15
    for methods, route in routes:
        row = next((r for r in rows if re.search(rf"`[A-Z, ]+ {re.escape(route)}(\?[^`]*)?`", r)), None)
        assert row is not None, f"{route} is not in docs/API.md's route table"
        cell = row.split("`")[1]
        assert set(cell.split(" /", 1)[0].replace(",", " ").split()) == set(methods), \
            f"docs/API.md lists {cell!r}, the app serves {methods} {route}"


def _models(annotation: typing.Any, seen: set[type]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in seen:
            seen.add(annotation)
            found.append(annotation)
            for field in annotation.model_fields.values():
                found += _models(field.annotation, seen)
        return found
    for arg in typing.get_args(annotation):
        found += _models(arg, seen)
    return found


def test_every_monitor_field_is_described_on_its_kind_page():
    from monitors import KINDS
    from monitors.base import MonitorBase

    common = _text(DOCS / "kinds" / "common.md")
    for name in MonitorBase.model_fields:
        assert f"`{name}`" in common, f"{name} (every monitor) is not in docs/kinds/common.md"
    for kind in KINDS:
        page_path = DOCS / "kinds" / f"{kind}.md"
        assert page_path.exists(), f"kind {kind} has no page docs/kinds/{kind}.md"
        page = _text(page_path)
        for model in _models(KINDS[kind].model, set()):
            for name in model.model_fields:
                own = model is not KINDS[kind].model or name not in MonitorBase.model_fields
                if own and f"`{name}`" not in page:
                    raise AssertionError(f"{kind}: field {name} ({model.__name__}) is not in docs/kinds/{kind}.md")
