"""digest editions: list, show, discard."""

from __future__ import annotations

import click
from rich.table import Table

from ..delivery.editions import discard_edition, edition_detail, edition_summaries
from .app import App, DigestGroup, out, print_table

__all__ = ["editions"]


@click.group(cls=DigestGroup)
def editions() -> None:
    """List editions and show one with its delivery counts.

    Example:

    \b
        digest editions list && digest editions show 1
    """


@editions.command("list")
@click.pass_obj
def editions_list(app: App) -> None:
    """Every edition with its state and delivery counts.

    Example:

    \b
        digest editions list
    """
    table = Table("no.", "created (UTC)", "status", "articles", "deliveries")
    for row in edition_summaries(app.store):
        # Only the states that occur, each named: fits 80 columns, hides none.
        deliveries = ", ".join(f"{n} {state}" for state, n in row.counts.items() if n)
        table.add_row(str(row.number), f"{row.created_at:%Y-%m-%d %H:%M}", row.status,
                      str(row.articles), deliveries or "none")
    print_table(table, keep=("no.", "created (UTC)", "status", "articles"))


@editions.command("discard")
@click.argument("number", type=int)
@click.pass_obj
def editions_discard(app: App, number: int) -> None:
    """Delete edition N, which nobody received, and return its articles to the pool.

    Refused once any message of the edition was sent.

    Example:

    \b
        digest editions discard 4
    """
    returned = discard_edition(app.store, number)
    out.print(f"Discarded edition {number}; its {returned} article"
              f"{'s' * (returned != 1)} will be in the next edition.")


# Gmail's and Yahoo's bulk-sender rules (2024): complaints under 0.3 % of delivered mail.
_COMPLAINT_LIMIT = 0.003


def _reports_line(reports: dict[str, int], sent: int) -> str:
    """Bounces and complaints that came back about the edition, the complaint rate
    against what mailbox providers allow."""
    if not reports:
        return "Bounces and complaints: none so far"
    line = "Bounces and complaints: " + ", ".join(f"{n} {kind}" for kind, n in
                                                  sorted(reports.items()))
    complaints = reports.get("complaint", 0)
    if sent:
        rate = complaints / sent
        line += (f"; complaint rate {rate:.2%} of {sent} sent"
                 + (" (above the 0.3% Gmail and Yahoo allow)" if rate > _COMPLAINT_LIMIT
                    else ""))
    return line


@editions.command("show")
@click.argument("number", type=int)
@click.pass_obj
def editions_show(app: App, number: int) -> None:
    """One edition: subject, articles per topic, deliveries, recent failures.

    Example:

    \b
        digest editions show 3
    """
    detail = edition_detail(app.store, number)
    out.print(f"Edition {detail.number}: {detail.subject}")
    out.print(f"Status {detail.status}; created {detail.created_at:%Y-%m-%d %H:%M} UTC; "
              f"cut-off {detail.cutoff:%Y-%m-%d %H:%M} UTC"
              + (f"; finished {detail.finished_at:%Y-%m-%d %H:%M} UTC"
                 if detail.finished_at else ""))
    out.print("Articles: " + ", ".join(f"{t} {n}" for t, n in detail.topics))
    out.print("Deliveries: " + ", ".join(f"{k} {v}" for k, v in detail.counts.items()))
    out.print(_reports_line(detail.reports, detail.counts.get("sent", 0)))
    for email, status, error in detail.problems:
        out.print(f"  {status:8} {email}: {error}")
