"""Articles as editions see them: the new ones up to a cut-off, an edition's own, the
next edition's number, and the operator's corrections (remove, set a topic).

A removed article is a tombstone (removed_at set): no edition, list or archive shows it,
and the operator's commands treat it as gone, but the ingest writer's look-ups
(store/ingest.py) still find it, so it is counted as a duplicate when it comes again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from ..errors import InputError
from .db import Store
from .locks import locked_session
from .models import Article, Edition, EditionStatus, Source

__all__ = [
    "LearningRow",
    "TopicUpdate",
    "edition_articles",
    "learning_rows",
    "list_articles",
    "new_articles",
    "next_edition_number",
    "remove_articles",
    "retopic_articles",
    "set_pinned",
    "set_source_weight",
    "set_topic",
    "storable_id",
    "upcoming_edition",
]

# What a topic learns from: the store's most recent articles with a vector.
_LEARNING_ROWS = 5000
# How much of an article's text a topic learns its words from.
_LEARNING_TEXT = 800
# The ids the articles' Integer key can hold (32-bit signed on PostgreSQL, which refuses
# to compare it with a larger number, as SQLite does past 64 bits).
_MIN_ID, _MAX_ID = -(2 ** 31), 2 ** 31 - 1
# What `retopic` never moves: a topic someone chose.
_CHOSEN = ("explicit", "manual", "feed")


@dataclass(frozen=True)
class LearningRow:
    topic: str
    reason: str
    confidence: float | None
    embedding: bytes
    text: str = ""                 # title, then the start of the summary (or body)


@dataclass(frozen=True)
class TopicUpdate:
    topic: str
    reason: str
    confidence: float | None
    embedding: bytes | None


def new_articles(session: Session, cutoff: datetime) -> list[Article]:
    """Articles no edition has taken, added up to cutoff (never a removed one, a new
    feed's back catalogue or one that came in too old to be news)."""
    return list(session.scalars(
        select(Article).where(Article.edition_id.is_(None), Article.added_at <= cutoff,
                              Article.is_backlog.is_(False), Article.too_old.is_(False),
                              Article.removed_at.is_(None))
        .order_by(Article.id)))


def next_edition_number(session: Session) -> int:
    """The number the next edition gets (1 for the first)."""
    return (session.scalar(select(func.max(Edition.number))) or 0) + 1


def upcoming_edition(store: Store, cutoff: datetime) -> tuple[int, list[Article]]:
    """(the next edition's number, the new articles it would take up to cutoff)."""
    with store.sessions() as session:
        return next_edition_number(session), new_articles(session, cutoff)


def edition_articles(session: Session, edition_id: int) -> list[Article]:
    """The articles edition_id took, in id order."""
    return list(session.scalars(select(Article).where(Article.edition_id == edition_id)
                                .order_by(Article.id)))


def list_articles(store: Store, *, new_only: bool = False, old_only: bool = False,
                  topic: str | None = None, limit: int | None = None,
                  removed: bool = False) -> list[Article]:
    """Stored articles, newest first: by publication date, undated ones last, ties (and
    the undated) by import time, newest first; new_only: only those the next edition would offer
    (in no edition, neither back catalogue nor too old); old_only: those in no edition
    that came in too old; removed: the removed ones (tombstones) instead of the others."""
    with store.sessions() as session:
        query = (select(Article).where(Article.removed_at.is_not(None) if removed
                                       else Article.removed_at.is_(None))
                 .order_by(Article.published_at.desc().nulls_last(), Article.added_at.desc(),
                           Article.id.desc()))
        if new_only:
            query = query.where(Article.edition_id.is_(None), Article.is_backlog.is_(False),
                                Article.too_old.is_(False))
        if old_only:
            query = query.where(Article.edition_id.is_(None), Article.too_old.is_(True))
        if topic:
            query = query.where(func.lower(Article.topic) == topic.lower())
        if limit:
            query = query.limit(limit)
        return list(session.scalars(query))


def storable_id(value: int) -> bool:
    """Whether value is an id the store's Integer keys can hold: any other names no row,
    and the database would refuse to compare a column with it."""
    return _MIN_ID <= value <= _MAX_ID


def _editable(session: Session, ids: Sequence[int]) -> dict[int, Article]:
    """id → article for ids, all of which must be stored, not removed and in no edition;
    else an InputError naming the first that is not (an edition nobody received can be
    discarded first)."""
    # An id no integer column holds (a typo of 20 digits) names no article; the
    # database would refuse to compare with it.
    storable = [i for i in ids if storable_id(i)]
    found = {a.id: a for a in session.scalars(select(Article).where(
        Article.id.in_(storable), Article.removed_at.is_(None)))}
    for article_id in ids:
        article = found.get(article_id)
        if article is None:
            raise InputError(f"there is no article {article_id} (see: digest articles list)")
        if article.edition_id is not None:
            number, status = session.execute(select(Edition.number, Edition.status).where(
                Edition.id == article.edition_id)).one()
            if status in (EditionStatus.DRAFT, EditionStatus.APPROVED):
                raise InputError(f"article {article_id} is in edition {number}, which an "
                                 f"editor is shaping: take it out with: digest editions drop "
                                 f"{number} {article_id} (or change its topic there: digest "
                                 f"editions move {number} {article_id} TOPIC)")
            if status is EditionStatus.SENT:
                raise InputError(f"article {article_id} went out in edition {number}: "
                                 f"what was sent stays as it was")
            raise InputError(f"article {article_id} is in edition {number}; an edition "
                             f"nobody received can be discarded first: digest editions "
                             f"discard {number}")
    return found


def remove_articles(store: Store, ids: Sequence[int]) -> list[str]:
    """Remove the articles with these ids, all or none; returns their titles. InputError
    naming the first id that is unknown, removed already or in an edition (discard the
    edition first).

    The row stays as a tombstone: removed_at set, its text (body, HTML, summary) blanked
    because it is never shown again, its title, content hash and canonical URL kept
    because de-duplication matches on them."""
    # Holding the edition lock: an edition taking these articles waits (or they wait
    # for it, and are then in it), so none is both removed and in an edition.
    with locked_session(store) as session:
        found = _editable(session, ids)
        now = store.clock.now()
        for article in found.values():
            article.removed_at = now
            article.body, article.body_html, article.summary = "", None, None
        return [found[i].title for i in ids]


def set_topic(store: Store, article_id: int, topic: str) -> str:
    """Put one article under a topic (the caller checked the name); returns its title.
    InputError when it is unknown, removed or in an edition (what went out stays as it
    went; an edition nobody received can be discarded first)."""
    with locked_session(store) as session:
        article = _editable(session, [article_id])[article_id]
        article.topic = topic
        article.topic_reason, article.topic_confidence = "manual", None
        return article.title


def set_pinned(store: Store, article_id: int, pinned: bool) -> str:
    """Pin an article (it leads its topic) or unpin it; returns its title. InputError as
    for set_topic."""
    with locked_session(store) as session:
        article = _editable(session, [article_id])[article_id]
        article.pinned = pinned
        return article.title


def learning_rows(session: Session, limit: int = _LEARNING_ROWS) -> list[LearningRow]:
    """The most recent articles with a vector (not removed): what topics learn from."""
    lead = func.coalesce(func.substr(func.nullif(Article.summary, ""), 1, _LEARNING_TEXT),
                         func.substr(Article.body, 1, _LEARNING_TEXT), "")
    rows = session.execute(
        select(Article.topic, Article.topic_reason, Article.topic_confidence,
               Article.embedding, Article.title, lead)
        .where(Article.embedding.is_not(None), Article.removed_at.is_(None))
        .order_by(Article.id.desc()).limit(limit))
    return [LearningRow(t, r, c, e, f"{title}. {text}") for t, r, c, e, title, text in rows
            if e is not None]


def retopic_articles(store: Store, since: datetime | None,
                     assign: Callable[[Sequence[Article]], Sequence[TopicUpdate]],
                     batch: int = 500) -> tuple[int, int]:
    """Topics chosen again: articles no edition took (or, with since, every article added
    since then but those of a draft or approved edition), except removed ones and those
    whose topic someone chose (explicit, manual, the feed's). `assign` gives each batch's
    new topics. Returns (looked at, changed)."""
    # An edition an editor is shaping (draft, approved) keeps its articles' topics: what
    # was approved goes out as approved; the desk moves them (digest editions move).
    shaping = select(Edition.id).where(Edition.status.in_((EditionStatus.DRAFT,
                                                           EditionStatus.APPROVED)))
    query = select(Article).where(Article.removed_at.is_(None),
                                  Article.topic_reason.not_in(_CHOSEN))
    query = query.where(Article.added_at >= since, or_(
        Article.edition_id.is_(None), Article.edition_id.not_in(shaping))) \
        if since is not None else query.where(Article.edition_id.is_(None))
    seen = changed = 0
    last = 0
    while True:
        with store.writes.begin() as session:
            articles = list(session.scalars(query.where(Article.id > last)
                                            .order_by(Article.id).limit(batch)))
            if not articles:
                return seen, changed
            for article, new in zip(articles, assign(articles), strict=True):
                changed += new.topic != article.topic
                article.topic, article.topic_reason = new.topic, new.reason
                article.topic_confidence = new.confidence
                if new.embedding is not None:
                    article.embedding = new.embedding
            seen += len(articles)
            last = articles[-1].id


def set_source_weight(session: Session, name: str, weight: float) -> None:
    """The ranking weight of every source so named (a feed's articles, and those
    imported from files naming it as their source); a feed source is added when there is
    none yet."""
    sources = list(session.scalars(select(Source).where(Source.name == name)))
    if not any(source.kind == "feed" for source in sources):
        sources.append(Source(kind="feed", name=name, weight=weight))
        session.add(sources[-1])
    for source in sources:
        if source.weight != weight:
            source.weight = weight
    session.flush()
