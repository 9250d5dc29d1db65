"""What every command shares: the App (settings and store, loaded on first use), the
group class that turns expected failures into one "Error: …" line, the two consoles, and
the small printers more than one command group uses."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..clock import Clock, system_clock
from ..config import Settings, find_config_file, load_settings
from ..errors import ConfigError, DigestError

if TYPE_CHECKING:       # imported where used: `digest --help` loads none of them
    from ..checks import Step
    from ..content.topics import TopicClassifier
    from ..delivery.runner import SendReport
    from ..store.db import Store

__all__ = ["App", "DigestGroup", "confirm_irreversible", "delivery_table", "err",
           "log_to_stderr", "out", "print_steps", "print_table", "progress_bar", "yes_option"]


# markup=False: printed values (paths, titles, addresses) may contain [brackets].
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class App:
    """What commands share: settings and the store, loaded on first use, and the clock
    every decision of the command reads (the machine's, unless the caller handed one)."""

    def __init__(self, config: str | None, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or system_clock()

    @cached_property
    def settings(self) -> Settings:
        """The config; outside a digest folder (no --config, no $DIGEST_CONFIG, no
        ./digest.toml) a refusal, as git refuses outside a repository — running on
        defaults would quietly start an empty store wherever the command was typed. A
        store named in the environment (DIGEST_STORE__URL) is a configuration too."""
        if find_config_file(self.config) is None and not os.environ.get("DIGEST_STORE__URL"):
            raise ConfigError(f"no digest.toml in {Path.cwd()}; run `digest init` here, "
                              f"or pass --config PATH (or set DIGEST_CONFIG)")
        settings = load_settings(self.config)
        for notice in settings.notices:
            err.print(f"Note: {notice}")
        return settings

    @cached_property
    def store(self) -> Store:
        """The store of the config, closed when the command ends; only `digest init` (and
        the demo) create one, so a copied config never starts an empty store."""
        from ..store.db import Store

        store = Store.from_settings(self.settings, self.clock, create=False)
        click.get_current_context().call_on_close(store.close)
        return store

    @cached_property
    def classifier(self) -> TopicClassifier:
        """The config's topics: what names a topic, and which topic an article is under."""
        from ..content.topics import TopicClassifier

        return TopicClassifier.from_settings(self.settings)


class DigestGroup(click.Group):
    """Expected failures (DigestError) become one "Error: …" line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DigestError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            from ..store.db import StoreUnavailable

            if not isinstance(exc, StoreUnavailable):
                raise
            # The database went away or stayed locked past the busy timeout.
            raise click.ClickException(f"the store cannot be used right now: {exc.orig}; "
                                       f"check [store] url and retry") from None


def print_table(table: Table, *, keep: Sequence[str] = (), fold: Sequence[str] = (),
                console: Console = out) -> None:
    """Print a table that fits the terminal without hiding what identifies a row: the
    columns named in keep (numbers, dates, addresses) are never cut or wrapped, those in
    fold (paths, URLs) wrap where needed instead of ending in "…"; the rest give way."""
    for column in table.columns:
        if column.header in keep:
            column.no_wrap = True
            column.min_width = max([cell_len(str(c)) for c in column.cells] +
                                   [cell_len(str(column.header))])
        elif column.header in fold:
            column.overflow = "fold"
    console.print(table)


def yes_option(command: Any) -> Any:
    """The --yes flag of a command that asks before it destroys something."""
    return click.option("--yes", "-y", is_flag=True,
                        help="Do it without asking (needed when not at a terminal).")(command)


def confirm_irreversible(what: str, yes: bool) -> None:
    """Ask before an irreversible change, unless --yes. Without a terminal to ask at
    (a script, a pipe, cron) it refuses: a typo there must not erase anything."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.ClickException(f"{what} cannot be undone; not at a terminal to ask, so "
                                   f"nothing was changed: add --yes to do it")
    if not click.confirm(f"{what[:1].upper()}{what[1:]} cannot be undone. Go on?",
                         default=False, err=True):
        raise click.ClickException("nothing was changed")


def progress_bar(console: Console = err) -> Progress:
    """A progress bar (on stderr unless told) that shows only in a terminal and
    leaves no trace when done."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True,
                    disable=not console.is_terminal)


def print_steps(steps: Sequence[Step], console: Console = out) -> None:
    """One line per step; exit 1 when any failed."""
    for step in steps:
        mark = "[red]✗[/red]" if not step.ok else "[yellow]![/yellow]" if step.warning \
            else "[green]✓[/green]"
        console.print(f"{mark} {escape(step.name)}: {escape(step.detail)}", markup=True,
                  highlight=False)
    if not all(step.ok for step in steps):
        sys.exit(1)


def delivery_table(report: SendReport) -> Table:
    """What a send run did and where the ledger stands, by delivery state."""
    title = f"Edition {report.edition}" if report.edition else "Deferred deliveries"
    table = Table("", "sent", "deferred", "failed", "skipped", "pending", title=title)
    run = report.this_run
    table.add_row("this run", *(str(run.get(k, 0)) for k in
                                ("sent", "deferred", "failed", "skipped", "pending")))
    c = report.counts
    table.add_row("ledger", *(str(c.get(k, 0)) for k in
                              ("sent", "deferred", "failed", "skipped", "pending")))
    return table


def log_to_stderr(settings: Settings) -> None:
    """One line per event on stderr, at [schedule] log_level."""
    logging.basicConfig(stream=sys.stderr, level=settings.schedule.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Their INFO lines repeat ours ("Added job", "Running job", "Context impl").
    quiet = max(logging.WARNING, logging.getLevelName(settings.schedule.log_level))
    for name in ("apscheduler", "alembic"):
        logging.getLogger(name).setLevel(quiet)
