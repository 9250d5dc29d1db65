"""digest feeds: add, remove, list, fetch."""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.markup import escape
from rich.table import Table

from ..ingest.feeds import FeedBook
from .app import App, DigestGroup, err, exit_by_outcome, out, print_table, progress_bar

__all__ = ["feeds"]


@click.group(cls=DigestGroup)
def feeds() -> None:
    """Add, list, remove and fetch RSS/Atom feeds.

    Example:

    \b
        digest feeds add https://example.org/feed.xml --name Example && digest feeds fetch
    """


@feeds.command("add")
@click.argument("url")
@click.option("--name", help="Shown as the source of its articles (default: the feed's own "
                             "title, read from the feed now).")
@click.option("--topic", help="Put every item of this feed under this topic.")
@click.option("--backfill", type=click.IntRange(min=0),
              help="How many of its current items count as new ([fetch] backfill).")
@click.pass_obj
def feeds_add(app: App, url: str, name: str | None, topic: str | None,
              backfill: int | None) -> None:
    """Add a feed to poll, named after its own title unless --name is given.

    Without --name the feed is fetched once to read its title; a feed that cannot be read
    is refused with the reason (give --name to add it anyway).

    Example:

    \b
        digest feeds add https://blog.example.org/atom.xml --name "Our blog" --backfill 5
    """
    feed = FeedBook(app.store, app.settings).add(url, name, topic, backfill)
    out.print(f"Added feed {feed.name} ({feed.url}); its newest {feed.backfill} items will "
              f"count as new. Fetch it with: digest feeds fetch --name {feed.name!r}")


@feeds.command("remove")
@click.argument("name_or_url")
@click.pass_obj
def feeds_remove(app: App, name_or_url: str) -> None:
    """Stop polling a feed (its articles stay).

    Example:

    \b
        digest feeds remove "Our blog"
    """
    feed = FeedBook(app.store, app.settings).remove(name_or_url)
    out.print(f"Removed feed {feed.name} ({feed.url})")


@feeds.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_obj
def feeds_list(app: App, fmt: str) -> None:
    """Every feed with its health: last fetch, last success, last error, items added.

    Example:

    \b
        digest feeds list --format json
    """
    rows = FeedBook(app.store, app.settings).feeds()

    def when(value: datetime | None) -> str | None:
        return value.isoformat(timespec="seconds") if value else None

    if fmt == "json":
        click.echo(json.dumps([{
            "name": f.name, "url": f.url, "topic": f.topic, "from_config": f.from_config,
            "last_fetch": when(f.last_fetch_at), "last_success": when(f.last_success_at),
            "last_status": f.last_status, "last_error": f.last_error,
            "items_added": f.items_added} for f in rows], indent=2, ensure_ascii=False))
        return
    # One column for the outcome (an error with its text and the last success), so that
    # the URL keeps room at 80 columns; --format json has every field apart.
    table = Table("name", "url", "last fetch", "added", "result")
    for f in rows:
        result = f.last_status or ""
        if f.last_status == "error":
            since = f"{f.last_success_at:%Y-%m-%d %H:%M}" if f.last_success_at else "never"
            # The error names the feed's URL first: the url column shows it already.
            why = (f.last_error or "unknown").removeprefix(f"{f.url}: ")
            result = f"error: {why} (last success: {since})"
        table.add_row(f.name, f.url, f"{f.last_fetch_at:%Y-%m-%d %H:%M}" if f.last_fetch_at
                      else "never", str(f.items_added), result)
    print_table(table, keep=("last fetch", "added"), wide=("url",))


@feeds.command("fetch")
@click.option("--name", help="Only this feed (name or URL).")
@click.pass_obj
def feeds_fetch(app: App, name: str | None) -> None:
    """Fetch every feed now and store new items.

    Example:

    \b
        digest feeds fetch && digest articles list --new
    """
    book = FeedBook(app.store, app.settings)
    with progress_bar() as progress:
        task = progress.add_task("Fetching", total=None)
        # Given a report callback, the feeds module does not log: each problem is printed
        # once, below.
        results = book.fetch(name, report=lambda _r: progress.advance(task))
    for r in results:
        for problem in r.problems:
            label = "error" if r.status == "error" else "warning"
            colour = "red" if label == "error" else "yellow"
            err.print(f"[{colour}]{label}:[/{colour}] {escape(f'{r.name}: {problem}')}",
                      markup=True)
    table = Table("feed", "result", "new", "older", "too old", "known", title="Fetch")
    for r in sorted(results, key=lambda r: r.name):
        table.add_row(r.name, r.status, str(r.added), str(r.backlog), str(r.too_old),
                      str(r.duplicates))
    print_table(table, keep=("new", "older", "too old", "known"), wide=("feed",))
    added = sum(r.added for r in results)
    older = sum(r.backlog for r in results)
    too_old = sum(r.too_old for r in results)
    failed = sum(r.status == "error" for r in results)
    kept = [f"{older} older kept as back catalogue"] * bool(older) + [
        f"{too_old} too old to be news, kept for de-duplication"] * bool(too_old)
    out.print(f"Fetched {len(results)} feed{'s' * (len(results) != 1)}: {added} new "
              f"article{'s' * (added != 1)}"
              f"{' (' + '; '.join(kept) + ')' if kept else ''}, {failed} failed.")
    exit_by_outcome(len(results) - failed, failed)
