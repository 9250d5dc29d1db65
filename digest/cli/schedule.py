"""digest schedule: run the scheduler, or show when it will run."""

from __future__ import annotations

import click
from rich.table import Table

from ..scheduler import run_scheduler, schedule_overview
from .app import App, DigestGroup, log_to_stderr, out, print_table

__all__ = ["schedule"]


@click.group(cls=DigestGroup)
def schedule() -> None:
    """Run the scheduler, or show when it will run.

    Example:

    \b
        digest schedule show && digest schedule run
    """


@schedule.command("run")
@click.pass_obj
def schedule_run(app: App) -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C.

    Sends the edition on [schedule] cron, retries deferred mail every
    [schedule] retry_minutes, and resumes editions a killed run left unfinished.
    Logs one line per event on stderr. Only one scheduler may run per store.

    Example:

    \b
        DIGEST_SECRET_KEY=… digest --config /etc/digest/digest.toml schedule run
    """
    settings = app.settings
    _ = app.store           # refuses a store that does not exist (digest init makes it)
    log_to_stderr(settings)
    run_scheduler(settings, app.config, app.clock)


@schedule.command("show")
@click.option("--count", type=click.IntRange(1, 50), default=3, show_default=True,
              help="How many upcoming runs to list.")
@click.pass_obj
def schedule_show(app: App, count: int) -> None:
    """The next runs of each job (the edition; retries; feed polling; the bounce
    mailbox), the local-time waves, and the last editions.

    Example:

    \b
        digest schedule show --count 5
    """
    s = app.settings
    overview = schedule_overview(s, app.store, count=count)
    out.print(f"Edition: cron {s.schedule.cron!r} in {s.schedule.timezone}"
              + (" (local time: each subscriber at that hour in their own zone)"
                 if s.schedule.local_time else ""))
    for run in overview.edition_runs:
        out.print(f"  {run:%a %Y-%m-%d %H:%M %Z}")
    if overview.waves:
        out.print("Waves of the next edition:")
        for zone, at in overview.waves:
            out.print(f"  {zone:24} {at:%a %Y-%m-%d %H:%M %Z}")
    approval = s.schedule.approval
    if approval != "none":
        rule = ("goes out only once approved" if approval == "required"
                else "goes out unless an editor cancels it")
        out.print(f"Approval: {approval}: each edition is drafted {s.schedule.draft_lead} "
                  f"before its slot and mailed to {', '.join(s.digest.editors)} for review; "
                  f"it {rule}")
    out.print(f"Retries and unfinished editions: every {overview.sweep_every} minutes")
    out.print(f"Feed polling: every {overview.feeds_every} minutes, "
              + (f"{overview.feeds} feed{'s' * (overview.feeds != 1)}" if overview.feeds
                 else "no feeds yet (digest feeds add URL)"))
    b = s.bounces
    out.print(f"Bounce mailbox: every {overview.bounces_every} minutes ({b.username or '?'} "
              f"at {b.host})" if overview.bounces_every is not None
              else "Bounce mailbox: not read (no [bounces] host)")
    out.print(f"Late runs start within {s.schedule.misfire_grace} s of their time, or are "
              f"skipped")
    if overview.editions:
        table = Table("no.", "status", "created", "slot", title="Last editions")
        for number, status, created, slot in overview.editions:
            table.add_row(str(number), status, f"{created:%Y-%m-%d %H:%M}",
                          f"{slot:%Y-%m-%d %H:%M}" if slot else "manual")
        print_table(table, keep=("no.", "created", "slot"))
    else:
        out.print("No editions yet.")
