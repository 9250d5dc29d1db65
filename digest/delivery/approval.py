"""The scheduler and the editors ([schedule] approval = "required" | "veto").

draft_lead before each slot the sweep builds the slot's edition as a draft and mails the
editors a review (the edition as readers will get it, with the way to approve or cancel).
At the slot: an approved edition goes out; a draft goes out under "veto" (nobody
cancelled it) when it was drafted for that slot and its review went out before it, and is
otherwise held (the editors are reminded): under "required", a draft made by hand, or one
drafted at the slot itself, which nobody had the time to veto; a cancelled one does not
go out. A held edition approved later goes out at the next sweep while the slot
is within misfire_grace, else at the next slot. Local-time waves work as always: the
ledger is written when the edition starts sending, its waves counted from its slot.

With approval = "none" an edition an editor drafted by hand still goes out only once
approved: an unapproved draft is never sent.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime, timedelta
from html import escape

from ..audience.confirmations import compose_mail
from ..audience.outbox import drain_outbox, queue_mail
from ..config import Settings
from ..errors import NothingToSend
from ..store.articles import upcoming_edition
from ..store.db import Store
from ..store.drafts import adopt_slot, mark_mailed, next_coming
from ..store.editions import edition_at_slot
from ..store.models import Edition, EditionStatus
from .desk import approve_edition, draft_edition, preview_edition
from .editions import plan_edition
from .runner import (
    SlotOutcome,
    TransportFactory,
    enqueue_edition,
    enqueue_only,
    run_slot,
    send_edition,
    slot_outcome,
)

__all__ = ["desk_slot", "desk_sweep", "mail_editors"]

log = logging.getLogger("digest.scheduler")

VETO_BY = "the schedule (nobody cancelled it)"


def _when(settings: Settings, at: datetime | None) -> str:
    if at is None:
        return "when it is sent by hand (digest send)"
    from zoneinfo import ZoneInfo

    local = at.astimezone(ZoneInfo(settings.schedule.timezone))
    return f"at {local:%a %d %b %Y %H:%M} ({settings.schedule.timezone})"


def _vetoable(settings: Settings, edition: Edition, slot: datetime,
              reviewed: datetime | None) -> bool:
    """Whether a draft goes out at slot unless cancelled: under "veto", one drafted for
    that slot whose review reached the editors before it. Any other (made by hand, or
    drafted at the slot itself, when nobody could veto it) waits for an approval."""
    return settings.schedule.approval == "veto" and edition.slot == slot and \
        reviewed is not None and reviewed < slot


def _review_text(settings: Settings, edition: Edition, reminder: bool,
                 now: datetime) -> tuple[str, str]:
    """(subject, the note above the preview) of a review or reminder mail."""
    n = edition.number
    base = settings.digest.base_url.rstrip("/")
    if not reminder and edition.slot is not None and \
            _vetoable(settings, edition, edition.slot, now):
        rule = f"It goes out {_when(settings, edition.slot)} unless an editor cancels it."
    else:
        rule = (f"It goes out {_when(settings, edition.slot)} only once an editor approves "
                f"it" + (": it is held until then." if reminder else "."))
    head = (f"Reminder: edition {n} is waiting for approval" if reminder
            else f"Edition {n} of {settings.digest.name} is ready for review")
    note = (f"{head}: {edition.subject}\n\n{rule}\n\n"
            f"Review it: {base}/admin/editions/{n}/desk\n"
            f"Or in the terminal: digest editions show {n}; digest editions approve {n}; "
            f"digest editions cancel {n}")
    subject = f"[{'Reminder' if reminder else 'Review'}] Edition {n}: {edition.subject}"
    return subject, note


def mail_editors(store: Store, settings: Settings, number: int, now: datetime, *,
                 reminder: bool = False) -> int:
    """Queue the review (or reminder) of edition number to each of [digest] editors and
    send it; returns to how many. The mail is the edition as a reader gets it, with a note
    on top saying how to approve or cancel it."""
    editors = settings.digest.editors
    edition = next_coming(store)
    if not editors or edition is None or edition.number != number:
        return 0
    subject, note = _review_text(settings, edition, reminder, now)
    preview = preview_edition(store, settings, number)
    banner = ("<div style=\"font:15px/1.5 Helvetica,Arial,sans-serif;background:#fff4d6;"
              "color:#1f2328;border:1px solid #d4a72c;padding:12px 16px;margin:12px\">"
              + "<br>".join(escape(line) for line in note.splitlines()) + "</div>")
    html = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + banner, preview.html, count=1)
    text = f"{note}\n\n{'-' * 72}\n\n{preview.text}"
    with store.writes.begin() as session:
        for editor in editors:
            sender, message = compose_mail(settings, editor, subject, text, html, now=now)
            queue_mail(session, sender, editor, message, now)
    mark_mailed(store, number, now, reminder=reminder)
    report = drain_outbox(store, settings, now=now)
    log.info("edition %s: %s mailed to %d editor(s) (%d sent now, %d to retry)", number,
             "reminder" if reminder else "review", len(editors), report.sent, report.deferred)
    return len(editors)


def _fresh(store: Store, now: datetime) -> int:
    return len(upcoming_edition(store, now)[1])


def _draft_for(store: Store, settings: Settings, slot: datetime, now: datetime) -> int | None:
    """Draft the edition of slot and ask the editors to review it; None when fewer than
    min_articles are new (they carry over)."""
    if _fresh(store, now) < max(settings.digest.min_articles, 1):
        return None
    try:
        view = draft_edition(store, settings, now, slot=slot)
    except NothingToSend:
        return None
    mail_editors(store, settings, view.number, now)
    return view.number


def _send_coming(store: Store, settings: Settings, edition: Edition, slot: datetime,
                 now: datetime, stop: threading.Event | None,
                 transports: TransportFactory) -> SlotOutcome:
    """Send the approved edition at slot (with workers: enqueue it)."""
    if edition.slot != slot:
        adopt_slot(store, edition.number, slot)
    waves = settings.schedule.local_time
    try:
        # The decision `digest send` makes, before any connection: an approved edition
        # that would show nothing (only an intro) is held for a person to send.
        plan_edition(store, settings, now, slot=slot)
        if enqueue_only(settings):
            queued, _created, pending = enqueue_edition(store, settings, now, slot=slot,
                                                        waves=waves)
            return SlotOutcome(slot, queued.number, "queued",
                               f"{pending} deliveries pending for the workers")
        report = send_edition(store, settings, transports(settings), now=now, slot=slot,
                              stop=stop, waves=waves)
    except NothingToSend as exc:
        return SlotOutcome(slot, edition.number, "held", str(exc))
    return slot_outcome(store, slot, report, resumed=False)


def desk_slot(store: Store, settings: Settings, slot: datetime, now: datetime,
              stop: threading.Event | None = None,
              transports: TransportFactory | None = None) -> SlotOutcome:
    """One slot when editors have a say (approval is not "none", or a draft waits)."""
    from ..mail.transport import make_transport

    transports = transports or make_transport
    existing = edition_at_slot(store, slot)
    if existing is not None and existing.status is EditionStatus.CANCELLED:
        return SlotOutcome(slot, existing.number, "cancelled", "an editor cancelled it")
    coming = next_coming(store)
    if coming is None:
        if settings.schedule.approval == "none" or (
                existing is not None and existing.status is not EditionStatus.DRAFT):
            return run_slot(store, settings, slot, now, stop, transports)
        # No draft was made ahead (the scheduler was not running draft_lead before).
        number = _draft_for(store, settings, slot, now)
        if number is None:
            return SlotOutcome(slot, None, "skipped", "fewer new articles than min_articles")
        coming = next_coming(store)
        assert coming is not None
    if coming.status is EditionStatus.DRAFT:
        if not _vetoable(settings, coming, slot, coming.review_sent_at):
            if coming.reminded_at is None or coming.reminded_at < slot:
                mail_editors(store, settings, coming.number, now, reminder=True)
            return SlotOutcome(slot, coming.number, "held",
                               "waiting for an editor's approval (digest editions approve "
                               f"{coming.number})")
        approve_edition(store, settings, coming.number, VETO_BY, now)
    return _send_coming(store, settings, coming, slot, now, stop, transports)


def desk_sweep(store: Store, settings: Settings, now: datetime, next_slot: datetime | None,
               stop: threading.Event | None = None,
               transports: TransportFactory | None = None) -> list[str]:
    """The sweep's part: send an edition approved after its slot (within misfire_grace),
    and draft the next slot's edition once it is draft_lead away."""
    if settings.schedule.approval == "none":
        return []
    from ..mail.transport import make_transport

    done: list[str] = []
    coming = next_coming(store)
    grace = timedelta(seconds=settings.schedule.misfire_grace)
    if coming is not None and coming.status is EditionStatus.APPROVED and \
            coming.slot is not None and coming.slot <= now <= coming.slot + grace:
        outcome = _send_coming(store, settings, coming, coming.slot, now, stop,
                               transports or make_transport)
        done.append(f"edition {outcome.edition} (approved after its slot): "
                    f"{outcome.action}: {outcome.detail}")
    elif coming is None and next_slot is not None and \
            now >= next_slot - settings.schedule.lead and \
            edition_at_slot(store, next_slot) is None:
        number = _draft_for(store, settings, next_slot, now)
        if number is not None:
            done.append(f"edition {number}: drafted for {next_slot.isoformat()}; review "
                        f"mailed to {len(settings.digest.editors)} editor(s)")
    return done
