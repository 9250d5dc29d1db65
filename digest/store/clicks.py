"""Clicks on tracked "read more" links: what a link leads to, one row per request, the
burst rule, and the counts per article and per edition.

A click names an edition and an article, never a reader. `client` is a keyed hash of the
requesting address (made by the caller; this module never sees an address), kept only to
tell one scanner's burst of requests from readers. The rules of what counts live in
digest.audience.clicks; this module reads and writes the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from .db import Store
from .models import Article, Click, Delivery, DeliveryStatus, Edition, EditionStatus

__all__ = [
    "CLICKABLE",
    "REASONS",
    "ClickTarget",
    "article_clicks",
    "click_target",
    "edition_clicks",
    "record_click",
    "source_clicks",
    "uncounted_clicks",
]

# Editions whose links lead somewhere: those that went (or are going) out, and those an
# editor is shaping, whose test copies and previews carry the links readers will get
# (their clicks are "early": never counted). A cancelled one never reaches anybody.
CLICKABLE = (EditionStatus.DRAFT, EditionStatus.APPROVED, EditionStatus.SENDING,
             EditionStatus.PAUSED, EditionStatus.SENT)

# Why a click was or was not counted.
REASONS = ("counted", "head", "scanner", "early", "burst", "repeat")


@dataclass(frozen=True)
class ClickTarget:
    """What a valid link names, when it leads anywhere."""

    edition_id: int
    number: int
    article_id: int
    url: str | None        # the article's own link (None: it is read on our site)
    delivered: bool        # whether any message of the edition has been sent yet


def click_target(store: Store, number: int, article_id: int) -> ClickTarget | None:
    """The article of edition `number`, when that edition went out and the article is
    (still) in it and not removed; None otherwise."""
    with store.sessions() as session:
        row = session.execute(
            select(Edition.id, Article.url)
            .join(Article, Article.edition_id == Edition.id)
            .where(Edition.number == number, Edition.status.in_(CLICKABLE),
                   Article.id == article_id, Article.removed_at.is_(None))).first()
        if row is None:
            return None
        edition_id, url = row
        delivered = session.scalar(select(Delivery.id).where(
            Delivery.edition_id == edition_id,
            Delivery.status == DeliveryStatus.SENT).limit(1)) is not None
    return ClickTarget(edition_id, number, article_id, url, delivered)


def record_click(store: Store, target: ClickTarget, client: str, reason: str,
                 at: datetime, *, burst_clicks: int, burst_seconds: int) -> str:
    """Store one request for target's link from client at `at`, counted when reason is
    "counted"; returns the reason it ends with.

    The burst rule: when burst_clicks requests of one edition's links from one client
    (whatever each one's reason) fall within burst_seconds, none of the counted ones in
    that span counts (reason "burst"), the earlier ones too. The row is committed first
    and the rule applied in a transaction of its own, so that of two requests stored at
    once (PostgreSQL commits them side by side) the later check sees both."""
    if reason not in REASONS:
        raise ValueError(f"unknown click reason {reason!r}")
    with store.writes.begin() as session:
        if reason == "counted" and session.scalar(select(Click.id).where(
                Click.edition_id == target.edition_id, Click.article_id == target.article_id,
                Click.client == client, Click.counted).limit(1)) is not None:
            # A reader counts once per article: the same link again from the same
            # address (a reload, a second look, one address pacing itself) is a repeat.
            reason = "repeat"
        row = Click(edition_id=target.edition_id, article_id=target.article_id, at=at,
                    client=client, counted=reason == "counted", reason=reason)
        session.add(row)
        session.flush()
        click_id = row.id
    span = timedelta(seconds=burst_seconds)
    mine = (Click.client == client, Click.edition_id == target.edition_id)
    with store.writes.begin() as session:
        near = list(session.scalars(select(Click.at).where(
            *mine, Click.at >= at - span, Click.at <= at + span).order_by(Click.at)))
        burst = _burst_span(near, at, span, burst_clicks)
        if burst is not None:
            session.execute(update(Click).where(
                *mine, Click.at >= burst[0], Click.at <= burst[1], Click.counted)
                .values(counted=False, reason="burst"))
        final = session.scalar(select(Click.reason).where(Click.id == click_id))
    return str(final)


def _burst_span(times: Sequence[datetime], at: datetime, span: timedelta, least: int
                ) -> tuple[datetime, datetime] | None:
    """From the first to the last request of every run of at least `least` requests
    within `span` that holds the one at `at` (times: one client's requests around it,
    oldest first); None when no run is that long. The runs all hold `at`, so together
    they are one stretch of time, and every request in it belongs to one of them. One
    pass (a scanner's thousands of requests cost no more than their number)."""
    first: datetime | None = None
    last = at
    end = 0
    for start, begin in enumerate(times):
        if begin > at:
            break
        end = max(end, start)
        while end < len(times) and times[end] <= begin + span:
            end += 1
        if begin + span >= at and end - start >= least:
            first = begin if first is None else first
            last = times[end - 1]
    return None if first is None else (first, last)


def article_clicks(store: Store, edition_id: int) -> dict[int, int]:
    """Article id → its counted clicks in that edition (articles nobody clicked: absent)."""
    with store.sessions() as session:
        return _counts(session, Click.article_id, Click.edition_id == edition_id)


def uncounted_clicks(store: Store, edition_id: int) -> dict[str, int]:
    """Why the requests of an edition's links that were not counted were not: reason
    (head, scanner, early, burst) → how many."""
    with store.sessions() as session:
        rows = session.execute(select(Click.reason, func.count()).where(
            Click.edition_id == edition_id, Click.counted.is_(False))
            .group_by(Click.reason)).all()
    return {str(reason): int(n) for reason, n in rows}


def edition_clicks(store: Store) -> dict[int, int]:
    """Edition id → its counted clicks (editions nobody clicked: absent)."""
    with store.sessions() as session:
        return _counts(session, Click.edition_id)


def source_clicks(store: Store, before: int, until: datetime, editions: int
                  ) -> dict[int, tuple[int, int]]:
    """Source id → (counted clicks, articles) over the last `editions` editions numbered
    below `before` that went out: each article counts for its first source, and only
    clicks made before `until`. With `until` some seconds before an edition was made
    (its cutoff less [tracking] burst_seconds), the answer for that edition never changes
    afterwards: the editions before it and their clicks up to then are settled, so the
    edition ranks the same when it is rendered again (a resumed send, its archive page)."""
    with store.sessions() as session:
        ids = list(session.scalars(
            select(Edition.id).where(Edition.number < before, Edition.status.in_(CLICKABLE))
            .order_by(Edition.number.desc()).limit(editions)))
        if not ids:
            return {}
        from_source = and_(Article.edition_id.in_(ids), Article.source_id.is_not(None))
        shown = session.execute(select(Article.source_id, func.count()).where(from_source)
                                .group_by(Article.source_id)).all()
        clicked = dict(session.execute(
            select(Article.source_id, func.count()).join(Click, Click.article_id == Article.id)
            .where(from_source, Click.edition_id.in_(ids), Click.counted, Click.at < until)
            .group_by(Article.source_id)).all())
    return {int(source): (int(clicked.get(source, 0)), int(n)) for source, n in shown
            if source is not None}


def _counts(session: Session, key: InstrumentedAttribute[int],
            *where: ColumnElement[bool]) -> dict[int, int]:
    rows = session.execute(select(key, func.count()).where(and_(Click.counted, *where))
                           .group_by(key)).all()
    return {int(k): int(n) for k, n in rows}
