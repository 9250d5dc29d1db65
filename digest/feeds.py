"""Feeds: a list of sources polled over HTTP(S) into the store, safely.

Fetching allows http and https only (every redirect re-checked), with a timeout, a size
limit, a bounded number of redirects and conditional GET; the bytes go to feedparser,
never a URL or a path. Feeds are fetched concurrently with a bound, so one slow or dead
feed never holds up the others; the database writes happen in the calling thread.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
from sqlalchemy import select

from . import __version__
from .config import FetchSettings, Settings
from .errors import InputError
from .ingest.parsers import feed_records
from .ingest.writer import write_articles
from .links import is_web_url
from .models import Feed, utcnow
from .store import Store
from .topics import TopicClassifier

__all__ = ["FeedBook", "FetchResult", "FetchedFeed", "fetch_url"]

log = logging.getLogger("digest.feeds")

_REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class FetchedFeed:
    """What one HTTP fetch gave: new bytes, "not modified", or an error."""

    status: int | None
    data: bytes | None = None
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    final_url: str | None = None


@dataclass(frozen=True)
class FetchResult:
    name: str
    url: str
    status: str          # "added", "not modified", "error"
    added: int = 0
    duplicates: int = 0
    problems: tuple[str, ...] = ()


def _check_scheme(url: str) -> str | None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return f"refused a non-http(s) address {url[:100]!r}"
    if not is_web_url(url):
        return f"{url[:100]!r} is not a valid http(s) address"
    return None


def fetch_url(client: httpx.Client, url: str, settings: FetchSettings,
              etag: str | None = None, last_modified: str | None = None) -> FetchedFeed:
    """GET url (conditionally), following at most max_redirects http(s) redirects and
    reading at most max_bytes."""
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    current = url
    for _hop in range(settings.max_redirects + 1):
        refused = _check_scheme(current)
        if refused:
            return FetchedFeed(None, error=refused)
        try:
            with client.stream("GET", current, headers=headers) as response:
                if response.status_code == 304:
                    return FetchedFeed(304, etag=etag, last_modified=last_modified,
                                       final_url=current)
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location", "")
                    if not location:
                        return FetchedFeed(response.status_code,
                                           error=f"HTTP {response.status_code} without a "
                                                 f"Location")
                    current = urljoin(current, location)
                    continue
                if response.status_code >= 400:
                    return FetchedFeed(response.status_code,
                                       error=f"HTTP {response.status_code} "
                                             f"{response.reason_phrase}".strip())
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > settings.max_bytes:
                    return FetchedFeed(response.status_code, error=_too_big(settings))
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > settings.max_bytes:
                        return FetchedFeed(response.status_code, error=_too_big(settings))
                    chunks.append(chunk)
                return FetchedFeed(response.status_code, b"".join(chunks),
                                   response.headers.get("etag"),
                                   response.headers.get("last-modified"), final_url=current)
        except httpx.TimeoutException:
            return FetchedFeed(None, error=f"timed out after {settings.timeout:g} s")
        except httpx.HTTPError as exc:
            return FetchedFeed(None, error=f"{type(exc).__name__}: {exc}"[:300])
    return FetchedFeed(None, error=f"more than {settings.max_redirects} redirects")


def _too_big(settings: FetchSettings) -> str:
    return f"larger than the {round(settings.max_bytes / 2**20, 2):g} MB limit ([fetch] max_bytes)"


class FeedBook:
    """The feeds of one store (those added by command and those in the config)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.classifier = TopicClassifier(settings.topics, settings.digest.catch_all_topic)

    def _topic(self, topic: str | None) -> str | None:
        if not topic:
            return None
        known = self.classifier.known(topic)
        if known is None:
            raise InputError(f"unknown topic {topic!r}; choose from "
                             f"{', '.join(self.settings.topic_names)}")
        return known

    def add(self, url: str, name: str | None = None, topic: str | None = None,
            backfill: int | None = None, *, from_config: bool = False) -> Feed:
        refused = _check_scheme(url)
        if refused:
            raise InputError(f"{refused}; feeds must be http:// or https:// URLs")
        name = (name or urlsplit(url).hostname or url).strip()
        with self.store.writes.begin() as session:
            if session.scalar(select(Feed).where(Feed.url == url)):
                raise InputError(f"the feed {url} is already listed (see: digest feeds list)")
            if session.scalar(select(Feed).where(Feed.name == name)):
                raise InputError(f"a feed named {name!r} exists already; choose another "
                                 f"--name")
            feed = Feed(url=url, name=name, topic=self._topic(topic),
                        backfill=self.settings.fetch.backfill if backfill is None else backfill,
                        from_config=from_config)
            session.add(feed)
        return feed

    def remove(self, name_or_url: str) -> Feed:
        with self.store.writes.begin() as session:
            feed = session.scalar(select(Feed).where(
                (Feed.name == name_or_url) | (Feed.url == name_or_url)))
            if feed is None:
                raise InputError(f"no feed named {name_or_url!r} (see: digest feeds list)")
            session.delete(feed)
            return feed

    def sync_config(self) -> None:
        """Make the [[feeds]] of the config present in the table."""
        for item in self.settings.feeds:
            with self.store.sessions() as session:
                if session.scalar(select(Feed.id).where(Feed.url == item.url)):
                    continue
            try:
                self.add(item.url, item.name or None, item.topic or None, from_config=True)
            except InputError as exc:
                log.error("[[feeds]] %s: %s", item.url, exc)

    def feeds(self) -> list[Feed]:
        self.sync_config()
        with self.store.sessions() as session:
            return list(session.scalars(select(Feed).order_by(Feed.id)))

    def fetch(self, name: str | None = None,
              progress: Callable[[FetchResult], None] | None = None) -> list[FetchResult]:
        """Fetch every feed (or the one named), store new items, record each feed's health."""
        feeds = self.feeds()
        if name is not None:
            feeds = [f for f in feeds if name in (f.name, f.url)]
            if not feeds:
                raise InputError(f"no feed named {name!r} (see: digest feeds list)")
        settings = self.settings.fetch
        results: list[FetchResult] = []
        user_agent = (f"digest/{__version__} (newsletter digest; "
                      f"+{self.settings.digest.base_url})")
        with httpx.Client(timeout=settings.timeout, follow_redirects=False,
                          headers={"User-Agent": user_agent}) as client, \
                ThreadPoolExecutor(max_workers=max(1, settings.concurrency)) as pool:
            futures = {pool.submit(fetch_url, client, f.url, settings, f.etag,
                                   f.last_modified): f for f in feeds}
            for future in as_completed(futures):
                result = self._store(futures[future], future.result())
                results.append(result)
                self._log(result)
                if progress:
                    progress(result)
        return results

    def _store(self, feed: Feed, fetched: FetchedFeed) -> FetchResult:
        now = utcnow()
        with self.store.writes.begin() as session:
            row = session.get(Feed, feed.id)
            assert row is not None
            row.last_fetch_at = now
            if fetched.error:
                row.last_status = "error"
                row.last_error = f"{feed.url}: {fetched.error}"
                return FetchResult(feed.name, feed.url, "error", problems=(row.last_error,))
            if fetched.status == 304:
                row.last_status = "not modified"
                row.last_success_at = now
                row.last_error = None
                return FetchResult(feed.name, feed.url, "not modified")
            problems: list[str] = []
            warnings: list[str] = []
            _title, records = feed_records(fetched.data or b"", feed.url, problems, warnings)
            first_time = row.last_success_at is None
            records = self._mark_backlog(records, row.backfill if first_time else None)
            records = [dataclasses.replace(r, source_name=feed.name) for r in records]
            added, duplicates = write_articles(session, self.classifier, records,
                                               topic=row.topic, kind="feed")
            row.etag, row.last_modified = fetched.etag, fetched.last_modified
            row.items_added += added
            if records:
                row.last_success_at = now
            notes = problems + warnings
            row.last_error = "; ".join(notes)[:2000] if notes else None
            row.last_status = "error" if problems and not records else f"added {added}"
            return FetchResult(feed.name, feed.url, "error" if problems and not records
                               else "added", added, duplicates, tuple(notes))

    @staticmethod
    def _mark_backlog(records: Sequence, keep: int | None) -> list:  # type: ignore[type-arg]
        """On a feed's first fetch only its newest `keep` items count as new."""
        if keep is None:
            return list(records)
        order = sorted(range(len(records)), key=lambda i: (
            records[i].published_at is not None, records[i].published_at, -i), reverse=True)
        newest = set(order[:keep])
        return [r if i in newest else dataclasses.replace(r, backlog=True)
                for i, r in enumerate(records)]

    @staticmethod
    def _log(result: FetchResult) -> None:
        if result.status == "error":
            for problem in result.problems:
                log.error("feed %s: %s", result.name, problem)
        else:
            log.info("feed %s: %s%s", result.name, result.status,
                     f", {result.added} new, {result.duplicates} known"
                     if result.status == "added" else "")
            for problem in result.problems:
                log.warning("feed %s: %s", result.name, problem)
