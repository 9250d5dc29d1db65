"""The suppression list: addresses never to mail, whatever their subscriber row says."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, insert, select, update
from sqlalchemy.orm import Session

from .db import table_of
from .models import Suppression, SuppressionReason

__all__ = ["find_suppression", "list_suppressions", "not_suppressed", "suppress",
           "suppress_many", "suppressions_of", "unsuppress"]

# A stricter reason replaces a milder one (a complaint after an unsubscribe stays a
# complaint: only an operator lifts it); never the other way round.
_RANK = {SuppressionReason.UNSUBSCRIBED: 1, SuppressionReason.BOUNCED: 2,
         SuppressionReason.HARD_BOUNCED: 3, SuppressionReason.MANUAL: 3,
         SuppressionReason.COMPLAINED: 4, SuppressionReason.ERASED: 5}


def not_suppressed(email_key: Any) -> ColumnElement[bool]:
    """A condition: no suppression for this email_key column (the one rule every query
    that picks recipients adds)."""
    s = table_of(Suppression)
    return ~exists().where(s.c.email_key == email_key)


def find_suppression(session: Session, keys: Sequence[str]) -> Suppression | None:
    """The suppression of any of keys (an address lower-cased, its erased hash), or None."""
    return session.scalar(select(Suppression).where(Suppression.email_key.in_(list(keys)))
                          .order_by(Suppression.id).limit(1))


def suppressions_of(session: Session, keys: Collection[str]) -> dict[str, Suppression]:
    """The suppressions of any of keys, by email_key, in one query."""
    if not keys:
        return {}
    return {s.email_key: s for s in session.scalars(
        select(Suppression).where(Suppression.email_key.in_(list(keys))))}


def suppress_many(session: Session, reasons: Mapping[str, SuppressionReason], source: str,
                  now: datetime) -> None:
    """`suppress` for many email_keys at once (each with its reason), in a few statements
    whatever their number: one lookup, one insert, one update per reason."""
    if not reasons:
        return
    s = table_of(Suppression)
    current = {row.email_key: row for row in session.execute(
        select(s.c.id, s.c.email_key, s.c.reason).where(s.c.email_key.in_(list(reasons))))}
    new = [{"email_key": key, "reason": reason.value, "source": source[:500],
            "created_at": now} for key, reason in reasons.items() if key not in current]
    if new:
        session.execute(insert(s), new)
    stricter: dict[SuppressionReason, list[int]] = {}
    for key, row in current.items():
        if _RANK[reasons[key]] > _RANK[SuppressionReason(row.reason)]:
            stricter.setdefault(reasons[key], []).append(row.id)
    for reason, ids in stricter.items():
        session.execute(update(s).where(s.c.id.in_(ids)).values(
            reason=reason.value, source=source[:500], created_at=now))


def suppress(conn: Any, email_key: str, reason: SuppressionReason, source: str,
             now: datetime) -> bool:
    """Put email_key on the list (or make its reason stricter); conn is a Session or a
    Connection, in the caller's transaction. True when something changed."""
    s = table_of(Suppression)
    current = conn.execute(select(s.c.id, s.c.reason).where(s.c.email_key == email_key)
                           ).first()
    if current is None:
        conn.execute(insert(s).values(email_key=email_key, reason=reason.value,
                                      source=source[:500], created_at=now))
        return True
    if _RANK[reason] > _RANK[SuppressionReason(current.reason)]:
        conn.execute(update(s).where(s.c.id == current.id).values(
            reason=reason.value, source=source[:500], created_at=now))
        return True
    return False


def unsuppress(session: Session, keys: Sequence[str],
               only: Sequence[SuppressionReason] | None = None) -> list[Suppression]:
    """Take keys off the list (only those of the given reasons, when given); returns what
    was removed."""
    query = select(Suppression).where(Suppression.email_key.in_(list(keys)))
    if only is not None:
        query = query.where(Suppression.reason.in_(list(only)))
    found = list(session.scalars(query))
    if found:
        session.execute(delete(Suppression).where(Suppression.id.in_([f.id for f in found])))
    return found


def list_suppressions(session: Session,
                      reason: SuppressionReason | None = None) -> list[Suppression]:
    query = select(Suppression).order_by(Suppression.id)
    if reason is not None:
        query = query.where(Suppression.reason == reason)
    return list(session.scalars(query))
