"""Rate-limit counters in the `rate_limits` table: fixed windows, one row per key holding
the hits and when the window ends. Each hit is one atomic upsert, on SQLite and
PostgreSQL alike (the dialect's own INSERT … ON CONFLICT)."""

from __future__ import annotations

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

# STORE_ERRORS is named here too for the rate limiter's storage (its base_exceptions).
from .db import STORE_ERRORS, Store, rowcount, table_of
from .models import RateLimitHit

__all__ = ["STORE_ERRORS", "clear_hits", "count_hit", "count_hit_in", "current_hits", "hold",
           "reset_hits", "table_ready", "take_back", "window_end"]


def count_hit(store: Store, key: str, expiry: int, amount: int, now: float) -> int:
    """Count `amount` hits on key (a new window of `expiry` seconds when the last one
    ended at `now`) and return the hits in the current window. Ended windows of other
    keys go at the same time, so the table stays as small as the live buckets."""
    with store.writes.begin() as session:
        return count_hit_in(session, key, expiry, amount, now)


def count_hit_in(session: Session, key: str, expiry: int, amount: int, now: float) -> int:
    """count_hit in the caller's transaction: the same statements whatever the amount (0
    reads the window's hits through the same upsert)."""
    table = table_of(RateLimitHit)
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    current = table.c.expires_at > now
    statement = insert.values(key=key, hits=amount, expires_at=now + expiry) \
        .on_conflict_do_update(index_elements=[table.c.key], set_={
            "hits": case((current, table.c.hits + amount), else_=amount),
            "expires_at": case((current, table.c.expires_at), else_=now + expiry),
        }).returning(table.c.hits)
    hits = session.execute(statement).scalar_one()
    session.execute(delete(RateLimitHit).where(RateLimitHit.expires_at <= now))
    return int(hits)


def current_hits(store: Store, key: str, now: float) -> int:
    """The hits on key in its window that is open at `now` (0 when none is)."""
    with store.sessions() as session:
        hits = session.scalar(select(RateLimitHit.hits).where(
            RateLimitHit.key == key, RateLimitHit.expires_at > now))
    return int(hits or 0)


def window_end(store: Store, key: str, now: float) -> float | None:
    """When key's window open at `now` ends, or None when none is."""
    with store.sessions() as session:
        expires = session.scalar(select(RateLimitHit.expires_at).where(
            RateLimitHit.key == key, RateLimitHit.expires_at > now))
    return None if expires is None else float(expires)


def table_ready(store: Store) -> bool:
    """Whether the counters can be read."""
    try:
        with store.sessions() as session:
            session.scalar(select(func.count()).select_from(RateLimitHit))
    except STORE_ERRORS:
        return False
    return True


def reset_hits(store: Store) -> int:
    """Forget every counter; returns how many there were."""
    with store.writes.begin() as session:
        return rowcount(session.execute(delete(RateLimitHit)))


def clear_hits(store: Store, key: str) -> None:
    """Forget key's counter."""
    with store.writes.begin() as session:
        session.execute(delete(RateLimitHit).where(RateLimitHit.key == key))


def take_back(store: Store, key: str, now: float) -> None:
    """Uncount one hit on key in its window open at `now` (nothing when none is open, or
    it holds no hit): for a hit counted first and then not spent."""
    with store.writes.begin() as session:
        session.execute(update(RateLimitHit).where(
            RateLimitHit.key == key, RateLimitHit.expires_at > now, RateLimitHit.hits > 0)
            .values(hits=RateLimitHit.hits - 1))


def hold(store: Store, key: str, seconds: int, now: float) -> None:
    """One hit on key in a window that ends `seconds` after `now`, whatever it held: a
    mark that lasts that long from its latest renewal."""
    table = table_of(RateLimitHit)
    insert = (postgresql.insert if store.engine.dialect.name == "postgresql"
              else sqlite.insert)(table)
    statement = insert.values(key=key, hits=1, expires_at=now + seconds) \
        .on_conflict_do_update(index_elements=[table.c.key],
                               set_={"hits": 1, "expires_at": now + seconds})
    with store.writes.begin() as session:
        session.execute(statement)
