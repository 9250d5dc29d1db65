"""The bounce desk: what a bounce, a complaint, an auto-reply or a mail to the unsubscribe
address does, wherever it came from (a folder of messages, the bounce mailbox, a
provider's webhook). Reading is `bouncemail`'s; the rules are `store.bounces`'."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..config import Settings
from ..errors import InputError
from ..store import bounces as stored
from ..store import subscribers as people
from ..store.bounces import BouncePolicy, NewEvent
from ..store.db import Session, Store
from ..store.models import Subscriber, SubscriberStatus
from ..tokens import Verp, VerpClaims
from .bouncemail import read_message
from .findings import Finding, Reading
from .subscribers import mark_unsubscribed, normalise_email

__all__ = ["BounceDesk", "DeskReport", "Outcome", "Resolved"]


@dataclass(frozen=True)
class Resolved:
    """One finding and whom it is about."""

    finding: Finding
    recipient: str                 # the subscriber's address (VERP) or the finding's
    subscriber_id: int | None      # None: not a subscriber of this list
    effect: str                    # "bounced", "unsubscribed", "score 2/5", "nothing",
                                   # "recorded before", "not on the list"


@dataclass
class Outcome:
    """What one reading did."""

    reading: Reading
    resolved: list[Resolved] = field(default_factory=list)
    unsubscribed: str | None = None    # the address a mail to the unsubscribe address removed


@dataclass
class DeskReport:
    """Counts over many readings, for a summary."""

    messages: int = 0
    ignored: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    effects: Counter[str] = field(default_factory=Counter)
    requests: int = 0          # mails to the unsubscribe address
    unsubscribed: int = 0      # of those, from subscribers who were still getting mail

    def add(self, outcome: Outcome) -> None:
        self.messages += 1
        self.ignored += outcome.reading.ignored
        self.requests += outcome.reading.unsubscribe is not None
        self.unsubscribed += outcome.unsubscribed is not None
        for r in outcome.resolved:
            self.kinds[r.finding.kind.value] += 1
            self.effects["score raised" if r.effect.startswith("score") else r.effect] += 1


def _by_address(session: Session, address: str) -> Subscriber | None:
    """The subscriber at an address as a report writes it: lower-cased, and as we store
    it (an IDN domain written in Unicode is stored in ASCII, xn--…)."""
    if not address:
        return None
    sub = people.find_subscriber(session, address.lower())
    if sub is None:
        try:
            key = normalise_email(address).lower()
        except InputError:
            return None
        sub = people.find_subscriber(session, key)
    return sub


def _fingerprint(finding: Finding, who: str) -> str:
    report = finding.report_id or f"{finding.source}|{finding.reason}"
    return hashlib.sha256(f"{report}|{who}|{finding.kind.value}".encode()).hexdigest()


class BounceDesk:
    """Reads and applies bounce reports for one store."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        b = settings.bounces
        self.policy = BouncePolicy(b.score_threshold, b.score_reset_days)
        self._verp = Verp(settings.signing_key, b.return_path) if b.return_path else None
        self.unsubscribe_address = settings.digest.unsubscribe_mailto.strip().lower()

    def verp(self, address: str) -> VerpClaims | None:
        return self._verp.read(address) if self._verp else None

    def read(self, raw: bytes, source: str) -> Reading:
        """What one message says (nothing is written)."""
        return read_message(raw, source, verp=self.verp if self._verp else None,
                            unsubscribe_address=self.unsubscribe_address)

    def apply(self, reading: Reading, *, dry_run: bool = False,
              now: datetime | None = None) -> Outcome:
        """Record the reading's findings and do what each does, in one transaction (with
        dry_run: work out the same and write nothing)."""
        now = now or self.store.clock.now()
        outcome = Outcome(reading)
        session = self.store.writes()
        try:
            for finding in reading.findings:
                outcome.resolved.append(self._apply_one(session, finding, now))
            if reading.unsubscribe:
                outcome.unsubscribed = self._unsubscribe(session, reading)
            if dry_run:
                session.rollback()
            else:
                session.commit()
        finally:
            session.close()
        return outcome

    def _apply_one(self, session: Session, finding: Finding, now: datetime) -> Resolved:
        # A token signed for an edition this store does not hold (a store restored from
        # an older backup, a second store with the same secret) is not this store's: the
        # report's own address decides, and the event names no edition.
        if finding.edition_id is not None and not stored.edition_exists(session,
                                                                          finding.edition_id):
            finding = replace(finding, subscriber_id=None, edition_id=None)
        sub = self._subscriber(session, finding)
        recipient = sub.email.lower() if sub else finding.recipient
        if sub is None:
            return Resolved(finding, recipient, None, "not on the list")
        event = NewEvent(subscriber_id=sub.id, recipient=recipient, kind=finding.kind,
                         status=finding.status, reason=finding.reason, source=finding.source,
                         # A report dated in the future (a wrong clock) counts as now.
                         occurred_at=min(finding.occurred_at or now, now),
                         fingerprint=_fingerprint(finding, str(sub.id)),
                         edition_id=finding.edition_id)
        session.flush()
        effect = stored.record_event(session, event, self.policy, now)
        session.expire(sub)
        return Resolved(finding, recipient, sub.id, effect or "recorded before")

    def _subscriber(self, session: Session, finding: Finding) -> Subscriber | None:
        """VERP first (the token names them, whatever the report's text says), then the
        address the report names (as stored: an IDN domain in ASCII)."""
        if finding.subscriber_id is not None:
            sub = people.get_subscriber(session, finding.subscriber_id)
            if sub is not None and sub.status is not SubscriberStatus.REMOVED:
                return sub
        return _by_address(session, finding.recipient)

    def _unsubscribe(self, session: Session, reading: Reading) -> str | None:
        """A mail to the List-Unsubscribe mailto: unsubscribes its sender when that address
        is a subscriber who still gets mail."""
        sub = _by_address(session, reading.unsubscribe or "")
        if sub is None or sub.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING):
            return None
        mark_unsubscribed(session, sub, f"mail to {self.unsubscribe_address} "
                                        f"({reading.source})"[:500], self.store.clock.now())
        return sub.email

    def events(self, *, since: datetime | None = None, limit: int = 100) -> list[Any]:
        """The latest events, newest first (each with its edition's number)."""
        with self.store.sessions() as session:
            return stored.event_rows(session, since=since, limit=limit)


