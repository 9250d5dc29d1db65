"""Queries about subscribers, each in the caller's session (and so its transaction)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from .models import Article, Subscriber, SubscriberStatus
from .suppressions import not_suppressed

__all__ = ["active_count", "active_topic_choices", "article_topics", "find_subscriber",
           "get_subscriber", "has_removed_key", "list_subscribers", "mailable"]


def mailable() -> ColumnElement[bool]:
    """The one rule of whom a message may go to: active, and not on the suppression list
    (every query that picks recipients uses it)."""
    return (Subscriber.status == SubscriberStatus.ACTIVE) & not_suppressed(Subscriber.email_key)


def find_subscriber(session: Session, email_key: str) -> Subscriber | None:
    """The subscriber whose email_key is email_key (an address lower-cased), or None."""
    return session.scalar(select(Subscriber).where(Subscriber.email_key == email_key))


def get_subscriber(session: Session, subscriber_id: int, *,
                   for_update: bool = False) -> Subscriber | None:
    """The subscriber with this id, or None; for_update locks the row (PostgreSQL) until
    the transaction ends."""
    return session.get(Subscriber, subscriber_id, with_for_update=for_update or None)


def has_removed_key(session: Session, key_prefix: str) -> bool:
    """Whether a removed subscriber's email_key starts with key_prefix."""
    return session.scalar(select(func.count()).where(
        Subscriber.email_key.like(f"{key_prefix}%"))) != 0


def list_subscribers(session: Session,
                     status: SubscriberStatus | None = None) -> list[Subscriber]:
    """Subscribers by id, of one status or all (removed ones are never listed)."""
    query = (select(Subscriber).where(Subscriber.status != SubscriberStatus.REMOVED)
             .order_by(Subscriber.id))
    if status:
        query = query.where(Subscriber.status == status)
    return list(session.scalars(query))


def article_topics(session: Session) -> list[str]:
    """Every topic some stored article is under (each once)."""
    return list(session.scalars(select(Article.topic).distinct()))


def active_topic_choices(session: Session) -> list[tuple[str, Sequence[str]]]:
    """(email, chosen topics) of every active subscriber, by id."""
    rows = session.execute(select(Subscriber.email, Subscriber.topics)
                           .where(mailable())
                           .order_by(Subscriber.id))
    return [(email, topics) for email, topics in rows]


def active_count(session: Session) -> int:
    """How many subscribers are active."""
    return session.scalar(select(func.count()).select_from(Subscriber).where(
        mailable())) or 0
