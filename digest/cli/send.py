"""digest send and digest worker, and the Ctrl-C handling that lets both finish the
messages in flight."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from ..delivery.editions import (
    EditionPlan,
    NoRecipients,
    TooFew,
    plan_edition,
    reopen_failed,
    send_test_copy,
)
from ..delivery.runner import (
    SendReport,
    enqueue_edition,
    enqueue_only,
    next_retry,
    retry_deferred,
    run_worker,
    send_edition,
)
from ..errors import EditionPaused, InputError, NothingToSend
from ..mail.transport import Transport, make_transport
from .app import (
    EXIT_INTERRUPTED,
    App,
    delivery_table,
    err,
    exit_by_outcome,
    out,
    progress_bar,
)

__all__ = ["send", "worker"]


def _sentence(exc: Exception) -> str:
    """An expected, non-error condition as a sentence of its own."""
    text = str(exc)
    if isinstance(exc, TooFew):
        text += " (--force sends them now)"
    return f"{text[:1].upper()}{text[1:]}."


@contextmanager
def _stop_on_signals(*, again_stops_at_once: bool = True) -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) or SIGTERM, so that sending stops cleanly: the
    messages in flight finish, claimed deliveries are handed back, the summary prints.
    With again_stops_at_once a second signal stops at once; without (a worker), every
    signal only asks again. The previous handlers are back on leaving."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        # The event is set before anything is printed: a second signal can run its
        # handler in the middle of the first one's print, and must find it set.
        if not again_stops_at_once:
            stop.set()
            err.print(f"{signal.Signals(signum).name}: finishing the messages in flight")
            return
        if not stop.is_set():
            stop.set()
            err.print(f"{signal.Signals(signum).name}: finishing the messages in flight "
                      f"(again to stop at once)")
            return
        signal.signal(signum, signal.SIG_DFL)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _when(at: datetime, now: datetime) -> str:
    """A moment as a UTC time and a distance: "2026-11-27 14:05 UTC (in 3 h 5 min)"."""
    seconds = max(0, int((at - now).total_seconds()))
    hours, minutes = divmod((seconds + 59) // 60, 60)
    distance = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"{at:%Y-%m-%d %H:%M} UTC (in {distance})"


@click.command()
@click.option("--dry-run", is_flag=True,
              help="Say what the same command without --dry-run would do: build everything, "
                   "store and send nothing.")
@click.option("--to", "to", metavar="EMAIL", help="Send one test copy ([TEST] subject) to EMAIL.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before sending a new edition.")
@click.option("--edition", "number", type=int, help="Resume edition N.")
@click.option("--retry", is_flag=True, help="Send deferred deliveries that are due.")
@click.option("--retry-failed", is_flag=True,
              help="With --edition N: send N's failed deliveries again (after fixing the "
                   "cause); subscribers no longer active are left out.")
@click.option("--force", is_flag=True,
              help="Make an edition even with fewer new articles than [digest] "
                   "min_articles (never one with none).")
@click.option("--allow-empty", is_flag=True,
              help="Send an approved edition that has no articles, only the editor's intro.")
@click.option("--enqueue", is_flag=True,
              help="Create the edition and its ledger only; `digest worker`s send it.")
@click.pass_obj
def send(app: App, dry_run: bool, to: str | None, yes: bool, number: int | None, retry: bool,
         retry_failed: bool, force: bool, allow_empty: bool, enqueue: bool) -> None:
    """Create the next edition (or resume an unfinished one) and send it.

    Each subscriber gets the edition once; a killed or interrupted run resumes where it
    stopped. Ctrl-C finishes the messages in flight and prints what is left. An edition
    with nothing in it is never sent; one with only the editor's intro needs
    --allow-empty.

    Example:

    \b
        digest send --dry-run && digest send --to me@example.org && digest send --yes
    """
    settings, store = app.settings, app.store
    transport = make_transport(settings)
    if retry_failed and number is None:
        raise click.UsageError("--retry-failed needs --edition N (see: digest editions list)")
    if to and dry_run:
        raise click.UsageError("--to sends a real test copy; leave out --dry-run (or --to)")
    if dry_run and (retry or retry_failed):
        raise click.UsageError("--dry-run says what a new or resumed edition would be; leave "
                               "out --retry and --retry-failed (or --dry-run)")
    queued = enqueue or (enqueue_only(settings) and not (to or retry or retry_failed))
    if dry_run:
        _dry_run(app, number, force=force, allow_empty=allow_empty, queued=queued)
    elif queued:
        _enqueue(app, number, force=force, allow_empty=allow_empty)
    elif to:
        transport.check()
        subject = send_test_copy(store, settings, transport, to, app.clock.now())
        out.print(f"Sent a test copy to {to}: {subject}")
    # Everything that may ask or refuse happens before the progress bar is drawn.
    elif _ready_to_send(app, transport, number, retry=retry, retry_failed=retry_failed,
                        force=force, allow_empty=allow_empty, yes=yes):
        report, interrupted = _send_with_progress(app, transport, number, retry=retry,
                                                  force=force, allow_empty=allow_empty)
        _print_outcome(report, interrupted)


def _plan(app: App, number: int | None, *, force: bool, allow_empty: bool,
          render: bool = False) -> EditionPlan | None:
    """What sending would do now (the decision the real run makes); None, with the
    reason printed as a sentence, when there is nothing to send. Nobody to send to is an
    error."""
    try:
        return plan_edition(app.store, app.settings, app.clock.now(), number=number,
                            force=force, allow_empty=allow_empty, render=render)
    except NoRecipients:
        raise
    except NothingToSend as exc:
        out.print(_sentence(exc))
        return None


def _enqueue(app: App, number: int | None, *, force: bool, allow_empty: bool) -> None:
    """Create the edition (number N, when given) and its ledger for workers to send; say
    what is pending."""
    try:
        edition, created, pending = enqueue_edition(app.store, app.settings, number=number,
                                                    force=force, allow_empty=allow_empty)
    except NoRecipients:
        raise
    except NothingToSend as exc:
        out.print(_sentence(exc))
        return
    state = "Created" if created else "Edition exists:"
    out.print(f"{state} edition {edition.number}: {pending} deliveries pending. "
              f"Workers send them: digest worker")


def _dry_run(app: App, number: int | None, *, force: bool, allow_empty: bool,
             queued: bool) -> None:
    """Say what the same command without --dry-run would do; store and send nothing."""
    plan = _plan(app, number, force=force, allow_empty=allow_empty, render=True)
    if plan is None:
        return
    if plan.action == "resume":
        who = "`digest worker`s would send" if queued else "it would send"
        out.print(f"Dry run: edition {plan.number} is already going out; {who} its "
                  f"{plan.pending} pending deliver{'ies' if plan.pending != 1 else 'y'}. "
                  f"Nothing was stored or sent.")
        return
    what = ("would carry only its intro (no articles: --allow-empty)" if plan.intro_only
            else f"would take {plan.articles} articles in {len(plan.topics)} topics")
    out.print(f"Dry run: edition {plan.number} {what} and go to {plan.recipients} "
              f"subscriber{'s' * (plan.recipients != 1)} in "
              f"{plan.variants} variant{'s' * (plan.variants != 1)} ({plan.skipped} "
              f"skipped: nothing new in their topics)"
              + ("; it would be queued for `digest worker`s" if queued else "")
              + ". Nothing was stored or sent.")


def _ready_to_send(app: App, transport: Transport, number: int | None, *, retry: bool,
                   retry_failed: bool, force: bool, allow_empty: bool, yes: bool) -> bool:
    """Whether sending should start: reopens failed deliveries for --retry-failed, says so
    when nothing is due for --retry, says why when there is nothing to send, and asks (or
    refuses without --yes when not in a terminal) before a new edition; False when there
    is nothing to do."""
    store = app.store
    if retry_failed:
        assert number is not None
        transport.check()
        reopened, left = reopen_failed(store, number)
        note = (f"; {left} for subscribers no longer active stay failed" if left else "")
        out.print(f"Edition {number}: {reopened} failed deliver"
                  f"{'ies' if reopened != 1 else 'y'} to send again{note}.")
        return bool(reopened)
    if retry:
        now = app.clock.now()
        due = next_retry(store)
        if due is None:
            out.print("Nothing is deferred: nothing to retry.")
            return False
        if due > now:
            out.print(f"Nothing to retry yet: the next deferred delivery is due at "
                      f"{_when(due, now)}.")
            return False
        return True
    plan = _plan(app, number, force=force, allow_empty=allow_empty)
    if plan is None:
        return False
    if plan.intro_only:
        out.print(f"Edition {plan.number} has no articles, only its intro: it goes out as "
                  f"it is (--allow-empty).")
    if plan.action == "resume" and plan.paused and number is None:
        # A paused edition goes on before any new one: never silently.
        out.print(f"Edition {plan.number} is paused: sending its {plan.pending} pending "
                  f"deliver{'ies' if plan.pending != 1 else 'y'} before any new edition.")
    if plan.action == "resume" or number is not None:
        return True
    return _confirm_new_edition(plan, yes=yes)


def _confirm_new_edition(plan: EditionPlan, *, yes: bool) -> bool:
    """Ask before sending a new (or the approved) edition; refused without --yes when not
    in a terminal."""
    if not yes:
        if not sys.stdin.isatty():
            raise InputError(f"edition {plan.number} would go to {plan.recipients} "
                             f"subscriber{'s' * (plan.recipients != 1)}; add --yes to send "
                             f"without asking")
        click.confirm(f"Send edition {plan.number} ({plan.articles} articles) to "
                      f"{plan.recipients} subscriber{'s' * (plan.recipients != 1)}?",
                      abort=True)
    return True


def _send_with_progress(app: App, transport: Transport, number: int | None, *, retry: bool,
                        force: bool, allow_empty: bool) -> tuple[SendReport, bool]:
    """Send under a progress bar until done or stopped by a signal; the report and
    whether a signal stopped it."""
    store, settings = app.store, app.settings
    with _stop_on_signals() as stop, progress_bar() as progress:
        task = progress.add_task("Sending", total=None)

        def advance(_status: str) -> None:
            progress.advance(task)

        if retry:
            report = retry_deferred(store, settings, transport, progress=advance, stop=stop)
        else:
            report = send_edition(store, settings, transport, number=number, force=force,
                                  allow_empty=allow_empty, progress=advance, stop=stop,
                                  on_open=lambda _e, n: progress.update(task, total=n))
    return report, stop.is_set()


_NAMED_FAILURES = 10


def _print_failed(report: SendReport) -> None:
    """Each delivery that failed in this run, by address and why (the first few)."""
    n = len(report.failed)
    again = (f"digest send --retry-failed --edition {report.edition}" if report.edition
             else "digest send --retry-failed --edition N")
    out.print(f"{n} failed ({again} sends {'it' if n == 1 else 'them'} again once the cause "
              f"is fixed):")
    for address, why in report.failed[:_NAMED_FAILURES]:
        out.print(f"  {address}: {why}")
    if n > _NAMED_FAILURES:
        where = f"digest editions show {report.edition}" if report.edition else \
            "digest editions list"
        out.print(f"  … and {n - _NAMED_FAILURES} more ({where})")


def _paused(report: SendReport) -> EditionPaused:
    """Which edition paused, why, how much is left, and what to do about it."""
    if report.edition is None:
        return EditionPaused(f"sending paused after {report.paused}")
    n, pending = report.edition, report.counts.get("pending", 0)
    give_up = (f"digest editions discard {n}, which nobody received; its articles go to the "
               f"next edition" if not report.counts.get("sent") else
               f"digest editions finish {n}; its pending deliveries fail, to be sent later "
               f"with --retry-failed if need be")
    return EditionPaused(f"edition {n} paused after {report.paused}. {pending} deliver"
                         f"{'ies' if pending != 1 else 'y'} pending; no new edition is made "
                         f"until this one is finished (to give up on it: {give_up})")


def _print_outcome(report: SendReport, interrupted: bool) -> None:
    """The counts and what failed; then the exit code of the one rule (app.py): the
    pause's error line with 1, or 3 when this run sent some messages before it; 130 when
    interrupted; 3 when some recipients failed and others got it, 1 when all failed."""
    out.print(delivery_table(report))
    pending = report.counts.get("pending", 0)
    if (report.edition is not None and not report.created and not report.paused
            and not any(report.this_run.values())):
        out.print(f"Edition {report.edition}: nothing was due; its {pending} pending "
                  f"deliveries wait for their local time." if pending else
                  f"Edition {report.edition} has nothing pending: nothing was sent.")
    if report.failed:
        _print_failed(report)
    if report.counts.get("deferred"):
        out.print(f"{report.counts['deferred']} deferred after temporary errors: digest send "
                  f"--retry sends them once due (digest schedule run does it by itself).")
    sent = report.this_run.get("sent", 0)
    if report.paused:
        exit_by_outcome(sent, 1, error=str(_paused(report)))
    if interrupted:
        left = report.counts.get("pending", 0)
        err.print(f"Interrupted: {left} deliveries still pending; run `digest send` again to "
                  f"resume (nobody gets the edition twice).")
        sys.exit(EXIT_INTERRUPTED)
    exit_by_outcome(sent, report.this_run.get("failed", 0))


@click.command()
@click.option("--until-done", is_flag=True,
              help="Exit once nothing is due and no other worker holds anything.")
@click.option("--poll", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Seconds between looks for new work when idle.")
@click.pass_obj
def worker(app: App, until_done: bool, poll: float) -> None:
    """Send queued deliveries; run any number of workers, on any number of machines.

    Each worker claims batches of pending deliveries under a lease
    ([delivery] lease_seconds): a worker that dies leaves its batch to be claimed again.

    Example:

    \b
        digest send --enqueue && digest worker --until-done
    """
    with _stop_on_signals(again_stops_at_once=False) as stop:
        with progress_bar() as progress:
            task = progress.add_task("Sending", total=None)
            totals = run_worker(app.store, app.settings, make_transport(app.settings),
                                until_done=until_done, poll=poll, stop=stop,
                                progress=lambda _s: progress.advance(task))
        out.print(f"Worker done: sent {totals['sent']}, deferred {totals['deferred']}, "
                  f"failed {totals['failed']}.")
    exit_by_outcome(totals["sent"], totals["failed"])
