"""Every command explains itself, with an example."""

from __future__ import annotations

import importlib
import pkgutil

import click
import pytest
from conftest import fresh_python

import digest
import digest.cli
from digest.cli import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    commands = cli.load_all() if group is cli else group.commands
    for name, command in commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))


@pytest.mark.parametrize("path, command", list(_commands(cli)),
                         ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_has_help_with_an_example(path: tuple[str, ...],
                                                command: click.Command) -> None:
    assert command.help and len(command.help.strip()) > 20, path
    assert "Example:" in command.help, path


def test_public_api() -> None:
    assert sorted(digest.__all__) == ["DigestError", "Settings", "__version__", "load_settings"]


def test_every_command_module_is_registered() -> None:
    """Each module of digest/cli/ (but app, what they share) names its commands in
    __all__, and `digest` has every one of them under its own name."""
    seen: set[str] = set()
    for info in pkgutil.iter_modules(digest.cli.__path__):
        if info.name == "app":
            continue
        module = importlib.import_module(f"digest.cli.{info.name}")
        for name in module.__all__:
            command = getattr(module, name)
            assert isinstance(command, click.Command), (info.name, name)
            assert cli.load_all().get(command.name or "") is command, (info.name, name)
            seen.add(command.name or "")
    assert seen == set(cli.load_all())


def test_the_help_digest_shows_is_each_commands_own() -> None:
    from digest.cli import COMMANDS

    for name, command in cli.load_all().items():
        assert COMMANDS[name][2] == command.get_short_help_str(limit=1000), name


def test_help_loads_no_command_module() -> None:
    """`digest --help` once imported every command (SQLAlchemy, premailer, numpy, ...):
    1.0 s and 121 MB before it printed a line."""
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from digest.cli import cli\n"
            "assert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
            "heavy = {'sqlalchemy', 'numpy', 'premailer', 'jinja2', 'flask', 'httpx'}\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n")
    result = fresh_python(code)
    assert result.stdout == "[]\n"


@pytest.mark.parametrize("path, command", list(_commands(cli)),
                         ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_example_survives_a_narrow_terminal(path: tuple[str, ...],
                                                  command: click.Command) -> None:
    """Help rewrapped an example mid-command, so a copy and paste ran two commands."""
    from click.testing import CliRunner

    assert command.help
    example = command.help.split("Example:", 1)[1].replace("\b", "").strip().splitlines()[0]
    shown = CliRunner().invoke(cli, [*path, "--help"], terminal_width=60).output
    assert any(line.strip() == example.strip() for line in shown.splitlines()), path
