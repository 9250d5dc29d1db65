"""The edition lifecycle: plan, open (create with its whole ledger, or resume), finish,
pause, reopen failed deliveries, discard; test copies and dry runs; the reports.

The ledger contract (DESIGN.md): one delivery row per (edition, subscriber); a
subscriber never gets an edition twice, except messages in flight when the process was
killed (at most one per connection), which carry the same Message-ID when resent.
Every read and write goes through digest.store.editions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import make_msgid
from typing import Any

from ..audience.subscribers import SubscriberBook, normalise_email, refusal
from ..config import Settings
from ..content.edition import build_content, effective_variant, showing
from ..content.stories import Previous
from ..errors import DeliveryError, InputError, NothingToSend
from ..mail.message import (
    MessageTemplate,
    Recipient,
    message_id,
    variant_template,
)
from ..mail.ranking import editorial_for, previous_for
from ..mail.render import Renderer
from ..mail.transport import PermanentFailure, TemporaryFailure, Transport
from ..store import editions as stored
from ..store.db import Store
from ..store.drafts import COMING
from ..store.editions import EditionDetail, EditionSummary, EditionWork
from ..store.models import Article, DeliveryStatus, Edition, EditionStatus
from .timing import wave_time

__all__ = [
    "EditionDetail",
    "EditionPlan",
    "EditionSummary",
    "NoRecipients",
    "NotApproved",
    "TooFew",
    "discard_edition",
    "edition_detail",
    "edition_summaries",
    "finish_editions",
    "give_up_edition",
    "has_unfinished_edition",
    "open_edition",
    "plan_edition",
    "reopen_failed",
    "send_test_copy",
]

_LEDGER_CHUNK = 2000


@dataclass(frozen=True)
class EditionPlan:
    """What sending would do now, before anything is written: make a new edition of the
    new articles ("new"), start the approved one ("start"), or go on with one that is
    already sending ("resume": its pending deliveries)."""

    number: int
    articles: int
    topics: tuple[str, ...]
    recipients: int           # subscribers who would get a message
    skipped: int              # active subscribers whose topics have nothing new
    variants: int
    action: str = "new"
    pending: int = 0          # resume: the deliveries still to send
    paused: bool = False      # resume: the edition was paused (it goes on before any new one)
    intro_only: bool = False  # no articles, only the editor's intro (--allow-empty)


class NotApproved(InputError):
    """The edition waits for an editor's approval."""


class NoRecipients(NothingToSend):
    """Nobody would receive the edition: making it would use up its articles."""


class TooFew(NothingToSend):
    """Fewer new articles than [digest] min_articles: they carry over (--force sends)."""


def _nothing_new(work: EditionWork, articles: Sequence[Article] = (),
                 previous: Previous | None = None) -> NothingToSend:
    last = work.last_number()
    if articles and previous is not None:
        n = len(articles)
        return NothingToSend(f"nothing new since edition {previous.number}: the {n} new "
                             f"article{'s' * (n != 1)} only repeat{'s' * (n == 1)} stories "
                             f"it sent, so nothing to send (digest preview --explain lists "
                             f"them)")
    return NothingToSend("no new articles" + (f" since edition {last}" if last else "") +
                         ": nothing to send (import some with: digest articles import FILE…)")


@dataclass
class _Audience:
    """Whom an edition reaches, counted as each active subscriber is placed: recipients,
    skipped (nothing new in their topics), and the distinct variants among them."""

    recipients: int = 0
    skipped: int = 0
    variants: set[str] = field(default_factory=set)

    def place(self, chosen: Sequence[str], topics: Iterable[str]) -> str | None:
        """The variant of a subscriber who chose these topics (None: nothing for them)."""
        variant = effective_variant(chosen, topics)
        if variant is None:
            self.skipped += 1
        else:
            self.recipients += 1
            self.variants.add(variant)
        return variant


def _nobody(skipped: int, topics: Iterable[str]) -> NoRecipients:
    """An edition nobody would receive is never made: its articles would be used up."""
    if not skipped:
        return NoRecipients("there are no active subscribers: nothing to send, and the new "
                            "articles wait for the next edition (add someone with: digest "
                            "subscribers add EMAIL)")
    return NoRecipients(f"none of the {skipped} active subscribers chose a topic with new "
                        f"articles ({', '.join(sorted(topics))}): nothing to send, and the "
                        f"articles wait for the next edition")


# --- the one decision: what sending would do now ------------------------------------------

@dataclass
class _Choice:
    """The edition sending would go on with: "new" (made of the new articles), "start"
    (the approved one), "resume" (the unfinished one: a paused one sends again) or
    "existing" (the one named, or the slot's, as it is); what it would take and the
    topics it shows (whom it reaches follows them)."""

    action: str
    number: int
    edition: Edition | None = None
    articles: list[Article] = field(default_factory=list)
    topics: frozenset[str] = frozenset()

    @property
    def intro_only(self) -> bool:
        return self.action in ("new", "start") and not self.topics


def _choose(store: Store, work: EditionWork, settings: Settings, now: datetime, *,
            number: int | None = None, slot: datetime | None = None, force: bool = False,
            allow_empty: bool = False) -> _Choice:
    """What `digest send` (its dry run, --enqueue, a scheduled slot) would go on with now:
    edition number, else the unfinished one, else the approved one, else the slot's, else
    a new one of the new articles. An edition that would show nothing is never made or
    started (NothingToSend); an approved one with only the editor's intro only with
    allow_empty; a new one needs min_articles unless force."""
    if number is not None:
        numbered = work.numbered(number)
        if numbered.status in COMING or numbered.status is EditionStatus.CANCELLED:
            return _approved(store, work, settings, numbered, allow_empty)
        return _Choice("existing", numbered.number, numbered)
    edition = work.unfinished()
    if edition is not None:
        return _Choice("resume", edition.number, edition)
    coming = work.coming()
    if coming is not None:
        return _approved(store, work, settings, coming, allow_empty)
    if slot is not None:
        done = work.at_slot(slot)
        if done is not None:
            return _Choice("existing", done.number, done)
    if settings.schedule.approval == "required":
        raise _approval_required()
    articles = work.new_articles(now)
    number = work.next_number()
    previous = previous_for(store, number)
    shows = showing(articles, settings, now, previous)
    if shows.empty:
        raise _nothing_new(work, articles, previous)
    least = max(settings.digest.min_articles, 1)
    if shows.articles < least and not force:
        raise TooFew(f"{shows.articles} new article{'s' * (shows.articles != 1)}, fewer "
                     f"than min_articles {settings.digest.min_articles}; they carry over "
                     f"to the next edition")
    return _Choice("new", number, None, articles, shows.topics)


def _approved(store: Store, work: EditionWork, settings: Settings, edition: Edition,
               allow_empty: bool) -> _Choice:
    """The approved edition, to start: refused while a draft, or when cancelled, or when
    it would show nothing (with only an intro: unless allow_empty)."""
    n = edition.number
    if edition.status is EditionStatus.DRAFT:
        raise _not_approved(n)
    if edition.status is EditionStatus.CANCELLED:
        raise InputError(f"edition {n} was cancelled: it is never sent")
    articles = work.articles_of(edition)
    shows = showing(articles, settings, edition.date, previous_for(store, n))
    if shows.empty and not edition.intro:
        raise NothingToSend(f"edition {n} has no articles and no intro: nothing to send "
                            f"(cancel it: digest editions cancel {n})")
    if shows.empty and not allow_empty:
        raise NothingToSend(f"edition {n} has no articles, only its intro: nothing to send "
                            f"unless you mean it (digest send --allow-empty sends it as it "
                            f"is; digest editions cancel {n} drops it)")
    return _Choice("start", n, edition, articles, shows.topics)


def plan_edition(store: Store, settings: Settings, now: datetime, *,
                 number: int | None = None, slot: datetime | None = None,
                 force: bool = False, allow_empty: bool = False,
                 render: bool = False) -> EditionPlan:
    """What `digest send` with these options would do now, decided as open_edition
    decides (nothing is written). With render, everything it would do up to the wire:
    every variant rendered, every message built (the dry run). NothingToSend when
    nothing would go out, NoRecipients when nobody would receive it."""
    with stored.read_work(store) as work:
        choice = _choose(store, work, settings, now, number=number, slot=slot, force=force,
                         allow_empty=allow_empty)
        if choice.action in ("resume", "existing"):
            assert choice.edition is not None
            return EditionPlan(choice.number, 0, (), 0, 0, 0, "resume",
                               stored.pending_deliveries(store, number=choice.number),
                               paused=choice.edition.status is EditionStatus.PAUSED)
        audience = _Audience()
        if render:
            _render_all(store, settings, choice, now, audience)
        else:
            for _sid, chosen, _zone in work.active_subscribers():
                audience.place(chosen, choice.topics)
    if not audience.recipients:
        raise _nobody(audience.skipped, choice.topics)
    return EditionPlan(choice.number, len(choice.articles), tuple(sorted(choice.topics)),
                       audience.recipients, audience.skipped, len(audience.variants),
                       choice.action, intro_only=choice.intro_only)


def _render_all(store: Store, settings: Settings, choice: _Choice, now: datetime,
                audience: _Audience) -> None:
    """Render every variant of the chosen edition and build every message (placing
    each active subscriber in audience), storing and sending nothing."""
    coming = choice.edition
    date = coming.date if coming is not None else now
    editorial = editorial_for(store, settings, coming, number=choice.number, cutoff=date)
    templates: dict[str, MessageTemplate] = {}
    for sub in stored.active_recipients(store):
        variant = audience.place(sub.topics, choice.topics)
        if variant is None:
            continue
        if variant not in templates:
            templates[variant] = variant_template(settings, choice.articles, choice.number,
                                                  date, variant, editorial=editorial,
                                                  clock=store.clock)
        templates[variant].build(Recipient(sub.id, sub.email, sub.name, sub.token_version,
                                           message_id(settings, 0, sub.id)))


def _not_approved(number: int) -> NotApproved:
    return NotApproved(f"edition {number} is a draft waiting for approval: review it "
                       f"(digest editions show {number}) and approve it with: digest "
                       f"editions approve {number}")


def _approval_required() -> NotApproved:
    return NotApproved("[schedule] approval is \"required\": every edition needs an editor; "
                       "make a draft with: digest editions draft")


def open_edition(store: Store, settings: Settings, now: datetime, *,
                 number: int | None = None, slot: datetime | None = None,
                 force: bool = False, allow_empty: bool = False,
                 waves: bool = False) -> tuple[Edition, bool]:
    """The edition to send, as plan_edition decides: number N, else an unfinished one,
    else the approved one, else a new one made of the articles no edition has taken (with
    its whole ledger, in one transaction). An edition that would show nothing, or that
    nobody would receive, is not made (NothingToSend): its articles wait. With waves
    (local-time delivery) each delivery waits for the cron's hour in the subscriber's
    own zone. Returns (edition, created)."""
    # Every message carries signed links: without a key nothing may be created that
    # could not be sent.
    settings.signing_key  # noqa: B018
    with stored.locked_work(store) as work:
        choice = _choose(store, work, settings, now, number=number, slot=slot, force=force,
                         allow_empty=allow_empty)
        edition = choice.edition
        if choice.action == "existing":
            assert edition is not None
            return edition, False
        if choice.action == "resume":
            assert edition is not None
            if edition.status is EditionStatus.PAUSED:
                edition.status = EditionStatus.SENDING
            return edition, False
        if choice.action == "start":
            assert edition is not None
            return _start_approved(work, settings, edition, choice.topics, now, waves), True
        number = choice.number
        content = build_content(choice.articles, settings, number, now,
                                editorial=editorial_for(store, settings, None, number=number,
                                                        cutoff=now))
        edition = work.create(number, now, slot, Renderer(settings).subject(content),
                              choice.articles)
        audience = _write_ledger(work, settings, edition, choice.topics,
                                 slot or now if waves else None)
        if not audience.recipients:
            raise _nobody(audience.skipped, choice.topics)    # the transaction rolls back
        return edition, True


def _start_approved(work: EditionWork, settings: Settings, edition: Edition,
                    topics: frozenset[str], now: datetime, waves: bool) -> Edition:
    """The approved edition starts sending: its whole ledger is written now (whom it
    reaches is decided at send time, not when it was drafted)."""
    edition.status = EditionStatus.SENDING
    audience = _write_ledger(work, settings, edition, topics,
                             edition.slot or now if waves else None)
    if not audience.recipients:
        raise _nobody(audience.skipped, topics)    # rolls back: stays approved
    return edition


def _write_ledger(work: EditionWork, settings: Settings, edition: Edition,
                  topics: frozenset[str], wave_base: datetime | None) -> _Audience:
    """One delivery row per active subscriber; returns whom the edition reaches."""
    rows: list[dict[str, Any]] = []
    waves: dict[str | None, datetime] = {}
    audience = _Audience()
    for sid, chosen, zone in work.active_subscribers():
        variant = audience.place(chosen, topics)
        if wave_base is not None and zone not in waves:
            waves[zone] = wave_time(settings, zone, wave_base)
        rows.append({
            "edition_id": edition.id, "subscriber_id": sid, "variant": variant or "",
            "message_id": message_id(settings, edition.id, sid),
            "status": (DeliveryStatus.PENDING if variant is not None
                       else DeliveryStatus.SKIPPED).value,
            "last_error": None if variant is not None else "nothing new in chosen topics",
            "attempts": 0,
            "not_before": waves.get(zone) if wave_base is not None else None,
        })
        if len(rows) >= _LEDGER_CHUNK:
            work.add_deliveries(rows)
            rows = []
    if rows:
        work.add_deliveries(rows)
    return audience


def finish_editions(store: Store, paused: bool, edition_id: int | None = None) -> None:
    """Mark editions with nothing pending as sent (or the edition as paused)."""
    stored.finish(store, paused, edition_id)


def has_unfinished_edition(store: Store) -> bool:
    """True while an edition is still sending or paused."""
    return bool(stored.unfinished_numbers(store))


def reopen_failed(store: Store, number: int) -> tuple[int, int]:
    """Make edition N's failed deliveries pending again, for subscribers still active (after
    the operator fixed what made them fail). Returns (reopened, left: failed deliveries of
    subscribers who are no longer active, which stay as they are)."""
    return stored.reopen_failed(store, number)


def give_up_edition(store: Store, number: int) -> int:
    """Finish paused edition N as it stands: what it has not sent fails (`digest send
    --retry-failed --edition N` can still send it), and the next edition can be made.
    Returns how many deliveries failed."""
    return stored.give_up(store, number)


def discard_edition(store: Store, number: int) -> int:
    """Delete edition N, which nobody received (no delivery sent or in flight), with its
    ledger; its articles return to the pool for the next edition. Returns how many."""
    return stored.discard(store, number)


def edition_summaries(store: Store) -> list[EditionSummary]:
    """Every edition, oldest first, with its article and delivery counts."""
    return stored.edition_summaries(store)


def edition_detail(store: Store, number: int, problems: int = 20) -> EditionDetail:
    """Edition N with its topics, delivery counts and up to `problems` troubled deliveries."""
    return stored.edition_detail(store, number, problems)


def send_test_copy(store: Store, settings: Settings, transport: Transport, address: str,
                   now: datetime) -> str:
    """Send the coming (or unfinished) edition to one address, "[TEST]" in the subject,
    without touching the ledger. Returns the subject."""
    address = normalise_email(address)
    book = SubscriberBook(store, settings)
    with store.sessions() as session:
        found = book.suppression(session, address)
    if found is not None:
        # A test copy is mail too: an address on the list gets none.
        lift = f"digest suppressions remove {address}"
        raise InputError("no test copy: " + refusal(address, found, lift))
    number, date, articles, sub, edition = stored.test_copy_source(store, now, address)
    editorial = editorial_for(store, settings, edition, number=number, cutoff=date)
    if showing(articles, settings, date, editorial.previous).empty and not editorial.intro:
        raise NothingToSend("no new articles" + (" (only repeats of what edition "
                                                 f"{editorial.previous.number} sent)"
                                                 if articles and editorial.previous else "")
                            + ": nothing to send a test copy of")
    template = variant_template(settings, articles, number, date, test=True, clock=store.clock,
                                editorial=editorial)
    domain = template.envelope_from.rsplit("@", 1)[1]
    recipient = Recipient(sub.id if sub else 0, address, sub.name if sub else "",
                          sub.token_version if sub else 0, make_msgid(domain=domain))
    # The same bytes a subscriber would get (folded headers, DKIM when configured).
    message = template.build(recipient)
    conn = transport.open()
    try:
        conn.send(template.envelope_from, address, message)
    except (TemporaryFailure, PermanentFailure) as exc:
        raise DeliveryError(f"the server did not take the test copy for {address}: {exc}"
                            ) from None
    finally:
        conn.close()
    return template.rendered.subject
