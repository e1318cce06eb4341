"""Whether this machine can make a network namespace: tests whose targets could be any address (fuzzed monitors,
README lines, the offline demo) run only inside one. No project imports: the tests that run themselves as a script
inside the namespace import it before the project is on sys.path."""

from __future__ import annotations

import shutil
import subprocess


def can_isolate_network() -> bool:
    """Can this machine make a network namespace (unshare --net, as root or with user namespaces)? Tests whose
    targets could be any address (fuzzed monitors, README lines) run only inside one."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--net", "--map-root-user", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0

