"""Rate-limit counters in the store's own database: a `limits` storage backend for
Flask-Limiter, so every thread and every process serving the web pages of one store
counts into the same buckets (its built-in backends are per-process memory, or servers we
do not run: Redis, Memcached, MongoDB).

Fixed windows only (Flask-Limiter's default strategy): one row per key holds the hits
and when the window ends. Each hit is one atomic upsert, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import time
from typing import Any

from limits.storage import Storage
from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from ..store.ledger import Store
from ..store.models import RateLimitHit

__all__ = ["SCHEME", "StoreLimitStorage"]

# Flask-Limiter's storage_uri for this backend; the store goes in storage_options.
SCHEME = "digest-store"


class StoreLimitStorage(Storage):
    """Fixed-window counters in the `rate_limits` table of a digest store."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 store: Store | None = None, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        if store is None:
            raise ValueError("StoreLimitStorage needs storage_options={'store': store}")
        self.store = store

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Count `amount` hits on key (a new window of `expiry` seconds when the last one
        ended) and return the hits in the current window."""
        now = time.time()
        table = RateLimitHit.__table__
        insert = (postgresql.insert if self.store.engine.dialect.name == "postgresql"
                  else sqlite.insert)(table)
        current = table.c.expires_at > now
        statement = insert.values(key=key, hits=amount, expires_at=now + expiry) \
            .on_conflict_do_update(index_elements=[table.c.key], set_={
                "hits": case((current, table.c.hits + amount), else_=amount),
                "expires_at": case((current, table.c.expires_at), else_=now + expiry),
            }).returning(table.c.hits)
        with self.store.writes.begin() as session:
            hits = session.execute(statement).scalar_one()
            # Ended windows of other keys: keep the table as small as the live buckets.
            session.execute(delete(RateLimitHit).where(RateLimitHit.expires_at <= now))
        return int(hits)

    def get(self, key: str) -> int:
        with self.store.sessions() as session:
            hits = session.scalar(select(RateLimitHit.hits).where(
                RateLimitHit.key == key, RateLimitHit.expires_at > time.time()))
        return int(hits or 0)

    def get_expiry(self, key: str) -> float:
        now = time.time()
        with self.store.sessions() as session:
            expires = session.scalar(select(RateLimitHit.expires_at).where(
                RateLimitHit.key == key, RateLimitHit.expires_at > now))
        return float(expires if expires is not None else now)

    def check(self) -> bool:
        try:
            with self.store.sessions() as session:
                session.scalar(select(func.count()).select_from(RateLimitHit))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with self.store.writes.begin() as session:
            return session.execute(delete(RateLimitHit)).rowcount

    def clear(self, key: str) -> None:
        with self.store.writes.begin() as session:
            session.execute(delete(RateLimitHit).where(RateLimitHit.key == key))
