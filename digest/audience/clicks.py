"""Click counts that track no one: what a tracked "read more" link (``/r/{token}``) leads
to, and whether a request for it counts.

The token names an edition and an article, never a reader, so every subscriber's
message carries the very same link. A request counts unless a machine made it: a HEAD
request, a known mail scanner, link previewer, crawler or HTTP library (by its
User-Agent), a request before any message of the edition was sent, or a burst of links
from one address within seconds ([tracking] burst_clicks and burst_seconds). What is
kept of the address is a keyed hash, bound to the edition, never the address.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from datetime import datetime

from ..config import Settings
from ..content.edition import read_more_url
from ..store.clicks import ClickTarget, click_target, record_click
from ..store.db import STORE_ERRORS, Store
from ..tokens import BadToken, ClickSigner

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
    """Where a link leads, and what became of the request (None: not recorded, because
    click counts are off or the store could not take it)."""

    url: str
    reason: str | None


class ClickCounter:
    """The service behind ``/r/{token}``."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.signer = ClickSigner(settings.signing_key)

    def link(self, number: int, article_id: int) -> str:
        """The tracked link of an article in edition `number`."""
        return self.signer.link(self.settings.digest.base_url, number, article_id)

    def follow(self, token: str, *, method: str, user_agent: str, address: str,
               now: datetime) -> Followed | None:
        """Where the link leads (the article, with the UTM parameters its message
        carries), recording the request when click counts are on; None when it leads
        nowhere (its edition never went out, or the article is no longer in it), and
        nothing is recorded. BadToken for a token that is forged, altered or cut.

        Links of an edition sent while counts were on keep working when they are off."""
        claims = self.signer.read(token)
        target = click_target(self.store, claims.number, claims.article_id)
        if target is None:
            return None
        url = self._article_url(target)
        tracking = self.settings.tracking
        if not tracking.clicks:
            return Followed(url, None)
        reason = click_reason(method, user_agent, target.delivered)
        client = self.signer.client(claims.number, client_network(address))
        try:
            reason = record_click(self.store, target, client, reason, now,
                                  burst_clicks=tracking.burst_clicks,
                                  burst_seconds=tracking.burst_seconds)
        except STORE_ERRORS as exc:
            # A reader's click never fails for the count's sake.
            log.warning("click on edition %s not recorded: %s", claims.number, exc)
            return Followed(url, None)
        return Followed(url, reason)

    def _article_url(self, target: ClickTarget) -> str:
        campaign = self.settings.digest.utm_campaign.format(number=target.number)
        return read_more_url(target.url, target.article_id, self.settings, campaign)
