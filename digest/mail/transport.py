"""The one place that talks SMTP (and its stand-in, a Maildir folder).

A transport opens connections; a connection sends one message to one recipient and
either returns (accepted) or raises TemporaryFailure (retry later), PermanentFailure
(this recipient refused: a 5xx to RCPT TO) or ServerRefused (a 5xx to anything else:
the session or the message is at fault, not the recipient).
"""

from __future__ import annotations

import mailbox
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..config import Settings, SmtpSettings
from ..errors import DeliveryError, ServerRefused

__all__ = [
    "SessionStep",
    "open_smtp",
    "smtp_reply",
    "Connection",
    "MaildirTransport",
    "PermanentFailure",
    "SmtpTransport",
    "TemporaryFailure",
    "Transport",
    "make_transport",
]


class TemporaryFailure(Exception):
    """4xx, a dropped connection or a timeout: try again later."""

    def __init__(self, message: str, *, reconnect: bool = False) -> None:
        super().__init__(message)
        self.reconnect = reconnect


class PermanentFailure(Exception):
    """A 5xx to RCPT TO: this recipient will not take the message."""


class Connection(Protocol):
    def send(self, sender: str, recipient: str, message: bytes) -> None: ...
    def close(self) -> None: ...


class Transport(Protocol):
    description: str

    def open(self) -> Connection: ...
    def check(self) -> None: ...


def smtp_reply(code: int, text: bytes | str) -> str:
    """A server reply as one short line: "550 5.1.1 No such user"."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"[:300]


_STAGES = {"MAIL": "the sender address (MAIL FROM)", "DATA": "the message (DATA)"}


def _classify(code: int, text: bytes | str, stage: str) -> Exception:
    """The exception for a reply at stage "RCPT", "MAIL", "DATA" or "SESSION". Only a
    5xx to RCPT TO is about the recipient; any other 5xx is about the server or the
    message, and would be the same for every recipient."""
    reply = smtp_reply(code, text)
    if 500 <= code < 600:
        if stage == "RCPT":
            return PermanentFailure(reply)
        return ServerRefused(f"the SMTP server refused {_STAGES.get(stage, 'the session')}: "
                             f"{reply}")
    # 421 means the server is closing the connection.
    return TemporaryFailure(reply, reconnect=code == 421 or not 400 <= code < 500)


@dataclass(frozen=True)
class SessionStep:
    """One step of opening an SMTP session, as `digest check` shows it."""

    name: str
    ok: bool
    detail: str
    warning: bool = False


def open_smtp(s: SmtpSettings,
              report: Callable[[SessionStep], None] | None = None) -> smtplib.SMTP:
    """The one way digest opens an SMTP session, for sending and for `digest check`:
    connect, EHLO, STARTTLS and AUTH as configured. Each step goes to report; a step that
    fails is reported, then its smtplib or OS error is raised with the connection closed."""
    tell = report or (lambda _step: None)
    where = f"{s.host}:{s.port}"
    try:
        if s.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(local_hostname=s.helo or None,
                                                  timeout=s.timeout,
                                                  context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(local_hostname=s.helo or None, timeout=s.timeout)
        code, banner = smtp.connect(s.host, s.port)
    except (OSError, smtplib.SMTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        tell(SessionStep("connect", False, f"cannot reach {where} ({reason}); check [smtp] "
                                           f"host, port and security"))
        raise
    try:
        if code != 220:
            tell(SessionStep("connect", False, f"{where} refused the session: "
                                               f"{smtp_reply(code, banner)}"))
            raise smtplib.SMTPConnectError(code, banner)
        tell(SessionStep("connect", True, f"{where} ({'TLS, ' if s.security == 'ssl' else ''}"
                                          f"{smtp_reply(code, banner)})"))
        _greet(smtp, s, tell)
    except BaseException:
        smtp.close()
        raise
    return smtp


def _greet(smtp: smtplib.SMTP, s: SmtpSettings, tell: Callable[[SessionStep], None]) -> None:
    """EHLO, then STARTTLS and AUTH as configured, each step told."""
    code, reply = smtp.ehlo()
    if not 200 <= code < 300:
        tell(SessionStep("EHLO", False, smtp_reply(code, reply)))
        raise smtplib.SMTPHeloError(code, reply)
    features = " ".join(sorted(k.upper() for k in smtp.esmtp_features))
    tell(SessionStep("EHLO", True, f"{code}; offers {features or 'nothing'}"))
    if s.security == "starttls":
        if not smtp.has_extn("starttls"):
            tell(SessionStep("STARTTLS", False, "the server does not offer STARTTLS; use "
                                                "security = \"none\" or \"ssl\""))
            raise smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server.")
        code, reply = smtp.starttls(context=ssl.create_default_context())
        smtp.ehlo()
        tell(SessionStep("STARTTLS", True, smtp_reply(code, reply)))
    elif s.security == "none" and smtp.has_extn("starttls"):
        tell(SessionStep("STARTTLS", True, "offered but not used ([smtp] security = "
                                           "\"none\"); consider \"starttls\"", warning=True))
    if s.username:
        try:
            code, reply = smtp.login(s.username, s.password)
        except smtplib.SMTPException as exc:
            tell(SessionStep("AUTH", False, f"as {s.username}: {exc}; check [smtp] username "
                                            f"and DIGEST_SMTP__PASSWORD"))
            raise
        tell(SessionStep("AUTH", True, f"as {s.username}: {smtp_reply(code, reply)}"))


class SmtpConnection:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.smtp = open_smtp(settings)

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        try:
            self.smtp.sendmail(sender, [recipient], message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients.get(recipient, (550, b"refused"))
            raise _classify(code, text, "RCPT") from None
        except smtplib.SMTPSenderRefused as exc:
            raise _classify(exc.smtp_code, exc.smtp_error, "MAIL") from None
        except smtplib.SMTPDataError as exc:
            raise _classify(exc.smtp_code, exc.smtp_error, "DATA") from None
        except smtplib.SMTPServerDisconnected as exc:
            raise TemporaryFailure(f"connection lost: {exc}", reconnect=True) from None
        except smtplib.SMTPResponseException as exc:
            raise _classify(exc.smtp_code, exc.smtp_error, "SESSION") from None
        except (OSError, smtplib.SMTPException) as exc:
            # Timeouts and resets: the message may or may not have arrived.
            raise TemporaryFailure(f"{type(exc).__name__}: {exc}", reconnect=True) from None

    def close(self) -> None:
        try:
            self.smtp.quit()
        except (OSError, smtplib.SMTPException):
            self.smtp.close()


class SmtpTransport:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.description = f"SMTP {settings.host}:{settings.port}"

    def open(self) -> SmtpConnection:
        """A connected, greeted (and, when configured, encrypted and logged-in) connection;
        DeliveryError with the fix when that fails."""
        s = self.settings
        try:
            return SmtpConnection(s)
        except smtplib.SMTPAuthenticationError as exc:
            error = ServerRefused if 500 <= exc.smtp_code < 600 else DeliveryError
            raise error(f"SMTP server {s.host}:{s.port} refused the login for "
                        f"{s.username!r}: {smtp_reply(exc.smtp_code, exc.smtp_error)}; "
                        f"check [smtp] username and DIGEST_SMTP__PASSWORD") from None
        except smtplib.SMTPResponseException as exc:
            # A 5xx greeting, EHLO or STARTTLS: the server will not talk to us as set up.
            error = ServerRefused if 500 <= exc.smtp_code < 600 else DeliveryError
            raise error(f"SMTP server {s.host}:{s.port} refused the session: "
                        f"{smtp_reply(exc.smtp_code, exc.smtp_error)}; check [smtp] host, "
                        f"port, security and username") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"SMTP server {s.host}:{s.port}: {exc}; check [smtp] security"
                                ) from None
        except (OSError, smtplib.SMTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise DeliveryError(f"cannot reach the SMTP server at {s.host}:{s.port} "
                                f"({reason or type(exc).__name__}); check [smtp] host, port "
                                f"and security, and that the server is running") from None

    def check(self) -> None:
        self.open().close()


class MaildirConnection:
    def __init__(self, box: mailbox.Maildir) -> None:
        self.box = box

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        # Maildir.add writes into tmp/ and renames into new/: readers never see half a file.
        try:
            self.box.add(message)
        except OSError as exc:
            raise TemporaryFailure(f"cannot write to the Maildir: {exc.strerror}") from None

    def close(self) -> None:
        pass


class MaildirTransport:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"Maildir {path}"

    def open(self) -> MaildirConnection:
        try:
            # Maildir(create=True) leaves an existing folder without tmp/ new/ cur/ as is.
            for sub in ("tmp", "new", "cur"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            return MaildirConnection(mailbox.Maildir(self.path, create=False))
        except OSError as exc:
            raise DeliveryError(f"cannot use the Maildir {self.path}: {exc.strerror}; check "
                                f"[delivery] maildir") from None

    def check(self) -> None:
        self.open()


def make_transport(settings: Settings) -> Transport:
    if settings.delivery.transport == "maildir":
        return MaildirTransport(settings.resolve_path(settings.delivery.maildir))
    return SmtpTransport(settings.smtp)


