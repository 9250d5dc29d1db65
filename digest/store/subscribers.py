"""Queries about subscribers, each in the caller's session (and so its transaction)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import table_of
from .models import Article, Subscriber, SubscriberStatus
from .suppressions import not_suppressed

__all__ = ["active_count", "active_topic_choices", "add_pending_if", "article_topics",
           "find_subscriber", "get_subscriber", "insert_subscribers", "list_subscribers",
           "mailable", "removed_hashes", "subscribers_by_key", "update_subscribers"]


def mailable() -> ColumnElement[bool]:
    """The one rule of whom a message may go to: active, and not on the suppression list
    (every query that picks recipients uses it)."""
    return (Subscriber.status == SubscriberStatus.ACTIVE) & not_suppressed(Subscriber.email_key)


def add_pending_if(session: Session, allowed: bool, values: Mapping[str, Any]) -> None:
    """Add a pending subscriber of `values` (email, email_key, name, topics, consent…)
    when allowed and no row has its email_key; an existing row, of any status, stays as
    it is. One INSERT … SELECT … WHERE allowed … ON CONFLICT DO NOTHING, issued either
    way, so the work is the same whether a row is added, was there, or may not be."""
    table = table_of(Subscriber)
    columns = {"status": SubscriberStatus.PENDING, "token_version": 1, "hard_bounces": 0,
               "bounce_score": 0, **values}
    row = select(*[literal(value, type_=table.c[name].type)
                   for name, value in columns.items()]).where(literal(allowed))
    dialect = session.get_bind().dialect.name
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table) \
        .from_select([table.c[name] for name in columns], row) \
        .on_conflict_do_nothing(index_elements=[table.c.email_key])
    session.execute(statement)


def find_subscriber(session: Session, email_key: str) -> Subscriber | None:
    """The subscriber whose email_key is email_key (an address lower-cased), or None."""
    return session.scalar(select(Subscriber).where(Subscriber.email_key == email_key))


def get_subscriber(session: Session, subscriber_id: int, *,
                   for_update: bool = False) -> Subscriber | None:
    """The subscriber with this id, or None; for_update locks the row (PostgreSQL) until
    the transaction ends."""
    return session.get(Subscriber, subscriber_id, with_for_update=for_update or None)


def subscribers_by_key(session: Session, email_keys: Collection[str]) -> dict[str, Subscriber]:
    """The subscribers of these email_keys, by email_key, in one query; locked (PostgreSQL)
    until the transaction ends, so that an unsubscribe meanwhile is never written over.
    They are detached from the session: what the caller changes in them is written by
    update_subscribers, in one statement for them all."""
    if not email_keys:
        return {}
    found = list(session.scalars(select(Subscriber).where(
        Subscriber.email_key.in_(list(email_keys))).with_for_update()))
    for sub in found:
        session.expunge(sub)
    return {sub.email_key: sub for sub in found}


_CHANGEABLE = ("name", "topics", "timezone", "status", "hard_bounces", "bounce_score")


def update_subscribers(session: Session, subs: Sequence[Subscriber]) -> None:
    """Write what an import may change of these subscribers (name, topics, timezone,
    status, bounce counts) in one statement, in the caller's transaction."""
    if not subs:
        return
    t = table_of(Subscriber)
    statement = update(t).where(t.c.id == bindparam("sub_id")).values(
        {name: bindparam(f"new_{name}", type_=t.c[name].type) for name in _CHANGEABLE})
    session.execute(statement, [{"sub_id": sub.id, **{f"new_{name}": getattr(sub, name)
                                                      for name in _CHANGEABLE}}
                                for sub in subs])


def removed_hashes(session: Session, hashes: Collection[str]) -> set[str]:
    """Which of these address hashes a subscriber removed by an older store kept (one
    query, equality on an indexed column)."""
    if not hashes:
        return set()
    return set(session.scalars(select(Subscriber.removed_hash).where(
        Subscriber.removed_hash.in_(list(hashes)))))


def insert_subscribers(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert new subscribers (column values; the defaults fill the rest) in as few
    statements as their sets of columns allow, in the caller's transaction."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for group in groups.values():
        session.execute(insert(table_of(Subscriber)), group)


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
