"""The one place that talks SMTP (and its stand-in, a Maildir folder).

A transport opens connections; a connection sends one message to one recipient and
either returns (accepted) or raises TemporaryFailure (retry later), PermanentFailure
(this recipient refused: a 5xx to RCPT TO), MessageRefused (a 5xx at DATA: this message
refused; whether that is about this one message or about every message of its kind, only
the sender can tell, from what the server took before) or ServerRefused (a 5xx to
anything else: the session or the sender address is at fault, not the recipient).
"""

from __future__ import annotations

import contextlib
import mailbox
import re
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
    "unwire",
    "wire_data",
    "open_smtp",
    "smtp_reply",
    "Connection",
    "MaildirTransport",
    "MessageRefused",
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


class MessageRefused(ServerRefused):
    """A 5xx at DATA: the server refused this message. Its reply alone cannot say whether
    the refusal is about what every message of the edition carries (then it is the
    server's or the edition's, like any ServerRefused) or about what only this one carries
    (a subscriber's name or address, filled in per message): the sender decides by
    whether the server took the same variant for others."""

    def __init__(self, message: str, reply: str) -> None:
        super().__init__(message)
        self.reply = reply


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
    5xx to RCPT TO is about the recipient; a 5xx at DATA is about the message
    (MessageRefused: this one, or every one like it); any other 5xx is about the server,
    and would be the same for every recipient."""
    reply = smtp_reply(code, text)
    if 500 <= code < 600:
        if stage == "RCPT":
            return PermanentFailure(reply)
        refused = f"the SMTP server refused {_STAGES.get(stage, 'the session')}: {reply}"
        if stage == "DATA":
            return MessageRefused(refused, reply)
        return ServerRefused(refused)
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


_BARE_LINE_END = re.compile(rb"\r\n|\r|\n")


def wire_data(message: bytes) -> bytes:
    """A message as it goes after DATA: CRLF line endings, a dot doubled at the start of
    a line, the final CRLF and the closing dot. digest's own messages are CRLF already
    and seldom have a line that starts with a dot, so two C-speed scans usually decide
    that nothing needs rewriting."""
    if message.count(b"\n") != message.count(b"\r\n") or message.count(b"\r") != \
            message.count(b"\r\n"):
        message = _BARE_LINE_END.sub(b"\r\n", message)
    # Every line but the first starts after a LF: bytes.replace (C speed) stuffs them all;
    # a regular expression anchored at each line took 0.4 ms on a 58 KB message.
    message = message.replace(b"\n.", b"\n..")
    if message.startswith(b"."):
        message = b"." + message
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


def unwire(data: bytes) -> bytes:
    """A message back from its DATA form."""
    body = data[:-3].replace(b"\n..", b"\n.")
    return body[1:] if body.startswith(b"..") else body


class SmtpConnection:
    """One SMTP session. A message goes in one transaction: MAIL FROM, RCPT TO and DATA
    in one write when the server offers PIPELINING (RFC 2920), one by one when not; the
    message itself in one write, prepared by `wire_data`."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.smtp = open_smtp(settings)
        self.pipelining = self.smtp.has_extn("pipelining")
        self.size = self.smtp.has_extn("size")

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        self._send(sender, recipient, message, None)

    def send_wire(self, sender: str, recipient: str, data: bytes) -> None:
        """Send a message given in its DATA form (CRLF, dot-stuffed, ending ".\r\n")."""
        self._send(sender, recipient, None, data)

    def _send(self, sender: str, recipient: str, message: bytes | None,
              data: bytes | None) -> None:
        try:
            if sender.isascii() and recipient.isascii():
                self._transaction(sender, recipient,
                                  data if data is not None else wire_data(message or b""))
            else:       # SMTPUTF8 addresses: smtplib's way
                plain = message if message is not None else unwire(data or b".\r\n")
                self.smtp.sendmail(sender, [recipient], plain)
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

    def _transaction(self, sender: str, recipient: str, data: bytes) -> None:
        """MAIL, RCPT, DATA and the message (in its DATA form); a refusal raises as
        smtplib.sendmail would (SMTPSenderRefused, SMTPRecipientsRefused, SMTPDataError),
        after a RSET that leaves the session ready for the next message."""
        smtp = self.smtp
        size = f" SIZE={len(data)}" if self.size else ""
        commands = [f"MAIL FROM:<{sender}>{size}\r\n".encode(),
                    f"RCPT TO:<{recipient}>\r\n".encode(), b"DATA\r\n"]
        if self.pipelining:
            smtp.send(b"".join(commands))
        replies: list[tuple[int, bytes]] = []
        for command in commands:
            if not self.pipelining:
                smtp.send(command)
            replies.append(smtp.getreply())
            if replies[-1][0] == 421:           # closing: no more replies will come
                raise smtplib.SMTPResponseException(*replies[-1])
            if not self.pipelining and not 200 <= replies[-1][0] < 400:
                break
        mail, rcpt, go = (replies + [(503, b"not sent")] * 3)[:3]
        if go[0] == 354 and (mail[0] != 250 or rcpt[0] not in (250, 251)):
            smtp.send(b".\r\n")               # DATA was taken after all: end it empty
            smtp.getreply()
        if mail[0] != 250:
            self._rset()
            raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
        if rcpt[0] not in (250, 251):
            self._rset()
            raise smtplib.SMTPRecipientsRefused({recipient: rcpt})
        if go[0] != 354:
            self._rset()
            raise smtplib.SMTPDataError(*go)
        smtp.send(data)
        code, reply = smtp.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)

    def _rset(self) -> None:
        """RSET after a refused transaction; a server that hung up is the next send's
        problem (it reconnects), as with smtplib."""
        with contextlib.suppress(smtplib.SMTPServerDisconnected):
            self.smtp.rset()

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


