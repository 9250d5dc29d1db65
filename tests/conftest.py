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


# --- delivery fixtures ------------------------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402

from digest.loopback import LoopbackSMTPServer  # noqa: E402


@pytest.fixture
def smtp() -> Iterator[LoopbackSMTPServer]:
    """A real SMTP server on 127.0.0.1; set .reply_policy to make it misbehave."""
    server = LoopbackSMTPServer().start()
    yield server
    server.stop()


def smtp_env(server: LoopbackSMTPServer, **extra: str) -> dict[str, str]:
    env = {"DIGEST_SMTP__HOST": "127.0.0.1", "DIGEST_SMTP__PORT": str(server.port),
           "DIGEST_SMTP__TIMEOUT": "5", "DIGEST_DELIVERY__RETRY_BASE_SECONDS": "0"}
    env.update(extra)
    return env


def write_subscribers(folder: Path, count: int, topics: str = "") -> Path:
    path = folder / "subs.csv"
    lines = ["email,name,topics,timezone"]
    lines += [f"reader{i:05d}@example.org,Reader {i},{topics},Europe/Berlin"
              for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_digest(folder: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`digest …` as a separate process (for kill and concurrency tests)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    full.update(env)
    full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "digest", *args], cwd=folder, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
