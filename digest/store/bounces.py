"""Bounce events and what each kind does to a subscriber (Mailman 3's bounce score).

One function, ``record_event``, used by everything that learns of a bounce: the sender
(a 5xx to RCPT TO, in the ledger's own transaction), the bounce mailbox, files of bounce
mail and the providers' webhooks.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
    SuppressionReason,
)
from .suppressions import suppress

__all__ = ["BouncePolicy", "NewEvent", "delivery_sent", "edition_exists", "event_rows",
           "forget_events", "record_event", "sent_with_ids"]

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
    complaint → unsubscribed and suppressed at once; auto-reply → nothing.

    The days the score counts are the days digest learned of the bounces (now, the
    caller's clock), never the dates the reports give themselves: a report's Date is
    the sender's word, and back-dated reports would each count a day of their own."""
    if not _insert(conn, event, now):
        return None
    s = table_of(Subscriber)
    row = conn.execute(select(s.c.email_key, s.c.status, s.c.bounce_score, s.c.last_bounce_at)
                       .where(s.c.id == event.subscriber_id)).first()
    if row is None or event.kind is BounceKind.AUTO_REPLY:
        return "nothing"
    mine = s.c.id == event.subscriber_id
    if event.kind is BounceKind.COMPLAINT:
        conn.execute(update(s).where(mine, s.c.status.in_(_MAILABLE)).values(
            status=SubscriberStatus.UNSUBSCRIBED.value, updated_at=now))
        suppress(conn, row.email_key, SuppressionReason.COMPLAINED, event.source, now)
        return "unsubscribed"
    if event.kind is BounceKind.HARD:
        conn.execute(update(s).where(mine).values(
            hard_bounces=s.c.hard_bounces + 1, last_bounce_at=now, updated_at=now))
        return _bounce(conn, row, mine, SuppressionReason.HARD_BOUNCED, event.source, now)
    score = _score(conn, event, row.bounce_score, row.last_bounce_at, policy, now)
    last = max(now, row.last_bounce_at) if row.last_bounce_at else now
    conn.execute(update(s).where(mine).values(bounce_score=score, last_bounce_at=last,
                                              updated_at=now))
    if score >= policy.score_threshold:
        return _bounce(conn, row, mine, SuppressionReason.BOUNCED, event.source, now)
    return f"score {score}/{policy.score_threshold}"


def _score(conn: Any, event: NewEvent, score: int, last: datetime | None,
           policy: BouncePolicy, now: datetime) -> int:
    """The score after a soft bounce recorded now: a point for a day on which no soft
    bounce was recorded before, a new count after score_reset_days without a bounce."""
    window = timedelta(days=policy.score_reset_days)
    e = table_of(BounceEvent)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    same_day = conn.execute(select(func.count()).select_from(e).where(
        e.c.subscriber_id == event.subscriber_id, e.c.kind == BounceKind.SOFT.value,
        e.c.recorded_at >= day, e.c.recorded_at < day + timedelta(days=1),
        e.c.fingerprint != event.fingerprint)).scalar_one()
    if same_day:
        return max(score, 1)
    if last is None or now - last > window:
        return 1
    return score + 1


def _bounce(conn: Any, row: Any, mine: Any, reason: SuppressionReason, source: str,
            now: datetime) -> str:
    s = table_of(Subscriber)
    conn.execute(update(s).where(mine, s.c.status.in_(_MAILABLE)).values(
        status=SubscriberStatus.BOUNCED.value, updated_at=now))
    suppress(conn, row.email_key, reason, source, now)
    return "bounced" if row.status in _MAILABLE else "suppressed"


# A delivery handed to (or tried on) the SMTP server: one a report may be about.
_TRIED = (DeliveryStatus.SENDING.value, DeliveryStatus.SENT.value,
          DeliveryStatus.DEFERRED.value, DeliveryStatus.FAILED.value)


def delivery_sent(session: Session, edition_id: int, subscriber_id: int) -> bool:
    """Whether this store sent (or tried to send) that edition to that subscriber."""
    d = table_of(Delivery)
    return session.execute(select(d.c.id).where(
        d.c.edition_id == edition_id, d.c.subscriber_id == subscriber_id,
        d.c.status.in_(_TRIED))).first() is not None


def sent_with_ids(session: Session, message_ids: Sequence[str]) -> set[int]:
    """The subscribers this store sent (or tried to send) a message with one of these
    Message-IDs (compared lower-cased, as a report may write them)."""
    if not message_ids:
        return set()
    d = table_of(Delivery)
    rows = session.execute(select(d.c.subscriber_id).where(
        func.lower(d.c.message_id).in_([m.lower() for m in message_ids]),
        d.c.status.in_(_TRIED))).all()
    return {row.subscriber_id for row in rows}


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
