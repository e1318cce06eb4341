"""E-mail delivery over SMTP with smtplib (blocking: call it from a thread). Nothing it logs or raises contains the
SMTP password."""

from __future__ import annotations

import base64
import hashlib
import logging
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from functools import lru_cache

from shared import secrets
from shared.notify.channel import Notification, NotifyError, PermanentError, Scope, TransientError, message_id
from shared.outbound.errors import os_reason, tls_reason
from shared.settings import Settings
from shared.text import one_line

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ e-mail


@lru_cache(maxsize=1)
def _local_hostname() -> str:
    # smtplib would call socket.getfqdn() for every connection; it can take seconds on a badly set up resolver.
    return socket.getfqdn() or "localhost"


class EmailChannel:
    """SMTP delivery: SMTP_SECURITY starttls (SMTP + STARTTLS, never falls back to clear text), tls (implicit TLS,
    usually port 465) or none; AUTH when SMTP_USERNAME/SMTP_PASSWORD are set; SMTP_CA_FILE trusts a private CA."""

    name = "email"

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise PermanentError("SMTP_HOST is not set", scope="channel")
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.security = settings.smtp_security
        self.username = settings.smtp_username
        self._password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        self.sender = str(settings.smtp_from)
        self.timeout = settings.smtp_timeout_seconds
        self.ca_file = settings.smtp_ca_file
        secrets.register(*self._secret_forms())  # AUTH PLAIN/LOGIN carry the password base64-encoded

    def __repr__(self) -> str:
        return f"EmailChannel({self.security}://{self.host}:{self.port}, user={self.username!r})"

    # -- public ------------------------------------------------------------------------------------------

    def build(self, message: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = one_line(message.subject)
        msg["From"] = self.sender
        msg["To"] = message.recipient
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = message_id(message.ref or hashlib.sha256(message.text.encode()).hexdigest()[:32],
                                       message.recipient, self.sender)
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        msg["X-Auto-Response-Suppress"] = "All"
        msg.set_content(message.text)
        if message.html is not None:
            msg.add_alternative(message.html, subtype="html")
        return msg

    def send(self, message: Notification) -> None:
        try:
            msg = self.build(message)
        except (ValueError, TypeError) as error:  # a malformed address or header: the same next time
            raise PermanentError(self.scrub(f"cannot build the message: {error}")) from None
        try:
            smtp = self._connect()
        except Exception as error:  # noqa: BLE001 - classified below
            raise self.classify(error, stage="connect") from None
        try:
            try:
                if self.username and self._password is not None:
                    smtp.login(self.username, self._password)
            except Exception as error:  # noqa: BLE001
                raise self.classify(error, stage="auth") from None
            try:
                smtp.send_message(msg, from_addr=self.sender, to_addrs=[message.recipient])
            except Exception as error:  # noqa: BLE001
                raise self.classify(error, stage="send") from None
        finally:
            self._quit(smtp)

    # -- internals -----------------------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()
        except (OSError, ssl.SSLError) as error:
            raise PermanentError(f"SMTP_CA_FILE {self.ca_file!r} cannot be used: {error}", scope="channel") from None

    def _connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            return smtplib.SMTP_SSL(self.host, self.port, local_hostname=_local_hostname(), timeout=self.timeout,
                                    context=self._tls_context())
        smtp = smtplib.SMTP(self.host, self.port, local_hostname=_local_hostname(), timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise PermanentError(f"{self.host}:{self.port} does not offer STARTTLS (SMTP_SECURITY="
                                         "starttls); not sending in clear text", scope="channel")
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    @staticmethod
    def _quit(smtp: smtplib.SMTP) -> None:
        """The message is accepted or not by now; a failing QUIT must not turn a delivery into a retry."""
        try:
            smtp.quit()
        except Exception:  # noqa: BLE001
            pass
        finally:
            smtp.close()

    def _secret_forms(self) -> list[str]:
        if not self._password:
            return []
        user = self.username or ""
        forms = {self._password,
                 base64.b64encode(self._password.encode()).decode(),
                 base64.b64encode(f"\0{user}\0{self._password}".encode()).decode(),
                 base64.b64encode(f"{user}\0{user}\0{self._password}".encode()).decode()}
        return sorted((f for f in forms if len(f) >= 3), key=len, reverse=True)

    @staticmethod
    def scrub(text: str) -> str:
        return secrets.scrub(text)

    def classify(self, error: BaseException, stage: str) -> NotifyError:
        """smtplib's and the socket layer's exceptions → PermanentError / TransientError, password-free."""
        where = f"{self.host}:{self.port}"
        if isinstance(error, NotifyError):
            error.args = (self.scrub(str(error)),)
            return error
        if isinstance(error, smtplib.SMTPRecipientsRefused):
            code, text = next(iter(error.recipients.values()), (None, b""))
            return self._by_code(code, f"recipient refused: {_reply(code, text)}", "recipient")
        if isinstance(error, smtplib.SMTPSenderRefused):
            return self._by_code(error.smtp_code, f"sender {self.sender} refused: "
                                 f"{_reply(error.smtp_code, error.smtp_error)}", "channel")
        if isinstance(error, smtplib.SMTPAuthenticationError):
            return self._by_code(error.smtp_code, f"{where} refused the login of {self.username!r}: "
                                 f"{_reply(error.smtp_code, error.smtp_error)}", "channel")
        if isinstance(error, smtplib.SMTPDataError):
            return self._by_code(error.smtp_code, f"message refused: {_reply(error.smtp_code, error.smtp_error)}",
                                 "recipient")
        if isinstance(error, smtplib.SMTPNotSupportedError):
            # e.g. no AUTH offered: configuration, not luck
            return PermanentError(self.scrub(f"{where} during {stage}: {error}"), scope="channel")
        if isinstance(error, smtplib.SMTPResponseException):  # HELO, connect (greeting) and other replies
            return self._by_code(error.smtp_code, f"{where} during {stage}: "
                                 f"{_reply(error.smtp_code, error.smtp_error)}", "channel")
        if isinstance(error, smtplib.SMTPServerDisconnected):
            return TransientError(self.scrub(f"{where} closed the connection during {stage}: {error}"),
                                  scope="channel")
        if isinstance(error, smtplib.SMTPException):
            said = str(error)
            if "authentication method" in said.lower():  # "No suitable authentication method found."
                return PermanentError(self.scrub(f"{where}: {said}"), scope="channel")
            return TransientError(self.scrub(f"{where} during {stage}: {said}"), scope="channel")
        if isinstance(error, ssl.SSLCertVerificationError):
            # An untrusted or mismatched certificate is configuration (SMTP_CA_FILE, SMTP_HOST), not luck.
            return PermanentError(self.scrub(f"{where}: TLS certificate rejected: {tls_reason(error)}"),
                                  scope="channel")
        if isinstance(error, ssl.SSLError):
            return TransientError(self.scrub(f"{where}: TLS failed during {stage}: {tls_reason(error)}"),
                                  scope="channel")
        if isinstance(error, (TimeoutError, socket.timeout)):
            return TransientError(f"{where}: no answer within {self.timeout:g} s during {stage}", scope="channel")
        if isinstance(error, OSError):  # refused, unreachable, DNS (may be a blip)
            return TransientError(self.scrub(f"{where}: {stage} failed: {os_reason(error)}"), scope="channel")
        return TransientError(self.scrub(f"{where}: {stage} failed: {type(error).__name__}: {error}"),
                              scope="channel")

    def _by_code(self, code: int | None, text: str, scope: Scope) -> NotifyError:
        text = self.scrub(text)
        if code is not None and 500 <= code < 600:
            return PermanentError(text, scope=scope, code=code)
        return TransientError(text, scope=scope, code=code)


def _reply(code: int | None, text: bytes | str | None) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join((text or "").split())
    return f"{code} {text}".strip() if code is not None else text
