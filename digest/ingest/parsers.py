"""One parser per input kind. Each turns a file into ArticleInput records and a list of
problems (one line each, naming the file and, where it can, the line or item)."""

from __future__ import annotations

import calendar
import collections
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser

from ..content.links import canonical_url, is_web_url
from ..content.teasers import (
    clean_text,
    clean_title,
    html_to_text,
    sanitize_html,
    split_highlights,
)
from ..text import decode_text
from .dates import date_from_page
from .records import ArticleInput

__all__ = ["SUFFIXES", "ParsedFile", "feed_records", "parse_date", "parse_path"]

MAX_FILE_BYTES = 50 * 1024 * 1024


@dataclass
class ParsedFile:
    path: Path
    now: datetime                                         # when it is read
    records: list[ArticleInput] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # something was not imported
    warnings: list[str] = field(default_factory=list)   # imported, but worth knowing


def parse_date(value: Any) -> datetime | None:
    """An aware UTC datetime from ISO 8601, RFC 822 or a Unix time; ValueError if unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError):
            raise ValueError(f"{value!r} is out of range for a Unix time; use ISO 8601, "
                             f"e.g. 2024-05-17T09:00:00Z") from None
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"{value!r} is not a date; use ISO 8601, e.g. "
                             f"2024-05-17T09:00:00Z") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _domain(url: str | None) -> str | None:
    if not is_web_url(url):
        return None
    host = urlsplit(url or "").hostname or ""
    return host[4:] if host.startswith("www.") else host or None


def _str_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list):
        return tuple(str(v).strip() for v in value if str(v).strip())
    raise ValueError(f"expected a list of strings, got {value!r}")


def _text_or_html(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value


# --- JSON and JSON Lines ---------------------------------------------------------------

def _json_record(obj: Any, where: str, feed_title: str | None = None) -> ArticleInput:
    if not isinstance(obj, dict):
        raise ValueError("expected an object with title, url, body, …")
    # JSON Feed items use content_html/content_text/date_published/authors.
    raw_title = _text_or_html(obj.get("title"), "title")
    title = clean_title(raw_title)
    raw_body = obj.get("body", obj.get("content_html", obj.get("content_text", obj.get("content"))))
    raw_body = _text_or_html(raw_body, "body")
    raw_summary = _text_or_html(obj.get("summary", obj.get("description")), "summary")
    summary = clean_text(raw_summary, title) or None
    body = clean_text(raw_body, title)
    highlight, body = split_highlights(body)
    summary = summary or highlight
    if not title:
        raise ValueError("missing title (every article needs a non-empty \"title\")")
    url = obj.get("url") or obj.get("link") or obj.get("external_url")
    if not body and not summary and not url:
        raise ValueError(f"article {title[:60]!r} has no body, summary or url")
    if url is not None and not isinstance(url, str):
        raise ValueError(f"url must be a string, got {url!r}")
    if url and not is_web_url(url):
        raise ValueError(f"url {url[:80]!r} is not an absolute http(s) URL")
    author = obj.get("author")
    if isinstance(author, dict):
        author = author.get("name")
    if author is None and isinstance(obj.get("authors"), list) and obj["authors"]:
        first = obj["authors"][0]
        author = first.get("name") if isinstance(first, dict) else str(first)
    date = obj.get("published_at", obj.get("date_published", obj.get("published",
                                                                     obj.get("date"))))
    topic = obj.get("topic")
    if topic is not None and not isinstance(topic, str):
        raise ValueError(f"topic must be a string, got {topic!r}")
    source = obj.get("source") if isinstance(obj.get("source"), str) else None
    return ArticleInput(
        title=title[:1000], body=body, where=where, url=url or None, summary=summary,
        body_html=sanitize_html(raw_body) if raw_body and raw_body != html_to_text(raw_body)
        else None,
        topic=topic, tags=_str_list(obj.get("tags")), published_at=parse_date(date),
        author=str(author).strip()[:300] if author else None,
        source_name=source or feed_title or _domain(url),
    )


def _loads(text: str | bytes) -> Any:
    """json.loads, with nesting too deep for the parser as a ValueError like any other."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read (an article is an object of strings "
                         "and lists, a few levels deep)") from None


def _parse_json(path: Path, data: bytes, out: ParsedFile) -> None:
    try:
        doc = _loads(data)
    except json.JSONDecodeError as exc:
        out.problems.append(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}")
        return
    except UnicodeDecodeError as exc:
        out.problems.append(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                            f"save it as UTF-8")
        return
    except ValueError as exc:
        out.problems.append(f"{path}: not valid JSON: {exc}")
        return
    feed_title = None
    if isinstance(doc, dict):
        if str(doc.get("version", "")).startswith("https://jsonfeed.org/"):
            feed_title = doc.get("title") if isinstance(doc.get("title"), str) else None
            items = doc.get("items")
        else:
            items = doc.get("articles", doc.get("items"))
            if items is None and "title" in doc:
                items = [doc]
        if not isinstance(items, list):
            out.problems.append(f"{path}: expected a list of articles (or an object with "
                                f"\"articles\": [...])")
            return
    elif isinstance(doc, list):
        items = doc
    else:
        out.problems.append(f"{path}: expected a list of articles, got {type(doc).__name__}")
        return
    for i, obj in enumerate(items, 1):
        _collect(out, f"{path}: item {i}", partial(_json_record, obj, f"{path}: item {i}",
                                                   feed_title))


def _parse_jsonl(path: Path, data: bytes, out: ParsedFile) -> None:
    # Line by line from the bytes: one undecodable or unreadable line is that line's
    # problem, never the whole file's. JSON Lines separates records by "\n" only.
    data = data.removeprefix(b"\xef\xbb\xbf")
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = _loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            out.problems.append(f"{where}: not UTF-8 text ({exc.reason} at column "
                                f"{exc.start + 1}); save the file as UTF-8")
            continue
        except json.JSONDecodeError as exc:
            out.problems.append(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except ValueError as exc:
            out.problems.append(f"{where}: not valid JSON: {exc}")
            continue
        _collect(out, where, partial(_json_record, obj, where))


def _collect(out: ParsedFile, where: str, build: Callable[[], ArticleInput]) -> None:
    try:
        out.records.append(build())
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        # Whatever shape one record has, it is that record's problem only.
        out.problems.append(f"{where}: {exc}")


# --- Plain text (scraped pages) ---------------------------------------------------------

def _parse_txt(path: Path, data: bytes, out: ParsedFile) -> None:
    try:
        text, encoding = decode_text(data)
    except ValueError as exc:
        out.problems.append(f"{path}: {exc}")
        return
    if encoding:
        out.warnings.append(f"{path}: not UTF-8; read as {encoding}")
    lines = [line for line in text.replace("\r\n", "\n").split("\n")]
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        out.problems.append(f"{path}: no text in the file (the first non-empty line is the "
                            f"title, the rest the article)")
        return
    title = " ".join(lines[first].split())
    rest = "\n".join(lines[first + 1:])
    url = None
    # A scraped page may start with its address on the line after the title.
    head = rest.lstrip().split("\n", 1)[0].strip()
    if is_web_url(head) and " " not in head:
        url, rest = head, rest.lstrip()[len(head):]
    body = clean_text(rest, title)
    summary, body = split_highlights(body)
    if not body and not summary:
        out.problems.append(f"{path}: only a title ({title[:60]!r}) and no article text")
        return
    out.records.append(ArticleInput(title=title[:1000], body=body, summary=summary,
                                    where=str(path), url=url, source_name=_domain(url)))


# --- HTML article pages -----------------------------------------------------------------

def _parse_html(path: Path, data: bytes, out: ParsedFile) -> None:
    # Imported here: trafilatura is heavy, and `digest send` never reads HTML pages.
    import trafilatura

    doc = trafilatura.bare_extraction(data, with_metadata=True, include_comments=False,
                                      include_tables=False)
    meta = doc.as_dict() if doc is not None and hasattr(doc, "as_dict") else (doc or {})
    text = (meta.get("text") or "").strip()
    title = " ".join((meta.get("title") or "").split())
    if not text:
        out.problems.append(f"{path}: no article text found in the page")
        return
    if not title:
        title = " ".join(text.split()[:12])
    url = meta.get("url") if is_web_url(meta.get("url")) else None
    published = date_from_page(data, out.now)
    body = clean_text(text.replace("\n", "\n\n"), title)
    description = clean_text(meta.get("description") or "", title) or None
    out.records.append(ArticleInput(
        title=title[:1000], body=body, summary=description, where=str(path), url=url,
        canonical_url=url, published_at=published, date_source="page",
        author=meta.get("author") or None,
        categories=tuple(meta.get("categories") or ()), tags=tuple(meta.get("tags") or ())[:20],
        source_name=meta.get("sitename") or _domain(url),
    ))


# --- Feeds (RSS, Atom, RDF) -------------------------------------------------------------

def _struct_to_datetime(value: time.struct_time | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(calendar.timegm(value), UTC)


def feed_records(data: bytes, where: str, out_problems: list[str],
                 out_warnings: list[str]) -> tuple[str | None, list[ArticleInput]]:
    """Parse feed bytes (never a URL or path) into (feed title, records)."""
    if data[:1].isspace():
        # Whitespace before the XML declaration makes the XML parser give up (and
        # feedparser fall back to its lenient mode) on an otherwise fine feed.
        data = data.lstrip()
    parsed = feedparser.parse(data, sanitize_html=True, resolve_relative_uris=True)
    entries = parsed.get("entries", [])
    if not entries:
        head = data[:512].lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html")):
            out_problems.append(f"{where}: this is an HTML page, not an RSS/Atom feed")
        elif parsed.get("bozo"):
            out_problems.append(f"{where}: not a readable feed: {parsed.get('bozo_exception')}")
        else:
            out_problems.append(f"{where}: the feed has no entries")
        return None, []
    if parsed.get("bozo"):
        out_warnings.append(f"{where}: the feed is malformed "
                            f"({parsed.get('bozo_exception')}); read what could be read")
    feed_title = clean_text(parsed.feed.get("title", "")).replace("\n\n", " ") or None
    links = _item_links(entries)
    records = []
    for i, entry in enumerate(entries, 1):
        entry_where = f"{where}: entry {i}"
        raw_title = entry.get("title", "")
        title = clean_title(raw_title)
        content = ""
        if entry.get("content"):
            content = max((c.get("value", "") for c in entry["content"]), key=len)
        summary_html = entry.get("summary", "")
        if summary_html == content:
            summary_html = ""
        body_html = content or summary_html
        body = clean_text(body_html, title)
        summary = clean_text(summary_html, title) or None
        if not title:
            title = " ".join(body.split()[:12])
        if not title:
            out_problems.append(f"{entry_where}: no title and no text; skipped")
            continue
        link, link_is_identity = links[i - 1]
        guid = entry.get("id")
        records.append(ArticleInput(
            title=title[:1000], body=body, summary=summary, where=entry_where,
            url=link, url_is_identity=link_is_identity,
            guid=guid[:2000] if isinstance(guid, str) and guid.strip() else None,
            body_html=sanitize_html(body_html) if body_html else None,
            categories=tuple(t.get("term", "") for t in entry.get("tags", []) if t.get("term")),
            tags=tuple(t.get("term", "") for t in entry.get("tags", []) if t.get("term"))[:20],
            published_at=_struct_to_datetime(entry.get("published_parsed")
                                             or entry.get("updated_parsed")),
            author=(entry.get("author") or None),
            source_name=feed_title or _domain(parsed.feed.get("link")),
        ))
    return feed_title, records


def _enclosure(entry: Any) -> str | None:
    """The item's first web enclosure (a podcast episode's audio), if any."""
    for enclosure in entry.get("enclosures") or ():
        href = enclosure.get("href")
        if is_web_url(href):
            return str(href)
    return None


def _item_links(entries: list[Any]) -> list[tuple[str | None, bool]]:
    """(url, url is the item's identity) for each entry of one feed.

    Within a feed an item is its guid/id, not its link: a podcast feed may give all its
    episodes the show's homepage as <link>, each with its own guid. A link that several
    items share is not an identity; such an item links its own permalink (a guid that is
    a web URL) or its enclosure instead, and keeps the shared link (marked as no identity)
    only when it has neither."""
    chosen = [link if is_web_url(link := entry.get("link")) else None for entry in entries]
    keys = [canonical_url(url) for url in chosen]
    shared = _shared(keys)
    if not shared:
        return [(url, True) for url in chosen]
    for i, entry in enumerate(entries):
        if keys[i] in shared:
            guid = entry.get("id")
            own = guid if is_web_url(guid) and canonical_url(guid) not in shared \
                else _enclosure(entry)
            if own:
                chosen[i], keys[i] = own, canonical_url(own)
    # An own link may still be shared (the same enclosure on two items, or guids that
    # differ only in their #fragment): then it is no identity either.
    shared = _shared(keys)
    return [(url, url is None or key not in shared)
            for url, key in zip(chosen, keys, strict=True)]


def _shared(keys: list[str | None]) -> set[str]:
    """The canonical URLs that occur more than once."""
    counts = collections.Counter(key for key in keys if key)
    return {key for key, n in counts.items() if n > 1}


def _parse_feed(path: Path, data: bytes, out: ParsedFile) -> None:
    _title, records = feed_records(data, str(path), out.problems, out.warnings)
    out.records.extend(records)


_PARSERS: dict[str, Callable[[Path, bytes, ParsedFile], None]] = {
    ".json": _parse_json,
    ".jsonl": _parse_jsonl,
    ".txt": _parse_txt,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".xml": _parse_feed,
    ".rss": _parse_feed,
    ".atom": _parse_feed,
}
SUFFIXES = tuple(_PARSERS)


def _files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and not child.name.startswith("."):
                yield child
    else:
        yield path


def parse_path(path: Path, now: datetime) -> Iterator[ParsedFile]:
    """Parse a file, or every file under a directory (recursively), one ParsedFile each;
    now: when they are read (a page's date after it is no publication date)."""
    if not path.exists():
        yield ParsedFile(path, now, problems=[f"{path}: no such file or directory"])
        return
    for file in _files(path):
        out = ParsedFile(file, now)
        parser = _PARSERS.get(file.suffix.lower())
        if parser is None:
            out.problems.append(f"{file}: unknown file type {file.suffix or '(none)'!r}; "
                                f"use one of {', '.join(SUFFIXES)}")
        else:
            try:
                size = file.stat().st_size
                if size > MAX_FILE_BYTES:
                    out.problems.append(f"{file}: {size} bytes is over the "
                                        f"{MAX_FILE_BYTES // 2**20} MB limit")
                else:
                    parser(file, file.read_bytes(), out)
            except OSError as exc:
                out.problems.append(f"{file}: cannot read: {exc.strerror}")
            except RecursionError:
                # A parser's own recursion on absurdly nested input: this file only.
                out.records.clear()
                out.problems.append(f"{file}: nested too deeply to read; nothing imported "
                                    f"from it")
        yield out
