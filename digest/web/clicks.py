"""The tracked "read more" link, ``/r/{token}``: a redirect to the article, counted by
the click service (digest.audience.clicks) unless a machine asked. Never cached, so each
reader's click reaches us; the app's Referrer-Policy (no-referrer) keeps our address
from the article's site."""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, current_app, redirect, request

from ..audience.clicks import BadToken, ClickCounter
from .site import site

__all__ = ["close_clicks", "flush_clicks", "follow_click", "start_clicks"]

_EXTENSION = "digest-clicks"


def _counter() -> ClickCounter:
    """The click service of the current app, made at its first click."""
    found = current_app.extensions.get(_EXTENSION)
    if found is None:
        here = site()
        found = current_app.extensions.setdefault(_EXTENSION,
                                                  ClickCounter(here.store, here.settings))
    counter: ClickCounter = found
    return counter


def start_clicks(app: Flask) -> None:
    """Start the app's click service and its flusher (the server is starting): the
    counting of editions closes on time, also while nobody clicks."""
    with app.app_context():
        _counter().start()


def close_clicks(app: Flask) -> None:
    """Store the clicks the app's click service holds and stop its flusher (the server
    is going down)."""
    found = app.extensions.get(_EXTENSION)
    if found is not None:
        counter: ClickCounter = found
        counter.close()


def flush_clicks() -> None:
    """Store what the current app's click service holds now, so that a page showing
    counts shows the clicks this server has answered (other processes: within a flush)."""
    found = current_app.extensions.get(_EXTENSION)
    if found is not None:
        counter: ClickCounter = found
        counter.flush()


def follow_click(token: str) -> Any:
    """GET or HEAD: 302 to the article; 400 for a forged or cut link, 404 for one whose
    edition never went out or whose article is no longer in it."""
    try:
        followed = _counter().follow(
            token, method=request.method, user_agent=request.headers.get("User-Agent", ""),
            address=request.remote_addr or "", now=site().store.clock.now())
    except BadToken:
        abort(400, "This link is not valid: it may have been cut or altered.")
    if followed is None:
        abort(404)
    response = redirect(followed.url, 302)
    response.headers["Cache-Control"] = "no-store"
    return response
