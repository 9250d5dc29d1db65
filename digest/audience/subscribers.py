"""Subscriber management: add, change, import and export, with every input checked."""

from __future__ import annotations

import contextlib
import csv
import enum
import functools
import hashlib
import hmac
import io
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from ..config import Settings
from ..content.topics import TopicClassifier
from ..errors import ConfigError, InputError
from ..store import subscribers as stored
from ..store.db import Session, Store
from ..store.models import (
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
)
from ..store.outbox import SELF_LIFTABLE, add_mail_if, unsent_mail
from ..store.ratelimits import count_hit_in
from ..store.suppressions import (
    find_suppression,
    list_suppressions,
    suppress,
    suppress_many,
    suppressions_of,
    unsuppress,
)
from ..text import clean_label
from ..tokens import erased_key, erased_keys
from .csvfiles import map_header, read_csv_text
from .outbox import queue_mail

__all__ = [
    "EXPORT_COLUMNS",
    "IMPORT_BATCH",
    "CsvImportReport",
    "LinkState",
    "SignUpMail",
    "SubscriberBook",
    "LIFTABLE",
    "clean_name",
    "mailbox_key",
    "csv_errors",
    "mark_unsubscribed",
    "normalise_email",
    "refusal",
    "spreadsheet_safe",
]

# The one-click log line has always been the web's: kept under its name.
log = logging.getLogger("digest.web")

# What a sign-up queues for a subscriber: (envelope sender, message bytes).
SignUpMail = Callable[[Subscriber], tuple[str, bytes]]


class LinkState(enum.Enum):
    """Where a confirmation link stands."""

    READY = "ready"                  # it confirms a pending subscriber
    ALREADY_ACTIVE = "active"        # the subscriber is active: nothing to confirm
    USED = "used"                    # used already, replaced by a newer one, or no such row


# What validate_email takes as it is before the @-sign (its DOT_ATOM_TEXT), and a domain
# of plain host name characters: for such an address only the domain needs the checks that
# cost (the UTS 46 rules, per character), and a file's 100,000 addresses share a few domains.
_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_PLAIN_LOCAL = re.compile(f"[{_ATEXT}]+(?:\\.[{_ATEXT}]+)*\\Z")
_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9.-]+\Z")
# Local parts validate_email lower-cases (RFC 2142's role mailboxes): left to it.
_ROLE_MAILBOXES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


@functools.lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str | None:
    """domain as validate_email normalises it, or None when it refuses it."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False,
                              allow_smtputf8=False).ascii_domain
    except EmailNotValidError:
        return None


def normalise_email(address: str) -> str:
    """The address as we store it (domain lower-cased, IDN in ASCII); InputError if invalid."""
    local, at, domain = address.strip().partition("@")
    if (at and len(local) <= 64 and _PLAIN_LOCAL.match(local) and _PLAIN_DOMAIN.match(domain)
            and local.lower() not in _ROLE_MAILBOXES):
        checked = _checked_domain(domain)
        if checked is not None and len(local) + 1 + len(checked) <= 254:
            return f"{local}@{checked}"
    try:
        info = validate_email(address.strip(), check_deliverability=False,
                              allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InputError(f"{address.strip()!r} is not a valid email address: {exc}") from None
    return info.ascii_email or info.normalized


# Providers known to deliver n.a.m.e@ to name@ (and googlemail.com is gmail.com): only
# there are dots no part of the mailbox. A +tag is a tag of the mailbox almost everywhere.
_DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def mailbox_key(address: str) -> str:
    """The mailbox an address delivers to, as far as the sign-up caps go: lower case,
    without a +tag, and at gmail.com without dots (name+x@ and n.a.me@gmail.com are
    name@gmail.com's)."""
    local, _, domain = address.strip().lower().rpartition("@")
    local = local.split("+", 1)[0] or local
    domain = _DOTLESS_DOMAINS.get(domain, domain)
    if domain in _DOTLESS_DOMAINS.values():
        local = local.replace(".", "") or local
    return f"{local}@{domain}"


def clean_name(name: str | None) -> str:
    """A display name that can go into a header (the one rule for one-line text), at most
    200 characters."""
    return clean_label(name or "")[:200]


@dataclass
class _Row:
    """One address of a CSV file, its rows merged."""

    email: str
    line: int
    name: str = ""
    topics: list[str] = field(default_factory=list)
    timezone: str | None = None
    status: SubscriberStatus | None = None
    hard_bounces: int | None = None
    created_at: datetime | None = None


@dataclass
class CsvImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    reactivated: int = 0
    rejected: list[str] = field(default_factory=list)   # "file:line: reason"
    notes: list[str] = field(default_factory=list)      # "file:line: what changed"


# Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
EXPORT_COLUMNS = ("email", "name", "topics", "timezone", "status", "hard_bounces",
                  "created_at")
# Statuses an import may give a new subscriber; "removed" is never imported.
_IMPORTABLE = {s.value: s for s in SubscriberStatus if s is not SubscriberStatus.REMOVED}
# Other services' words for a status (listmonk: enabled/blocklisted; Mailchimp: subscribed,
# cleaned), read as ours.
_STATUS_WORDS = {**_IMPORTABLE, "enabled": SubscriberStatus.ACTIVE,
                 "subscribed": SubscriberStatus.ACTIVE,
                 "blocklisted": SubscriberStatus.UNSUBSCRIBED,
                 "cleaned": SubscriberStatus.BOUNCED}
# The import's columns and what other services' exports call them (Mailchimp: "Email
# Address", "First Name", "Last Name", "OPTIN_TIME"; Substack and Buttondown: email,
# created_at / creation_date; listmonk: email, name, status, created_at), most specific
# first: "first name" is tried before "name".
IMPORT_HEADERS: dict[str, tuple[str, ...]] = {
    "email": ("email", "email address", "e-mail", "e-mail address"),
    "first_name": ("first name", "firstname", "given name", "fname"),
    "last_name": ("last name", "lastname", "surname", "family name", "lname"),
    "name": ("name", "full name", "display name"),
    "topics": ("topics",),
    "timezone": ("timezone", "time zone"),
    "status": ("status",),
    "hard_bounces": ("hard_bounces",),
    "created_at": ("created_at", "created", "creation_date", "optin_time", "date added",
                   "subscribed at"),
}


def spreadsheet_safe(value: str) -> str:
    """value, with a leading apostrophe when a spreadsheet would run it as a formula
    (OWASP's advice for CSV files), or when it starts with an apostrophe of its own (so
    that one survives the way back); import_csv takes the added one off again."""
    return "'" + value if value.startswith((*_FORMULA_START, "'")) else value


def _from_spreadsheet(value: str) -> str:
    """value without the apostrophe spreadsheet_safe added."""
    return value[1:] if value.startswith("'") \
        and value[1:].startswith((*_FORMULA_START, "'")) else value


def _address_hash(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()[:40]


def _was_removed(session: Session, address: str) -> bool:
    """Whether the address was removed before erasure kept a keyed hash on the
    suppression list (older stores: an unkeyed hash in the subscriber's row)."""
    return bool(stored.removed_hashes(session, [_address_hash(address)]))


# An import stores its rows in transactions of this many addresses: each holds SQLite's
# one write lock for a fraction of a second, so a one-click unsubscribe (or the sender's
# ledger) waits that long at most, never for the whole file.
IMPORT_BATCH = 500
# A writer waiting for SQLite's lock gets it only when its busy handler, which polls every
# 100 ms once it has waited a third of a second, finds it free; between batches that follow
# each other closely it seldom does (one-click unsubscribes waited up to 3 s on a busy
# machine). So after each half second of holding the lock an import leaves it free for
# longer than one poll: a waiting writer is in within about 0.6 s, for a sixth of the rate.
_HOLD_SECONDS, _LEAVE_SECONDS = 0.5, 0.12


# Suppressions an operator's --force (or --reactivate) may lift, saying they have the
# person's consent again or the address works again; complaints, erasures and manual
# entries need `digest suppressions remove`.
LIFTABLE = (SuppressionReason.UNSUBSCRIBED, SuppressionReason.BOUNCED,
            SuppressionReason.HARD_BOUNCED)
_WHY = {SuppressionReason.UNSUBSCRIBED: "unsubscribed",
        SuppressionReason.COMPLAINED: "reported our mail as spam",
        SuppressionReason.HARD_BOUNCED: "hard-bounced (the address does not exist)",
        SuppressionReason.BOUNCED: "bounced too often",
        SuppressionReason.ERASED: "was erased at their request",
        SuppressionReason.MANUAL: "was suppressed by an operator"}


def refusal(address: str, found: Suppression, force_flag: str) -> str:
    """The one line that says why a suppressed address is not taken, and the way out."""
    reason = SuppressionReason(found.reason)
    if reason is SuppressionReason.UNSUBSCRIBED:
        fix = f"only with their consent: {force_flag}"
    elif reason in LIFTABLE:
        fix = f"only once the address works again: {force_flag}"
    else:
        fix = f"only after an operator lifts it: digest suppressions remove {address}"
    return f"{address} is on the suppression list: it {_WHY[reason]}; add it again {fix}"


def mark_unsubscribed(session: Session, sub: Subscriber, source: str, now: datetime) -> None:
    """Unsubscribe sub (by their own request, whichever way it came) and put the address
    on the suppression list; their old links stop working."""
    sub.status = SubscriberStatus.UNSUBSCRIBED
    suppress(session, sub.email_key, SuppressionReason.UNSUBSCRIBED, source, now)


class SubscriberBook:
    """The subscriber list of one store, checked against the config's topics."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.topics = TopicClassifier.from_settings(settings)

    # -- checks --

    def check_topics(self, session: Session, topics: Iterable[str],
                     present: Sequence[str] | None = None) -> list[str]:
        """The topics chosen, each once, spelled as the topic is (a configured topic, or
        one that stored articles are under: present, when the caller read them already);
        blanks are skipped. UnknownTopic (an InputError) for a name that is no topic."""
        if present is None:
            present = stored.article_topics(session)
        out: list[str] = []
        for topic in topics:
            topic = topic.strip()
            if not topic:
                continue
            known = self.topics.require(topic, present)
            if known not in out:
                out.append(known)
        return out

    @staticmethod
    def check_timezone(timezone: str | None) -> str | None:
        if not timezone or not timezone.strip():
            return None
        try:
            ZoneInfo(timezone.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f"unknown timezone {timezone.strip()!r}; use an IANA name such "
                             f"as Europe/Berlin or America/New_York") from None
        return timezone.strip()

    @staticmethod
    def _find(session: Session, email: str) -> Subscriber | None:
        return stored.find_subscriber(session, email.lower())

    def suppression(self, session: Session, address: str) -> Suppression | None:
        """The suppression of an address: by the address, or by the keyed hash an erased
        one leaves (when there is a key to compute it with)."""
        keys = [address.lower()]
        with contextlib.suppress(ConfigError):
            keys.append(erased_key(self.settings.signing_key, address))
        return find_suppression(session, keys)

    def _already_there(self, session: Session, sub: Subscriber, address: str) -> str:
        """Why `add` does not add an address that has a subscriber row, and what does."""
        if sub.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING):
            return (f"{address} is already subscribed ({sub.status.value}; change their "
                    f"topics with: digest subscribers set-topics {address} TOPIC…)")
        found = self.suppression(session, address)
        fix = f"digest subscribers activate {address} --force"
        if found is not None:
            return refusal(address, found, fix)
        return f"{address} is {sub.status.value}; re-activate them only with their consent: {fix}"

    def _admit(self, session: Session, address: str, force: bool, force_flag: str) -> None:
        """Refuse a suppressed address (InputError naming why and the way out); with force,
        lift a suppression an operator may lift."""
        found = self.suppression(session, address)
        if found is None:
            return
        if not force or SuppressionReason(found.reason) not in LIFTABLE:
            raise InputError(refusal(address, found, force_flag))
        unsuppress(session, [found.email_key], LIFTABLE)

    def _get(self, session: Session, email: str) -> Subscriber:
        sub = self._find(session, normalise_email(email))
        if sub is None:
            raise InputError(f"no subscriber {email.strip()!r} (see: digest subscribers list)")
        return sub

    # -- commands --

    def add(self, email: str, name: str | None = None, topics: Sequence[str] = (),
            timezone: str | None = None,
            status: SubscriberStatus = SubscriberStatus.ACTIVE, *,
            force: bool = False) -> Subscriber:
        """A new subscriber. An address removed earlier (at its owner's request) is
        refused unless force: the operator then says they have consent again."""
        address = normalise_email(email)
        with self.store.writes.begin() as session:
            existing = self._find(session, address)
            if existing is not None:
                raise InputError(self._already_there(session, existing, address))
            if not force and _was_removed(session, address):
                raise InputError(f"{address} was removed from the list earlier; add it again "
                                 f"only with their consent: digest subscribers add "
                                 f"{address} --force")
            self._admit(session, address, force, f"digest subscribers add {address} --force")
            now = self.store.clock.now()
            sub = Subscriber(email=address, email_key=address.lower(), name=clean_name(name),
                             topics=self.check_topics(session, topics),
                             timezone=self.check_timezone(timezone), status=status,
                             consent_source="cli --force" if force else "cli",
                             consent_at=now)
            session.add(sub)
        return sub

    def set_status(self, email: str, status: SubscriberStatus, *,
                   force: bool = False, source: str = "cli") -> Subscriber:
        """Change a subscriber's status. Making someone who unsubscribed active again
        needs force: they said no, and only they (or their new consent) can undo it.
        source: who changed it, kept with a suppression ("cli", "admin EMAIL")."""
        with self.store.writes.begin() as session:
            sub = self._get(session, email)
            if status is SubscriberStatus.ACTIVE:
                # The suppression first: it says why (a complaint is more than "unsubscribed").
                self._admit(session, sub.email, force,
                            f"digest subscribers activate {sub.email} --force")
            if (status is SubscriberStatus.ACTIVE and sub.status is
                    SubscriberStatus.UNSUBSCRIBED and not force):
                raise InputError(f"{sub.email} unsubscribed; re-activate them only with their "
                                 f"consent: digest subscribers activate {sub.email} --force")
            if status is SubscriberStatus.ACTIVE:
                sub.hard_bounces = sub.bounce_score = 0
            elif status is SubscriberStatus.UNSUBSCRIBED:
                mark_unsubscribed(session, sub, source, self.store.clock.now())
            elif status is SubscriberStatus.BOUNCED:
                suppress(session, sub.email_key, SuppressionReason.BOUNCED, source,
                         self.store.clock.now())
            sub.status = status
            return sub

    def set_topics(self, email: str, topics: Sequence[str]) -> Subscriber:
        with self.store.writes.begin() as session:
            sub = self._get(session, email)
            sub.topics = self.check_topics(session, topics)
            return sub

    def suppressed_keys(self) -> set[str]:
        """The email_keys on the suppression list (erased ones are hashes: never a key)."""
        with self.store.sessions() as session:
            return {s.email_key for s in list_suppressions(session)}

    def subscribers(self, status: SubscriberStatus | None = None) -> list[Subscriber]:
        """Subscribers by id, of one status or all (removed ones are never listed)."""
        with self.store.sessions() as session:
            return stored.list_subscribers(session, status)

    # -- the subscriber's own pages (sign-up, links in mail) --

    def by_link(self, subscriber_id: int, version: int) -> Subscriber | None:
        """The subscriber a signed link names while the link is current (it carries their
        token version); None when there is no such subscriber or the link is stale."""
        with self.store.sessions() as session:
            sub = stored.get_subscriber(session, subscriber_id)
        return sub if sub is not None and sub.token_version == version else None

    def sign_up(self, email: str, name: str, topics: Sequence[str],
                mail: SignUpMail, client: str | None = None) -> str:
        """Record a sign-up and queue the mail `mail` composes for it, in one transaction.

        A new address becomes a pending subscriber; anyone else stays as they were, a
        pending one too (a stranger's form changes nothing of theirs: the first sign-up's
        name, topics and consent stand until it is confirmed). The mail goes out within
        the caps of [web] (per mailbox, per hour, the outbox's size), never to an address
        erased or suppressed by an operator (one suppressed by its own unsubscribe, a
        complaint or a bounce gets it: confirming lifts that). Every case issues the same
        statements and composes a mail, so neither the answer nor its time tells what the
        address was. Returns the address as normalised (never as stored: that could
        differ). InputError (nothing stored) for an invalid address or an unknown topic."""
        address = normalise_email(email)
        name = clean_name(name)
        with self.store.sessions() as session:
            chosen = self.check_topics(session, topics)
        self._record_sign_up(address, name, chosen, mail, client)
        return address

    def mailbox_hash(self, address: str) -> str:
        """A keyed hash of the address's mailbox (mailbox_key): what the sign-up caps
        count by and the log names, never the address in clear."""
        return hmac.new(self.settings.signing_key, b"sign-up mailbox:" +
                        mailbox_key(address).encode(), hashlib.sha256).hexdigest()[:32]

    def _record_sign_up(self, address: str, name: str, chosen: list[str], mail: SignUpMail,
                        client: str | None) -> None:
        web = self.settings.web
        now, stamp = self.store.clock.now(), self.store.clock.timestamp()
        mailbox = self.mailbox_hash(address)
        with self.store.writes.begin() as session:
            found = self.suppression(session, address)
            # Erased, or suppressed by an operator: never mailed again, not even a
            # confirmation. Their own unsubscribe, a complaint or a bounce (which a forged
            # report or webhook can cause) they may undo themselves: the confirmation goes
            # to the address, and only its owner can confirm.
            barred = found is not None and found.reason not in SELF_LIFTABLE
            to_mailbox = count_hit_in(session, f"sign-up mailbox:{mailbox}",
                                      web.signup_mailbox_hours * 3600, 1, stamp)
            waiting = unsent_mail(session)
            cap = "per-mailbox" if to_mailbox > web.signup_mails_per_mailbox else \
                "outbox" if waiting >= web.signup_outbox_limit else None
            # The hourly count takes only mails that go out (0 reads it, the same way).
            in_hour = count_hit_in(session, "sign-up mails", 3600,
                                   int(cap is None and not barred), stamp)
            if cap is None and in_hour > web.signup_mails_per_hour:
                cap = "hourly"
            # What they asked for, and from where: the consent on record once confirmed.
            # (Someone who left keeps their record until they confirm: the form may have
            # been a stranger's.)
            stored.add_pending_if(session, not barred, {
                "email": address, "email_key": address.lower(), "name": name,
                "topics": chosen, "consent_source": "sign-up", "consent_at": now,
                "consent_ip": (client or "")[:64] or None, "created_at": now,
                "updated_at": now})
            sub = stored.find_subscriber(session, address.lower())
            if sub is None:
                # Barred and without a row: composed all the same, never queued.
                sub = Subscriber(id=0, email=address, email_key=address.lower(), name=name,
                                 topics=chosen, status=SubscriberStatus.PENDING,
                                 token_version=1)
            envelope_from, message = mail(sub)
            add_mail_if(session, not barred and cap is None, envelope_from, sub.email,
                        message, now, subscriber_id=sub.id or None)
        if barred:
            assert found is not None
            log.info("sign-up of a suppressed address refused (%s)", found.reason.value)
        elif cap is not None:
            log.warning("sign-up mail not queued: the %s cap is reached (mailbox %s)",
                        cap, mailbox[:12])

    def confirmation(self, subscriber_id: int, version: int
                     ) -> tuple[LinkState, Subscriber | None]:
        """Where the confirmation link of (subscriber_id, version) stands; nothing changes.
        The subscriber comes with READY and ALREADY_ACTIVE."""
        with self.store.sessions() as session:
            sub = stored.get_subscriber(session, subscriber_id)
        return _link_state(sub, version)

    def confirm(self, subscriber_id: int, version: int, welcome: SignUpMail | None = None,
                client: str | None = None) -> tuple[LinkState, Subscriber | None]:
        """Confirm a pending subscriber by their link: active, bounces forgotten, a
        suppression they may lift (SELF_LIFTABLE) lifted and logged, and the link used up
        (the token version moves on). Returns the link's state before (see
        `confirmation`); only READY changes anything."""
        with self.store.writes.begin() as session:
            sub = stored.get_subscriber(session, subscriber_id, for_update=True)
            state, sub = _link_state(sub, version)
            if state is LinkState.READY:
                assert sub is not None
                found = self.suppression(session, sub.email)
                if found is not None and found.reason not in SELF_LIFTABLE:
                    return LinkState.USED, None
                # Someone who unsubscribed, was complained about or bounced comes back
                # through double opt-in: their new consent lifts that suppression (and no
                # other: an erasure or an operator's stays).
                lifted = unsuppress(session, [sub.email_key], SELF_LIFTABLE)
                for gone in lifted:
                    log.info("subscriber %s: suppression (%s, since %s, from %s) lifted by "
                             "the subscriber's confirmed sign-up", sub.id, gone.reason.value,
                             gone.created_at.isoformat(), gone.source)
                if sub.status is not SubscriberStatus.PENDING:
                    # Coming back: their new consent is this confirmation.
                    sub.consent_source, sub.consent_at = "sign-up", self.store.clock.now()
                    sub.consent_ip = (client or "")[:64] or None
                sub.status = SubscriberStatus.ACTIVE
                sub.hard_bounces = sub.bounce_score = 0
                sub.confirmed_at = self.store.clock.now()
                sub.token_version += 1
                if welcome is not None:
                    session.flush()
                    envelope_from, message = welcome(sub)
                    queue_mail(session, envelope_from, sub.email, message,
                               self.store.clock.now(), subscriber_id=sub.id)
        return state, sub

    def unsubscribe(self, subscriber_id: int, *, one_click: bool = False) -> Subscriber:
        """Unsubscribe (by their own request): from now on they get nothing. A one-click
        unsubscribe (RFC 8058) is logged."""
        with self.store.writes.begin() as session:
            sub = stored.get_subscriber(session, subscriber_id)
            if sub is None:
                raise InputError(f"no subscriber {subscriber_id}")
            if sub.status is not SubscriberStatus.UNSUBSCRIBED and one_click:
                log.info("subscriber %s unsubscribed (one-click)", sub.id)
            mark_unsubscribed(session, sub, "one-click" if one_click else "web",
                              self.store.clock.now())
        return sub

    def set_preferences(self, subscriber_id: int, topics: Sequence[str],
                        timezone: str | None) -> Subscriber:
        """A subscriber's own choice of topics and timezone; InputError (nothing changes)
        for an unknown topic or timezone."""
        with self.store.writes.begin() as session:
            sub = stored.get_subscriber(session, subscriber_id)
            if sub is None:
                raise InputError(f"no subscriber {subscriber_id}")
            sub.topics = self.check_topics(session, topics)
            sub.timezone = self.check_timezone(timezone)
        return sub

    # -- CSV --

    def _read_row(self, session: Session, row: dict[str, str | None], present: Sequence[str],
                  line: int) -> _Row:
        def cell(name: str) -> str:
            return _from_spreadsheet((row.get(name) or "").strip())

        address = normalise_email(cell("email"))
        name = cell("name") or " ".join(filter(None, (cell("first_name"), cell("last_name"))))
        merged = _Row(address, line, clean_name(name),
                      self.check_topics(session, re.split(r"[;,|]", cell("topics")), present),
                      self.check_timezone(cell("timezone")))
        status = cell("status").lower()
        if status:
            if status not in _STATUS_WORDS:
                raise InputError(f"unknown status {status!r}; use one of "
                                 f"{', '.join(_IMPORTABLE)}")
            merged.status = _STATUS_WORDS[status]
        if cell("hard_bounces"):
            try:
                merged.hard_bounces = max(0, int(cell("hard_bounces")))
            except ValueError:
                raise InputError(f"hard_bounces {cell('hard_bounces')!r} is not a whole "
                                 f"number") from None
        if cell("created_at"):
            try:
                created = datetime.fromisoformat(cell("created_at"))
            except ValueError:
                raise InputError(f"created_at {cell('created_at')!r} is not an ISO date "
                                 f"(2026-11-27T08:00:00+00:00)") from None
            merged.created_at = created if created.tzinfo else created.replace(tzinfo=UTC)
        return merged

    def import_csv(self, source: Path | TextIO, *, dry_run: bool = False,
                   reactivate: bool = False) -> CsvImportReport:
        """Check every row, then store the good ones in transactions of IMPORT_BATCH
        addresses each (none with dry_run).

        Columns: email (required), name, topics, timezone, status, hard_bounces, created_at
        — the export's. A new address takes the row's status (default active). An existing
        subscriber is updated (each change reported with its line) but never made active
        again once unsubscribed or bounced, unless reactivate; an unsubscribed or bounced
        row does unsubscribe an active one. Addresses removed earlier are refused. Rows for
        an address seen earlier in the file are merged into it (and reported).

        An import cut short keeps the batches it committed; running it again is safe: the
        rows stored already are found unchanged, the others are added."""
        read = read_csv_text(source)
        path, text = read.name, read.text
        reader = csv.DictReader(io.StringIO(text, newline=""), dialect=_dialect(text))
        header = list(reader.fieldnames or [])
        # Columns by the names other services give them too (the same mapping as the
        # suppression import's); the others are passed over.
        try:
            columns = map_header(header, IMPORT_HEADERS, unique=("email",))
        except InputError as exc:
            raise InputError(f"{path}:1: {exc}") from None
        if "email" not in columns:
            raise InputError(f"{path}:1: the header row ({', '.join(header)}) names no "
                             f"e-mail column; name it email (columns: "
                             f"{', '.join(EXPORT_COLUMNS)}; other services' names such as "
                             f"\"Email Address\", \"First Name\", \"Last Name\" work too)")
        by_index = {i: field_name for field_name, i in columns.items()}
        reader.fieldnames = [by_index.get(i, f"\0{i}") for i in range(len(header))]
        report = CsvImportReport()
        if read.note:
            report.notes.append(read.note)
        with self.store.sessions() as session:
            rows = list(self._read_rows(session, reader, path, report).values())
        held = 0.0
        for start in range(0, len(rows), IMPORT_BATCH):
            began = time.monotonic()
            self._store_batch(rows[start:start + IMPORT_BATCH], path, report, reactivate,
                              dry_run)
            held += time.monotonic() - began
            if held >= _HOLD_SECONDS and self.store.single_writer and not dry_run:
                time.sleep(_LEAVE_SECONDS)
                held = 0.0
        return report

    def _read_rows(self, session: Session, reader: csv.DictReader[str], path: str,
                   report: CsvImportReport) -> dict[str, _Row]:
        """Every row checked (a bad one reported with its line), by lower-cased address,
        rows of one address merged into its first."""
        present = stored.article_topics(session)
        rows: dict[str, _Row] = {}
        with csv_errors(path, reader):
            end = reader.line_num
            for row in reader:
                line, end = end + 1, reader.line_num
                try:
                    _one_line(line, end)
                    read = self._read_row(session, row, present, line)
                except InputError as exc:
                    report.rejected.append(f"{path}:{line}: {exc}")
                    continue
                key = read.email.lower()
                first = rows.get(key)
                if first is None:
                    rows[key] = read
                    continue
                report.notes.append(f"{path}:{line}: {read.email} appears again (first "
                                    f"on line {first.line}); the rows are merged")
                first.name = read.name or first.name
                first.topics = list(dict.fromkeys([*first.topics, *read.topics]))
                first.timezone = read.timezone or first.timezone
                first.status = read.status or first.status
        return rows

    def _store_batch(self, batch: list[_Row], path: str, report: CsvImportReport,
                     reactivate: bool, dry_run: bool) -> None:
        """Store a batch of rows (distinct addresses) in one transaction, in a number of
        statements that does not grow with the batch: its subscribers, removed addresses
        and suppressions are read in one query each, and written in bulk."""
        keys = [values.email.lower() for values in batch]
        writes = _ImportWrites(f"import {Path(path).name}", self.store.clock.now())
        # The hashing before the write lock is taken: others wait only for the SQL.
        hashes = {key: _address_hash(key) for key in keys}
        erased = self._erased_keys(keys)
        session = (self.store.sessions if dry_run else self.store.writes)()
        try:
            with session.begin():
                found = stored.subscribers_by_key(session, keys)
                removed = stored.removed_hashes(
                    session, {hashes[key] for key in keys if key not in found})
                suppressed = _suppressions(session, keys, erased)
                for key, values in zip(keys, batch, strict=True):
                    where = f"{path}:{values.line}"
                    sub = found.get(key)
                    if sub is None:
                        _new_row(key, values, where, hashes[key] in removed,
                                 suppressed.get(key), writes, report)
                    else:
                        _update_row(sub, values, where, suppressed.get(key), writes, report,
                                    reactivate)
                if dry_run:
                    session.rollback()
                    return
                stored.insert_subscribers(session, writes.new)
                stored.update_subscribers(session, writes.changed)
                if writes.lifted:
                    unsuppress(session, writes.lifted, LIFTABLE)
                suppress_many(session, writes.suppressed, writes.source, writes.now)
        finally:
            session.close()

    def _erased_keys(self, keys: Sequence[str]) -> dict[str, str]:
        """The keyed hash an erasure leaves of each address (none without a secret)."""
        with contextlib.suppress(ConfigError):
            return dict(zip(keys, erased_keys(self.settings.signing_key, keys), strict=True))
        return {}

    def export_csv(self, target: Path | TextIO) -> int:
        """Write every subscriber (removed ones excepted) with every column import_csv
        reads; cells a spreadsheet would run as formulas get a leading apostrophe.
        A file is written whole or not at all."""
        subs = self.subscribers()

        def write(fh: TextIO) -> None:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(EXPORT_COLUMNS)
            for s in subs:
                writer.writerow([spreadsheet_safe(v) for v in (
                    s.email, s.name, ";".join(s.topics), s.timezone or "", s.status.value,
                    str(s.hard_bounces), s.created_at.isoformat() if s.created_at else "")])

        if not isinstance(target, Path):
            write(target)
            return len(subs)
        tmp = target.with_name(target.name + ".tmp")
        try:
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                write(fh)
            tmp.replace(target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write {target}: {exc.strerror or exc}; check that the "
                             f"folder exists and is writable") from None
        return len(subs)


@contextlib.contextmanager
def csv_errors(path: str | Path, reader: Any) -> Iterator[None]:
    """csv.Error (a cell past the csv module's size limit: a quote left open swallowed
    the rest of the file) as one line naming where."""
    try:
        yield
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: {exc}; a quote left open earlier makes "
                         f"one cell of the lines after it") from None


# A status read from a file that puts the address on the suppression list.
_SUPPRESSED_STATUS = {SubscriberStatus.UNSUBSCRIBED: SuppressionReason.UNSUBSCRIBED,
                      SubscriberStatus.BOUNCED: SuppressionReason.BOUNCED}


@dataclass
class _ImportWrites:
    """What one batch of an import writes, in bulk once its rows are decided."""

    source: str                     # "import FILE", kept with consent and suppressions
    now: datetime
    new: list[dict[str, Any]] = field(default_factory=list)
    changed: list[Subscriber] = field(default_factory=list)
    lifted: list[str] = field(default_factory=list)      # keys whose LIFTABLE entries go
    suppressed: dict[str, SuppressionReason] = field(default_factory=dict)


def _suppressions(session: Session, keys: Sequence[str],
                  erased: dict[str, str]) -> dict[str, Suppression]:
    """The suppression of each address of keys that has one (as `suppression` finds it: by
    the address or by its erased hash), in one query."""
    found = suppressions_of(session, [*keys, *erased.values()])
    out: dict[str, Suppression] = {}
    for key in keys:
        hits = [found[k] for k in (key, erased.get(key, key)) if k in found]
        if hits:
            out[key] = min(hits, key=lambda hit: hit.id)
    return out


def _new_row(key: str, values: _Row, where: str, removed: bool, found: Suppression | None,
             writes: _ImportWrites, report: CsvImportReport) -> None:
    """A row for an address with no subscriber: added, unless it was removed or is
    suppressed."""
    if removed:
        report.rejected.append(f"{where}: {values.email} was removed from the list "
                               f"earlier; not added again (with their consent: "
                               f"digest subscribers add {values.email} --force)")
        return
    if found is not None:
        report.rejected.append(f"{where}: " + refusal(
            values.email, found, f"digest subscribers add {values.email} --force"))
        return
    status = values.status or SubscriberStatus.ACTIVE
    writes.new.append({
        "email": values.email, "email_key": key, "name": values.name,
        "topics": values.topics, "timezone": values.timezone, "status": status,
        "hard_bounces": values.hard_bounces or 0, "consent_source": writes.source[:300],
        "consent_at": values.created_at or writes.now,
        **({"created_at": values.created_at} if values.created_at else {})})
    if status in _SUPPRESSED_STATUS:
        writes.suppressed[key] = _SUPPRESSED_STATUS[status]
    report.added += 1


def _update_row(sub: Subscriber, values: _Row, where: str, found: Suppression | None,
                writes: _ImportWrites, report: CsvImportReport, reactivate: bool) -> None:
    """A row for an existing subscriber: each change made and reported."""
    changes: list[str] = []
    if values.name and values.name != sub.name:
        changes.append(f"name {sub.name!r} → {values.name!r}")
        sub.name = values.name
    if values.topics and values.topics != sub.topics:
        changes.append(f"topics {', '.join(sub.topics) or 'all'} → "
                       f"{', '.join(values.topics)}")
        sub.topics = values.topics
    if values.timezone and values.timezone != sub.timezone:
        changes.append(f"timezone {sub.timezone or 'default'} → {values.timezone}")
        sub.timezone = values.timezone
    _change_status(sub, values, where, found, writes, report, reactivate, changes)
    if changes:
        writes.changed.append(sub)
        report.updated += 1
        report.notes.append(f"{where}: updated {values.email}: {'; '.join(changes)}")
    else:
        report.unchanged += 1


def _change_status(sub: Subscriber, values: _Row, where: str, found: Suppression | None,
                   writes: _ImportWrites, report: CsvImportReport, reactivate: bool,
                   changes: list[str]) -> None:
    """The status a row asks for, unless consent or the suppression list says no."""
    wanted = values.status
    if wanted is None or wanted is sub.status:
        return
    opted_out = sub.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED)
    returning = wanted in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING)
    if returning and found is not None and SuppressionReason(found.reason) not in LIFTABLE:
        report.notes.append(f"{where}: {sub.status.value} here and stays so: "
                            + refusal(values.email, found, "--reactivate"))
    elif returning and opted_out and not reactivate:
        report.notes.append(f"{where}: {values.email} is {sub.status.value} here and "
                            f"stays so (re-activate with their consent: --reactivate)")
    else:
        if opted_out and wanted is SubscriberStatus.ACTIVE:
            report.reactivated += 1
            sub.hard_bounces = sub.bounce_score = 0
            writes.lifted.append(sub.email_key)
        changes.append(f"status {sub.status.value} → {wanted.value}")
        sub.status = wanted
        if wanted in _SUPPRESSED_STATUS:
            writes.suppressed[sub.email_key] = _SUPPRESSED_STATUS[wanted]


def _link_state(sub: Subscriber | None, version: int) -> tuple[LinkState, Subscriber | None]:
    if sub is not None and sub.status is SubscriberStatus.ACTIVE:
        return LinkState.ALREADY_ACTIVE, sub
    if sub is None or sub.token_version != version:
        return LinkState.USED, None
    return LinkState.READY, sub


def _dialect(text: str) -> type[csv.Dialect]:
    """Excel's CSV with commas, or with the semicolons or tabs a spreadsheet may have
    saved instead, as the header row shows."""
    header = text.split("\n", 1)[0]
    counts = {sep: header.count(sep) for sep in ",;\t"}
    separator = max(counts, key=lambda sep: counts[sep]) if any(counts.values()) else ","
    return type("_Separated", (csv.excel,), {"delimiter": separator})


def _one_line(start: int, end: int) -> None:
    """A row is one line: no cell of ours holds a line break, so a row that runs over
    several lines has a quote that is never closed, and it swallowed the rows after it."""
    if end > start:
        raise InputError(f"a quote opened on this line is not closed, so the row runs to line "
                         f"{end} and swallows the rows in between; close the quote (a quote "
                         f"inside a cell is written \"\")")
