"""Queries of the article writer (digest.ingest.writer), each in the caller's session and
so its transaction: what is stored already (recent titles, content hashes, canonical
URLs), the batch insert, sources and the sources that carried an article too.

The look-ups take a whole batch's keys at once, and a batch is one INSERT … RETURNING:
an import costs about the same per record at 50,000 records as at 50.

Every look-up includes removed articles (tombstones) on purpose: a removed article that
comes again (a re-import, a feed's next fetch) is a duplicate, never new."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import insert, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .db import table_of
from .models import Article, ArticleSource, Source

__all__ = ["InsertedArticles", "SessionFactory", "article_ids_by_canonical_url",
           "article_ids_by_hash", "find_or_add_source", "insert_articles", "link_source",
           "mark_as_news",
           "recent_titles"]

# What an import commits its batches through (Store.writes).
SessionFactory: TypeAlias = sessionmaker[Session]


def recent_titles(session: Session, since: datetime, limit: int) -> list[tuple[int, str]]:
    """(id, title) of the newest `limit` articles added at or after `since`, oldest first."""
    rows = session.execute(select(Article.id, Article.title)
                           .where(Article.added_at >= since)
                           .order_by(Article.id.desc()).limit(limit)).all()
    return [(article_id, title) for article_id, title in reversed(rows)]


def article_ids_by_hash(session: Session, hashes: Collection[str]) -> dict[str, int]:
    """content hash → id, for the stored articles that have one of `hashes`."""
    if not hashes:
        return {}
    rows = session.execute(select(Article.content_hash, Article.id)
                           .where(Article.content_hash.in_(hashes))).all()
    return {digest_hash: article_id for digest_hash, article_id in rows}


def article_ids_by_canonical_url(session: Session, urls: Collection[str]) -> dict[str, int]:
    """canonical URL → id, for the stored articles that have one of `urls`."""
    if not urls:
        return {}
    rows = session.execute(select(Article.canonical_url, Article.id)
                           .where(Article.canonical_url.in_(urls))).all()
    return {url: article_id for url, article_id in rows if url is not None}


@dataclass
class InsertedArticles:
    """What insert_articles did with each row, by position: its new id, or None when it
    was not stored (another writer stored the same article first, or the store refused
    it: then `refused` holds the store's one-line reason)."""

    ids: list[int | None]
    refused: dict[int, str] = field(default_factory=dict)


def insert_articles(session: Session, rows: Sequence[Mapping[str, Any]]) -> InsertedArticles:
    """Insert the articles' column values: all in one statement, or, when the store
    refuses that batch, one by one so that the others are still stored. Each attempt is
    a savepoint, so a refused row leaves nothing behind and the transaction goes on."""
    if not rows:
        return InsertedArticles([])
    # Core's INSERT on the table: one statement with RETURNING per batch (the ORM's
    # bulk path would build an object per row).
    table = table_of(Article)
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    try:
        with session.begin_nested():
            ids = session.execute(statement, list(rows)).scalars().all()
        return InsertedArticles(list(ids))
    except (IntegrityError, DataError):
        pass
    inserted = InsertedArticles([None] * len(rows))
    for position, values in enumerate(rows):
        try:
            with session.begin_nested():
                inserted.ids[position] = session.execute(statement, [values]).scalar_one()
        except IntegrityError:
            # Another importer stored the same article between our check and insert.
            continue
        except DataError as exc:
            inserted.refused[position] = str(exc.orig).splitlines()[0]
    return inserted


def find_or_add_source(session: Session, kind: str, name: str) -> int:
    """The id of the source of this kind and name, added when there is none yet."""
    source_id = session.scalar(select(Source.id).where(Source.kind == kind,
                                                        Source.name == name))
    if source_id is None:
        # A source of another kind under the same name is the same publisher: same weight.
        weight = session.scalar(select(Source.weight).where(Source.name == name).limit(1))
        source = Source(kind=kind, name=name, weight=1.0 if weight is None else weight)
        session.add(source)
        session.flush()
        source_id = source.id
    return source_id


def mark_as_news(session: Session, ids: Sequence[int]) -> int:
    """Take the articles of ids that were stored too old, are in no edition and not
    removed as news after all; returns how many were."""
    if not ids:
        return 0
    result = session.execute(
        update(Article).where(Article.id.in_(sorted(set(ids))), Article.too_old.is_(True),
                              Article.edition_id.is_(None), Article.removed_at.is_(None))
        .values(too_old=False).execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


def link_source(session: Session, article_id: int, source_id: int, url: str | None) -> None:
    """Record that the source carried the article too (once; never its own source)."""
    article = session.get(Article, article_id)
    if article is None or article.source_id == source_id:
        return
    if session.get(ArticleSource, (article_id, source_id)) is None:
        session.add(ArticleSource(article_id=article_id, source_id=source_id, url=url))
        session.flush()
