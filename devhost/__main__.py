"""`python -m devhost` — run the app locally without Core Tools (see devhost/__init__.py and docs/LOCAL.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from typing import Any

from devhost import ROOT, LocalHost, load_local_settings, read_host_json
from devhost.demo import DEMO_PORT, DemoTarget, seed_and_check


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
    parser.add_argument("--no-demo", action="store_true",
                        help="no demo: neither the demo monitors (created once per storage) nor their local target")
    parser.add_argument("--demo-port", type=int, default=DEMO_PORT,
                        help=f"the demo target's port on 127.0.0.1 (default {DEMO_PORT})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("azure", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    load_local_settings()
    from shared.settings import SettingsError

    try:
        import function_app  # validates settings: a bad one stops here, naming it
    except SettingsError as error:
        raise SystemExit(f"local.settings.json or the environment: {error}") from None

    smtp = None
    host, port = os.environ.get("SMTP_HOST", ""), int(os.environ.get("SMTP_PORT", "0") or 0)
    if host in ("127.0.0.1", "localhost") and os.environ.get("SMTP_SECURITY") == "none" and _port_free(host, port):
        smtp = await smtp_sink(host, port)
    local = LocalHost(function_app.app, read_host_json(), args.port, os.environ.get("DEVHOST_FUNCTION_KEY") or None,
                      master_key=os.environ.get("DEVHOST_MASTER_KEY") or None)
    await local.start()
    target = None
    if not args.no_demo:
        target = DemoTarget(args.demo_port)
        await target.start()
        try:
            await seed_and_check(args.port, args.demo_port)
        except Exception:  # the app runs on without its demo
            logging.getLogger("devhost.demo").warning("the demo monitors could not be created", exc_info=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await local.stop()
    if target is not None:
        await target.stop()
    if smtp is not None:
        smtp.stop()


if __name__ == "__main__":
    os.chdir(ROOT)
    asyncio.run(main())
