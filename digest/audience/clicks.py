"""Click counts that track no one: what a tracked "read more" link (``/r/{token}``) leads
to, and whether a request for it counts.

The token names an edition and an article, never a reader, so every subscriber's
message carries the very same link. A request counts unless a machine made it: a HEAD
request, a known mail scanner, link previewer, crawler or HTTP library (by its
User-Agent), a request before any message of the edition was sent, a burst of links
from one address within seconds ([tracking] burst_clicks and burst_seconds), a repeat of
a link from one address, or any request of a network that went over [tracking]
client_clicks in the edition. What is kept of the address, while the edition's counting
is open ([tracking] count_hours), is a hash keyed by a random key of that edition; when
it closes the key and the hashes are deleted and only counts remain. Requests that never
count are tallies per (edition, article, reason), not rows.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..config import Settings
from ..content.edition import read_more_url
from ..store.clicks import (
    ClickTarget,
    Request,
    add_tallies,
    click_keys,
    click_target,
    close_counting,
    record_clicks,
)
from ..store.db import STORE_ERRORS, Store
from ..tokens import BadToken, ClickSigner, client_hash

__all__ = ["SCANNER_AGENTS", "BadToken", "ClickCounter", "Followed", "click_reason",
           "client_network", "is_scanner"]

log = logging.getLogger("digest.clicks")

# Parts of User-Agent strings (lower case) of machines that follow links in mail before,
# or instead of, a reader: security gateways that test every link on delivery, inbox
# proxies, link previews of chat apps and Office, crawlers, and HTTP libraries. From the
# agents mail senders and bot lists name (Mautic's, Braze's, crawler-user-agents).
SCANNER_AGENTS = (
    # anything that calls itself a bot, crawler, spider, preview, scanner or headless
    "bot", "crawler", "spider", "preview", "scanner", "headless", "slurp", "fetcher",
    # mail security gateways and inbox proxies
    "proofpoint", "mimecast", "barracuda", "safelinks", "urlanalyzer", "messagelabs",
    "symantec", "forcepoint", "ironport", "trendmicro", "trend micro", "sophos",
    "fireeye", "zscaler", "googleimageproxy", "yahoomailproxy", "gmail-content-sampling",
    # Office and Outlook testing whether a link exists before a browser opens it
    "microsoft office", "ms-office", "msoffice", "office protocol discovery",
    # link previews of chat and social apps
    "facebookexternalhit", "whatsapp", "slack", "discord", "telegram", "skypeuri",
    "embedly", "iframely", "linkexpanding",
    # HTTP libraries and command-line tools: not a reader's browser
    "python-", "python/", "aiohttp", "httpx", "go-http-client", "curl/", "wget/",
    "okhttp", "axios/", "node-fetch", "libwww-perl", "java/", "apache-httpclient",
    "ruby", "php/", "scrapy", "postman",
)

# Whole User-Agent strings that only machines send: the bare "Mozilla/5.0", and the old
# Edge agent with a trailing "Mozilla/5.0" that link scanners (Gmail's and others) use.
_SCANNER_EXACT = frozenset({
    "mozilla/5.0",
    "mozilla/5.0 (windows nt 10.0; win64; x64) applewebkit/537.36 (khtml, like gecko) "
    "chrome/42.0.2311.135 safari/537.36 edge/12.246 mozilla/5.0",
})


# One pattern for all of them; "bot" but not in the Cubot phones' names.
_SCANNER = re.compile("|".join("(?<!cu)bot" if part == "bot" else re.escape(part)
                               for part in SCANNER_AGENTS))


def is_scanner(user_agent: str) -> bool:
    """Whether a User-Agent is a machine's: a known scanner, previewer, crawler or HTTP
    library, or none at all (every browser sends one)."""
    agent = " ".join(user_agent.split()).lower()
    return not agent or agent in _SCANNER_EXACT or _SCANNER.search(agent) is not None


def client_network(address: str) -> str:
    """What one client is, for the burst rule: an IPv4 address (also when it comes as an
    IPv4-mapped IPv6 one), or an IPv6 address's /64, which one host or one home holds
    whole and may take any address of (privacy addresses; a scanner on purpose)."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def click_reason(method: str, user_agent: str, delivered: bool) -> str:
    """Why a request would not count ("head", "scanner", "early"), or "counted" (which
    the burst rule may still overturn)."""
    if method.upper() == "HEAD":
        return "head"
    if is_scanner(user_agent):
        return "scanner"
    if not delivered:
        return "early"
    return "counted"


@dataclass(frozen=True)
class Followed:
    """Where a link leads, and what became of the request at the door (None: not
    recorded, because click counts are off). "counted" is a candidate the repeat, burst
    and limit rules may still overturn when the flusher stores it."""

    url: str
    reason: str | None


@dataclass(frozen=True)
class _Pending:
    target: ClickTarget
    network: str
    reason: str
    at: datetime


# Candidate clicks waiting for the flusher; beyond this many (a flood the per-network
# limit did not stop: many networks at once) requests are only tallied as "dropped".
QUEUE_LIMIT = 20_000
# Client networks whose requests per edition the service remembers between flushes
# (only in memory); when more come it forgets them all and starts again.
NETWORKS_LIMIT = 200_000
# Links whose target (edition, article, where it leads) is kept between two flushes.
TARGETS_LIMIT = 10_000


class ClickCounter:
    """The service behind ``/r/{token}``. A request is answered at once: the rules that
    need no store decide at the door (HEAD, scanner, early, over the network's limit) and
    add to tallies in memory; a candidate click waits in a bounded queue. A background
    flusher (started with digest serve, or by the first click) stores both every
    flush_seconds in one transaction, hashing each client with its edition's random key;
    forgets the targets of the links looked up since the last flush (so that a link is
    one lookup a flush, not one a request); and closes the counting of editions whose
    [tracking] count_hours have passed. `close` flushes what is left (digest serve calls
    it on the way down); a kill loses what came since the last flush, about
    flush_seconds of requests."""

    def __init__(self, store: Store, settings: Settings, flush_seconds: float = 1.0) -> None:
        self.store = store
        self.settings = settings
        self.signer = ClickSigner(settings.signing_key)
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._tallies: Counter[tuple[int, int, str]] = Counter()
        self._seen: dict[tuple[int, str], int] = {}
        self._targets: dict[tuple[int, int], tuple[ClickTarget, str]] = {}
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def link(self, number: int, article_id: int) -> str:
        """The tracked link of an article in edition `number`."""
        return self.signer.link(self.settings.digest.base_url, number, article_id)

    def follow(self, token: str, *, method: str, user_agent: str, address: str,
               now: datetime) -> Followed | None:
        """Where the link leads (the article, with the UTM parameters its message
        carries), taking the request in when click counts are on; None when it leads
        nowhere (its edition never went out, or the article is no longer in it), and
        nothing is recorded. BadToken for a token that is forged, altered or cut.

        Links of an edition sent while counts were on keep working when they are off."""
        claims = self.signer.read(token)
        found = self._targets.get((claims.number, claims.article_id))
        if found is None:
            target = click_target(self.store, claims.number, claims.article_id)
            if target is None:
                return None
            found = target, self._article_url(target)
            if target.delivered:
                # Until the next flush: an article removed, or an edition cancelled, since
                # leads nowhere within flush_seconds. One not delivered yet is asked again
                # (its first message makes its clicks count).
                with self._lock:
                    if len(self._targets) >= TARGETS_LIMIT:
                        self._targets.clear()
                    self._targets[claims.number, claims.article_id] = found
        target, url = found
        if not self.settings.tracking.clicks:
            return Followed(url, None)
        reason = click_reason(method, user_agent, target.delivered)
        return Followed(url, self._take(target, client_network(address), reason, now))

    def start(self) -> None:
        """Start the flusher (once; `follow` does it too), so that counting closes on
        time also while nobody clicks."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="click-flusher",
                                            daemon=True)
            self._thread.start()

    def _take(self, target: ClickTarget, network: str, reason: str, now: datetime) -> str:
        """Decide at the door, and queue or tally the request; the reason it has."""
        limit = self.settings.tracking.client_clicks
        key = (target.edition_id, network)
        with self._lock:
            self._start()
            if key not in self._seen and len(self._seen) >= NETWORKS_LIMIT:
                self._seen.clear()
            seen = self._seen[key] = self._seen.get(key, 0) + 1
            if seen > limit:
                reason = "limit"
                if seen > limit + 1:
                    # Its clicks were taken back when it went over: only a tally now.
                    self._tallies[target.edition_id, target.article_id, reason] += 1
                    return reason
            elif reason != "counted":
                self._tallies[target.edition_id, target.article_id, reason] += 1
                return reason
            if len(self._pending) >= QUEUE_LIMIT:
                self._tallies[target.edition_id, target.article_id, "dropped"] += 1
                return "dropped"
            self._pending.append(_Pending(target, network, reason, now))
            return reason

    def flush(self) -> None:
        """Store what came in since the last flush, in one transaction, and close the
        counting of editions whose time is up. A store error loses this batch (logged):
        a reader's click never fails for the count's sake."""
        tracking = self.settings.tracking
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, []
                tallies, self._tallies = self._tallies, Counter()
                self._targets = {}
            now = self.store.clock.now()
            try:
                closed = close_counting(self.store, now - timedelta(hours=tracking.count_hours))
                if closed:
                    with self._lock:
                        self._seen = {k: n for k, n in self._seen.items()
                                      if k[0] not in closed}
                if pending:
                    keys = click_keys(self.store, {p.target.edition_id for p in pending}, now)
                    record_clicks(self.store, [
                        Request(p.target, client_hash(keys[p.target.edition_id], p.network),
                                p.reason, p.at) for p in pending],
                        burst_clicks=tracking.burst_clicks,
                        burst_seconds=tracking.burst_seconds,
                        client_clicks=tracking.client_clicks)
                if tallies:
                    add_tallies(self.store, tallies)
            except STORE_ERRORS as exc:
                log.warning("%d click requests not recorded: %s",
                            len(pending) + sum(tallies.values()), exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self.flush()

    def close(self) -> None:
        """Stop the flusher and store what is left."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join()
        self.flush()

    def _article_url(self, target: ClickTarget) -> str:
        campaign = self.settings.digest.utm_campaign.format(number=target.number)
        return read_more_url(target.url, target.article_id, self.settings, campaign)
