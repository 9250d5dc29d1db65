"""Feeds: a list of sources polled over HTTP(S) into the store, safely.

Fetching allows http and https only (every redirect re-checked), with a timeout per
network operation, a deadline for the whole fetch, a size limit on the decoded body, a
bounded number of redirects and conditional GET; the bytes go to feedparser, never a URL
or a path. Feeds are fetched concurrently with a bound, so one slow or dead feed never
holds up the others; the database writes happen in the calling thread.

Everything that can go wrong with one feed (the network, httpx, the server's bytes, our
own refusals) is caught in one place, `read_feed`, and becomes that feed's error in its
health; one feed never stops a run or loses the other feeds' results.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urljoin

import httpx

from .. import __version__
from ..config import FetchSettings, Settings
from ..content.topics import TopicClassifier
from ..errors import DigestError, InputError
from ..store.articles import set_source_weight
from ..store.db import Session, Store
from ..store.feeds import (
    add_feed,
    delete_feed,
    feed_listed,
    find_feed,
    get_feed,
    list_feeds,
    taken_feed_names,
)
from ..store.models import Feed
from . import ArticleInput
from .addresses import AddressRefused, guarded_transport, resolve_checked
from .parsers import feed_records
from .writer import fresh_from, write_articles

__all__ = ["FeedBook", "FeedRead", "FetchResult", "FetchedFeed", "fetch_url", "read_feed"]

log = logging.getLogger("digest.feeds")

_REDIRECTS = {301, 302, 303, 307, 308}

# The failures one feed can cause that are about that feed, not about our code: httpx's
# whole exception tree (InvalidURL, CookieConflict and StreamError are not HTTPError),
# idna's IDNAError (a UnicodeError) that httpx lets through for a bad host name in a
# Location header, and our own refusals (DigestError).
_FEED_FAILURES = (DigestError, httpx.HTTPError, httpx.InvalidURL, httpx.CookieConflict,
                  httpx.StreamError, UnicodeError)

# We only ask for codings we decode ourselves, in bounded steps (see _inflate).
_ACCEPT_ENCODING = "gzip, deflate"
_MAX_CODINGS = 3
_INFLATE_STEP = 64 * 1024

# Column sizes of feeds.etag and feeds.last_modified: a longer validator is not kept
# (PostgreSQL would refuse it, and a conditional GET is only an optimisation).
_ETAG_MAX = 500
_LAST_MODIFIED_MAX = 100
_NAME_MAX = 200


@dataclass(frozen=True)
class FetchedFeed:
    """What one successful HTTP fetch gave: the decoded bytes (200) or "not modified" (304)."""

    status: int
    data: bytes = b""
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FeedRead:
    """One feed fetched and parsed, or the one-line reason it could not be.

    `failure` is set when nothing usable came back (the fetch failed, or the body held no
    readable entries); `problems` and `warnings` are about single entries or the markup."""

    fetched: FetchedFeed | None = None
    title: str | None = None
    records: list[ArticleInput] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def failure(self) -> str | None:
        if self.error:
            return self.error
        if self.fetched is not None and self.fetched.status != 304 and not self.records:
            return "; ".join(self.problems) or "the feed has no entries"
        return None


@dataclass(frozen=True)
class FetchResult:
    """One feed's outcome in a run: `added` counts the items that are new for the next
    edition, `backlog` the older items stored as the feed's back catalogue, `too_old` the
    items stored as too old to be news ([ingest] max_age_days)."""

    name: str
    url: str
    status: str          # "added", "not modified", "error"
    added: int = 0
    duplicates: int = 0
    problems: tuple[str, ...] = ()
    backlog: int = 0
    too_old: int = 0


def _refusal(url: str) -> str | None:
    """Why url cannot be fetched as a feed, or None. It must parse the way httpx (which
    fetches it) parses it, be http(s) and name a host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError, ValueError, TypeError) as exc:
        return f"{url[:100]!r} is not a valid address ({exc})"
    if parsed.scheme not in ("http", "https"):
        return f"refused a non-http(s) address {url[:100]!r}"
    if not parsed.host:
        return f"{url[:100]!r} is not a valid http(s) address (it names no host)"
    return None


def fetch_url(client: httpx.Client, url: str, settings: FetchSettings,
              etag: str | None = None, last_modified: str | None = None) -> FetchedFeed:
    """GET url (conditionally), following at most max_redirects http(s) redirects, reading
    at most max_bytes (raw and decoded), and giving up after deadline_seconds in all.

    Raises InputError for what we refuse or the server failed at (with a one-line reason),
    and lets httpx's own errors through; `read_feed` turns both into the feed's error."""
    deadline = time.monotonic() + settings.deadline_seconds
    headers = {"Accept-Encoding": _ACCEPT_ENCODING}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    current = url
    for _hop in range(settings.max_redirects + 1):
        refused = _refusal(current)
        if refused:
            raise InputError(refused)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InputError(_too_slow(settings))
        # A single read never waits past the deadline either (the whole body can still
        # overrun it by one read: httpx fixes a read timeout when the response starts).
        budget = min(settings.timeout, remaining)
        try:
            with client.stream("GET", current, headers=headers,
                               timeout=httpx.Timeout(budget)) as response:
                if response.status_code == 304:
                    return FetchedFeed(304, etag=etag, last_modified=last_modified)
                if response.status_code in _REDIRECTS:
                    current = _redirect_target(current, response)
                    continue
                if response.status_code >= 400:
                    raise InputError(f"HTTP {response.status_code} "
                                     f"{response.reason_phrase}".strip())
                data = _read_body(response, settings, deadline)
                return FetchedFeed(response.status_code, data,
                                   _validator(response.headers.get("etag"), _ETAG_MAX),
                                   _validator(response.headers.get("last-modified"),
                                              _LAST_MODIFIED_MAX))
        except AddressRefused as exc:
            raise InputError(f"refused {_shown(current)}: {exc}") from None
        except httpx.TimeoutException:
            if budget < settings.timeout or time.monotonic() >= deadline:
                raise InputError(_too_slow(settings)) from None
            raise InputError(f"timed out after {settings.timeout:g} s") from None
        except (httpx.InvalidURL, UnicodeError) as exc:
            # current parsed (_refusal above): httpx choked on the Location it was sent
            # while preparing the redirect (a data: URL, a host name idna refuses).
            raise InputError(f"redirected to an address that cannot be fetched ({exc})") \
                from None
    raise InputError(f"more than {settings.max_redirects} redirects")


def _shown(url: str) -> str:
    return url if len(url) <= 100 else url[:99] + "…"


def _redirect_target(current: str, response: httpx.Response) -> str:
    location = str(response.headers.get("location", ""))
    if not location:
        raise InputError(f"HTTP {response.status_code} without a Location")
    try:
        return urljoin(current, location)
    except ValueError as exc:
        raise InputError(f"redirected to an address that cannot be fetched "
                         f"{location[:100]!r} ({exc})") from None


def _validator(value: str | None, limit: int) -> str | None:
    return value if value and len(value) <= limit else None


def _read_body(response: httpx.Response, settings: FetchSettings, deadline: float) -> bytes:
    """The body decoded as it arrives. Refused as soon as more than max_bytes arrive or
    come out of decoding (so a small body that inflates to gigabytes costs neither the
    memory nor the time), or when the deadline passes between two reads."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_bytes:
        raise InputError(_too_big(settings))
    codings = [c.strip().lower() for c in
               response.headers.get_list("content-encoding", split_commas=True)]
    codings = [c for c in codings if c and c != "identity"]
    if len(codings) > _MAX_CODINGS:
        raise InputError(f"the body is encoded {len(codings)} times "
                         f"(Content-Encoding: {', '.join(codings)[:100]}); at most "
                         f"{_MAX_CODINGS} are read")
    chunks: Iterable[bytes] = _raw(response, settings, deadline)
    for coding in reversed(codings):            # the last coding applied comes off first
        chunks = _inflate(chunks, coding)
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > settings.max_bytes:
            raise InputError(_too_big(settings, decoded=bool(codings)))
    return bytes(body)


def _raw(response: httpx.Response, settings: FetchSettings,
         deadline: float) -> Iterator[bytes]:
    size = 0
    for chunk in response.iter_raw():
        size += len(chunk)
        if size > settings.max_bytes:
            raise InputError(_too_big(settings))
        if time.monotonic() > deadline:
            raise InputError(_too_slow(settings))
        yield chunk


def _inflate(chunks: Iterable[bytes], coding: str) -> Iterator[bytes]:
    """Undo one gzip or deflate layer, never more than _INFLATE_STEP bytes per step, so
    the caller's count stops a decompression bomb before it is in memory."""
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise InputError(f"unsupported Content-Encoding {coding!r} (we ask for "
                         f"{_ACCEPT_ENCODING})")
    decoder: zlib._Decompress | None = None
    head = b""
    try:
        for chunk in chunks:
            if decoder is None:
                head += chunk
                if len(head) < 2:
                    continue
                decoder = zlib.decompressobj(_wbits(coding, head))
                chunk, head = head, b""
            while chunk:
                yield from _drain(decoder, chunk)
                # Concatenated gzip members are one body; anything else after the end of
                # the stream is ignored, as browsers do.
                chunk = decoder.unused_data if decoder.eof else b""
                if chunk[:2] == b"\x1f\x8b":
                    decoder = zlib.decompressobj(_wbits(coding, chunk))
                else:
                    chunk = b""
        if decoder is None:
            if head:
                raise InputError(f"the body is not valid {coding} data (truncated)")
            return
        yield decoder.flush()
    except zlib.error as exc:
        raise InputError(f"the body is not valid {coding} data ({exc})") from None


def _drain(decoder: zlib._Decompress, data: bytes) -> Iterator[bytes]:
    while True:
        out = decoder.decompress(data, _INFLATE_STEP)
        if out:
            yield out
        data = decoder.unconsumed_tail
        # A full step may leave output inside zlib even when all input is consumed.
        if not data and (len(out) < _INFLATE_STEP or decoder.eof):
            return


def _wbits(coding: str, head: bytes) -> int:
    if coding != "deflate":
        return zlib.MAX_WBITS | 32               # gzip (or a zlib stream mislabelled gzip)
    # "deflate" means a zlib stream (RFC 9110), but some servers send raw deflate.
    zlib_header = head[0] & 0x0F == 8 and int.from_bytes(head[:2], "big") % 31 == 0
    return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def _too_big(settings: FetchSettings, *, decoded: bool = False) -> str:
    return (f"larger than the {round(settings.max_bytes / 2**20, 2):g} MB limit"
            f"{' once decompressed' if decoded else ''} ([fetch] max_bytes)")


def _too_slow(settings: FetchSettings) -> str:
    return (f"took longer than {settings.deadline_seconds:g} s in all "
            f"([fetch] deadline_seconds)")


def read_feed(client: httpx.Client, url: str, settings: FetchSettings,
              etag: str | None = None, last_modified: str | None = None) -> FeedRead:
    """Fetch and parse one feed. Never raises for anything the feed, its server or the
    network did: every such failure comes back as `error`, one line starting with url.
    (A bug in our code still raises.)"""
    try:
        fetched = fetch_url(client, url, settings, etag, last_modified)
        if fetched.status == 304:
            return FeedRead(fetched)
        problems: list[str] = []
        warnings: list[str] = []
        title, records = feed_records(fetched.data, url, problems, warnings)
        return FeedRead(fetched, title, records, problems, warnings)
    except DigestError as exc:
        error = str(exc)
    except _FEED_FAILURES as exc:
        error = f"{type(exc).__name__}: {exc}"
    return FeedRead(error=f"{url}: {error[:300]}")


def _client(settings: Settings, transport: httpx.BaseTransport | None) -> httpx.Client:
    """The HTTP client feeds are fetched with (redirects are followed by fetch_url, which
    re-checks each one), over `transport`, or when that is None over httpx's own HTTP
    transport (its default pool limits) that connects only to addresses a feed may be
    fetched from ([fetch] allow_private; see addresses.py)."""
    user_agent = (f"digest/{__version__} (newsletter digest; "
                  f"+{settings.digest.base_url})")
    if transport is None:
        transport = guarded_transport(settings.fetch.allow_private)
    return httpx.Client(timeout=settings.fetch.timeout, follow_redirects=False,
                        headers={"User-Agent": user_agent}, transport=transport)


class FeedBook:
    """The feeds of one store (those added by command and those in the config).

    Feeds are fetched over `transport` when one is given (httpx's style: a test or an
    embedding application brings its own, and with it the duty to refuse internal
    addresses), else over a real HTTP transport that refuses them. The client
    built on it is closed after each use, and closes the transport with it, as an
    httpx.Client does: pass one that can be used again after closing (httpx's can)."""

    def __init__(self, store: Store, settings: Settings,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.store = store
        self.settings = settings
        self.transport = transport
        self.classifier = TopicClassifier.from_settings(settings)

    def _topic(self, topic: str | None) -> str | None:
        return self.classifier.require(topic) if topic else None

    def add(self, url: str, name: str | None = None, topic: str | None = None,
            backfill: int | None = None, *, from_config: bool = False) -> Feed:
        """Add a feed. Without a name, the feed is fetched once and named after its own
        title (made unique: "Title (host)", then "Title (host) 2"); a feed that cannot be
        read then is refused (InputError saying why), unless it comes from the config,
        where it is named after its host instead. A given name is used as is."""
        url = url.strip()
        refused = _refusal(url)
        if refused:
            raise InputError(f"{refused}; feeds must be http:// or https:// URLs")
        if len(url) > 2000:
            raise InputError(f"the feed address is {len(url)} characters long; at most 2000 "
                             f"are kept")
        self._check_address(url)
        topic = self._topic(topic)
        with self.store.sessions() as session:
            self._check_new(session, url)        # before fetching it to learn its title
        explicit = (name or "").strip()[:300]
        candidates = [explicit] if explicit else self._names_for(url, from_config)
        with self.store.writes.begin() as session:
            self._check_new(session, url)
            taken = taken_feed_names(session, candidates)
            free = [c for c in candidates if c not in taken]
            if not free:
                raise InputError(f"a feed named {candidates[0]!r} exists already; choose "
                                 f"another --name")
            return add_feed(
                session, url=url, name=free[0], topic=topic,
                backfill=self.settings.fetch.backfill if backfill is None else backfill,
                from_config=from_config)

    def _check_address(self, url: str) -> None:
        """The check every fetch makes when it connects, made now: a feed on an address
        it would be refused from is not added. A name that does not resolve now is let
        through (its fetches will say)."""
        parsed = httpx.URL(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            resolve_checked(parsed.raw_host.decode("ascii"), port,
                            self.settings.fetch.allow_private)
        except AddressRefused as exc:
            raise InputError(f"refused {_shown(url)}: {exc}") from None
        except OSError:
            pass

    @staticmethod
    def _check_new(session: Session, url: str) -> None:
        if feed_listed(session, url):
            raise InputError(f"the feed {url} is already listed (see: digest feeds list)")

    def _names_for(self, url: str, from_config: bool) -> list[str]:
        """Names to try, in order, for a feed added without one."""
        host = httpx.URL(url).host
        with _client(self.settings, self.transport) as client:
            read = read_feed(client, url, self.settings.fetch)
        if read.failure:
            if not from_config:
                raise InputError(f"{read.failure}; check the address, or add it anyway with "
                                 f"--name NAME")
            log.warning("[[feeds]] %s: named after its host: %s", url, read.failure)
        title = " ".join((read.title or "").split())[:_NAME_MAX]
        if not title:
            return [host] + [f"{host} {n}" for n in range(2, 100)]
        return [title, f"{title} ({host})"] + [f"{title} ({host}) {n}" for n in range(2, 100)]

    def remove(self, name_or_url: str) -> Feed:
        with self.store.writes.begin() as session:
            feed = find_feed(session, name_or_url)
            if feed is None:
                raise InputError(f"no feed named {name_or_url!r} (see: digest feeds list)")
            delete_feed(session, feed)
            return feed

    def sync_config(self) -> None:
        """Make the [[feeds]] of the config present in the table, their sources weighing
        what the config says."""
        for item in self.settings.feeds:
            with self.store.sessions() as session:
                listed = feed_listed(session, item.url.strip())
            if not listed:
                try:
                    self.add(item.url, item.name or None, item.topic or None,
                             from_config=True)
                except InputError as exc:
                    log.error("[[feeds]] %s: %s", item.url, exc)
                    continue
            with self.store.writes.begin() as session:
                feed = find_feed(session, item.url.strip())
                if feed is not None:
                    set_source_weight(session, feed.name, item.weight)

    def feeds(self) -> list[Feed]:
        self.sync_config()
        with self.store.sessions() as session:
            return list_feeds(session)

    def fetch(self, name: str | None = None,
              report: Callable[[FetchResult], None] | None = None) -> list[FetchResult]:
        """Fetch every feed (or the one named), store new items, record each feed's health.

        Each result goes to `report` as soon as it is stored, or, without one, to the log
        (one line per feed). Every feed's result is stored even if storing another one
        hits a bug; that bug is raised after the last feed."""
        feeds = self.feeds()
        if name is not None:
            feeds = [f for f in feeds if name in (f.name, f.url)]
            if not feeds:
                raise InputError(f"no feed named {name!r} (see: digest feeds list)")
        settings = self.settings.fetch
        results: list[FetchResult] = []
        bug: Exception | None = None
        with _client(self.settings, self.transport) as client, \
                ThreadPoolExecutor(max_workers=max(1, settings.concurrency)) as pool:
            futures = {pool.submit(read_feed, client, f.url, settings, f.etag,
                                   f.last_modified): f for f in feeds}
            for future in as_completed(futures):
                feed = futures[future]
                try:
                    result = self._store(feed, future.result())
                except Exception as exc:  # noqa: BLE001 - a bug: finish the others first
                    bug = bug or exc
                    result = self._store_bug(feed, exc)
                results.append(result)
                (report or self._log)(result)
        if bug is not None:
            raise bug
        return results

    def _store(self, feed: Feed, read: FeedRead) -> FetchResult:
        now = self.store.clock.now()
        with self.store.writes.begin() as session:
            row = get_feed(session, feed.id)
            if row is None:                      # removed while it was being fetched
                return FetchResult(feed.name, feed.url, "error",
                                   problems=(f"{feed.url}: removed during the fetch",))
            row.last_fetch_at = now
            failure = read.failure
            if failure:
                # Validators are kept only for a body we could use: a server that answers
                # 304 to the ETag of a broken body would otherwise hide the breakage.
                if read.fetched is not None:
                    row.etag = row.last_modified = None
                row.last_status = "error"
                row.last_error = failure[:2000]
                return FetchResult(feed.name, feed.url, "error", problems=(failure,))
            assert read.fetched is not None
            if read.fetched.status == 304:
                row.last_status = "not modified"
                row.last_success_at = now
                row.last_error = None
                return FetchResult(feed.name, feed.url, "not modified")
            first_time = row.last_success_at is None
            records = [dataclasses.replace(r, source_name=feed.name) for r in
                       self._mark_backlog(read.records, row.backfill if first_time else None,
                                          now)]
            # Stored in two batches so the count of new items is exact: the back catalogue
            # is stored too (for de-duplication) but never counts as new.
            refused: list[str] = []     # records not taken (a junk title, the store)
            clamped: list[str] = []     # dates in the future
            cutoff = fresh_from(self.settings.ingest, now)
            new = write_articles(
                session, self.classifier, self.store.clock, [r for r in records if not r.backlog],
                topic=row.topic, kind="feed", fresh_from=cutoff, problems=refused,
                warnings=clamped)
            old = write_articles(
                session, self.classifier, self.store.clock, [r for r in records if r.backlog],
                topic=row.topic, kind="feed", fresh_from=cutoff, problems=refused,
                warnings=clamped)
            added = new.added - new.too_old
            row.etag, row.last_modified = read.fetched.etag, read.fetched.last_modified
            row.items_added += new.added + old.added
            row.last_success_at = now
            notes = read.problems + refused + read.warnings + clamped
            row.last_error = "; ".join(notes)[:2000] if notes else None
            row.last_status = f"added {added}" + (
                f" (+{old.added} older)" if old.added else "") + (
                f" ({new.too_old} too old)" if new.too_old else "")
            return FetchResult(feed.name, feed.url, "added", added,
                               new.duplicates + old.duplicates, tuple(notes), old.added,
                               new.too_old)

    def _store_bug(self, feed: Feed, exc: Exception) -> FetchResult:
        """Record a bug met while storing one feed as that feed's error, if the store
        still takes writes (the bug itself is raised once every feed is done)."""
        message = f"{feed.url}: unexpected {type(exc).__name__}: {exc}"[:2000]
        try:
            with self.store.writes.begin() as session:
                row = get_feed(session, feed.id)
                if row is not None:
                    row.last_fetch_at = self.store.clock.now()
                    row.last_status = "error"
                    row.last_error = message
        except Exception:  # noqa: BLE001 - the original bug is the one worth raising
            log.debug("could not record the error of feed %s", feed.name, exc_info=True)
        return FetchResult(feed.name, feed.url, "error", problems=(message,))

    @staticmethod
    def _mark_backlog(records: Sequence[ArticleInput], keep: int | None,
                      now: datetime) -> list[ArticleInput]:
        """On a feed's first fetch only its newest `keep` items count as new: newest by
        date; an item dated in the future says nothing true of its age, and counts as
        undated (after every dated one), never as the newest."""
        if keep is None:
            return list(records)

        def when(i: int) -> datetime | None:
            date = records[i].published_at
            return date if date is not None and date <= now else None

        order = sorted(range(len(records)), key=lambda i: (
            when(i) is not None, when(i), -i), reverse=True)
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
                     f", {result.added} new, {result.backlog} older, {result.too_old} too "
                     f"old, {result.duplicates} known" if result.status == "added" else "")
            for problem in result.problems:
                log.warning("feed %s: %s", result.name, problem)
