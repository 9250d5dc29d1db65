"""Every command explains itself, with an example."""

from __future__ import annotations

import importlib
import pkgutil

import click
import pytest

import digest
import digest.cli
from digest.cli import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
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
            assert cli.commands.get(command.name or "") is command, (info.name, name)
            seen.add(command.name or "")
    assert seen == set(cli.commands)


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
