"""The one shape every parser produces, and the one place its text is made safe to store.

Every parser (files, feeds, the CLI, the web form) builds ArticleInput, so cleaning in
``__post_init__`` covers them all: mojibake is repaired (ftfy) before anything else reads
a title or teaser, no control character reaches the store (PostgreSQL
refuses NUL), and no bidi or format character reaches a title (it would end up in the
Subject and the body, where U+202E flips the text a reader sees)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from ..text import clean_control, clean_label, repair_text

__all__ = ["ArticleInput"]

# Fields that may end up in a header or a one-line place (Subject, From name, a list):
# cleaned with clean_label. Every other text field is cleaned with clean_control.
_LABELS = frozenset({"title", "author", "source_name", "topic"})
# Identifiers and addresses: cleaned, but never "repaired" (a guid is only compared).
_UNREPAIRED = frozenset({"where", "guid", "url", "canonical_url", "date_source"})


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
    # Within one feed an item is its guid/id. A link that several items of one feed share
    # (a podcast's homepage) names the show, not the item: url_is_identity is then False,
    # and the writer never takes such a url for "the same article".
    guid: str | None = None
    url_is_identity: bool = True
    # Where published_at came from: "record" (the JSON record's or feed item's own date) or
    # "page" (the HTML page's, see ingest.dates); the writer looks in the text when there
    # is none.
    date_source: str = "record"

    def __post_init__(self) -> None:
        # Cleaning is idempotent, so dataclasses.replace() (which runs this again) is safe.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            cleaned: str | tuple[str, ...]
            if isinstance(value, str):
                text = value if f.name in _UNREPAIRED else repair_text(value)
                cleaned = clean_label(text) if f.name in _LABELS else clean_control(text)
            elif isinstance(value, tuple):
                cleaned = tuple(c for c in (clean_label(repair_text(v)) for v in value) if c)
            else:
                continue
            if cleaned != value:
                object.__setattr__(self, f.name, cleaned)
