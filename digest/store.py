"""The store: one engine and session factory per process, and the named queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from .config import Settings
from .db import create_schema, open_engine, session_factory
from .models import Article, Edition

__all__ = ["Store"]


class Store:
    """Owns the engine; everything that reads or writes the database goes through here."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = open_engine(url)
        create_schema(self.engine)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(settings.store_url)

    def close(self) -> None:
        self.engine.dispose()

    def articles(self, *, new_only: bool = False, topic: str | None = None,
                 limit: int | None = None) -> Sequence[Article]:
        with self.sessions() as session:
            query = select(Article).order_by(Article.added_at.desc(), Article.id.desc())
            if new_only:
                query = query.where(Article.edition_id.is_(None))
            if topic:
                query = query.where(func.lower(Article.topic) == topic.lower())
            if limit:
                query = query.limit(limit)
            return list(session.scalars(query))

    def last_edition(self) -> Edition | None:
        with self.sessions() as session:
            return session.scalar(select(Edition).order_by(Edition.number.desc()).limit(1))

    def latest_article_time(self) -> datetime | None:
        with self.sessions() as session:
            return session.scalar(select(func.max(Article.added_at)))
