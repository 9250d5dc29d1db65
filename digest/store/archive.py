"""Queries of the public archive: editions that went out (sent, or sending) and their
articles. Nothing else of the store is ever shown on the web."""

from __future__ import annotations

from sqlalchemy import select

from .db import Store
from .models import Article, Edition, EditionStatus

__all__ = ["PUBLISHED", "published_article", "published_edition", "published_editions"]

PUBLISHED = (EditionStatus.SENT, EditionStatus.SENDING)


def published_editions(store: Store, limit: int | None = None) -> list[Edition]:
    """Published editions, newest first (at most limit)."""
    query = (select(Edition).where(Edition.status.in_(PUBLISHED))
             .order_by(Edition.number.desc()))
    if limit is not None:
        query = query.limit(limit)
    with store.sessions() as session:
        return list(session.scalars(query).all())


def published_edition(store: Store, number: int) -> tuple[Edition, list[Article]] | None:
    """Published edition `number` and every one of its articles (by id), or None."""
    with store.sessions() as session:
        edition = session.scalar(select(Edition).where(Edition.number == number,
                                                       Edition.status.in_(PUBLISHED)))
        if edition is None:
            return None
        # A removed article is never in an edition (remove refuses those); the filter
        # keeps the web from ever showing a tombstone all the same.
        articles = list(session.scalars(select(Article).where(
            Article.edition_id == edition.id, Article.removed_at.is_(None))
            .order_by(Article.id)))
    return edition, articles


def published_article(store: Store, article_id: int) -> Article | None:
    """The article, when a published edition carried it (its sources loaded); else None."""
    with store.sessions() as session:
        row = session.get(Article, article_id)
        if (row is None or row.edition_id is None or row.removed_at is not None
                or session.scalar(select(Edition.status).where(
                    Edition.id == row.edition_id)) not in PUBLISHED):
            return None
        _ = row.source_name   # load the sources while the session is open
    return row
