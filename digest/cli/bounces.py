"""digest bounces: import (files of bounce mail), fetch (the bounce mailbox), list, review
(reports held because nothing tied them to mail we sent)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ..audience.bouncemail import iter_sources
from ..audience.bounces import BounceDesk, DeskReport, Outcome
from ..audience.mailbox import fetch_bounces
from ..errors import InputError
from ..store.models import BounceKind
from .app import App, DigestGroup, err, exit_by_outcome, out, print_table, progress_bar

__all__ = ["bounces"]


@click.group(cls=DigestGroup)
def bounces() -> None:
    """Read bounces and complaints, and see what they did.

    Example:

    \b
        digest bounces import ~/Maildir/.bounces
    """


def _finding_objects(outcome: Outcome) -> list[dict[str, Any]]:
    """What a message was read to say, one object per finding, and what came of it (a
    held report's findings too: what it claims is what the editor reviews)."""
    if outcome.held:
        return [{"source": f.source, "recipient": f.recipient, "kind": f.kind.value,
                 "status": f.status, "cause": f.cause, "reason": f.reason,
                 "effect": f"held for review: {outcome.held}"}
                for f in outcome.reading.findings]
    return [{"source": r.finding.source, "recipient": r.recipient, "kind": r.finding.kind.value,
             "status": r.finding.status, "cause": r.finding.cause,
             "reason": r.finding.reason, "effect": r.effect}
            for r in outcome.resolved]


def _short_source(source: str) -> str:
    """A message as its file's name, or its mailbox folder and UID: the folder or the
    mailbox is the same for every row (the JSON output has the whole path)."""
    return source.rsplit("/", 1)[-1]


def _outcome_rows(table: Table, outcome: Outcome) -> None:
    for r in outcome.resolved:
        table.add_row(r.recipient or "-", r.finding.kind.value, r.finding.status or "-",
                      r.effect, escape(_short_source(r.finding.source)))
    if outcome.unsubscribed:
        table.add_row(outcome.unsubscribed, "unsubscribe", "-", "unsubscribed",
                      escape(_short_source(outcome.reading.source)))
    if outcome.held:
        table.add_row("-", "held", "-", escape(f"held for review: {outcome.held}"),
                      escape(_short_source(outcome.reading.source)))


_NONE_IN_FILES = ("No messages found (give a Maildir with cur/ new/ tmp/, an mbox file, "
                  "message files, or folders of them)")


def _summary(report: DeskReport, dry_run: bool, none: str = _NONE_IN_FILES) -> str:
    if not report.messages:
        return none
    kinds = ", ".join(f"{report.kinds[k.value]} {k.value}" for k in BounceKind
                      if report.kinds[k.value])
    effects = ", ".join(f"{n} {what}" for what, n in sorted(report.effects.items()))
    line = (f"{report.messages} message(s): {kinds or 'no bounce or complaint'}; "
            f"{report.ignored} ignored (no bounce)")
    if report.requests:
        line += (f"; {report.requests} mail(s) to the unsubscribe address, "
                 f"{report.unsubscribed} unsubscribed")
    if report.held:
        line += (f"; {report.held} held for review (nothing ties them to mail we sent: "
                 f"see digest bounces review)")
    if effects:
        line += f". Subscribers: {effects}"
    return line + (" (dry run: nothing was stored)" if dry_run else "")


def _emit(outcomes: list[Outcome], report: DeskReport, fmt: str, dry_run: bool,
          none: str = _NONE_IN_FILES) -> None:
    if fmt == "json":
        click.echo(json.dumps([o for oc in outcomes for o in _finding_objects(oc)], indent=2))
        err.print(_summary(report, dry_run, none))
        return
    table = Table("recipient", "kind", "status", "what it did", "message")
    for outcome in outcomes:
        _outcome_rows(table, outcome)
    if table.row_count:
        print_table(table, keep=("recipient", "kind", "status"), wide=("message",))
    out.print(_summary(report, dry_run, none))


@bounces.command("import")
@click.argument("sources", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="Read and report; change nothing.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_obj
def bounces_import(app: App, sources: Sequence[str], dry_run: bool, fmt: str) -> None:
    """Read bounce mail from Maildirs, mbox and .eml files.

    Bounces, complaints (ARF), auto-replies and mails to the unsubscribe address are
    found, and each kind does what it does: hard → bounced and suppressed; soft → the
    bounce score; complaint → unsubscribed and suppressed; auto-reply → nothing. Reading
    the same message twice records it once. A message that nothing ties to mail this
    store sent (a valid VERP token, else a Message-ID we sent that recipient) is held for
    review and changes nobody: see digest bounces review.

    Example:

    \b
        digest bounces import ~/Maildir/.bounces bounced.eml --dry-run
    """
    desk = BounceDesk(app.store, app.settings)
    report, outcomes, unreadable = DeskReport(), [], []
    with progress_bar() as progress:
        task = progress.add_task("Reading", total=None)
        # Source by source: one that cannot be read is named, the others are still read.
        for given in sources:
            try:
                for source, raw in iter_sources([given]):
                    outcome = desk.apply(desk.read(raw, source), dry_run=dry_run)
                    report.add(outcome)
                    outcomes.append(outcome)
                    progress.advance(task)
            except InputError as exc:
                unreadable.append(str(exc))
    _emit(outcomes, report, fmt, dry_run)
    for line in unreadable:
        err.print(f"Error: {line}")
    exit_by_outcome(len(sources) - len(unreadable), len(unreadable))


@bounces.command("fetch")
@click.option("--dry-run", is_flag=True,
              help="Read and report; change nothing, leave every message where it is.")
@click.pass_obj
def bounces_fetch(app: App, dry_run: bool) -> None:
    """Read the bounce mailbox of [bounces] over IMAP or POP3.

    The password comes from DIGEST_BOUNCES__PASSWORD. Each message does what
    `bounces import` would do with it, and is then moved to processed_folder (or
    deleted); a message that could not be handled stays for the next time (at most
    three times; then it is skipped), and one over [bounces] max_message_bytes is not
    fetched at all: it stays in the mailbox for you to look at.

    Example:

    \b
        DIGEST_BOUNCES__PASSWORD=secret digest bounces fetch
    """
    if not app.settings.bounces.mailbox_enabled:
        raise InputError("no bounce mailbox: set [bounces] host (and username, protocol) in "
                         "the config, the password in DIGEST_BOUNCES__PASSWORD")
    report, outcomes = DeskReport(), []

    def seen(outcome: Outcome) -> None:
        report.add(outcome)
        outcomes.append(outcome)

    with progress_bar() as bar:
        task = bar.add_task("Reading the mailbox", total=None)
        fetched = fetch_bounces(app.settings, app.store, dry_run=dry_run, on_outcome=seen,
                                progress=lambda _what: bar.advance(task))
    _emit(outcomes, report, "table", dry_run, none="The bounce mailbox holds no messages")
    for line in fetched.errors:
        err.print(f"not handled: {escape(line)}")
    for line in fetched.skipped:
        err.print(f"skipped: {escape(line)}")
    if fetched.left:
        err.print(f"{fetched.left} message(s) left in the mailbox for the next fetch")
    exit_by_outcome(fetched.handled, len(fetched.errors))


@bounces.command("list")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]),
              help="Only events received since this day.")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_obj
def bounces_list(app: App, since: datetime | None, limit: int, fmt: str) -> None:
    """The latest bounce events, newest first.

    From sending (5xx to RCPT TO), the bounce mailbox, files and provider webhooks.

    Example:

    \b
        digest bounces list --since 2026-11-01
    """
    rows = BounceDesk(app.store, app.settings).events(
        since=since.replace(tzinfo=UTC) if since else None, limit=limit)
    if fmt == "json":
        click.echo(json.dumps([
            {"time": r.occurred_at.isoformat(), "received": r.recorded_at.isoformat(),
             "recipient": r.recipient, "kind": str(r.kind),
             "status": r.status, "reason": r.reason, "source": r.source,
             "edition": r.edition_number} for r in rows], indent=2))
        return
    if not rows:
        out.print("No bounce events" + (" since then" if since else " yet"))
        return
    table = Table("received", "recipient", "kind", "status", "edition", "reason")
    for r in rows:
        table.add_row(r.recorded_at.strftime("%Y-%m-%d"), r.recipient, str(r.kind),
                      r.status or "-", str(r.edition_number or "-"), escape(r.reason))
    print_table(table, keep=("received", "recipient", "kind", "status", "edition"),
                wide=("reason",))


@bounces.command("review")
@click.option("--apply", "apply_id", type=click.IntRange(1), metavar="ID",
              help="Do what held report ID claims.")
@click.option("--dismiss", "dismiss_id", type=click.IntRange(1), metavar="ID",
              help="Throw held report ID away; it changes nobody.")
@click.option("--all", "every", is_flag=True, help="Decided reports too.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_obj
def bounces_review(app: App, apply_id: int | None, dismiss_id: int | None, every: bool,
                   fmt: str) -> None:
    """Reports held for review, and applying or dismissing one.

    Mail to the bounce address acts only when it is tied to mail this store sent: a
    valid VERP token (with [bounces] return_path), else a quoted Message-ID we gave that
    recipient; a mail to the unsubscribe address, when the receiving server authenticated
    its sender or it replies to our mail. Anything else, and any message naming more
    than 10 recipients, is held here and changes nobody until applied.

    Example:

    \b
        digest bounces review
        digest bounces review --apply 3
    """
    desk = BounceDesk(app.store, app.settings)
    if apply_id is not None and dismiss_id is not None:
        raise InputError("give --apply or --dismiss, not both")
    if apply_id is not None:
        outcome = desk.apply_held(apply_id)
        report = DeskReport()
        report.add(outcome)
        _emit([outcome], report, "table", False)
        return
    if dismiss_id is not None:
        desk.dismiss_held(dismiss_id)
        out.print(f"Held report {dismiss_id} dismissed; it changed nobody")
        return
    rows = desk.held(every=every)
    if fmt == "json":
        click.echo(json.dumps([
            {"id": r.id, "received": r.received_at.isoformat(), "source": r.source,
             "claims": r.summary, "held_because": r.held_because, "status": r.status.value,
             "outcome": r.outcome} for r in rows], indent=2))
        return
    if not rows:
        out.print("No reports held for review")
        return
    table = Table("id", "received", "claims", "held because", "status", "message")
    for r in rows:
        table.add_row(str(r.id), r.received_at.strftime("%Y-%m-%d"), escape(r.summary),
                      escape(r.held_because), r.status.value + (f" ({escape(r.outcome)})"
                                                                 if r.outcome else ""),
                      escape(_short_source(r.source)))
    print_table(table, keep=("id", "received", "status"), wide=("claims", "held because"))
