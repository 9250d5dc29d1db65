from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from digest.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SEED = SHARED / "seed" / "000_ccfdb961c01e7e04.txt"
CORPUS = SHARED / "corpus"
SAMPLE_JSON = ROOT / "digest" / "data" / "sample_articles.json"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not here (the shared test material sits beside the project)")
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DIGEST_"):
            monkeypatch.delenv(name)


class Digest:
    """Runs `digest …` in a working folder the way a user would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None
                 ) -> Result:
        cwd = os.getcwd()
        os.chdir(self.folder)
        try:
            return self.runner.invoke(cli, list(args), input=input, env=env,
                                      catch_exceptions=False)
        finally:
            os.chdir(cwd)

    def ok(self, *args: str, env: dict[str, str] | None = None) -> Result:
        result = self(*args, env=env)
        assert result.exit_code == 0, result.output
        return result


@pytest.fixture
def digest(tmp_path: Path) -> Iterator[Digest]:
    """A folder where `digest init` has run."""
    d = Digest(tmp_path)
    d.ok("init")
    yield d
