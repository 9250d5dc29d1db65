"""Bounce events and what each kind does to a subscriber (Mailman 3's bounce score).

One function, ``record_event``, used by everything that learns of a bounce: the sender
(a 5xx to RCPT TO, in the ledger's own transaction), the bounce mailbox, files of bounce
mail and the providers' webhooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import table_of
from .models import (
    BounceEvent,
    BounceKind,
    Edition,
    Subscriber,
    SubscriberStatus,
    SuppressionReason,
)
from .suppressions import suppress

__all__ = ["BouncePolicy", "NewEvent", "edition_exists", "event_rows", "forget_events",
           "record_event"]

_MAILABLE = (SubscriberStatus.ACTIVE.value, SubscriberStatus.PENDING.value)


@dataclass(frozen=True)
class BouncePolicy:
    score_threshold: int
    score_reset_days: int


@dataclass(frozen=True)
class NewEvent:
    subscriber_id: int
    recipient: str
    kind: BounceKind
    status: str | None
    reason: str
    source: str
    occurred_at: datetime
    fingerprint: str
    edition_id: int | None = None


def _insert(conn: Any, event: NewEvent, now: datetime) -> bool:
    """Insert the event unless its fingerprint is known; True when it was new."""
    e = table_of(BounceEvent)
    dialect = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    values = {"subscriber_id": event.subscriber_id, "edition_id": event.edition_id,
              "recipient": event.recipient[:320], "kind": event.kind.value,
              "status": event.status, "reason": event.reason[:500],
              "source": event.source[:500], "occurred_at": event.occurred_at,
              "recorded_at": now, "fingerprint": event.fingerprint}
    if dialect in ("sqlite", "postgresql"):
        module: Any = sqlite if dialect == "sqlite" else postgresql
        statement = module.insert(e).values(**values).on_conflict_do_nothing(
            index_elements=["fingerprint"]).returning(e.c.id)
        # The row it returns, not rowcount: drivers disagree on a skipped row's count.
        return conn.execute(statement).first() is not None
    if conn.execute(select(e.c.id).where(e.c.fingerprint == event.fingerprint)).first():
        return False
    conn.execute(e.insert().values(**values))
    return True


def record_event(conn: Any, event: NewEvent, policy: BouncePolicy, now: datetime) -> str | None:
    """Store the event and do what its kind does; conn is a Session or a Connection, in
    the caller's transaction. Returns what happened to the subscriber ("bounced",
    "unsubscribed", "score 2/5", "nothing"), or None when the event was known already.

    hard → bounced and suppressed at once; soft → the score: at most one point a day,
    forgotten after score_reset_days without a bounce, bounced at score_threshold;
    complaint → unsubscribed and suppressed at once; auto-reply → nothing."""
    if not _insert(conn, event, now):
        return None
    s = table_of(Subscriber)
    row = conn.execute(select(s.c.email_key, s.c.status, s.c.bounce_score, s.c.last_bounce_at)
                       .where(s.c.id == event.subscriber_id)).first()
    if row is None or event.kind is BounceKind.AUTO_REPLY:
        return "nothing"
    when = event.occurred_at
    mine = s.c.id == event.subscriber_id
    if event.kind is BounceKind.COMPLAINT:
        conn.execute(update(s).where(mine, s.c.status.in_(_MAILABLE)).values(
            status=SubscriberStatus.UNSUBSCRIBED.value, updated_at=now))
        suppress(conn, row.email_key, SuppressionReason.COMPLAINED, event.source, now)
        return "unsubscribed"
    if event.kind is BounceKind.HARD:
        conn.execute(update(s).where(mine).values(
            hard_bounces=s.c.hard_bounces + 1, last_bounce_at=when, updated_at=now))
        return _bounce(conn, row, mine, SuppressionReason.HARD_BOUNCED, event.source, now)
    score = _score(conn, event, row.bounce_score, row.last_bounce_at, policy)
    last = max(when, row.last_bounce_at) if row.last_bounce_at else when
    conn.execute(update(s).where(mine).values(bounce_score=score, last_bounce_at=last,
                                              updated_at=now))
    if score >= policy.score_threshold:
        return _bounce(conn, row, mine, SuppressionReason.BOUNCED, event.source, now)
    return f"score {score}/{policy.score_threshold}"


def _score(conn: Any, event: NewEvent, score: int, last: datetime | None,
           policy: BouncePolicy) -> int:
    """The score after a soft bounce: a point for a day without one before (whatever
    order the reports are read in), a new count after score_reset_days without a bounce;
    a report older than the current count's window adds nothing."""
    when, window = event.occurred_at, timedelta(days=policy.score_reset_days)
    if last is not None and when < last - window:
        return score
    e = table_of(BounceEvent)
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    same_day = conn.execute(select(func.count()).select_from(e).where(
        e.c.subscriber_id == event.subscriber_id, e.c.kind == BounceKind.SOFT.value,
        e.c.occurred_at >= day, e.c.occurred_at < day + timedelta(days=1),
        e.c.fingerprint != event.fingerprint)).scalar_one()
    if same_day:
        return max(score, 1)
    if last is None or when - last > window:
        return 1
    return score + 1


def _bounce(conn: Any, row: Any, mine: Any, reason: SuppressionReason, source: str,
            now: datetime) -> str:
    s = table_of(Subscriber)
    conn.execute(update(s).where(mine, s.c.status.in_(_MAILABLE)).values(
        status=SubscriberStatus.BOUNCED.value, updated_at=now))
    suppress(conn, row.email_key, reason, source, now)
    return "bounced" if row.status in _MAILABLE else "suppressed"


def edition_exists(session: Session, edition_id: int) -> bool:
    return session.get(Edition, edition_id) is not None


def event_rows(session: Session, *, subscriber_id: int | None = None,
               since: datetime | None = None, limit: int = 200) -> list[Any]:
    """The events recorded last (since a time, when given), newest first, with the
    edition's number: (event, number)."""
    e, ed = table_of(BounceEvent), table_of(Edition)
    query = (select(e, ed.c.number.label("edition_number"))
             .select_from(e.outerjoin(ed, ed.c.id == e.c.edition_id))
             .order_by(e.c.recorded_at.desc(), e.c.id.desc()).limit(limit))
    conditions = []
    if subscriber_id is not None:
        conditions.append(e.c.subscriber_id == subscriber_id)
    if since is not None:
        conditions.append(e.c.recorded_at >= since)
    if conditions:
        query = query.where(and_(*conditions))
    return list(session.execute(query).all())


def forget_events(session: Session, subscriber_id: int) -> int:
    """Delete every event about one subscriber (erasure); returns how many."""
    e = table_of(BounceEvent)
    count = session.scalar(select(func.count()).select_from(e)
                           .where(e.c.subscriber_id == subscriber_id)) or 0
    session.execute(delete(e).where(e.c.subscriber_id == subscriber_id))
    return int(count)
