"""The `digest` command. Thin: parse, call a service, print."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import sys
import threading
import webbrowser
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

import click
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import OperationalError

from ..audience.subscribers import SubscriberBook, spreadsheet_safe
from ..audience.tokens import create_secret_file
from ..checks import Step, check_rendered, check_setup
from ..config import Settings, find_config_file, load_settings
from ..content.topics import TopicClassifier
from ..delivery.reports import edition_detail, edition_summaries
from ..delivery.sender import (
    NoRecipients,
    SendReport,
    discard_edition,
    dry_run_edition,
    enqueue_edition,
    has_unfinished_edition,
    next_retry,
    plan_edition,
    reopen_failed,
    retry_deferred,
    run_worker,
    send_edition,
    send_test_copy,
)
from ..demo import run_demo
from ..errors import ConfigError, DigestError, EditionPaused, InputError, NothingToSend
from ..ingest import import_files
from ..ingest.feeds import FeedBook
from ..mail.preview import render_preview
from ..mail.transport import make_transport
from ..resources import package_resource
from ..scheduler import run_scheduler, schedule_overview
from ..store.db import open_engine, upgrade_schema
from ..store.ledger import Store
from ..store.models import Article, Subscriber, SubscriberStatus, utcnow
from ..web.app import WebServer

# markup=False: printed values (paths, titles, addresses) may contain [brackets].
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class App:
    """What commands share: settings and the store, loaded on first use."""

    def __init__(self, config: str | None) -> None:
        self.config = config

    @cached_property
    def settings(self) -> Settings:
        """The config; outside a digest folder (no --config, no $DIGEST_CONFIG, no
        ./digest.toml) a refusal, as git refuses outside a repository — running on
        defaults would quietly start an empty store wherever the command was typed. A
        store named in the environment (DIGEST_STORE__URL) is a configuration too."""
        if find_config_file(self.config) is None and not os.environ.get("DIGEST_STORE__URL"):
            raise ConfigError(f"no digest.toml in {Path.cwd()}; run `digest init` here, "
                              f"or pass --config PATH (or set DIGEST_CONFIG)")
        return load_settings(self.config)

    @cached_property
    def store(self) -> Store:
        store = Store.from_settings(self.settings)
        click.get_current_context().call_on_close(store.close)
        return store

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
        except OperationalError as exc:
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
@click.option("--force", is_flag=True,
              help="Overwrite an existing digest.toml (never the secret key).")
def init(directory: Path, force: bool) -> None:
    """Write DIRECTORY/digest.toml from the example, create the store, and write a random
    secret key beside the store (secret.key, mode 0600) that signs the links in mail
    unless DIGEST_SECRET_KEY is set. An existing key is never replaced; in a folder that
    has a digest.toml but no key, init only writes the key.

    Example:

        digest init newsletter && cd newsletter && digest preview
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "digest.toml"
    if target.exists() and not force:
        settings = load_settings(target)
        if create_secret_file(settings.secret_file):
            out.print(f"Wrote the secret key {settings.secret_file}; kept {target}")
            return
        raise InputError(f"{target} already exists; edit it, or run digest init --force to "
                         f"replace it")
    shutil.copyfile(package_resource("config.example.toml"), target)
    settings = load_settings(target)
    engine = open_engine(settings.store_url)
    try:
        upgrade_schema(engine)
    finally:
        engine.dispose()
    wrote_key = create_secret_file(settings.secret_file)
    out.print(f"Wrote {target} and created the store at {settings.store_url}")
    if wrote_key:
        out.print(f"Wrote the secret key {settings.secret_file} (keep it private; it signs "
                  f"the links in every email)")
    out.print("Next: digest articles import FILE…, then digest preview")


@cli.group(cls=DigestGroup)
def db() -> None:
    """The store's schema.

    Example:

        digest db upgrade
    """


@db.command("upgrade")
@click.pass_obj
def db_upgrade(app: App) -> None:
    """Bring the store to the current schema, keeping its data.

    Run it after installing a newer digest (stop the scheduler and workers first).

    Example:

        digest --config /etc/digest/digest.toml db upgrade
    """
    engine = open_engine(app.settings.store_url)
    try:
        before, after = upgrade_schema(engine)
    finally:
        engine.dispose()
    if before == after:
        out.print(f"The store is at the current schema revision ({after}); nothing to do.")
    else:
        out.print(f"Upgraded the store from schema revision {before or 'none (empty)'} to "
                  f"{after}.")


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
        report = import_files(app.store.writes, classifier, paths, topic=topic,
                              progress=lambda _r: progress.advance(task))
    for line in report.problems:
        err.print(f"[red]error:[/red] {escape(line)}", markup=True)
    for line in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(line)}", markup=True)
    if len(report.files) > 1:
        table = Table("file", "added", "duplicates", "problems", title="Import")
        for f in report.files:
            table.add_row(str(f.path), str(f.added), str(f.duplicates), str(len(f.problems)))
        print_table(table, keep=("added", "duplicates", "problems"), fold=("file",))
    summary = (f"Imported {report.added} new article{'s' * (report.added != 1)}, "
               f"skipped {report.duplicates} duplicate{'s' * (report.duplicates != 1)}")
    if report.problems:
        summary += f", {len(report.problems)} problem{'s' * (len(report.problems) != 1)}"
    if report.added == 0 and report.duplicates and not report.problems:
        summary += " (nothing new: these articles are already in the store)"
    out.print(summary + ".")
    if report.added == 0 and report.problems:
        sys.exit(1)


@articles.command("remove")
@click.argument("ids", nargs=-1, required=True, type=int)
@click.pass_obj
def articles_remove(app: App, ids: Sequence[int]) -> None:
    """Delete articles by id (see: digest articles list); all or none.

    An article already in an edition stays (discard that edition first).

    Example:

        digest articles remove 12 15
    """
    titles = app.store.remove_articles(list(dict.fromkeys(ids)))
    for article_id, title in zip(dict.fromkeys(ids), titles, strict=True):
        out.print(f"Removed article {article_id}: {title}")


@articles.command("set-topic")
@click.argument("article_id", metavar="ID", type=int)
@click.argument("topic")
@click.pass_obj
def articles_set_topic(app: App, article_id: int, topic: str) -> None:
    """Put article ID under TOPIC (one of the configured topics).

    Example:

        digest articles set-topic 12 Science
    """
    known = app.classifier.known(topic)
    if known is None:
        raise InputError(f"{topic!r} is not a configured topic; choose one of "
                         f"{', '.join(app.settings.topic_names)}")
    title = app.store.set_topic(article_id, known)
    out.print(f"Article {article_id} is now under {known}: {title}")


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
    print_table(table, keep=("id", "published", "edition"))
    out.print(f"{len(rows)} article{'s' * (len(rows) != 1)}")


# --- preview ----------------------------------------------------------------------------

@cli.command()
@click.option("--out", "out_path", type=click.Path(dir_okay=False, allow_dash=True,
                                                  path_type=Path),
              help="Where to write it (default: preview.html, or preview.txt with --text; "
                   "-: standard output).")
@click.option("--text", is_flag=True, help="Write the plain-text part instead of the HTML.")
@click.option("--open", "open_browser", is_flag=True, help="Open the result in a browser.")
@click.option("--topic", "topics", multiple=True, help="Preview one subscriber's topics.")
@click.option("--check", is_flag=True,
              help="Also check size, alt texts, links and the text part; exit 1 on a problem.")
@click.pass_obj
def preview(app: App, out_path: Path | None, text: bool, open_browser: bool,
            topics: Sequence[str], check: bool) -> None:
    """Render the coming edition without creating it, and write it to a file.

    Example:

        digest preview --out digest.html --open
    """
    result = render_preview(app.store, app.settings, utcnow(), topics=list(topics))
    summary = (f"edition {result.number}, {result.articles} article"
               f"{'s' * (result.articles != 1)} in {result.topics} topic"
               f"{'s' * (result.topics != 1)}.")
    if out_path is not None and str(out_path) == "-":
        # The rendering on stdout (for a pipe); what was rendered goes to stderr.
        click.echo(result.text if text else result.html, nl=False)
        err.print(f"Rendered {summary}")
        err.print(f"Subject: {result.subject}")
        if check:
            _print_steps(check_rendered(result.html, result.text), console=err)
        return
    path = out_path or Path("preview.txt" if text else "preview.html")
    try:
        path.write_text(result.text if text else result.html, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}; check that the folder exists "
                         f"and is writable") from None
    out.print(f"Wrote {path}: {summary}")
    out.print(f"Subject: {result.subject}")
    if open_browser:
        webbrowser.open(path.resolve().as_uri())
    if check:
        _print_steps(check_rendered(result.html, result.text))


def _print_steps(steps: Sequence[Step], console: Console = out) -> None:
    """One line per step; exit 1 when any failed."""
    for step in steps:
        mark = "[red]✗[/red]" if not step.ok else "[yellow]![/yellow]" if step.warning \
            else "[green]✓[/green]"
        console.print(f"{mark} {escape(step.name)}: {escape(step.detail)}", markup=True,
                  highlight=False)
    if not all(step.ok for step in steps):
        sys.exit(1)


@cli.command()
@click.pass_obj
def check(app: App) -> None:
    """Check the setup: config, store, secret key, DKIM key, and the SMTP server step by
    step (connect, EHLO, STARTTLS and AUTH when configured, QUIT). Sends nothing.

    Example:

        DIGEST_SMTP__PASSWORD=… digest check
    """
    _print_steps(check_setup(app.settings, app.store))


# --- subscribers ------------------------------------------------------------------------

@cli.group(cls=DigestGroup)
def subscribers() -> None:
    """Add, change, import, export and list subscribers.

    Example:

        digest subscribers add ada@example.org --name "Ada" --topic AI --topic Science
    """


def _book(app: App) -> SubscriberBook:
    return SubscriberBook(app.store, app.settings)


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name, used in To: and the greeting.")
@click.option("--topic", "topics", multiple=True, help="Only these topics (repeat; default: all).")
@click.option("--timezone", help="IANA zone, e.g. Europe/Berlin (for local-time delivery).")
@click.option("--force", is_flag=True,
              help="Add an address that was removed earlier (only with their consent).")
@click.pass_obj
def subscribers_add(app: App, email: str, name: str, topics: Sequence[str],
                    timezone: str | None, force: bool) -> None:
    """Add an active subscriber.

    Example:

        digest subscribers add grace@example.org --name Grace --topic AI --timezone America/New_York
    """
    sub = _book(app).add(email, name, topics, timezone, force=force)
    out.print(f"Added {sub.email}" + (f" (topics: {', '.join(sub.topics)})" if sub.topics
                                      else " (all topics)"))


@subscribers.command("remove")
@click.argument("email")
@click.pass_obj
def subscribers_remove(app: App, email: str) -> None:
    """Erase a subscriber: name and address are deleted, they vanish from lists and
    exports and are never mailed again. A hash of the address is kept so that an import
    cannot bring them back by mistake (`subscribers add --force` can, with consent).

    Example:

        digest subscribers remove ada@example.org
    """
    _book(app).remove(email)
    out.print(f"Removed {email.strip()}")


@subscribers.command("unsubscribe")
@click.argument("email")
@click.pass_obj
def subscribers_unsubscribe(app: App, email: str) -> None:
    """Mark a subscriber unsubscribed: no further editions.

    Example:

        digest subscribers unsubscribe ada@example.org
    """
    sub = _book(app).set_status(email, SubscriberStatus.UNSUBSCRIBED)
    out.print(f"Unsubscribed {sub.email}")


@subscribers.command("activate")
@click.argument("email")
@click.option("--force", is_flag=True,
              help="Re-activate someone who unsubscribed (only with their consent).")
@click.pass_obj
def subscribers_activate(app: App, email: str, force: bool) -> None:
    """Make a pending or bounced subscriber active again (one who unsubscribed: --force).

    Example:

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

        digest subscribers set-topics ada@example.org AI Science
    """
    sub = _book(app).set_topics(email, topics)
    out.print(f"{sub.email}: " + (", ".join(sub.topics) if sub.topics else "all topics"))


def _subscriber_row(s: Subscriber) -> dict[str, Any]:
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
        table = Table("email", "name", "status", "topics", "timezone")
        for r in rows:
            table.add_row(r["email"], r["name"], r["status"], ", ".join(r["topics"]) or "all",
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
    the good rows are stored in one transaction, the others reported with their line.
    Each change to an existing subscriber is reported; someone who unsubscribed or
    bounced stays so unless --reactivate, and removed addresses are never re-added.

    Example:

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
    if report.rejected and report.added + report.updated + report.unchanged == 0:
        sys.exit(1)


@subscribers.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.pass_obj
def subscribers_export(app: App, file: Path) -> None:
    """Write every subscriber to a CSV file ("-": standard output), in the columns
    `subscribers import` reads. Cells that a spreadsheet would run as a formula (starting
    with = + - @, a tab or CR) get a leading apostrophe, which import takes off again.

    Example:

        digest subscribers export backup.csv
    """
    if str(file) == "-":
        _book(app).export_csv(sys.stdout)
        return
    count = _book(app).export_csv(file)
    out.print(f"Wrote {count} subscriber{'s' * (count != 1)} to {file}")


# --- send and editions -----------------------------------------------------------------

def _sentence(exc: Exception) -> str:
    """An expected, non-error condition as a sentence of its own."""
    text = str(exc)
    return f"{text[:1].upper()}{text[1:]}."


def _summary(report: SendReport) -> Table:
    title = f"Edition {report.edition}" if report.edition else "Deferred deliveries"
    table = Table("", "sent", "deferred", "failed", "skipped", "pending", title=title)
    run = report.this_run
    table.add_row("this run", *(str(run.get(k, 0)) for k in
                                ("sent", "deferred", "failed", "skipped", "pending")))
    c = report.counts
    table.add_row("ledger", *(str(c.get(k, 0)) for k in
                              ("sent", "deferred", "failed", "skipped", "pending")))
    return table


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) or SIGTERM, so that sending stops cleanly: the
    messages in flight finish, claimed deliveries are handed back, the summary prints."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            err.print(f"{signal.Signals(signum).name}: finishing the messages in flight "
                      f"(again to stop at once)")
            stop.set()
            return
        signal.signal(signum, signal.SIG_DFL)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _when(at: datetime, now: datetime) -> str:
    """A moment as a UTC time and a distance: "2026-11-27 14:05 UTC (in 3 h 5 min)"."""
    seconds = max(0, int((at - now).total_seconds()))
    hours, minutes = divmod((seconds + 59) // 60, 60)
    distance = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"{at:%Y-%m-%d %H:%M} UTC (in {distance})"


@cli.command()
@click.option("--dry-run", is_flag=True, help="Build everything, store and send nothing.")
@click.option("--to", "to", metavar="EMAIL", help="Send one test copy ([TEST] subject) to EMAIL.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before sending a new edition.")
@click.option("--edition", "number", type=int, help="Resume edition N.")
@click.option("--retry", is_flag=True, help="Send deferred deliveries that are due.")
@click.option("--retry-failed", is_flag=True,
              help="With --edition N: send N's failed deliveries again (after fixing the "
                   "cause); subscribers no longer active are left out.")
@click.option("--force", is_flag=True, help="Send an edition even with no new articles.")
@click.option("--enqueue", is_flag=True,
              help="Create the edition and its ledger only; `digest worker`s send it.")
@click.pass_obj
def send(app: App, dry_run: bool, to: str | None, yes: bool, number: int | None, retry: bool,
         retry_failed: bool, force: bool, enqueue: bool) -> None:
    """Create the next edition (or resume an unfinished one) and send it.

    Each subscriber gets the edition once; a killed or interrupted run resumes where it
    stopped. Ctrl-C finishes the messages in flight and prints what is left.

    Example:

        digest send --to me@example.org && digest send --yes
    """
    settings, store = app.settings, app.store
    transport = make_transport(settings)
    if retry_failed and number is None:
        raise click.UsageError("--retry-failed needs --edition N (see: digest editions list)")
    if enqueue or (settings.delivery.workers and not (to or dry_run or retry or retry_failed)):
        try:
            edition, created, pending = enqueue_edition(store, settings, force=force)
        except NoRecipients:
            raise
        except NothingToSend as exc:
            out.print(_sentence(exc))
            return
        state = "Created" if created else "Edition exists:"
        out.print(f"{state} edition {edition.number}: {pending} deliveries pending. "
                  f"Workers send them: digest worker")
        return
    if to:
        transport.check()
        subject = send_test_copy(store, settings, transport, to, utcnow())
        out.print(f"Sent a test copy to {to}: {subject}")
        return
    if dry_run:
        try:
            plan = dry_run_edition(store, settings, utcnow())
        except NoRecipients:
            raise
        except NothingToSend as exc:
            out.print(_sentence(exc))
            return
        out.print(f"Dry run: edition {plan.number} would take {plan.articles} articles in "
                  f"{len(plan.topics)} topics and go to {plan.recipients} subscribers in "
                  f"{plan.variants} variant{'s' * (plan.variants != 1)} ({plan.skipped} "
                  f"skipped: nothing new in their topics). Nothing was stored or sent.")
        return
    # Everything that may ask or refuse happens before the progress bar is drawn.
    if retry_failed:
        assert number is not None
        transport.check()
        reopened, left = reopen_failed(store, number)
        note = (f"; {left} for subscribers no longer active stay failed" if left else "")
        out.print(f"Edition {number}: {reopened} failed deliver"
                  f"{'ies' if reopened != 1 else 'y'} to send again{note}.")
        if not reopened:
            return
    elif retry:
        now = utcnow()
        due = next_retry(store)
        if due is None:
            out.print("Nothing is deferred: nothing to retry.")
            return
        if due > now:
            out.print(f"Nothing to retry yet: the next deferred delivery is due at "
                      f"{_when(due, now)}.")
            return
    elif number is None and not has_unfinished_edition(store):
        try:
            plan = plan_edition(store, settings, utcnow())
        except NoRecipients:
            raise
        except NothingToSend as exc:
            if not force:
                out.print(_sentence(exc))
                return
        else:
            if not yes:
                if not sys.stdin.isatty():
                    raise InputError(f"edition {plan.number} would go to {plan.recipients} "
                                     f"subscribers; add --yes to send without asking")
                click.confirm(f"Send edition {plan.number} ({plan.articles} articles) to "
                              f"{plan.recipients} subscribers?", abort=True)
    with _stop_on_signals() as stop, progress_bar() as progress:
        task = progress.add_task("Sending", total=None)

        def advance(_status: str) -> None:
            progress.advance(task)

        if retry:
            report = retry_deferred(store, settings, transport, progress=advance, stop=stop)
        else:
            report = send_edition(store, settings, transport, number=number, force=force,
                                  progress=advance, stop=stop,
                                  on_open=lambda _e, n: progress.update(task, total=n))
    out.print(_summary(report))
    if report.edition is not None and not report.created and not any(report.this_run.values()):
        out.print(f"Edition {report.edition} has nothing pending: nothing was sent.")
    if report.paused:
        what = f"edition {report.edition}" if report.edition else "sending"
        raise EditionPaused(f"{what} paused after {report.paused}")
    if stop.is_set():
        left = report.counts.get("pending", 0)
        err.print(f"Interrupted: {left} deliveries still pending; run `digest send` again to "
                  f"resume (nobody gets the edition twice).")
        sys.exit(130)


@cli.command()
@click.option("--until-done", is_flag=True,
              help="Exit once nothing is due and no other worker holds anything.")
@click.option("--poll", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Seconds between looks for new work when idle.")
@click.pass_obj
def worker(app: App, until_done: bool, poll: float) -> None:
    """Send queued deliveries; run any number of workers, on any number of machines.

    Each worker claims batches of pending deliveries under a lease
    ([delivery] lease_seconds): a worker that dies leaves its batch to be claimed again.

    Example:

        digest send --enqueue && digest worker --until-done
    """
    stop = threading.Event()

    def shutdown(signum: int, _frame: Any) -> None:
        err.print(f"{signal.Signals(signum).name}: finishing the messages in flight")
        stop.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    with progress_bar() as progress:
        task = progress.add_task("Sending", total=None)
        totals = run_worker(app.store, app.settings, make_transport(app.settings),
                            until_done=until_done, poll=poll, stop=stop,
                            progress=lambda _s: progress.advance(task))
    out.print(f"Worker done: sent {totals['sent']}, deferred {totals['deferred']}, failed "
              f"{totals['failed']}.")


@cli.group(cls=DigestGroup)
def editions() -> None:
    """List editions and show one with its delivery counts.

    Example:

        digest editions list && digest editions show 1
    """


@editions.command("list")
@click.pass_obj
def editions_list(app: App) -> None:
    """Every edition with its state and delivery counts.

    Example:

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

        digest editions discard 4
    """
    returned = discard_edition(app.store, number)
    out.print(f"Discarded edition {number}; its {returned} article"
              f"{'s' * (returned != 1)} will be in the next edition.")


@editions.command("show")
@click.argument("number", type=int)
@click.pass_obj
def editions_show(app: App, number: int) -> None:
    """One edition: subject, articles per topic, deliveries, recent failures.

    Example:

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
    for email, status, error in detail.problems:
        out.print(f"  {status:8} {email}: {error}")


@cli.command()
@click.argument("directory", default="digest-demo",
                type=click.Path(file_okay=False, path_type=Path))
def demo(directory: Path) -> None:
    """Try everything in a fresh folder: sample articles and subscribers, sent through a
    built-in SMTP server on 127.0.0.1; the received mail is kept in DIRECTORY/outbox.

    Example:

        digest demo demo-out && open demo-out/preview.html
    """
    with progress_bar() as progress:
        task = progress.add_task("Sending", total=None)
        result = run_demo(directory, progress=lambda _s: progress.advance(task))
    out.print(f"Imported {result.articles} sample articles and {result.subscribers} "
              f"subscribers into {result.config.parent / 'digest.db'}")
    out.print(_summary(result.report))
    out.print(f"The loopback SMTP server received {result.messages} messages:")
    out.print(f"  messages  {result.outbox}/*.eml")
    out.print(f"  preview   {result.preview}")
    out.print(f"  config    {result.config}")
    out.print(f"Look around: digest --config {result.config} editions show "
              f"{result.report.edition}")


# --- feeds -----------------------------------------------------------------------------

@cli.group(cls=DigestGroup)
def feeds() -> None:
    """Add, list, remove and fetch RSS/Atom feeds.

    Example:

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
    table = Table("name", "url", "last fetch", "last success", "status", "added",
                  "last error")
    for f in rows:
        table.add_row(f.name, f.url, f"{f.last_fetch_at:%Y-%m-%d %H:%M}" if f.last_fetch_at
                      else "never", f"{f.last_success_at:%Y-%m-%d %H:%M}"
                      if f.last_success_at else "never", f.last_status or "",
                      str(f.items_added), f.last_error or "")
    print_table(table, keep=("last fetch", "last success"), fold=("name", "url"))


@feeds.command("fetch")
@click.option("--name", help="Only this feed (name or URL).")
@click.pass_obj
def feeds_fetch(app: App, name: str | None) -> None:
    """Fetch every feed now and store new items.

    Example:

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
    table = Table("feed", "result", "new", "older", "known", title="Fetch")
    for r in sorted(results, key=lambda r: r.name):
        table.add_row(r.name, r.status, str(r.added), str(r.backlog), str(r.duplicates))
    print_table(table, keep=("new", "older", "known"), fold=("feed",))
    added = sum(r.added for r in results)
    older = sum(r.backlog for r in results)
    failed = sum(r.status == "error" for r in results)
    out.print(f"Fetched {len(results)} feed{'s' * (len(results) != 1)}: {added} new "
              f"article{'s' * (added != 1)}"
              f"{f' ({older} older kept as back catalogue)' if older else ''}, "
              f"{failed} failed.")
    if results and failed == len(results):
        sys.exit(1)


def _log_to_stderr(settings: Settings) -> None:
    """One line per event on stderr, at [schedule] log_level."""
    logging.basicConfig(stream=sys.stderr, level=settings.schedule.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Their INFO lines repeat ours ("Added job", "Running job", "Context impl").
    quiet = max(logging.WARNING, logging.getLevelName(settings.schedule.log_level))
    for name in ("apscheduler", "alembic"):
        logging.getLogger(name).setLevel(quiet)


# --- web --------------------------------------------------------------------------------

@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.pass_obj
def serve(app: App, host: str, port: int) -> None:
    """Serve the subscriber pages: one-click unsubscribe, sign-up with confirmation,
    topic preferences, and the archive (with an Atom feed); confirmation mails go out
    through [smtp] from a background thread. [digest] base_url must be the public address
    of this server; behind your TLS proxy, set [web] trusted_proxies.

    Example:

        digest serve --host 127.0.0.1 --port 8080
    """
    settings = app.settings
    _log_to_stderr(settings)
    server = WebServer(settings, host, port)     # refuses without a signing key

    def terminate(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)     # waitress ends its loop; the outbox finishes its pass

    signal.signal(signal.SIGTERM, terminate)
    out.print(f"Serving {settings.digest.name} on http://{host}:{port} (links in mail "
              f"point to {settings.digest.base_url}); Ctrl-C stops.")
    server.run()


# --- schedule ---------------------------------------------------------------------------

@cli.group(cls=DigestGroup)
def schedule() -> None:
    """Run the scheduler, or show when it will run.

    Example:

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

        DIGEST_SECRET_KEY=… digest --config /etc/digest/digest.toml schedule run
    """
    settings = app.settings
    _log_to_stderr(settings)
    run_scheduler(settings, app.config)


@schedule.command("show")
@click.option("--count", type=click.IntRange(1, 50), default=3, show_default=True,
              help="How many upcoming runs to list.")
@click.pass_obj
def schedule_show(app: App, count: int) -> None:
    """The next runs of each job, the local-time waves, and the last editions.

    Example:

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
    out.print(f"Retries and unfinished editions: every {overview.sweep_every} minutes")
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


def main() -> None:
    cli(prog_name="digest")
