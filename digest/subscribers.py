"""Subscriber management: add, change, import and export, with every input checked."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .config import Settings
from .errors import InputError
from .models import Article, Delivery, Subscriber, SubscriberStatus
from .store import Store
from .topics import TopicClassifier

__all__ = [
    "CsvImportReport",
    "SubscriberBook",
    "normalise_email",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def normalise_email(address: str) -> str:
    """The address as we store it (domain lower-cased, IDN in ASCII); InputError if invalid."""
    try:
        info = validate_email(address.strip(), check_deliverability=False,
                              allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InputError(f"{address.strip()!r} is not a valid email address: {exc}") from None
    return info.ascii_email or info.normalized


def clean_name(name: str | None) -> str:
    """A display name that can go into a header: no control characters (CR/LF), trimmed."""
    return " ".join(_CONTROL.sub(" ", name or "").split())[:200]


@dataclass
class _Row:
    """One address of a CSV file, its rows merged."""

    email: str
    name: str = ""
    topics: list[str] = field(default_factory=list)
    timezone: str | None = None


@dataclass
class CsvImportReport:
    added: int = 0
    updated: int = 0
    rejected: list[str] = field(default_factory=list)   # "file:line: reason"


class SubscriberBook:
    """The subscriber list of one store, checked against the config's topics."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.classifier = TopicClassifier(settings.topics, settings.digest.catch_all_topic)

    # -- checks --

    def known_topics(self, session: Session) -> dict[str, str]:
        names = {t.casefold(): t for t in self.settings.topic_names}
        for topic in session.scalars(select(Article.topic).distinct()):
            names.setdefault(topic.casefold(), topic)
        return names

    def check_topics(self, session: Session, topics: Iterable[str]) -> list[str]:
        known = self.known_topics(session)
        out: list[str] = []
        for topic in topics:
            topic = topic.strip()
            if not topic:
                continue
            if topic.casefold() not in known:
                raise InputError(f"unknown topic {topic!r}; choose from "
                                 f"{', '.join(known.values())}")
            if known[topic.casefold()] not in out:
                out.append(known[topic.casefold()])
        return out

    @staticmethod
    def check_timezone(timezone: str | None) -> str | None:
        if not timezone or not timezone.strip():
            return None
        try:
            ZoneInfo(timezone.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f"unknown timezone {timezone.strip()!r}; use an IANA name such "
                             f"as Europe/Berlin or America/New_York") from None
        return timezone.strip()

    @staticmethod
    def _find(session: Session, email: str) -> Subscriber | None:
        return session.scalar(select(Subscriber).where(Subscriber.email_key == email.lower()))

    def _get(self, session: Session, email: str) -> Subscriber:
        sub = self._find(session, normalise_email(email))
        if sub is None:
            raise InputError(f"no subscriber {email.strip()!r} (see: digest subscribers list)")
        return sub

    # -- commands --

    def add(self, email: str, name: str | None = None, topics: Sequence[str] = (),
            timezone: str | None = None,
            status: SubscriberStatus = SubscriberStatus.ACTIVE) -> Subscriber:
        address = normalise_email(email)
        with self.store.writes.begin() as session:
            if self._find(session, address):
                raise InputError(f"{address} is already subscribed (change it with: digest "
                                 f"subscribers set-topics, or remove it first)")
            sub = Subscriber(email=address, email_key=address.lower(), name=clean_name(name),
                             topics=self.check_topics(session, topics),
                             timezone=self.check_timezone(timezone), status=status)
            session.add(sub)
        return sub

    def remove(self, email: str) -> None:
        with self.store.writes.begin() as session:
            sub = self._get(session, email)
            # Keep the ledger's history consistent: a subscriber with deliveries is
            # anonymised and unsubscribed instead of deleted.
            if session.scalar(select(func.count()).where(Delivery.subscriber_id == sub.id)):
                sub.status = SubscriberStatus.UNSUBSCRIBED
                sub.email = sub.email_key = f"removed-{sub.id}@invalid"
                sub.name = ""
                sub.token_version += 1
            else:
                session.delete(sub)

    def set_status(self, email: str, status: SubscriberStatus) -> Subscriber:
        with self.store.writes.begin() as session:
            sub = self._get(session, email)
            sub.status = status
            if status is SubscriberStatus.ACTIVE:
                sub.hard_bounces = 0
            return sub

    def set_topics(self, email: str, topics: Sequence[str]) -> Subscriber:
        with self.store.writes.begin() as session:
            sub = self._get(session, email)
            sub.topics = self.check_topics(session, topics)
            return sub

    def subscribers(self, status: SubscriberStatus | None = None) -> list[Subscriber]:
        with self.store.sessions() as session:
            query = select(Subscriber).order_by(Subscriber.id)
            if status:
                query = query.where(Subscriber.status == status)
            return list(session.scalars(query))

    # -- CSV --

    def import_csv(self, path: Path) -> CsvImportReport:
        """Check every row, then store the good ones in one transaction. Rows for an address
        seen earlier in the file are merged into it; existing subscribers are updated."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 "
                             f"CSV") from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if "email" not in header:
            raise InputError(f"{path}:1: the header row needs an 'email' column (columns: "
                             f"email, name, topics, timezone)")
        reader.fieldnames = header
        report = CsvImportReport()
        rows: dict[str, _Row] = {}
        with self.store.writes.begin() as session:
            for row in reader:
                line = reader.line_num
                try:
                    address = normalise_email(row.get("email") or "")
                    topics = self.check_topics(session, re.split(r"[;,|]", row.get("topics")
                                                                  or ""))
                    timezone = self.check_timezone(row.get("timezone"))
                except InputError as exc:
                    report.rejected.append(f"{path}:{line}: {exc}")
                    continue
                merged = rows.setdefault(address.lower(), _Row(address))
                merged.name = clean_name(row.get("name")) or merged.name
                merged.topics = list(dict.fromkeys([*merged.topics, *topics]))
                merged.timezone = timezone or merged.timezone
            for key, values in rows.items():
                sub = self._find(session, key)
                if sub is None:
                    session.add(Subscriber(email=values.email, email_key=key,
                                           name=values.name, topics=values.topics,
                                           timezone=values.timezone,
                                           status=SubscriberStatus.ACTIVE))
                    report.added += 1
                else:
                    sub.name = values.name or sub.name
                    sub.topics = values.topics or sub.topics
                    sub.timezone = values.timezone or sub.timezone
                    report.updated += 1
        return report

    def export_csv(self, path: Path) -> int:
        subs = self.subscribers()
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["email", "name", "topics", "timezone", "status"])
            for s in subs:
                writer.writerow([s.email, s.name, ";".join(s.topics), s.timezone or "",
                                 s.status.value])
        tmp.replace(path)
        return len(subs)
