"""Who is signed in to the admin pages, and what every admin view shares: the session
cookie, the check of each request (anonymous GETs go to the sign-in page, anonymous
POSTs are refused, a signed-in POST must carry its session's CSRF token), the tokens each
form carries, the redirect after a POST, and the admin message page."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Response, g, redirect, render_template, request, url_for
from markupsafe import Markup, escape
from werkzeug.wrappers import Response as BaseResponse

from ..audience.admins import AdminIdentity, same_token, session_user
from .site import site

__all__ = ["COOKIE", "HOME", "NAV", "SESSION_FIELD", "UPLOAD_LIMIT", "Route", "admin_context",
           "admin_message", "back", "clear_cookie", "guard", "identify", "local_next",
           "set_cookie", "signed_in"]

# A page of the blueprint: (rule, view, methods); the view's name is its endpoint.
Route = tuple[str, Callable[..., Any], Sequence[str]]

COOKIE = "digest_admin"
PATH = "/admin"
HOME = "admin.draft"
# The hidden field of each signed-in form that carries the session's own CSRF token
# (beside Flask-WTF's csrf_token, which is tied to the browser's Flask session instead).
SESSION_FIELD = "session_csrf"
# A signed-in editor's CSV upload may be larger than any other form of the site.
UPLOAD_LIMIT = 32 * 1024 * 1024
_UPLOADS = {"admin.subscribers_import"}
# The pages of the menu: (endpoint, label).
NAV = [("admin.draft", "Draft"), ("admin.editions", "Editions"),
       ("admin.subscribers", "Subscribers"), ("admin.feeds", "Feeds"),
       ("admin.bounces", "Bounces"), ("admin.suppressions", "Suppressions")]
_OPEN = {"admin.login", "admin.login_post"}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")


def identify(endpoint: str | None, _values: dict[str, Any] | None) -> None:
    """Who the request's cookie signs in (g.digest_admin, None for nobody); run before
    any other check, so that the larger upload limit is only ever a signed-in editor's
    (the site's CSRF check reads the form before the views' own checks run)."""
    g.digest_admin = session_user(site().store, request.cookies.get(COOKIE))
    if g.digest_admin is not None and endpoint in _UPLOADS:
        request.max_content_length = UPLOAD_LIMIT


def signed_in() -> AdminIdentity:
    """The signed-in user of this request (guard has let it through)."""
    identity: AdminIdentity = g.digest_admin
    return identity


def guard() -> Any:
    """Let a signed-in request through (None); send an anonymous GET to the sign-in page,
    refuse an anonymous POST, and refuse a signed-in POST without its session's token."""
    identity: AdminIdentity | None = g.get("digest_admin")
    if request.endpoint in _OPEN:
        return None
    if identity is None:
        if request.method in ("GET", "HEAD"):
            here = request.path + (f"?{request.query_string.decode('latin-1')}"
                                   if request.query_string else "")
            return redirect(url_for("admin.login", next=local_next(here)), 303)
        return admin_message("Sign in first", "Only a signed-in editor can do this.",
                             status=403, link=("Sign in", url_for("admin.login")))
    if request.method == "POST" and not same_token(identity.csrf,
                                                   request.form.get(SESSION_FIELD)):
        return admin_message("Form expired", "The form was too old or came from elsewhere. "
                             "Please reload the page and try again.", status=400)
    return None


def local_next(value: str | None) -> str:
    """Where to go after signing in: value when it is a page of the admin site (a path
    under /admin, no other host, no scheme), else the draft."""
    home = url_for(HOME)
    if not value or _UNSAFE.search(value) or not value.startswith(PATH):
        return home
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not (parts.path == PATH or
                                           parts.path.startswith(PATH + "/")):
        return home
    # "/admin/../subscribe" (or with %2e%2e, which browsers read alike) leaves /admin.
    if {".", ".."} & set(unquote(parts.path).split("/")):
        return home
    if parts.path in (url_for("admin.login"), url_for("admin.logout")):
        return home
    return value


def set_cookie(response: BaseResponse, token: str) -> None:
    """The session cookie: HttpOnly, SameSite=Lax, only for /admin, Secure on https."""
    here = site()
    response.set_cookie(COOKIE, token, max_age=here.settings.admin.session_hours * 3600,
                        path=PATH, secure=here.base.startswith("https://"), httponly=True,
                        samesite="Lax")


def clear_cookie(response: BaseResponse) -> None:
    here = site()
    response.delete_cookie(COOKIE, path=PATH, secure=here.base.startswith("https://"),
                           httponly=True, samesite="Lax")


def _tokens() -> Markup:
    """The hidden fields of a signed-in form: the site's CSRF token and the session's."""
    from flask_wtf.csrf import generate_csrf

    identity: AdminIdentity | None = g.get("digest_admin")
    fields = Markup('<input type="hidden" name="csrf_token" value="{}">').format(
        generate_csrf())
    if identity is not None:
        fields += Markup('<input type="hidden" name="{}" value="{}">').format(
            SESSION_FIELD, escape(identity.csrf))
    return fields


def admin_context() -> dict[str, Any]:
    """What every admin template may use."""
    return {"admin_user": g.get("digest_admin"), "tokens": _tokens, "admin_nav": NAV}


def back(endpoint: str, anchor: str | None = None, **values: Any) -> Response:
    """The answer to a POST that worked: 303 to a page (maybe at an anchor of it)."""
    return redirect(url_for(endpoint, _anchor=anchor, **values), 303)  # type: ignore[return-value]


def admin_message(heading: str, *paragraphs: str, status: int = 200,
                  link: tuple[str, str] | None = None) -> tuple[str, int]:
    """A message page in the admin look."""
    return render_template("web/admin/message.html.j2", heading=heading,
                           paragraphs=paragraphs, error=status >= 400, link=link), status
