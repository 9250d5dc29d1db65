"""The sending engine: claimed deliveries sent over a pool of connections, each result
recorded in the ledger before the next message on that connection.

The engine depends on two small interfaces, not on concrete classes: a Ledger
(digest.store.ledger) and a Transport (digest.mail.transport). What is due, and when,
is decided in digest.delivery.runner; editions are made in digest.delivery.editions.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from ..audience.bouncemail import classify_failure
from ..config import Settings
from ..errors import DeliveryError, ServerRefused
from ..mail.message import MessageTemplate, Prepared, Recipient, variant_template
from ..mail.ranking import editorial_for
from ..mail.signing import SigningProcess
from ..mail.transport import (
    Connection,
    MessageRefused,
    PermanentFailure,
    SmtpTransport,
    TemporaryFailure,
    Transport,
    unwire,
)
from ..store.bounces import BouncePolicy, NewEvent
from ..store.db import Store
from ..store.editions import edition_content
from ..store.ledger import Claim, Ledger, StoreLedger
from ..store.models import DeliveryStatus

__all__ = ["LedgerFactory", "ProgressFn", "RateLimiter", "Sender", "session_bounce"]

_MAX_BACKOFF = timedelta(hours=12)
# From this many deliveries on, DKIM signatures are made in a process of their own (its
# start, about 0.3 s, costs more than it saves on a small send).
_SIGNING_PROCESS_FROM = 1000


class RateLimiter:
    """At most per_second messages per second over all threads (0: no limit)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        """Wait for this message's turn; False when stop was set meanwhile (a message
        still waiting for its turn is not in flight: it is handed back, not sent)."""
        if not self.interval:
            return True
        with self._lock:
            now = time.monotonic()
            at = max(self._next, now)
            self._next = at + self.interval
        return not stop.wait(at - now) if at > now else True


ProgressFn = Callable[[str], None]
LedgerFactory = Callable[[], Ledger]


# The enhanced status code (RFC 3463) a reply carries right after its three digits; a
# dotted number anywhere else (an IP address, a version) is none.
_STATUS = re.compile(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})(?![\d.])")


def session_bounce(claim: Claim, reply: str, now: datetime) -> NewEvent:
    """The bounce event of a 5xx reply to RCPT TO: hard or soft by its status code and
    text, like a bounce that comes back by mail."""
    found = _STATUS.search(reply)
    status = found[1] if found else None
    return NewEvent(subscriber_id=claim.subscriber_id, recipient=claim.email.lower(),
                    kind=classify_failure(status, reply), status=status, reason=reply[:300],
                    source="smtp session", occurred_at=now,
                    # Each refusal is an event of its own (a retry starts attempts anew).
                    fingerprint=f"smtp:{claim.delivery_id}:{uuid.uuid4().hex}",
                    edition_id=claim.edition_id)


class Sender:
    """Sends claimed deliveries over `connections` threads, one connection each.

    Each run takes a fresh ledger from `ledger` (default: the store's own, StoreLedger);
    the store is read for the articles each variant is rendered from."""

    def __init__(self, store: Store, settings: Settings, transport: Transport, *,
                 progress: ProgressFn | None = None,
                 stop: threading.Event | None = None,
                 clock: Callable[[], datetime] | None = None,
                 ledger: LedgerFactory | None = None) -> None:
        settings.signing_key  # noqa: B018  (ConfigError before anything is claimed)
        self.store = store
        self._open_ledger: LedgerFactory = ledger or (lambda: StoreLedger(store))
        # Decides what is due (claims, leases); results are stamped with the store's clock
        # as it runs, since a scheduler job passes the fixed time it started at.
        self.clock = clock or store.clock.now
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
        # What the server made of each (edition, variant) at DATA: taken at least once,
        # or refused with no verdict yet (those claims wait, still ours, for one).
        self._verdict_lock = threading.Lock()
        self._taken: set[tuple[int, str]] = set()
        self._doubted: dict[tuple[int, str], list[tuple[Claim, MessageRefused]]] = {}
        self.failed: list[tuple[str, str]] = []
        self._counts = {s.value: 0 for s in DeliveryStatus}
        self._batch = settings.delivery.batch_size
        self._signing: SigningProcess | None = None
        self._wire = isinstance(transport, SmtpTransport)
        self.limiter = RateLimiter(settings.smtp.max_per_second)

    # -- the variant of each delivery, rendered once per process --

    def template(self, edition_id: int, variant: str) -> MessageTemplate:
        key = (edition_id, variant)
        with self._template_lock:
            if key not in self._templates:
                edition, articles = edition_content(self.store, edition_id)
                template = variant_template(
                    self.settings, articles, edition.number, edition.date, variant,
                    edition_id=edition_id, clock=self.store.clock,
                    editorial=editorial_for(self.store, self.settings, edition))
                if template.signer is not None:
                    template.signer.remote = self._signing
                self._templates[key] = template
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

    # -- a refusal at DATA: this message's, or every message's like it --

    def _message_refused(self, ledger: Ledger, claim: Claim, exc: MessageRefused) -> bool:
        """Decide what a 5xx at DATA is about, by whether the server took the same variant
        (the same rendered message, only the per-subscriber parts differing): if it did,
        for anyone, now or in an earlier run, the refusal is about what only this message
        carries, and this delivery alone fails (no bounce: the address was accepted). A
        first refusal of a variant waits, its claim kept, for the next message of that
        variant to decide; a second one before any was taken is the server's (or the
        edition's) refusal: the edition pauses. True when it pauses."""
        key = (claim.edition_id, claim.variant)
        with self._verdict_lock:
            taken = key in self._taken or ledger.accepted(*key)
            if taken:
                self._taken.add(key)
            elif key not in self._doubted:
                self._doubted[key] = [(claim, exc)]
                return False
            else:
                doubted = self._doubted.pop(key)
        if taken:
            self._fail_message(ledger, claim, exc)
            return False
        self._refuse(ledger, [claim.delivery_id] + [c.delivery_id for c, _ in doubted], exc)
        return True

    def _taken_variant(self, ledger: Ledger, claim: Claim) -> None:
        """The server took a message of the claim's variant: refusals of that variant
        waiting for a verdict were about their own messages."""
        key = (claim.edition_id, claim.variant)
        with self._verdict_lock:
            self._taken.add(key)
            waiting = self._doubted.pop(key, [])
        for refused_claim, exc in waiting:
            self._fail_message(ledger, refused_claim, exc)

    def _fail_message(self, ledger: Ledger, claim: Claim, exc: MessageRefused) -> None:
        error = (f"refused at DATA, this message only (the server took the edition for "
                 f"others): {exc.reply}")
        ledger.failed(claim.delivery_id, error)
        self._failed_one(claim, error)

    def _failed_one(self, claim: Claim, error: str) -> None:
        with self._errors_lock:
            self.failed.append((claim.email, error))
        self._count(DeliveryStatus.FAILED)
        self._error(error)

    def _settle_doubts(self, ledger: Ledger) -> None:
        """At the end of a run, refusals no other message of their variant could decide
        (it was the only one left): the claims go back untouched, and unless sending was
        stopped from outside, the edition pauses as for any refusal by the server."""
        with self._verdict_lock:
            left = [item for items in self._doubted.values() for item in items]
            self._doubted.clear()
        if not left:
            return
        first = left[0][1]
        if self.stop.is_set() and not self._paused.is_set():
            ledger.release([c.delivery_id for c, _ in left], error=str(first))
        else:
            self._refuse(ledger, [c.delivery_id for c, _ in left], first)

    # -- one thread --

    def _prepare(self, claim: Claim) -> Prepared:
        """The claim's message, its DKIM signatures begun: in the DATA form when the
        transport is SMTP (its connections take it: the template prepared the bulk once)."""
        template = self.template(claim.edition_id, claim.variant)
        return template.prepare(Recipient(claim.subscriber_id, claim.email, claim.name,
                                          claim.token_version, claim.message_id),
                                wire=self._wire)

    def _deliver(self, ledger: Ledger, conn: Connection, claim: Claim,
                 prepared: Prepared | None = None) -> Connection | None:
        """Send one claimed delivery and record the result; returns the connection to use
        next (None when it must be reopened)."""
        template = self.template(claim.edition_id, claim.variant)
        message = template.finish(prepared or self._prepare(claim))
        if not self.limiter.wait(self.stop):
            ledger.release([claim.delivery_id])
            return conn
        d = self.settings.delivery
        sender = template.envelope_sender(claim.subscriber_id)
        try:
            send_wire = getattr(conn, "send_wire", None)
            if self._wire and send_wire is not None:
                send_wire(sender, claim.email, message)
            else:
                conn.send(sender, claim.email, unwire(message) if self._wire else message)
        except TemporaryFailure as exc:
            attempts = claim.attempts + 1
            if attempts >= d.max_attempts:
                ledger.failed(claim.delivery_id, f"gave up after {attempts} attempts: {exc}")
                self._count(DeliveryStatus.FAILED)
            else:
                delay = min(timedelta(seconds=d.retry_base_seconds * 2 ** (attempts - 1)),
                            _MAX_BACKOFF)
                ledger.deferred(claim.delivery_id, self.store.clock.now() + delay,
                                str(exc))
                self._count(DeliveryStatus.DEFERRED)
            self._error(str(exc))
            if exc.reconnect:
                conn.close()
                return None
            return conn
        except MessageRefused as exc:
            if not self._message_refused(ledger, claim, exc):
                return conn
            conn.close()
            return None
        except ServerRefused as exc:
            self._refuse(ledger, [claim.delivery_id], exc)
            conn.close()
            return None
        except PermanentFailure as exc:
            bounce = session_bounce(claim, str(exc), self.store.clock.now())
            ledger.failed(claim.delivery_id, str(exc), bounce=bounce, policy=self.policy)
            self._failed_one(claim, str(exc))
            return conn
        ledger.sent(claim.delivery_id, self.store.clock.now())
        self._count(DeliveryStatus.SENT)
        self._taken_variant(ledger, claim)
        return conn

    def _drop(self, claims: list[Claim], prepared: list[Prepared] | None) -> None:
        for claim, message in zip(claims, prepared or [], strict=False):
            self.template(claim.edition_id, claim.variant).drop(message)

    @property
    def policy(self) -> BouncePolicy:
        b = self.settings.bounces
        return BouncePolicy(b.score_threshold, b.score_reset_days)

    def _thread(self, ledger: Ledger, edition_id: int | None, retry: bool) -> None:
        conn: Connection | None = None
        d = self.settings.delivery
        try:
            while not self.stop.is_set():
                claims = ledger.claim(self._batch, self.clock(), d.lease_seconds,
                                      edition_id=edition_id, retry=retry)
                if not claims:
                    return
                # With a signing process, the batch's signatures are asked for at once,
                # and each message goes as soon as its own is back.
                ahead = [self._prepare(c) for c in claims] if self._signing else None
                for i, claim in enumerate(claims):
                    if self.stop.is_set():
                        ledger.release([c.delivery_id for c in claims[i:]])
                        self._drop(claims[i:], ahead[i:] if ahead else None)
                        return
                    if conn is None:
                        try:
                            conn = self.transport.open()
                        except ServerRefused as exc:
                            self._refuse(ledger, [c.delivery_id for c in claims[i:]], exc)
                            return
                        except DeliveryError as exc:
                            ledger.release([c.delivery_id for c in claims[i:]])
                            self._drop(claims[i:], ahead[i:] if ahead else None)
                            self._error(str(exc))
                            self.stop.wait(1.0)
                            break
                    conn = self._deliver(ledger, conn, claim, ahead[i] if ahead else None)
        except BaseException as exc:  # a bug or a store failure: stop everyone, re-raise
            self._failures.append(exc)
            self.stop.set()
        finally:
            if conn is not None:
                conn.close()

    def run(self, *, edition_id: int | None = None, retry: bool = False) -> dict[str, int]:
        """Send until nothing is left to claim (or stopped); returns this run's counts."""
        ledger = self._open_ledger()
        try:
            ledger.recover(self.clock())
            # Batches no bigger than a fair share, so a small list keeps every connection
            # busy instead of one connection claiming it all.
            connections = self.settings.smtp.connections
            due = ledger.claimable(self.clock(), edition_id=edition_id, retry=retry)
            self._batch = max(1, min(self.settings.delivery.batch_size, -(-due // connections)))
            if self.settings.dkim.enabled and due >= _SIGNING_PROCESS_FROM:
                self._signing = SigningProcess(self.settings, connections)
            threads = [threading.Thread(target=self._thread, args=(ledger, edition_id, retry),
                                        name=f"digest-sender-{i}", daemon=True)
                       for i in range(self.settings.smtp.connections)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self._settle_doubts(ledger)
        finally:
            ledger.close()
            if self._signing is not None:
                self._signing.close()
                self._signing = None
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
