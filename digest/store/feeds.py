"""Queries about feeds (the `feeds` table), each in the caller's session and so its
transaction: the feed book (digest.ingest.feeds) decides, these look up and change rows."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Feed

__all__ = ["add_feed", "delete_feed", "feed_count", "feed_listed", "find_feed", "get_feed",
           "list_feeds", "taken_feed_names"]


def feed_listed(session: Session, url: str) -> bool:
    """Whether a feed with exactly this URL is listed."""
    return bool(session.scalar(select(Feed.id).where(Feed.url == url)))


def taken_feed_names(session: Session, names: Collection[str]) -> set[str]:
    """Those of `names` that a listed feed has."""
    return set(session.scalars(select(Feed.name).where(Feed.name.in_(names))))


def add_feed(session: Session, *, url: str, name: str, topic: str | None, backfill: int,
             from_config: bool) -> Feed:
    """A new feed row, added to the session (stored when its transaction commits)."""
    feed = Feed(url=url, name=name, topic=topic, backfill=backfill, from_config=from_config)
    session.add(feed)
    return feed


def find_feed(session: Session, name_or_url: str) -> Feed | None:
    """The feed with this name or this URL, or None."""
    return session.scalar(select(Feed).where(
        (Feed.name == name_or_url) | (Feed.url == name_or_url)))


def get_feed(session: Session, feed_id: int) -> Feed | None:
    """The feed with this id (for a change in this session), or None when it is gone."""
    return session.get(Feed, feed_id)


def delete_feed(session: Session, feed: Feed) -> None:
    """Remove the feed's row (when the session commits)."""
    session.delete(feed)


def list_feeds(session: Session) -> list[Feed]:
    """Every feed, by id."""
    return list(session.scalars(select(Feed).order_by(Feed.id)))


def feed_count(session: Session) -> int:
    """How many feeds are listed."""
    return session.scalar(select(func.count()).select_from(Feed)) or 0
