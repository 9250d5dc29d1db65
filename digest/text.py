"""The one rule for text that comes from outside: what may be stored, and what may stand
in a header or any other one-line place (a title, a name, a subject).

Imports nothing of digest: the parsers, the subscriber service and the message builder
all clean with it."""

from __future__ import annotations

import ftfy
import regex
from ftfy.badness import is_bad

__all__ = ["clean_control", "clean_label", "decode_text", "greeting", "has_mojibake",
           "is_junk_title", "repair_text"]

# ftfy's repair of text decoded with the wrong encoding ("â€™" for "’", "Ã©" for "é")
# and nothing else: quotes, ligatures, widths, entities and normal forms stay as written.
_REPAIR = ftfy.TextFixerConfig(unescape_html=False, fix_latin_ligatures=False,
                               fix_character_width=False, uncurl_quotes=False,
                               fix_line_breaks=False, normalization=None, explain=False)
# What a greeting never says: a web address or a mail address, whatever a sign-up form
# was given as a name ("https://evil.example/verify now", "www.x.example", "a@b.example").
_LINKLIKE = regex.compile(r"://|\bwww\.|@|\b[\p{L}\d-]+\.(?:[\p{L}]{2,})\b", flags=regex.VERSION1)
# A title worth showing has a letter or a digit ("X", "π" and "9" are titles; "’…" is not).
_WORDLIKE = regex.compile(r"[\p{L}\p{N}]")

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


def repair_text(text: str) -> str:
    """text with mojibake repaired (ftfy); plain ASCII, which cannot hold any, as it is."""
    return text if text.isascii() else ftfy.fix_text(text, _REPAIR)


def has_mojibake(text: str) -> bool:
    """Whether text still looks like text decoded with the wrong encoding."""
    return not text.isascii() and is_bad(text)


def is_junk_title(title: str) -> bool:
    """Whether a title has no letter and no digit: empty, punctuation, symbols, controls."""
    return _WORDLIKE.search(title) is None


def greeting(name: str) -> str:
    """"Hello Ada," for "Ada Lovelace", and for "Lovelace, Ada" (a list's "Last, First");
    "Hello," for no name, or one that holds a web or mail address."""
    name = clean_label(name)
    if "," in name:
        last, _, first = name.partition(",")
        name = first if first.strip() else last
    if not name.strip() or _LINKLIKE.search(name):
        return "Hello,"
    return f"Hello {name.split()[0].strip(',;:')},"


# How much more chaos (charset-normalizer's measure of implausible text, 0 to 1) a Windows
# or ISO-8859 reading may show than a DOS or Mac code page's and still be preferred.
_NEARLY_AS_WELL = 0.1


def decode_text(data: bytes) -> tuple[str, str | None]:
    """(text, None) for UTF-8 (a byte-order mark is dropped); else (text, encoding) when
    charset-normalizer is sure of the encoding (e.g. a Latin-1 or cp1252 page saved by an
    old scraper, a spreadsheet's CSV); else ValueError naming the first invalid byte. The
    one decoding of files people bring: article text files and CSV imports."""
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        where = f"byte {exc.start}"
    # Imported here: only files that are not UTF-8 need it.
    from charset_normalizer import from_bytes

    results = from_bytes(data)
    best = results.best()
    if best is None:
        raise ValueError(f"not UTF-8 text (an invalid byte at {where}) and its encoding "
                         f"cannot be told; save it as UTF-8")
    # A short text (a CSV of names) can read a little "better" as a DOS or Mac code page
    # (cp775 made "Zoë" "Zoļ"), but files saved today in one byte per letter come from
    # Windows or ISO-8859, the web's legacy encodings: those win when they read the text
    # nearly as well.
    legacy = ("cp437", "cp7", "cp8", "mac")
    if best.encoding.startswith(legacy):
        modern = [m for m in results if not m.encoding.startswith(legacy)
                  and m.chaos <= best.chaos + _NEARLY_AS_WELL]
        if modern:
            best = min(modern, key=lambda m: (m.chaos, -m.coherence))
    # Western text in one byte per letter reads equally well as cp1250, cp1252 and cp1257
    # ("Grève" vs "Grčve"); when the detector cannot tell them apart, take windows-1252,
    # the web's own fallback for legacy text (it also reads ISO-8859-1).
    tied = [m for m in results if m.chaos <= best.chaos and m.coherence >= best.coherence]
    best = next((m for m in tied if m.encoding == "cp1252"), best)
    return str(best), best.encoding
