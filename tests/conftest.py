"""Shared fixtures: a real Azurite per test session, clean tables per test, settings from the environment.

Azurite is taken from node_modules/.bin (installed by `scripts/setup`), or from AZURITE_BIN, or PATH.
Set AZURITE_CONNECTION_STRING to use an Azurite you already run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _azurite_bin() -> str:
    for cand in (os.environ.get("AZURITE_BIN"), str(ROOT / "node_modules/.bin/azurite"), shutil.which("azurite")):
        if cand and Path(cand).exists():
            return cand
    raise RuntimeError("Azurite not found: run `bash scripts/setup` (npm install) or set AZURITE_BIN")


def _wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> bool:
    """True once `port` accepts connections; False when `proc` (if given) exited first (it could not bind a port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    raise RuntimeError(f"Azurite did not open port {port}")


@pytest.fixture(scope="session")
def azurite() -> str:
    """A connection string for a running Azurite (started for the session unless one is given)."""
    given = os.environ.get("AZURITE_CONNECTION_STRING")
    if given:
        yield given
        return
    data = tempfile.mkdtemp(prefix="azurite-")
    for _ in range(5):  # a free port can be taken by a parallel worker's Azurite before ours binds it: new ports
        blob, queue, table = free_port(), free_port(), free_port()
        proc = subprocess.Popen(
            [_azurite_bin(), "--silent", "--location", data, "--skipApiVersionCheck", "--loose", "--disableTelemetry",
             "--blobPort", str(blob), "--queuePort", str(queue), "--tablePort", str(table)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if all(_wait_port(port, proc) for port in (blob, queue, table)):
            break
    else:
        raise RuntimeError("Azurite exited at start five times (ports taken?)")
    try:
        yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{blob}/devstoreaccount1;"
               f"QueueEndpoint=http://127.0.0.1:{queue}/devstoreaccount1;"
               f"TableEndpoint=http://127.0.0.1:{table}/devstoreaccount1;")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


BASE_ENV = {
    "GLOBAL_EMAIL_NOTIFICATIONS_ENABLED": "false",
    "CHECK_CONCURRENCY": "50",
    # The test servers listen on 127.0.0.1; the outbound-guard tests use other loopback addresses (127.0.0.2, …),
    # which stay refused.
    "OUTBOUND_ALLOW_CIDRS": "127.0.0.1/32",
    # Checker errors are told one by one, at once, unless a test turns grouping on (tests/test_storm.py): the
    # grouped notice waits ERROR_GROUP_SECONDS for the others of its cause.
    "ERROR_GROUP_SECONDS": "0",
    "CHECKS_QUEUE": "monitor-checks",  # the host resolves the queue worker's %CHECKS_QUEUE% from the environment
}


@pytest.fixture(autouse=True, scope="session")
def _no_retry_waits():
    """Every retry policy keeps its attempts, without the backoff waits (shared/outbound/retry.py)."""
    from shared.outbound import retry

    retry.testing(True)
    yield
    retry.testing(False)


@pytest.fixture
def env(azurite, monkeypatch):
    """Settings for one test: Azurite storage, e-mail off unless a test turns it on. Returns a setter."""
    from shared.settings import get_settings

    for name in list(os.environ):
        if name.startswith(("SMTP_", "ADMIN_EMAIL", "DEFAULT_EMAIL", "AzureWebJobsStorage")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()

    def set_env(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, str(value))
        get_settings.cache_clear()

    yield set_env
    get_settings.cache_clear()


async def _wipe(conn: str) -> None:
    from azure.data.tables.aio import TableServiceClient
    from azure.storage.queue.aio import QueueServiceClient

    from shared.storage import Store

    async with TableServiceClient.from_connection_string(conn) as tables:
        async for table in tables.list_tables():
            await tables.delete_table(table.name)
    async with QueueServiceClient.from_connection_string(conn) as queues:
        async for queue in queues.list_queues():
            await queues.delete_queue(queue.name)
    Store.forget_created_tables()


@pytest.fixture
def storage(env, azurite):
    """Empty tables and queues for this test; yields the connection string."""
    asyncio.run(_wipe(azurite))
    yield azurite


@pytest.fixture
def settings(storage):
    from shared.settings import get_settings

    return get_settings()


# The longest test files start first, so that in parallel runs (scripts/test: pytest-xdist, a file per worker at a
# time, in collection order: --no-loadscope-reorder, else xdist starts the files with the most tests first and a
# one-test file of minutes last) none of them begins near the end and keeps one worker busy after the others are
# done. Order within a file, and of the other files, is unchanged.
SLOW_FIRST = ("test_schemathesis.py", "test_status_page_chromium.py", "test_cli_tables.py", "test_public.py",
              "test_readme_cli.py", "test_cli.py", "test_parts.py", "test_snapshots.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))
