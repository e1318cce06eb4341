"""Cold start: on Flex Consumption every new instance imports function_app before its first invocation. Indexing
needs the app and its bindings only; the services, the kinds, the Azure SDKs, aiohttp, psutil and the templates are
imported on first use. (The time itself is measured by hand: `python -X importtime -c "import function_app"`.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEAVY = ("azure.monitor", "azure.data", "azure.storage", "azure.identity", "azure.core", "aiohttp", "psutil",
         "cryptography", "jinja2", "prometheus_client", "croniter", "stamina", "tabulate", "monitors.website",
         "monitors.stock", "monitors.parts", "monitors.resource", "shared.engine", "shared.manage", "shared.web",
         "shared.storage", "shared.notify", "shared.snapshots")


def test_importing_the_app_indexes_it_without_the_heavy_parts():
    example = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FUNCTIONS_")}, **example}
    env.pop("FUNCTIONS_WORKER_RUNTIME", None)
    script = ("import json, sys, function_app; "
              "print(json.dumps({'functions': len(function_app.app.get_functions()), 'modules': sorted(sys.modules)}))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["functions"] >= 30  # every trigger is indexed: a timer per kind, the HTTP routes, the queues
    loaded = [m for m in seen["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == [], f"imported at start: {loaded}"
