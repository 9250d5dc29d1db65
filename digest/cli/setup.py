"""Setting a digest folder up: init, db upgrade, check, and the demo."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from ..audience.privacy import compact
from ..checks import check_setup
from ..config import load_settings
from ..demo import run_demo
from ..errors import InputError
from ..resources import package_resource
from ..store.db import upgrade_store
from ..tokens import create_secret_file
from .app import App, DigestGroup, delivery_table, out, print_steps, progress_bar

__all__ = ["check", "db", "demo", "init"]


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Overwrite an existing digest.toml (never the secret key).")
def init(directory: Path, force: bool) -> None:
    """Write DIRECTORY/digest.toml from the example, create the store, and write a random
    secret key beside the store (secret.key, mode 0600) that signs the links in mail
    unless DIGEST_SECRET_KEY is set. An existing key is never replaced; in a folder that
    has a digest.toml but no key, init only writes the key.

    Example:

    \b
        digest init newsletter && cd newsletter && digest preview
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder {directory} ({exc.strerror}); choose a "
                         f"folder you can write to") from None
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
    upgrade_store(settings.store_url)
    wrote_key = create_secret_file(settings.secret_file)
    out.print(f"Wrote {target} and created the store at {settings.store_url}")
    if wrote_key:
        out.print(f"Wrote the secret key {settings.secret_file} (keep it private; it signs "
                  f"the links in every email)")
    out.print("Next: digest articles import FILE…, then digest preview")
    out.print(f"Before sending real mail, set in {target} (then run digest check):\n"
              "  [smtp] host, port, username  your mail server\n"
              "  DIGEST_SMTP__PASSWORD        its password (in the environment only)\n"
              "  [digest] from                your sender address, not at example.org\n"
              "  [digest] base_url            the public address of `digest serve`\n"
              "  [digest] postal_address      yours; every footer shows it\n"
              f"  secret key                   keep {settings.secret_file.name} private, or "
              "set DIGEST_SECRET_KEY")


@click.group(cls=DigestGroup)
def db() -> None:
    """The store's schema.

    Example:

    \b
        digest db upgrade
    """


@db.command("compact")
@click.pass_obj
def db_compact(app: App) -> None:
    """Rewrite an SQLite store without its free space (where erased data may linger).

    `digest subscribers erase` does this itself; run it when erase said another process
    was reading the store.

    Example:

    \b
        digest db compact
    """
    if not compact(app.store):
        raise InputError("another process kept the store busy for 30 seconds; stop it "
                         "(digest serve, the scheduler) for a moment and run this again")
    out.print("The store file holds no free space or write-ahead log any more.")


@db.command("upgrade")
@click.pass_obj
def db_upgrade(app: App) -> None:
    """Bring the store to the current schema, keeping its data.

    Run it after installing a newer digest (stop the scheduler and workers first).

    Example:

    \b
        digest --config /etc/digest/digest.toml db upgrade
    """
    before, after = upgrade_store(app.settings.store_url, create=False)
    if before == after:
        out.print(f"The store is at the current schema revision ({after}); nothing to do.")
    else:
        out.print(f"Upgraded the store from schema revision {before or 'none (empty)'} to "
                  f"{after}.")


@click.command()
@click.pass_obj
def check(app: App) -> None:
    """Check the setup: config, store, secret key, DKIM key, and the SMTP server step by
    step (connect, EHLO, STARTTLS and AUTH when configured, QUIT). Sends nothing.

    Example:

    \b
        DIGEST_SMTP__PASSWORD=… digest check
    """
    print_steps(check_setup(app.settings, app.store))


@click.command()
@click.argument("directory", default="digest-demo",
                type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def demo(app: App, directory: Path) -> None:
    """Try everything in a fresh folder: sample articles and subscribers, sent through a
    built-in SMTP server on 127.0.0.1; the received mail is kept in DIRECTORY/outbox.

    Example:

    \b
        digest demo demo-out && xdg-open demo-out/preview.html
    """
    with progress_bar() as progress:
        task = progress.add_task("Sending", total=None)
        result = run_demo(directory, progress=lambda _s: progress.advance(task),
                          clock=app.clock)
    out.print(f"Imported {result.articles} sample articles and {result.subscribers} "
              f"subscribers into {result.config.parent / 'digest.db'}")
    out.print(delivery_table(result.report))
    out.print(f"The loopback SMTP server received {result.messages} messages:")
    out.print(f"  messages  {result.outbox}/*.eml")
    out.print(f"  preview   {result.preview} (the whole edition, every topic)")
    out.print(f"  config    {result.config}")
    # As typed: after the README's first command `digest` is not on PATH yet.
    command = "digest" if shutil.which("digest") else sys.argv[0]
    out.print(f"Look around: {command} --config {result.config} editions show "
              f"{result.report.edition}")
    out.print(f"The demo's SMTP server has stopped: to try sending again, {command} --config "
              f"{result.config} send --dry-run (or set [smtp] in it to a real server)")
