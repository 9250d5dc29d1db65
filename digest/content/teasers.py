"""Text cleaning for messy scraped or feed text, and sentence-aware teasers.

Everything that turns untrusted markup into text or safe HTML lives here, so the
rest of the code only ever sees clean strings.
"""

from __future__ import annotations

import html
import re

import nh3

__all__ = [
    "clean_text",
    "html_to_text",
    "make_teaser",
    "normalise_for_hash",
    "sanitize_html",
    "split_highlights",
    "teaser_for",
]

_BOILERPLATE = {
    "advertisement", "advertisements", "ad", "sponsored", "sponsored content",
    "show full article", "print article", "print", "next story", "previous story",
    "more stories", "related stories", "related articles", "related", "read more",
    "read full article", "continue reading", "share", "share this", "share this article",
    "share on facebook", "share on twitter", "tweet", "email", "comments", "view comments",
    "subscribe", "sign up", "skip to content", "skip to main content", "menu", "close",
    "loading", "loading...", "trending", "most popular", "recommended", "top stories",
    "click here", "follow us", "story continues below advertisement",
}
_HIGHLIGHT_HEADINGS = {"highlights", "key points", "key takeaways", "summary", "tl;dr",
                       "tldr", "in brief", "at a glance", "the gist"}
# A feed summary's tail that only points at the full article.
_TRAILERS = re.compile(
    r"\s*(\[(…|\.\.\.|&hellip;)\]|(continue reading|read more|the post .{0,200} appeared first"
    r" on .{0,200})[\s.…→»>]*)\s*$", re.IGNORECASE)
_BLOCK_TAGS = re.compile(
    r"<\s*(?:br|hr|/?p|/?div|/?li|/?ul|/?ol|/?h[1-6]|/?blockquote|/?tr|/?table|/?section|"
    r"/?article|/?header|/?footer|/?figure|/?figcaption|/?pre)\b[^>]*>", re.IGNORECASE)
_LOOKS_LIKE_HTML = re.compile(r"<[a-zA-Z!/][^>]*>|&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_ALLOWED_SCHEMES = {"http", "https", "mailto"}


def sanitize_html(fragment: str) -> str:
    """Untrusted HTML made safe to embed: no scripts, handlers, styles or non-http(s) links."""
    return nh3.clean(fragment, url_schemes=_ALLOWED_SCHEMES,
                     link_rel="noopener noreferrer nofollow")


def html_to_text(fragment: str) -> str:
    """Visible text of an HTML fragment, paragraphs separated by blank lines."""
    if not _LOOKS_LIKE_HTML.search(fragment):
        return fragment
    marked = _BLOCK_TAGS.sub("\n\n", fragment)
    # nh3 drops <script>/<style> with their content and every other tag, keeping text.
    text = nh3.clean(marked, tags=set(), clean_content_tags={"script", "style", "noscript",
                                                               "template", "iframe", "object"})
    return html.unescape(text)


def _norm_line(line: str) -> str:
    return re.sub(r"[\W_]+", " ", line).strip().casefold()


def clean_text(text: str, title: str | None = None) -> str:
    """Tags stripped, entities decoded, whitespace folded, boilerplate and a repeated title
    dropped. Paragraphs are separated by one blank line."""
    text = html_to_text(text)
    title_key = _norm_line(title) if title else None
    paragraphs: list[str] = []
    current: list[str] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = _SPACES.sub(" ", raw).strip()
        key = _norm_line(line)
        if not line:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        if (key in _BOILERPLATE or len(line) == 1 or (title_key and key == title_key)
                or not key and len(line) < 4):
            continue
        current.append(line)
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def split_highlights(text: str) -> tuple[str | None, str]:
    """Take a "Highlights"-style block (a heading line, then text up to a blank line) out of
    cleaned text: returns (the block's text or None, the rest)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.strip().rstrip(":").casefold() in _HIGHLIGHT_HEADINGS:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block: list[str] = []
            while j < len(lines) and lines[j].strip():
                block.append(lines[j].strip())
                j += 1
            if block:
                rest = "\n".join(lines[:i] + lines[j:])
                return " ".join(block), re.sub(r"\n{3,}", "\n\n", rest).strip()
    return None, text


_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "inc", "ltd", "co", "corp", "vs",
    "etc", "e.g", "i.e", "u.s", "u.k", "u.n", "no", "gen", "gov", "sen", "rep", "lt", "col",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "approx", "dept", "est", "fig", "mt", "ft",
}
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z0-9])")


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        before = text[start:m.start()].split()
        last = before[-1].rstrip(".").lower() if before else ""
        if m.group().startswith(".") and (last in _ABBREVIATIONS
                                          or (len(last) == 1 and last.isalpha())):
            continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def _with_ellipsis(text: str) -> str:
    text = text.rstrip(" ,;:-–—")
    if text.endswith("…"):
        return text
    if text.endswith("."):
        return text.rstrip(".") + "…"
    return text + "…"


def make_teaser(text: str, max_words: int) -> str:
    """At most max_words words of text, whole sentences where possible, never a cut word;
    ends with "…" when shortened."""
    flat = " ".join(text.split())
    if not flat:
        return ""
    if len(flat.split()) <= max_words:
        return flat
    chosen: list[str] = []
    count = 0
    for sentence in _sentences(flat):
        n = len(sentence.split())
        if count + n > max_words:
            break
        chosen.append(sentence)
        count += n
    if chosen and count >= max_words // 3:
        return _with_ellipsis(" ".join(chosen))
    # The first sentence alone is too long (or too little fits): cut at a word boundary.
    return _with_ellipsis(" ".join(flat.split()[:max_words]))


def teaser_for(summary: str | None, body: str, max_words: int) -> str:
    """The teaser of an article: its explicit summary when it has one, else its body."""
    if summary:
        cleaned = _TRAILERS.sub("", summary).strip().rstrip(".…")
        if len(cleaned.split()) >= 5 and not _is_cut_from(cleaned, body):
            return make_teaser(_TRAILERS.sub("", summary).strip(), max_words)
    text = make_teaser(body, max_words)
    return text or make_teaser(summary or "", max_words)


def _is_cut_from(summary: str, body: str) -> bool:
    """A feed's summary that is only the start of the body with its markup stripped (often
    with words glued together where tags were): the body makes the better teaser."""
    letters = re.sub(r"\W+", "", summary)
    return len(letters) > 20 and re.sub(r"\W+", "", body).startswith(letters)


def normalise_for_hash(text: str) -> str:
    """Case, punctuation and whitespace folded: two copies of one text compare equal."""
    return " ".join(re.sub(r"[\W_]+", " ", text.casefold()).split())
