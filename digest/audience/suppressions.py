"""The suppression list as operators see it: list, add, remove, import, export."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from ..config import Settings
from ..errors import InputError
from ..store import suppressions as stored
from ..store.db import Session, Store
from ..store.models import Suppression, SuppressionReason
from .csvfiles import map_header, read_csv_text
from .subscribers import SubscriberBook, csv_errors, normalise_email

__all__ = ["SUPPRESSION_COLUMNS", "SuppressionBook", "SuppressionImport"]

SUPPRESSION_COLUMNS = ("email", "reason", "source", "created_at")


@dataclass
class SuppressionImport:
    added: int = 0
    unchanged: int = 0
    rejected: list[str] = field(default_factory=list)
    hashes: int = 0          # erased addresses added as their keyed hash
    notes: list[str] = field(default_factory=list)


# What providers and other tools call a reason, by a word it contains.
_PROVIDER_REASONS = (("complain", SuppressionReason.COMPLAINED),
                     ("spam", SuppressionReason.COMPLAINED),
                     ("abuse", SuppressionReason.COMPLAINED),
                     ("unsub", SuppressionReason.UNSUBSCRIBED),
                     ("bounce", SuppressionReason.HARD_BOUNCED),
                     ("invalid", SuppressionReason.HARD_BOUNCED),
                     ("erase", SuppressionReason.MANUAL))
_HEADERS = {"email": ("email", "email address", "e-mail", "address", "recipient"),
            "reason": ("reason", "type", "status", "category"),
            "source": ("source",),
            "created_at": ("created_at", "created", "date", "since")}


def _reason(text: str) -> SuppressionReason:
    """A reason as export writes it (exactly), or as a provider words it ("Bounced",
    "Spam Report", …: a provider's bounce is a hard one); manual otherwise. An erased
    address is only ever a hash: a plain address marked erased is manual."""
    value = text.strip()
    try:
        reason = SuppressionReason(value)
    except ValueError:
        reason = next((r for word, r in _PROVIDER_REASONS if word in value.lower()),
                      SuppressionReason.MANUAL)
    return SuppressionReason.MANUAL if reason is SuppressionReason.ERASED else reason


def _columns(first: list[str]) -> tuple[dict[str, int], int]:
    """Where each field is, from a header row (then the data starts at row 2), or
    email, reason, source, created_at in that order when the first row is data."""
    if first and "@" not in first[0] and not first[0].strip().startswith("hmac:"):
        found = map_header(first, _HEADERS)
        if "email" not in found:
            raise InputError(f"the header row ({', '.join(first)}) names no e-mail column; "
                             f"name it email (columns: {', '.join(SUPPRESSION_COLUMNS)})")
        return found, 1
    return {name: i for i, name in enumerate(SUPPRESSION_COLUMNS)}, 0


class SuppressionBook:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.book = SubscriberBook(store, settings)

    def entries(self, reason: SuppressionReason | None = None) -> list[Suppression]:
        with self.store.sessions() as session:
            return stored.list_suppressions(session, reason)

    def add(self, email: str, reason: SuppressionReason = SuppressionReason.MANUAL,
            source: str = "cli") -> bool:
        """Put an address on the list (an erased address is only a hash: use erase)."""
        if reason is SuppressionReason.ERASED:
            raise InputError("an erased address is kept only as a hash: use digest "
                             "subscribers erase EMAIL")
        address = normalise_email(email)
        with self.store.writes.begin() as session:
            return self._suppress(session, address.lower(), reason, source,
                                  self.store.clock.now())

    def _suppress(self, session: Session, key: str, reason: SuppressionReason, source: str,
                  when: datetime) -> bool:
        """Suppress key, unless it is there as an erased person's hash: an erased address
        never comes back in clear text."""
        found = None if key.startswith("hmac:") else self.book.suppression(session, key)
        if found is not None and found.email_key != key:
            return False
        return stored.suppress(session, key, reason, source, when)

    def remove(self, email: str) -> Suppression:
        """Lift the suppression of an address (by the address or its erased hash); the
        subscriber, if any, stays as they are until they sign up or are activated."""
        address = normalise_email(email)
        with self.store.writes.begin() as session:
            found = self.book.suppression(session, address)
            if found is None:
                raise InputError(f"{address} is not on the suppression list (see: digest "
                                 f"suppressions list)")
            stored.unsuppress(session, [found.email_key])
            return found

    def import_csv(self, path: Path, source: str | None = None) -> SuppressionImport:
        """The addresses of a CSV file: what `export` writes (email, reason, source,
        created_at), a provider's suppression list (a header naming an e-mail column, and
        maybe a reason or type column: "bounce", "spam report", "unsubscribe" …), or bare
        addresses one per line. Every good row in one transaction, every bad one
        reported."""
        read = read_csv_text(path)
        reader = csv.reader(io.StringIO(read.text, newline=""))
        with csv_errors(path, reader):
            rows = list(reader)
        columns, start = _columns(rows[0] if rows else [])
        report = SuppressionImport()
        if read.note:
            report.notes.append(read.note)
        with self.store.writes.begin() as session:
            for line, row in enumerate(rows[start:], start + 1):
                cells = {name: row[i].strip() for name, i in columns.items() if i < len(row)}
                if not cells.get("email"):
                    continue
                try:
                    key, reason, when = self._read_row(cells, self.store.clock.now())
                except InputError as exc:
                    report.rejected.append(f"{path}:{line}: {exc}")
                    continue
                what = cells.get("source") or source or f"import {path.name}"
                changed = self._suppress(session, key, reason, what, when)
                report.added += changed
                report.unchanged += not changed
                report.hashes += key.startswith("hmac:") and changed
        return report

    @staticmethod
    def _read_row(cells: dict[str, str], now: datetime
                  ) -> tuple[str, SuppressionReason, datetime]:
        """(email_key, reason, since: created_at, else now) of one row; InputError naming
        what is wrong."""
        when = now
        if cells.get("created_at"):
            try:
                when = datetime.fromisoformat(cells["created_at"])
            except ValueError:
                raise InputError(f"created_at {cells['created_at']!r} is not an ISO date "
                                 f"(2026-11-27T08:00:00+00:00)") from None
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
        if cells["email"].startswith("hmac:"):
            # An erased address from an export: it matches only under the same secret key.
            return cells["email"][:320], SuppressionReason.ERASED, when
        address = normalise_email(cells["email"])
        return address.lower(), _reason(cells.get("reason", "")), when

    def export_csv(self, target: TextIO) -> int:
        """Every entry; erased ones as their hash (which only this store's key can match)."""
        entries = self.entries()
        writer = csv.writer(target, lineterminator="\n")
        writer.writerow(SUPPRESSION_COLUMNS)
        for e in entries:
            writer.writerow([e.email_key, e.reason.value, e.source, e.created_at.isoformat()])
        return len(entries)
