"""The long-running scheduler: APScheduler 3 calling the same functions the CLI calls
(digest.delivery.runner decides what is due; this module only wires jobs to it).

Jobs are module-level functions referenced by name in an SQLAlchemyJobStore in the
store's own database, with fixed ids and replace_existing=True, so restarts never add
copies. Each edition run is keyed by its slot (the scheduled time): a restart resumes
the slot's edition instead of building another, and a slot that is late by more than
the misfire grace is skipped (its articles wait for the next slot).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .audience.mailbox import fetch_bounces
from .clock import Clock, system_clock
from .config import Settings, load_settings
from .delivery.approval import desk_slot, desk_sweep
from .delivery.runner import SlotOutcome, send_due
from .delivery.timing import cron_trigger, latest_slot, next_runs, wave_time
from .errors import DigestError
from .ingest.feeds import FeedBook
from .store.db import Store
from .store.editions import active_zones, recent_editions, wave_times
from .store.feeds import feed_count
from .store.locks import SchedulerLock

__all__ = [
    "Overview",
    "bounces_job",
    "edition_job",
    "edition_trigger",
    "feeds_job",
    "run_due_slot",
    "run_scheduler",
    "schedule_overview",
    "sweep_job",
]

log = logging.getLogger("digest.scheduler")

EDITION_JOB = "digest-edition"
FEEDS_JOB = "digest-feeds"
SWEEP_JOB = "digest-sweep"          # deferred retries, due waves, unfinished editions
BOUNCES_JOB = "digest-bounces"      # the bounce mailbox, while [bounces] host is set
# Earlier versions kept a one-shot start-up sweep under this id; the sweep job's own first
# run (at start) does its work now, and a leftover row is removed at start.
OLD_STARTUP_JOB = "digest-startup-sweep"
JOBS_TABLE = "apscheduler_jobs"


@dataclass
class _Runtime:
    """What the running scheduler process shares with its jobs and signal handlers."""

    # Set by SIGTERM/SIGINT: senders finish the message in flight and stop claiming.
    stop: threading.Event = field(default_factory=threading.Event)
    # The running scheduler, for jobs that add wave jobs or move the edition's trigger.
    scheduler: BaseScheduler | None = None
    # The clock the jobs decide by (run_scheduler's caller's).
    clock: Clock = field(default_factory=system_clock)


_RUNTIME = _Runtime()


# --- triggers and slots -----------------------------------------------------------------

def _zones_in_use(store: Store, settings: Settings) -> set[str]:
    return active_zones(store) | {settings.schedule.timezone}


def edition_trigger(settings: Settings, store: Store | None = None,
                    now: datetime | None = None) -> CronTrigger:
    """The edition's cron in the configured zone; with local_time, in the subscribers' zone
    whose next run comes first after now (default: the store's clock) — the edition is
    built once, at the earliest slot."""
    zone = ZoneInfo(settings.schedule.timezone)
    trigger = cron_trigger(settings.schedule.cron, zone)
    if not settings.schedule.local_time or store is None:
        return trigger
    now = now or store.clock.now()
    best = (trigger.get_next_fire_time(None, now), trigger)
    for name in _zones_in_use(store, settings):
        candidate = cron_trigger(settings.schedule.cron, ZoneInfo(name))
        fire = candidate.get_next_fire_time(None, now)
        if fire and (best[0] is None or fire < best[0]):
            best = (fire, candidate)
    return best[1]


# --- the jobs (module-level: the job store keeps them by reference) -------------------------

@contextmanager
def _job(config: str | None) -> Iterator[tuple[Settings, Store]]:
    settings = load_settings(config)
    store = Store.from_settings(settings, _RUNTIME.clock)
    try:
        yield settings, store
    except DigestError as exc:
        log.error("%s", exc)
    finally:
        store.close()


def run_due_slot(store: Store, settings: Settings,
                 stop: threading.Event | None = None) -> SlotOutcome | None:
    """Run the edition slot due at the store's clock's time: the latest slot of the cron
    at or before now, if it is no more than [schedule] misfire_grace seconds ago (None,
    and nothing done, when there is none)."""
    now = store.clock.now()
    trigger = edition_trigger(settings, store, now)
    slot = latest_slot(trigger, now, settings.schedule.misfire_grace)
    if slot is None:
        log.warning("edition job ran with no slot due (cron %s); nothing to do",
                    settings.schedule.cron)
        return None
    outcome = desk_slot(store, settings, slot, now, stop)
    where = f"edition {outcome.edition}" if outcome.edition else "no edition"
    log.info("slot %s: %s %s: %s", slot.isoformat(), where, outcome.action, outcome.detail)
    return outcome


def edition_job(config: str | None) -> None:
    """Run the edition slot that is due now."""
    with _job(config) as (settings, store):
        outcome = run_due_slot(store, settings, _RUNTIME.stop)
        if outcome is not None and settings.schedule.local_time:
            _schedule_waves(store, config, outcome.edition)
            _reschedule_edition(settings, store, config)


def sweep_job(config: str | None) -> None:
    """Retry deferred deliveries, send local-time waves that are due, resume editions a
    killed process left unfinished; with [schedule] approval, draft the next slot's
    edition draft_lead ahead (mailing the editors) and send one approved after its slot."""
    with _job(config) as (settings, store):
        for line in send_due(store, settings, stop=_RUNTIME.stop):
            log.info("%s", line)
        now = store.clock.now()
        upcoming = edition_trigger(settings, store, now).get_next_fire_time(None, now)
        for line in desk_sweep(store, settings, now, upcoming, _RUNTIME.stop):
            log.info("%s", line)


def feeds_job(config: str | None) -> None:
    """Poll every feed (the feeds module logs one line per feed)."""
    with _job(config) as (settings, store):
        FeedBook(store, settings).fetch()


def bounces_job(config: str | None) -> None:
    """Read the bounce mailbox, as `digest bounces fetch` does."""
    with _job(config) as (settings, store):
        if not settings.bounces.mailbox_enabled:
            return
        held: list[str] = []
        report = fetch_bounces(settings, store, on_outcome=lambda outcome: held.extend(
            [outcome.held] if outcome.held else []))
        log.info("bounce mailbox: %s read, %s handled, %s left", report.read, report.handled,
                 report.left)
        if held:
            log.warning("bounce mailbox: %s message(s) held for review (nothing ties them to "
                        "mail we sent): see digest bounces review", len(held))


def _schedule_waves(store: Store, config: str | None, number: int | None) -> None:
    scheduler = _RUNTIME.scheduler
    if scheduler is None or number is None:
        return
    for at in wave_times(store, number):
        scheduler.add_job(sweep_job, DateTrigger(at), args=[config],
                           id=f"digest-wave-{number}-{at:%Y%m%dT%H%M%S}",
                           replace_existing=True, misfire_grace_time=None, coalesce=True)
        log.info("edition %s: wave at %s", number, at.isoformat())


def _reschedule_edition(settings: Settings, store: Store, config: str | None) -> None:
    if _RUNTIME.scheduler is not None:
        _RUNTIME.scheduler.reschedule_job(EDITION_JOB, trigger=edition_trigger(settings, store))


# --- one scheduler per store ------------------------------------------------------------

def _same_trigger(a: Any, b: Any) -> bool:
    return str(a) == str(b) and getattr(a, "timezone", None) == getattr(b, "timezone", None)


class _DigestScheduler(BlockingScheduler):  # type: ignore[misc]  # APScheduler 3 is untyped
    """A BlockingScheduler that shuts itself down, on its own thread, between two passes
    over the job store once the stop event is set.

    APScheduler's shutdown() called from another thread can land in the middle of a pass:
    the pass then finds the scheduler stopped while removing a one-shot job that has just
    run (a due wave) and raises JobLookupError out of start(), or uses the job store after
    shutdown() disposed of its engine. Stopping between passes leaves no such moment.
    """

    def _process_jobs(self) -> float | None:
        # The main loop calls this after every wake-up, and start() always wakes it once,
        # so a stop set at any moment (even before start) is seen here.
        if _RUNTIME.stop.is_set():
            if self.state != STATE_STOPPED:
                self.shutdown(wait=False)
            return None
        wait: float | None = super()._process_jobs()
        return wait

    def wakeup(self) -> None:
        # Before start() there is no event to set, and nothing to wake: start() runs a
        # first pass of its own.
        if self._event is not None:
            super().wakeup()


def build_scheduler(settings: Settings, store: Store, config: str | None) -> BlockingScheduler:
    """A scheduler with digest's jobs in the store's job table, not yet started. It sweeps
    at once when started (deferred mail, due waves, editions a killed run left unfinished),
    then every [schedule] retry_minutes, and stops between two passes once stop is set."""
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
    if settings.bounces.mailbox_enabled:
        jobs.append((BOUNCES_JOB, bounces_job,
                     IntervalTrigger(minutes=settings.bounces.poll_minutes, timezone=zone)))
    jobstore.start(scheduler, "default")  # so the stored jobs can be read before start()
    for job_id, func, trigger in jobs:
        stored = jobstore.lookup_job(job_id)
        extra: dict[str, Any] = {}
        # Keep a stored job's next run time: re-adding would compute it from now and lose a
        # slot missed while the scheduler was down (within the grace it must still run).
        if stored is not None and _same_trigger(stored.trigger, trigger) \
                and stored.next_run_time is not None:
            extra["next_run_time"] = stored.next_run_time
        if job_id in (SWEEP_JOB, BOUNCES_JOB):
            # The start-up sweep is the sweep's first run: one job, so max_instances keeps
            # a second sweep from running beside it when the stored run time is past too.
            # The mailbox too is read at start, not poll_minutes later.
            extra["next_run_time"] = store.clock.now()
        scheduler.add_job(func, trigger, args=[config], id=job_id, name=job_id,
                          replace_existing=True, **extra)
    gone = [OLD_STARTUP_JOB]
    if not settings.bounces.mailbox_enabled:
        gone.append(BOUNCES_JOB)        # [bounces] host was emptied: no more polling
    for job_id in gone:
        if jobstore.lookup_job(job_id) is not None:
            jobstore.remove_job(job_id)
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
    _RUNTIME.stop.set()


_END = b"\0"                       # what run_scheduler writes to end the waker itself


def _wake_on_stop(scheduler: _DigestScheduler, signals: socket.socket) -> None:
    """Wake the scheduler once it is to stop. Python runs a signal's handler only in the
    main thread, when it next runs Python code, and the kernel may hand the process's
    SIGTERM to any thread: one handed to a job's idle worker thread left the main thread
    asleep until its next job was due (minutes), the signal unhandled. Whichever thread
    the kernel chose, the signal's number also comes through the wakeup fd read here."""
    wanted = {int(signal.SIGTERM), int(signal.SIGINT), _END[0]}
    while not _RUNTIME.stop.is_set():
        try:
            data = signals.recv(64)
        except OSError:
            break
        if not data or wanted & set(data):
            break
    _RUNTIME.stop.set()
    scheduler.wakeup()


def run_scheduler(settings: Settings, config: str | None, clock: Clock | None = None) -> None:
    """Run until SIGTERM or SIGINT; then let messages in flight finish and return. Its
    jobs decide by clock (the machine's when None); APScheduler's own timer waits on the
    machine's clock, so a FixedClock only suits the decisions, not when they run.

    A signal at any moment from here on (waiting for the lock, building the jobs, the first
    pass over them, a job running) stops the scheduler cleanly and this returns normally."""
    stop = _RUNTIME.stop
    stop.clear()
    _RUNTIME.clock = clock or system_clock()
    previous = {sig: signal.signal(sig, _stop_on_signal) for sig in (signal.SIGTERM,
                                                                      signal.SIGINT)}
    # Every signal's number is written here too, by whichever thread received it.
    received, wakeup = socket.socketpair()
    wakeup.setblocking(False)
    previous_fd = signal.set_wakeup_fd(wakeup.fileno(), warn_on_full_buffer=False)
    store = Store.from_settings(settings, _RUNTIME.clock)
    lock = SchedulerLock(store)
    waker: threading.Thread | None = None
    try:
        lock.acquire()
        scheduler = build_scheduler(settings, store, config)
        _RUNTIME.scheduler = scheduler
        waker = threading.Thread(target=_wake_on_stop, args=(scheduler, received),
                                 daemon=True, name="digest-scheduler-waker")
        waker.start()
        log.info("scheduler started (pid %s): edition cron %r in %s, misfire grace %ss",
                 os.getpid(), settings.schedule.cron, settings.schedule.timezone,
                 settings.schedule.misfire_grace)
        upcoming = next_runs(edition_trigger(settings, store), store.clock.now(), 1)
        if upcoming:
            log.info("next edition slot: %s", upcoming[0].isoformat())
        scheduler.start()          # returns once stop is set and the scheduler shut down
        # shutdown(wait=False) returns at once; wait for running jobs to finish their
        # message in flight and release what they had claimed.
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        log.info("scheduler stopped")
    finally:
        _RUNTIME.scheduler = None
        if not stop.is_set():
            # Only when something failed before any signal came. The handlers go first:
            # one landing inside this stop.set() would wait for the lock this thread holds.
            _restore_handlers(previous)
            stop.set()
        with contextlib.suppress(OSError):
            wakeup.send(_END)      # lets the waker end
        if waker is not None:
            waker.join()
        lock.release()
        store.close()
        _restore_handlers(previous)
        signal.set_wakeup_fd(previous_fd)
        received.close()
        wakeup.close()


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
    # The other jobs build_scheduler adds: feed polling (every feeds_every minutes, over
    # feeds feeds) and the bounce mailbox (every bounces_every minutes; None: no mailbox,
    # no job).
    feeds_every: int = 0
    feeds: int = 0
    bounces_every: int | None = None


def schedule_overview(settings: Settings, store: Store, now: datetime | None = None,
                      count: int = 3) -> Overview:
    now = now or store.clock.now()
    zone = ZoneInfo(settings.schedule.timezone)
    trigger = edition_trigger(settings, store, now)
    runs = [fire.astimezone(zone) for fire in next_runs(trigger, now, count)]
    waves: list[tuple[str, datetime]] = []
    if settings.schedule.local_time and runs:
        waves = sorted(((name, wave_time(settings, name, runs[0]))
                        for name in _zones_in_use(store, settings)), key=lambda w: w[1])
    with store.sessions() as session:
        feeds = feed_count(session)
    return Overview(runs, settings.schedule.retry_minutes, waves, recent_editions(store, 5),
                    feeds_every=settings.schedule.feeds_minutes, feeds=feeds,
                    bounces_every=settings.bounces.poll_minutes
                    if settings.bounces.mailbox_enabled else None)

