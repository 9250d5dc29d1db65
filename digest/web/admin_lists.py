"""The admin pages that list and change what the CLI lists and changes: editions (with
delivery counts, failures and clicks), subscribers (search, one person's record, status
and topics, CSV import and export), feeds and their health, bounces, suppressions. Each
calls the service its CLI command calls."""

from __future__ import annotations

import io
from typing import Any

from flask import Response, flash, render_template, request

from ..audience import admins
from ..audience.bounces import BounceDesk
from ..audience.privacy import person_record
from ..audience.suppressions import SuppressionBook
from ..delivery.editions import edition_detail, edition_summaries
from ..errors import InputError
from ..ingest.feeds import FeedBook
from ..store.models import SubscriberStatus, SuppressionReason
from .admin_access import Route, back, signed_in
from .clicks import flush_clicks
from .site import site

__all__ = ["ROUTES"]

_PER_PAGE = 50
# The statuses an editor may set from a subscriber's page, by their form value.
_STATUSES = {"active": SubscriberStatus.ACTIVE, "unsubscribed": SubscriberStatus.UNSUBSCRIBED}


# -- editions --

def editions() -> Any:
    here = site()
    flush_clicks()
    rows = list(reversed(edition_summaries(here.store)))
    clicks = admins.clicks_by_number(here.store)
    return render_template("web/admin/editions.html.j2", editions=rows, clicks=clicks,
                           show_clicks=here.settings.tracking.clicks or bool(clicks))


def edition(number: int) -> Any:
    here = site()
    flush_clicks()
    detail = edition_detail(here.store, number, problems=100)
    clicks = admins.clicks_by_number(here.store).get(number, 0)
    return render_template("web/admin/edition.html.j2", e=detail, clicks=clicks,
                           section="admin.editions")


# -- subscribers --

def _status_filter(value: str | None) -> SubscriberStatus | None:
    try:
        status = SubscriberStatus(value) if value else None
    except ValueError:
        raise InputError(f"unknown status {value!r}") from None
    return None if status is SubscriberStatus.REMOVED else status


def subscribers() -> Any:
    here = site()
    query = request.args.get("q", "")
    status = _status_filter(request.args.get("status"))
    page = max(1, request.args.get("page", 1, type=int) or 1)
    found = admins.find_subscribers(here.store, query, status, page, _PER_PAGE)
    pages = max(1, -(-found.total // _PER_PAGE))
    return render_template("web/admin/subscribers.html.j2", found=found, q=query,
                           status=status.value if status else "", page=min(page, pages),
                           pages=pages, statuses=[s.value for s in SubscriberStatus
                                                  if s is not SubscriberStatus.REMOVED],
                           held=here.book.suppressed_keys() if found.rows else set())


def subscriber(subscriber_id: int) -> Any:
    here = site()
    email = admins.subscriber_email(here.store, subscriber_id)
    record = person_record(here.store, here.settings, email)
    return render_template("web/admin/subscriber.html.j2", sid=subscriber_id, r=record,
                           topics=here.settings.topic_names, section="admin.subscribers")


def subscriber_status(subscriber_id: int) -> Any:
    here = site()
    wanted = _STATUSES.get(request.form.get("status", ""))
    if wanted is None:
        raise InputError("choose active or unsubscribed")
    email = admins.subscriber_email(here.store, subscriber_id)
    sub = here.book.set_status(email, wanted, force=request.form.get("force") == "yes",
                               source=f"admin {signed_in().email}")
    flash(f"{sub.email} is {sub.status.value} now.")
    return back("admin.subscriber", subscriber_id=subscriber_id)


def subscriber_topics(subscriber_id: int) -> Any:
    here = site()
    email = admins.subscriber_email(here.store, subscriber_id)
    sub = here.book.set_topics(email, request.form.getlist("topics"))
    flash(f"{sub.email} gets " + (", ".join(sub.topics) if sub.topics else "every topic")
          + ".")
    return back("admin.subscriber", subscriber_id=subscriber_id)


def subscribers_export() -> Any:
    buffer = io.StringIO()
    site().book.export_csv(buffer)
    stamp = site().store.clock.now().strftime("%Y-%m-%d")
    return Response(buffer.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="subscribers-{stamp}.csv"'})


def subscribers_import() -> Any:
    here = site()
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise InputError("choose a CSV file to import (a header row with an email column)")
    dry_run = request.form.get("dry_run") == "yes"
    report = admins.import_upload(here.book, upload.filename, upload.read(), dry_run=dry_run,
                                  reactivate=request.form.get("reactivate") == "yes")
    stored = report.added + report.updated + report.unchanged
    return render_template("web/admin/imported.html.j2", report=report, dry_run=dry_run,
                           filename=upload.filename, section="admin.subscribers"), \
        400 if report.rejected and not stored else 200


# -- feeds, bounces, suppressions --

def feeds() -> Any:
    here = site()
    return render_template("web/admin/feeds.html.j2",
                           feeds=FeedBook(here.store, here.settings).feeds())


def bounces() -> Any:
    here = site()
    desk = BounceDesk(here.store, here.settings)
    return render_template("web/admin/bounces.html.j2", events=desk.events(limit=200),
                           held=desk.held(limit=200))


def suppressions() -> Any:
    here = site()
    wanted = request.args.get("reason") or None
    try:
        reason = SuppressionReason(wanted) if wanted else None
    except ValueError:
        raise InputError(f"unknown reason {wanted!r}") from None
    return render_template("web/admin/suppressions.html.j2",
                           entries=SuppressionBook(here.store, here.settings).entries(reason),
                           reason=wanted or "", reasons=[r.value for r in SuppressionReason])


def suppressions_add() -> Any:
    here = site()
    email = request.form.get("email", "")
    changed = SuppressionBook(here.store, here.settings).add(
        email, SuppressionReason.MANUAL, source="admin pages")
    flash(f"Suppressed {email.strip()}." if changed else f"{email.strip()} was suppressed "
          f"already.")
    return back("admin.suppressions")


def suppressions_remove() -> Any:
    here = site()
    email = request.form.get("email", "")
    found = SuppressionBook(here.store, here.settings).remove(email)
    flash(f"Lifted the suppression of {email.strip()} ({found.reason.value}).")
    return back("admin.suppressions")


ROUTES: list[Route] = [
    ("/editions", editions, ["GET"]),
    ("/editions/<id:number>", edition, ["GET"]),
    ("/subscribers", subscribers, ["GET"]),
    ("/subscribers/<id:subscriber_id>", subscriber, ["GET"]),
    ("/subscribers/<id:subscriber_id>/status", subscriber_status, ["POST"]),
    ("/subscribers/<id:subscriber_id>/topics", subscriber_topics, ["POST"]),
    ("/subscribers/export.csv", subscribers_export, ["GET"]),
    ("/subscribers/import", subscribers_import, ["POST"]),
    ("/feeds", feeds, ["GET"]),
    ("/bounces", bounces, ["GET"]),
    ("/suppressions", suppressions, ["GET"]),
    ("/suppressions/add", suppressions_add, ["POST"]),
    ("/suppressions/remove", suppressions_remove, ["POST"]),
]
