"""The one writer: de-duplicates ArticleInput records and stores them in short write
transactions (a batch each), so a bad record never leaves half a write, never takes the good
ones down, and an import never holds the store's write lock for long."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..clock import Clock
from ..config import IngestSettings
from ..content.links import canonical_url
from ..content.semantic import pack
from ..content.teasers import normalise_for_hash
from ..content.topics import Signals, TopicClassifier
from ..store.articles import learning_rows
from ..store.db import Session
from ..store.ingest import (
    SessionFactory,
    article_ids_by_canonical_url,
    article_ids_by_hash,
    find_or_add_source,
    insert_articles,
    link_source,
    mark_as_news,
    recent_titles,
)
from ..text import is_junk_title
from .dates import date_from_text
from .parsers import parse_path
from .records import ArticleInput

__all__ = ["ArticleWriter", "FileResult", "ImportReport", "TitleIndex", "Written",
           "content_hash", "fresh_from", "import_files", "same_story", "write_articles"]


@dataclass
class FileResult:
    path: Path
    added: int = 0
    duplicates: int = 0
    too_old: int = 0             # of added: stored for de-duplication, never "new"
    now_news: int = 0            # of duplicates: stored too old before, news now
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
    def too_old(self) -> int:
        return sum(f.too_old for f in self.files)

    @property
    def now_news(self) -> int:
        return sum(f.now_news for f in self.files)

    @property
    def problems(self) -> list[str]:
        return [p for f in self.files for p in f.problems]

    @property
    def warnings(self) -> list[str]:
        return [w for f in self.files for w in f.warnings]


def fresh_from(settings: IngestSettings, now: datetime,
               since: datetime | None = None) -> datetime | None:
    """The earliest publication date that is still news for an import at now: since when
    given (`articles import --since`), else [ingest] max_age_days before now; None: no
    limit."""
    if since is not None:
        return since
    return now - timedelta(days=settings.max_age_days) if settings.max_age_days else None


def content_hash(title: str, body: str) -> str:
    """Same normalised title and body → same hash."""
    key = normalise_for_hash(title) + "\n" + normalise_for_hash(body)
    return hashlib.sha256(key.encode()).hexdigest()


_TITLE_WINDOW = timedelta(days=14)
# At most this many recent titles are held for near-duplicate search (newest first): the
# window stays bounded in memory however busy the store is.
_TITLE_WINDOW_MAX = 200_000
# Records per write transaction in a file import: each transaction holds the SQLite write
# lock for a moment only, so a one-click unsubscribe or the sender's ledger never waits
# for a whole import.
BATCH_SIZE = 500


def _title_tokens(title: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", title.casefold()))


def same_story(a: frozenset[str], b: frozenset[str]) -> bool:
    """Two titles name the same story: the same words, or nearly (Jaccard >= 0.8 over six
    or more words) when the words that differ are not numbers ("Part 2" vs "Part 3")."""
    if a == b:
        return len(a) >= 3
    if min(len(a), len(b)) < 6 or len(a & b) / len(a | b) < 0.8:
        return False
    return not any(token.isdigit() for token in a ^ b)


class TitleIndex:
    """Finds a title that same_story() matches among many, without comparing with each.

    Equal word sets are one dict lookup. For the near-identical case (Jaccard >= 4/5 over
    six or more words) every word has a posting list; two such sets share at least
    ceil(4n/5) of the n words of either, so any n - ceil(4n/5) + 1 words of a query meet
    every match (pigeonhole). The query reads the lists of its rarest words only, and
    same_story() checks each candidate: the answers are exactly the pairwise scan's."""

    def __init__(self) -> None:
        self._exact: dict[frozenset[str], list[int]] = {}
        self._postings: dict[str, list[int]] = {}
        self._tokens: dict[int, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def add(self, key: int, tokens: frozenset[str]) -> None:
        """Index tokens under key (an article id)."""
        self._tokens[key] = tokens
        if len(tokens) >= 3:
            self._exact.setdefault(tokens, []).append(key)
        if len(tokens) >= 6:
            for token in tokens:
                self._postings.setdefault(token, []).append(key)

    def find(self, tokens: frozenset[str],
             accept: Callable[[int], bool] = lambda _key: True) -> int | None:
        """The earliest-added key whose tokens same_story() matches with tokens and that
        accept() takes, or None."""
        found = [key for key in self._exact.get(tokens, ()) if accept(key)] \
            if len(tokens) >= 3 else []
        if len(tokens) >= 6:
            probe = len(tokens) - (4 * len(tokens) + 4) // 5 + 1
            rarest = sorted(tokens, key=lambda t: len(self._postings.get(t, ())))[:probe]
            # Jaccard >= 4/5 needs sizes within 4/5 of each other: a cheap filter first.
            low, high = (4 * len(tokens) + 4) // 5, len(tokens) * 5 // 4
            seen: set[int] = set()
            for token in rarest:
                for key in self._postings.get(token, ()):
                    if key not in seen:
                        seen.add(key)
                        other = self._tokens[key]
                        if (low <= len(other) <= high and same_story(tokens, other)
                                and accept(key)):
                            found.append(key)
        # Keys grow as articles are added: the smallest is the one the old pairwise scan
        # (oldest first) would have found.
        return min(found) if found else None


@dataclass
class _Row:
    """One article to insert; id is set once the batch is stored."""

    values: dict[str, Any]
    record: ArticleInput
    tokens: frozenset[str]
    id: int | None = None
    links: list[tuple[int | None, str | None]] = field(default_factory=list)


class ArticleWriter:
    """De-duplicates and stores ArticleInput records, one batch per write transaction.

    Loads the recent titles, content hashes and canonical URLs it needs once, keeps them
    up to date as it adds articles, and asks the store only about each batch's own
    hashes and URLs: an import costs about the same per record at 50,000 as at 50."""

    def __init__(self, session: Session, classifier: TopicClassifier, clock: Clock, *,
                 topic: str | None = None, kind: str = "file",
                 fresh_from: datetime | None = None) -> None:
        self.classifier = classifier
        self.clock = clock
        self.topic = topic
        self.kind = kind
        # Articles published before this are stored as too old (see fresh_from()).
        self.fresh_from = fresh_from
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.too_old = 0                           # stored too old, all writes together
        self.now_news = 0                          # stored too old before, news now
        self._sources: dict[str, int] = {}
        self._hashes: dict[str, int] = {}          # added by this writer: hash → id
        self._urls: dict[str, int] = {}            # added by this writer: canonical → id
        self._feed_items: dict[int, tuple[int | None, str]] = {}  # id → (source, guid)
        self._titles = TitleIndex()
        if classifier.semantic and not classifier.has_learned:
            classifier.learn_rows(learning_rows(session))
        for article_id, title in recent_titles(session, clock.now() - _TITLE_WINDOW,
                                               _TITLE_WINDOW_MAX):
            self._titles.add(article_id, _title_tokens(title))

    def write(self, session: Session, records: Sequence[ArticleInput]) -> tuple[int, int]:
        """Store the new records in the session's transaction; returns (added,
        duplicates). A duplicate (same canonical URL, same normalised title and text, or
        the same story under a near-identical title) is not stored again, but its source
        is added to the article's sources. A record the store refuses is a problem (in
        .problems), never a half-written article. The caller commits."""
        added_at = self.clock.now()
        prepared = self._classify([row for row in (self._prepare(record, added_at)
                                                   for record in records) if row is not None])
        hashes = {p.values["content_hash"] for p in prepared}
        urls = {p.values["canonical_url"] for p in prepared if p.values["canonical_url"]}
        known_hashes = article_ids_by_hash(session, hashes)
        known_urls = article_ids_by_canonical_url(session, urls)
        duplicates = 0
        pending: dict[str, _Row] = {}              # this batch's new rows: hash → row
        pending_urls: dict[str, _Row] = {}
        pending_titles: list[_Row] = []           # key in batch_titles → row
        batch_titles = TitleIndex()
        links: list[tuple[int, int | None, str | None]] = []
        news: list[int] = []       # stored articles this batch dates as news
        for row in prepared:
            source_id = self._source(session, row.record.source_name)
            row.values["source_id"] = source_id
            digest_hash, canonical = row.values["content_hash"], row.values["canonical_url"]
            existing: int | _Row | None = (
                known_hashes.get(digest_hash) or self._hashes.get(digest_hash)
                or pending.get(digest_hash)
                or (canonical and (known_urls.get(canonical) or self._urls.get(canonical)
                                   or pending_urls.get(canonical)))
                or self._same_title(row, source_id, batch_titles, pending_titles))
            if existing is not None:
                duplicates += 1
                if isinstance(existing, _Row):
                    existing.links.append((source_id, row.record.url))
                else:
                    links.append((existing, source_id, row.record.url))
                    if row.values["published_at"] is not None and not row.values["too_old"]:
                        news.append(existing)
                continue
            pending[digest_hash] = row
            if canonical:
                pending_urls[canonical] = row
            batch_titles.add(len(pending_titles), row.tokens)
            pending_titles.append(row)
        added = self._insert(session, list(pending.values()))
        duplicates += len(pending) - added
        for row in pending.values():
            if row.id is not None:
                links += [(row.id, source_id, url) for source_id, url in row.links]
        for article_id, source_id, url in links:
            if source_id is not None:
                link_source(session, article_id, source_id, url)
        # An article stored as too old that comes in again as news (articles import
        # --since, or a longer max_age_days) is news now, if no edition holds it.
        self.now_news += mark_as_news(session, news)
        return added, duplicates

    def _prepare(self, record: ArticleInput, added_at: datetime) -> _Row | None:
        """The row to store for record, or None (and a problem) when its title is junk."""
        if is_junk_title(record.title):
            said = f"the title {record.title!r} has" if record.title else \
                "the title is empty once control and format characters are removed: it has"
            self.problems.append(
                f"{record.where}: {said} no letter or digit (even after repairing its "
                f"encoding); not imported: give the article a real title")
            return None
        canonical = canonical_url(record.canonical_url or
                                  (record.url if record.url_is_identity else None))
        body = record.body or record.summary or ""
        published, date_source, clamped = self._date(record, added_at)
        values = dict(
            title=record.title, url=record.url, canonical_url=canonical,
            author=record.author, published_at=published, added_at=added_at,
            date_source=date_source, date_clamped=clamped,
            too_old=published is not None and self.fresh_from is not None
            and published < self.fresh_from,
            summary=record.summary, body=record.body, body_html=record.body_html,
            tags=list(record.tags), content_hash=content_hash(record.title, body),
            is_backlog=record.backlog,
        )
        return _Row(values, record, _title_tokens(record.title))

    def _date(self, record: ArticleInput,
              added_at: datetime) -> tuple[datetime | None, str, bool]:
        """(publication date, where it came from, clamped): the record's (or page's) own
        date, else the one its text states, else none ("imported": undated). A date after
        added_at is clamped to it, and the record is named in the warnings."""
        published, source = record.published_at, record.date_source
        if published is None:
            published = date_from_text(record.body, added_at) \
                or date_from_text(record.summary or "", added_at)
            source = "text" if published is not None else "imported"
        if published is not None and published > added_at:
            self.warnings.append(
                f"{record.where}: dated {published:%Y-%m-%d %H:%M} UTC, in the future; "
                f"dated when it came in instead")
            return added_at, source, True
        return published, source, False

    def _classify(self, rows: Sequence[_Row]) -> list[_Row]:
        """Each row's topic, why, with what confidence, and its vector: one batch for the
        model. The writer's topic (--topic, or the feed's) comes before the record's own;
        a record whose own topic names no configured topic (nor an alias of one) is a
        problem, and is not stored. Returns the rows to store."""
        feed_topic = self.topic if self.kind == "feed" else None
        chosen = None if self.kind == "feed" else self.topic
        if chosen is None:
            rows = [row for row in rows if self._known_topic(row)]
        assignments = self.classifier.assign_batch([
            Signals(r.record.title, f"{r.record.summary or ''}\n{r.record.body}",
                    chosen or r.record.topic, feed_topic, r.record.categories, r.record.tags)
            for r in rows])
        for row, assigned in zip(rows, assignments, strict=True):
            row.values.update(topic=assigned.topic, topic_reason=assigned.reason,
                              topic_confidence=assigned.confidence,
                              embedding=None if assigned.vector is None
                              else pack(assigned.vector))
        return list(rows)

    def _known_topic(self, row: _Row) -> bool:
        """Whether the record's own topic (if any) names a configured topic; a problem
        naming the record and the choices when it does not."""
        topic = (row.record.topic or "").strip()
        if not topic or self.classifier.known(topic) is not None:
            return True
        self.problems.append(f"{row.record.where}: topic {topic[:80]!r} is not a configured "
                             f"topic; choose one of {', '.join(self.classifier.names)} (or "
                             f"add it to a topic's aliases in [[topics]])")
        return False

    def _same_title(self, row: _Row, source_id: int | None, batch_titles: TitleIndex,
                    pending: list[_Row]) -> int | _Row | None:
        """An article (stored, or new in this batch) telling the same story as row."""
        guid = row.record.guid

        def other_item(other_source: int | None, other_guid: str | None) -> bool:
            # Within one feed an item is its guid: two guids are two items, however alike
            # their titles ("Episode 12" and "Episode 12 (rebroadcast)" both stay).
            return (guid is not None and other_guid is not None
                    and other_source == source_id and other_guid != guid)

        found = self._titles.find(row.tokens, lambda key: not other_item(
            *self._feed_items.get(key, (None, None))))
        if found is not None:
            return found
        position = batch_titles.find(row.tokens, lambda key: not other_item(
            pending[key].values["source_id"], pending[key].record.guid))
        return None if position is None else pending[position]

    def _insert(self, session: Session, rows: list[_Row]) -> int:
        """Insert rows (all at once; one by one if the store refuses the batch) and index
        them; returns how many were stored."""
        if not rows:
            return 0
        inserted = insert_articles(session, [row.values for row in rows])
        for row, article_id in zip(rows, inserted.ids, strict=True):
            row.id = article_id
        for position, reason in inserted.refused.items():
            self.problems.append(f"{rows[position].record.where}: the store refused this "
                                 f"article: {reason}")
        stored = [row for row in rows if row.id is not None]
        self.too_old += sum(bool(row.values["too_old"]) for row in stored)
        for row in stored:
            assert row.id is not None
            self._titles.add(row.id, row.tokens)
            self._hashes[row.values["content_hash"]] = row.id
            if row.values["canonical_url"]:
                self._urls[row.values["canonical_url"]] = row.id
            if row.record.guid is not None:
                self._feed_items[row.id] = (row.values["source_id"], row.record.guid)
        return len(stored)

    def _source(self, session: Session, name: str | None) -> int | None:
        if not name:
            return None
        name = name.strip()[:300]
        if name not in self._sources:
            self._sources[name] = find_or_add_source(session, self.kind, name)
        return self._sources[name]


@dataclass(frozen=True)
class Written:
    """What one write_articles call did: stored, of which too old, and duplicates."""

    added: int
    too_old: int
    duplicates: int


def write_articles(session: Session, classifier: TopicClassifier, clock: Clock,
                   records: Iterable[ArticleInput], *, topic: str | None = None,
                   kind: str = "file", fresh_from: datetime | None = None,
                   problems: list[str] | None = None,
                   warnings: list[str] | None = None) -> Written:
    """Store new records in the session's transaction. A duplicate (same canonical URL,
    same normalised title and text, or the same story under a near-identical title) is
    not stored again, but its source is added to the article's sources; one published
    before fresh_from is stored as too old. Records refused (a junk title, or by the
    store) are named in problems, clamped dates in warnings. The caller commits."""
    writer = ArticleWriter(session, classifier, clock, topic=topic, kind=kind,
                           fresh_from=fresh_from)
    added, duplicates = writer.write(session, list(records))
    if problems is not None:
        problems.extend(writer.problems)
    if warnings is not None:
        warnings.extend(writer.warnings)
    return Written(added, writer.too_old, duplicates)


def import_files(sessions: SessionFactory, classifier: TopicClassifier, clock: Clock,
                 paths: Sequence[Path], *, topic: str | None = None,
                 fresh_from: datetime | None = None,
                 progress: Callable[[FileResult], None] | None = None,
                 batch_size: int = BATCH_SIZE) -> ImportReport:
    """Parse and store every file under paths, committing every batch_size records;
    articles published before fresh_from are stored as too old (see fresh_from()).

    Each commit is a short write transaction, so other writers (a one-click unsubscribe,
    the sender's ledger) wait a moment at most, never for the whole import. A record is
    stored whole or not at all; a problem in one record or file never stops the rest."""
    report = ImportReport()
    writer: ArticleWriter | None = None
    for path in paths:
        for parsed in parse_path(path, clock.now()):
            result = FileResult(parsed.path, problems=list(parsed.problems),
                                warnings=list(parsed.warnings))
            for start in range(0, len(parsed.records), batch_size):
                with sessions.begin() as session:
                    if writer is None:
                        writer = ArticleWriter(session, classifier, clock, topic=topic,
                                               fresh_from=fresh_from)
                    too_old, now_news = writer.too_old, writer.now_news
                    added, duplicates = writer.write(
                        session, parsed.records[start:start + batch_size])
                result.added += added
                result.duplicates += duplicates
                result.too_old += writer.too_old - too_old
                result.now_news += writer.now_news - now_news
                result.problems += writer.problems
                result.warnings += writer.warnings
                writer.problems.clear()
                writer.warnings.clear()
            report.files.append(result)
            if progress:
                progress(result)
    return report
