"""digest subscribers: add, erase (remove), unsubscribe, activate, set-topics, list,
import, export, show, export-person."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import click
from rich.markup import escape
from rich.table import Table

from ..audience.privacy import erase, person_record
from ..audience.subscribers import SubscriberBook, spreadsheet_safe
from ..errors import InputError
from ..store.models import Subscriber, SubscriberStatus
from .app import (
    App,
    DigestGroup,
    confirm_irreversible,
    err,
    exit_by_outcome,
    out,
    print_table,
    yes_option,
)

__all__ = ["subscribers"]


@click.group(cls=DigestGroup)
def subscribers() -> None:
    """Add, change, import, export and list subscribers.

    Example:

    \b
        digest subscribers add ada@example.org --name "Ada" --topic AI --topic Science
    """


def _book(app: App) -> SubscriberBook:
    """The subscriber service every subscribers command calls."""
    return SubscriberBook(app.store, app.settings)


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name, used in To: and the greeting.")
@click.option("--topic", "topics", multiple=True, help="Only these topics (repeat; default: all).")
@click.option("--timezone", help="IANA zone, e.g. Europe/Berlin (for local-time delivery).")
@click.option("--force", is_flag=True,
              help="Add an address that unsubscribed or bounced earlier (only with their "
                   "consent, or once it works again).")
@click.pass_obj
def subscribers_add(app: App, email: str, name: str, topics: Sequence[str],
                    timezone: str | None, force: bool) -> None:
    """Add an active subscriber.

    Example:

    \b
        digest subscribers add grace@example.org --name Grace --topic AI --timezone America/New_York
    """
    sub = _book(app).add(email, name, topics, timezone, force=force)
    out.print(f"Added {sub.email}" + (f" (topics: {', '.join(sub.topics)})" if sub.topics
                                      else " (all topics)"))


def _erase(app: App, email: str, yes: bool) -> None:
    person_record(app.store, app.settings, email)      # an unknown address: said first
    confirm_irreversible(f"erasing {email.strip()} (profile, consent record, bounce events, "
                         f"queued mails)", yes)
    counts = erase(app.store, app.settings, email)
    if not counts["scrubbed"]:
        raise InputError(f"{email.strip()} is erased from the store, but another process "
                         f"was reading it, so a copy may linger in the SQLite file's free "
                         f"space: run `digest db compact` once it is idle (stop digest serve "
                         f"for a moment if it stays busy)")
    if not counts["profile"]:
        out.print(f"Erased {email.strip()}: only the suppression list held it, and now keeps "
                  f"only a keyed hash of the address")
        return
    out.print(f"Erased {email.strip()}: profile, consent, {counts['events']} bounce event(s) "
              f"and {counts['mails']} queued mail(s) deleted; the suppression list keeps only "
              f"a keyed hash of the address")


@subscribers.command("erase")
@click.argument("email")
@yes_option
@click.pass_obj
def subscribers_erase(app: App, email: str, yes: bool) -> None:
    """Erase a person (GDPR), irreversibly: their name, address, consent record, bounce
    events, queued mails and the error texts of their deliveries are deleted; only a keyed
    hash of the address stays on the suppression list, so they are never mailed or
    imported again by mistake (an operator's `digest suppressions remove EMAIL` lifts it).
    Asks first; without a terminal it needs --yes. To stop mailing someone but keep their
    record, use `digest subscribers unsubscribe`.

    Example:

    \b
        digest subscribers erase ada@example.org
    """
    _erase(app, email, yes)


@subscribers.command("remove")
@click.argument("email")
@yes_option
@click.pass_obj
def subscribers_remove(app: App, email: str, yes: bool) -> None:
    """Erase a subscriber irreversibly (the same as `digest subscribers erase`): their
    profile, consent record and history are deleted and cannot be brought back. Asks
    first; without a terminal it needs --yes.

    `digest subscribers unsubscribe` is the reversible way: it only stops the editions
    and keeps the record (`subscribers activate --force` with their consent undoes it).

    Example:

    \b
        digest subscribers remove ada@example.org --yes
    """
    _erase(app, email, yes)


@subscribers.command("show")
@click.argument("email")
@click.pass_obj
def subscribers_show(app: App, email: str) -> None:
    """Everything held about one subscriber: profile, consent, suppression, deliveries
    and bounce events.

    Example:

    \b
        digest subscribers show ada@example.org
    """
    record = person_record(app.store, app.settings, email)
    if record["profile"] is None:
        sup = record["suppression"]
        out.print(f"{email.strip()} is not a subscriber. Suppressed: {sup['reason']} since "
                  f"{_short_time(sup['since'])} ({sup['source']}); nothing else is held.")
        return
    for section in ("profile", "consent", "bounces"):
        out.print(f"{section.capitalize()}:")
        for key, value in record[section].items():
            shown = ", ".join(value) if isinstance(value, list) else _short_time(value)
            out.print(f"  {key.replace('_', ' ')}: {shown if shown not in (None, '') else '-'}")
    sup = record["suppression"]
    out.print("Suppressed: " + (f"{sup['reason']} since {_short_time(sup['since'])} "
                                f"({sup['source']})" if sup else "no"))
    deliveries = Table("edition", "status", "attempts", "sent at", "error", title="Deliveries")
    for d in record["deliveries"]:
        deliveries.add_row(str(d["edition"]), d["status"], str(d["attempts"]),
                           _short_time(d["sent_at"]) or "-", escape(d["error"] or ""))
    events = Table("time", "kind", "status", "edition", "reason", "source",
                   title="Bounce events")
    for e in record["bounce_events"]:
        events.add_row(_short_time(e["time"]), e["kind"], e["status"] or "-",
                       str(e["edition"] or "-"), escape(e["reason"]), escape(e["source"]))
    for table, none in ((deliveries, "Deliveries: none"), (events, "Bounce events: none")):
        if table.row_count:
            print_table(table, keep=("time", "sent at", "edition"), wide=("reason", "source",
                                                                          "error"))
        else:
            out.print(none)


def _short_time(value: Any) -> Any:
    """An ISO time as "2026-11-27 08:00" (UTC); anything else as it is."""
    if isinstance(value, str) and len(value) > 16 and value[10:11] == "T" \
            and value[:4].isdigit():
        return f"{value[:10]} {value[11:16]}"
    return value


@subscribers.command("export-person")
@click.argument("email")
@click.option("--out", "target", required=True,
              type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="The JSON file to write ('-' for standard output).")
@click.pass_obj
def subscribers_export_person(app: App, email: str, target: Path) -> None:
    """Write everything held about one subscriber as JSON (their copy of their data).

    Example:

    \b
        digest subscribers export-person ada@example.org --out ada.json
    """
    record = person_record(app.store, app.settings, email)
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    if str(target) == "-":
        sys.stdout.write(text)
        return
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}; check that the "
                         f"folder exists and is writable") from None
    err.print(f"Wrote everything held about {email.strip()} to {target}")


@subscribers.command("unsubscribe")
@click.argument("email")
@click.pass_obj
def subscribers_unsubscribe(app: App, email: str) -> None:
    """Mark a subscriber unsubscribed: no further editions.

    Example:

    \b
        digest subscribers unsubscribe ada@example.org
    """
    sub = _book(app).set_status(email, SubscriberStatus.UNSUBSCRIBED)
    out.print(f"Unsubscribed {sub.email}")


@subscribers.command("activate")
@click.argument("email")
@click.option("--force", is_flag=True,
              help="Re-activate someone who unsubscribed (only with their consent) or "
                   "bounced (once the address works again).")
@click.pass_obj
def subscribers_activate(app: App, email: str, force: bool) -> None:
    """Make a subscriber active again (after an unsubscribe or a bounce: --force).

    A complaint, an erasure or a manual suppression must be lifted first, with
    `digest suppressions remove EMAIL`.

    Example:

    \b
        digest subscribers activate ada@example.org
    """
    sub = _book(app).set_status(email, SubscriberStatus.ACTIVE, force=force)
    out.print(f"Activated {sub.email}")


@subscribers.command("set-topics")
@click.argument("email")
@click.argument("topics", nargs=-1)
@click.pass_obj
def subscribers_set_topics(app: App, email: str, topics: Sequence[str]) -> None:
    """Choose a subscriber's topics (none: every topic).

    Example:

    \b
        digest subscribers set-topics ada@example.org AI Science
    """
    sub = _book(app).set_topics(email, topics)
    out.print(f"{sub.email}: " + (", ".join(sub.topics) if sub.topics else "all topics"))


def _subscriber_row(s: Subscriber) -> dict[str, Any]:
    """One subscriber as `subscribers list` shows it (json as is; csv and table from it)."""
    return {"email": s.email, "name": s.name, "status": s.status.value, "topics": s.topics,
            "timezone": s.timezone}


@subscribers.command("list")
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus
                                            if s is not SubscriberStatus.REMOVED]))
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.pass_obj
def subscribers_list(app: App, status: str | None, fmt: str) -> None:
    """List subscribers.

    Example:

    \b
        digest subscribers list --status active --format json
    """
    subs = _book(app).subscribers(SubscriberStatus(status) if status else None)
    rows = [_subscriber_row(s) for s in subs]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["email", "name", "status", "topics", "timezone"])
        for r in rows:
            writer.writerow([spreadsheet_safe(v) for v in (
                r["email"], r["name"], r["status"], ";".join(r["topics"]), r["timezone"] or "")])
    else:
        # An active subscriber on the suppression list gets nothing: the table says so.
        held = _book(app).suppressed_keys()
        table = Table("email", "name", "status", "topics", "timezone")
        for s, r in zip(subs, rows, strict=True):
            shown = "suppressed" if s.email_key in held and r["status"] == "active" \
                else r["status"]
            table.add_row(r["email"], r["name"], shown, ", ".join(r["topics"]) or "all",
                          r["timezone"] or "")
        print_table(table, keep=("email", "status", "timezone"))
        out.print(f"{len(rows)} subscriber{'s' * (len(rows) != 1)}")


@subscribers.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check and report every row; store nothing.")
@click.option("--reactivate", is_flag=True,
              help="Let rows make unsubscribed or bounced subscribers active again (only "
                   "with their consent).")
@click.pass_obj
def subscribers_import(app: App, file: Path, dry_run: bool, reactivate: bool) -> None:
    """Import subscribers from a CSV file with a header row ("-": standard input).

    Columns: email (required), name, topics (separated by ;), timezone, status,
    hard_bounces, created_at — what `subscribers export` writes. Every row is checked;
    the good rows are stored in transactions of 500 addresses, the others reported with
    their line. An import cut short keeps what it committed: run it again to finish.
    Each change to an existing subscriber is reported; someone who unsubscribed or
    bounced stays so unless --reactivate, and removed addresses are never re-added.

    Example:

    \b
        digest subscribers import people.csv --dry-run && digest subscribers import people.csv
    """
    source: Path | TextIO = sys.stdin if str(file) == "-" else file
    report = _book(app).import_csv(source, dry_run=dry_run, reactivate=reactivate)
    for line in report.rejected:
        err.print(f"[red]rejected:[/red] {escape(line)}", markup=True)
    for line in report.notes:
        err.print(escape(line), markup=True)
    prefix = "Dry run: would import" if dry_run else "Imported"
    summary = (f"{prefix} {report.added} new subscriber{'s' * (report.added != 1)}, "
               f"update {report.updated}" if dry_run else
               f"{prefix} {report.added} new subscriber{'s' * (report.added != 1)}, updated "
               f"{report.updated}")
    summary += f", unchanged {report.unchanged}, rejected {len(report.rejected)}"
    if report.reactivated:
        summary += f"; re-activated {report.reactivated} who had unsubscribed or bounced"
    out.print(summary + (". Nothing was stored." if dry_run else "."))
    exit_by_outcome(report.added + report.updated + report.unchanged, len(report.rejected))


@subscribers.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.pass_obj
def subscribers_export(app: App, file: Path) -> None:
    """Write every subscriber to a CSV file ("-": standard output), in the columns
    `subscribers import` reads. Cells that a spreadsheet would run as a formula (starting
    with = + - @, a tab or CR) get a leading apostrophe, which import takes off again.

    Example:

    \b
        digest subscribers export backup.csv
    """
    if str(file) == "-":
        _book(app).export_csv(sys.stdout)
        return
    count = _book(app).export_csv(file)
    out.print(f"Wrote {count} subscriber{'s' * (count != 1)} to {file}")
