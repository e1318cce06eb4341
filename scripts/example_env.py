"""Print `export NAME=value` lines for the Values of local.settings.json (or the .example), for shells."""

import json
import shlex
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
path = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "local.settings.json.example"
for name, value in json.loads(path.read_text())["Values"].items():
    print(f"export {name}={shlex.quote(str(value))}")
