"""Engine and session factory; SQLite gets WAL and a busy timeout."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .errors import StoreError
from .models import Base

__all__ = ["create_schema", "open_engine", "session_factory"]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL survives a killed process (only power loss can drop the last commits).
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # Claims ask for BEGIN IMMEDIATE (execution option sqlite_begin) to take the write
    # lock up front, so two senders never read the same pending rows.
    conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def open_engine(url: str) -> Engine:
    """An engine for url; raises StoreError with the fix when it cannot be opened."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            # Let SQLAlchemy issue BEGIN itself, so BEGIN IMMEDIATE can be used for claims.
            event.listen(engine, "connect", lambda c, _r: setattr(c, "isolation_level", None))
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"store.url {url!r} is not usable: {exc}") from None
    return engine


def create_schema(engine: Engine) -> None:
    """Create any missing tables (idempotent)."""
    try:
        Base.metadata.create_all(engine)
    except OperationalError as exc:
        raise StoreError(f"cannot open the store at {engine.url!r}: {exc.orig}") from None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
