"""A person's data (GDPR): everything held about one subscriber, as a record to show or
hand over, and erasure that leaves only a keyed hash on the suppression list."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..config import Settings
from ..errors import InputError
from ..store import subscribers as stored
from ..store.bounces import event_rows
from ..store.db import Store
from ..store.privacy import deliveries_of, erase_person, scrub_free_space
from ..tokens import erased_key
from .subscribers import SubscriberBook, normalise_email

__all__ = ["compact", "erase", "person_record"]


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def person_record(store: Store, settings: Settings, email: str) -> dict[str, Any]:
    """Everything the store holds about the subscriber at email: profile, consent,
    suppression, deliveries and bounce events. InputError when there is no such
    subscriber."""
    address = normalise_email(email)
    book = SubscriberBook(store, settings)
    with store.sessions() as session:
        sub = stored.find_subscriber(session, address.lower())
        found = book.suppression(session, address)
        if sub is None and found is None:
            raise InputError(f"no subscriber {address!r} (see: digest subscribers list)")
        suppression = None if found is None else {
            "reason": found.reason.value, "source": found.source,
            "since": _when(found.created_at)}
        if sub is None:
            # Only the suppression list knows the address: that is all there is.
            return {"profile": None, "consent": None, "bounces": None,
                    "suppression": suppression, "deliveries": [], "bounce_events": []}
        deliveries = deliveries_of(session, sub.id)
        events = event_rows(session, subscriber_id=sub.id, limit=10_000)
        return {
            "profile": {"email": sub.email, "name": sub.name, "status": sub.status.value,
                        "topics": list(sub.topics), "timezone": sub.timezone,
                        "created_at": _when(sub.created_at),
                        "updated_at": _when(sub.updated_at)},
            "consent": {"source": sub.consent_source, "at": _when(sub.consent_at),
                        "client_address": sub.consent_ip,
                        "confirmed_at": _when(sub.confirmed_at)},
            "bounces": {"score": sub.bounce_score, "hard_bounces": sub.hard_bounces,
                        "last_bounce_at": _when(sub.last_bounce_at)},
            "suppression": suppression,
            "deliveries": [{"edition": row.number, "subject": row.subject,
                            "status": str(row.status), "attempts": row.attempts,
                            "sent_at": _when(row.sent_at), "error": row.last_error}
                           for row in deliveries],
            "bounce_events": [{"time": _when(row.occurred_at), "kind": str(row.kind),
                               "status": row.status, "reason": row.reason,
                               "source": row.source, "edition": row.edition_number}
                              for row in events],
        }


def erase(store: Store, settings: Settings, email: str) -> dict[str, int]:
    """Erase the person at email: see store.privacy.erase_person. Also for an address
    that is only on the suppression list (its entry becomes the hash). InputError when
    the store holds nothing about it."""
    address = normalise_email(email)
    key = erased_key(settings.signing_key, address)
    book = SubscriberBook(store, settings)
    with store.writes.begin() as session:
        sub = stored.find_subscriber(session, address.lower())
        found = book.suppression(session, address)
        if sub is None and found is None:
            raise InputError(f"no subscriber {email.strip()!r} (see: digest subscribers "
                             f"list)")
        counts = erase_person(session, address.lower(), key, sub, store.clock.now())
        counts["profile"] = int(sub is not None)
    counts["scrubbed"] = int(scrub_free_space(store))
    return counts


def compact(store: Store) -> bool:
    """Rewrite the SQLite file without free pages and empty its log (after an erasure
    that another reader kept from doing so); True when done."""
    return scrub_free_space(store, busy_ms=30_000)
