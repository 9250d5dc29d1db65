"""Reports held for review: mail to the bounce address that nothing tied to mail this
store sent. Holding one changes nobody; an editor applies or dismisses it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import table_of
from .models import HeldReport, HeldStatus

__all__ = ["decide", "held_report", "held_rows", "hold"]


def hold(session: Session, *, fingerprint: str, source: str, summary: str,
         held_because: str, claims: str, unsubscribe: str | None, now: datetime) -> bool:
    """Keep a report for review unless it is kept already; True when it was new."""
    h = table_of(HeldReport)
    values = {"fingerprint": fingerprint, "source": source[:500], "summary": summary[:500],
              "held_because": held_because[:500], "claims": claims,
              "unsubscribe": unsubscribe[:320] if unsubscribe else None,
              "status": HeldStatus.HELD.value, "received_at": now, "decided_at": None,
              "outcome": ""}
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        module: Any = sqlite if dialect == "sqlite" else postgresql
        statement = module.insert(h).values(**values).on_conflict_do_nothing(
            index_elements=["fingerprint"]).returning(h.c.id)
        return session.execute(statement).first() is not None
    if session.execute(select(h.c.id).where(h.c.fingerprint == fingerprint)).first():
        return False
    session.execute(h.insert().values(**values))
    return True


def held_rows(session: Session, *, status: HeldStatus | None = HeldStatus.HELD,
              limit: int = 200) -> list[HeldReport]:
    """Held reports, newest first (only those with status, unless status is None)."""
    query = select(HeldReport).order_by(HeldReport.received_at.desc(),
                                        HeldReport.id.desc()).limit(limit)
    if status is not None:
        query = query.where(HeldReport.status == status)
    return list(session.scalars(query))


def held_report(session: Session, report_id: int) -> HeldReport | None:
    """One held report, its row locked until the caller's transaction ends (a server
    database; SQLite's writer holds the whole store)."""
    return session.get(HeldReport, report_id, with_for_update=True)


def decide(report: HeldReport, status: HeldStatus, outcome: str, now: datetime) -> None:
    report.status = status
    report.outcome = outcome[:500]
    report.decided_at = now
