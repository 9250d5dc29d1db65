"""Reading the bounce mailbox of [bounces]: every message in its folder goes to a handler,
which says whether it dealt with it. A message dealt with is moved to processed_folder
(created when missing) or deleted, as [bounces] after says; a message the handler said no
to stays where it is and is read again next time.

Work is bounded by the message, never by the mailbox: each message's size is asked first
(IMAP's RFC822.SIZE, POP3's LIST), one over [bounces] max_message_bytes is not fetched at
all and stays for a person to look at, and the others are fetched one at a time. One
message that cannot be read or handled (the server refuses it, it is bigger than it said,
the handler raises) is skipped and logged, and the rest of the mailbox is read. Such a
message stays where it is; with `tries` (the store, for `digest bounces fetch`) it is
tried in at most MAX_TRIES fetches and then left alone, so a poisoned message costs one
line of the report, not a download each run.

IMAP goes through imap-tools for the session and the folder (login, select, move), and a
plain UID FETCH per message (BODY.PEEK[]: \\Seen is not set); the messages dealt with are
moved (or deleted) after every BATCH, so a run that is cut short has moved what it
finished. POP3 goes through poplib, which has no folders: a message dealt with is deleted,
whatever after says; each batch is one session, whose deletions the server carries out at
QUIT. poplib refuses any line over 2,048 bytes and its RETR keeps every line in a list, so
a message is read by RETR with a reader of our own here, bounded by the message's size
cap rather than by the line (bounce mail quotes whole HTML lines of the original).

TLS is always verified: against the system's CA store, plus [bounces] ca_file when set.
A mailbox that cannot be reached, refuses the login, presents an untrusted certificate or
has no such folder raises ConfigError with one line naming the mailbox and the setting
that fixes it.
"""

from __future__ import annotations

import hashlib
import imaplib
import logging
import poplib
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted
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
from ..store.ratelimits import count_hit, current_hits
from ..text import clean_label
from .bounces import BounceDesk, Outcome

__all__ = ["BATCH", "MAX_TRIES", "FetchReport", "Handler", "Progress", "Tries",
           "fetch_bounces", "fetch_mailbox"]

log = logging.getLogger("digest.bounces")

# Messages between two moves (IMAP), and per POP3 session. Each message is fetched alone.
BATCH = 100

# Fetches in which a message may fail (be unreadable, or make the handler raise) before
# it is left alone: a failure may pass (the store was busy), a poisoned message does not.
MAX_TRIES = 3

# Sizes asked of the IMAP server per UID FETCH (RFC822.SIZE): a short line each.
_SIZES_PER_FETCH = 500

# handle(raw message, source) -> True when the message was dealt with.
Handler = Callable[[bytes, str], bool]
# Told after each message: "handled", "left", "error" or "skipped".
Progress = Callable[[str], None]


class Tries(Protocol):
    """Memory of the messages that failed, across fetches (keyed by their source)."""

    def spent(self, source: str) -> bool:
        """True once the message has failed MAX_TRIES times: it is not fetched again."""

    def failed(self, source: str) -> None:
        """The message failed once more."""

_PORTS = {("imap", True): 993, ("imap", False): 143, ("pop3", True): 995, ("pop3", False): 110}


@dataclass
class FetchReport:
    """What one pass over the mailbox did: read = handled + left; errors are the messages
    among the left ones that could not be read or whose handler raised, one line each
    ("source: why"); skipped are those not fetched at all (over max_message_bytes, or
    failed MAX_TRIES times already), one line each, left in the mailbox for a person."""

    read: int = 0
    handled: int = 0
    left: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


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
                  limit: int | None = None, batch: int = BATCH,
                  tries: Tries | None = None) -> FetchReport:
    """Hand every message of the [bounces] mailbox (the first `limit` of them) to handle,
    one at a time, then move or delete the ones it dealt with (returned True for). A
    message over max_message_bytes is not fetched; one that cannot be read, or whose
    handler raises, stays where it was, like one the handler said no to, and the others go
    on. With tries, a message that failed MAX_TRIES times is no longer fetched."""
    box = _box(settings)
    hand = _Hand(handle, progress, tries)
    if box.b.protocol == "pop3":
        return _fetch_pop3(box, hand, limit, batch)
    return _fetch_imap(box, hand, limit, batch)


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

    return fetch_mailbox(settings, handle, progress=progress,
                         tries=None if dry_run else _StoredTries(store))


# How long the store remembers a message's failures: after that it has MAX_TRIES more.
_TRIES_DAYS = 30


@dataclass
class _StoredTries:
    """Failures counted in the store's rate-limit counters, so that every process, and the
    next run, sees them."""

    store: Store

    def _key(self, source: str) -> str:
        return "bounce mailbox failure:" + hashlib.sha256(source.encode()).hexdigest()[:32]

    def spent(self, source: str) -> bool:
        return current_hits(self.store, self._key(source),
                            self.store.clock.timestamp()) >= MAX_TRIES

    def failed(self, source: str) -> None:
        count_hit(self.store, self._key(source), _TRIES_DAYS * 86400, 1,
                  self.store.clock.timestamp())


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
    """The handler, its progress, the memory of failures and the counts."""

    handle: Handler
    progress: Progress | None
    tries: Tries | None = None
    report: FetchReport = field(default_factory=FetchReport)

    def wanted(self, source: str, size: int | None, cap: int) -> bool:
        """Whether to fetch a message of this size: not when it is over the cap, or has
        failed MAX_TRIES times (then it is skipped: reported, logged, left in place)."""
        if size is not None and size > cap:
            self.skip(source, f"{size} bytes, over [bounces] max_message_bytes ({cap}); "
                              f"left in the mailbox")
            return False
        if self.tries is not None and self.tries.spent(source):
            self.skip(source, f"failed in {MAX_TRIES} fetches; left in the mailbox")
            return False
        return True

    def skip(self, source: str, why: str) -> None:
        self.report.skipped.append(f"{source}: {why}")
        log.warning("%s: skipped: %s", source, why)
        if self.progress:
            self.progress("skipped")

    def unreadable(self, source: str, why: str) -> None:
        """The message could not be fetched (the server refused it, or sent more than
        the cap): counted as read and left, like one whose handler raised."""
        self.report.read += 1
        self._failed(source, why)
        if self.progress:
            self.progress("error")

    def _failed(self, source: str, why: str) -> None:
        self.report.errors.append(f"{source}: {why}")
        self.report.left += 1
        log.warning("%s: %s (left in the mailbox)", source, why)
        if self.tries is not None:
            self.tries.failed(source)

    def __call__(self, raw: bytes, source: str) -> bool:
        """True when the handler dealt with the message."""
        self.report.read += 1
        try:
            done = bool(self.handle(raw, source))
        except Exception as exc:     # one bad message never stops the others
            why = str(exc) if isinstance(exc, DigestError) else f"{type(exc).__name__}: {exc}"
            log.debug("%s: the handler raised", source, exc_info=True)
            self._failed(source, why)
            done, outcome = False, "error"
        else:
            outcome = "handled" if done else "left"
            if done:
                self.report.handled += 1
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
    cap = box.b.max_message_bytes
    with _failures(box):
        mailbox = _imap_open(box)
        try:
            uids: list[str] = mailbox.uids("ALL")
            if limit is not None:
                uids = uids[:max(limit, 0)]
            target = _Target(box)
            for start in range(0, len(uids), batch):
                chunk = uids[start:start + batch]
                sizes = _imap_sizes(mailbox, chunk)
                done: list[str] = []
                for uid in chunk:
                    source = box.source(f"{quote(box.b.folder)};UID={uid}")
                    if uid not in sizes:        # expunged by someone else meanwhile
                        continue
                    if not hand.wanted(source, sizes[uid], cap):
                        continue
                    raw = _imap_message(mailbox, uid, cap)
                    if isinstance(raw, str):
                        hand.unreadable(source, raw)
                    elif hand(raw, source):
                        done.append(uid)
                target.dispose(mailbox, done)
        except BaseException:
            _imap_close(mailbox)
            raise
        mailbox.logout()
    return hand.report


_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


def _imap_sizes(mailbox: BaseMailBox, uids: list[str]) -> dict[str, int]:
    """The size of each message of uids that is still there, asked before any is fetched:
    one short line per message."""
    sizes: dict[str, int] = {}
    for start in range(0, len(uids), _SIZES_PER_FETCH):
        typ, data = mailbox.client.uid("FETCH", ",".join(uids[start:start + _SIZES_PER_FETCH]),
                                       "(RFC822.SIZE)")
        if typ != "OK":
            raise UnexpectedCommandStatusError((typ, data), "OK")
        for line in data:
            head = line[0] if isinstance(line, tuple) else line
            if not isinstance(head, bytes):
                continue
            uid, size = _UID.search(head), _SIZE.search(head)
            if uid and size:
                sizes[uid.group(1).decode()] = int(size.group(1))
    return sizes


def _imap_message(mailbox: BaseMailBox, uid: str, cap: int) -> bytes | str:
    """One message as the server stores it (BODY.PEEK[]: not marked as seen), or why it
    could not be had. imaplib reads the literal whole: its size was checked against cap
    just before, and a server sending more than it said is refused afterwards."""
    try:
        typ, data = mailbox.client.uid("FETCH", uid, "(BODY.PEEK[])")
    except imaplib.IMAP4.error as exc:
        if isinstance(exc, imaplib.IMAP4.abort):
            raise                      # the connection is gone: nothing more can be read
        return f"the server refused to send it ({_said(exc)})"
    if typ != "OK":
        refused = UnexpectedCommandStatusError((typ, data), "OK")
        return f"the server refused to send it ({_said(refused)})"
    raw = next((item[1] for item in data
                if isinstance(item, tuple) and isinstance(item[1], bytes)), None)
    if raw is None:
        return "the server sent no message (expunged meanwhile?)"
    if len(raw) > cap:
        return f"the server sent {len(raw)} bytes, over [bounces] max_message_bytes ({cap})"
    return raw


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

# A line of a message is read in pieces of at most this much.
_POP3_PIECE = 64 * 1024


class _TooBig(Exception):
    """The server sent more than the cap for one message (all of it was read, and
    dropped: the session can go on)."""


class _Pop3Reading:
    """RETR with a reader of our own, for poplib's classes (the base that follows this
    one in the class list): any line length, at most `cap` bytes kept per message."""

    file: Any
    sock: Any

    def retr_bounded(self, number: int, cap: int) -> bytes:
        """Message `number` as sent (dot-stuffing undone, lines ending in CRLF). A message
        of more than cap bytes is read to its end and dropped: _TooBig. poplib.error_proto
        for -ERR (the session goes on) or a connection that ends."""
        self.sock.sendall(f"RETR {number}\r\n".encode("ascii"))
        status = self.file.readline(_POP3_PIECE)
        if not status.startswith(b"+"):
            if not status.endswith(b"\n"):      # not a status line: the session is lost
                raise OSError("the server's answer to RETR is not a status line")
            raise poplib.error_proto(status.rstrip(b"\r\n"))
        parts: list[bytes] = []
        kept, at_start = 0, True
        while True:
            piece = self.file.readline(_POP3_PIECE)
            if not piece:
                raise OSError("the server closed the connection in the middle of a message")
            if at_start and piece in (b".\r\n", b".\n"):
                break
            if at_start and piece.startswith(b".."):
                piece = piece[1:]
            at_start = piece.endswith(b"\n")
            if at_start:
                piece = piece.rstrip(b"\r\n") + b"\r\n"
            kept += len(piece)
            if kept <= cap:
                parts.append(piece)
            elif parts:
                parts.clear()                  # over the cap: read on, keep nothing
        if kept > cap:
            raise _TooBig(kept)
        return b"".join(parts)


class _Pop3(_Pop3Reading, poplib.POP3):
    pass


class _Pop3Ssl(_Pop3Reading, poplib.POP3_SSL):
    pass


def _pop3_open(box: _Box) -> _Pop3 | _Pop3Ssl:
    b = box.b
    if b.security == "ssl":
        pop: _Pop3 | _Pop3Ssl = _Pop3Ssl(b.host, box.port, timeout=b.timeout,
                                         context=box.context)
    else:
        pop = _Pop3(b.host, box.port, timeout=b.timeout)
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


def _pop3_listing(pop: poplib.POP3) -> tuple[list[tuple[int, str, int | None]], bool]:
    """(message number, key, size) for each message, and whether the keys name messages
    across sessions: UIDL's unique ids do; a server without UIDL gives only numbers."""
    sizes: dict[int, int] = {}
    for line in pop.list()[1]:
        number, _, size = line.decode("ascii", "replace").partition(" ")
        with suppress(ValueError):
            sizes[int(number)] = int(size.split()[0])
    try:
        lines, stable = pop.uidl()[1], True
    except poplib.error_proto:
        lines, stable = [str(n).encode() for n in sorted(sizes)], False
    entries = []
    for line in lines:
        number, _, rest = line.decode("ascii", "replace").partition(" ")
        n = int(number)
        entries.append((n, rest.strip() if stable else number, sizes.get(n)))
    return entries, stable


def _fetch_pop3(box: _Box, hand: _Hand, limit: int | None, batch: int) -> FetchReport:
    seen: set[str] = set()            # keys read in this pass (left ones stay on the server)
    budget = limit if limit is not None else -1
    cap = box.b.max_message_bytes
    with _failures(box):
        while budget != 0:
            pop = _pop3_open(box)
            try:
                entries, stable = _pop3_listing(pop)
                if not stable:      # a number names another message next time: no memory
                    hand.tries = None
                todo = [(n, key, size) for n, key, size in entries if key not in seen]
                size = len(todo) if not stable else batch
                todo = todo[:size if budget < 0 else min(size, budget)]
                for number, key, octets in todo:
                    seen.add(key)
                    source = box.source(quote(key, safe=""))
                    if not hand.wanted(source, octets, cap):
                        continue
                    try:
                        raw = pop.retr_bounded(number, cap)
                    except _TooBig as exc:
                        hand.unreadable(source, f"the server sent {exc.args[0]} bytes, over "
                                                f"[bounces] max_message_bytes ({cap})")
                        continue
                    except poplib.error_proto as exc:
                        hand.unreadable(source, f"the server refused to send it "
                                                f"({_said(exc)})")
                        continue
                    if hand(raw, source):
                        pop.dele(number)
                pop.quit()                # the server deletes the messages marked now
            except BaseException:
                _pop3_close(pop)
                raise
            budget = budget - len(todo) if budget > 0 else budget
            if not stable or len(todo) < size or not todo:
                break
    return hand.report
