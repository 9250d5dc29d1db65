"""The `digest` command. Thin: parse, call a service, print."""

from __future__ import annotations

import json
import shutil
import sys
import webbrowser
from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import Settings, load_settings
from .errors import DigestError, InputError
from .ingest import import_files
from .models import Article, utcnow
from .preview import render_preview
from .resources import package_resource
from .store import Store
from .topics import TopicClassifier

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class App:
    """What commands share: settings and the store, loaded on first use."""

    def __init__(self, config: str | None) -> None:
        self.config = config

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config)

    @cached_property
    def store(self) -> Store:
        return Store.from_settings(self.settings)

    @cached_property
    def classifier(self) -> TopicClassifier:
        return TopicClassifier(self.settings.topics, self.settings.digest.catch_all_topic)


class DigestGroup(click.Group):
    """Expected failures (DigestError) become one "Error: …" line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DigestError as exc:
            raise click.ClickException(str(exc)) from None


def progress_bar(console: Console = err) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True,
                    disable=not console.is_terminal)


@click.group(cls=DigestGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", metavar="PATH", envvar=None,
              help="Config file (default: $DIGEST_CONFIG, then ./digest.toml).")
@click.version_option(package_name="digest")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Build a topic-grouped digest of new articles and mail it to subscribers.

    Example:

        digest init && digest articles import articles.json && digest preview
    """
    ctx.obj = App(config)


# --- init -------------------------------------------------------------------------------

@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing digest.toml.")
def init(directory: Path, force: bool) -> None:
    """Write DIRECTORY/digest.toml from the example and create the store.

    Example:

        digest init newsletter && cd newsletter && digest preview
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "digest.toml"
    if target.exists() and not force:
        raise InputError(f"{target} already exists; edit it, or run digest init --force to "
                         f"replace it")
    shutil.copyfile(package_resource("config.example.toml"), target)
    settings = load_settings(target)
    Store.from_settings(settings).close()
    out.print(f"Wrote {target} and created the store at {settings.store_url}")
    out.print("Next: digest articles import FILE…, then digest preview")


# --- articles ---------------------------------------------------------------------------

@cli.group(cls=DigestGroup)
def articles() -> None:
    """Import and list articles.

    Example:

        digest articles import feeds/ articles.json && digest articles list --new
    """


@articles.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--topic", help="Put every imported article under this topic.")
@click.pass_obj
def articles_import(app: App, paths: Sequence[Path], topic: str | None) -> None:
    """Import articles from .json/.jsonl, .txt, .html and .xml/.rss/.atom files.

    Directories are read recursively. Duplicates (same canonical URL, or same
    title and text) are skipped and counted.

    Example:

        digest articles import articles.json page.html feeds/ --topic Science
    """
    classifier = app.classifier
    if topic and not classifier.known(topic):
        raise InputError(f"--topic {topic!r} is not a configured topic; choose one of "
                         f"{', '.join(app.settings.topic_names)}")
    topic = classifier.known(topic) if topic else None
    with progress_bar() as progress:
        task = progress.add_task("Importing", total=None)
        report = import_files(app.store.sessions, classifier, paths, topic=topic,
                              progress=lambda _r: progress.advance(task))
    for line in report.problems:
        err.print(f"[red]error:[/red] {line}", markup=True, highlight=False)
    for line in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {line}", markup=True)
    if len(report.files) > 1:
        table = Table("file", "added", "duplicates", "problems", title="Import")
        for f in report.files:
            table.add_row(str(f.path), str(f.added), str(f.duplicates), str(len(f.problems)))
        out.print(table)
    summary = (f"Imported {report.added} new article{'s' * (report.added != 1)}, "
               f"skipped {report.duplicates} duplicate{'s' * (report.duplicates != 1)}")
    if report.problems:
        summary += f", {len(report.problems)} problem{'s' * (len(report.problems) != 1)}"
    if report.added == 0 and report.duplicates and not report.problems:
        summary += " (nothing new: these articles are already in the store)"
    out.print(summary + ".")
    if report.added == 0 and report.problems:
        sys.exit(1)


def _article_json(a: Article) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None
    return {
        "id": a.id, "title": a.title, "url": a.url, "canonical_url": a.canonical_url,
        "source": a.source_name, "author": a.author, "published_at": iso(a.published_at),
        "added_at": iso(a.added_at), "topic": a.topic, "tags": a.tags, "summary": a.summary,
        "body": a.body, "body_html": a.body_html, "content_hash": a.content_hash,
        "edition_id": a.edition_id,
    }


@articles.command("list")
@click.option("--new", "new_only", is_flag=True, help="Only articles no edition has taken.")
@click.option("--topic", help="Only this topic.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many (newest first).")
@click.pass_obj
def articles_list(app: App, new_only: bool, topic: str | None, fmt: str,
                  limit: int | None) -> None:
    """List stored articles, newest first.

    Example:

        digest articles list --new --topic AI --format json
    """
    rows = app.store.articles(new_only=new_only, topic=topic, limit=limit)
    if fmt == "json":
        click.echo(json.dumps([_article_json(a) for a in rows], indent=2, ensure_ascii=False))
        return
    table = Table("id", "topic", "title", "source", "published", "edition")
    for a in rows:
        table.add_row(str(a.id), a.topic, a.title, a.source_name or "",
                      f"{a.published_at:%Y-%m-%d}" if a.published_at else "",
                      str(a.edition_id or "new"))
    out.print(table)
    out.print(f"{len(rows)} article{'s' * (len(rows) != 1)}")


# --- preview ----------------------------------------------------------------------------

@cli.command()
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it (default: preview.html, or preview.txt with --text).")
@click.option("--text", is_flag=True, help="Write the plain-text part instead of the HTML.")
@click.option("--open", "open_browser", is_flag=True, help="Open the result in a browser.")
@click.option("--topic", "topics", multiple=True, help="Preview one subscriber's topics.")
@click.pass_obj
def preview(app: App, out_path: Path | None, text: bool, open_browser: bool,
            topics: Sequence[str]) -> None:
    """Render the coming edition without creating it, and write it to a file.

    Example:

        digest preview --out digest.html --open
    """
    result = render_preview(app.store, app.settings, utcnow(), topics=list(topics))
    path = out_path or Path("preview.txt" if text else "preview.html")
    try:
        path.write_text(result.text if text else result.html, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
    out.print(f"Wrote {path}: edition {result.number}, {result.articles} article"
              f"{'s' * (result.articles != 1)} in {result.topics} topic"
              f"{'s' * (result.topics != 1)}.")
    out.print(f"Subject: {result.subject}")
    if open_browser:
        webbrowser.open(path.resolve().as_uri())


def main() -> None:
    cli(prog_name="digest")
