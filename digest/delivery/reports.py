"""Reports on editions: the list, and one edition in detail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from ..errors import InputError
from ..store.ledger import Store, delivery_counts
from ..store.models import Article, Delivery, DeliveryStatus, Edition, Subscriber

__all__ = ["EditionDetail", "EditionSummary", "edition_detail", "edition_summaries"]


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


def edition_summaries(store: Store) -> list[EditionSummary]:
    with store.sessions() as session:
        articles = dict(session.execute(
            select(Article.edition_id, func.count()).where(Article.edition_id.is_not(None))
            .group_by(Article.edition_id)).all())
        return [EditionSummary(e.number, e.created_at, e.status.value, articles.get(e.id, 0),
                               delivery_counts(session, e.id))
                for e in session.scalars(select(Edition).order_by(Edition.number))]


def edition_detail(store: Store, number: int, problems: int = 20) -> EditionDetail:
    with store.sessions() as session:
        e = session.scalar(select(Edition).where(Edition.number == number))
        if e is None:
            raise InputError(f"there is no edition {number} (see: digest editions list)")
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
        return EditionDetail(e.number, e.subject, e.status.value, e.created_at, e.cutoff,
                             e.finished_at, [(t, n) for t, n in topics],
                             delivery_counts(session, e.id),
                             [(m, s.value, err or "") for m, s, err in trouble])
