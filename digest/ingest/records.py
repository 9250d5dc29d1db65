"""The one shape every parser produces."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ArticleInput:
    """An article as read from some input, already cleaned to text (and safe HTML)."""

    title: str
    body: str
    where: str                         # "file:line" or similar, for messages
    url: str | None = None
    canonical_url: str | None = None   # the page's or feed's own canonical link, when known
    summary: str | None = None
    body_html: str | None = None
    topic: str | None = None           # an explicit topic
    categories: tuple[str, ...] = ()   # feed categories: one may name a configured topic
    tags: tuple[str, ...] = ()
    published_at: datetime | None = None
    author: str | None = None
    source_name: str | None = None
    backlog: bool = False              # part of a new feed's back catalogue: never "new"
