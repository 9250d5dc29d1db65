"""What is due, and who sends it: the one place that decides.

`digest send`, `digest worker` and the scheduler's jobs all come here. The rules that
were written in each of them are written once, here:

- with [delivery] workers, a new edition is only enqueued: `digest worker`s send it (and
  retry, and resume); the scheduler's sweeps leave the ledger to them;
- a new edition is made only when at least min_articles are new (`send --force`: one),
  never one that shows nothing (delivery.editions decides, for the dry run alike);
- a pass goes through what is due in one order: pending deliveries (an edition's, or
  every unfinished edition's), then deferred ones whose retry time has come; then every
  edition with nothing left is finished, or paused when the sender paused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ..config import Settings
from ..errors import EditionPaused, NothingToSend
from ..mail.transport import Transport, make_transport
from ..store import editions as stored
from ..store.db import Store
from ..store.ledger import delivery_totals
from ..store.models import DeliveryStatus, Edition, EditionStatus
from .editions import finish_editions, open_edition, plan_edition
from .sender import ProgressFn, Sender

__all__ = [
    "SendReport",
    "SlotOutcome",
    "TransportFactory",
    "enqueue_edition",
    "enqueue_only",
    "next_retry",
    "retry_deferred",
    "run_slot",
    "slot_outcome",
    "run_worker",
    "send_due",
    "send_edition",
]


# What a scheduled run does is logged under the scheduler's name, where operators look.
log = logging.getLogger("digest.scheduler")


@dataclass
class SendReport:
    edition: int | None
    counts: dict[str, int]                    # the ledger for the edition, after this run
    this_run: dict[str, int] = field(default_factory=dict)
    paused: str | None = None
    created: bool = False
    # (address, why) of each delivery that failed in this run, in the order they failed.
    failed: list[tuple[str, str]] = field(default_factory=list)


def enqueue_only(settings: Settings) -> bool:
    """True when workers send: a new edition is only enqueued, and sweeps send nothing."""
    return bool(settings.delivery.workers)


@dataclass(frozen=True)
class _Pass:
    counts: dict[str, int]
    paused: str | None
    failed: list[tuple[str, str]]


def _send_pass(store: Store, settings: Settings, transport: Transport, *,
               edition_id: int | None = None, retry: bool = False,
               now: datetime | None = None, progress: ProgressFn | None = None,
               stop: threading.Event | None = None) -> _Pass:
    """One pass over what is due: an edition's pending deliveries (None: every edition's),
    or with retry the deferred ones whose time has come. Returns this pass's counts, why
    the sender paused (or None) and what failed; the editions are not finished here."""
    clock: Callable[[], datetime] = (lambda: now) if now else store.clock.now
    sender = Sender(store, settings, transport, progress=progress, stop=stop, clock=clock)
    counts = sender.run(edition_id=edition_id, retry=retry)
    return _Pass(counts, sender.paused_reason, sender.failed)


def send_edition(store: Store, settings: Settings, transport: Transport, *,
                 now: datetime | None = None, number: int | None = None,
                 slot: datetime | None = None, force: bool = False,
                 allow_empty: bool = False, waves: bool = False,
                 progress: ProgressFn | None = None,
                 stop: threading.Event | None = None,
                 on_open: Callable[[Edition, int], None] | None = None) -> SendReport:
    """Create or resume an edition (as open_edition decides) and send what is pending.
    The transport is checked first: when the server cannot be reached nothing is
    written."""
    transport.check()
    edition, created = open_edition(store, settings, now or store.clock.now(), number=number,
                                    slot=slot, force=force, allow_empty=allow_empty,
                                    waves=waves)
    if on_open:
        on_open(edition, delivery_totals(store, edition.id)["pending"])
    done = _send_pass(store, settings, transport, edition_id=edition.id, now=now,
                      progress=progress, stop=stop)
    finish_editions(store, done.paused is not None, edition.id)
    return SendReport(edition.number, delivery_totals(store, edition.id), done.counts,
                      done.paused, created, done.failed)


def retry_deferred(store: Store, settings: Settings, transport: Transport, *,
                   now: datetime | None = None, progress: ProgressFn | None = None,
                   stop: threading.Event | None = None) -> SendReport:
    """Send every deferred delivery whose retry time has come, in any edition."""
    transport.check()
    done = _send_pass(store, settings, transport, retry=True, now=now, progress=progress,
                      stop=stop)
    finish_editions(store, done.paused is not None)
    return SendReport(None, delivery_totals(store), done.counts, done.paused,
                      failed=done.failed)


def enqueue_edition(store: Store, settings: Settings, now: datetime | None = None, *,
                    number: int | None = None, slot: datetime | None = None,
                    force: bool = False, allow_empty: bool = False,
                    waves: bool = False) -> tuple[Edition, bool, int]:
    """Create (or find the unfinished, or number N) edition and its ledger without sending
    anything, as open_edition decides: workers send. Returns (edition, created, pending
    deliveries)."""
    edition, created = open_edition(store, settings, now or store.clock.now(), number=number,
                                    slot=slot, force=force, allow_empty=allow_empty,
                                    waves=waves)
    return edition, created, delivery_totals(store, edition.id)["pending"]


def next_retry(store: Store) -> datetime | None:
    """When the earliest deferred delivery is due again (None: nothing is deferred)."""
    return stored.next_retry(store)


def _nothing_due(store: Store, now: datetime) -> bool:
    """No pending delivery is due over all editions, and no sender holds any."""
    pending = stored.pending_deliveries(store, due_at=now)
    return pending == 0 and delivery_totals(store)["sending"] == 0


def run_worker(store: Store, settings: Settings, transport: Transport, *,
               until_done: bool = False, poll: float = 5.0,
               stop: threading.Event | None = None,
               progress: ProgressFn | None = None) -> dict[str, int]:
    """Send pending (and due deferred) deliveries of every edition until stopped — or, with
    until_done, until nothing is due and no other sender holds anything. Any number of
    workers on any number of machines can run at once: each claims its own batches.
    When the sender pauses, the unfinished editions show "paused" and EditionPaused says why."""
    transport.check()
    stop = stop or threading.Event()
    totals = {s.value: 0 for s in DeliveryStatus}
    while not stop.is_set():
        worked = 0
        for retry in (False, True):
            done = _send_pass(store, settings, transport, retry=retry, progress=progress,
                              stop=stop)
            for status, n in done.counts.items():
                totals[status] += n
                worked += n
            if done.paused:
                finish_editions(store, paused=True)
                raise EditionPaused(f"worker stopped after {done.paused}")
        finish_editions(store, paused=False)
        if until_done and _nothing_due(store, store.clock.now()):
            break
        if not worked:
            stop.wait(poll)
    return totals


def _ran(report: SendReport) -> str:
    run = report.this_run
    return f"sent {run['sent']}, deferred {run['deferred']}, failed {run['failed']}"


TransportFactory = Callable[[Settings], Transport]


def send_due(store: Store, settings: Settings, now: datetime | None = None,
             stop: threading.Event | None = None,
             transports: TransportFactory = make_transport) -> list[str]:
    """Send what is due: unfinished editions' pending deliveries (local-time waves that
    have come, work a killed process left) and deferred deliveries whose retry time has
    come. Returns one line per thing done. With workers, nothing: they do it."""
    now = now or store.clock.now()
    done: list[str] = []
    if enqueue_only(settings):
        return done
    transport = transports(settings)
    for number in stored.unfinished_numbers(store):
        report = send_edition(store, settings, transport, now=now, number=number, stop=stop)
        if any(report.this_run.values()):
            done.append(f"edition {number}: {_ran(report)}")
    report = retry_deferred(store, settings, transport, now=now, stop=stop)
    if any(report.this_run.values()):
        done.append(f"retried deferred: {_ran(report)}")
    finish_editions(store, paused=False)
    return done


@dataclass(frozen=True)
class SlotOutcome:
    slot: datetime
    edition: int | None
    action: str          # "sent", "resumed", "waiting", "queued", "skipped", "done"
    detail: str


def run_slot(store: Store, settings: Settings, slot: datetime, now: datetime | None = None,
             stop: threading.Event | None = None,
             transports: TransportFactory = make_transport) -> SlotOutcome:
    """The edition for one slot: resume it if it exists, else build it as `digest send`
    would (never with fewer than min_articles new, never one that shows nothing) and send
    what is due (with workers: only enqueue it)."""
    now = now or store.clock.now()
    existing = stored.edition_at_slot(store, slot)
    if existing is not None and existing.status is EditionStatus.SENT:
        return SlotOutcome(slot, existing.number, "done", "already sent")
    try:
        if existing is None:
            # Work left from earlier (a killed run, deferred mail) goes out before a new
            # edition; then the same decision `digest send` makes, before any connection.
            for line in send_due(store, settings, now, stop, transports):
                log.info("%s", line)
            plan_edition(store, settings, now, slot=slot)
        if enqueue_only(settings):
            edition, _created, pending = enqueue_edition(
                store, settings, now, slot=slot, waves=settings.schedule.local_time)
            return SlotOutcome(slot, edition.number, "queued",
                               f"{pending} deliveries pending for the workers")
        report = send_edition(store, settings, transports(settings), now=now, slot=slot,
                              number=existing.number if existing else None, stop=stop,
                              waves=settings.schedule.local_time)
    except NothingToSend as exc:       # e.g. nobody subscribed yet: the articles carry over
        return SlotOutcome(slot, None, "skipped", str(exc))
    return slot_outcome(store, slot, report, resumed=existing is not None)


def slot_outcome(store: Store, slot: datetime, report: SendReport, *,
               resumed: bool) -> SlotOutcome:
    waiting = stored.pending_deliveries(store, number=report.edition) \
        if report.edition is not None else 0
    action = "resumed" if resumed else "sent"
    detail = f"{_ran(report)}, skipped {report.counts['skipped']}"
    if waiting:
        detail += f"; {waiting} wait for their local time"
        action = "waiting" if not resumed else action
    if report.paused:
        detail += f"; paused after {report.paused}"
    return SlotOutcome(slot, report.edition, action, detail)
