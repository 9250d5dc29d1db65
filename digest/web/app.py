"""The subscriber web pages: one-click unsubscribe (RFC 8058), double opt-in sign-up,
topic preferences, and the archive of sent editions (HTML and Atom).

A Flask app, served by waitress (`digest serve`, `WebServer`). Links in mail carry
HMAC-signed tokens (digest.tokens), one purpose each, bound to the subscriber's token
version so they can be revoked. Forms carry CSRF tokens (Flask-WTF); the one-click POST
does not, by design: mail providers POST it without cookies. Links that change something
(confirm, unsubscribe) show a page with a button on GET, because mail scanners follow
links. Sign-up only queues its mail (digest.outbox); the server's outbox thread sends it.
Rate limits count in the store (digest.ratelimits), per real client address.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

import jinja2
import waitress
from flask import Flask, Response, abort, render_template, request, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import select
from sqlalchemy.orm import Session
from waitress import wasyncore
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, Map

from ..audience.outbox import OutboxSender, queue_mail
from ..audience.subscribers import SubscriberBook, clean_name, normalise_email
from ..audience.tokens import BadToken, Signer, TokenClaims, read_token
from ..config import Settings, with_overrides
from ..content.edition import build_content
from ..errors import InputError
from ..mail.message import SMTP_POLICY, sender_address
from ..mail.render import Personal, Renderer, day
from ..resources import package_resource
from ..store.ledger import Store
from ..store.models import Article, Edition, EditionStatus, Subscriber, SubscriberStatus
from .ratelimits import SCHEME as LIMIT_STORAGE

__all__ = ["CONFIRM_HOURS", "MAX_ID", "WebServer", "create_app", "serve"]

log = logging.getLogger("digest.web")

CONFIRM_HOURS = 48
SIGNUP_LIMIT = "5 per 10 minutes"
# The largest id the store holds: its Integer columns are 32-bit on PostgreSQL.
MAX_ID = 2**31 - 1
_USED = "This link was already used, or has been replaced by a newer one."
_PUBLISHED = (EditionStatus.SENT, EditionStatus.SENDING)
_SECURITY_HEADERS = {
    # No scripts at all; styles are inline (the email's own inlined CSS included).
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "img-src https: data:; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class IdConverter(IntegerConverter):
    """``<id:name>``: a row id as the store can hold it (1 to MAX_ID). Anything else does
    not match the route, so it is a 404 page, never a database overflow (a 500)."""

    def __init__(self, url_map: Map) -> None:
        super().__init__(url_map, min=1, max=MAX_ID)


def create_app(settings: Settings, store: Store | None = None,
               outbox: OutboxSender | None = None) -> Flask:
    """The web app for one store. Sign-ups queue their mail in the store's outbox and wake
    `outbox` (when given) to send it; without one, a sender elsewhere drains it.
    Raises ConfigError when there is no signing key."""
    store = store or Store.from_settings(settings)
    book = SubscriberBook(store, settings)
    renderer = Renderer(settings)
    mail_text = renderer.env          # the mail templates (and a user's templates_dir)
    base = settings.digest.base_url.rstrip("/")
    key = settings.signing_key

    app = Flask("digest.web", static_folder=None)
    app.url_map.converters["id"] = IdConverter
    if settings.web.trusted_proxies:
        # Behind N proxies, the client is the Nth address from the right of
        # X-Forwarded-For; without trusted proxies the header is ignored (anyone can send it).
        app.wsgi_app = ProxyFix(app.wsgi_app,   # type: ignore[method-assign]
                                x_for=settings.web.trusted_proxies)
    app.secret_key = hmac.new(key, b"digest-web-session", hashlib.sha256).digest()
    app.config.update(
        MAX_CONTENT_LENGTH=64 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=base.startswith("https://"),
        WTF_CSRF_TIME_LIMIT=2 * 3600,
        WTF_CSRF_SSL_STRICT=False,
    )
    loaders: list[jinja2.BaseLoader] = []
    if settings.digest.templates_dir:
        loaders.append(jinja2.FileSystemLoader(settings.resolve_path(
            settings.digest.templates_dir)))
    loaders.append(jinja2.FileSystemLoader(package_resource("templates")))
    app.jinja_loader = jinja2.ChoiceLoader(loaders)   # type: ignore[assignment]
    app.jinja_env.autoescape = True
    app.jinja_env.filters["day"] = day
    app.jinja_env.globals["digest"] = settings.digest
    csrf = CSRFProtect(app)
    # Counted in the store, so every thread and process of this site shares the buckets.
    limiter = Limiter(get_remote_address, app=app, storage_uri=f"{LIMIT_STORAGE}://",
                      storage_options={"store": store}, default_limits=[])
    preferences_signer = Signer(key, "preferences")
    confirm_signer = Signer(key, "confirm")

    def page(heading: str, *paragraphs: str, status: int = 200, error: bool = False,
             link: tuple[str, str] | None = None) -> tuple[str, int]:
        return render_template("web/message.html.j2", heading=heading, paragraphs=paragraphs,
                               error=error, link=link), status

    def claims_of(purpose: str, token: str) -> TokenClaims:
        """The claims of a valid token, or a 400 page (nothing changes)."""
        try:
            return read_token(key, purpose, token)
        except BadToken as exc:
            reason = ("This link has expired." if str(exc) == "expired"
                      else "This link is not valid: it may have been cut or altered.")
            abort(400, reason)

    def subscriber_for(purpose: str, token: str) -> Subscriber:
        """The subscriber a valid, current token names, or a 400 page (nothing changes)."""
        claims = claims_of(purpose, token)
        with store.sessions() as session:
            sub = session.get(Subscriber, claims.subscriber_id)
        if sub is None or sub.token_version != claims.version:
            abort(400, _USED)
        return sub

    def already_subscribed(sub: Subscriber) -> tuple[str, int]:
        return page("You're already subscribed", f"{sub.email} already receives "
                    f"{settings.digest.name}; there is nothing to confirm.",
                    "To change your topics, use the “Manage topics” link in any digest.")

    # -- errors and headers --

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if exc.code == 404:
            return page("Not found", "There is nothing at this address.", status=404,
                        error=True, link=("Past editions", url_for("editions")))
        if exc.code == 429:
            return page("Too many requests", "Please wait a few minutes and try again.",
                        status=429, error=True)
        detail = exc.description if exc.code == 400 and exc.description and \
            not exc.description.startswith("The browser (or proxy)") else \
            "The request could not be understood."
        return page(exc.name, detail, status=exc.code or 400, error=True)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> Any:
        return page("Form expired", "The form was too old or came from elsewhere. Please "
                    "reload the page and try again.", status=400, error=True)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return page("Something went wrong", "Please try again later.", status=500,
                    error=True)

    @app.after_request
    def security_headers(response: Response) -> Response:
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path.startswith(("/u/", "/p/", "/confirm/")):
            response.headers["Cache-Control"] = "no-store"
        return response

    # -- unsubscribe (RFC 8058) --

    @app.get("/u/<token>")
    def unsubscribe_page(token: str) -> Any:
        sub = subscriber_for("unsubscribe", token)
        if sub.status is SubscriberStatus.UNSUBSCRIBED:
            return page("You are unsubscribed", f"{sub.email} receives no more emails from "
                        f"{settings.digest.name}.")
        return render_template("web/unsubscribe.html.j2", email=sub.email,
                               preferences_url=url_for("preferences", token=preferences_signer
                                                       .make(sub.id, sub.token_version)))

    @app.post("/u/<token>")
    @csrf.exempt
    def unsubscribe_one_click(token: str) -> Any:
        sub = subscriber_for("unsubscribe", token)
        if request.form.get("List-Unsubscribe") != "One-Click":
            abort(400, "An unsubscribe request must carry List-Unsubscribe=One-Click.")
        with store.writes.begin() as session:
            row = session.get(Subscriber, sub.id)
            assert row is not None
            if row.status is not SubscriberStatus.UNSUBSCRIBED:
                row.status = SubscriberStatus.UNSUBSCRIBED
                log.info("subscriber %s unsubscribed (one-click)", row.id)
        return page("You are unsubscribed", f"{sub.email} receives no more emails from "
                    f"{settings.digest.name}.", "Changed your mind? You can subscribe again "
                    "at any time.", link=("Subscribe again", url_for("subscribe")))

    @app.get("/unsubscribe")
    def unsubscribe_help() -> Any:
        return page("Unsubscribe", "Use the unsubscribe link at the bottom of any email "
                    "from us: it unsubscribes that address at once.")

    # -- sign-up with double opt-in --

    @app.get("/")
    @app.get("/subscribe")
    def subscribe() -> Any:
        return render_template("web/subscribe.html.j2", topics=settings.topic_names,
                               form={"email": "", "name": "", "topics": []}, problem=None)

    @app.post("/subscribe")
    @limiter.limit(SIGNUP_LIMIT)
    def subscribe_post() -> Any:
        form: dict[str, Any] = {"email": request.form.get("email", "").strip()[:320],
                "name": clean_name(request.form.get("name", "")),
                "topics": request.form.getlist("topics")}
        try:
            address = normalise_email(form["email"])
            with store.sessions() as session:
                topics = book.check_topics(session, form["topics"])
        except InputError as exc:
            return render_template("web/subscribe.html.j2", topics=settings.topic_names,
                                   form=form, problem=str(exc)), 400
        # The same work and the same answer whether the address was new, pending or
        # already subscribed: one mail queued (the outbox thread sends it).
        with store.writes.begin() as session:
            sub = _register(session, address, form["name"], topics)
            if sub.status is SubscriberStatus.ACTIVE:
                subject = f"You are already subscribed to {settings.digest.name}"
                body = mail_text.get_template("subscribed.txt.j2").render(
                    digest=settings.digest, greeting=_greeting(sub.name), email=sub.email,
                    preferences_url=f"{base}/p/"
                                    f"{preferences_signer.make(sub.id, sub.token_version)}")
            else:
                expires = int(time.time()) + CONFIRM_HOURS * 3600
                subject = f"Confirm your subscription to {settings.digest.name}"
                body = mail_text.get_template("confirm.txt.j2").render(
                    digest=settings.digest, greeting=_greeting(sub.name), email=sub.email,
                    confirm_url=f"{base}/confirm/"
                                f"{confirm_signer.make(sub.id, sub.token_version, expires)}",
                    hours=CONFIRM_HOURS)
            envelope_from, message = _mail(settings, sub.email, subject, body)
            queue_mail(session, envelope_from, sub.email, message, subscriber_id=sub.id)
        if outbox is not None:
            outbox.wake()
        return page("Check your inbox", f"If {address} can subscribe, a confirmation link "
                    f"is on its way to it.", f"The link works for {CONFIRM_HOURS} hours.")

    @app.get("/confirm/<token>")
    def confirm(token: str) -> Any:
        # A page with a button: mail scanners follow links, and must not subscribe anyone.
        claims = claims_of("confirm", token)
        with store.sessions() as session:
            sub = session.get(Subscriber, claims.subscriber_id)
        if sub is not None and sub.status is SubscriberStatus.ACTIVE:
            return already_subscribed(sub)
        if sub is None or sub.token_version != claims.version:
            abort(400, _USED)
        return render_template("web/confirm.html.j2", email=sub.email)

    @app.post("/confirm/<token>")
    def confirm_post(token: str) -> Any:
        claims = claims_of("confirm", token)
        with store.writes.begin() as session:
            row = session.get(Subscriber, claims.subscriber_id, with_for_update=True)
            if row is not None and row.status is SubscriberStatus.ACTIVE:
                return already_subscribed(row)
            if row is None or row.token_version != claims.version:
                abort(400, _USED)
            row.status = SubscriberStatus.ACTIVE
            row.hard_bounces = 0
            row.token_version += 1          # the link is single-use
            version = row.token_version
            sub = row
        return page("You are subscribed", f"{sub.email} will receive {settings.digest.name}.",
                    link=("Choose your topics",
                          url_for("preferences", token=preferences_signer.make(sub.id,
                                                                               version))))

    # -- preferences --

    @app.route("/p/<token>", methods=["GET", "POST"])
    def preferences(token: str) -> Any:
        sub = subscriber_for("preferences", token)
        saved = False
        if request.method == "POST":
            action = request.form.get("action", "save")
            with store.writes.begin() as session:
                row = session.get(Subscriber, sub.id)
                assert row is not None
                if action == "unsubscribe":
                    row.status = SubscriberStatus.UNSUBSCRIBED
                else:
                    try:
                        row.topics = book.check_topics(session, request.form.getlist("topics"))
                        row.timezone = book.check_timezone(request.form.get("timezone"))
                    except InputError as exc:
                        abort(400, str(exc))
                sub = row
            if action == "unsubscribe":
                return page("You are unsubscribed", f"{sub.email} receives no more emails "
                            f"from {settings.digest.name}.")
            saved = True
        return render_template("web/preferences.html.j2", subscriber=sub,
                               topics=settings.topic_names, zones=_zones(),
                               default_zone=settings.schedule.timezone, saved=saved)

    # -- archive --

    @app.get("/editions")
    def editions() -> Any:
        with store.sessions() as session:
            rows = session.scalars(select(Edition).where(Edition.status.in_(_PUBLISHED))
                                   .order_by(Edition.number.desc())).all()
        return render_template("web/editions.html.j2", editions=rows)

    @app.get("/editions.atom")
    def editions_feed() -> Any:
        with store.sessions() as session:
            rows = session.scalars(select(Edition).where(Edition.status.in_(_PUBLISHED))
                                   .order_by(Edition.number.desc()).limit(50)).all()
        updated = max((e.finished_at or e.created_at for e in rows),
                      default=datetime(2000, 1, 1, tzinfo=UTC))
        body = render_template("web/editions.atom.j2", editions=rows, base=base,
                               updated=updated.isoformat())
        return Response(body, mimetype="application/atom+xml")

    @lru_cache(maxsize=32)
    def edition_html(number: int) -> str | None:
        with store.sessions() as session:
            e = session.scalar(select(Edition).where(Edition.number == number,
                                                     Edition.status.in_(_PUBLISHED)))
            if e is None:
                return None
            articles = list(session.scalars(select(Article).where(Article.edition_id == e.id)
                                            .order_by(Article.id)))
        # The whole edition, every article (the email may have shown fewer).
        everything = with_overrides(settings, digest={"max_articles": max(1, len(articles))})
        rendered = renderer.render(build_content(articles, everything, e.number, e.cutoff))
        html, _text = rendered.personalise(Personal(
            greeting="", email="you", unsubscribe_url=f"{base}/unsubscribe",
            preferences_url=f"{base}/subscribe"))
        return html

    @app.get("/editions/<id:number>")
    def edition(number: int) -> Any:
        html = edition_html(number)
        if html is None:
            abort(404)
        return Response(html, mimetype="text/html")

    @app.get("/articles/<id:article_id>")
    def article(article_id: int) -> Any:
        with store.sessions() as session:
            row = session.get(Article, article_id)
            published = row is not None and row.edition_id is not None and \
                session.scalar(select(Edition.status).where(Edition.id == row.edition_id)) \
                in _PUBLISHED
            if row is not None:
                _ = row.source_name   # load the sources while the session is open
        if not published or row is None:
            abort(404)
        return render_template("web/article.html.j2", article=row,
                               paragraphs=[p for p in (row.body or "").split("\n\n") if p])

    return app


@lru_cache(maxsize=1)
def _zones() -> Sequence[str]:
    return sorted(z for z in available_timezones() if "/" in z and not z.startswith(
        ("Etc/", "SystemV/", "US/", "posix/", "right/")))


def _register(session: Session, address: str, name: str, topics: list[str]) -> Subscriber:
    """Record a sign-up in session's transaction; returns the subscriber (new, pending, or
    as they were when already active: a stranger's form changes nothing of theirs)."""
    sub = session.scalar(select(Subscriber).where(Subscriber.email_key == address.lower()))
    if sub is None:
        sub = Subscriber(email=address, email_key=address.lower(), name=name,
                         topics=topics, status=SubscriberStatus.PENDING)
        session.add(sub)
        session.flush()
    elif sub.status is SubscriberStatus.PENDING:
        sub.name, sub.topics = name or sub.name, topics or sub.topics
    return sub


def _greeting(name: str) -> str:
    return f"Hello {name.split()[0]}," if name.strip() else "Hello,"


def _mail(settings: Settings, to: str, subject: str, text: str) -> tuple[str, bytes]:
    """(envelope sender, message bytes) of a plain-text mail from the digest to `to`."""
    msg = EmailMessage(policy=SMTP_POLICY)
    name, addr = sender_address(settings)
    msg["From"] = f"{name} <{addr}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=addr.rsplit("@", 1)[1])
    msg.set_content(text)
    return addr, msg.as_bytes(policy=SMTP_POLICY)


class WebServer:
    """The app under waitress, with the outbox sender beside it. `run` serves in the
    calling thread until `stop` (from any other thread), Ctrl-C or SystemExit."""

    def __init__(self, settings: Settings, host: str, port: int, store: Store | None = None,
                 threads: int = 8, poll: float = 30.0) -> None:
        self._own_store = store is None
        self.store = store or Store.from_settings(settings)
        try:
            self.outbox = OutboxSender(self.store, settings, poll=poll)
            self.app = create_app(settings, self.store, self.outbox)
            # Our own socket map: stop() closes exactly this server's sockets.
            self._map: dict[int, Any] = {}
            # waitress drops X-Forwarded-* itself unless told otherwise; with trusted
            # proxies the app's ProxyFix reads it (the same in any WSGI server).
            try:
                self.server = waitress.create_server(
                    self.app, map=self._map, host=host, port=port, threads=threads,
                    ident="digest",
                    clear_untrusted_proxy_headers=not settings.web.trusted_proxies)
            except OSError as exc:
                wasyncore.close_all(self._map)
                raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                                 f"stop what uses that port, or choose another with --port "
                                 f"(or --host)") from None
        except BaseException:
            if self._own_store:
                self.store.close()
            raise
        self._stop_lock = threading.Lock()
        self._stopping = False

    @property
    def port(self) -> int:
        return int(self.server.effective_port)   # type: ignore[union-attr]

    def run(self) -> None:
        """Serve until stopped; then the outbox sender finishes its pass and ends."""
        self.outbox.start()
        try:
            self.server.run()
        finally:
            # After Ctrl-C the loop is gone but its sockets are open (after stop(): no-op).
            wasyncore.close_all(self._map)
            self.outbox.stop()
            if self._own_store:
                self.store.close()

    def stop(self) -> None:
        """End `run` from another thread. The sockets are closed by the loop's own thread,
        between two select() calls: closed from here, the loop (or a worker waking it)
        would use a closed descriptor (OSError: Bad file descriptor)."""
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
        # Workers first: each one pulls the trigger when it finishes a request, so the
        # trigger must stay open until they have all ended.
        self.server.task_dispatcher.shutdown()
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self._map))


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the app with waitress, and send queued confirmations, until interrupted.
    Raises ConfigError (before listening) when there is no signing key."""
    WebServer(settings, host, port).run()
