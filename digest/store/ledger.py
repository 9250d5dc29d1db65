"""The delivery ledger: one row per (edition, subscriber), claimed under a lease by
sender processes and updated with every result.

``Ledger`` is the Protocol the sending engine depends on; ``StoreLedger`` keeps it in
the store's database. See DESIGN.md, contract 3.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from .bounces import BouncePolicy, NewEvent, record_event
from .db import Store, rowcount, table_of
from .models import Delivery, DeliveryStatus, Subscriber
from .subscribers import mailable

# Store is named here too while importers move to digest.store.db.
__all__ = ["Claim", "Ledger", "StoreLedger", "delivery_counts", "delivery_totals",
           "due_conditions", "new_owner", "retire_owner"]


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


class Ledger(Protocol):
    """What the sending engine needs of a ledger. Safe to share between threads."""

    def recover(self, now: datetime) -> int:
        """Give back claims of senders that died or whose lease ran out; how many."""
        ...

    def claim(self, limit: int, now: datetime, lease_seconds: int, *,
              edition_id: int | None = None, retry: bool = False) -> list[Claim]:
        """Up to limit pending (or, with retry, due deferred) deliveries, now ours."""
        ...

    def claimable(self, now: datetime, *, edition_id: int | None = None,
                  retry: bool = False) -> int:
        """How many deliveries claim() would find now, were there no limit."""
        ...

    def sent(self, delivery_id: int, now: datetime) -> None:
        """Record a delivery the server accepted (committed before this returns)."""
        ...

    def deferred(self, delivery_id: int, retry_at: datetime, error: str) -> None:
        """Record a temporary failure, to be retried at retry_at."""
        ...

    def failed(self, delivery_id: int, error: str, *, bounce: NewEvent | None = None,
               policy: BouncePolicy | None = None) -> None:
        """Record a permanent failure; a bounce is recorded with it and does to the
        subscriber what its kind does."""
        ...

    def release(self, delivery_ids: Sequence[int], *, error: str | None = None) -> None:
        """Hand claimed but unsent deliveries back, untouched."""
        ...

    def accepted(self, edition_id: int, variant: str) -> bool:
        """Whether the server took any message of this edition's variant (the same
        rendered message, only the per-subscriber parts differing)."""
        ...

    def close(self) -> None:
        """Let go of the ledger's connections; its claims stay until recovered."""
        ...


def due_conditions(now: datetime, edition_id: int | None = None,
                   retry: bool = False) -> list[Any]:
    """The conditions of a delivery a sender may claim now: pending (with retry: deferred
    and due), its local-time wave come, of the edition when one is given."""
    d = table_of(Delivery)
    conditions: list[Any] = [
        and_(d.c.status == DeliveryStatus.DEFERRED.value, d.c.next_attempt_at <= now)
        if retry else d.c.status == DeliveryStatus.PENDING.value,
        or_(d.c.not_before.is_(None), d.c.not_before <= now)]
    if edition_id is not None:
        conditions.append(d.c.edition_id == edition_id)
    return conditions


class StoreLedger:
    """The Ledger in the store's database; one instance per sender run, shared by its
    threads, under an owner identity of its own (see new_owner). Every result is committed
    on its own before the next message on that connection, so a kill loses at most one
    in-flight message per connection."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.owner = new_owner()
        self._lock = threading.Lock()
        self._postgres = store.engine.dialect.name == "postgresql"
        # SQLite: BEGIN IMMEDIATE takes the write lock before reading the rows to claim.
        self._claims = store.engine.connect().execution_options(sqlite_begin="BEGIN IMMEDIATE")
        self._writes = store.engine.connect()
        # The hot path, one commit per sent message, goes straight to the driver: through
        # SQLAlchemy it costs ~50-150 µs a message, a third of a loopback SMTP send.
        self._raw: Any = cast(Any, self._writes.connection.driver_connection)
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
        retire_owner(self.owner)
        if self._postgres:
            self._raw.execute("RESET synchronous_commit")
            self._raw.commit()
        self._claims.close()
        self._writes.close()

    def recover(self, now: datetime) -> int:
        """Give back rows claimed by senders that died (on this host) or whose lease ran out."""
        d = table_of(Delivery)
        with self._lock, self._claims.begin():
            owners = self._claims.execute(
                select(d.c.claimed_by).where(d.c.status == DeliveryStatus.SENDING.value)
                .distinct()).scalars().all()
            dead = [o for o in owners if o and _owner_is_dead(o)]
            result = self._claims.execute(
                update(d).where(d.c.status == DeliveryStatus.SENDING.value,
                                or_(d.c.lease_until < now, d.c.claimed_by.in_(dead)))
                .values(status=DeliveryStatus.PENDING.value, claimed_by=None, lease_until=None))
            return rowcount(result)

    def claimable(self, now: datetime, *, edition_id: int | None = None,
                  retry: bool = False) -> int:
        """How many deliveries claim() would find now, were there no limit."""
        query = select(func.count()).select_from(table_of(Delivery)).where(
            *due_conditions(now, edition_id, retry))
        with self._lock, self._claims.begin():
            return int(self._claims.execute(query).scalar_one())

    def claim(self, limit: int, now: datetime, lease_seconds: int, *,
              edition_id: int | None = None, retry: bool = False) -> list[Claim]:
        """Up to limit pending (or, with retry, due deferred) deliveries, now ours."""
        d, s = table_of(Delivery), table_of(Subscriber)
        query = (
            select(d.c.id, d.c.edition_id, d.c.variant, d.c.attempts, d.c.message_id,
                   s.c.id.label("sid"), s.c.email, s.c.name, s.c.token_version,
                   mailable().label("live"))
            .select_from(d.join(s, s.c.id == d.c.subscriber_id))
            .where(*due_conditions(now, edition_id, retry))
            .order_by(d.c.id).limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True, of=d)
        with self._lock, self._claims.begin():
            rows = self._claims.execute(query).all()
            live = [r for r in rows if r.live]
            gone = [r.id for r in rows if not r.live]
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
        d = table_of(Delivery)
        self._write(update(d).where(d.c.id == delivery_id).values(
            status=DeliveryStatus.DEFERRED.value, next_attempt_at=retry_at,
            attempts=d.c.attempts + 1, claimed_by=None, lease_until=None, last_error=error))

    def failed(self, delivery_id: int, error: str, *, bounce: NewEvent | None = None,
               policy: BouncePolicy | None = None) -> None:
        """Give up on a delivery; a bounce (a 5xx to RCPT TO) is recorded with it, in one
        transaction, and does to the subscriber what its kind does (store.bounces)."""
        d = table_of(Delivery)
        with self._lock, self._writes.begin():
            self._writes.execute(update(d).where(d.c.id == delivery_id).values(
                status=DeliveryStatus.FAILED.value, attempts=d.c.attempts + 1,
                claimed_by=None, lease_until=None, last_error=error))
            if bounce is not None and policy is not None:
                record_event(self._writes, bounce, policy, self.store.clock.now())

    def release(self, delivery_ids: Sequence[int], *, error: str | None = None) -> None:
        """Hand claimed but unsent deliveries back (with the reason, when there is one)."""
        if not delivery_ids:
            return
        d = table_of(Delivery)
        values: dict[str, Any] = {"status": DeliveryStatus.PENDING.value, "claimed_by": None,
                                  "lease_until": None}
        if error is not None:
            values["last_error"] = error
        self._write(update(d).where(d.c.id.in_(list(delivery_ids)),
                                    d.c.claimed_by == self.owner).values(**values))


    def accepted(self, edition_id: int, variant: str) -> bool:
        d = table_of(Delivery)
        query = select(d.c.id).where(d.c.edition_id == edition_id, d.c.variant == variant,
                                     d.c.status == DeliveryStatus.SENT.value).limit(1)
        with self._lock, self._claims.begin():
            return self._claims.execute(query).first() is not None


def delivery_counts(session: Session, edition_id: int | None = None) -> dict[str, int]:
    """Deliveries per status (every status present, zero when none)."""
    d = table_of(Delivery)
    query = select(d.c.status, func.count()).group_by(d.c.status)
    if edition_id is not None:
        query = query.where(d.c.edition_id == edition_id)
    counts = {status.value: 0 for status in DeliveryStatus}
    counts.update({status: n for status, n in session.execute(query).all()})
    return counts


def delivery_totals(store: Store, edition_id: int | None = None) -> dict[str, int]:
    """delivery_counts in a session of its own."""
    with store.sessions() as session:
        return delivery_counts(session, edition_id)
