"""What an editor should look at before an edition goes out: articles with no date, with
mojibake left after repair, with a title in another script than their text, or whose
teaser only repeats the title (`digest preview --check`)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from ..store.models import Article
from ..text import has_mojibake, is_junk_title
from .stories import undated
from .teasers import teaser_for

__all__ = ["article_flags", "script_of"]

# A text names its script when this share of its letters is in it; a title shorter than
# this many letters, or a text shorter than _TEXT_LETTERS, says too little to compare.
_DOMINANT = 0.8
_TITLE_LETTERS = 3
_TEXT_LETTERS = 40
# Scripts that one language writes together (Japanese mixes kanji and kana).
_SAME_SCRIPT = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HALFWIDTH": "CJK", "IDEOGRAPHIC": "CJK"}
_WORDS = re.compile(r"\w+")


def script_of(char: str) -> str | None:
    """The script of a letter, from its Unicode name ("LATIN", "CYRILLIC", "CJK", …);
    None for anything that is not a letter."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    first = name.split(" ", 1)[0] if name else "UNKNOWN"
    return _SAME_SCRIPT.get(first, first)


def _scripts(text: str) -> Counter[str]:
    return Counter(s for s in map(script_of, text) if s is not None)


def _other_script(title: str, text: str) -> str | None:
    """The script a text is written in, when its title has no letter of it (a Latin
    title over a Cyrillic text: a feed that mixed up its fields, or a wrong encoding)."""
    body = _scripts(text[:2000])
    heading = _scripts(title)
    if sum(heading.values()) < _TITLE_LETTERS or sum(body.values()) < _TEXT_LETTERS:
        return None
    script, count = body.most_common(1)[0]
    if count < _DOMINANT * sum(body.values()) or heading[script]:
        return None
    return script.title()


def _repeats_title(title: str, teaser: str) -> bool:
    """Whether the teaser says nothing but the title: the same words, or the title again
    followed by at most a few more."""
    words, said = _WORDS.findall(title.casefold()), _WORDS.findall(teaser.casefold())
    return bool(words) and said[:len(words)] == words and len(said) - len(words) <= 3


def article_flags(article: Article, teaser_words: int) -> list[str]:
    """Why an article needs an editor's look, one short reason each (none: it is fine)."""
    flags = []
    if undated(article):
        flags.append("undated (no date in its record, page or text; ranked by when it "
                     "came in)")
    title = article.edited_title or article.title
    if is_junk_title(title):
        flags.append(f"its title {title!r} has no letter or digit")
    text = article.summary or article.body or ""
    if has_mojibake(title) or has_mojibake(text[:2000]):
        flags.append("mojibake left in its title or text (a wrong encoding at the source)")
    script = _other_script(title, f"{article.summary or ''} {article.body or ''}")
    if script:
        flags.append(f"its title has no {script} letter while its text is {script}")
    teaser = article.edited_teaser or teaser_for(article.summary, article.body, teaser_words)
    if not teaser.strip():
        flags.append("no teaser (it has no text beyond its title)")
    elif _repeats_title(title, teaser):
        flags.append("its teaser only repeats the title")
    return flags
