"""digest preview: the coming edition rendered to a file, without creating it."""

from __future__ import annotations

import webbrowser
from collections.abc import Sequence
from pathlib import Path

import click

from ..checks import check_rendered
from ..errors import InputError
from ..mail.preview import render_preview
from ..store.models import utcnow
from .app import App, err, out, print_steps

__all__ = ["preview"]


@click.command()
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

    \b
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
            print_steps(check_rendered(result.html, result.text), console=err)
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
        print_steps(check_rendered(result.html, result.text))
