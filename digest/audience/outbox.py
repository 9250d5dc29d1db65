"""The outbox: transactional mail (sign-up confirmations) queued in the store and sent by
a background thread, so a web request never waits for the SMTP server — and never takes
longer for one address than for another.

`queue_mail` adds a row inside the caller's transaction. `drain_outbox` sends every row
that is due through the configured transport: accepted mail is deleted, a temporary
failure is retried later with backoff, a permanent one (or too many attempts) is given up
with a log line. Rows are claimed under a lease, so any number of processes may drain
the same store without sending a mail twice. `OutboxSender` runs `drain_outbox` in a
thread: when woken (a row was queued) and every `poll` seconds.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..config import Settings
from ..errors import DeliveryError
from ..mail.transport import (
    Connection,
    PermanentFailure,
    TemporaryFailure,
    Transport,
    make_transport,
)
from ..store.db import Session, Store
from ..store.models import OutboxMail
from ..store.outbox import (
    add_mail,
    claim_due_mail,
    delete_mail,
    drop_blocked_mail,
    reschedule_mail,
)

__all__ = ["OutboxReport", "OutboxSender", "drain_outbox", "queue_mail"]

log = logging.getLogger("digest.outbox")

LEASE = timedelta(minutes=5)
_MAX_BACKOFF = timedelta(hours=1)


def queue_mail(session: Session, sender: str, recipient: str, message: bytes, now: datetime,
               subscriber_id: int | None = None) -> None:
    """Add a mail to the outbox, due at now, in the caller's transaction (sent once that
    commits)."""
    add_mail(session, sender, recipient, message, now, subscriber_id)


@dataclass(frozen=True)
class OutboxReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0


def _retry_later(store: Store, row: OutboxMail, error: str, settings: Settings) -> bool:
    """Schedule another attempt with backoff; False (and the row is dropped) when it has
    had its attempts."""
    attempts = row.attempts + 1
    if attempts >= settings.delivery.max_attempts:
        delete_mail(store, row.id)
        log.error("gave up on the confirmation mail to subscriber %s after %d attempts: %s",
                  row.subscriber_id, attempts, error)
        return False
    delay = min(timedelta(seconds=settings.delivery.retry_base_seconds * 2 ** (attempts - 1)),
                _MAX_BACKOFF)
    reschedule_mail(store, row.id, attempts, store.clock.now() + delay, error)
    log.warning("confirmation mail to subscriber %s deferred (attempt %d): %s",
                row.subscriber_id, attempts, error)
    return True


def drain_outbox(store: Store, settings: Settings, transport: Transport | None = None,
                 now: datetime | None = None) -> OutboxReport:
    """Send every outbox mail that is due; returns what happened to them. Never raises for
    an SMTP problem (the rows wait for the next run); a store failure propagates."""
    transport = transport or make_transport(settings)
    sent = deferred = failed = 0
    conn: Connection | None = None
    # One try per row per pass: a row retried "now" (backoff 0) waits for the next pass.
    now = now or store.clock.now()
    tried: set[int] = set()
    dropped = drop_blocked_mail(store)
    if dropped:
        log.info("%d queued mail(s) dropped: their addresses were suppressed since", dropped)
    try:
        while (row := claim_due_mail(store, now, tried, LEASE)) is not None:
            tried.add(row.id)
            if conn is None:
                try:
                    conn = transport.open()
                except DeliveryError as exc:
                    # The server is unreachable: this row waits, and so do the rest.
                    if _retry_later(store, row, str(exc), settings):
                        deferred += 1
                    else:
                        failed += 1
                    break
            try:
                conn.send(row.sender, row.recipient, row.message)
            except TemporaryFailure as exc:
                if _retry_later(store, row, str(exc), settings):
                    deferred += 1
                else:
                    failed += 1
                if exc.reconnect:
                    conn.close()
                    conn = None
                continue
            except PermanentFailure as exc:
                log.error("the SMTP server refused the confirmation mail to subscriber %s: %s",
                          row.subscriber_id, exc)
                failed += 1
            else:
                sent += 1
            delete_mail(store, row.id)
    finally:
        if conn is not None:
            conn.close()
    return OutboxReport(sent, deferred, failed)


class OutboxSender:
    """Drains the outbox in a background thread: at once when woken, else every poll
    seconds (to pick up rows other processes queued, and retries that came due)."""

    def __init__(self, store: Store, settings: Settings, poll: float = 30.0) -> None:
        self.store = store
        self.settings = settings
        self.poll = poll
        self._cond = threading.Condition()
        self._wanted = 0          # passes asked for (wake, flush)
        self._done = 0            # the number of asked-for passes a finished pass covered
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="digest-outbox", daemon=True)

    def start(self) -> OutboxSender:
        self._thread.start()
        return self

    def wake(self) -> int:
        """Ask for a pass soon; returns its ticket (for flush)."""
        with self._cond:
            self._wanted += 1
            self._cond.notify_all()
            return self._wanted

    def flush(self, timeout: float = 30.0) -> bool:
        """Run a pass that starts after this call, and wait until it has finished: every
        row committed before the call has then been tried. False on timeout."""
        ticket = self.wake()
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= ticket or self._stopping,
                                       timeout) and self._done >= ticket

    def stop(self) -> None:
        """Finish the pass in progress (if any) and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stopping and self._done >= self._wanted:
                    self._cond.wait(self.poll)
                if self._stopping:
                    return
                covered = self._wanted
            try:
                drain_outbox(self.store, self.settings)
            except Exception as exc:   # a store outage: log it, try again on the next pass
                # The driver's message only: SQLAlchemy's own text would carry the
                # statement's parameters, which include the signed confirmation link.
                log.error("sending the outbox failed: %s: %s", type(exc).__name__,
                          getattr(exc, "orig", exc))
            with self._cond:
                self._done = max(self._done, covered)
                self._cond.notify_all()
