"""The subscriber web pages: one-click unsubscribe (RFC 8058), double opt-in sign-up,
topic preferences, and the archive of sent editions (HTML and Atom).

A Flask app, served by waitress (`digest serve`, `WebServer`). Links in mail carry
HMAC-signed tokens (digest.tokens), one purpose each, bound to the subscriber's token
version so they can be revoked. Forms carry CSRF tokens (Flask-WTF); the one-click POST
does not, by design: mail providers POST it without cookies. Links that change something
(confirm, unsubscribe) show a page with a button on GET, because mail scanners follow
links. Sign-up only queues its mail (digest.outbox); the server's outbox thread sends it.
Rate limits count in the store (digest.ratelimits), per real client address (an IPv6
client by its /64).

This module builds the app (settings, security headers, error pages, the shared template
loader) and serves it; the pages are blueprints: `public` (digest.web.public), the
providers' `webhooks` (digest.web.webhooks) and the editors' `admin` pages at /admin
(digest.web.admin).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import threading
from typing import Any

import httpx
import waitress
from flask import Flask, Response, request, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from waitress import wasyncore
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, Map

from ..audience.admins import Verifier
from ..audience.clicks import client_network
from ..audience.outbox import OutboxSender
from ..clock import Clock
from ..config import Settings
from ..errors import InputError
from ..mail.render import day, template_loader
from ..store.db import Store
from .admin import admin_pages
from .clicks import close_clicks, start_clicks
from .public import public_pages
from .ratelimits import SCHEME as LIMIT_STORAGE
from .site import Site, page
from .webhooks import webhook_pages

__all__ = ["MAX_ID", "WebServer", "create_app", "serve"]

log = logging.getLogger("digest.web")

# The largest id the store holds: its Integer columns are 32-bit on PostgreSQL.
MAX_ID = 2**31 - 1
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
               outbox: OutboxSender | None = None, *,
               sns_transport: httpx.BaseTransport | None = None,
               clock: Clock | None = None, verifier: Verifier | None = None) -> Flask:
    """The web app for one store. Sign-ups queue their mail in the store's outbox and wake
    `outbox` (when given) to send it; without one, a sender elsewhere drains it. The SES
    webhook fetches SNS certificates through sns_transport (httpx's own when None).
    Raises ConfigError when there is no signing key, templates_dir is not a folder, or
    [webhooks] sendgrid_public_key is not a key. The pages decide by the store's clock
    (given, else clock, else the machine's). Admin sign-ins verify passwords through
    verifier (the process's own, with its slots, when None)."""
    here = Site(settings, store or Store.from_settings(settings, clock), outbox, verifier)
    app = Flask("digest.web", static_folder=None)
    app.extensions["digest"] = here
    app.url_map.converters["id"] = IdConverter
    if settings.web.trusted_proxies:
        # Behind N proxies, the client is the Nth address from the right of
        # X-Forwarded-For; without trusted proxies the header is ignored (anyone can send it).
        app.wsgi_app = ProxyFix(app.wsgi_app,   # type: ignore[method-assign]
                                x_for=settings.web.trusted_proxies)
    app.secret_key = hmac.new(here.key, b"digest-web-session", hashlib.sha256).digest()
    app.config.update(
        MAX_CONTENT_LENGTH=64 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=here.base.startswith("https://"),
        # A form's token lasts as long as an editor's sign-in (a draft page left open
        # all morning still works), and never less than two hours.
        WTF_CSRF_TIME_LIMIT=max(2, settings.admin.session_hours) * 3600,
        WTF_CSRF_SSL_STRICT=False,
    )
    app.jinja_loader = template_loader(settings)
    app.jinja_env.autoescape = True
    app.jinja_env.filters["day"] = day
    app.jinja_env.globals["digest"] = settings.digest
    csrf = CSRFProtect(app)
    # Counted in the store, so every thread and process of this site shares the buckets.
    shared: dict[str, Any] = {"store": here.store}
    limiter = Limiter(_client, app=app, storage_uri=f"{LIMIT_STORAGE}://",
                      storage_options=shared, default_limits=[])
    app.register_blueprint(public_pages(limiter, csrf))
    app.register_blueprint(webhook_pages(settings, csrf, sns_transport))
    app.register_blueprint(admin_pages(limiter, csrf))
    app.url_build_error_handlers.append(_public_endpoint)
    _handle_errors(app)
    app.after_request(_security_headers)
    return app


def _client() -> str:
    """The rate limits' client: an IPv4 address, or an IPv6 address's /64 (one host or
    home holds it whole, and may take any address of it)."""
    return client_network(get_remote_address())


def _cannot_listen(host: str, port: int, exc: Exception) -> str:
    """One line for a server that cannot listen, with the fix that fits the reason."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {host}:{port} ({exc.strerror}); stop what uses that port, "
                f"or choose another with --port")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return (f"cannot listen on {host}:{port} ({reason}); --host must be an address of this "
            f"machine, such as 127.0.0.1 (or 0.0.0.0 for all of them)")


def _public_endpoint(error: Exception, endpoint: str, values: dict[str, Any]) -> str:
    """url_for('editions') in a user's templates_dir written before the pages became a
    blueprint: the public page of that name."""
    if "." not in endpoint:
        return url_for(f"public.{endpoint}", **values)
    raise error


def _handle_errors(app: Flask) -> None:
    """Every error is a page of the site's own: never Flask's, never a traceback."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if exc.code == 404:
            return page("Not found", "There is nothing at this address.", status=404,
                        error=True, link=("Past editions", url_for("public.editions")))
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


# The admin pages frame one page of their own (an edition's preview); only that page may
# be framed, and only by them.
_ADMIN_CSP = _SECURITY_HEADERS["Content-Security-Policy"] + "; frame-src 'self'"
_PREVIEW_CSP = _SECURITY_HEADERS["Content-Security-Policy"].replace(
    "frame-ancestors 'none'", "frame-ancestors 'self'")


def _security_headers(response: Response) -> Response:
    if request.blueprint == "admin":
        preview = request.endpoint == "admin.preview"
        response.headers["Content-Security-Policy"] = _PREVIEW_CSP if preview else _ADMIN_CSP
        response.headers["X-Frame-Options"] = "SAMEORIGIN" if preview else "DENY"
        response.headers["X-Robots-Tag"] = "noindex, nofollow"
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith(("/u/", "/p/", "/confirm/", "/admin")):
        response.headers["Cache-Control"] = "no-store"
    return response


class WebServer:
    """The app under waitress, with the outbox sender beside it. `run` serves in the
    calling thread until `stop` (from any other thread), Ctrl-C or SystemExit."""

    def __init__(self, settings: Settings, host: str, port: int, store: Store | None = None,
                 threads: int = 8, poll: float = 30.0, clock: Clock | None = None,
                 verifier: Verifier | None = None) -> None:
        self._own_store = store is None
        self.store = store or Store.from_settings(settings, clock)
        try:
            self.outbox = OutboxSender(self.store, settings, poll=poll)
            self.app = create_app(settings, self.store, self.outbox, verifier=verifier)
            # Our own socket map: stop() closes exactly this server's sockets.
            self._map: dict[int, Any] = {}
            # waitress drops X-Forwarded-* itself unless told otherwise; with trusted
            # proxies the app's ProxyFix reads it (the same in any WSGI server).
            try:
                self.server = waitress.create_server(
                    self.app, map=self._map, host=host, port=port, threads=threads,
                    ident="digest",
                    clear_untrusted_proxy_headers=not settings.web.trusted_proxies)
            except (OSError, ValueError) as exc:
                wasyncore.close_all(self._map)
                raise InputError(_cannot_listen(host, port, exc)) from None
        except BaseException:
            if self._own_store:
                self.store.close()
            raise
        self._stop_lock = threading.Lock()
        self._stopping = False

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    def run(self) -> None:
        """Serve until stopped; then the outbox sender finishes its pass and ends."""
        self.outbox.start()
        start_clicks(self.app)
        try:
            self.server.run()
        except OSError as exc:
            # stop() during a select(): a descriptor the loop had listed was closed as
            # the server went down (seen once in many runs on a loaded machine). That is
            # the end asked for, not an error.
            if not (self._stopping and exc.errno == errno.EBADF):
                raise
        finally:
            # After Ctrl-C the loop is gone but its sockets are open (after stop(): no-op).
            wasyncore.close_all(self._map)
            self.outbox.stop()
            close_clicks(self.app)
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
        try:
            self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
        except OSError as exc:
            # The loop ended meanwhile and closed everything itself (its trigger too).
            if exc.errno != errno.EBADF:
                raise


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the app with waitress, and send queued confirmations, until interrupted.
    Raises ConfigError (before listening) when there is no signing key."""
    WebServer(settings, host, port).run()
