"""digest editions: the editor's desk (draft, shape, approve, cancel), list, show,
discard."""

from __future__ import annotations

import getpass
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..content.intro import INTRO_MAX
from ..delivery import desk
from ..delivery.editions import (
    discard_edition,
    edition_detail,
    edition_summaries,
    give_up_edition,
)
from ..store.models import EditionStatus
from .app import App, DigestGroup, out, print_table

__all__ = ["editions"]


@click.group(cls=DigestGroup)
def editions() -> None:
    """Draft, shape, approve and list editions; show one with its articles, delivery
    counts and clicks.

    A draft reserves the new articles without sending anything: shape it (drop, pin,
    move, order, edit, intro, subject), look at it (preview), then approve it; `digest
    send` sends the approved edition and refuses an unapproved draft.

    Example:

    \b
        digest editions draft
        digest editions pin 4 17 --top
        digest editions approve 4 && digest send
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


@editions.command("finish")
@click.argument("number", type=int)
@click.pass_obj
def editions_finish(app: App, number: int) -> None:
    """Give up on paused edition N as it stands: what it has not sent fails, and the
    next edition can be made.

    The failed deliveries keep the reason they waited; `digest send --retry-failed
    --edition N` sends them after all. An edition nobody received can be discarded
    instead (digest editions discard N).

    Example:

    \b
        digest editions finish 4
    """
    given_up = give_up_edition(app.store, number)
    out.print(f"Finished edition {number}: {given_up} deliver"
              f"{'ies' if given_up != 1 else 'y'} not sent, marked failed (digest send "
              f"--retry-failed --edition {number} sends them after all).")


def _said(message: str) -> None:
    out.print(message)


@editions.command("draft")
@click.option("--allow-empty", is_flag=True,
              help="Draft it even with no new articles (an edition of only an intro, which "
                   "`digest send --allow-empty` sends).")
@click.pass_obj
def editions_draft(app: App, allow_empty: bool) -> None:
    """Build the next edition as a draft from the new articles, without sending it.

    Its articles are reserved (no other edition takes them); nothing is sent until it is
    approved and `digest send` runs (or its scheduled slot comes).

    Example:

    \b
        digest editions draft
    """
    view = desk.draft_edition(app.store, app.settings, app.clock.now(),
                              allow_empty=allow_empty)
    count = len(view.articles)
    out.print(f"Drafted edition {view.number}: {count} stor{'ies' if count != 1 else 'y'} "
              f"in {len(view.sections)} topic{'s' * (len(view.sections) != 1)}; subject: "
              f"{view.subject}")
    out.print(f"Review it with: digest editions show {view.number}; approve it with: "
              f"digest editions approve {view.number}")


@editions.command("refresh")
@click.argument("number", type=int)
@click.pass_obj
def editions_refresh(app: App, number: int) -> None:
    """Add the articles that arrived since draft N was made (or last refreshed).

    Example:

    \b
        digest editions refresh 4
    """
    added = desk.refresh_draft(app.store, app.settings, number, app.clock.now())
    out.print(f"Added {added} article{'s' * (added != 1)} to edition {number}.")


@editions.command("add")
@click.argument("number", type=int)
@click.argument("article", type=int)
@click.pass_obj
def editions_add(app: App, number: int, article: int) -> None:
    """Add ARTICLE to draft N: one no edition holds, e.g. one that came in too old to be
    news (see: digest articles list --old).

    Example:

    \b
        digest editions add 4 17
    """
    _said(desk.add_article(app.store, app.settings, number, article))


@editions.command("drop")
@click.argument("number", type=int)
@click.argument("articles", metavar="ARTICLE...", nargs=-1, required=True, type=int)
@click.pass_obj
def editions_drop(app: App, number: int, articles: tuple[int, ...]) -> None:
    """Take ARTICLEs (each with the rest of its story) out of draft N: back to the pool.
    All in one change, or none: an id the edition does not hold is named, and nothing is
    dropped.

    Example:

    \b
        digest editions drop 4 17 21 33
    """
    _said(desk.drop_articles(app.store, app.settings, number, articles))


@editions.command("pin")
@click.argument("number", type=int)
@click.argument("article", type=int)
@click.option("--top", is_flag=True, help="Lead the whole edition, not only its topic.")
@click.option("--unpin", is_flag=True, help="Take the pin off again.")
@click.pass_obj
def editions_pin(app: App, number: int, article: int, top: bool, unpin: bool) -> None:
    """Pin ARTICLE to lead its topic in draft N (--top: the whole edition).

    Example:

    \b
        digest editions pin 4 17 --top
    """
    if top and unpin:
        raise click.UsageError("--top and --unpin do not go together")
    _said(desk.pin_article(app.store, app.settings, number, article, top=top, unpin=unpin))


@editions.command("move")
@click.argument("number", type=int)
@click.argument("article", type=int)
@click.argument("topic")
@click.pass_obj
def editions_move(app: App, number: int, article: int, topic: str) -> None:
    """Put ARTICLE's story under TOPIC in draft N.

    Example:

    \b
        digest editions move 4 17 Science
    """
    _said(desk.move_article(app.store, app.settings, number, article, topic))


@editions.command("order")
@click.argument("number", type=int)
@click.argument("article", type=int)
@click.option("--before", "before", type=int, required=True, metavar="OTHER",
              help="The article it should come just before (same topic).")
@click.pass_obj
def editions_order(app: App, number: int, article: int, before: int) -> None:
    """Put ARTICLE just before OTHER in their topic in draft N.

    Example:

    \b
        digest editions order 4 17 --before 12
    """
    _said(desk.order_article(app.store, app.settings, number, article, before))


@editions.command("edit")
@click.argument("number", type=int)
@click.argument("article", type=int)
@click.option("--title", help="The title it shows in this edition (\"\" puts its own back).")
@click.option("--teaser", help="The teaser it shows in this edition (\"\" puts its own "
              "back).")
@click.pass_obj
def editions_edit(app: App, number: int, article: int, title: str | None,
                  teaser: str | None) -> None:
    """Change the title or teaser ARTICLE shows in draft N (the article stays as it is).

    Example:

    \b
        digest editions edit 4 17 --title "A shorter title"
    """
    _said(desk.edit_article(app.store, app.settings, number, article, title=title,
                            teaser=teaser))


@editions.command("intro")
@click.argument("number", type=int)
@click.option("--file", "path", type=click.Path(dir_okay=False, allow_dash=True),
              help="A Markdown file with the note (- reads standard input).")
@click.option("--clear", is_flag=True, help="Remove the note.")
@click.pass_obj
def editions_intro(app: App, number: int, path: str | None, clear: bool) -> None:
    """The editor's note shown above the contents of draft N, in Markdown.

    Example:

    \b
        digest editions intro 4 --file note.md
    """
    if clear == bool(path):
        raise click.UsageError("give --file FILE (or - for standard input), or --clear")
    text = ""
    if path:
        try:
            text = _read_note(path)
            if len(text) > INTRO_MAX * 4:
                raise click.ClickException(f"the intro {path} is far longer than "
                                           f"{INTRO_MAX} characters; keep it to a few "
                                           f"paragraphs")
        except OSError as exc:
            raise click.ClickException(f"cannot read the intro {path}: {exc.strerror}; give "
                                       f"a UTF-8 Markdown file") from None
        except UnicodeDecodeError:
            raise click.ClickException(f"cannot read the intro {path}: it is not UTF-8 text; "
                                       f"give a UTF-8 Markdown file") from None
    _said(desk.set_intro(app.store, app.settings, number, text))


@editions.command("subject")
@click.argument("number", type=int)
@click.argument("subject")
@click.pass_obj
def editions_subject(app: App, number: int, subject: str) -> None:
    """The subject line of draft N ("" goes back to [digest] subject).

    Example:

    \b
        digest editions subject 4 "Our week: the storm and the vote"
    """
    _said(desk.set_subject(app.store, app.settings, number, subject))


@editions.command("preview")
@click.argument("number", type=int)
@click.option("--as", "address", metavar="EMAIL",
              help="As this subscriber gets it (their name and topics).")
@click.option("--out", "target", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the HTML (default: edition-N-preview.html).")
@click.option("--open", "launch", is_flag=True, help="Open it in the browser.")
@click.pass_obj
def editions_preview(app: App, number: int, address: str | None, target: Path | None,
                     launch: bool) -> None:
    """Write edition N as a reader will get it to an HTML file (and its text beside it).

    Example:

    \b
        digest editions preview 4 --as ada@example.org --open
    """
    preview = desk.preview_edition(app.store, app.settings, number, address)
    target = target or Path(f"edition-{number}-preview.html")
    try:
        target.write_text(preview.html, encoding="utf-8")
        target.with_suffix(".txt").write_text(preview.text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror}; choose another "
                                   f"place with --out") from None
    out.print(f"Subject: {preview.subject}")
    out.print(f"Wrote {target} and {target.with_suffix('.txt')}")
    if launch:
        click.launch(str(target.resolve()))


@editions.command("approve")
@click.argument("number", type=int)
@click.option("--by", default=None, help="Who approves (default: your login name).")
@click.pass_obj
def editions_approve(app: App, number: int, by: str | None) -> None:
    """Approve draft N: `digest send` (or its scheduled slot) sends it.

    Example:

    \b
        digest editions approve 4 && digest send
    """
    _said(desk.approve_edition(app.store, app.settings, number, by or _login(), app.clock.now()))


def _login() -> str:
    try:
        return f"{getpass.getuser()} (command line)"
    except (KeyError, OSError):
        return "command line"


@editions.command("cancel")
@click.argument("number", type=int)
@click.pass_obj
def editions_cancel(app: App, number: int) -> None:
    """Cancel draft (or approved) edition N: it is never sent; its articles go back to
    the pool for the next edition.

    Example:

    \b
        digest editions cancel 4
    """
    returned = desk.cancel_edition(app.store, app.settings, number, app.clock.now())
    out.print(f"Cancelled edition {number}; its {returned} article{'s' * (returned != 1)} "
              f"will be in the next edition.")


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
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_obj
def editions_show(app: App, number: int, fmt: str) -> None:
    """One edition: subject, its articles in order (with clicks), deliveries, recent
    failures.

    Example:

    \b
        digest editions show 3 --format json
    """
    detail = edition_detail(app.store, number)
    view = desk.desk_view(app.store, app.settings, number)
    if fmt == "json":
        out.print(json.dumps(_as_json(view, detail.counts, detail.reports), indent=2,
                             ensure_ascii=False))
        return
    out.print(f"Edition {detail.number}: {view.subject}")
    out.print(f"Status {detail.status}; created {detail.created_at:%Y-%m-%d %H:%M} UTC; "
              f"cut-off {detail.cutoff:%Y-%m-%d %H:%M} UTC"
              + (f"; finished {detail.finished_at:%Y-%m-%d %H:%M} UTC"
                 if detail.finished_at else "")
              + (f"; approved by {view.approved_by}" if view.approved_by else ""))
    if view.intro:
        lines = [line for line in view.intro.splitlines() if line.strip()]
        out.print("Intro:")
        for line in lines[:_INTRO_LINES]:
            out.print(f"  {line}")
        if len(lines) > _INTRO_LINES:
            out.print(f"  … {len(lines) - _INTRO_LINES} more lines")
    _articles_table(view)
    if view.uncounted:
        out.print(f"Clicks: {view.clicks} counted; not counted: " + ", ".join(
            f"{n} {_UNCOUNTED[reason]}" for reason, n in sorted(view.uncounted.items())))
    if any(detail.counts.values()):
        out.print("Deliveries: " + ", ".join(f"{k} {v}" for k, v in detail.counts.items()))
        out.print(_reports_line(detail.reports, detail.counts.get("sent", 0)))
    elif view.status in (EditionStatus.DRAFT, EditionStatus.APPROVED):
        out.print(f"Nothing is sent yet: whom it reaches is decided when it goes out "
                  f"(approve it with: digest editions approve {number}, then digest send)"
                  if view.status is EditionStatus.DRAFT else
                  "Approved: digest send (or its scheduled slot) sends it.")
    for email, status, error in detail.problems:
        out.print(f"  {status:8} {email}: {error}")


def _read_note(path: str) -> str:
    """The intro file (or standard input), read up to a little past the longest intro: a
    device or a huge file ends in "too long", never in a hang."""
    limit = INTRO_MAX * 4 + 1
    if path == "-":
        return sys.stdin.read(limit)
    with open(path, encoding="utf-8") as handle:
        return handle.read(limit)


# Why a request of a tracked link was left out of the counts, as `editions show` says it.
_UNCOUNTED = {"head": "HEAD requests", "scanner": "link scanners or tools",
              "early": "before it went out", "burst": "in bursts from one address",
              "repeat": "repeats of a link from one address",
              "limit": "from addresses over [tracking] client_clicks",
              "dropped": "while the click queue was full"}
# The intro lines `editions show` prints (the rest are counted).
_INTRO_LINES = 6


def _articles_table(view: desk.DeskView) -> None:
    table = Table("id", "topic", "title", "marks", "clicks")
    for a in view.articles:
        marks = ", ".join(m for m, on in (("leads", a.pin_top), ("pinned", a.pinned),
                                          ("edited", a.edited), (f"+{a.also} sources",
                                                                 bool(a.also)),
                                          (f"update of No. {a.update_of}",
                                           a.update_of is not None),
                                          ("online only", not a.shown),
                                          ("check: " + "; ".join(f.split(" (")[0]
                                                                 for f in a.flags),
                                           bool(a.flags))) if on)
        table.add_row(str(a.id), a.topic, a.title, marks, str(a.clicks))
    print_table(table, keep=("id", "clicks"), wide=("title", "marks"))
    if view.left_out:
        out.print(f"Left out, only repeating edition {view.left_out[0].number}: "
                  + ", ".join(str(a.id) for a in view.left_out))


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _as_json(view: desk.DeskView, counts: dict[str, int],
             reports: dict[str, int]) -> dict[str, Any]:
    return {
        "number": view.number, "status": view.status.value, "subject": view.subject,
        "intro": view.intro, "created_at": _when(view.created_at),
        "cutoff": _when(view.cutoff), "slot": _when(view.slot),
        "approved_at": _when(view.approved_at), "approved_by": view.approved_by,
        "deliveries": counts, "reports": reports, "clicks": view.clicks,
        "clicks_not_counted": view.uncounted,
        "articles": [{"id": a.id, "title": a.title, "topic": a.topic, "pinned": a.pinned,
                      "leads": a.pin_top, "position": a.position, "edited": a.edited,
                      "in_mail": a.shown, "also": a.also, "source": a.source,
                      "url": a.url, "clicks": a.clicks, "update": _update(a),
                      "flags": list(a.flags)}
                     for a in view.articles],
        "left_out": [{"id": a.id, "title": a.title, "topic": a.topic, "source": a.source,
                      "repeats_edition": a.number, "story": a.story}
                     for a in view.left_out],
    }


def _update(a: desk.DeskArticle) -> dict[str, Any] | None:
    """An entry that goes on a story of the previous edition: which, under what title,
    how many new reports it links, and its reports that only repeat it (not shown)."""
    if a.update_of is None:
        return None
    return {"edition": a.update_of, "title": a.update_title, "new_reports": a.also + 1,
            "repeats": list(a.repeats)}
