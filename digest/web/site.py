"""What the views of one app share (its Site: settings, store, the subscriber service,
the signers of links), found through the current app, and the one message page."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from flask import current_app, render_template

from ..audience.admins import Verifier
from ..audience.confirmations import ConfirmationMail, WelcomeMail
from ..audience.outbox import OutboxSender
from ..audience.subscribers import SubscriberBook
from ..config import Settings
from ..mail.archive import render_archived
from ..mail.ranking import editorial_for
from ..mail.render import Renderer
from ..store.archive import published_edition, published_editions
from ..store.db import Store
from ..store.models import Subscriber
from ..tokens import BadToken, Signer, TokenClaims, read_token

__all__ = ["Site", "page", "site"]

_EXTENSION = "digest"
_CACHED_EDITIONS = 32


@dataclass
class Site:
    """The services behind one app's pages."""

    settings: Settings
    store: Store
    outbox: OutboxSender | None = None
    # The admin sign-in's password verifications (None: the process's own, VERIFIER).
    verifier: Verifier | None = None
    book: SubscriberBook = field(init=False)
    mail: ConfirmationMail = field(init=False)
    welcome: WelcomeMail = field(init=False)
    renderer: Renderer = field(init=False)
    _editions: OrderedDict[int, str | None] = field(init=False, default_factory=OrderedDict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.book = SubscriberBook(self.store, self.settings)
        self.mail = ConfirmationMail(self.settings, self.store.clock)
        self.welcome = WelcomeMail(self.settings, self.latest_edition, self.store.clock)
        self.renderer = Renderer(self.settings)
        self.key = self.settings.signing_key
        self.base = self.settings.digest.base_url.rstrip("/")
        self._preferences = Signer(self.key, "preferences")

    def latest_edition(self) -> int | None:
        """The number of the newest edition in the archive, if any."""
        latest = published_editions(self.store, limit=1)
        return latest[0].number if latest else None

    def claims(self, purpose: str, token: str) -> TokenClaims | None:
        """The claims of a valid token for purpose, or None."""
        try:
            return read_token(self.key, purpose, token, self.store.clock.timestamp())
        except BadToken:
            return None

    def token_problem(self, purpose: str, token: str) -> str:
        """Why token is not valid for purpose, as a page says it."""
        try:
            read_token(self.key, purpose, token, self.store.clock.timestamp())
        except BadToken as exc:
            return ("This link has expired." if str(exc) == "expired"
                    else "This link is not valid: it may have been cut or altered.")
        return ""

    def preferences_token(self, sub: Subscriber) -> str:
        return self._preferences.make(sub.id, sub.token_version)

    def edition_html(self, number: int) -> str | None:
        """Published edition `number` rendered whole, or None; the last few are kept
        (an archived edition never changes)."""
        with self._lock:
            if number in self._editions:
                self._editions.move_to_end(number)
                return self._editions[number]
        found = published_edition(self.store, number)
        html = None if found is None else render_archived(
            self.renderer, self.settings, *found,
            editorial_for(self.store, self.settings, found[0]))
        with self._lock:
            self._editions[number] = html
            while len(self._editions) > _CACHED_EDITIONS:
                self._editions.popitem(last=False)
        return html


def site() -> Site:
    """The Site of the app handling the current request."""
    found: Site = current_app.extensions[_EXTENSION]
    return found


def page(heading: str, *paragraphs: str, status: int = 200, error: bool = False,
         link: tuple[str, str] | None = None) -> tuple[str, int]:
    """The one message page (web/message.html.j2): a heading, paragraphs, maybe a link."""
    return render_template("web/message.html.j2", heading=heading, paragraphs=paragraphs,
                           error=error, link=link), status
