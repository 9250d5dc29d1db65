"""The bounce desk: what a bounce, a complaint, an auto-reply or a mail to the unsubscribe
address does, wherever it came from (a folder of messages, the bounce mailbox, a
provider's webhook). Reading is `bouncemail`'s; the rules are `store.bounces`'.

Anyone can write to the bounce address (it is in every message's Return-Path), so a
message read from mail acts only when it is tied to mail this store sent:

- with VERP ([bounces] return_path), a valid token naming a delivery this store made,
  and every recipient the report names being that delivery's subscriber;
- without VERP, a quoted Message-ID (of the returned message, its headers, or the
  message a reply answers) that this store gave a delivery to each recipient it names;
- a mail to the unsubscribe address, a From address the receiving server authenticated
  (DKIM aligned or DMARC, [bounces] authserv_id) or a reply to mail we sent that address;
- and at most MAX_RECIPIENTS recipients in one message.

Anything else is held for review (`store.held`): stored with what it claims and why it
was held, changing nobody until an editor applies it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..config import Settings
from ..errors import InputError
from ..store import bounces as stored
from ..store import held as holding
from ..store import subscribers as people
from ..store.bounces import BouncePolicy, NewEvent
from ..store.db import Session, Store
from ..store.models import BounceKind, HeldReport, HeldStatus, Subscriber, SubscriberStatus
from ..tokens import Verp, VerpClaims
from .bouncemail import read_message
from .findings import Finding, Proof, Reading
from .subscribers import mark_unsubscribed, normalise_email

__all__ = ["MAX_RECIPIENTS", "BounceDesk", "DeskReport", "Outcome", "Resolved"]

# A real delivery report names a handful of recipients; a message naming more is held
# for review as a whole.
MAX_RECIPIENTS = 10


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
    held: str | None = None            # why it was held for review instead (nobody changed)


@dataclass
class DeskReport:
    """Counts over many readings, for a summary."""

    messages: int = 0
    ignored: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    effects: Counter[str] = field(default_factory=Counter)
    requests: int = 0          # mails to the unsubscribe address
    unsubscribed: int = 0      # of those, from subscribers who were still getting mail
    held: int = 0              # messages held for review

    def add(self, outcome: Outcome) -> None:
        self.messages += 1
        self.held += outcome.held is not None
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
                            unsubscribe_address=self.unsubscribe_address,
                            authserv_id=self.settings.bounces.authserv_id)

    def apply(self, reading: Reading, *, dry_run: bool = False,
              now: datetime | None = None) -> Outcome:
        """Record the reading's findings and do what each does, in one transaction (with
        dry_run: work out the same and write nothing). A reading from mail whose proof
        does not tie it to mail this store sent is held for review instead."""
        now = now or self.store.clock.now()
        session = self.store.writes()
        try:
            outcome = self._apply_in(session, reading, now)
            if dry_run:
                session.rollback()
            else:
                session.commit()
        finally:
            session.close()
        return outcome

    def _apply_in(self, session: Session, reading: Reading, now: datetime) -> Outcome:
        outcome = Outcome(reading)
        held = self._held_because(session, reading)
        if held is not None:
            outcome.held = held
            self._hold(session, reading, held, now)
            return outcome
        for finding in reading.findings:
            outcome.resolved.append(self._apply_one(session, finding, now))
        if reading.unsubscribe:
            outcome.unsubscribed = self._unsubscribe(session, reading, now)
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

    def _unsubscribe(self, session: Session, reading: Reading, now: datetime) -> str | None:
        """A mail to the List-Unsubscribe mailto: unsubscribes its sender when that address
        is a subscriber who still gets mail."""
        sub = _mailable(session, reading.unsubscribe or "")
        if sub is None:
            return None
        mark_unsubscribed(session, sub, f"mail to {self.unsubscribe_address} "
                                        f"({reading.source})"[:500], now)
        return sub.email

    # -- what ties a message read from mail to mail this store sent --

    def _held_because(self, session: Session, reading: Reading) -> str | None:
        """None when the reading may act; else why it is held for review."""
        proof = reading.proof
        if proof is None or reading.ignored:
            return None            # a source that authenticated itself, or nothing to do
        if reading.unsubscribe is not None:
            return self._unsubscribe_unproven(session, reading.unsubscribe, proof)
        named = {f.recipient for f in reading.findings if f.recipient}
        if len(named) > MAX_RECIPIENTS:
            return (f"names {len(named)} recipients; at most {MAX_RECIPIENTS} are acted on "
                    f"in one message")
        if self._verp is not None:
            if proof.verp is None:
                return "carries no valid VERP token of ours"
            if not stored.delivery_sent(session, proof.verp.edition_id,
                                        proof.verp.subscriber_id):
                return "its VERP token names a delivery this store did not send"
            allowed = {proof.verp.subscriber_id}
        else:
            allowed = stored.sent_with_ids(session, proof.quoted_ids + proof.reply_ids)
            if not allowed:
                return "quotes no Message-ID of mail this store sent"
        for finding in reading.findings:
            if finding.recipient:
                sub = _by_address(session, finding.recipient)
                if sub is None or sub.id not in allowed:
                    return f"names {finding.recipient}, to whom the mail it is about was not sent"
        return None

    def _unsubscribe_unproven(self, session: Session, address: str,
                              proof: Proof) -> str | None:
        sub = _mailable(session, address)
        if sub is None or proof.sender_authenticated:
            return None            # nobody to unsubscribe, or the server vouches for From
        if sub.id in stored.sent_with_ids(session, proof.reply_ids):
            return None            # a reply to mail we sent that address
        return ("its sender is neither authenticated by the receiving server ([bounces] "
                "authserv_id) nor replying to mail we sent that address")

    def _hold(self, session: Session, reading: Reading, why: str, now: datetime) -> None:
        report = reading.report_id or reading.source
        holding.hold(session, fingerprint=hashlib.sha256(f"held|{report}".encode()).hexdigest(),
                     source=reading.source, summary=_summary(reading), held_because=why,
                     claims=json.dumps([_finding_json(f) for f in reading.findings],
                                         ensure_ascii=False),
                     unsubscribe=reading.unsubscribe, now=now)

    # -- review --

    def held(self, *, every: bool = False, limit: int = 200) -> list[HeldReport]:
        """Reports held for review, newest first (with every: decided ones too)."""
        with self.store.sessions() as session:
            rows = holding.held_rows(session, status=None if every else HeldStatus.HELD,
                                     limit=limit)
            session.expunge_all()
            return rows

    def apply_held(self, report_id: int, *, now: datetime | None = None) -> Outcome:
        """Do what a held report claims, on an editor's word, and mark it applied: one
        transaction, so two editors cannot both apply it."""
        now = now or self.store.clock.now()
        with self.store.writes() as session:
            report = self._undecided(session, report_id)
            reading = Reading(report.source, [_finding_from(item) for item in
                                              json.loads(report.claims)],
                              unsubscribe=report.unsubscribe, report_id=f"held:{report.id}")
            outcome = self._apply_in(session, reading, now)
            effects = [f"{r.recipient} {r.effect}" for r in outcome.resolved]
            if outcome.unsubscribed:
                effects.append(f"{outcome.unsubscribed} unsubscribed")
            holding.decide(report, HeldStatus.APPLIED, "; ".join(effects) or "nobody changed",
                           now)
            session.commit()
        return outcome

    def dismiss_held(self, report_id: int, *, now: datetime | None = None) -> None:
        """Throw a held report away: it changes nobody."""
        with self.store.writes() as session:
            report = self._undecided(session, report_id)
            holding.decide(report, HeldStatus.DISMISSED, "dismissed",
                           now or self.store.clock.now())
            session.commit()

    @staticmethod
    def _undecided(session: Session, report_id: int) -> HeldReport:
        report = holding.held_report(session, report_id)
        if report is None:
            raise InputError(f"no held report {report_id}; see digest bounces review")
        if report.status is not HeldStatus.HELD:
            raise InputError(f"held report {report_id} was {report.status.value} "
                             f"already ({report.outcome})")
        return report

    def events(self, *, since: datetime | None = None, limit: int = 100) -> list[Any]:
        """The latest events, newest first (each with its edition's number)."""
        with self.store.sessions() as session:
            return stored.event_rows(session, since=since, limit=limit)

def _mailable(session: Session, address: str) -> Subscriber | None:
    sub = _by_address(session, address)
    if sub is None or sub.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING):
        return None
    return sub


def _summary(reading: Reading) -> str:
    """What a held reading claims, in a line."""
    if reading.unsubscribe:
        return f"unsubscribe {reading.unsubscribe}"
    kinds = ", ".join(dict.fromkeys(f.kind.value for f in reading.findings))
    named = list(dict.fromkeys(f.recipient or "(by VERP)" for f in reading.findings))
    shown = ", ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
    return f"{kinds}: {shown}"


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"source": f.source, "recipient": f.recipient, "kind": f.kind.value,
            "status": f.status, "reason": f.reason, "subscriber_id": f.subscriber_id,
            "edition_id": f.edition_id, "report_id": f.report_id,
            "occurred_at": f.occurred_at.isoformat() if f.occurred_at else None}


def _finding_from(item: dict[str, Any]) -> Finding:
    when = item.get("occurred_at")
    return Finding(source=item["source"], recipient=item["recipient"],
                   kind=BounceKind(item["kind"]), status=item["status"],
                   reason=item["reason"], subscriber_id=item["subscriber_id"],
                   edition_id=item["edition_id"], report_id=item["report_id"],
                   occurred_at=datetime.fromisoformat(when) if when else None)
