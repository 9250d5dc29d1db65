"""The store: one engine and session factory per process, and the named queries."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, delete, func, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from ..config import Settings
from ..errors import InputError
from .db import check_schema, open_engine, session_factory
from .models import (
    Article,
    ArticleSource,
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
)

__all__ = ["Claim", "Ledger", "Store", "delivery_counts", "new_owner", "retire_owner"]


class Store:
    """Owns the engine; everything that reads or writes the database goes through here."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = open_engine(url)
        try:
            check_schema(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        # Sessions that write: on SQLite they take the write lock at BEGIN, so a
        # read-then-write never fails with "database is locked" when another process
        # committed in between (SQLite cannot upgrade a stale read snapshot).
        self.writes: sessionmaker[Session] = session_factory(
            self.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE"))

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(settings.store_url)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def locked_session(self) -> Iterator[Session]:
        """A session in a transaction that holds the store's write lock from its start, so
        two processes never both create an edition (SQLite: BEGIN IMMEDIATE; PostgreSQL:
        a transaction-scoped advisory lock)."""
        with self.writes.begin() as session:
            if self.engine.dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(7140521)"))
            yield session

    def articles(self, *, new_only: bool = False, topic: str | None = None,
                 limit: int | None = None) -> Sequence[Article]:
        with self.sessions() as session:
            query = select(Article).order_by(Article.added_at.desc(), Article.id.desc())
            if new_only:
                query = query.where(Article.edition_id.is_(None),
                                    Article.is_backlog.is_(False))
            if topic:
                query = query.where(func.lower(Article.topic) == topic.lower())
            if limit:
                query = query.limit(limit)
            return list(session.scalars(query))

    def remove_articles(self, ids: Sequence[int]) -> list[str]:
        """Delete the articles with these ids, all or none; InputError naming the first id
        that is unknown or already in an edition (discard the edition first)."""
        with self.writes.begin() as session:
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

    def set_topic(self, article_id: int, topic: str) -> str:
        """Put one article under a topic (the caller checked the name); returns its title."""
        with self.writes.begin() as session:
            article = session.get(Article, article_id)
            if article is None:
                raise InputError(f"there is no article {article_id} (see: digest articles list)")
            article.topic = topic
            return article.title

    def last_edition(self) -> Edition | None:
        with self.sessions() as session:
            return session.scalar(select(Edition).order_by(Edition.number.desc()).limit(1))

    def latest_article_time(self) -> datetime | None:
        with self.sessions() as session:
            return session.scalar(select(func.max(Article.added_at)))


# --- the delivery ledger ------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    """A delivery claimed for sending, with what is needed to build its message."""

    delivery_id: int
    edition_id: int
    variant: str
    attempts: int
    message_id: str
    subscriber_id: int
    email: str
    name: str
    token_version: int


_OWNER_HOST = socket.gethostname()
_LIVE_OWNERS: set[str] = set()


def new_owner() -> str:
    """An identity for one sender run: host, process, and a nonce."""
    owner = f"{_OWNER_HOST}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
    _LIVE_OWNERS.add(owner)
    return owner


def retire_owner(owner: str) -> None:
    _LIVE_OWNERS.discard(owner)


def _owner_is_dead(owner: str) -> bool:
    """True when the owner was a process on this host that no longer runs."""
    try:
        host, pid_text, _nonce = owner.split("/")
        pid = int(pid_text)
    except ValueError:
        return False
    if host != _OWNER_HOST:
        return False      # another machine's: only its lease expiring frees its rows
    if pid == os.getpid():
        return owner not in _LIVE_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child not yet reaped still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith(("Z", "X"))
    except (OSError, IndexError):
        return False


class Ledger:
    """Claims and records deliveries; one instance per sender process, shared by its
    threads. Every result is committed on its own before the next message on that
    connection, so a kill loses at most one in-flight message per connection."""

    def __init__(self, store: Store, owner: str) -> None:
        self.store = store
        self.owner = owner
        self._lock = threading.Lock()
        self._postgres = store.engine.dialect.name == "postgresql"
        # SQLite: BEGIN IMMEDIATE takes the write lock before reading the rows to claim.
        self._claims = store.engine.connect().execution_options(sqlite_begin="BEGIN IMMEDIATE")
        self._writes = store.engine.connect()
        # The hot path, one commit per sent message, goes straight to the driver: through
        # SQLAlchemy it costs ~50-150 µs a message, a third of a loopback SMTP send.
        self._raw = self._writes.connection.driver_connection
        self._sqlite = store.engine.dialect.name == "sqlite"
        mark = "?" if self._sqlite else "%s"
        if self._postgres:
            # Each result is committed before the next message, but need not wait for the
            # WAL flush: a killed sender loses nothing the server acknowledged; only a crash
            # of the database server itself could forget the last fraction of a second
            # (those few messages would go out twice, with the same Message-ID).
            self._raw.execute("SET synchronous_commit TO OFF")
            self._raw.commit()
        self._sent_sql = (
            f"UPDATE deliveries SET status = '{DeliveryStatus.SENT.value}', sent_at = {mark}, "
            f"attempts = attempts + 1, claimed_by = NULL, lease_until = NULL, "
            f"last_error = NULL WHERE id = {mark}")

    def close(self) -> None:
        if self._postgres:
            self._raw.execute("RESET synchronous_commit")
            self._raw.commit()
        self._claims.close()
        self._writes.close()

    def recover(self, now: datetime) -> int:
        """Give back rows claimed by senders that died (on this host) or whose lease ran out."""
        d = Delivery.__table__
        with self._lock, self._claims.begin():
            owners = self._claims.execute(
                select(d.c.claimed_by).where(d.c.status == DeliveryStatus.SENDING.value)
                .distinct()).scalars().all()
            dead = [o for o in owners if o and _owner_is_dead(o)]
            result = self._claims.execute(
                update(d).where(d.c.status == DeliveryStatus.SENDING.value,
                                or_(d.c.lease_until < now, d.c.claimed_by.in_(dead)))
                .values(status=DeliveryStatus.PENDING.value, claimed_by=None, lease_until=None))
            return int(result.rowcount or 0)

    def claim(self, limit: int, now: datetime, lease_seconds: int, *,
              edition_id: int | None = None, retry: bool = False) -> list[Claim]:
        """Up to limit pending (or, with retry, due deferred) deliveries, now ours."""
        d, s = Delivery.__table__, Subscriber.__table__
        if retry:
            wanted = and_(d.c.status == DeliveryStatus.DEFERRED.value,
                          d.c.next_attempt_at <= now)
        else:
            wanted = d.c.status == DeliveryStatus.PENDING.value
        query = (
            select(d.c.id, d.c.edition_id, d.c.variant, d.c.attempts, d.c.message_id,
                   s.c.id.label("sid"), s.c.email, s.c.name, s.c.token_version,
                   s.c.status.label("sub_status"))
            .select_from(d.join(s, s.c.id == d.c.subscriber_id))
            .where(wanted, or_(d.c.not_before.is_(None), d.c.not_before <= now))
            .order_by(d.c.id).limit(limit)
        )
        if edition_id is not None:
            query = query.where(d.c.edition_id == edition_id)
        if self._postgres:
            query = query.with_for_update(skip_locked=True, of=d)
        with self._lock, self._claims.begin():
            rows = self._claims.execute(query).all()
            live = [r for r in rows if r.sub_status == SubscriberStatus.ACTIVE.value]
            gone = [r.id for r in rows if r.sub_status != SubscriberStatus.ACTIVE.value]
            if live:
                self._claims.execute(
                    update(d).where(d.c.id.in_([r.id for r in live]))
                    .values(status=DeliveryStatus.SENDING.value, claimed_by=self.owner,
                            lease_until=now + timedelta(seconds=lease_seconds)))
            if gone:
                self._claims.execute(
                    update(d).where(d.c.id.in_(gone))
                    .values(status=DeliveryStatus.SKIPPED.value,
                            last_error="subscriber no longer active"))
        return [Claim(r.id, r.edition_id, r.variant, r.attempts, r.message_id, r.sid, r.email,
                      r.name, r.token_version) for r in live]

    def _write(self, statement: Any) -> None:
        with self._lock, self._writes.begin():
            self._writes.execute(statement)

    def sent(self, delivery_id: int, now: datetime) -> None:
        stamp = now.astimezone(UTC).replace(tzinfo=None)
        # SQLite stores DateTime as text in SQLAlchemy's format; other drivers take objects.
        value: Any = stamp.strftime("%Y-%m-%d %H:%M:%S.%f") if self._sqlite else stamp
        with self._lock:
            cursor = self._raw.cursor()
            try:
                cursor.execute(self._sent_sql, (value, delivery_id))
            finally:
                cursor.close()
            # SQLite runs in autocommit mode here (the UPDATE is its own transaction);
            # other drivers need the commit.
            self._raw.commit()

    def deferred(self, delivery_id: int, retry_at: datetime, error: str) -> None:
        d = Delivery.__table__
        self._write(update(d).where(d.c.id == delivery_id).values(
            status=DeliveryStatus.DEFERRED.value, next_attempt_at=retry_at,
            attempts=d.c.attempts + 1, claimed_by=None, lease_until=None, last_error=error))

    def failed(self, delivery_id: int, subscriber_id: int, error: str, bounce_threshold: int,
               *, hard: bool) -> None:
        """Give up on a delivery; a hard (5xx) failure counts towards bouncing the subscriber."""
        d, s = Delivery.__table__, Subscriber.__table__
        with self._lock, self._writes.begin():
            self._writes.execute(update(d).where(d.c.id == delivery_id).values(
                status=DeliveryStatus.FAILED.value, attempts=d.c.attempts + 1,
                claimed_by=None, lease_until=None, last_error=error))
            if hard:
                self._writes.execute(update(s).where(s.c.id == subscriber_id).values(
                    hard_bounces=s.c.hard_bounces + 1))
                self._writes.execute(update(s).where(
                    s.c.id == subscriber_id, s.c.hard_bounces >= bounce_threshold,
                    s.c.status == SubscriberStatus.ACTIVE.value)
                    .values(status=SubscriberStatus.BOUNCED.value))

    def release(self, delivery_ids: Sequence[int], *, error: str | None = None) -> None:
        """Hand claimed but unsent deliveries back (with the reason, when there is one)."""
        if not delivery_ids:
            return
        d = Delivery.__table__
        values: dict[str, Any] = {"status": DeliveryStatus.PENDING.value, "claimed_by": None,
                                  "lease_until": None}
        if error is not None:
            values["last_error"] = error
        self._write(update(d).where(d.c.id.in_(list(delivery_ids)),
                                    d.c.claimed_by == self.owner).values(**values))


def delivery_counts(session: Session, edition_id: int | None = None) -> dict[str, int]:
    """Deliveries per status (every status present, zero when none)."""
    d = Delivery.__table__
    query = select(d.c.status, func.count()).group_by(d.c.status)
    if edition_id is not None:
        query = query.where(d.c.edition_id == edition_id)
    counts = {status.value: 0 for status in DeliveryStatus}
    counts.update({status: n for status, n in session.execute(query).all()})
    return counts
