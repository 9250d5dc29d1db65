"""digest preview: the coming edition rendered to a file, without creating it."""

from __future__ import annotations

import webbrowser
from collections.abc import Sequence
from pathlib import Path

import click
from rich.cells import cell_len, get_character_cell_size

from ..checks import Step, check_content, check_rendered
from ..content.edition import cap_counts
from ..content.stories import Story, undated
from ..errors import InputError
from ..ingest import examples_in_store
from ..mail.preview import PreviewResult, render_preview
from ..store.models import Article
from .app import App, err, out, print_steps

__all__ = ["preview"]

# The columns before the title take 40 cells: with the title (and the "online only" mark)
# in 40 more, every line fits an 80-column terminal.
_TITLE_WIDTH = 40


@click.command()
@click.option("--out", "out_path", type=click.Path(dir_okay=False, allow_dash=True,
                                                  path_type=Path),
              help="Where to write it (default: preview.html, or preview.txt with --text; "
                   "-: standard output).")
@click.option("--text", is_flag=True, help="Write the plain-text part instead of the HTML.")
@click.option("--open", "open_browser", is_flag=True, help="Open the result in a browser.")
@click.option("--topic", "topics", multiple=True, help="Preview one subscriber's topics.")
@click.option("--check", is_flag=True,
              help="Also check size, alt texts, links and the text part, and the articles "
                   "(undated, mojibake, a title in another script, a teaser that repeats the "
                   "title); exit 1 on a problem.")
@click.option("--explain", is_flag=True,
              help="Only print how many examples the topics learned from and, per "
                   "article, its topic, why (explicit, feed, tag, learned, semantic, "
                   "keyword, catch-all, manual), the confidence, its story and the score, "
                   "in the edition's order.")
@click.pass_obj
def preview(app: App, out_path: Path | None, text: bool, open_browser: bool,
            topics: Sequence[str], check: bool, explain: bool) -> None:
    """Render the coming edition without creating it, and write it to a file.

    Example:

    \b
        digest preview --out digest.html --open
        digest preview --explain
    """
    result = render_preview(app.store, app.settings, app.clock.now(), topics=list(topics))
    if explain:
        examples = examples_in_store(app.store, app.classifier)
        click.echo(explanation(result.ranking, app.settings.digest.max_articles,
                               result.left_out, examples), nl=False)
        return
    summary = (f"edition {result.number}, {result.articles} article"
               f"{'s' * (result.articles != 1)} in {result.topics} topic"
               f"{'s' * (result.topics != 1)}.")
    if out_path is not None and str(out_path) == "-":
        # The rendering on stdout (for a pipe); what was rendered goes to stderr.
        click.echo(result.text if text else result.html, nl=False)
        err.print(f"Rendered {summary}")
        err.print(f"Subject: {result.subject}")
        if check:
            print_steps(_checks(app, result), console=err)
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
        print_steps(_checks(app, result))


def _checks(app: App, result: PreviewResult) -> list[Step]:
    """The rendered mail's checks, then its articles'."""
    return (check_rendered(result.html, result.text)
            + check_content(result.ranking, app.settings.digest.teaser_words))


def explanation(ranking: Sequence[tuple[str, Sequence[Story]]], max_articles: int,
                left_out: Sequence[Story] = (), examples: int = 0) -> str:
    """The --explain listing: what the topics learned from (`examples`: the editor's
    examples), then per topic, its stories in order; per article its id, why it is under
    this topic, the confidence of a choice by meaning, its story (the id of the article
    that leads it) and the story's score (on the lead's line; "pinned" first). Stories
    past max_articles are marked: they are only in the online edition; an undated article
    or a clamped date is marked too. A story that goes on one of the previous edition is
    marked an update (its reports that only repeat it follow, marked); the stories that
    only repeat it are listed last."""
    taught = (f"topics: learned from {examples} example{'s' * (examples != 1)} (topics an "
              f"editor gave)" if examples else
              "topics: no examples yet (set-topic, editions move, imports with a topic)")
    lines = [taught,
             "story: the article that leads it; conf: margin of a choice by meaning",
             "score: weight × (1 + 0.5 × (sources − 1)) × 0.5^(age ÷ half_life_hours)",
             "undated: no date in its record, page or text; aged from when it came in,",
             "at least one half-life", ""]
    earlier = next((s.update_of for s in [*left_out, *(s for _t, group in ranking
                                                       for s in group)]
                    if s.update_of is not None), None)
    if earlier is not None:
        lines[5:5] = [f"update: new reports of a story edition {earlier.number} had; "
                      f"repeat: only repeats it (left out)"]
    shown = _shown(ranking, max_articles)
    for topic, stories in ranking:
        lines += [f"{topic} ({len(stories)} stor{'y' if len(stories) == 1 else 'ies'})",
                  _HEADER]
        for position, story in enumerate(stories):
            mark = "" if position < shown[topic] else "  (online only)"
            lines += _story_lines(story, mark)
        lines.append("")
    if left_out and earlier is not None:
        lines += [f"Left out: only repeats of edition {earlier.number} ({len(left_out)} "
                  f"stor{'y' if len(left_out) == 1 else 'ies'})", _HEADER]
        for story in left_out:
            lines += _story_lines(story, "", repeat=True)
        lines.append("")
    return "\n".join(lines)


def _date_mark(article: Article) -> str:
    """What --explain says of an article's date when it is not the source's own."""
    if undated(article):
        return "  (undated)"
    if article.date_clamped:
        return "  (future date)"
    return ""


_HEADER = f"{'id':>6}  {'why':<9} {'conf':>5} {'story':>6} {'score':>7}  title"


def _story_lines(story: Story, mark: str, *, repeat: bool = False) -> list[str]:
    """A story's lines: its lead (with the score, and the mark), its other articles, then
    the reports that only repeat the previous edition."""
    if story.update_of is not None and not repeat:
        mark = f"  (update){mark}"
    rows = [(a, mark if a is story.lead else "") for a in story.articles]
    rows += [(a, "  (repeat)") for a in story.repeats]
    if repeat:
        rows = [(a, "  (repeat)") for a, _ in rows]
    lines = []
    for article, mark_here in rows:
        mark_here += _date_mark(article)
        score = ("pinned" if story.pinned else f"{story.score:.3f}") \
            if article is story.lead and not repeat else ("-" if repeat else "")
        confidence = "-" if article.topic_confidence is None \
            else f"{article.topic_confidence:.2f}"
        lines.append(f"{article.id:>6}  {article.topic_reason:<9} {confidence:>5} "
                     f"{story.lead.id:>6} {score:>7}  "
                     f"{_cut(article.title, _TITLE_WIDTH - len(mark_here))}{mark_here}")
    return lines


def _shown(ranking: Sequence[tuple[str, Sequence[Story]]], limit: int) -> dict[str, int]:
    """How many stories of each topic the email shows (the round-robin cap)."""
    counts = cap_counts([stories for _, stories in ranking], limit)
    return {topic: count for (topic, _), count in zip(ranking, counts, strict=True)}


def _cut(title: str, room: int) -> str:
    """title in at most room terminal cells (a CJK character or an emoji takes two, a
    combining mark none), cut with "…" when it needs more."""
    if cell_len(title) <= room:
        return title
    kept, used = [], 0
    for char in title:
        used += get_character_cell_size(char)
        if used > room - 1:
            break
        kept.append(char)
    return "".join(kept).rstrip() + "…"
