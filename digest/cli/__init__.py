"""The `digest` command. Thin: parse, call a service, print.

One module per command group; this one only builds the group and names them: setup
(init, db, check, demo), articles, preview, subscribers, send (send, worker), editions,
feeds, web (serve), schedule, bounces, suppressions. A command's module is imported when
the command runs, so that `digest --help` and each command load only what they use.
What the modules share is in app.py."""

from __future__ import annotations

import importlib

import click

from ..clock import Clock
from .app import App, DigestGroup

__all__ = ["cli", "main"]

# name → (module, attribute, the first line of the command's own help: what `digest
# --help` shows without importing the module; tests/test_docs.py keeps them equal).
COMMANDS = {
    "init": ("setup", "init", "Write DIRECTORY/digest.toml from the example, create the "
             "store, and write a random secret key beside the store (secret.key, mode "
             "0600) that signs the links in mail unless DIGEST_SECRET_KEY is set."),
    "db": ("setup", "db", "The store's schema."),
    "check": ("setup", "check", "Check the setup: config, store, secret key, DKIM key, and "
              "the SMTP server step by step (connect, EHLO, STARTTLS and AUTH when "
              "configured, QUIT)."),
    "demo": ("setup", "demo", "Try everything in a fresh folder: sample articles and "
             "subscribers, sent through a built-in SMTP server on 127.0.0.1; the received "
             "mail is kept in DIRECTORY/outbox."),
    "articles": ("articles", "articles", "Import, list, remove, pin and re-topic articles."),
    "preview": ("preview", "preview", "Render the coming edition without creating it, and "
                "write it to a file."),
    "subscribers": ("subscribers", "subscribers", "Add, change, import, export and list "
                    "subscribers."),
    "send": ("send", "send", "Create the next edition (or resume an unfinished one) and "
             "send it."),
    "worker": ("send", "worker", "Send queued deliveries; run any number of workers, on any "
               "number of machines."),
    "editions": ("editions", "editions", "Draft, shape, approve and list editions; show one "
                 "with its articles, delivery counts and clicks."),
    "admin": ("admin", "admin", "The people who may sign in to the admin pages (/admin on "
              "digest serve)."),
    "feeds": ("feeds", "feeds", "Add, list, remove and fetch RSS/Atom feeds."),
    "serve": ("web", "serve", "Serve the subscriber pages: one-click unsubscribe, sign-up "
              "with confirmation, topic preferences, and the archive (with an Atom feed); "
              "confirmation mails go out through [smtp] from a background thread."),
    "schedule": ("schedule", "schedule", "Run the scheduler, or show when it will run."),
    "bounces": ("bounces", "bounces", "Read bounces and complaints, and see what they did."),
    "suppressions": ("suppressions", "suppressions", "The addresses never to mail: "
                     "unsubscribed, complained, bounced, erased, manual."),
}


class LazyGroup(DigestGroup):
    """The commands of COMMANDS, each imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute, _help = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def load_all(self) -> dict[str, click.Command]:
        """Every command, imported."""
        for name in COMMANDS:
            self.get_command(click.Context(self), name)
        return dict(self.commands)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        # A stand-in command with the same help shortens it the way click would.
        rows = [(name, click.Command(name, help=COMMANDS[name][2]).get_short_help_str(limit))
                for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    # A program that embeds the CLI (and the tests) may hand in its clock as the context
    # object: cli.main(args, obj=FixedClock(...)). Otherwise the machine's clock.
    ctx.obj = App(config, ctx.obj if isinstance(ctx.obj, Clock) else None)


def main() -> None:
    """The console script `digest` (and `python -m digest`)."""
    cli(prog_name="digest")
