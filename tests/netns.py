"""Whether this machine can make a network namespace: tests whose targets could be any address (fuzzed monitors,
README lines, the offline demo) run only inside one. No project imports: the tests that run themselves as a script
inside the namespace import it before the project is on sys.path."""

from __future__ import annotations

import fcntl
import shutil
import socket
import struct
import subprocess


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
