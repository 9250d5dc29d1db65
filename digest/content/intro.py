"""An editor's intro note: Markdown in, sanitised HTML and plain text out.

The note is written by an editor, but it goes into every subscriber's mail, so it is
treated like any outside text: markdown-it-py renders CommonMark with raw HTML off, and
nh3 keeps only the tags and the http(s)/mailto links a mail may carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import nh3
from markdown_it import MarkdownIt

__all__ = ["INTRO_MAX", "Intro", "render_intro"]

# The longest note: a few paragraphs, not an article.
INTRO_MAX = 5000

_TAGS = {"p", "br", "strong", "em", "b", "i", "a", "ul", "ol", "li", "blockquote", "code",
         "h3", "h4"}
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


@dataclass(frozen=True)
class Intro:
    html: str
    text: str


def _html(source: str) -> str:
    # Headings in a note sit below the edition's own: # and ## become h3, deeper h4.
    rendered = _MARKDOWN.render(source)
    rendered = re.sub(r"<(/?)h[12]>", r"<\1h3>", rendered)
    rendered = re.sub(r"<(/?)h[5-6]>", r"<\1h4>", rendered)
    return nh3.clean(rendered, tags=_TAGS, attributes={"a": {"href"}},
                     url_schemes={"http", "https", "mailto"}, link_rel="noopener").strip()


def render_intro(source: str | None) -> Intro | None:
    """The note as HTML (sanitised) and as text (its Markdown, which reads as text);
    None when there is no note."""
    if source is None or not source.strip():
        return None
    text = "\n".join(line.rstrip() for line in source.strip().splitlines())
    return Intro(_html(text), text)
