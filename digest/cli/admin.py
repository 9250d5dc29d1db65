"""digest admin: add-user, remove-user, list-users."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from ..errors import InputError
from .app import App, DigestGroup, out, print_table

__all__ = ["admin"]


@click.group(cls=DigestGroup)
def admin() -> None:
    """The people who may sign in to the admin pages (/admin on digest serve).

    Each has an address and a password (kept only as an argon2id hash); `digest serve`
    shows the pages at {base_url}/admin.

    Example:

    \b
        digest admin add-user editor@example.org && digest serve
    """


def _password_from(source: str) -> str:
    """The first line of a file ('-': standard input), its line end taken off."""
    try:
        if source == "-":
            line = sys.stdin.readline()
        else:
            with Path(source).open(encoding="utf-8") as fh:
                line = fh.readline()
    except OSError as exc:
        raise InputError(f"cannot read the password file {source}: {exc.strerror or exc}; "
                         f"check the path") from None
    except UnicodeDecodeError:
        raise InputError(f"the password file {source} is not UTF-8 text; write the password "
                         f"as text on its first line") from None
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        raise InputError(f"the password file {source} has no password on its first line")
    return password


@admin.command("add-user")
@click.argument("email")
@click.option("--password-file", metavar="FILE",
              help="Read the password from the first line of FILE ('-': standard input) "
                   "instead of asking for it twice.")
@click.pass_obj
def admin_add_user(app: App, email: str, password_file: str | None) -> None:
    """Let someone sign in to the admin pages with EMAIL and a password of at least 12
    characters (asked for twice, not shown, unless --password-file is given).

    Example:

    \b
        digest admin add-user editor@example.org --password-file - < password.txt
    """
    from ..audience.admins import add_user

    if password_file is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = _password_from(password_file)
    user = add_user(app.store, email, password)
    out.print(f"{user.email} may sign in at {app.settings.digest.base_url.rstrip('/')}/admin")


@admin.command("remove-user")
@click.argument("email")
@click.pass_obj
def admin_remove_user(app: App, email: str) -> None:
    """Take away someone's sign-in; their sessions end at once.

    Example:

    \b
        digest admin remove-user editor@example.org
    """
    from ..audience.admins import remove_user

    remove_user(app.store, email)
    out.print(f"Removed {email.strip()}: they can no longer sign in")


@admin.command("list-users")
@click.pass_obj
def admin_list_users(app: App) -> None:
    """Everyone who may sign in, with when they were added and last signed in (UTC).

    Example:

    \b
        digest admin list-users
    """
    from ..audience.admins import list_users

    users = list_users(app.store)
    if not users:
        out.print("Nobody may sign in yet: digest admin add-user EMAIL")
        return
    table = Table("email", "added", "last sign-in")
    for u in users:
        table.add_row(u.email, f"{u.created_at:%Y-%m-%d %H:%M}",
                      f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "never")
    print_table(table, keep=("email", "added", "last sign-in"))
