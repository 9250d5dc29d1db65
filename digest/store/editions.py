"""Editions in the store: the transaction an edition is made in, its state changes
(finish, pause, reopen failed deliveries, discard), and what reports and schedules read.

The edition lifecycle's rules live in digest.delivery.editions; this module only reads
and writes rows for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from ..errors import InputError
from .articles import edition_articles, new_articles, next_edition_number
from .db import Store, rowcount
from .drafts import coming_edition, edition_by_number
from .ledger import delivery_counts, due_conditions
from .locks import locked_session
from .models import (
    Article,
    BounceEvent,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
)
from .subscribers import mailable

__all__ = [
    "EditionDetail",
    "EditionSummary",
    "EditionWork",
    "Recipient",
    "active_recipients",
    "active_zones",
    "discard",
    "edition_at_slot",
    "edition_content",
    "edition_detail",
    "edition_summaries",
    "finish",
    "give_up",
    "locked_work",
    "next_retry",
    "pending_deliveries",
    "previous_edition",
    "read_work",
    "recent_editions",
    "reopen_failed",
    "test_copy_source",
    "unfinished_numbers",
    "wave_times",
]

_UNFINISHED = (EditionStatus.SENDING, EditionStatus.PAUSED)
_WENT_OUT = (*_UNFINISHED, EditionStatus.SENT)
_CHUNK = 2000


def _unfinished(session: Session) -> Edition | None:
    return session.scalar(select(Edition).where(Edition.status.in_(_UNFINISHED))
                          .order_by(Edition.number).limit(1))


class EditionWork:
    """The reads and writes an edition is planned and made with, all in one transaction
    (from locked_work: holding the store's edition lock)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def numbered(self, number: int) -> Edition:
        """Edition number; InputError when there is none."""
        return edition_by_number(self._session, number)

    def unfinished(self) -> Edition | None:
        """The oldest edition still sending or paused."""
        return _unfinished(self._session)

    def at_slot(self, slot: datetime) -> Edition | None:
        return self._session.scalar(select(Edition).where(Edition.slot == slot))

    def new_articles(self, cutoff: datetime) -> list[Article]:
        return new_articles(self._session, cutoff)

    def articles_of(self, edition: Edition) -> list[Article]:
        return edition_articles(self._session, edition.id)

    def coming(self) -> Edition | None:
        """The oldest draft or approved edition (what `digest send` sends next)."""
        return coming_edition(self._session)

    def next_number(self) -> int:
        return next_edition_number(self._session)

    def last_number(self) -> int | None:
        return self._session.scalar(select(func.max(Edition.number)))

    def active_subscribers(self) -> Iterator[tuple[int, list[str], str | None]]:
        """(id, chosen topics, time zone) of every active subscriber, in id order."""
        query = (select(Subscriber.id, Subscriber.topics, Subscriber.timezone)
                 .where(mailable()).order_by(Subscriber.id))
        for sid, topics, zone in self._session.execute(
                query.execution_options(yield_per=_CHUNK)):
            yield sid, topics or [], zone

    def create(self, number: int, now: datetime, slot: datetime | None, subject: str,
               articles: Sequence[Article]) -> Edition:
        """A new sending edition with cut-off now that takes these articles."""
        edition = Edition(number=number, cutoff=now, created_at=now, slot=slot,
                          subject=subject, status=EditionStatus.SENDING)
        self._session.add(edition)
        self._session.flush()
        self._session.execute(update(Article).where(Article.id.in_([a.id for a in articles]))
                              .values(edition_id=edition.id))
        return edition

    def add_deliveries(self, rows: list[dict[str, Any]]) -> None:
        """Insert ledger rows (column name → value) in one statement."""
        self._session.execute(insert(Delivery), rows)


@contextmanager
def read_work(store: Store) -> Iterator[EditionWork]:
    """EditionWork over a read-only session."""
    with store.sessions() as session:
        yield EditionWork(session)


@contextmanager
def locked_work(store: Store) -> Iterator[EditionWork]:
    """EditionWork in a transaction holding the edition lock; committed when the block
    ends, rolled back when it raises."""
    with locked_session(store) as session:
        yield EditionWork(session)


def finish(store: Store, paused: bool, edition_id: int | None = None) -> None:
    """Mark editions with nothing pending as sent (or the edition as paused)."""
    with store.writes.begin() as session:
        query = select(Edition).where(Edition.status.in_(_UNFINISHED))
        if edition_id is not None:
            query = query.where(Edition.id == edition_id)
        for edition in session.scalars(query):
            counts = delivery_counts(session, edition.id)
            if paused:
                edition.status = EditionStatus.PAUSED
            elif counts["pending"] == 0 and counts["sending"] == 0:
                edition.status = EditionStatus.SENT
                edition.finished_at = store.clock.now()


def reopen_failed(store: Store, number: int) -> tuple[int, int]:
    """Make edition N's failed deliveries pending again, for subscribers still active.
    Returns (reopened, left: failed deliveries of subscribers no longer active)."""
    with locked_session(store) as session:
        edition = edition_by_number(session, number)
        active = select(Subscriber.id).where(mailable())
        failed = (Delivery.edition_id == edition.id) & (Delivery.status == DeliveryStatus.FAILED)
        reopened = rowcount(session.execute(
            update(Delivery).where(failed, Delivery.subscriber_id.in_(active))
            .values(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=None,
                    not_before=None, claimed_by=None, lease_until=None)
            .execution_options(synchronize_session=False)))
        left = session.scalar(select(func.count()).select_from(Delivery).where(failed)) or 0
        if reopened and edition.status is EditionStatus.SENT:
            edition.status = EditionStatus.SENDING
            edition.finished_at = None
        return int(reopened), int(left)


def give_up(store: Store, number: int) -> int:
    """Finish paused edition N as it stands: its pending and deferred deliveries fail
    (the reason they waited kept after "given up"), and it counts as sent, so the next
    edition can be made. Returns how many deliveries failed."""
    with locked_session(store) as session:
        edition = edition_by_number(session, number)
        if edition.status is not EditionStatus.PAUSED:
            raise InputError(f"edition {number} is {edition.status.value}: only a paused "
                             f"edition can be given up on (see: digest editions show "
                             f"{number})")
        waiting = (Delivery.edition_id == edition.id) & Delivery.status.in_(
            [DeliveryStatus.PENDING, DeliveryStatus.DEFERRED])
        given_up = rowcount(session.execute(
            update(Delivery).where(waiting)
            .values(status=DeliveryStatus.FAILED, next_attempt_at=None,
                    last_error=func.coalesce("given up: " + Delivery.last_error, "given up"))
            .execution_options(synchronize_session=False)))
        edition.status, edition.finished_at = EditionStatus.SENT, store.clock.now()
        return int(given_up)


def discard(store: Store, number: int) -> int:
    """Delete edition N, which nobody received (no delivery sent or in flight), with its
    ledger; its articles return to the pool. Returns how many articles."""
    with locked_session(store) as session:
        edition = edition_by_number(session, number)
        counts = delivery_counts(session, edition.id)
        reached = counts["sent"] + counts["sending"]
        if reached:
            raise InputError(f"edition {number} was sent to {reached} subscriber"
                             f"{'s' * (reached != 1)}: it cannot be discarded (an edition "
                             f"someone received stays in the record)")
        # Back to the pool as they came: an editor's marks in this edition go with it.
        articles = rowcount(session.execute(
            update(Article).where(Article.edition_id == edition.id)
            .values(edition_id=None, position=None, pin_top=False, edited_title=None,
                    edited_teaser=None)
            .execution_options(synchronize_session=False)))
        session.execute(delete(Delivery).where(Delivery.edition_id == edition.id))
        # The bounces it met stay (they are about the subscribers), naming no edition.
        session.execute(update(BounceEvent).where(BounceEvent.edition_id == edition.id)
                        .values(edition_id=None).execution_options(synchronize_session=False))
        session.delete(edition)
        return int(articles)


# --- reads for the sender, the runner and the scheduler ---------------------------------

def edition_content(store: Store, edition_id: int) -> tuple[Edition, list[Article]]:
    """An edition and its articles (what its variants are rendered from)."""
    with store.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        return edition, edition_articles(session, edition_id)


def previous_edition(store: Store, number: int) -> tuple[Edition, list[Article]] | None:
    """The newest edition before `number` that went out (sending, paused or sent), with
    its articles; None when there is none."""
    with store.sessions() as session:
        edition = session.scalar(
            select(Edition).where(Edition.number < number, Edition.status.in_(_WENT_OUT))
            .order_by(Edition.number.desc()).limit(1))
        if edition is None:
            return None
        return edition, edition_articles(session, edition.id)


@dataclass(frozen=True)
class Recipient:
    """An active subscriber as a message needs them."""

    id: int
    email: str
    name: str
    token_version: int
    topics: list[str]


def active_recipients(store: Store) -> list[Recipient]:
    """Every active subscriber, with what a message to them needs."""
    with store.sessions() as session:
        rows = session.execute(select(Subscriber.id, Subscriber.email, Subscriber.name,
                                      Subscriber.token_version, Subscriber.topics)
                               .where(mailable()))
        return [Recipient(sid, email, name, version, chosen or [])
                for sid, email, name, version, chosen in rows]


def test_copy_source(store: Store, now: datetime, address: str
                     ) -> tuple[int, datetime, list[Article], Subscriber | None,
                                Edition | None]:
    """What a test copy shows: the unfinished edition (number, cut-off, articles), else
    the draft or approved one, else the coming one made of the new articles up to now;
    the subscriber at address; and the edition, when there is one."""
    with store.sessions() as session:
        edition = _unfinished(session) or coming_edition(session)
        if edition is not None:
            articles = edition_articles(session, edition.id)
            number, date = edition.number, edition.date
        else:
            articles = new_articles(session, now)
            number, date = next_edition_number(session), now
        sub = session.scalar(select(Subscriber).where(Subscriber.email_key == address.lower()))
        return number, date, articles, sub, edition


def active_zones(store: Store) -> set[str]:
    """The time zones active subscribers set (for local-time waves)."""
    with store.sessions() as session:
        return {z for (z,) in session.execute(
            select(Subscriber.timezone).where(mailable())
            .distinct()) if z}


def unfinished_numbers(store: Store) -> list[int]:
    """Numbers of the editions still sending or paused, oldest first."""
    with store.sessions() as session:
        return list(session.scalars(select(Edition.number).where(
            Edition.status.in_(_UNFINISHED)).order_by(Edition.number)))


def edition_at_slot(store: Store, slot: datetime) -> Edition | None:
    with store.sessions() as session:
        return session.scalar(select(Edition).where(Edition.slot == slot))


def pending_deliveries(store: Store, *, number: int | None = None,
                       due_at: datetime | None = None) -> int:
    """Pending deliveries (of edition number, or of all); with due_at only those whose
    local time has come by then."""
    with store.sessions() as session:
        query = select(func.count()).select_from(Delivery).where(
            *due_conditions(due_at) if due_at is not None
            else [Delivery.status == DeliveryStatus.PENDING])
        if number is not None:
            query = query.join(Edition, Edition.id == Delivery.edition_id).where(
                Edition.number == number)
        return int(session.scalar(query) or 0)


def next_retry(store: Store) -> datetime | None:
    """When the earliest deferred delivery is due again (None: nothing is deferred)."""
    with store.sessions() as session:
        return session.scalar(select(func.min(Delivery.next_attempt_at)).where(
            Delivery.status == DeliveryStatus.DEFERRED))


def wave_times(store: Store, number: int) -> list[datetime]:
    """The distinct local-time waves edition number still has pending."""
    with store.sessions() as session:
        return list(session.scalars(
            select(Delivery.not_before).join(Edition, Edition.id == Delivery.edition_id)
            .where(Edition.number == number, Delivery.status == DeliveryStatus.PENDING,
                   Delivery.not_before.is_not(None)).distinct()))


def recent_editions(store: Store, limit: int = 5
                    ) -> list[tuple[int, str, datetime, datetime | None]]:
    """(number, status, created, slot) of the newest editions, newest first."""
    with store.sessions() as session:
        return [(e.number, e.status.value, e.created_at, e.slot) for e in session.scalars(
            select(Edition).order_by(Edition.number.desc()).limit(limit))]


# --- reports ------------------------------------------------------------------------------

@dataclass(frozen=True)
class EditionSummary:
    number: int
    created_at: datetime
    status: str
    articles: int
    counts: dict[str, int]


@dataclass(frozen=True)
class EditionDetail:
    number: int
    subject: str
    status: str
    created_at: datetime
    cutoff: datetime
    finished_at: datetime | None
    topics: list[tuple[str, int]]
    counts: dict[str, int]
    problems: list[tuple[str, str, str]]     # (email, status, last error)
    # Bounce events about this edition by kind (VERP or the SMTP session names it).
    reports: dict[str, int] = field(default_factory=dict)


def edition_summaries(store: Store) -> list[EditionSummary]:
    """Every edition, oldest first, with its article count and delivery counts."""
    with store.sessions() as session:
        articles = dict(session.execute(
            select(Article.edition_id, func.count()).where(Article.edition_id.is_not(None))
            .group_by(Article.edition_id)).all())
        return [EditionSummary(e.number, e.created_at, e.status.value, articles.get(e.id, 0),
                               delivery_counts(session, e.id))
                for e in session.scalars(select(Edition).order_by(Edition.number))]


def edition_detail(store: Store, number: int, problems: int = 20) -> EditionDetail:
    """Edition number with its topics, counts and up to `problems` troubled deliveries."""
    with store.sessions() as session:
        e = edition_by_number(session, number)
        topics = session.execute(
            select(Article.topic, func.count()).where(Article.edition_id == e.id)
            .group_by(Article.topic).order_by(func.count().desc())).all()
        trouble = session.execute(
            select(Subscriber.email, Delivery.status, Delivery.last_error)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.edition_id == e.id,
                   Delivery.status.in_([DeliveryStatus.FAILED, DeliveryStatus.DEFERRED])
                   # pending with a reason: handed back when the server refused the session
                   | ((Delivery.status == DeliveryStatus.PENDING)
                      & Delivery.last_error.is_not(None)))
            .order_by(Delivery.id).limit(problems)).all()
        reports = dict(session.execute(
            select(BounceEvent.kind, func.count()).where(BounceEvent.edition_id == e.id)
            .group_by(BounceEvent.kind)).all())
        return EditionDetail(e.number, e.subject, e.status.value, e.created_at, e.cutoff,
                             e.finished_at, [(t, n) for t, n in topics],
                             delivery_counts(session, e.id),
                             [(m, s.value, err or "") for m, s, err in trouble],
                             {str(k): int(n) for k, n in reports.items()})
