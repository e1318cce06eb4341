"""Whether this machine can make a network namespace: tests whose targets could be any address (fuzzed monitors,
README lines, the offline demo) run only inside one. No project imports: the tests that run themselves as a script
inside the namespace import it before the project is on sys.path."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path


def can_isolate_network() -> bool:
    """Can this machine make a network namespace (unshare --net, as root or with user namespaces)? Tests whose
    targets could be any address (fuzzed monitors, README lines) run only inside one."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--net", "--map-root-user", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


def loopback_up() -> None:
    """Bring `lo` up (a new network namespace has it down) and make sure it is the only interface."""
    iff_up, iff_loopback, iff_running, siocsifflags = 0x1, 0x8, 0x40, 0x8914
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", iff_up | iff_loopback | iff_running))
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        raise SystemExit(f"not isolated: interfaces {names}")


def run_isolated(script: str, out: Path, timeout: float) -> str:
    """Run `python script out` inside a new network namespace (loopback only) and return what it printed;
    everything it started is killed if it runs longer than `timeout` seconds. The script writes its findings to
    `out`; fails the test when the run fails or writes nothing."""
    import pytest

    env = {k: v for k, v in os.environ.items() if k != "AZURITE_CONNECTION_STRING"}  # its own Azurite, inside
    proc = subprocess.Popen(["unshare", "--net", "--map-root-user", sys.executable, script, str(out)],
                            cwd=Path(script).resolve().parent.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and everything it started
        output, _ = proc.communicate()
        pytest.fail(f"{Path(script).name} did not finish in {timeout} s:\n{output[-5000:]}")
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"the run failed ({proc.returncode}):\n{output[-5000:]}")
    return output
