"""Clicks on tracked "read more" links: what a link leads to, one row per candidate
click and a tally per (edition, article, reason) of the requests that never count, the
limit, repeat and burst rules, the per-edition keys and the close of an edition's
counting, and the counts per article and per edition.

A click names an edition and an article, never a reader. `client` is a hash of the
requesting network keyed by the edition's random key (made by the caller with the key
click_keys gives; this module never sees an address), kept only while the edition's
counting is open to tell a repeat, one scanner's burst or one network's flood from
readers; close_counting deletes the key and blanks the hashes. What a request is at the
door (HEAD, scanner, early) is decided in digest.audience.clicks.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from .db import Store, rowcount
from .models import (
    Article,
    Click,
    ClickKey,
    ClickTally,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
)

__all__ = [
    "CLICKABLE",
    "REASONS",
    "ClickTarget",
    "Request",
    "add_tallies",
    "article_clicks",
    "click_keys",
    "click_target",
    "close_counting",
    "edition_clicks",
    "record_click",
    "record_clicks",
    "source_clicks",
    "uncounted_clicks",
]

# Editions whose links lead somewhere: those that went (or are going) out, and those an
# editor is shaping, whose test copies and previews carry the links readers will get
# (their clicks are "early": never counted). A cancelled one never reaches anybody.
CLICKABLE = (EditionStatus.DRAFT, EditionStatus.APPROVED, EditionStatus.SENDING,
             EditionStatus.PAUSED, EditionStatus.SENT)

# Why a click was or was not counted ("limit": its client network went over [tracking]
# client_clicks; "dropped": the click service's queue was full).
REASONS = ("counted", "head", "scanner", "early", "burst", "repeat", "limit", "dropped")


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


@dataclass(frozen=True)
class Request:
    """One request of a tracked link, as the click service hands it over: its target, the
    client (a hash keyed by the edition's ClickKey; never an address), the reason it got
    at the door (REASONS) and when it came."""

    target: ClickTarget
    client: str
    reason: str
    at: datetime


def record_click(store: Store, target: ClickTarget, client: str, reason: str,
                 at: datetime, *, burst_clicks: int, burst_seconds: int,
                 client_clicks: int = 50) -> str:
    """record_clicks for one request; the reason it ends with."""
    return record_clicks(store, [Request(target, client, reason, at)],
                         burst_clicks=burst_clicks, burst_seconds=burst_seconds,
                         client_clicks=client_clicks)[0]


def record_clicks(store: Store, requests: Sequence[Request], *, burst_clicks: int,
                  burst_seconds: int, client_clicks: int) -> list[str]:
    """Store a batch of requests in one transaction; the reason each one ends with.

    A request that never counts (head, scanner, early, limit, dropped) adds one to its
    (edition, article, reason) tally and leaves no row. A candidate ("counted") is one
    row, and the rules apply in order:
    - limit: a client with client_clicks rows in the edition already is over its limit:
      none of its clicks in the edition counts any more (its rows become "limit") and its
      further requests are tallied;
    - repeat: a reader counts once per article (a reload, a second look, one address
      pacing itself);
    - burst: when burst_clicks requests of one edition's links from one client fall
      within burst_seconds, none of the counted ones in that span counts (reason
      "burst"), the earlier ones too.
    One writer decides (the click service's flusher), so no two requests of a batch are
    checked side by side."""
    span = timedelta(seconds=burst_seconds)
    reasons: list[str] = []
    tallies: Counter[tuple[int, int, str]] = Counter()
    with store.writes.begin() as session:
        for r in requests:
            reason, target = r.reason, r.target
            if reason not in REASONS:
                raise ValueError(f"unknown click reason {reason!r}")
            mine = (Click.client == r.client, Click.edition_id == target.edition_id)
            if reason == "counted" and (session.scalar(
                    select(func.count()).where(*mine)) or 0) >= client_clicks:
                reason = "limit"
            if reason != "counted":
                if reason == "limit":
                    # Taken back now: source_clicks still counts them for the
                    # editions ranked before (uncounted_at), so those rank as they did.
                    session.execute(update(Click).where(*mine, Click.counted)
                                    .values(counted=False, reason="limit",
                                            uncounted_at=r.at))
                tallies[target.edition_id, target.article_id, reason] += 1
                reasons.append(reason)
                continue
            if session.scalar(select(Click.id).where(
                    *mine, Click.article_id == target.article_id, Click.counted)
                    .limit(1)) is not None:
                reason = "repeat"
            row = Click(edition_id=target.edition_id, article_id=target.article_id,
                        at=r.at, client=r.client, counted=reason == "counted",
                        reason=reason)
            session.add(row)
            session.flush()
            near = list(session.scalars(select(Click.at).where(
                *mine, Click.at >= r.at - span, Click.at <= r.at + span)
                .order_by(Click.at)))
            burst = _burst_span(near, r.at, span, burst_clicks)
            if burst is not None:
                session.execute(update(Click).where(
                    *mine, Click.at >= burst[0], Click.at <= burst[1], Click.counted)
                    .values(counted=False, reason="burst"))
                session.refresh(row)
            reasons.append(row.reason)
        _add_tallies(session, tallies)
    return reasons


def _add_tallies(session: Session, tallies: Counter[tuple[int, int, str]]) -> None:
    for (edition_id, article_id, reason), n in tallies.items():
        if not n:
            continue
        done = session.execute(update(ClickTally).where(
            ClickTally.edition_id == edition_id, ClickTally.article_id == article_id,
            ClickTally.reason == reason).values(requests=ClickTally.requests + n))
        if not rowcount(done):
            session.add(ClickTally(edition_id=edition_id, article_id=article_id,
                                   reason=reason, requests=n))
    session.flush()


def add_tallies(store: Store, tallies: Counter[tuple[int, int, str]]) -> None:
    """Add (edition id, article id, reason) → requests to the tallies."""
    with store.writes.begin() as session:
        _add_tallies(session, tallies)


def click_keys(store: Store, edition_ids: Iterable[int], now: datetime) -> dict[int, bytes]:
    """Edition id → the random key its clicks' clients are hashed with while its counting
    is open; a new one (opened now) for an edition that has none."""
    wanted = set(edition_ids)
    if not wanted:
        return {}
    with store.writes.begin() as session:
        keys = {e: bytes.fromhex(k) for e, k in session.execute(
            select(ClickKey.edition_id, ClickKey.key).where(ClickKey.edition_id.in_(wanted)))}
        for edition_id in wanted - keys.keys():
            keys[edition_id] = secrets.token_bytes(32)
            session.add(ClickKey(edition_id=edition_id, key=keys[edition_id].hex(),
                                 opened_at=now))
    return keys


def close_counting(store: Store, before: datetime) -> list[int]:
    """Close the counting of every edition whose key was opened before `before`: its
    requests that did not count become tallies (but for clicks taken back by the limit,
    which keep their times for source_clicks), every click loses its client hash, and
    the key is deleted, so that nothing left tells one client's clicks from another's.
    The counts stay as they were. The ids of the editions closed."""
    due = select(ClickKey.edition_id).where(ClickKey.opened_at < before)
    with store.sessions() as session:
        if session.scalar(due.limit(1)) is None:
            return []        # the usual case: no write transaction
    with store.writes.begin() as session:
        ids = list(session.scalars(due))
        if not ids:
            return []
        rows = session.execute(
            select(Click.edition_id, Click.article_id, Click.reason, func.count())
            .where(Click.edition_id.in_(ids), Click.counted.is_(False),
                   Click.uncounted_at.is_(None))
            .group_by(Click.edition_id, Click.article_id, Click.reason)).all()
        _add_tallies(session, Counter({(int(e), int(a), str(r)): int(n)
                                       for e, a, r, n in rows}))
        session.execute(delete(Click).where(Click.edition_id.in_(ids),
                                            Click.counted.is_(False),
                                            Click.uncounted_at.is_(None)))
        session.execute(update(Click).where(Click.edition_id.in_(ids), Click.client != "")
                        .values(client=""))
        session.execute(delete(ClickKey).where(ClickKey.edition_id.in_(ids)))
    return ids


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
    (head, scanner, early, burst, repeat, limit, dropped) → how many."""
    found: Counter[str] = Counter()
    with store.sessions() as session:
        for reason, n in session.execute(select(Click.reason, func.count()).where(
                Click.edition_id == edition_id, Click.counted.is_(False))
                .group_by(Click.reason)):
            found[str(reason)] += int(n)
        for reason, n in session.execute(select(ClickTally.reason, func.sum(
                ClickTally.requests)).where(ClickTally.edition_id == edition_id)
                .group_by(ClickTally.reason)):
            found[str(reason)] += int(n)
    return dict(found)


def edition_clicks(store: Store) -> dict[int, int]:
    """Edition id → its counted clicks (editions nobody clicked: absent)."""
    with store.sessions() as session:
        return _counts(session, Click.edition_id)


def source_clicks(store: Store, before: int, until: datetime, editions: int
                  ) -> dict[int, tuple[int, int]]:
    """Source id → (counted clicks, articles) over the last `editions` editions numbered
    below `before` that went out: each article counts for its first source, and only
    clicks made before `until` (and counted then: a click the limit rule took back
    later still counts here). With `until` some seconds before an edition was made
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
            .where(from_source, Click.edition_id.in_(ids), Click.at < until,
                   or_(Click.counted, Click.uncounted_at >= until))
            .group_by(Article.source_id)).all())
    return {int(source): (int(clicked.get(source, 0)), int(n)) for source, n in shown
            if source is not None}


def _counts(session: Session, key: InstrumentedAttribute[int],
            *where: ColumnElement[bool]) -> dict[int, int]:
    rows = session.execute(select(key, func.count()).where(and_(Click.counted, *where))
                           .group_by(key)).all()
    return {int(k): int(n) for k, n in rows}
