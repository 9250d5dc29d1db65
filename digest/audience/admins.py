"""The people who may sign in to the admin pages, and their sessions.

Passwords are kept as argon2id hashes (argon2-cffi's PasswordHasher, its RFC 9106
parameters); a hash made with older parameters is replaced at the next sign-in.
A sign-in makes a new random token (the cookie's value) and a CSRF token for the
session's forms; the store keeps only the token's SHA-256, so a copy of the database
signs nobody in.

Failed sign-ins are counted per address in the store's rate-limit counters, for an
address with a user and one without alike: after [admin] lockout_failures of them within
lockout_minutes the address is locked for lockout_minutes, and while it is, even the right
password fails. An address without a user still costs one argon2 verification (against a
hash of nothing anybody knows), so neither the answer nor its time tells whether a user
exists.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import secrets
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
from .subscribers import CsvImportReport, SubscriberBook, normalise_email

__all__ = ["MIN_PASSWORD", "AdminIdentity", "SubscriberPage", "add_user", "clicks_by_number",
           "find_subscribers",
           "import_upload", "list_users", "remove_user", "same_token", "session_user",
           "sign_in", "sign_out", "subscriber_email", "token_hash"]

log = logging.getLogger("digest.admin")

MIN_PASSWORD = 12
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


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _count_failure(store: Store, settings: Settings, key: str, now: float) -> None:
    """One failed sign-in for key; the one that reaches lockout_failures locks it."""
    window = settings.admin.lockout_minutes * 60
    failures = counters.count_hit(store, f"admin-login:{key}", window, 1, now)
    if failures >= settings.admin.lockout_failures:
        counters.count_hit(store, f"admin-lock:{key}", window, 1, now)
        counters.clear_hits(store, f"admin-login:{key}")


def sign_in(store: Store, settings: Settings, email: str, password: str,
            client: str | None, *, replaces: str | None = None,
            now: datetime | None = None) -> str | None:
    """A new session token for the user of email and password, or None: no such user,
    a wrong password, or the address is locked after too many failures (the same None
    for each). replaces: the token the browser held before, whose session ends here."""
    key = _key(email)
    moment = now or store.clock.now()
    seconds = moment.timestamp()
    locked = counters.current_hits(store, f"admin-lock:{key}", seconds) > 0
    user = stored.find_user(store, key)
    right = _verify(user.password_hash if user else _nobodys_hash(), password)
    if user is None or not right or locked:
        if not locked:
            _count_failure(store, settings, key, seconds)
        # Not the address: people type their password there now and then.
        log.warning("admin sign-in refused from %s%s", client or "?",
                    " (address locked)" if locked else "")
        return None
    counters.clear_hits(store, f"admin-login:{key}")
    if _HASHER.check_needs_rehash(user.password_hash):
        stored.set_password_hash(store, user.id, _HASHER.hash(password))
    token = secrets.token_urlsafe(32)
    stored.signed_in(store, user.id, token_hash(token), secrets.token_urlsafe(32), moment,
                     moment + timedelta(hours=settings.admin.session_hours),
                     replaces=token_hash(replaces) if replaces else None)
    log.info("admin %s signed in from %s", user.email, client or "?")
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
