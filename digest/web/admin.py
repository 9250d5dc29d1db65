"""The admin pages at /admin: the coming draft (the editor's desk), editions with their
delivery counts, failures and clicks, subscribers, feeds, bounces and suppressions.

Only the users of `digest admin add-user` may sign in (digest.audience.admins: argon2id
hashes, a lockout per account and client network after repeated failures, a bounded
number of argon2 verifications at once, the same answer for an unknown address, a wrong
password and a locked one). The session is a random token in the `digest_admin`
cookie (HttpOnly, SameSite=Lax, path /admin, Secure on an https base_url), new at every
sign-in; the store keeps only its hash. Every POST carries the site's CSRF token
(Flask-WTF) and its session's own, compared in constant time. Anonymous GETs go to the
sign-in page, anonymous POSTs are refused.

Every page works without JavaScript (the site's Content-Security-Policy allows none):
each button is a small form that POSTs and is answered with 303 back to its page.
Views parse the request, call a service and render; the rules are the services'.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFError, CSRFProtect

from ..audience.admins import SignInBusy, sign_in, sign_out
from ..audience.clicks import client_network
from ..errors import DigestError, NotFound
from . import admin_desk, admin_lists
from .admin_access import (
    COOKIE,
    HOME,
    Route,
    admin_context,
    admin_message,
    clear_cookie,
    guard,
    identify,
    local_next,
    set_cookie,
)
from .site import site

__all__ = ["LOGIN_BUSY", "LOGIN_FAILED", "LOGIN_LIMIT", "admin_pages"]

# One answer, one status, whatever the reason: nobody learns which addresses have a user.
LOGIN_FAILED = ("That email and password do not match, or the account is locked for a while "
                "after too many tries.")
# When every password verification of the process is taken (digest.audience.admins):
# answered at once, 503 with Retry-After, nothing counted against the account.
LOGIN_BUSY = "Too many sign-ins at this moment. Please try again in a moment."
# Per client network (an IPv6 client by its /64), over every account, counted before any
# password is hashed; beside the limits per account and network of sign_in.
LOGIN_LIMIT = "30 per 10 minutes"

def admin_pages(limiter: Limiter, csrf: CSRFProtect) -> Blueprint:
    """The blueprint of the admin pages, to be mounted at /admin; sign-in attempts are
    limited per client by limiter. (Every POST also passes csrf, the app's CSRFProtect.)"""
    pages = Blueprint("admin", __name__, url_prefix="/admin")
    routes: list[Route] = [
        ("/", home, ["GET"]),
        ("/login", login, ["GET"]),
        ("/login", limiter.limit(LOGIN_LIMIT, key_func=_client)(login_post), ["POST"]),
        ("/logout", logout, ["POST"]),
        *admin_desk.ROUTES,
        *admin_lists.ROUTES,
    ]
    for rule, view, methods in routes:
        pages.add_url_rule(rule, view.__name__, view, methods=list(methods))
    pages.url_value_preprocessor(identify)
    pages.before_request(guard)
    pages.context_processor(admin_context)
    pages.register_error_handler(DigestError, refused)
    pages.register_error_handler(CSRFError, expired)
    return pages


def _client() -> str:
    """The sign-in limit's client: its network."""
    return client_network(request.remote_addr or "")


def refused(exc: DigestError) -> Any:
    """An expected refusal (a wrong request, bad input): its one line, and the way back."""
    values = request.view_args or {}
    endpoint = request.endpoint or ""
    if "number" in values and request.method == "POST":
        link = ("Back to the draft", url_for("admin.desk", number=values["number"]))
    elif "number" in values:
        link = ("Editions", url_for("admin.editions"))
    elif "subscriber_id" in values or endpoint.startswith("admin.subscriber"):
        link = ("Subscribers", url_for("admin.subscribers"))
    elif endpoint.startswith("admin.suppression"):
        link = ("Suppressions", url_for("admin.suppressions"))
    else:
        link = ("The draft", url_for(HOME))
    if isinstance(exc, NotFound):
        return admin_message("Not found", str(exc), status=404, link=link)
    return admin_message("That did not work", str(exc), status=400, link=link)


def expired(_exc: CSRFError) -> Any:
    return admin_message("Form expired", "The form was too old or came from elsewhere. "
                         "Please reload the page and try again.", status=400)


def home() -> Any:
    return redirect(url_for(HOME), 303)


def login() -> Any:
    target = local_next(request.args.get("next"))
    if g.get("digest_admin") is not None:
        return redirect(target, 303)
    return render_template("web/admin/login.html.j2", next=target, email="", problem=None)


def login_post() -> Any:
    here = site()
    target = local_next(request.form.get("next"))
    email = request.form.get("email", "")
    try:
        token = sign_in(here.store, here.settings, email, request.form.get("password", ""),
                        request.remote_addr, replaces=request.cookies.get(COOKIE),
                        verifier=here.verifier)
    except SignInBusy:
        page = render_template("web/admin/login.html.j2", next=target,
                               email=email.strip()[:320], problem=LOGIN_BUSY)
        return page, 503, {"Retry-After": "1"}
    if token is None:
        return render_template("web/admin/login.html.j2", next=target,
                               email=email.strip()[:320], problem=LOGIN_FAILED), 403
    # A new Flask-WTF token too: nothing a browser held before signing in stays valid.
    session.pop("csrf_token", None)
    response = redirect(target, 303)
    set_cookie(response, token)
    return response


def logout() -> Any:
    sign_out(site().store, request.cookies.get(COOKIE))
    g.digest_admin = None
    flash("Signed out.")
    response = redirect(url_for("admin.login"), 303)
    clear_cookie(response)
    return response
