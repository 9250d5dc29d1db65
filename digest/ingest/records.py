"""The one shape every parser produces, and the one place its text is made safe to store.

Every parser (files, feeds, the CLI, the web form) builds ArticleInput, so cleaning in
``__post_init__`` covers them all: no control character reaches the store (PostgreSQL
refuses NUL), and no bidi or format character reaches a title (it would end up in the
Subject and the body, where U+202E flips the text a reader sees)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

import regex

__all__ = ["ArticleInput", "clean_control", "clean_label"]

# C0 controls but tab, LF and CR; DEL. Lone surrogates (JSON allows "\ud800") cannot be
# encoded as UTF-8 by any driver, so they become U+FFFD like other undecodable input.
_CONTROL = regex.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = regex.compile(r"[\ud800-\udfff]")
# Format characters (Unicode category Cf: bidi embeddings, overrides and isolates, LRM/RLM,
# BOM/ZWNBSP, invisible operators, …) but ZWNJ and ZWJ, which Persian, Indic scripts and
# emoji sequences need to render correctly and which cannot reorder text.
_FORMAT = regex.compile(r"[\p{Cf}--[\u200c\u200d]]", flags=regex.VERSION1)


def clean_control(text: str) -> str:
    """text without control characters (tab and line breaks kept) or lone surrogates."""
    text = _CONTROL.sub("", text)
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def clean_label(text: str) -> str:
    """A one-line value that may reach a header (title, author, source name, tag): no
    control, bidi or format characters, and line breaks folded to single spaces."""
    return " ".join(_FORMAT.sub("", clean_control(text)).split())


# Fields that may end up in a header or a one-line place (Subject, From name, a list):
# cleaned with clean_label. Every other text field is cleaned with clean_control.
_LABELS = frozenset({"title", "author", "source_name", "topic"})


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

    def __post_init__(self) -> None:
        # Cleaning is idempotent, so dataclasses.replace() (which runs this again) is safe.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            cleaned: str | tuple[str, ...]
            if isinstance(value, str):
                cleaned = clean_label(value) if f.name in _LABELS else clean_control(value)
            elif isinstance(value, tuple):
                cleaned = tuple(c for c in (clean_label(v) for v in value) if c)
            else:
                continue
            if cleaned != value:
                object.__setattr__(self, f.name, cleaned)
