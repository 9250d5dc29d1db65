"""Editions an editor is shaping (draft, approved): the reads and writes of the desk.

Every change happens in one transaction holding the edition lock (as an edition is made
in), so an edition cannot start sending while an editor changes it. The desk's rules live
in digest.delivery.desk; this module only reads and writes rows for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..errors import InputError, NotFound
from .articles import new_articles, next_edition_number, storable_id
from .db import Store
from .locks import locked_session
from .models import Article, Edition, EditionStatus, Subscriber
from .subscribers import find_subscriber

__all__ = ["COMING", "DraftWork", "adopt_slot", "coming_articles", "coming_edition",
           "coming_number", "draft_work", "edition_by_number", "mark_mailed", "next_coming",
           "read_draft"]

# An edition an editor may still change: not yet sending.
COMING = (EditionStatus.DRAFT, EditionStatus.APPROVED)


def coming_edition(session: Session) -> Edition | None:
    """The oldest draft or approved edition."""
    return session.scalar(select(Edition).where(Edition.status.in_(COMING))
                          .order_by(Edition.number).limit(1))


def coming_number(store: Store) -> int | None:
    """The number of the oldest draft or approved edition, or None."""
    with store.sessions() as session:
        edition = coming_edition(session)
        return None if edition is None else edition.number


def next_coming(store: Store) -> Edition | None:
    """The oldest draft or approved edition (a detached copy), or None."""
    with store.sessions() as session:
        return coming_edition(session)


def coming_articles(store: Store, edition: Edition) -> list[Article]:
    """The articles of a draft or approved edition, in id order."""
    with store.sessions() as session:
        return DraftWork(session, edition).articles()


def adopt_slot(store: Store, number: int, slot: datetime) -> None:
    """Edition number goes out at slot (one held past its own goes out at a later one)."""
    with locked_session(store) as session:
        edition_by_number(session, number).slot = slot


def mark_mailed(store: Store, number: int, at: datetime, *, reminder: bool) -> None:
    """Record when the editors were asked to review edition number, or reminded."""
    with store.writes.begin() as session:
        edition = edition_by_number(session, number)
        if reminder:
            edition.reminded_at = at
        else:
            edition.review_sent_at = at


class DraftWork:
    """One edition (any status) and its articles, in one session."""

    def __init__(self, session: Session, edition: Edition) -> None:
        self.session = session
        self.edition = edition

    def articles(self) -> list[Article]:
        """Its articles (never a removed one), in id order."""
        return list(self.session.scalars(
            select(Article).where(Article.edition_id == self.edition.id,
                                  Article.removed_at.is_(None)).order_by(Article.id)))

    def article(self, article_id: int) -> Article:
        """Article article_id of this edition; NotFound when it is not in it."""
        article = self.session.get(Article, article_id) if storable_id(article_id) else None
        if article is None or article.edition_id != self.edition.id \
                or article.removed_at is not None:
            raise NotFound(f"article {article_id} is not in edition {self.edition.number} "
                             f"(see: digest editions show {self.edition.number})")
        return article

    def new_articles(self, cutoff: datetime) -> list[Article]:
        """Articles no edition has taken, added up to cutoff."""
        return new_articles(self.session, cutoff)

    def outside(self, article_id: int) -> Article:
        """Article article_id, stored, not removed and in no edition (an editor may add it
        to this one, even when it came in too old or as a feed's back catalogue);
        NotFound or InputError naming what it is instead."""
        article = self.session.get(Article, article_id) if storable_id(article_id) else None
        if article is None:
            raise NotFound(f"no article {article_id} (see: digest articles list)")
        if article.removed_at is not None:
            raise InputError(f"article {article_id} was removed (digest articles remove): "
                             f"it cannot go into an edition")
        if article.edition_id is not None:
            number = self.session.scalar(select(Edition.number).where(
                Edition.id == article.edition_id))
            raise InputError(f"article {article_id} is already in edition {number}")
        return article

    def take(self, articles: Sequence[Article]) -> None:
        """Reserve articles for this edition."""
        if articles:
            self.session.execute(update(Article).where(Article.id.in_([a.id for a in articles]))
                                 .values(edition_id=self.edition.id)
                                 .execution_options(synchronize_session="fetch"))

    def release(self, articles: Sequence[Article]) -> None:
        """Articles back to the pool, with the editor's marks on them undone (a pin too:
        it was for this edition)."""
        for article in articles:
            article.edition_id = None
            article.pinned = False
            article.position = None
            article.pin_top = False
            article.edited_title = None
            article.edited_teaser = None
        self.session.flush()

    def add(self, edition: Edition) -> None:
        """A new edition (this work's own)."""
        self.edition = edition
        self.session.add(edition)
        self.session.flush()

    def coming(self) -> Edition | None:
        """The oldest draft or approved edition."""
        return coming_edition(self.session)

    def next_number(self) -> int:
        return next_edition_number(self.session)

    def subscriber(self, email_key: str) -> Subscriber | None:
        return find_subscriber(self.session, email_key)


def edition_by_number(session: Session, number: int) -> Edition:
    """Edition number; NotFound when there is none (a number no column holds included)."""
    edition = session.scalar(select(Edition).where(Edition.number == number)) \
        if storable_id(number) else None
    if edition is None:
        raise NotFound(f"there is no edition {number} (see: digest editions list)")
    return edition


@contextmanager
def draft_work(store: Store, number: int | None = None) -> Iterator[DraftWork]:
    """DraftWork on edition number (None: a new edition, added with `add`), in a
    transaction holding the edition lock; committed when the block ends."""
    with locked_session(store) as session:
        edition = edition_by_number(session, number) if number is not None else Edition()
        yield DraftWork(session, edition)


@contextmanager
def read_draft(store: Store, number: int) -> Iterator[DraftWork]:
    """DraftWork on edition number over a read-only session."""
    with store.sessions() as session:
        yield DraftWork(session, edition_by_number(session, number))
