"""digest suppressions: list, add, remove, import, export."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ..audience.suppressions import SuppressionBook
from ..errors import InputError
from ..store.models import SuppressionReason
from .app import App, DigestGroup, err, exit_by_outcome, out, print_table

__all__ = ["suppressions"]

_REASONS = [r.value for r in SuppressionReason]


@click.group(cls=DigestGroup)
def suppressions() -> None:
    """The addresses never to mail: unsubscribed, complained, bounced, erased, manual.

    Example:

    \b
        digest suppressions add boss@example.org
    """


@suppressions.command("list")
@click.option("--reason", type=click.Choice(_REASONS), help="Only entries of this reason.")
@click.pass_obj
def suppressions_list(app: App, reason: str | None) -> None:
    """Every suppressed address with its reason, source and time (erased ones only as a
    hash).

    Example:

    \b
        digest suppressions list --reason complained
    """
    entries = SuppressionBook(app.store, app.settings).entries(
        SuppressionReason(reason) if reason else None)
    if not entries:
        out.print("The suppression list is empty" + (f" for {reason}" if reason else ""))
        return
    table = Table("address", "reason", "since", "source")
    for e in entries:
        table.add_row(e.email_key, e.reason.value, e.created_at.strftime("%Y-%m-%d %H:%M"),
                      escape(e.source))
    print_table(table, keep=("address", "reason", "since"), wide=("source",))
    out.print(f"{len(entries)} suppressed")


@suppressions.command("add")
@click.argument("emails", nargs=-1, required=True)
@click.option("--reason", type=click.Choice(["manual", "unsubscribed", "complained",
                                             "hard-bounced", "bounced"]),
              default="manual", show_default=True)
@click.pass_obj
def suppressions_add(app: App, emails: tuple[str, ...], reason: str) -> None:
    """Never mail these addresses (whether or not they are subscribers).

    Example:

    \b
        digest suppressions add boss@example.org rival@example.com
    """
    book = SuppressionBook(app.store, app.settings)
    failed = 0
    for email in emails:
        try:
            changed = book.add(email, SuppressionReason(reason))
        except InputError as exc:       # one bad address never takes the others down
            err.print(f"Error: {exc}")
            failed += 1
            continue
        out.print(f"Suppressed {email.strip()} ({reason})" if changed
                  else f"{email.strip()} was suppressed already")
    exit_by_outcome(len(emails) - failed, failed)


@suppressions.command("remove")
@click.argument("email")
@click.pass_obj
def suppressions_remove(app: App, email: str) -> None:
    """Lift an address's suppression (a complaint or an erasure only with the person's
    new consent). The subscriber, if any, stays as they are: they sign up again, or
    `digest subscribers activate EMAIL`.

    Example:

    \b
        digest suppressions remove ada@example.org
    """
    found = SuppressionBook(app.store, app.settings).remove(email)
    out.print(f"Lifted the suppression of {email.strip()} ({found.reason.value})")


@suppressions.command("import")
@click.argument("file", type=click.Path(exists=False, dir_okay=False, path_type=Path))
@click.pass_obj
def suppressions_import(app: App, file: Path) -> None:
    """Add the addresses of a CSV file: an export, or a provider's suppression list.

    What `export` writes (email, reason, source, created_at: kept as they were), a
    provider's list with a header naming its e-mail column and maybe a reason or type
    ("Bounce", "Spam Report", "Unsubscribe" …), or bare addresses one per line.

    Example:

    \b
        digest suppressions import suppressions.csv
    """
    report = SuppressionBook(app.store, app.settings).import_csv(file)
    for line in report.notes:
        err.print(line)
    for line in report.rejected:
        err.print(line)
    out.print(f"{report.added} added, {report.unchanged} already there, "
              f"{len(report.rejected)} rejected")
    if report.hashes:
        err.print(f"{report.hashes} erased address(es) kept as their keyed hash: they match "
                  f"only in a store signed with the same secret key (DIGEST_SECRET_KEY or "
                  f"secret.key) as the one they were exported from")
    exit_by_outcome(report.added + report.unchanged, len(report.rejected))


@suppressions.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.pass_obj
def suppressions_export(app: App, file: Path) -> None:
    """Write the list as CSV (email, reason, source, created_at; '-' for standard output).

    Example:

    \b
        digest suppressions export suppressions.csv
    """
    book = SuppressionBook(app.store, app.settings)
    if str(file) == "-":
        book.export_csv(sys.stdout)
        return
    try:
        with file.open("w", encoding="utf-8", newline="") as fh:
            n = book.export_csv(fh)
    except OSError as exc:
        raise InputError(f"cannot write {file}: {exc.strerror or exc}") from None
    err.print(f"Wrote {n} suppressed address(es) to {file}")
