"""digest articles: import, list, remove, set-topic, pin, retopic."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ..errors import InputError
from ..ingest import import_files, retopic
from ..ingest.writer import fresh_from
from ..store.articles import list_articles, remove_articles, set_pinned, set_topic
from ..store.models import Article
from .app import App, DigestGroup, err, exit_by_outcome, out, print_table, progress_bar

__all__ = ["articles"]


@click.group(cls=DigestGroup)
def articles() -> None:
    """Import, list, remove, pin and re-topic articles.

    Example:

    \b
        digest articles import feeds/ articles.json && digest articles list --new
    """


def _configured_topic(app: App, topic: str, label: str = "") -> str:
    """The configured spelling of `topic` (the topic rule's `known`); an InputError
    naming the choices (the option it came from as `label`) when it is no configured
    topic."""
    known = app.classifier.known(topic)
    if known is None:
        raise InputError(f"{label}{topic!r} is not a configured topic; choose one of "
                         f"{', '.join(app.classifier.names)}")
    return known


@articles.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--topic", help="Put every imported article under this topic.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M"]),
              help="Articles published from this date (UTC) on are news, whatever [ingest] "
                   "max_age_days says (for this import only).")
@click.pass_obj
def articles_import(app: App, paths: Sequence[Path], topic: str | None,
                    since: datetime | None) -> None:
    """Import articles from .json/.jsonl, .txt, .html and .xml/.rss/.atom files.

    Directories are read recursively. Duplicates (same canonical URL, or same
    title and text) are skipped and counted. Articles dated more than [ingest]
    max_age_days ago are kept, so duplicates are recognised, but counted as too
    old and offered to no edition.

    Example:

    \b
        digest articles import articles.json page.html feeds/ --topic Science
        digest articles import archive.json --since 2026-01-01
    """
    topic = _configured_topic(app, topic, "--topic ") if topic else None
    cutoff = fresh_from(app.settings.ingest, app.clock.now(),
                        since.replace(tzinfo=UTC) if since is not None else None)
    with progress_bar() as progress:
        task = progress.add_task("Importing", total=None)
        report = import_files(app.store.writes, app.classifier, app.clock, paths,
                              topic=topic, fresh_from=cutoff,
                              progress=lambda _r: progress.advance(task))
    for line in report.problems:
        err.print(f"[red]error:[/red] {escape(line)}", markup=True)
    for line in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(line)}", markup=True)
    if len(report.files) > 1:
        table = Table("file", "added", "too old", "duplicates", "problems", title="Import")
        for f in report.files:
            table.add_row(str(f.path), str(f.added - f.too_old), str(f.too_old),
                          str(f.duplicates), str(len(f.problems)))
        print_table(table, keep=("added", "too old", "duplicates", "problems"),
                    fold=("file",))
    new = report.added - report.too_old
    summary = f"Imported {new} new article{'s' * (new != 1)}, "
    if report.too_old:
        limit = (f"published before {cutoff:%Y-%m-%d}" if cutoff is not None else "")
        summary += (f"kept {report.too_old} too old to be news ({limit}; offered to no "
                    f"edition), ")
    summary += f"skipped {report.duplicates} duplicate{'s' * (report.duplicates != 1)}"
    if report.now_news:
        summary += (f" ({report.now_news} of them stored too old before: news now, for the "
                    f"next edition)")
    if report.problems:
        summary += f", {len(report.problems)} problem{'s' * (len(report.problems) != 1)}"
    if report.added == 0 and report.duplicates and not report.problems \
            and not report.now_news:
        summary += " (nothing new: these articles are already in the store)"
    out.print(summary + ".")
    # Duplicates are records handled as they should be: only problems failed.
    exit_by_outcome(report.added + report.duplicates, len(report.problems))


@articles.command("remove")
@click.argument("ids", nargs=-1, required=True, type=int)
@click.pass_obj
def articles_remove(app: App, ids: Sequence[int]) -> None:
    """Remove articles by id (see: digest articles list); all or none.

    A removed article never goes into an edition, and comes back neither from a
    re-import nor from a feed (it is still counted as a duplicate). An article already
    in an edition stays (discard that edition first).

    Example:

    \b
        digest articles remove 12 15
    """
    titles = remove_articles(app.store, list(dict.fromkeys(ids)))
    for article_id, title in zip(dict.fromkeys(ids), titles, strict=True):
        out.print(f"Removed article {article_id}: {title}")


@articles.command("set-topic")
@click.argument("article_id", metavar="ID", type=int)
@click.argument("topic")
@click.pass_obj
def articles_set_topic(app: App, article_id: int, topic: str) -> None:
    """Put article ID under TOPIC (one of the configured topics).

    An article already in an edition keeps its topic (discard that edition first).

    Example:

    \b
        digest articles set-topic 12 Science
    """
    known = _configured_topic(app, topic)
    title = set_topic(app.store, article_id, known)
    out.print(f"Article {article_id} is now under {known}: {title}")


@articles.command("pin")
@click.argument("article_id", metavar="ID", type=int)
@click.option("--unpin", is_flag=True, help="Take the pin off again.")
@click.pass_obj
def articles_pin(app: App, article_id: int, unpin: bool) -> None:
    """Pin article ID: its story leads its topic in the coming edition.

    Example:

    \b
        digest articles pin 12
        digest articles pin 12 --unpin
    """
    title = set_pinned(app.store, article_id, not unpin)
    out.print(f"Article {article_id} is {'no longer ' * unpin}pinned: {title}")


@articles.command("retopic")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M"]),
              help="Every article added since this date (UTC), not only those no edition "
                   "took yet.")
@click.pass_obj
def articles_retopic(app: App, since: datetime | None) -> None:
    """Choose the topics of new articles again, after [[topics]] or [grouping] changed.

    Topics someone chose (in the article's file, with --topic or set-topic, or the
    feed's) stay; every other article goes where an import would put it now, with
    what the topics learned from those choices.

    Example:

    \b
        digest articles retopic
        digest articles retopic --since 2026-11-01
    """
    since_utc = since.replace(tzinfo=UTC) if since is not None else None
    with progress_bar() as bar:
        task = bar.add_task("Choosing topics", total=None)
        report = retopic(app.store, app.classifier, since_utc,
                         progress=lambda n: bar.advance(task, n))
    learned = (f" (learned from {report.examples} example"
               f"{'s' * (report.examples != 1)})") if report.examples else ""
    out.print(f"Looked at {report.seen} article{'s' * (report.seen != 1)}: "
              f"{report.changed} changed topic{learned}.")


def _article_json(a: Article) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None
    return {
        "id": a.id, "title": a.title, "url": a.url, "canonical_url": a.canonical_url,
        "source": a.source_name, "author": a.author, "published_at": iso(a.published_at),
        "date_source": a.date_source, "date_clamped": a.date_clamped, "too_old": a.too_old,
        "backlog": a.is_backlog,
        "added_at": iso(a.added_at), "topic": a.topic, "topic_reason": a.topic_reason,
        "topic_confidence": a.topic_confidence, "pinned": a.pinned, "tags": a.tags,
        "summary": a.summary,
        "body": a.body, "body_html": a.body_html, "content_hash": a.content_hash,
        "edition_id": a.edition_id, "removed_at": iso(a.removed_at),
    }


@articles.command("list")
@click.option("--new", "new_only", is_flag=True,
              help="Only the articles the next edition would offer.")
@click.option("--old", "old_only", is_flag=True,
              help="Only those no edition holds that came in too old to be news (an editor "
                   "can add one: digest editions add N ARTICLE).")
@click.option("--topic", help="Only this topic.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--limit", type=click.IntRange(min=1),
              help="At most this many (the newest published).")
@click.option("--removed", is_flag=True,
              help="Only removed articles (kept so that they are not imported again).")
@click.pass_obj
def articles_list(app: App, new_only: bool, old_only: bool, topic: str | None, fmt: str,
                  limit: int | None, removed: bool) -> None:
    """List stored articles, newest first by publication date (undated ones last, newest
    import first); removed ones only with --removed.

    Example:

    \b
        digest articles list --new --topic AI --format json
    """
    if new_only and old_only:
        raise click.UsageError("--new and --old do not go together")
    rows = list_articles(app.store, new_only=new_only, old_only=old_only, topic=topic,
                         limit=limit, removed=removed)
    if fmt == "json":
        click.echo(json.dumps([_article_json(a) for a in rows], indent=2, ensure_ascii=False))
        return
    table = Table("id", "topic", "title", "source", "published", "edition")
    for a in rows:
        table.add_row(str(a.id), a.topic, a.title, a.source_name or "",
                      f"{a.published_at:%Y-%m-%d}" if a.published_at else "",
                      "removed" if a.removed_at else str(a.edition_id) if a.edition_id
                      else "too old" if a.too_old else "older" if a.is_backlog else "new")
    print_table(table, keep=("id", "published", "edition"), wide=("title",))
    out.print(f"{len(rows)} article{'s' * (len(rows) != 1)}")
