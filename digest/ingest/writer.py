"""The one writer: de-duplicates ArticleInput records and stores them, one transaction
per file, so a bad record never leaves half a write and never takes the good ones down."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..links import canonical_url
from ..models import Article, Source
from ..teasers import normalise_for_hash
from ..topics import TopicClassifier
from .parsers import parse_path
from .records import ArticleInput

__all__ = ["FileResult", "ImportReport", "content_hash", "import_files", "write_articles"]


@dataclass
class FileResult:
    path: Path
    added: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    files: list[FileResult] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def problems(self) -> list[str]:
        return [p for f in self.files for p in f.problems]

    @property
    def warnings(self) -> list[str]:
        return [w for f in self.files for w in f.warnings]


def content_hash(title: str, body: str) -> str:
    """Same normalised title and body → same hash."""
    key = normalise_for_hash(title) + "\n" + normalise_for_hash(body)
    return hashlib.sha256(key.encode()).hexdigest()


def _source(session: Session, kind: str, name: str | None,
            cache: dict[str, Source]) -> Source | None:
    if not name:
        return None
    name = name.strip()[:300]
    if name in cache:
        return cache[name]
    source = session.scalar(select(Source).where(Source.kind == kind, Source.name == name))
    if source is None:
        source = Source(kind=kind, name=name)
        session.add(source)
        session.flush()
    cache[name] = source
    return source


def write_articles(session: Session, classifier: TopicClassifier,
                   records: Iterable[ArticleInput], *, topic: str | None = None,
                   kind: str = "file") -> tuple[int, int]:
    """Store new records in the session's transaction; returns (added, duplicates).
    The caller commits."""
    added = duplicates = 0
    seen_urls: set[str] = set()
    seen_hashes: set[str] = set()
    sources: dict[str, Source] = {}
    for record in records:
        canonical = canonical_url(record.canonical_url or record.url)
        digest_hash = content_hash(record.title, record.body or record.summary or "")
        if canonical in seen_urls or digest_hash in seen_hashes:
            duplicates += 1
            continue
        clause = Article.content_hash == digest_hash
        if canonical:
            clause = or_(clause, Article.canonical_url == canonical)
        if session.scalar(select(Article.id).where(clause).limit(1)) is not None:
            duplicates += 1
            continue
        assigned = classifier.assign(record.title, f"{record.summary or ''}\n{record.body}",
                                     explicit=topic or record.topic,
                                     categories=record.categories)
        try:
            with session.begin_nested():
                session.add(Article(
                    source=_source(session, kind, record.source_name, sources),
                    title=record.title, url=record.url, canonical_url=canonical,
                    author=record.author, published_at=record.published_at,
                    summary=record.summary, body=record.body, body_html=record.body_html,
                    topic=assigned, tags=list(record.tags), content_hash=digest_hash,
                ))
        except IntegrityError:
            # Another importer stored the same article between our check and insert.
            duplicates += 1
            continue
        if canonical:
            seen_urls.add(canonical)
        seen_hashes.add(digest_hash)
        added += 1
    return added, duplicates


def import_files(sessions: sessionmaker[Session], classifier: TopicClassifier,
                 paths: Sequence[Path], *, topic: str | None = None,
                 progress: Callable[[FileResult], None] | None = None) -> ImportReport:
    """Parse and store every file under paths, one transaction per file."""
    report = ImportReport()
    for path in paths:
        for parsed in parse_path(path):
            result = FileResult(parsed.path, problems=list(parsed.problems),
                                warnings=list(parsed.warnings))
            if parsed.records:
                with sessions.begin() as session:
                    result.added, result.duplicates = write_articles(
                        session, classifier, parsed.records, topic=topic)
            report.files.append(result)
            if progress:
                progress(result)
    return report
