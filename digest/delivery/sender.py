"""Editions and their delivery: create (or resume) an edition, write its ledger, send it
over a pool of connections, and record every result.

The ledger contract (DESIGN.md): one delivery row per (edition, subscriber); a
subscriber never gets an edition twice, except messages in flight when the process was
killed (at most one per connection), which carry the same Message-ID when resent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import make_msgid

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from ..audience.subscribers import normalise_email
from ..config import Settings
from ..content.edition import build_content, effective_variant, new_articles, next_edition_number
from ..errors import DeliveryError, EditionPaused, InputError, NothingToSend, ServerRefused
from ..mail.message import SMTP_POLICY, MessageTemplate, Recipient, build_email_message, message_id
from ..mail.render import Renderer
from ..mail.transport import Connection, PermanentFailure, TemporaryFailure, Transport
from ..store.ledger import Claim, Ledger, Store, delivery_counts, new_owner, retire_owner
from ..store.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from .timing import wave_time

__all__ = [
    "EditionPlan",
    "NoRecipients",
    "SendReport",
    "Sender",
    "discard_edition",
    "dry_run_edition",
    "enqueue_edition",
    "finish_editions",
    "next_retry",
    "open_edition",
    "plan_edition",
    "reopen_failed",
    "retry_deferred",
    "run_worker",
    "send_edition",
    "send_test_copy",
]

_LEDGER_CHUNK = 2000
_MAX_BACKOFF = timedelta(hours=12)


@dataclass(frozen=True)
class EditionPlan:
    """What an edition would be, before it exists."""

    number: int
    articles: int
    topics: tuple[str, ...]
    recipients: int           # subscribers who would get a message
    skipped: int              # active subscribers whose topics have nothing new
    variants: int


@dataclass
class SendReport:
    edition: int | None
    counts: dict[str, int]                    # the ledger for the edition, after this run
    this_run: dict[str, int] = field(default_factory=dict)
    paused: str | None = None
    created: bool = False


def _active_subscribers(session: Session) -> Iterator[tuple[int, list[str], str | None]]:
    query = (select(Subscriber.id, Subscriber.topics, Subscriber.timezone)
             .where(Subscriber.status == SubscriberStatus.ACTIVE).order_by(Subscriber.id))
    for sid, topics, zone in session.execute(query.execution_options(yield_per=_LEDGER_CHUNK)):
        yield sid, topics or [], zone


def _nothing_new(session: Session) -> NothingToSend:
    last = session.scalar(select(func.max(Edition.number)))
    return NothingToSend("no new articles" + (f" since edition {last}" if last else "") +
                         ": nothing to send (import some with: digest articles import FILE…)")


class NoRecipients(NothingToSend):
    """Nobody would receive the edition: making it would use up its articles."""


def _nobody(skipped: int, topics: Sequence[str]) -> NoRecipients:
    """An edition nobody would receive is never made: its articles would be used up."""
    if not skipped:
        return NoRecipients("there are no active subscribers: nothing to send, and the new "
                             "articles wait for the next edition (add someone with: digest "
                             "subscribers add EMAIL)")
    return NoRecipients(f"none of the {skipped} active subscribers chose a topic with new "
                         f"articles ({', '.join(topics)}): nothing to send, and the articles "
                         f"wait for the next edition")


def plan_edition(store: Store, settings: Settings, now: datetime) -> EditionPlan:
    """Counts for the edition `digest send` would create now (nothing is written).
    NothingToSend when nothing is new or nobody would receive it."""
    with store.sessions() as session:
        articles = new_articles(session, now)
        if not articles:
            raise _nothing_new(session)
        topics = tuple(sorted({a.topic for a in articles}))
        variants: set[str] = set()
        recipients = skipped = 0
        for _sid, chosen, _zone in _active_subscribers(session):
            variant = effective_variant(chosen, topics)
            if variant is None:
                skipped += 1
            else:
                recipients += 1
                variants.add(variant)
        if not recipients:
            raise _nobody(skipped, topics)
        return EditionPlan(next_edition_number(session), len(articles), topics, recipients,
                           skipped, len(variants))


def unfinished_edition(session: Session) -> Edition | None:
    return session.scalar(select(Edition).where(
        Edition.status.in_([EditionStatus.SENDING, EditionStatus.PAUSED]))
        .order_by(Edition.number).limit(1))


def open_edition(store: Store, settings: Settings, now: datetime, *,
                 number: int | None = None, slot: datetime | None = None,
                 force: bool = False, waves: bool = False) -> tuple[Edition, bool]:
    """The edition to send: number N, else an unfinished one, else a new one made of the
    articles no edition has taken (with its whole ledger, in one transaction). A new
    edition that nobody would receive is not made (NothingToSend): its articles wait.
    With waves (local-time delivery) each delivery waits for the cron's hour in the
    subscriber's own zone. Returns (edition, created)."""
    # Every message carries signed links: without a key nothing may be created that
    # could not be sent.
    settings.signing_key  # noqa: B018
    with store.locked_session() as session:
        if number is not None:
            edition = session.scalar(select(Edition).where(Edition.number == number))
            if edition is None:
                raise InputError(f"there is no edition {number} (see: digest editions list)")
            return edition, False
        edition = unfinished_edition(session)
        if edition is not None:
            if edition.status is EditionStatus.PAUSED:
                edition.status = EditionStatus.SENDING
            return edition, False
        if slot is not None:
            done = session.scalar(select(Edition).where(Edition.slot == slot))
            if done is not None:
                return done, False
        articles = new_articles(session, now)
        if not articles and not force:
            raise _nothing_new(session)
        number = next_edition_number(session)
        content = build_content(articles, settings, number, now)
        edition = Edition(number=number, cutoff=now, created_at=now, slot=slot,
                          subject=Renderer(settings).subject(content),
                          status=EditionStatus.SENDING)
        session.add(edition)
        session.flush()
        session.execute(update(Article).where(Article.id.in_([a.id for a in articles]))
                        .values(edition_id=edition.id))
        topics = {a.topic for a in articles}
        recipients, skipped = _write_ledger(session, settings, edition, topics,
                                            slot or now if waves else None)
        if not recipients:
            raise _nobody(skipped, sorted(topics))    # the transaction is rolled back
        return edition, True


def _write_ledger(session: Session, settings: Settings, edition: Edition,
                  topics: set[str], wave_base: datetime | None) -> tuple[int, int]:
    """One delivery row per active subscriber; returns (recipients, skipped)."""
    rows: list[dict[str, object]] = []
    waves: dict[str | None, datetime] = {}
    recipients = skipped = 0
    for sid, chosen, zone in _active_subscribers(session):
        variant = effective_variant(chosen, topics)
        if variant is None:
            skipped += 1
        else:
            recipients += 1
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
            session.execute(insert(Delivery), rows)
            rows = []
    if rows:
        session.execute(insert(Delivery), rows)
    return recipients, skipped


class RateLimiter:
    """At most per_second messages per second over all threads (0: no limit)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            at = max(self._next, now)
            self._next = at + self.interval
        if at > now:
            time.sleep(at - now)


ProgressFn = Callable[[str], None]


class Sender:
    """Sends claimed deliveries over `connections` threads, one connection each."""

    def __init__(self, store: Store, settings: Settings, transport: Transport, *,
                 progress: ProgressFn | None = None,
                 stop: threading.Event | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        settings.signing_key  # noqa: B018  (ConfigError before anything is claimed)
        self.store = store
        # Decides what is due (claims, leases); results are stamped with the real time,
        # since a scheduler job passes the fixed time it started at.
        self.clock = clock
        self.settings = settings
        self.transport = transport
        self.progress = progress
        self.stop = stop or threading.Event()
        self._paused = threading.Event()
        self._templates: dict[tuple[int, str], MessageTemplate] = {}
        self._template_lock = threading.Lock()
        self._errors_lock = threading.Lock()
        self._errors_in_row = 0
        self._last_error = ""
        self._refused: str | None = None
        self._failures: list[BaseException] = []
        self._counts = {s.value: 0 for s in DeliveryStatus}
        self.limiter = RateLimiter(settings.smtp.max_per_second)

    # -- the variant of each delivery, rendered once per process --

    def template(self, edition_id: int, variant: str) -> MessageTemplate:
        key = (edition_id, variant)
        with self._template_lock:
            if key not in self._templates:
                with self.store.sessions() as session:
                    edition = session.get(Edition, edition_id)
                    assert edition is not None
                    articles = list(session.scalars(
                        select(Article).where(Article.edition_id == edition_id)
                        .order_by(Article.id)))
                rendered = Renderer(self.settings).render_edition(
                    articles, edition.number, edition.cutoff, variant)
                self._templates[key] = MessageTemplate(self.settings, rendered, variant,
                                                       edition_id)
            return self._templates[key]

    # -- bookkeeping shared by the threads --

    def _count(self, status: DeliveryStatus) -> None:
        with self._errors_lock:
            self._counts[status.value] += 1
            if status is DeliveryStatus.SENT:
                self._errors_in_row = 0
        if self.progress:
            self.progress(status.value)

    def _error(self, message: str) -> None:
        with self._errors_lock:
            self._errors_in_row += 1
            self._last_error = message
            if self._errors_in_row >= self.settings.delivery.max_consecutive_errors:
                self._paused.set()
                self.stop.set()

    def _refuse(self, ledger: Ledger, delivery_ids: list[int], exc: ServerRefused) -> None:
        """The server refused the session or the message: that would be the same for every
        recipient, so the claims go back untouched (no attempt, no bounce) and the
        edition pauses at once."""
        ledger.release(delivery_ids, error=str(exc))
        with self._errors_lock:
            self._refused = self._refused or str(exc)
        self._paused.set()
        self.stop.set()

    # -- one thread --

    def _deliver(self, ledger: Ledger, conn: Connection, claim: Claim) -> Connection | None:
        """Send one claimed delivery and record the result; returns the connection to use
        next (None when it must be reopened)."""
        template = self.template(claim.edition_id, claim.variant)
        message = template.build(Recipient(claim.subscriber_id, claim.email, claim.name,
                                           claim.token_version, claim.message_id))
        self.limiter.wait()
        d = self.settings.delivery
        try:
            conn.send(template.envelope_from, claim.email, message)
        except TemporaryFailure as exc:
            attempts = claim.attempts + 1
            if attempts >= d.max_attempts:
                ledger.failed(claim.delivery_id, claim.subscriber_id,
                              f"gave up after {attempts} attempts: {exc}",
                              self.settings.digest.bounce_threshold, hard=False)
                self._count(DeliveryStatus.FAILED)
            else:
                delay = min(timedelta(seconds=d.retry_base_seconds * 2 ** (attempts - 1)),
                            _MAX_BACKOFF)
                ledger.deferred(claim.delivery_id, utcnow() + delay, str(exc))
                self._count(DeliveryStatus.DEFERRED)
            self._error(str(exc))
            if exc.reconnect:
                conn.close()
                return None
            return conn
        except ServerRefused as exc:
            self._refuse(ledger, [claim.delivery_id], exc)
            conn.close()
            return None
        except PermanentFailure as exc:
            ledger.failed(claim.delivery_id, claim.subscriber_id, str(exc),
                          self.settings.digest.bounce_threshold, hard=True)
            self._count(DeliveryStatus.FAILED)
            self._error(str(exc))
            return conn
        ledger.sent(claim.delivery_id, utcnow())
        self._count(DeliveryStatus.SENT)
        return conn

    def _thread(self, ledger: Ledger, edition_id: int | None, retry: bool) -> None:
        conn: Connection | None = None
        d = self.settings.delivery
        try:
            while not self.stop.is_set():
                claims = ledger.claim(d.batch_size, self.clock(), d.lease_seconds,
                                      edition_id=edition_id, retry=retry)
                if not claims:
                    return
                for i, claim in enumerate(claims):
                    if self.stop.is_set():
                        ledger.release([c.delivery_id for c in claims[i:]])
                        return
                    if conn is None:
                        try:
                            conn = self.transport.open()
                        except ServerRefused as exc:
                            self._refuse(ledger, [c.delivery_id for c in claims[i:]], exc)
                            return
                        except DeliveryError as exc:
                            ledger.release([c.delivery_id for c in claims[i:]])
                            self._error(str(exc))
                            self.stop.wait(1.0)
                            break
                    conn = self._deliver(ledger, conn, claim)
        except BaseException as exc:  # a bug or a store failure: stop everyone, re-raise
            self._failures.append(exc)
            self.stop.set()
        finally:
            if conn is not None:
                conn.close()

    def run(self, *, edition_id: int | None = None, retry: bool = False) -> dict[str, int]:
        """Send until nothing is left to claim (or stopped); returns this run's counts."""
        owner = new_owner()
        ledger = Ledger(self.store, owner)
        try:
            ledger.recover(self.clock())
            threads = [threading.Thread(target=self._thread, args=(ledger, edition_id, retry),
                                        name=f"digest-sender-{i}", daemon=True)
                       for i in range(self.settings.smtp.connections)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            retire_owner(owner)
            ledger.close()
        if self._failures:
            raise self._failures[0]
        return dict(self._counts)

    @property
    def rendered_variants(self) -> int:
        """How many variants this sender rendered (Jinja2 + premailer runs)."""
        return len(self._templates)

    @property
    def paused_reason(self) -> str | None:
        if not self._paused.is_set():
            return None
        if self._refused:
            return (f"{self._refused}; no delivery failed and no subscriber changed: fix "
                    f"the cause and run digest send to resume")
        return (f"{self._errors_in_row} errors in a row (last: {self._last_error}); the rest "
                f"stays pending: fix the cause and run digest send to resume")


def finish_editions(store: Store, paused: bool, edition_id: int | None = None) -> None:
    """Mark editions with nothing pending as sent (or the edition as paused)."""
    with store.writes.begin() as session:
        query = select(Edition).where(Edition.status.in_([EditionStatus.SENDING,
                                                          EditionStatus.PAUSED]))
        if edition_id is not None:
            query = query.where(Edition.id == edition_id)
        for edition in session.scalars(query):
            counts = delivery_counts(session, edition.id)
            if paused:
                edition.status = EditionStatus.PAUSED
            elif counts["pending"] == 0 and counts["sending"] == 0:
                edition.status = EditionStatus.SENT
                edition.finished_at = utcnow()


def send_edition(store: Store, settings: Settings, transport: Transport, *,
                 now: datetime | None = None, number: int | None = None,
                 slot: datetime | None = None, force: bool = False, waves: bool = False,
                 progress: ProgressFn | None = None,
                 stop: threading.Event | None = None,
                 on_open: Callable[[Edition, int], None] | None = None) -> SendReport:
    """Create or resume an edition and send what is pending. The transport is checked
    first: when the server cannot be reached nothing is written."""
    transport.check()
    edition, created = open_edition(store, settings, now or utcnow(), number=number,
                                    slot=slot, force=force, waves=waves)
    with store.sessions() as session:
        pending = delivery_counts(session, edition.id)["pending"]
    if on_open:
        on_open(edition, pending)
    sender = Sender(store, settings, transport, progress=progress, stop=stop,
                    clock=(lambda: now) if now else utcnow)
    this_run = sender.run(edition_id=edition.id)
    finish_editions(store, sender.paused_reason is not None, edition.id)
    with store.sessions() as session:
        counts = delivery_counts(session, edition.id)
    report = SendReport(edition.number, counts, this_run, sender.paused_reason, created)
    return report


def retry_deferred(store: Store, settings: Settings, transport: Transport, *,
                   now: datetime | None = None, progress: ProgressFn | None = None,
                   stop: threading.Event | None = None) -> SendReport:
    """Send every deferred delivery whose retry time has come, in any edition."""
    transport.check()
    sender = Sender(store, settings, transport, progress=progress, stop=stop,
                    clock=(lambda: now) if now else utcnow)
    this_run = sender.run(retry=True)
    finish_editions(store, sender.paused_reason is not None)
    with store.sessions() as session:
        counts = delivery_counts(session)
    return SendReport(None, counts, this_run, sender.paused_reason)


def send_test_copy(store: Store, settings: Settings, transport: Transport, address: str,
                   now: datetime) -> str:
    """Send the coming (or unfinished) edition to one address, "[TEST]" in the subject,
    without touching the ledger. Returns the subject."""
    address = normalise_email(address)
    with store.sessions() as session:
        edition = unfinished_edition(session)
        if edition is not None:
            articles = list(session.scalars(select(Article).where(
                Article.edition_id == edition.id)))
            number, date = edition.number, edition.cutoff
        else:
            articles = new_articles(session, now)
            number, date = next_edition_number(session), now
        sub = session.scalar(select(Subscriber).where(Subscriber.email_key == address.lower()))
    if not articles:
        raise NothingToSend("no new articles: nothing to send a test copy of")
    rendered = Renderer(settings).render_edition(articles, number, date, test=True)
    template = MessageTemplate(settings, rendered, "test", 0)
    recipient = Recipient(sub.id if sub else 0, address, sub.name if sub else "",
                          sub.token_version if sub else 0, make_msgid(domain=template
                                                                      .envelope_from
                                                                      .rsplit("@", 1)[1]))
    message = build_email_message(template, recipient).as_bytes(policy=SMTP_POLICY)
    if template.signer:
        message = template.signer.sign(message)
    conn = transport.open()
    try:
        conn.send(template.envelope_from, address, message)
    except (TemporaryFailure, PermanentFailure) as exc:
        raise DeliveryError(f"the server did not take the test copy for {address}: {exc}"
                            ) from None
    finally:
        conn.close()
    return rendered.subject


def dry_run_edition(store: Store, settings: Settings, now: datetime) -> EditionPlan:
    """Everything `digest send` would do up to the wire — render every variant and build
    every message — with nothing stored and nothing sent."""
    plan = plan_edition(store, settings, now)
    with store.sessions() as session:
        articles = new_articles(session, now)
        topics = {a.topic for a in articles}
        templates: dict[str, MessageTemplate] = {}
        renderer = Renderer(settings)
        subs = session.execute(select(Subscriber.id, Subscriber.email, Subscriber.name,
                                      Subscriber.token_version, Subscriber.topics)
                               .where(Subscriber.status == SubscriberStatus.ACTIVE))
        for sid, email, name, version, chosen in subs:
            variant = effective_variant(chosen or [], topics)
            if variant is None:
                continue
            if variant not in templates:
                templates[variant] = MessageTemplate(
                    settings, renderer.render_edition(articles, plan.number, now, variant),
                    variant, 0)
            templates[variant].build(Recipient(sid, email, name, version,
                                               message_id(settings, 0, sid)))
    return plan


def has_unfinished_edition(store: Store) -> bool:
    with store.sessions() as session:
        return unfinished_edition(session) is not None


def due_work(store: Store, now: datetime) -> tuple[int, int]:
    """(pending deliveries that are due, deliveries some sender holds) over all editions."""
    with store.sessions() as session:
        counts = delivery_counts(session)
        pending = session.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.status == DeliveryStatus.PENDING,
            (Delivery.not_before.is_(None)) | (Delivery.not_before <= now)))
    return int(pending or 0), counts["sending"]


def run_worker(store: Store, settings: Settings, transport: Transport, *,
               until_done: bool = False, poll: float = 5.0,
               stop: threading.Event | None = None,
               progress: ProgressFn | None = None) -> dict[str, int]:
    """Send pending (and due deferred) deliveries of every edition until stopped — or, with
    until_done, until nothing is due and no other sender holds anything. Any number of
    workers on any number of machines can run at once: each claims its own batches."""
    transport.check()
    stop = stop or threading.Event()
    totals = {s.value: 0 for s in DeliveryStatus}
    while not stop.is_set():
        worked = 0
        for retry in (False, True):
            sender = Sender(store, settings, transport, progress=progress, stop=stop)
            counts = sender.run(retry=retry)
            for status, n in counts.items():
                totals[status] += n
                worked += n
            if sender.paused_reason:
                finish_editions(store, paused=True)
                raise EditionPaused(f"worker stopped after {sender.paused_reason}")
        finish_editions(store, paused=False)
        if until_done:
            pending, held = due_work(store, utcnow())
            if pending == 0 and held == 0:
                break
        if not worked:
            stop.wait(poll)
    return totals


def enqueue_edition(store: Store, settings: Settings, now: datetime | None = None, *,
                    slot: datetime | None = None, force: bool = False,
                    waves: bool = False) -> tuple[Edition, bool, int]:
    """Create (or find the unfinished) edition and its ledger without sending anything:
    workers send. Returns (edition, created, pending deliveries)."""
    edition, created = open_edition(store, settings, now or utcnow(), slot=slot, force=force,
                                    waves=waves)
    with store.sessions() as session:
        return edition, created, delivery_counts(session, edition.id)["pending"]


def _edition(session: Session, number: int) -> Edition:
    edition = session.scalar(select(Edition).where(Edition.number == number))
    if edition is None:
        raise InputError(f"there is no edition {number} (see: digest editions list)")
    return edition


def reopen_failed(store: Store, number: int) -> tuple[int, int]:
    """Make edition N's failed deliveries pending again, for subscribers still active (after
    the operator fixed what made them fail). Returns (reopened, left: failed deliveries of
    subscribers who are no longer active, which stay as they are)."""
    with store.locked_session() as session:
        edition = _edition(session, number)
        active = select(Subscriber.id).where(Subscriber.status == SubscriberStatus.ACTIVE)
        failed = (Delivery.edition_id == edition.id) & (Delivery.status == DeliveryStatus.FAILED)
        reopened = session.execute(
            update(Delivery).where(failed, Delivery.subscriber_id.in_(active))
            .values(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=None,
                    not_before=None, claimed_by=None, lease_until=None)
            .execution_options(synchronize_session=False)).rowcount or 0
        left = session.scalar(select(func.count()).select_from(Delivery).where(failed)) or 0
        if reopened and edition.status is EditionStatus.SENT:
            edition.status = EditionStatus.SENDING
            edition.finished_at = None
        return int(reopened), int(left)


def discard_edition(store: Store, number: int) -> int:
    """Delete edition N, which nobody received (no delivery sent or in flight), with its
    ledger; its articles return to the pool for the next edition. Returns how many."""
    with store.locked_session() as session:
        edition = _edition(session, number)
        counts = delivery_counts(session, edition.id)
        reached = counts["sent"] + counts["sending"]
        if reached:
            raise InputError(f"edition {number} was sent to {reached} subscriber"
                             f"{'s' * (reached != 1)}: it cannot be discarded (an edition "
                             f"someone received stays in the record)")
        articles = session.execute(
            update(Article).where(Article.edition_id == edition.id).values(edition_id=None)
            .execution_options(synchronize_session=False)).rowcount or 0
        session.execute(delete(Delivery).where(Delivery.edition_id == edition.id))
        session.delete(edition)
        return int(articles)


def next_retry(store: Store) -> datetime | None:
    """When the earliest deferred delivery is due again (None: nothing is deferred)."""
    with store.sessions() as session:
        return session.scalar(select(func.min(Delivery.next_attempt_at)).where(
            Delivery.status == DeliveryStatus.DEFERRED))
