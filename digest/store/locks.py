"""Locks held in the store: the one module that knows lock numbers and how each dialect
takes a lock.

- ``locked_session``: a write transaction holding the store's edition lock from its
  start, so two processes never both create (or discard, or reopen) an edition.
- ``SchedulerLock``: held for the life of a scheduler process, one scheduler per store.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from ..errors import DigestError
from .db import Store

__all__ = ["SchedulerLock", "locked_session"]

# PostgreSQL advisory lock keys; SQLite needs none (BEGIN IMMEDIATE, and an flock).
_EDITION_LOCK = 7140521      # transaction-scoped: creating, discarding, reopening editions
_SCHEDULER_LOCK = 7140522    # session-scoped: the one scheduler per store


@contextmanager
def locked_session(store: Store) -> Iterator[Session]:
    """A session in a transaction that holds the store's write lock from its start, so
    two processes never both create an edition (SQLite: BEGIN IMMEDIATE; PostgreSQL:
    a transaction-scoped advisory lock)."""
    with store.writes.begin() as session:
        if store.engine.dialect.name == "postgresql":
            session.execute(text(f"SELECT pg_advisory_xact_lock({_EDITION_LOCK})"))
        yield session


class SchedulerLock:
    """Held for the life of the scheduler process; a second one on the same store fails
    to take it (SQLite: an flock beside the database; PostgreSQL: an advisory lock)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._file: IO[str] | None = None
        self._conn: Connection | None = None

    def acquire(self, wait: float = 5.0) -> None:
        """Take the lock, waiting a little: a scheduler that has just exited may take a
        moment to let go of it (PostgreSQL ends its session asynchronously)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._try_acquire()
            except DigestError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _try_acquire(self) -> None:
        url = self.store.engine.url
        if url.get_backend_name() == "sqlite":
            self._take_flock(Path(f"{url.database}.scheduler-lock"), url.database or "")
            return
        self._conn = self.store.engine.connect()
        got = self._conn.execute(text(f"SELECT pg_try_advisory_lock({_SCHEDULER_LOCK})")
                                 ).scalar()
        if not got:
            self._conn.close()
            raise DigestError("another scheduler is already running on this store; stop "
                              "it first (one scheduler per store)")

    def _take_flock(self, path: Path, database: str) -> None:
        self._file = path.open("a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise DigestError(f"another scheduler ({holder}) is already running on the "
                              f"store {database}; stop it first (one scheduler per "
                              f"store)") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}")
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._conn is not None:
            self._conn.close()
