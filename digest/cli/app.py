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

__all__ = ["EXIT_INTERRUPTED", "EXIT_PARTLY", "App", "DigestGroup", "confirm_irreversible",
           "delivery_table", "err", "exit_by_outcome", "log_to_stderr", "out", "print_steps",
           "print_table", "progress_bar", "yes_option"]

# The exit codes, one rule for every command: 0 all done; 1 nothing done (an error, or
# every record failed); 3 partly done (some records or recipients failed, the others went
# through: what went through is kept); 130 interrupted (Ctrl-C). 2 is click's: a usage
# error.
EXIT_PARTLY = 3
EXIT_INTERRUPTED = 130


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
    """Expected failures (DigestError) become one "Error: …" line and exit code 1; Ctrl-C
    one "Interrupted." line and exit code 130 (click's own "Aborted!" with 1 read like a
    failure), also at a question (click.confirm turns Ctrl-C into Abort)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _interrupted()
        except click.Abort as exc:
            if not isinstance(exc.__context__, KeyboardInterrupt):
                raise           # a question answered "no" (confirm(abort=True)): exit 1
            _interrupted()
        except DigestError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            from ..store.db import StoreUnavailable

            if not isinstance(exc, StoreUnavailable):
                raise
            # The database went away or stayed locked past the busy timeout.
            raise click.ClickException(f"the store cannot be used right now: {exc.orig}; "
                                       f"check [store] url and retry") from None


def _interrupted() -> None:
    err.print("Interrupted.")
    sys.exit(EXIT_INTERRUPTED)


class _PartlyDone(click.ClickException):
    """An "Error: …" line after some of the work was done."""

    exit_code = EXIT_PARTLY


def exit_by_outcome(done: int, failed: int, error: str | None = None) -> None:
    """End a command that handles many records (rows, files, feeds, recipients,
    messages) by the one rule: nothing failed → carry on (exit 0); some failed and none
    was done → 1; some failed and others were done → EXIT_PARTLY (3). error, when given,
    is printed as the "Error: …" line of a run that stopped early."""
    code = 0 if not failed else EXIT_PARTLY if done else 1
    if error is not None:
        raise (_PartlyDone if code == EXIT_PARTLY else click.ClickException)(error)
    if code:
        sys.exit(code)


def print_table(table: Table, *, keep: Sequence[str] = (), wide: Sequence[str] = (),
                fold: Sequence[str] = (), console: Console = out) -> None:
    """Print a table one line per row that fits the terminal without hiding what
    identifies a row. The columns named in keep (ids, numbers, dates) always show whole;
    the others keep their natural width while there is room. When there is not, the
    short ones give way first down to a common cap, and the columns named in wide (a
    title, a URL) take the room that is left; a value too long for its column ends in
    "…", never wraps into chunks (the json/csv formats carry every value whole). The
    columns named in fold are wide ones whose end tells rows apart (file paths): they
    wrap onto a second line instead of losing their end."""
    columns = table.columns
    if not columns:
        console.print(table)
        return
    natural = [max([cell_len(str(c)) for c in col.cells] + [cell_len(str(col.header))])
               for col in columns]
    room = max(console.width - _table_frame(table), len(columns))
    widths = _fit_widths(natural, [col.header in keep for col in columns],
                         [col.header in (*wide, *fold) for col in columns], room)
    for column, width in zip(columns, widths, strict=True):
        folds = column.header in fold
        column.no_wrap = not folds
        column.overflow = "fold" if folds else "ellipsis"
        column.width = width
    # When the kept columns alone do not fit, the table is wider than the terminal (which
    # wraps the line) rather than cutting what identifies a row.
    if sum(widths) + _table_frame(table) > console.width:
        table.width = sum(widths) + _table_frame(table)
    console.print(table)


# The narrowest a column other than a kept one gets: a few letters and the "…".
_NARROWEST = 6
# A wide column gets at least this much before the short ones give way below their
# natural width (a title of 24 characters still says what the article is).
_WIDE_FIRST = 24


def _table_frame(table: Table) -> int:
    """The characters a table's borders and padding take on each line."""
    top, right, bottom, left = table.padding
    count = len(table.columns)
    pad = count * (left + right)
    if not table.pad_edge:
        pad -= left + right
    rules = 0 if table.box is None else (count - 1) + (2 if table.show_edge else 0)
    return pad + rules


def _fit_widths(natural: list[int], kept: list[bool], wide: list[bool], room: int
                ) -> list[int]:
    """Column widths that add up to at most room (when the kept columns allow it): kept
    columns at their natural width; the others at theirs when everything fits, else the
    short ones capped at the highest common cap that leaves the wide ones _WIDE_FIRST
    (or their natural width, if less), and the wide ones sharing what is left."""
    if sum(natural) <= room:
        return natural
    fixed = sum(n for n, k in zip(natural, kept, strict=True) if k)
    short = [i for i, n in enumerate(natural) if not kept[i] and not wide[i]]
    wides = [i for i, n in enumerate(natural) if not kept[i] and wide[i]]
    if not wides:           # nothing named wide: the longest columns give way first
        wides, short = short, []
    # The wide columns first get three fifths of the room the kept ones leave (at least
    # _WIDE_FIRST each, or their natural width if less); the short ones share the rest.
    flexible = room - fixed
    floor = sum(min(natural[i], max(_WIDE_FIRST, flexible * 3 // 5 // len(wides)))
                for i in wides)
    cap = max([natural[i] for i in short] + [_NARROWEST])
    while cap > _NARROWEST and fixed + floor + sum(min(natural[i], cap) for i in short) > room:
        cap -= 1
    widths = list(natural)
    for i in short:
        widths[i] = min(natural[i], cap)
    left = max(room - fixed - sum(widths[i] for i in short), _NARROWEST * len(wides))
    # Water-filling: the room left is shared evenly, a column needing less than its share
    # gives the rest to the others.
    pending = sorted(wides, key=lambda i: natural[i])
    while pending:
        share = left // len(pending)
        i = pending.pop(0)
        widths[i] = max(min(natural[i], share), _NARROWEST)
        left -= widths[i]
    return widths


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
