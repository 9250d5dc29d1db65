"""The editor's desk in the browser: the coming draft, each section a table of its
articles with buttons (up, down, pin, lead the edition, drop, move, edit), the intro, the
subject, a preview, approve and cancel. Each button is a small POST form answered with
303 back to the desk, at the article. The rules are digest.delivery.desk's."""

from __future__ import annotations

import re
from typing import Any

from flask import Response, flash, render_template, request

from ..delivery import desk as desks
from ..errors import InputError
from ..store.models import EditionStatus
from .admin_access import Route, back, signed_in
from .clicks import flush_clicks
from .site import site

__all__ = ["ROUTES", "anchor_of"]

# What an article's form may ask for: up and down, pin, unpin, lead the whole edition,
# drop, move to a topic, edit title and teaser.
_ACTIONS = {"up", "down", "pin", "unpin", "lead", "drop", "move", "edit"}


def anchor_of(topic: str) -> str:
    """The id of a topic's section on the desk."""
    return "topic-" + (re.sub(r"[^a-z0-9]+", "-", topic.lower()).strip("-") or "x")


def _said(result: object, otherwise: str) -> None:
    """Flash what a desk call said it did (or otherwise)."""
    flash(result if isinstance(result, str) and result else otherwise)


def draft() -> Any:
    """The coming draft's desk, or a page that offers to make one."""
    number = desks.coming_draft(site().store)
    if number is not None:
        return back("admin.desk", number=number)
    return render_template("web/admin/no_draft.html.j2", section="admin.draft")


def draft_post() -> Any:
    here = site()
    view = desks.draft_edition(here.store, here.settings, here.store.clock.now())
    flash(f"Drafted edition {view.number}: {sum(len(s.articles) for s in view.sections)} "
          f"stories under {len(view.sections)} topics.")
    return back("admin.desk", number=view.number)


def desk(number: int) -> Any:
    here = site()
    flush_clicks()
    view = desks.desk_view(here.store, here.settings, number)
    present = [s.topic for s in view.sections]
    topics = list(dict.fromkeys([*here.settings.topic_names, *present]))
    coming = view.status in (EditionStatus.DRAFT, EditionStatus.APPROVED)
    return render_template("web/admin/desk.html.j2", view=view, topics=topics,
                           changeable=coming, anchor_of=anchor_of,
                           section="admin.draft" if coming else "admin.editions")


def article_post(number: int, article_id: int) -> Any:
    here = site()
    action = request.form.get("action", "")
    if action not in _ACTIONS:
        raise InputError(f"unknown action {action[:40]!r}: choose one of the article's "
                         f"buttons")
    store, settings = here.store, here.settings
    anchor: str | None = f"article-{article_id}"
    if action in ("up", "down"):
        said: object = desks.shift_article(store, settings, number, article_id,
                                          -1 if action == "up" else 1)
    elif action in ("pin", "unpin", "lead"):
        said = desks.pin_article(store, settings, number, article_id, top=action == "lead",
                                unpin=action == "unpin")
    elif action == "drop":
        said = desks.drop_article(store, settings, number, article_id)
        anchor = anchor_of(request.form["section"]) if request.form.get("section") else None
    elif action == "move":
        said = desks.move_article(store, settings, number, article_id,
                                 request.form.get("topic", ""))
    else:
        said = desks.edit_article(store, settings, number, article_id,
                                 title=request.form.get("title"),
                                 teaser=request.form.get("teaser"))
    _said(said, f"Done: {action} article {article_id}.")
    return back("admin.desk", anchor=anchor, number=number)


def intro_post(number: int) -> Any:
    here = site()
    said = desks.set_intro(here.store, here.settings, number, request.form.get("intro", ""))
    _said(said, "Saved the intro.")
    return back("admin.desk", anchor="intro", number=number)


def subject_post(number: int) -> Any:
    here = site()
    said = desks.set_subject(here.store, here.settings, number,
                            request.form.get("subject", ""))
    _said(said, "Saved the subject.")
    return back("admin.desk", anchor="subject", number=number)


def refresh_post(number: int) -> Any:
    here = site()
    added = desks.refresh_draft(here.store, here.settings, number, here.store.clock.now())
    flash(f"Refreshed: {added} new article{'s' * (added != 1)} added." if added
          else "Refreshed: no new articles since the draft was made.")
    return back("admin.desk", number=number)


def approve_post(number: int) -> Any:
    here = site()
    said = desks.approve_edition(here.store, here.settings, number, signed_in().email,
                                here.store.clock.now(), seen=request.form.get("seen") or None)
    _said(said, f"Approved edition {number}.")
    return back("admin.desk", number=number)


def cancel_post(number: int) -> Any:
    here = site()
    if request.form.get("confirm") != "yes":
        raise InputError(f"tick the box to confirm that edition {number} is never to be sent")
    returned = desks.cancel_edition(here.store, here.settings, number, here.store.clock.now())
    flash(f"Cancelled edition {number}: it will never be sent; its {returned} "
          f"article{'s' * (returned != 1)} went back to the pool.")
    return back("admin.editions")


def preview(number: int) -> Any:
    """The edition's HTML as a reader would get it, for the desk's iframe."""
    here = site()
    shown = desks.preview_edition(here.store, here.settings, number)
    return Response(shown.html, mimetype="text/html")


ROUTES: list[Route] = [
    ("/draft", draft, ["GET"]),
    ("/draft", draft_post, ["POST"]),
    ("/editions/<id:number>/desk", desk, ["GET"]),
    ("/editions/<id:number>/articles/<id:article_id>", article_post, ["POST"]),
    ("/editions/<id:number>/intro", intro_post, ["POST"]),
    ("/editions/<id:number>/subject", subject_post, ["POST"]),
    ("/editions/<id:number>/refresh", refresh_post, ["POST"]),
    ("/editions/<id:number>/approve", approve_post, ["POST"]),
    ("/editions/<id:number>/cancel", cancel_post, ["POST"]),
    ("/editions/<id:number>/preview", preview, ["GET"]),
]
