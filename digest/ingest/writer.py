"""The one writer: de-duplicates ArticleInput records and stores them, one transaction
per file, so a bad record never leaves half a write and never takes the good ones down."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..links import canonical_url
from ..models import Article, ArticleSource, Source, utcnow
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


_TITLE_WINDOW = timedelta(days=14)


def _title_tokens(title: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", title.casefold()))


def same_story(a: frozenset[str], b: frozenset[str]) -> bool:
    """Two titles name the same story: the same words, or nearly (Jaccard >= 0.8 over six
    or more words) when the words that differ are not numbers ("Part 2" vs "Part 3")."""
    if a == b:
        return len(a) >= 3
    if min(len(a), len(b)) < 6:
        return False
    differ = a ^ b
    if any(token.isdigit() for token in differ):
        return False
    return len(a & b) / len(a | b) >= 0.8


class _Recent:
    """Titles of recently added articles, loaded once per batch, for near-duplicates."""

    def __init__(self, session: Session) -> None:
        since = utcnow() - _TITLE_WINDOW
        self.items = [(aid, _title_tokens(title)) for aid, title in session.execute(
            select(Article.id, Article.title).where(Article.added_at >= since))]

    def find(self, title: str) -> int | None:
        tokens = _title_tokens(title)
        return next((aid for aid, other in self.items if same_story(tokens, other)), None)

    def add(self, article_id: int, title: str) -> None:
        self.items.append((article_id, _title_tokens(title)))


def _link_source(session: Session, article_id: int, source: Source | None,
                 url: str | None) -> None:
    """Record that source carried article_id too (once)."""
    if source is None:
        return
    article = session.get(Article, article_id)
    if article is None or article.source_id == source.id:
        return
    if session.get(ArticleSource, (article_id, source.id)) is None:
        session.add(ArticleSource(article_id=article_id, source_id=source.id, url=url))


def write_articles(session: Session, classifier: TopicClassifier,
                   records: Iterable[ArticleInput], *, topic: str | None = None,
                   kind: str = "file") -> tuple[int, int]:
    """Store new records in the session's transaction; returns (added, duplicates).
    A duplicate (same canonical URL, same normalised title and text, or the same story
    under a near-identical title) is not stored again, but its source is added to the
    article's sources. The caller commits."""
    added = duplicates = 0
    sources: dict[str, Source] = {}
    recent = _Recent(session)
    for record in records:
        canonical = canonical_url(record.canonical_url or record.url)
        digest_hash = content_hash(record.title, record.body or record.summary or "")
        source = _source(session, kind, record.source_name, sources)
        clause = Article.content_hash == digest_hash
        if canonical:
            clause = or_(clause, Article.canonical_url == canonical)
        existing = session.scalar(select(Article.id).where(clause).limit(1)) \
            or recent.find(record.title)
        if existing is not None:
            _link_source(session, existing, source, record.url)
            duplicates += 1
            continue
        assigned = classifier.assign(record.title, f"{record.summary or ''}\n{record.body}",
                                     explicit=topic or record.topic,
                                     categories=record.categories)
        article = Article(
            source=source, title=record.title, url=record.url, canonical_url=canonical,
            author=record.author, published_at=record.published_at,
            summary=record.summary, body=record.body, body_html=record.body_html,
            topic=assigned, tags=list(record.tags), content_hash=digest_hash,
            is_backlog=record.backlog,
        )
        try:
            with session.begin_nested():
                session.add(article)
        except IntegrityError:
            # Another importer stored the same article between our check and insert.
            duplicates += 1
            continue
        recent.add(article.id, record.title)
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
