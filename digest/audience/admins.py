"""The people who may sign in to the admin pages, and their sessions.

Passwords are kept as argon2id hashes (argon2-cffi's PasswordHasher, its RFC 9106
parameters); a hash made with older parameters is replaced at the next sign-in.
A sign-in makes a new random token (the cookie's value) and a CSRF token for the
session's forms; the store keeps only the token's SHA-256, so a copy of the database
signs nobody in.

Who may try, and how often (the store's rate-limit counters, shared by every thread and
process of a site). A client is its network: an IPv4 address, an IPv6 address's /64
(digest.audience.clicks.client_network). Each attempt is counted before its password is
verified, in one atomic upsert that returns the count, so parallel attempts cannot slip
past the limit between a check and a count:

- Per account and network: [admin] lockout_failures attempts within lockout_minutes;
  the one that reaches it, when it fails, locks that account for that network for
  lockout_minutes. Further attempts are refused without verifying. Another network
  is not locked by it: an editor signs in from home while someone elsewhere hammers
  their account.
- Per account, from networks it does not know: ACCOUNT_FACTOR × lockout_failures
  attempts within lockout_minutes, all those networks together, so guessers spread
  over many networks still get a bounded number of guesses. A network is known to an
  account for KNOWN_DAYS after a sign-in to it from there; known networks are not
  counted here (only per network), so an editor at their usual place still signs in
  while a spread-out guesser has used up the account's allowance.
- A right password clears its network's count and lock, and takes its own attempt back
  from the account's count.
- Per network, over every account: the web page's own limit (LOGIN_LIMIT), counted
  before any of this.

Addresses with and without a user are counted alike, and an address without a user
still costs one argon2 verification (against a hash of nothing anybody knows), so
neither the answer nor its time tells whether a user exists. A locked (account,
network) is refused at once, as is a password of no user's length (none, or over
MAX_PASSWORD characters): neither tells anything about a user.

Verifications are the costly part (64 MiB and about 0.3 s of a core each): a process
runs at most VERIFY_SLOTS at once (Verifier). When they are all taken, a sign-in is
answered at once with SignInBusy, with nothing hashed and its counts taken back, rather
than queued behind them while the site's other pages wait.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..config import Settings
from ..errors import InputError, NotFound
from ..store import admins as stored
from ..store import ratelimits as counters
from ..store.admins import SubscriberPage
from ..store.clicks import edition_clicks
from ..store.db import Store
from ..store.models import AdminUser, SubscriberStatus
from ..text import clean_label
from .clicks import client_network
from .subscribers import CsvImportReport, SubscriberBook, normalise_email

__all__ = ["ACCOUNT_FACTOR", "KNOWN_DAYS", "MAX_PASSWORD", "MIN_PASSWORD", "VERIFIER",
           "VERIFY_SLOTS", "AdminIdentity", "SignInBusy", "SubscriberPage", "Verifier",
           "add_user", "clicks_by_number", "find_subscribers",
           "import_upload", "list_users", "remove_user", "same_token", "session_user",
           "sign_in", "sign_out", "subscriber_email", "token_hash"]

log = logging.getLogger("digest.admin")

MIN_PASSWORD = 12
# No user's password is longer (add_user refuses one); a longer one at the sign-in form is
# refused without hashing it.
MAX_PASSWORD = 1024
# Argon2 verifications at once in one process: each holds 64 MiB and a core for about
# 0.3 s, and a sign-in past them is answered at once (SignInBusy).
VERIFY_SLOTS = 2
# Attempts on one account from the networks it does not know, all together, per
# lockout_minutes: this many times lockout_failures.
ACCOUNT_FACTOR = 10
# How long a network that signed in to an account stays known to it.
KNOWN_DAYS = 90
# zxcvbn's score (0-4) a password needs: 3 is "safely unguessable: moderate protection
# from an offline slow-hash scenario" (10^8 guesses or more), as argon2id hashes are.
_STRONG = 3
# Longer than any address; a longer "address" at the sign-in form is cut to this for its
# counter key.
_MAX_EMAIL = 320
_HASHER = PasswordHasher()
# Past any list the store could hold, and within what a database takes as an OFFSET.
_MAX_OFFSET = 2**31 - 1
# How SubscriberBook.import_csv names a stream in its lines.
_STREAM = "<stdin>"


@dataclass(frozen=True)
class AdminIdentity:
    """Who a session cookie signs in, and the CSRF token of that session's forms."""

    user_id: int
    email: str
    csrf: str
    expires_at: datetime


@lru_cache(maxsize=1)
def _nobodys_hash() -> str:
    """An argon2 hash, with the hasher's parameters, of a secret nobody holds."""
    return _HASHER.hash(secrets.token_urlsafe(32))


def token_hash(token: str) -> str:
    """What the store keeps of a session token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same_token(expected: str, given: str | None) -> bool:
    """Whether given is expected, compared in constant time."""
    return given is not None and hmac.compare_digest(expected.encode("utf-8", "replace"),
                                                     given.encode("utf-8", "replace"))


def _key(email: str) -> str:
    """The key an address is found and counted under: the address as stored, lower-cased;
    something that is no address, cut and lower-cased (it finds nobody)."""
    try:
        return normalise_email(email[:_MAX_EMAIL]).lower()
    except InputError:
        return email.strip()[:_MAX_EMAIL].lower()


def _refuse_guessable(address: str, password: str) -> None:
    """InputError for a password a guesser tries early (zxcvbn: common passwords, words
    and names, repeats, sequences, keyboard rows, the address itself), with why."""
    # Imported here: only adding a user needs its word lists.
    from zxcvbn import zxcvbn

    found = zxcvbn(password[:100], user_inputs=[address, *address.split("@"), "digest"])
    if found["score"] >= _STRONG:
        return
    why = found["feedback"]["warning"] or "it is among the first a guesser tries"
    raise InputError(f"the password for {address} is too easy to guess ({why.rstrip('.')}); "
                     f"use a few unrelated words, or a password manager's")


def add_user(store: Store, email: str, password: str,
             now: datetime | None = None) -> AdminUser:
    """A new user who may sign in with email and password. InputError for an address
    that is not one, a password under MIN_PASSWORD characters, or an address that has a
    user already."""
    address = normalise_email(email)
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password for {address} has {len(password)} characters; use at "
                         f"least {MIN_PASSWORD} (a few words make a good one)")
    if len(password) > MAX_PASSWORD:
        raise InputError(f"the password for {address} has {len(password)} characters; use at "
                         f"most {MAX_PASSWORD}")
    _refuse_guessable(address, password)
    user = stored.insert_user(store, address, address.lower(), _HASHER.hash(password),
                              now or store.clock.now())
    if user is None:
        raise InputError(f"{address} may sign in already (see: digest admin list-users; "
                         f"to change the password, remove-user then add-user)")
    return user


def remove_user(store: Store, email: str) -> None:
    """Remove a user and end their sessions; InputError when there is no such user."""
    if not stored.delete_user(store, _key(email)):
        raise InputError(f"no admin user {email.strip()!r} (see: digest admin list-users)")


def list_users(store: Store) -> list[AdminUser]:
    """Every user, by address."""
    return stored.list_users(store)


class SignInBusy(Exception):
    """Every verification slot of the process is taken: try again in a moment. Nothing of
    the attempt was hashed or stays counted."""


class Verifier:
    """Argon2 verifications, at most `slots` at once in this process; a sign-in that finds
    them all taken is refused at once (SignInBusy) instead of waiting for one."""

    def __init__(self, hasher: PasswordHasher | None = None, slots: int = VERIFY_SLOTS) -> None:
        self.hasher = hasher or _HASHER
        self.slots = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot, or raise SignInBusy at once when there is none."""
        if not self.slots.acquire(blocking=False):
            raise SignInBusy("too many sign-ins at once")
        try:
            yield
        finally:
            self.slots.release()

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


# The process's own: every app and sign-in of a process shares its slots.
VERIFIER = Verifier()


class _Attempt:
    """One sign-in attempt's counters (the module's docstring has the rule)."""

    def __init__(self, settings: Settings, key: str, client: str | None, now: float) -> None:
        network = client_network(client) if client else "-"
        self.limit = settings.admin.lockout_failures
        self.window = settings.admin.lockout_minutes * 60
        self.now = now
        # The account's address last in every key, as erase expects of counters keyed by
        # an address (digest.store.privacy).
        here = f"{network}:{key}"
        self.tries_key, self.lock_key = f"admin-try:{here}", f"admin-lock:{here}"
        self.known_key, self.account_key = f"admin-known:{here}", f"admin-account:{key}"
        self.tries = 0
        self.in_account = False

    def count(self, store: Store) -> str | None:
        """Count the attempt; why it is refused unverified, or None to verify it."""
        if counters.current_hits(store, self.lock_key, self.now) > 0:
            return "locked for this network"
        self.tries = counters.count_hit(store, self.tries_key, self.window, 1, self.now)
        if self.tries > self.limit:
            return "locked for this network"
        if counters.current_hits(store, self.known_key, self.now) > 0:
            return None
        self.in_account = True
        total = counters.count_hit(store, self.account_key, self.window, 1, self.now)
        if total > ACCOUNT_FACTOR * self.limit:
            return "locked for networks that never signed in to it"
        return None

    def take_back(self, store: Store) -> None:
        """The attempt was not verified after all: uncount it."""
        counters.take_back(store, self.tries_key, self.now)
        if self.in_account:
            counters.take_back(store, self.account_key, self.now)

    def failed(self, store: Store) -> None:
        if self.tries >= self.limit:
            counters.hold(store, self.lock_key, self.window, self.now)

    def succeeded(self, store: Store) -> None:
        counters.clear_hits(store, self.tries_key)
        counters.clear_hits(store, self.lock_key)
        if self.in_account:
            counters.take_back(store, self.account_key, self.now)
        counters.hold(store, self.known_key, KNOWN_DAYS * 86400, self.now)


def sign_in(store: Store, settings: Settings, email: str, password: str,
            client: str | None, *, replaces: str | None = None,
            now: datetime | None = None, verifier: Verifier | None = None) -> str | None:
    """A new session token for the user of email and password, or None: no such user,
    a wrong password, or the account is locked for the client's network or for networks
    it does not know (the same None for each). client: the client's IP address (None:
    not over the web). replaces: the token the browser held before, whose session ends
    here. SignInBusy, at once, when every slot of verifier (the process's VERIFIER when
    None) is taken."""
    verifier = verifier or VERIFIER
    where = client or "?"
    moment = now or store.clock.now()
    if not password or len(password) > MAX_PASSWORD or len(email.strip()) > _MAX_EMAIL:
        # Not the address: people type their password there now and then.
        log.warning("admin sign-in refused from %s (no user's password is that long)", where)
        return None
    key = _key(email)
    attempt = _Attempt(settings, key, client, moment.timestamp())
    refused = attempt.count(store)
    if refused:
        log.warning("admin sign-in refused from %s (the account is %s)", where, refused)
        return None
    user = stored.find_user(store, key)
    rehashed = None
    try:
        with verifier.slot():
            right = verifier.verify(user.password_hash if user else _nobodys_hash(), password)
            if user is not None and right and verifier.hasher.check_needs_rehash(
                    user.password_hash):
                rehashed = verifier.hasher.hash(password)
    except SignInBusy:
        attempt.take_back(store)
        log.warning("admin sign-in from %s answered busy: every verification slot is taken",
                    where)
        raise
    if user is None or not right:
        attempt.failed(store)
        log.warning("admin sign-in refused from %s", where)
        return None
    attempt.succeeded(store)
    if rehashed is not None:
        stored.set_password_hash(store, user.id, rehashed)
    token = secrets.token_urlsafe(32)
    stored.signed_in(store, user.id, token_hash(token), secrets.token_urlsafe(32), moment,
                     moment + timedelta(hours=settings.admin.session_hours),
                     replaces=token_hash(replaces) if replaces else None)
    log.info("admin %s signed in from %s", user.email, where)
    return token


def session_user(store: Store, token: str | None,
                 now: datetime | None = None) -> AdminIdentity | None:
    """Who token signs in, while its session lasts; None for anything else."""
    if not token:
        return None
    row = stored.session_row(store, token_hash(token), now or store.clock.now())
    return None if row is None else AdminIdentity(row.user_id, row.email, row.csrf,
                                                  row.expires_at)


def sign_out(store: Store, token: str | None) -> None:
    """End the session of token (nothing when there is none)."""
    if token:
        stored.delete_session(store, token_hash(token))


# -- what the admin pages read and do about subscribers --

def find_subscribers(store: Store, text: str, status: SubscriberStatus | None, page: int,
                     per_page: int = 50) -> SubscriberPage:
    """Page `page` (from 1) of the subscribers whose address or name holds text; a page
    past the last (however far: a typed ?page= of 20 digits) is empty."""
    offset = min((max(page, 1) - 1) * per_page, _MAX_OFFSET)
    return stored.search_subscribers(store, text.strip()[:320], status, per_page, offset)


def subscriber_email(store: Store, subscriber_id: int) -> str:
    """The address of a subscriber; InputError when there is none (or they were erased)."""
    found = stored.subscriber_email(store, subscriber_id)
    if found is None:
        raise NotFound(f"no subscriber {subscriber_id} (erased, or never there)")
    return found


def import_upload(book: SubscriberBook, filename: str, data: bytes, *, dry_run: bool,
                  reactivate: bool) -> CsvImportReport:
    """A CSV file sent from a browser, imported as `digest subscribers import` does; its
    lines are named after the file."""
    name = clean_label(filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])[:100] or "upload.csv"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8 text (byte {exc.start}); save it as UTF-8 "
                         f"CSV") from None
    report = book.import_csv(io.StringIO(text), dry_run=dry_run, reactivate=reactivate)
    for lines in (report.rejected, report.notes):
        lines[:] = [name + line.removeprefix(_STREAM) if line.startswith(_STREAM) else line
                    for line in lines]
    return report


def clicks_by_number(store: Store) -> dict[int, int]:
    """Edition number → its counted clicks (editions nobody clicked: absent)."""
    counted = edition_clicks(store)
    if not counted:
        return {}
    numbers = stored.edition_numbers(store)
    return {numbers[i]: n for i, n in counted.items() if i in numbers}
