"""What the store holds about one person, and erasing it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from .bounces import forget_events
from .db import Store, rowcount, table_of
from .models import (
    Delivery,
    Edition,
    HeldReport,
    OutboxMail,
    RateLimitHit,
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
)
from .suppressions import suppress

__all__ = ["deliveries_of", "erase_person", "scrub_free_space"]


def deliveries_of(session: Session, subscriber_id: int) -> list[Any]:
    """(edition number, subject, status, attempts, sent_at, last_error) per delivery."""
    d, e = table_of(Delivery), table_of(Edition)
    return list(session.execute(
        select(e.c.number, e.c.subject, d.c.status, d.c.attempts, d.c.sent_at,
               d.c.last_error)
        .select_from(d.join(e, e.c.id == d.c.edition_id))
        .where(d.c.subscriber_id == subscriber_id).order_by(e.c.number)).all())


def erase_person(session: Session, address: str, hashed_key: str,
                 sub: Subscriber | None, now: datetime) -> dict[str, int]:
    """Erase everything personal about address in the caller's transaction: the
    subscriber row keeps only its id (the ledger's rows refer to it), their deliveries
    lose their error texts (a server's reply can quote the address), their bounce events,
    queued mails and the held reports naming them go, and the suppression list keeps only
    hashed_key. Returns counts."""
    counts = {"events": 0, "mails": 0, "deliveries": 0, "held": 0}
    o, d = table_of(OutboxMail), table_of(Delivery)
    counts["mails"] = rowcount(session.execute(delete(o).where(o.c.recipient == address)))
    # Counters keyed by an address end with it ("admin-try:<network>:<address>",
    # "admin-account:<address>").
    r = table_of(RateLimitHit)
    session.execute(delete(r).where(r.c.key.endswith(":" + address.lower(),
                                                      autoescape=True)))
    session.execute(delete(table_of(Suppression)).where(
        table_of(Suppression).c.email_key == address.lower()))
    # Reports held for review that name the address (as a recipient or as the sender of
    # an unsubscribe mail) go whole: nothing else in them is worth keeping.
    h, key = table_of(HeldReport), address.lower()
    counts["held"] = rowcount(session.execute(delete(h).where(or_(
        func.lower(h.c.claims).contains(key, autoescape=True),
        func.lower(h.c.summary).contains(key, autoescape=True),
        func.lower(h.c.unsubscribe) == key))))
    suppress(session, hashed_key, SuppressionReason.ERASED, "erased on request", now)
    if sub is None:
        return counts
    counts["events"] = forget_events(session, sub.id)
    counts["deliveries"] = rowcount(session.execute(
        update(d).where(d.c.subscriber_id == sub.id).values(last_error=None)))
    session.execute(delete(o).where(o.c.subscriber_id == sub.id))
    sub.status = SubscriberStatus.REMOVED
    sub.email, sub.email_key = f"erased-{sub.id}@invalid", f"erased:{sub.id}"
    sub.name, sub.topics, sub.timezone = "", [], None
    sub.consent_source = sub.consent_at = sub.consent_ip = sub.confirmed_at = None
    sub.last_bounce_at, sub.bounce_score, sub.hard_bounces = None, 0, 0
    sub.token_version += 1
    return counts


def scrub_free_space(store: Store, busy_ms: int = 5000) -> bool:
    """After an erasure: make sure no copy of the erased data lingers in the database
    file's free pages or its write-ahead log (SQLite; a server database reuses its own
    space and is the operator's to vacuum). False when another connection's read kept
    that from finishing (`digest db compact` later does it)."""
    if store.engine.dialect.name != "sqlite":
        return True
    raw = store.engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        driver.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        try:
            # VACUUM rewrites the file without the freed pages; the checkpoints move
            # everything into it and empty the WAL.
            busy = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            driver.execute("VACUUM")
            busy += driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except Exception as exc:       # sqlite3.OperationalError: database is locked
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            return False
        return bool(busy == 0)
    finally:
        raw.close()
