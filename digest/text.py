"""The one rule for text that comes from outside: what may be stored, and what may stand
in a header or any other one-line place (a title, a name, a subject).

Imports nothing of digest: the parsers, the subscriber service and the message builder
all clean with it."""

from __future__ import annotations

import regex

__all__ = ["clean_control", "clean_label"]

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
