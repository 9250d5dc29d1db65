"""Articles as editions see them: the new ones up to a cut-off, an edition's own, the
next edition's number, and the operator's corrections (remove, set a topic)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ..errors import InputError
from .db import Store
from .models import Article, ArticleSource, Edition

__all__ = [
    "edition_articles",
    "list_articles",
    "new_articles",
    "next_edition_number",
    "remove_articles",
    "set_topic",
    "upcoming_edition",
]


def new_articles(session: Session, cutoff: datetime) -> list[Article]:
    """Articles no edition has taken, added up to cutoff."""
    return list(session.scalars(
        select(Article).where(Article.edition_id.is_(None), Article.added_at <= cutoff,
                              Article.is_backlog.is_(False))
        .order_by(Article.id)))


def next_edition_number(session: Session) -> int:
    """The number the next edition gets (1 for the first)."""
    return (session.scalar(select(func.max(Edition.number))) or 0) + 1


def upcoming_edition(store: Store, cutoff: datetime) -> tuple[int, list[Article]]:
    """(the next edition's number, the new articles it would take up to cutoff)."""
    with store.sessions() as session:
        return next_edition_number(session), new_articles(session, cutoff)


def edition_articles(session: Session, edition_id: int) -> list[Article]:
    """The articles edition_id took, in id order."""
    return list(session.scalars(select(Article).where(Article.edition_id == edition_id)
                                .order_by(Article.id)))


def list_articles(store: Store, *, new_only: bool = False, topic: str | None = None,
                  limit: int | None = None) -> list[Article]:
    """Stored articles, newest first; new_only: only those no edition has taken."""
    with store.sessions() as session:
        query = select(Article).order_by(Article.added_at.desc(), Article.id.desc())
        if new_only:
            query = query.where(Article.edition_id.is_(None), Article.is_backlog.is_(False))
        if topic:
            query = query.where(func.lower(Article.topic) == topic.lower())
        if limit:
            query = query.limit(limit)
        return list(session.scalars(query))


def remove_articles(store: Store, ids: Sequence[int]) -> list[str]:
    """Delete the articles with these ids, all or none; InputError naming the first id
    that is unknown or already in an edition (discard the edition first)."""
    with store.writes.begin() as session:
        found = {a.id: a for a in session.scalars(select(Article).where(
            Article.id.in_(list(ids))))}
        for article_id in ids:
            article = found.get(article_id)
            if article is None:
                raise InputError(f"there is no article {article_id} (see: digest articles "
                                 f"list)")
            if article.edition_id is not None:
                number = session.scalar(select(Edition.number).where(
                    Edition.id == article.edition_id))
                raise InputError(f"article {article_id} is in edition {number}; an "
                                 f"edition nobody received can be discarded first: "
                                 f"digest editions discard {number}")
        session.execute(delete(ArticleSource).where(ArticleSource.article_id.in_(
            list(found))))
        session.execute(delete(Article).where(Article.id.in_(list(found)))
                        .execution_options(synchronize_session=False))
        return [found[i].title for i in ids]


def set_topic(store: Store, article_id: int, topic: str) -> str:
    """Put one article under a topic (the caller checked the name); returns its title."""
    with store.writes.begin() as session:
        article = session.get(Article, article_id)
        if article is None:
            raise InputError(f"there is no article {article_id} (see: digest articles list)")
        article.topic = topic
        return article.title
