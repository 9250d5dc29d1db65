"""A real SMTP server on 127.0.0.1 (aiosmtpd in a thread): `digest demo` sends through
it, and tests use it as the far end, optionally misbehaving on purpose."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

__all__ = ["DROP", "LoopbackSMTPServer", "Received", "free_port"]

# A reply policy may return this to close the connection instead of answering.
DROP = "DROP"

# (phase, mail_from, recipient) → an SMTP reply such as "451 try later", DROP, or None
# for the normal answer. Phases: "MAIL" (recipient ""), "RCPT" and "DATA" (per recipient).
ReplyPolicy = Callable[[str, str, str], str | None]


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    at: float = field(default_factory=time.time)    # when the server accepted it
    peer: str = ""                                   # the client's address:port

    def message(self) -> EmailMessage:
        # Parsing original_content with policy.default keeps UTF-8 headers intact.
        msg = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:port now (as asyncio's does: SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class _Handler:
    def __init__(self, server: LoopbackSMTPServer) -> None:
        self.server = server

    async def handle_EHLO(self, smtp: SMTPProtocol, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        # aiosmtpd reads commands one after the other, so it takes pipelined ones; say so,
        # as Postfix does, unless the test wants a server that does not.
        session.host_name = hostname
        if self.server.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, smtp: SMTPProtocol, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        reply = self.server.reply("MAIL", address, "")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, smtp: SMTPProtocol, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.server.reply("RCPT", envelope.mail_from or "", address)
        if reply == DROP:
            assert smtp.transport is not None
            smtp.transport.close()
            return "421 closing"
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTPProtocol, session: Session,
                          envelope: Envelope) -> str:
        for rcpt in envelope.rcpt_tos:
            reply = self.server.reply("DATA", envelope.mail_from or "", rcpt)
            if reply == DROP:
                assert isinstance(smtp.transport, asyncio.Transport)
                smtp.transport.abort()
                return "421 closing"
            if reply:
                return reply
        data = envelope.original_content or b""
        peer = ":".join(str(part) for part in session.peer) if session.peer else ""
        self.server.store(Received(envelope.mail_from or "", tuple(envelope.rcpt_tos), data,
                                   peer=peer))
        return "250 Message accepted for delivery"


class _Authenticator:
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server: SMTPProtocol, session: Session, envelope: Envelope,
                 mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == self.user \
            and auth_data.password == self.password
        return AuthResult(success=ok, handled=False)


class LoopbackSMTPServer:
    """An SMTP server on 127.0.0.1 that keeps what it receives (and, with outbox, writes
    each message to outbox/NNNNN.eml)."""

    def __init__(self, outbox: Path | None = None, reply_policy: ReplyPolicy | None = None,
                 port: int | None = None, login: tuple[str, str] | None = None,
                 headers_only: bool = False, pipelining: bool = True) -> None:
        self.outbox = outbox
        self.pipelining = pipelining
        self.reply_policy = reply_policy
        self._chosen_port = port
        self.port = port or free_port()
        self.received: list[Received] = []
        # Keep only each message's header block (for tests that count many messages).
        self.headers_only = headers_only
        self._lock = threading.Lock()
        self._extra: dict[str, Any] = {}
        if login is not None:
            # Loopback only, so AUTH without TLS is acceptable here.
            self._extra = {"authenticator": _Authenticator(*login), "auth_require_tls": False}
        self._controller = self._new_controller()

    def _new_controller(self) -> Controller:
        return Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
                          data_size_limit=50 * 2**20, ready_timeout=10, **self._extra)

    def reply(self, phase: str, mail_from: str, rcpt: str) -> str | None:
        return self.reply_policy(phase, mail_from, rcpt) if self.reply_policy else None

    def store(self, item: Received) -> None:
        if self.headers_only:
            item = Received(item.mail_from, item.recipients,
                            item.data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", item.at,
                            item.peer)
        with self._lock:
            self.received.append(item)
            number = len(self.received)
        if self.outbox is not None:
            path = self.outbox / f"{number:05d}.eml"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(item.data)
            tmp.replace(path)

    def by_recipient(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = {}
        with self._lock:
            for item in self.received:
                for rcpt in item.recipients:
                    out.setdefault(rcpt, []).append(item)
        return out

    def start(self) -> LoopbackSMTPServer:
        if self.outbox is not None:
            self.outbox.mkdir(parents=True, exist_ok=True)
        # A port chosen free can be taken by another process before the server binds it:
        # choose again (a port the caller named is theirs to fix). Checked first, since
        # a Controller that cannot bind waits out its whole ready_timeout before saying so.
        for _attempt in range(20):
            if self._chosen_port or _bindable(self.port):
                try:
                    self._controller.start()
                    return self
                except OSError as exc:
                    self._discard_controller()
                    if exc.errno != errno.EADDRINUSE or self._chosen_port:
                        raise
            else:
                self._discard_controller()
            self.port = free_port()
            self._controller = self._new_controller()
        raise OSError(errno.EADDRINUSE, "no free port for the loopback SMTP server")

    def _discard_controller(self) -> None:
        """Let go of a Controller that never started or failed to (its thread has ended)."""
        thread = self._controller._thread
        if thread is not None:
            thread.join(timeout=10)
        self._controller._thread = None
        if not self._controller.loop.is_closed():
            self._controller.loop.close()

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> LoopbackSMTPServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
