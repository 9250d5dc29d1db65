"""Queries of the outbox (transactional mail waiting to be sent): queue a row in the
caller's transaction, lease the next due row to one sender, reschedule or delete it.

A lease is taken by an UPDATE that re-checks it, so any number of processes may drain the
same store without two of them holding one row."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from .db import Store, rowcount, table_of
from .models import OutboxMail, Suppression, SuppressionReason

__all__ = ["SELF_LIFTABLE", "add_mail", "add_mail_if", "claim_due_mail", "delete_mail",
           "drop_blocked_mail", "reschedule_mail", "unsent_mail"]


# Suppressions the person may lift by signing up again and confirming: a confirmation
# queued after one of these goes out (it is how a forged complaint or bounce is undone).
SELF_LIFTABLE = (SuppressionReason.UNSUBSCRIBED, SuppressionReason.COMPLAINED,
                 SuppressionReason.BOUNCED, SuppressionReason.HARD_BOUNCED)


def _blocked() -> ColumnElement[bool]:
    """A queued mail whose recipient is on the suppression list for a reason that bars
    it: one an operator set (or an erasure), at any time; a complaint or a bounce recorded
    since the mail was queued. Their own unsubscribe never does: they may sign up again,
    and so may someone complained about or bounced before they signed up again."""
    s = table_of(Suppression)
    since = [r.value for r in SELF_LIFTABLE if r is not SuppressionReason.UNSUBSCRIBED]
    return exists().where(
        s.c.email_key == func.lower(OutboxMail.recipient),
        s.c.reason != SuppressionReason.UNSUBSCRIBED.value,
        or_(s.c.reason.not_in(since), s.c.created_at >= OutboxMail.created_at))


def drop_blocked_mail(store: Store) -> int:
    """Delete the queued mails to addresses suppressed since they were queued."""
    with store.writes.begin() as session:
        return rowcount(session.execute(delete(OutboxMail).where(_blocked())
                                        .execution_options(synchronize_session=False)))


def add_mail(session: Session, sender: str, recipient: str, message: bytes, now: datetime,
             subscriber_id: int | None = None) -> None:
    """Add a mail due now, in the caller's transaction (it exists once that commits).
    Its created_at is now too: a suppression recorded since then stops it (_blocked)."""
    session.add(OutboxMail(subscriber_id=subscriber_id, sender=sender, recipient=recipient,
                           message=message, attempts=0, next_attempt_at=now, created_at=now))


def add_mail_if(session: Session, allowed: bool, sender: str, recipient: str, message: bytes,
                now: datetime, subscriber_id: int | None = None) -> None:
    """add_mail when allowed, by one INSERT … SELECT … WHERE allowed issued either way: the
    same statement whether the mail is queued or not, so a sign-up takes as long for an
    address that gets no mail as for one that does."""
    table = table_of(OutboxMail)
    values = {"subscriber_id": subscriber_id, "sender": sender, "recipient": recipient,
              "message": message, "attempts": 0, "next_attempt_at": now,
              "created_at": now}
    columns = [table.c[name] for name in values]
    row = select(*[literal(value, type_=table.c[name].type) for name, value in values.items()]
                 ).where(literal(allowed))
    session.execute(insert(table).from_select(columns, row))


def unsent_mail(session: Session) -> int:
    """How many mails the outbox holds (queued or being retried)."""
    return int(session.scalar(select(func.count()).select_from(OutboxMail)) or 0)


def claim_due_mail(store: Store, now: datetime, skip: Collection[int],
                   lease: timedelta) -> OutboxMail | None:
    """The oldest row due at `now`, not in `skip` and not leased to another sender,
    leased to this caller until now + lease; None when no such row is left."""
    unleased = or_(OutboxMail.lease_until.is_(None), OutboxMail.lease_until < now)
    while True:
        with store.sessions() as session:
            row_id = session.scalar(
                select(OutboxMail.id)
                .where(OutboxMail.next_attempt_at <= now, OutboxMail.id.not_in(skip),
                       unleased, ~_blocked())
                .order_by(OutboxMail.id).limit(1))
        if row_id is None:
            return None
        with store.writes.begin() as session:
            # Only one process wins the row: the update re-checks the lease atomically.
            won = rowcount(session.execute(
                update(OutboxMail)
                .where(OutboxMail.id == row_id, unleased)
                .values(lease_until=now + lease)
                .execution_options(synchronize_session=False))) == 1
            if won:
                return session.get(OutboxMail, row_id)


def reschedule_mail(store: Store, mail_id: int, attempts: int, next_attempt_at: datetime,
                    error: str) -> None:
    """Record a failed attempt: the row's lease ends and it is due again at
    next_attempt_at (error is kept, cut to 1000 characters)."""
    with store.writes.begin() as session:
        session.execute(update(OutboxMail).where(OutboxMail.id == mail_id).values(
            attempts=attempts, next_attempt_at=next_attempt_at, lease_until=None,
            last_error=error[:1000]))


def delete_mail(store: Store, mail_id: int) -> None:
    """Remove the row (sent, or given up on)."""
    with store.writes.begin() as session:
        session.execute(delete(OutboxMail).where(OutboxMail.id == mail_id))
