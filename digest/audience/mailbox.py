"""Reading the bounce mailbox of [bounces]: every message in its folder goes to a handler,
which says whether it dealt with it. A message dealt with is moved to processed_folder
(created when missing) or deleted, as [bounces] after says; any other message (the
handler said no, or raised) stays where it is and is read again next time.

IMAP goes through imap-tools: the folder's UIDs first, then the messages in batches, each
batch fetched in one command without setting \\Seen and moved (or deleted) as soon as it
is done, so a mailbox of any size never sits in memory and a run that is cut short has
moved what it finished. POP3 goes through poplib, which has no folders: a message dealt
with is deleted, whatever after says; each batch is one session, whose deletions the
server carries out at QUIT.

TLS is always verified: against the system's CA store, plus [bounces] ca_file when set.
A mailbox that cannot be reached, refuses the login, presents an untrusted certificate or
has no such folder raises ConfigError with one line naming the mailbox and the setting
that fixes it.
"""

from __future__ import annotations

import imaplib
import logging
import poplib
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted, MailMessage
from imap_tools.errors import (
    ImapToolsError,
    MailboxFolderSelectError,
    MailboxLoginError,
    UnexpectedCommandStatusError,
)
from imap_tools.mailbox import BaseMailBox

from ..config import BouncesSettings, Settings
from ..errors import ConfigError, DigestError
from ..store.db import Store
from ..text import clean_label
from .bounces import BounceDesk, Outcome

__all__ = ["BATCH", "FetchReport", "Handler", "Progress", "fetch_bounces", "fetch_mailbox"]

log = logging.getLogger("digest.bounces")

# Messages per IMAP FETCH, and per POP3 session: bounces are a few kB each.
BATCH = 100

# handle(raw message, source) -> True when the message was dealt with.
Handler = Callable[[bytes, str], bool]
# Told after each message: "handled", "left" or "error".
Progress = Callable[[str], None]

_PORTS = {("imap", True): 993, ("imap", False): 143, ("pop3", True): 995, ("pop3", False): 110}


@dataclass
class FetchReport:
    """What one pass over the mailbox did: read = handled + left; errors are the messages
    among the left ones whose handler raised, one line each ("source: why")."""

    read: int = 0
    handled: int = 0
    left: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Box:
    """Where the mailbox is, and how to talk to it."""

    b: BouncesSettings
    port: int
    context: ssl.SSLContext | None

    @property
    def where(self) -> str:
        return f"the {self.b.protocol} mailbox {self.b.username} at {self.b.host}:{self.port}"

    def source(self, path: str) -> str:
        """A URL naming one message, e.g. imap://bounces%40example.org@mail.example.org/
        INBOX;UID=42 (the port only when it is not the protocol's usual one)."""
        default = _PORTS[(self.b.protocol, self.b.security == "ssl")]
        host = self.b.host if self.port == default else f"{self.b.host}:{self.port}"
        return f"{self.b.protocol}://{quote(self.b.username, safe='')}@{host}/{path}"


def fetch_mailbox(settings: Settings, handle: Handler, *, progress: Progress | None = None,
                  limit: int | None = None, batch: int = BATCH) -> FetchReport:
    """Hand every message of the [bounces] mailbox (the first `limit` of them) to handle,
    then move or delete the ones it dealt with (returned True for). A handler that raises
    leaves its message where it was, like one that returns False, and the others go on."""
    box = _box(settings)
    if box.b.protocol == "pop3":
        return _fetch_pop3(box, _Hand(handle, progress), limit, batch)
    return _fetch_imap(box, _Hand(handle, progress), limit, batch)


def fetch_bounces(settings: Settings, store: Store, *, dry_run: bool = False,
                  on_outcome: Callable[[Outcome], None] | None = None,
                  progress: Progress | None = None) -> FetchReport:
    """The bounce mailbox through the bounce desk (`digest bounces fetch` and the
    scheduler): each message is read and what it says recorded, then it leaves the folder.
    With dry_run nothing is recorded and every message stays."""
    desk = BounceDesk(store, settings)

    def handle(raw: bytes, source: str) -> bool:
        outcome = desk.apply(desk.read(raw, source), dry_run=dry_run)
        if on_outcome is not None:
            on_outcome(outcome)
        return not dry_run

    return fetch_mailbox(settings, handle, progress=progress)


def _box(settings: Settings) -> _Box:
    b = settings.bounces
    for value, what in ((b.host, "host"), (b.username, "username")):
        if not value:
            raise ConfigError(f"[bounces] {what} is empty: set [bounces] host, username and "
                              f"DIGEST_BOUNCES__PASSWORD to read the bounce mailbox")
    if not b.password:
        raise ConfigError(f"no password for the {b.protocol} mailbox {b.username} at "
                          f"{b.host}: set DIGEST_BOUNCES__PASSWORD in the environment")
    port = b.port or _PORTS[(b.protocol, b.security == "ssl")]
    if b.security == "starttls" and port in (993, 995):
        raise ConfigError(f"[bounces] port {port} speaks TLS from the start: use security = "
                          f"\"ssl\" there (\"starttls\" is for ports 143 and 110)")
    if b.protocol == "imap" and b.after == "move" and b.processed_folder == b.folder:
        raise ConfigError(f"[bounces] processed_folder is the folder read ({b.folder!r}): "
                          f"name another folder, or set after = \"delete\"")
    context = None
    if b.security != "none":
        context = ssl.create_default_context()
        if b.ca_file:
            path = settings.resolve_path(b.ca_file)
            try:
                context.load_verify_locations(cafile=path)
            except (OSError, ssl.SSLError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ConfigError(f"[bounces] ca_file {path}: cannot load it ({reason}); "
                                  f"name a PEM file of CA certificates") from None
    return _Box(b, port, context)


@dataclass
class _Hand:
    """The handler, its progress and the counts."""

    handle: Handler
    progress: Progress | None
    report: FetchReport = field(default_factory=FetchReport)

    def __call__(self, raw: bytes, source: str) -> bool:
        """True when the handler dealt with the message."""
        self.report.read += 1
        outcome = "left"
        try:
            done = bool(self.handle(raw, source))
        except Exception as exc:     # one bad message never stops the others
            why = str(exc) if isinstance(exc, DigestError) else f"{type(exc).__name__}: {exc}"
            self.report.errors.append(f"{source}: {why}")
            log.warning("%s: %s (left in the mailbox)", source, why)
            log.debug("%s: the handler raised", source, exc_info=True)
            done, outcome = False, "error"
        if done:
            self.report.handled += 1
            outcome = "handled"
        else:
            self.report.left += 1
        if self.progress:
            self.progress(outcome)
        return done


# --- errors ---------------------------------------------------------------------------

def _said(exc: BaseException) -> str:
    """What the server said, as one short clean line."""
    if isinstance(exc, UnexpectedCommandStatusError):
        lines = exc.command_result[1] if len(exc.command_result) > 1 else []
        text = " ".join(line.decode("utf-8", "replace") if isinstance(line, bytes)
                        else str(line) for line in (lines or []) if line is not None)
    elif isinstance(exc, poplib.error_proto) and exc.args and isinstance(exc.args[0], bytes):
        text = exc.args[0].decode("utf-8", "replace")
    else:
        text = str(exc)
    text = clean_label(text)
    return text if len(text) <= 200 else text[:199] + "…"


@contextmanager
def _failures(box: _Box) -> Iterator[None]:
    """Turns what can go wrong talking to the mailbox into one ConfigError line."""
    try:
        yield
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(f"{box.where}: its certificate is not trusted "
                          f"({exc.verify_message}); set [bounces] ca_file to the certificate "
                          f"of the CA that signed it") from None
    except ssl.SSLError as exc:
        tls, plain = (_PORTS[(box.b.protocol, flag)] for flag in (True, False))
        raise ConfigError(f"{box.where}: TLS failed ({exc.reason or exc}); check [bounces] "
                          f"security: \"ssl\" for port {tls}, \"starttls\" for {plain}") from None
    except TimeoutError:
        raise ConfigError(f"{box.where} did not answer within {box.b.timeout:g} s ([bounces] "
                          f"timeout); check [bounces] host and port, or try again later"
                          ) from None
    except OSError as exc:
        raise ConfigError(f"cannot reach {box.where} ({exc.strerror or exc}); check "
                          f"[bounces] host, port and security") from None
    except (imaplib.IMAP4.error, ImapToolsError, poplib.error_proto) as exc:
        raise ConfigError(f"{box.where} answered: {_said(exc)}") from None


def _login_refused(box: _Box, exc: BaseException) -> ConfigError:
    return ConfigError(f"{box.where} refused the login ({_said(exc)}); check [bounces] "
                       f"username and DIGEST_BOUNCES__PASSWORD")


def _no_starttls(box: _Box) -> ConfigError:
    tls = _PORTS[(box.b.protocol, True)]
    return ConfigError(f"{box.where} does not offer STARTTLS; use security = \"ssl\" (port "
                       f"{tls}), or \"none\" on a network you trust")


# --- IMAP -----------------------------------------------------------------------------

class _RawMessage(MailMessage):
    """imap-tools' message, keeping the bytes the server sent (it keeps only the parsed
    form, which would not serialise back to the same bytes)."""

    def __init__(self, fetch_data: list[Any]) -> None:
        super().__init__(fetch_data)
        # The literal of the FETCH response: imaplib gives it as (prefix, bytes).
        self.raw: bytes = next((item[1] for item in fetch_data if isinstance(item, tuple)),
                               b"")


def _raw(message: MailMessage) -> bytes:
    assert isinstance(message, _RawMessage)   # the class _imap_open gives the mailbox
    return message.raw


def _imap_open(box: _Box) -> BaseMailBox:
    """Connected, logged in, the folder selected."""
    b = box.b
    if b.security == "ssl":
        mailbox: BaseMailBox = MailBox(b.host, box.port, timeout=b.timeout,
                                       ssl_context=box.context)
    elif b.security == "starttls":
        try:
            mailbox = MailBoxStartTls(b.host, box.port, timeout=b.timeout,
                                      ssl_context=box.context)
        except imaplib.IMAP4.error as exc:
            if "STARTTLS" in str(exc) and not isinstance(exc, imaplib.IMAP4.abort):
                raise _no_starttls(box) from None
            raise
    else:
        mailbox = MailBoxUnencrypted(b.host, box.port, timeout=b.timeout)
    mailbox.email_message_class = _RawMessage
    try:
        login = mailbox.login if (b.username + b.password).isascii() else mailbox.login_utf8
        try:
            login(b.username, b.password, initial_folder=None)
        except (MailboxLoginError, imaplib.IMAP4.error) as exc:
            if isinstance(exc, imaplib.IMAP4.abort):
                raise
            raise _login_refused(box, exc) from None
        try:
            mailbox.folder.set(b.folder)
        except MailboxFolderSelectError:
            names = ", ".join(sorted(f.name for f in mailbox.folder.list()))
            raise ConfigError(f"{box.where} has no folder {b.folder!r} (it has: {names}); "
                              f"check [bounces] folder") from None
    except BaseException:
        _imap_close(mailbox)
        raise
    return mailbox


def _imap_close(mailbox: BaseMailBox) -> None:
    """Drop the connection without a word (after a failure: LOGOUT could wait)."""
    with suppress(OSError):
        mailbox.client.shutdown()


def _fetch_imap(box: _Box, hand: _Hand, limit: int | None, batch: int) -> FetchReport:
    with _failures(box):
        mailbox = _imap_open(box)
        try:
            uids: list[str] = mailbox.uids("ALL")
            if limit is not None:
                uids = uids[:max(limit, 0)]
            target = _Target(box)
            for start in range(0, len(uids), batch):
                done: list[str] = []
                for message in mailbox.fetch(uid_list=uids[start:start + batch],
                                             mark_seen=False, headers_only=False, bulk=True):
                    source = box.source(f"{quote(box.b.folder)};UID={message.uid}")
                    if hand(_raw(message), source) and message.uid:
                        done.append(message.uid)
                target.dispose(mailbox, done)
        except BaseException:
            _imap_close(mailbox)
            raise
        mailbox.logout()
    return hand.report


@dataclass
class _Target:
    """Where messages that were dealt with go: processed_folder (made the first time it
    is needed), or nowhere (deleted and expunged)."""

    box: _Box
    ready: bool = False

    def dispose(self, mailbox: BaseMailBox, uids: list[str]) -> None:
        if not uids:
            return
        b = self.box.b
        if b.after == "delete":
            mailbox.delete(uids)
            return
        if not self.ready and not mailbox.folder.exists(b.processed_folder):
            try:
                mailbox.folder.create(b.processed_folder)
            except UnexpectedCommandStatusError as exc:
                raise ConfigError(f"{self.box.where}: cannot create the folder "
                                  f"{b.processed_folder!r} ({_said(exc)}); create it, or set "
                                  f"[bounces] processed_folder to one that exists") from None
        self.ready = True
        mailbox.move(uids, b.processed_folder)


# --- POP3 -----------------------------------------------------------------------------

def _pop3_open(box: _Box) -> poplib.POP3:
    b = box.b
    if b.security == "ssl":
        pop: poplib.POP3 = poplib.POP3_SSL(b.host, box.port, timeout=b.timeout,
                                           context=box.context)
    else:
        pop = poplib.POP3(b.host, box.port, timeout=b.timeout)
    try:
        if b.security == "starttls":
            try:
                pop.stls(context=box.context)
            except poplib.error_proto:
                raise _no_starttls(box) from None
        try:
            pop.user(b.username)
            pop.pass_(b.password)
        except poplib.error_proto as exc:
            raise _login_refused(box, exc) from None
    except BaseException:
        _pop3_close(pop)
        raise
    return pop


def _pop3_close(pop: poplib.POP3) -> None:
    """Drop the connection without a word; its socket may be gone already (a failed
    STLS handshake closes it)."""
    with suppress(OSError):
        pop.close()


def _pop3_listing(pop: poplib.POP3) -> tuple[list[tuple[int, str]], bool]:
    """(message number, key) for each message, and whether the keys name messages across
    sessions: UIDL's unique ids do; a server without UIDL gives only numbers."""
    try:
        lines, stable = pop.uidl()[1], True
    except poplib.error_proto:
        lines, stable = pop.list()[1], False
    entries = []
    for line in lines:
        number, _, rest = line.decode("ascii", "replace").partition(" ")
        entries.append((int(number), rest.strip() if stable else number))
    return entries, stable


def _fetch_pop3(box: _Box, hand: _Hand, limit: int | None, batch: int) -> FetchReport:
    seen: set[str] = set()            # keys read in this pass (left ones stay on the server)
    budget = limit if limit is not None else -1
    with _failures(box):
        while budget != 0:
            pop = _pop3_open(box)
            try:
                entries, stable = _pop3_listing(pop)
                todo = [(n, key) for n, key in entries if key not in seen]
                size = len(todo) if not stable else batch
                todo = todo[:size if budget < 0 else min(size, budget)]
                for number, key in todo:
                    seen.add(key)
                    raw = b"\r\n".join(pop.retr(number)[1]) + b"\r\n"
                    if hand(raw, box.source(quote(key, safe=""))):
                        pop.dele(number)
                pop.quit()                # the server deletes the messages marked now
            except BaseException:
                _pop3_close(pop)
                raise
            budget = budget - len(todo) if budget > 0 else budget
            if not stable or len(todo) < size or not todo:
                break
    return hand.report
