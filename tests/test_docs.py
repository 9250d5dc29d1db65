"""Every command explains itself, with an example."""

from __future__ import annotations

import click
import pytest

import digest
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
