"""The long-running scheduler: APScheduler 3 calling the same functions the CLI calls.

Jobs are module-level functions referenced by name in an SQLAlchemyJobStore in the
store's own database, with fixed ids and replace_existing=True, so restarts never add
copies. Each edition run is keyed by its slot (the scheduled time): a restart resumes
the slot's edition instead of building another, and a slot that is late by more than
the misfire grace is skipped (its articles wait for the next slot).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select, text

from .config import Settings, load_settings
from .content.edition import new_articles
from .delivery.sender import enqueue_edition, finish_editions, retry_deferred, send_edition
from .delivery.timing import cron_trigger, latest_slot, next_runs, wave_time
from .errors import DigestError, NothingToSend
from .ingest.feeds import FeedBook
from .mail.transport import make_transport
from .store.ledger import Store
from .store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
    utcnow,
)

__all__ = [
    "SchedulerLock",
    "edition_job",
    "edition_trigger",
    "feeds_job",
    "run_scheduler",
    "run_slot",
    "schedule_overview",
    "send_due",
    "sweep_job",
]

log = logging.getLogger("digest.scheduler")

EDITION_JOB = "digest-edition"
FEEDS_JOB = "digest-feeds"
SWEEP_JOB = "digest-sweep"          # deferred retries, due waves, unfinished editions
# Earlier versions kept a one-shot start-up sweep under this id; the sweep job's own first
# run (at start) does its work now, and a leftover row is removed at start.
OLD_STARTUP_JOB = "digest-startup-sweep"
JOBS_TABLE = "apscheduler_jobs"

# Set by SIGTERM/SIGINT: senders finish the message in flight and stop claiming.
STOP = threading.Event()
_scheduler: BaseScheduler | None = None


# --- triggers and slots -----------------------------------------------------------------

def _zones_in_use(store: Store, settings: Settings) -> set[str]:
    with store.sessions() as session:
        zones = {z for (z,) in session.execute(
            select(Subscriber.timezone).where(Subscriber.status == SubscriberStatus.ACTIVE)
            .distinct()) if z}
    return zones | {settings.schedule.timezone}


def edition_trigger(settings: Settings, store: Store | None = None,
                    now: datetime | None = None) -> CronTrigger:
    """The edition's cron in the configured zone; with local_time, in the subscribers' zone
    whose next run comes first (the edition is built once, at the earliest slot)."""
    zone = ZoneInfo(settings.schedule.timezone)
    trigger = cron_trigger(settings.schedule.cron, zone)
    if not settings.schedule.local_time or store is None:
        return trigger
    now = now or utcnow()
    best = (trigger.get_next_fire_time(None, now), trigger)
    for name in _zones_in_use(store, settings):
        candidate = cron_trigger(settings.schedule.cron, ZoneInfo(name))
        fire = candidate.get_next_fire_time(None, now)
        if fire and (best[0] is None or fire < best[0]):
            best = (fire, candidate)
    return best[1]


# --- what the jobs do (also called directly by tests, with an injected now) ---------------

@dataclass(frozen=True)
class SlotOutcome:
    slot: datetime
    edition: int | None
    action: str          # "sent", "resumed", "waiting", "skipped", "done"
    detail: str


def run_slot(store: Store, settings: Settings, slot: datetime, now: datetime | None = None,
             stop: threading.Event | None = None) -> SlotOutcome:
    """The edition for one slot: resume it if it exists, else build it (unless fewer than
    min_articles are new) and send what is due."""
    now = now or utcnow()
    with store.sessions() as session:
        existing = session.scalar(select(Edition).where(Edition.slot == slot))
        fresh = len(new_articles(session, now))
    if existing is not None and existing.status is EditionStatus.SENT:
        return SlotOutcome(slot, existing.number, "done", "already sent")
    if existing is None:
        # Work left from earlier (a killed run, deferred mail) goes out before a new edition.
        for line in send_due(store, settings, now, stop):
            log.info("%s", line)
    if existing is None and fresh < max(settings.digest.min_articles, 1):
        return SlotOutcome(slot, None, "skipped",
                           f"{fresh} new article{'s' * (fresh != 1)}, fewer than min_articles "
                           f"{settings.digest.min_articles}; they carry over to the next slot")
    try:
        if settings.delivery.workers:
            edition, _created, pending = enqueue_edition(
                store, settings, now, slot=slot, waves=settings.schedule.local_time)
            return SlotOutcome(slot, edition.number, "queued",
                               f"{pending} deliveries pending for the workers")
        transport = make_transport(settings)
        report = send_edition(store, settings, transport, now=now, slot=slot,
                              number=existing.number if existing else None, stop=stop,
                              waves=settings.schedule.local_time)
    except NothingToSend as exc:       # e.g. nobody subscribed yet: the articles carry over
        return SlotOutcome(slot, None, "skipped", str(exc))
    waiting = _waiting(store, report.edition)
    action = "resumed" if existing is not None else "sent"
    detail = (f"sent {report.this_run['sent']}, deferred {report.this_run['deferred']}, "
              f"failed {report.this_run['failed']}, skipped {report.counts['skipped']}")
    if waiting:
        detail += f"; {waiting} wait for their local time"
        action = "waiting" if existing is None else action
    if report.paused:
        detail += f"; paused after {report.paused}"
    return SlotOutcome(slot, report.edition, action, detail)


def _waiting(store: Store, number: int | None) -> int:
    with store.sessions() as session:
        return len(session.scalars(
            select(Delivery.id).join(Edition, Edition.id == Delivery.edition_id)
            .where(Edition.number == number, Delivery.status == DeliveryStatus.PENDING)).all())


def send_due(store: Store, settings: Settings, now: datetime | None = None,
             stop: threading.Event | None = None) -> list[str]:
    """Send what is due: unfinished editions' pending deliveries (local-time waves that
    have come, work a killed process left) and deferred deliveries whose retry time has
    come. Returns one line per thing done."""
    now = now or utcnow()
    done: list[str] = []
    if settings.delivery.workers:
        return done               # `digest worker`s send, retry and resume
    transport = make_transport(settings)
    with store.sessions() as session:
        unfinished = session.scalars(select(Edition.number).where(
            Edition.status.in_([EditionStatus.SENDING, EditionStatus.PAUSED]))
            .order_by(Edition.number)).all()
    for number in unfinished:
        report = send_edition(store, settings, transport, now=now, number=number, stop=stop)
        if any(report.this_run.values()):
            done.append(f"edition {number}: sent {report.this_run['sent']}, deferred "
                        f"{report.this_run['deferred']}, failed {report.this_run['failed']}")
    report = retry_deferred(store, settings, transport, now=now, stop=stop)
    if any(report.this_run.values()):
        done.append(f"retried deferred: sent {report.this_run['sent']}, deferred "
                    f"{report.this_run['deferred']}, failed {report.this_run['failed']}")
    finish_editions(store, paused=False)
    return done


# --- the jobs (module-level: the job store keeps them by reference) -------------------------

@contextmanager
def _job(config: str | None) -> Iterator[tuple[Settings, Store]]:
    settings = load_settings(config)
    store = Store.from_settings(settings)
    try:
        yield settings, store
    except DigestError as exc:
        log.error("%s", exc)
    finally:
        store.close()


def edition_job(config: str | None) -> None:
    """Run the edition slot that is due now."""
    with _job(config) as (settings, store):
        now = utcnow()
        trigger = edition_trigger(settings, store, now)
        slot = latest_slot(trigger, now, settings.schedule.misfire_grace)
        if slot is None:
            log.warning("edition job ran with no slot due (cron %s); nothing to do",
                        settings.schedule.cron)
            return
        outcome = run_slot(store, settings, slot, now, STOP)
        where = f"edition {outcome.edition}" if outcome.edition else "no edition"
        log.info("slot %s: %s %s: %s", slot.isoformat(), where, outcome.action, outcome.detail)
        if settings.schedule.local_time:
            _schedule_waves(store, config, outcome.edition)
            _reschedule_edition(settings, store, config)


def sweep_job(config: str | None) -> None:
    """Retry deferred deliveries, send local-time waves that are due, resume editions a
    killed process left unfinished."""
    with _job(config) as (settings, store):
        for line in send_due(store, settings, stop=STOP):
            log.info("%s", line)


def feeds_job(config: str | None) -> None:
    """Poll every feed (the feeds module logs one line per feed)."""
    with _job(config) as (settings, store):
        FeedBook(store, settings).fetch()


def _schedule_waves(store: Store, config: str | None, number: int | None) -> None:
    if _scheduler is None or number is None:
        return
    with store.sessions() as session:
        waves = session.scalars(
            select(Delivery.not_before).join(Edition, Edition.id == Delivery.edition_id)
            .where(Edition.number == number, Delivery.status == DeliveryStatus.PENDING,
                   Delivery.not_before.is_not(None)).distinct()).all()
    for at in waves:
        _scheduler.add_job(sweep_job, DateTrigger(at), args=[config],
                           id=f"digest-wave-{number}-{at:%Y%m%dT%H%M%S}",
                           replace_existing=True, misfire_grace_time=None, coalesce=True)
        log.info("edition %s: wave at %s", number, at.isoformat())


def _reschedule_edition(settings: Settings, store: Store, config: str | None) -> None:
    if _scheduler is not None:
        _scheduler.reschedule_job(EDITION_JOB, trigger=edition_trigger(settings, store))


# --- one scheduler per store ------------------------------------------------------------

class SchedulerLock:
    """Held for the life of the scheduler process; a second one on the same store fails
    to take it (SQLite: an flock beside the database; PostgreSQL: an advisory lock)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._file: Any = None
        self._conn: Any = None

    def acquire(self, wait: float = 5.0) -> None:
        """Take the lock, waiting a little: a scheduler that has just exited may take a
        moment to let go of it (PostgreSQL ends its session asynchronously)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._try_acquire()
            except DigestError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _try_acquire(self) -> None:
        url = self.store.engine.url
        if url.get_backend_name() == "sqlite":
            path = Path(f"{url.database}.scheduler-lock")
            self._file = path.open("a+")
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.seek(0)
                holder = self._file.read().strip() or "another process"
                self._file.close()
                raise DigestError(f"another scheduler ({holder}) is already running on the "
                                  f"store {url.database}; stop it first (one scheduler per "
                                  f"store)") from None
            self._file.seek(0)
            self._file.truncate()
            self._file.write(f"pid {os.getpid()}")
            self._file.flush()
        else:
            self._conn = self.store.engine.connect()
            got = self._conn.execute(text("SELECT pg_try_advisory_lock(7140522)")).scalar()
            if not got:
                self._conn.close()
                raise DigestError("another scheduler is already running on this store; stop "
                                  "it first (one scheduler per store)")

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._conn is not None:
            self._conn.close()


def _same_trigger(a: Any, b: Any) -> bool:
    return str(a) == str(b) and getattr(a, "timezone", None) == getattr(b, "timezone", None)


class _DigestScheduler(BlockingScheduler):
    """A BlockingScheduler that shuts itself down, on its own thread, between two passes
    over the job store once STOP is set.

    APScheduler's shutdown() called from another thread can land in the middle of a pass:
    the pass then finds the scheduler stopped while removing a one-shot job that has just
    run (a due wave) and raises JobLookupError out of start(), or uses the job store after
    shutdown() disposed of its engine. Stopping between passes leaves no such moment.
    """

    def _process_jobs(self) -> float | None:
        # The main loop calls this after every wake-up, and start() always wakes it once,
        # so a STOP set at any moment (even before start) is seen here.
        if STOP.is_set():
            if self.state != STATE_STOPPED:
                self.shutdown(wait=False)
            return None
        return super()._process_jobs()

    def wakeup(self) -> None:
        # Before start() there is no event to set, and nothing to wake: start() runs a
        # first pass of its own.
        if self._event is not None:
            super().wakeup()


def build_scheduler(settings: Settings, store: Store, config: str | None) -> BlockingScheduler:
    """A scheduler with digest's jobs in the store's job table, not yet started. It sweeps
    at once when started (deferred mail, due waves, editions a killed run left unfinished),
    then every [schedule] retry_minutes, and stops between two passes once STOP is set."""
    zone = ZoneInfo(settings.schedule.timezone)
    jobstore = SQLAlchemyJobStore(engine=store.engine, tablename=JOBS_TABLE)
    scheduler = _DigestScheduler(
        jobstores={"default": jobstore}, timezone=zone,
        job_defaults={"coalesce": True, "max_instances": 1,
                      "misfire_grace_time": settings.schedule.misfire_grace})
    jobs: list[tuple[str, Any, Any]] = [
        (EDITION_JOB, edition_job, edition_trigger(settings, store)),
        (SWEEP_JOB, sweep_job, IntervalTrigger(minutes=settings.schedule.retry_minutes,
                                               timezone=zone)),
        # Does nothing while there are no feeds; `feeds add` needs no scheduler restart.
        (FEEDS_JOB, feeds_job, IntervalTrigger(minutes=settings.schedule.feeds_minutes,
                                               timezone=zone)),
    ]
    jobstore.start(scheduler, "default")  # so the stored jobs can be read before start()
    for job_id, func, trigger in jobs:
        stored = jobstore.lookup_job(job_id)
        extra: dict[str, Any] = {}
        # Keep a stored job's next run time: re-adding would compute it from now and lose a
        # slot missed while the scheduler was down (within the grace it must still run).
        if stored is not None and _same_trigger(stored.trigger, trigger) \
                and stored.next_run_time is not None:
            extra["next_run_time"] = stored.next_run_time
        if job_id == SWEEP_JOB:
            # The start-up sweep is the sweep's first run: one job, so max_instances keeps
            # a second sweep from running beside it when the stored run time is past too.
            extra["next_run_time"] = utcnow()
        scheduler.add_job(func, trigger, args=[config], id=job_id, name=job_id,
                          replace_existing=True, **extra)
    if jobstore.lookup_job(OLD_STARTUP_JOB) is not None:
        jobstore.remove_job(OLD_STARTUP_JOB)
    scheduler.add_listener(_on_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR)
    return scheduler


def _on_event(event: JobExecutionEvent) -> None:
    if event.code == EVENT_JOB_MISSED:
        log.warning("job %s: slot %s was missed by more than the misfire grace; skipped "
                    "(its articles wait for the next slot)", event.job_id,
                    event.scheduled_run_time.isoformat())
    elif event.exception is not None:
        log.error("job %s failed: %s", event.job_id, event.exception)


def _stop_on_signal(signum: int, _frame: Any) -> None:
    log.info("%s: finishing the messages in flight, then stopping", signal.Signals(signum).name)
    # Only the flag: the handler interrupts the main thread anywhere, even inside the
    # scheduler's own locks. The waker thread and the scheduler's main loop do the rest.
    STOP.set()


def _wake_on_stop(scheduler: _DigestScheduler) -> None:
    STOP.wait()
    scheduler.wakeup()


def run_scheduler(settings: Settings, config: str | None) -> None:
    """Run until SIGTERM or SIGINT; then let messages in flight finish and return.

    A signal at any moment from here on (waiting for the lock, building the jobs, the first
    pass over them, a job running) stops the scheduler cleanly and this returns normally."""
    global _scheduler
    STOP.clear()
    previous = {sig: signal.signal(sig, _stop_on_signal) for sig in (signal.SIGTERM,
                                                                      signal.SIGINT)}
    store = Store.from_settings(settings)
    lock = SchedulerLock(store)
    waker: threading.Thread | None = None
    try:
        lock.acquire()
        scheduler = build_scheduler(settings, store, config)
        _scheduler = scheduler
        waker = threading.Thread(target=_wake_on_stop, args=(scheduler,), daemon=True,
                                 name="digest-scheduler-waker")
        waker.start()
        log.info("scheduler started (pid %s): edition cron %r in %s, misfire grace %ss",
                 os.getpid(), settings.schedule.cron, settings.schedule.timezone,
                 settings.schedule.misfire_grace)
        upcoming = next_runs(edition_trigger(settings, store), utcnow(), 1)
        if upcoming:
            log.info("next edition slot: %s", upcoming[0].isoformat())
        scheduler.start()          # returns once STOP is set and the scheduler shut down
        # shutdown(wait=False) returns at once; wait for running jobs to finish their
        # message in flight and release what they had claimed.
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        log.info("scheduler stopped")
    finally:
        _scheduler = None
        if not STOP.is_set():
            # Only when something failed before any signal came. The handlers go first:
            # one landing inside this STOP.set() would wait for the lock this thread holds.
            _restore_handlers(previous)
            STOP.set()             # lets the waker end
        if waker is not None:
            waker.join()
        lock.release()
        store.close()
        _restore_handlers(previous)


def _restore_handlers(previous: dict[signal.Signals, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


# --- schedule show ----------------------------------------------------------------------

@dataclass(frozen=True)
class Overview:
    edition_runs: list[datetime]
    sweep_every: int
    waves: list[tuple[str, datetime]]
    editions: list[tuple[int, str, datetime, datetime | None]]


def schedule_overview(settings: Settings, store: Store, now: datetime | None = None,
                      count: int = 3) -> Overview:
    now = now or utcnow()
    zone = ZoneInfo(settings.schedule.timezone)
    trigger = edition_trigger(settings, store, now)
    runs = [fire.astimezone(zone) for fire in next_runs(trigger, now, count)]
    waves: list[tuple[str, datetime]] = []
    if settings.schedule.local_time and runs:
        waves = sorted(((name, wave_time(settings, name, runs[0]))
                        for name in _zones_in_use(store, settings)), key=lambda w: w[1])
    with store.sessions() as session:
        editions = [(e.number, e.status.value, e.created_at, e.slot) for e in session.scalars(
            select(Edition).order_by(Edition.number.desc()).limit(5))]
    return Overview(runs, settings.schedule.retry_minutes, waves, editions)

