"""`python -m devhost` — run the app locally without Core Tools (see devhost/__init__.py and README)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from typing import Any

from devhost import ROOT, LocalHost, load_local_settings, read_host_json

DEMO = [  # public (monitors are hidden unless marked), so the local status page shows them
    {"kind": "website", "name": "[demo] this app's health", "url": "http://127.0.0.1:{port}/api/v1/health",
     "interval_seconds": 60, "attempts": 1, "keyword": '"storage": "ok"', "public": True},
    {"kind": "website", "name": "[demo] example.com", "url": "https://example.com/", "interval_seconds": 300,
     "public": True},
    {"kind": "resource", "name": "[demo] this machine's disk and memory", "interval_seconds": 60,
     "source": {"type": "local"}, "public": True},
]


async def seed_demo(port: int) -> None:
    """Create the demo monitors once: a second run finds them by name and adds nothing."""
    from shared import manage as service
    from shared.settings import get_settings
    from shared.storage import Store

    async with Store.open(get_settings()) as store:
        await store.ensure_queues()
        existing = {m.get("name") for m in await store.list_monitors()}
        for spec in DEMO:
            if spec["name"] in existing:
                continue
            try:
                if "url" in spec:
                    spec = {**spec, "url": str(spec["url"]).format(port=port)}
                made = await service.create_monitor(store, spec)
                logging.getLogger("devhost").info("demo monitor created: %s %s", made["id"], made["name"])
            except service.Duplicate:
                pass


async def smtp_sink(host: str, port: int) -> Any:  # an aiosmtpd Controller
    """A local SMTP server that logs what the app sends (only when SMTP_HOST is this machine)."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            from email import message_from_bytes

            msg = message_from_bytes(envelope.content)
            logging.getLogger("devhost.smtp").info("mail to %s: %s", ", ".join(envelope.rcpt_tos), msg["Subject"])
            return "250 OK"

    controller = Controller(Handler(), hostname=host, port=port)
    controller.start()
    return controller


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devhost")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--no-demo", action="store_true", help="do not create the demo monitors")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("azure", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    load_local_settings()
    import function_app  # validates settings: a bad one stops here, naming it

    smtp = None
    host, port = os.environ.get("SMTP_HOST", ""), int(os.environ.get("SMTP_PORT", "0") or 0)
    if host in ("127.0.0.1", "localhost") and os.environ.get("SMTP_SECURITY") == "none" and _port_free(host, port):
        smtp = await smtp_sink(host, port)
    local = LocalHost(function_app.app, read_host_json(), args.port, os.environ.get("DEVHOST_FUNCTION_KEY") or None,
                      master_key=os.environ.get("DEVHOST_MASTER_KEY") or None)
    await local.start()
    if not args.no_demo:
        await seed_demo(args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await local.stop()
    if smtp is not None:
        smtp.stop()


if __name__ == "__main__":
    os.chdir(ROOT)
    asyncio.run(main())
