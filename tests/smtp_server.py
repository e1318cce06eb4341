"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, STARTTLS and AUTH (LOGIN/PLAIN) required, certificate
from a trustme CA (written to a file for SMTP_CA_FILE).

Use as a pytest plugin (`pytest_plugins = ["tests.smtp_server"]`) for the `smtp` fixture:

    smtp.settings()          # SMTP_* settings (as env values) that reach this server
    smtp.messages            # what it accepted: Received(mail_from, rcpt_tos, message, tls, authenticated, login)
    smtp.reject("a@x.org")   # answer RCPT for that address with 550
    smtp.tempfail(2)         # answer the next 2 RCPTs with 451
    smtp.hold_data = 30      # take a message, then wait that long before answering 250 (a client can die meanwhile)
    smtp.stop(); smtp.start()  # down (connection refused) and back up on the same port
    smtp.implicit_tls = True; smtp.restart()   # SMTP_SECURITY=tls instead (TLS from the first byte)
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USERNAME = "mailer@example.org"
PASSWORD = "s3cr3t-Pa55-9f1c2e"  # distinctive, so a leak is easy to find


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool
    authenticated: bool
    login: str | None

    @property
    def subject(self) -> str:
        return str(self.message["Subject"]).strip()  # a folded header may keep its leading space

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None and body.get_content_subtype() == subtype, f"no text/{subtype} part"
        return body.get_content()


class _Handler:
    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        o = self.owner
        with o.lock:
            o.rcpt_attempts.append(address)
            if address.lower() in o.rejected:
                return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
            if o.tempfails > 0:
                o.tempfails -= 1
                return "451 4.7.1 Greylisted, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.owner.lock:
            self.owner.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, raw,
                                                tls=session.ssl is not None or _implicit_tls(server),
                                                authenticated=bool(session.authenticated),
                                                login=login))
            hold = self.owner.hold_data
        if hold:
            await asyncio.sleep(hold)
        return "250 2.0.0 Message accepted for delivery"


class SmtpServer:
    def __init__(self, cert_dir: Path, ca: trustme.CA) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.ca_file = str(cert_dir / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self._server_cert = ca.issue_cert("127.0.0.1", "localhost")
        self.implicit_tls = False
        self.lock = threading.Lock()
        self.messages: list[Received] = []
        self.rcpt_attempts: list[str] = []
        self.auth_attempts: list[tuple[str, bool]] = []
        self.rejected: set[str] = set()
        self.tempfails = 0
        self.hold_data = 0.0
        self._controller: Controller | None = None

    # -- control ---------------------------------------------------------------------------------------------

    def settings(self, **extra: str) -> dict[str, str]:
        values = {"GLOBAL_EMAIL_NOTIFICATIONS_ENABLED": "true", "SMTP_HOST": self.host, "SMTP_PORT": str(self.port),
                  "SMTP_SECURITY": "tls" if self.implicit_tls else "starttls", "SMTP_USERNAME": USERNAME,
                  "SMTP_PASSWORD": PASSWORD, "SMTP_CA_FILE": self.ca_file, "SMTP_TIMEOUT_SECONDS": "5",
                  "SMTP_FROM": "monitor@example.org"}
        values.update(extra)
        return values

    def reject(self, *addresses: str) -> None:
        with self.lock:
            self.rejected.update(a.lower() for a in addresses)

    def tempfail(self, count: int) -> None:
        with self.lock:
            self.tempfails = count

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.rcpt_tos]

    def start(self) -> None:
        assert self._controller is None, "already running"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_cert.configure_cert(context)
        kwargs = dict(hostname=self.host, port=self.port, server_hostname="smtp.test", ready_timeout=10,
                      auth_required=True, auth_require_tls=True, authenticator=self._authenticate,
                      auth_exclude_mechanism=["CRAM-MD5"])
        error: Exception | None = None
        for _ in range(40):  # the port may linger briefly after a stop
            if self.implicit_tls:  # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; this is TLS throughout
                controller = Controller(_Handler(self), ssl_context=context, **{**kwargs, "auth_require_tls": False})
            else:
                controller = Controller(_Handler(self), tls_context=context, require_starttls=True, **kwargs)
            try:
                controller.start()
                break
            except Exception as exc:
                error = exc
                time.sleep(0.05)
        else:
            raise RuntimeError(f"could not start the SMTP server on port {self.port}: {error}")
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USERNAME
              and auth_data.password.decode() == PASSWORD)
        with self.lock:
            self.auth_attempts.append((mechanism, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def _implicit_tls(server) -> bool:
    transport = getattr(server, "transport", None)
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def smtp_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def smtp(smtp_ca, tmp_path) -> SmtpServer:
    server = SmtpServer(tmp_path, smtp_ca)
    server.start()
    yield server
    server.stop()
