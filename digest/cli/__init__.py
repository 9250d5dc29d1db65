"""The `digest` command. Thin: parse, call a service, print.

One module per command group; this one only builds the group and registers them:
setup (init, db, check, demo), articles, preview, subscribers, send (send, worker),
editions, feeds, web (serve), schedule. What they share is in app.py."""

from __future__ import annotations

import click

from . import (
    articles,
    bounces,
    editions,
    feeds,
    preview,
    schedule,
    send,
    setup,
    subscribers,
    suppressions,
    web,
)
from .app import App, DigestGroup

__all__ = ["cli", "main"]


@click.group(cls=DigestGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", metavar="PATH", envvar=None,
              help="Config file (default: $DIGEST_CONFIG, then ./digest.toml).")
@click.version_option(package_name="digest")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Build a topic-grouped digest of new articles and mail it to subscribers.

    Example:

    \b
        digest init && digest articles import articles.json && digest preview
    """
    ctx.obj = App(config)


for command in (setup.init, setup.db, setup.check, setup.demo, articles.articles,
                preview.preview, subscribers.subscribers, send.send, send.worker,
                editions.editions, feeds.feeds, web.serve, schedule.schedule, bounces.bounces,
                suppressions.suppressions):
    cli.add_command(command)


def main() -> None:
    """The console script `digest` (and `python -m digest`)."""
    cli(prog_name="digest")
