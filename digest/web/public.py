"""The public pages: one-click unsubscribe (RFC 8058), double opt-in sign-up, topic
preferences, and the archive of sent editions (HTML and Atom).

Views parse the request, call the subscriber service (digest.audience.subscribers) or the
archive queries, and render a page: no SQL and no rules of their own here. Links that
change something (confirm, unsubscribe) show a page with a button on GET, because mail
scanners follow links.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from flask import Blueprint, Response, abort, render_template, request, url_for
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFProtect

from ..audience.confirmations import CONFIRM_HOURS
from ..audience.privacy import erase, person_record
from ..audience.subscribers import LinkState, clean_name
from ..errors import InputError
from ..store.archive import published_article, published_editions
from ..store.models import Subscriber, SubscriberStatus
from ..tokens import TokenClaims
from .clicks import follow_click
from .site import page, site

__all__ = ["SIGNUP_LIMIT", "public_pages"]

SIGNUP_LIMIT = "5 per 10 minutes"
log = logging.getLogger("digest.web")

_USED = "This link was already used, or has been replaced by a newer one."


def public_pages(limiter: Limiter, csrf: CSRFProtect) -> Blueprint:
    """The blueprint of the public pages; sign-ups are rate limited by limiter, and the
    one-click POST is exempt from csrf (mail providers POST it without cookies)."""
    pages = Blueprint("public", __name__)
    routes: list[tuple[str, Callable[..., Any], Sequence[str]]] = [
        ("/u/<token>", unsubscribe_page, ["GET"]),
        ("/u/<token>", csrf.exempt(unsubscribe_one_click), ["POST"]),
        ("/unsubscribe", unsubscribe_help, ["GET"]),
        # /subscribe first: url_for (the form's action) builds the first rule of a view.
        ("/subscribe", subscribe, ["GET"]),
        ("/", subscribe, ["GET"]),
        ("/subscribe", limiter.limit(SIGNUP_LIMIT)(subscribe_post), ["POST"]),
        ("/confirm/<token>", confirm, ["GET"]),
        ("/confirm/<token>", confirm_post, ["POST"]),
        ("/p/<token>", preferences, ["GET", "POST"]),
        ("/editions", editions, ["GET"]),
        ("/editions.atom", editions_feed, ["GET"]),
        ("/editions/<id:number>", edition, ["GET"]),
        ("/articles/<id:article_id>", article, ["GET"]),
        ("/r/<token>", follow_click, ["GET", "HEAD"]),
    ]
    for rule, view, methods in routes:
        pages.add_url_rule(rule, view.__name__, view, methods=list(methods))
    return pages


def _claims(purpose: str, token: str) -> TokenClaims:
    """The claims of a valid token, or a 400 page (nothing changes)."""
    claims = site().claims(purpose, token)
    if claims is None:
        abort(400, site().token_problem(purpose, token))
    return claims


def _subscriber(purpose: str, token: str) -> Subscriber:
    """The subscriber a valid, current token names, or a 400 page (nothing changes)."""
    claims = _claims(purpose, token)
    sub = site().book.by_link(claims.subscriber_id, claims.version)
    if sub is None:
        abort(400, _USED)
    return sub


def _unsubscribed(sub: Subscriber, *more: str, **kwargs: Any) -> tuple[str, int]:
    return page("You are unsubscribed", f"{sub.email} receives no more emails from "
                f"{site().settings.digest.name}.", *more, **kwargs)


def _already_subscribed(sub: Subscriber) -> tuple[str, int]:
    return page("You're already subscribed", f"{sub.email} already receives "
                f"{site().settings.digest.name}; there is nothing to confirm.",
                "To change your topics, use the “Manage topics” link in any digest.")


# -- unsubscribe (RFC 8058) --

def unsubscribe_page(token: str) -> Any:
    sub = _subscriber("unsubscribe", token)
    if sub.status is SubscriberStatus.UNSUBSCRIBED:
        return _unsubscribed(sub)
    return render_template("web/unsubscribe.html.j2", email=sub.email,
                           preferences_url=url_for(".preferences",
                                                   token=site().preferences_token(sub)))


def unsubscribe_one_click(token: str) -> Any:
    sub = _subscriber("unsubscribe", token)
    if request.form.get("List-Unsubscribe") != "One-Click":
        abort(400, "An unsubscribe request must carry List-Unsubscribe=One-Click.")
    site().book.unsubscribe(sub.id, one_click=True)
    return _unsubscribed(sub, "Changed your mind? You can subscribe again at any time.",
                         link=("Subscribe again", url_for(".subscribe")))


def unsubscribe_help() -> Any:
    return page("Unsubscribe", "Use the unsubscribe link at the bottom of any email "
                "from us: it unsubscribes that address at once.")


# -- sign-up with double opt-in --

def subscribe() -> Any:
    return render_template("web/subscribe.html.j2", topics=site().settings.topic_names,
                           form={"email": "", "name": "", "topics": []}, problem=None)


def subscribe_post() -> Any:
    here = site()
    form: dict[str, Any] = {"email": request.form.get("email", "").strip()[:320],
                            "name": clean_name(request.form.get("name", "")),
                            "topics": request.form.getlist("topics")}
    try:
        address = here.book.sign_up(form["email"], form["name"], form["topics"], here.mail,
                                    client=request.remote_addr)
    except InputError as exc:
        return render_template("web/subscribe.html.j2", topics=here.settings.topic_names,
                               form=form, problem=str(exc)), 400
    if here.outbox is not None:
        here.outbox.wake()
    return page("Check your inbox", f"If {address} can subscribe, a confirmation link "
                f"is on its way to it.", f"The link works for {CONFIRM_HOURS} hours.")


def confirm(token: str) -> Any:
    # A page with a button: mail scanners follow links, and must not subscribe anyone.
    claims = _claims("confirm", token)
    state, sub = site().book.confirmation(claims.subscriber_id, claims.version)
    if state is LinkState.USED or sub is None:
        abort(400, _USED)
    if state is LinkState.ALREADY_ACTIVE:
        return _already_subscribed(sub)
    return render_template("web/confirm.html.j2", email=sub.email)


def confirm_post(token: str) -> Any:
    claims = _claims("confirm", token)
    here = site()
    state, sub = here.book.confirm(claims.subscriber_id, claims.version, here.welcome,
                                   client=request.remote_addr)
    if state is LinkState.READY and here.outbox is not None:
        here.outbox.wake()
    if state is LinkState.USED or sub is None:
        abort(400, _USED)
    if state is LinkState.ALREADY_ACTIVE:
        return _already_subscribed(sub)
    return page("You are subscribed", f"{sub.email} will receive "
                f"{site().settings.digest.name}.",
                link=("Choose your topics",
                      url_for(".preferences", token=site().preferences_token(sub))))


# -- preferences --

def preferences(token: str) -> Any:
    here = site()
    sub = _subscriber("preferences", token)
    saved = False
    if request.method == "POST":
        action = request.form.get("action", "save")
        if action == "unsubscribe":
            return _unsubscribed(here.book.unsubscribe(sub.id))
        if action in ("download", "erase"):
            return _your_data(sub, action)
        try:
            sub = here.book.set_preferences(sub.id, request.form.getlist("topics"),
                                            request.form.get("timezone"))
        except InputError as exc:
            abort(400, str(exc))
        saved = True
    return render_template("web/preferences.html.j2", subscriber=sub,
                           topics=here.settings.topic_names, zones=_zones(),
                           default_zone=here.settings.schedule.timezone, saved=saved)


def _your_data(sub: Subscriber, action: str) -> Any:
    """The preferences page's "download my data" and "delete me" (POST, CSRF-checked)."""
    here = site()
    if action == "download":
        record = person_record(here.store, here.settings, sub.email)
        return Response(json.dumps(record, indent=2, ensure_ascii=False) + "\n",
                        mimetype="application/json", headers={
                            "Content-Disposition": 'attachment; filename="my-data.json"'})
    if request.form.get("confirm") != "yes":
        abort(400, "Tick the box to confirm that everything about you should be deleted.")
    if not erase(here.store, here.settings, sub.email)["scrubbed"]:
        log.warning("subscriber %s erased; another reader kept the store file from being "
                    "compacted: run digest db compact", sub.id)
    return page("Deleted", "Everything we held about you is deleted, and you will get no "
                "more mail from us.", "We keep only a one-way fingerprint of the address, "
                "so that it is never added to the list again by mistake.")


# -- archive --

def editions() -> Any:
    return render_template("web/editions.html.j2", editions=published_editions(site().store))


def editions_feed() -> Any:
    rows = published_editions(site().store, limit=50)
    updated = max((e.finished_at or e.created_at for e in rows),
                  default=datetime(2000, 1, 1, tzinfo=UTC))
    body = render_template("web/editions.atom.j2", editions=rows, base=site().base,
                           updated=updated.isoformat())
    return Response(body, mimetype="application/atom+xml")


def edition(number: int) -> Any:
    html = site().edition_html(number)
    if html is None:
        abort(404)
    return Response(html, mimetype="text/html")


def article(article_id: int) -> Any:
    row = published_article(site().store, article_id)
    if row is None:
        abort(404)
    return render_template("web/article.html.j2", article=row,
                           paragraphs=[p for p in (row.body or "").split("\n\n") if p])


@lru_cache(maxsize=1)
def _zones() -> Sequence[str]:
    return sorted(z for z in available_timezones() if "/" in z and not z.startswith(
        ("Etc/", "SystemV/", "US/", "posix/", "right/")))

