"""The suppression list as operators see it: list, add, remove, import, export."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..config import Settings
from ..errors import InputError
from ..store import suppressions as stored
from ..store.db import Store
from ..store.models import Suppression, SuppressionReason, utcnow
from .subscribers import SubscriberBook, normalise_email

__all__ = ["SUPPRESSION_COLUMNS", "SuppressionBook", "SuppressionImport"]

SUPPRESSION_COLUMNS = ("email", "reason", "source", "created_at")


@dataclass
class SuppressionImport:
    added: int = 0
    unchanged: int = 0
    rejected: list[str] = field(default_factory=list)


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
            return stored.suppress(session, address.lower(), reason, source, utcnow())

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
        """Rows of email[,reason[,source]] (what export writes, or a provider's list of
        addresses); every good row in one transaction, every bad one reported."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        report = SuppressionImport()
        rows = list(csv.reader(io.StringIO(text)))
        header = [c.strip().lower() for c in rows[0]] if rows else []
        start = 1 if header and header[0] == "email" else 0
        with self.store.writes.begin() as session:
            for line, row in enumerate(rows[start:], start + 1):
                if not row or not row[0].strip():
                    continue
                if row[0].strip().startswith("hmac:"):
                    # An erased address from an export (matches only under the same key).
                    changed = stored.suppress(session, row[0].strip()[:320],
                                              SuppressionReason.ERASED,
                                              source or f"import {path.name}", utcnow())
                    report.added += changed
                    report.unchanged += not changed
                    continue
                try:
                    address = normalise_email(row[0])
                    reason = SuppressionReason(row[1].strip() if len(row) > 1 and
                                                row[1].strip() else "manual")
                except InputError as exc:
                    report.rejected.append(f"{path}:{line}: {exc}")
                    continue
                except ValueError:
                    report.rejected.append(
                        f"{path}:{line}: unknown reason {row[1].strip()!r}; use one of "
                        f"{', '.join(r.value for r in SuppressionReason)}")
                    continue
                what = (row[2].strip() if len(row) > 2 and row[2].strip() else
                        source or f"import {path.name}")
                if reason is SuppressionReason.ERASED:
                    reason = SuppressionReason.MANUAL
                changed = stored.suppress(session, address.lower(), reason, what, utcnow())
                report.added += changed
                report.unchanged += not changed
        return report

    def export_csv(self, target: TextIO) -> int:
        """Every entry; erased ones as their hash (which only this store's key can match)."""
        entries = self.entries()
        writer = csv.writer(target, lineterminator="\n")
        writer.writerow(SUPPRESSION_COLUMNS)
        for e in entries:
            writer.writerow([e.email_key, e.reason.value, e.source, e.created_at.isoformat()])
        return len(entries)
