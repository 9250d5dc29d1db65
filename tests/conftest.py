from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from digest.cli import cli
from digest.clock import Clock, FixedClock

ROOT = Path(__file__).resolve().parent.parent
# Real-world material written by others (tests/data/SOURCES.md says where from).
DATA = Path(__file__).resolve().parent / "data"
SEED = DATA / "seed" / "000_ccfdb961c01e7e04.txt"
CORPUS = DATA / "corpus"
SAMPLE_JSON = ROOT / "digest" / "data" / "sample_articles.json"


def need(path: Path) -> Path:
    """path, which the repository carries: a missing fixture fails, it never skips."""
    if not path.exists():
        pytest.fail(f"{path} is missing: the test material is part of the repository")
    return path


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Unclosed connections and files warn in the test that left them, not a later one.
    What survives is frozen (moved out of the collector's sight): the next collection
    looks only at what the next test made, 10 ms instead of 120 ms over a heap of models."""
    yield
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The user's config must not leak into tests; the test run's own switches stay.
    for name in list(os.environ):
        if name.startswith("DIGEST_") and not name.startswith(("DIGEST_TEST_",
                                                               "DIGEST_REQUIRE_")):
            monkeypatch.delenv(name)


# How long a test's HTTP request to a server of its own may take: generous, so that a
# busy machine makes a test slower, never a failure.
HTTP_TIMEOUT = 60.0

# The time tests start at when they set the clock: a Monday morning, far from the day the
# suite runs on (the test of the clock itself runs the suite years ahead under faketime).
NOW = datetime(2031, 3, 3, 6, 0, tzinfo=UTC)


# The morning after the week digest/data/sample_articles.json holds (its newest article is
# from 2026-11-26 14:20 UTC): the `digest` fixture's folder stands here, so the sample is
# this week's news whenever the suite runs.
SAMPLE_WEEK = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    """A clock that stands at NOW until the test moves it."""
    return FixedClock(NOW)


class Digest:
    """Runs `digest …` in a working folder the way a user would; with a clock, every
    command decides by it (as a program embedding the CLI would hand in its own)."""

    def __init__(self, folder: Path, clock: Clock | None = None) -> None:
        self.folder = folder
        self.runner = CliRunner()
        self.clock = clock

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None
                 ) -> Result:
        cwd = os.getcwd()
        os.chdir(self.folder)
        try:
            return self.runner.invoke(cli, list(args), input=input, env=env,
                                      catch_exceptions=False, obj=self.clock)
        finally:
            os.chdir(cwd)

    def ok(self, *args: str, env: dict[str, str] | None = None) -> Result:
        result = self(*args, env=env)
        assert result.exit_code == 0, result.output
        return result

    def partly(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """Run a command that should do part of its work: some records (rows, feeds,
        recipients) fail, the others go through: exit code 3."""
        result = self(*args, env=env)
        assert result.exit_code == 3, result.output
        return result


# --- the store backend: SQLite always; PostgreSQL too when DIGEST_TEST_POSTGRES names a
# server (an admin URL such as postgresql+psycopg://postgres@127.0.0.1:5432/postgres).

def _backends() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("DIGEST_TEST_POSTGRES") else ["sqlite"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every store test runs on SQLite; the store's contract suite (tests marked
    both_backends, or in a module so marked: claims, locks, counters, migrations, dialect
    SQL, races) runs on PostgreSQL too when DIGEST_TEST_POSTGRES names a server."""
    if "store_url" not in metafunc.fixturenames:
        return
    node = metafunc.definition
    both = node.get_closest_marker("both_backends") and not node.get_closest_marker(
        "sqlite_only")
    backends = _backends() if both else ["sqlite"]
    metafunc.parametrize("store_url", [
        pytest.param(b, marks=[pytest.mark.postgres] if b == "postgresql" else [])
        for b in backends], indirect=True)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """-n auto: one worker more than cores. Many tests wait (on a process starting, a
    socket, SQLite's lock, a browser) rather than compute: on 2 cores the suite took
    131 s on 2 workers and 121 s on 3."""
    return (os.cpu_count() or 1) + 1


# Modules whose every test asks an outside program (a browser, a spam filter, a mail
# server) for its verdict; a test elsewhere that starts Dovecot is one too.
_JUDGED_MODULES = {"test_inbox", "test_browser", "test_admin_browser", "test_verp",
                   "test_mailbox"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of outside judges (`-m judges`, `-m 'not judges'`), and hand out
    the slow ones first: in parallel, a long test started last keeps one worker busy
    while the others have nothing left to do."""
    for item in items:
        module = item.module.__name__ if isinstance(item, pytest.Function) else ""
        if module in _JUDGED_MODULES or "dovecot" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.judges)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty store: an SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'digest.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin_url = os.environ["DIGEST_TEST_POSTGRES"]
    name = f"digest_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def digest(tmp_path: Path, store_url: str) -> Iterator[Digest]:
    """A folder where `digest init` has run, its config pointing at the test's store; its
    clock stands at SAMPLE_WEEK until the test moves it (digest.clock)."""
    d = Digest(tmp_path, FixedClock(SAMPLE_WEEK))
    d.ok("init", env={"DIGEST_STORE__URL": store_url})
    config = tmp_path / "digest.toml"
    config.write_text(config.read_text().replace('url = "sqlite:///digest.db"',
                                                 f'url = "{store_url}"'))
    yield d


def sql(folder: Path, statement: str) -> list[tuple[Any, ...]]:
    """Rows of a query against the store of the digest.toml in folder (either backend)."""
    from sqlalchemy import create_engine, text

    from digest.config import load_settings

    engine = create_engine(load_settings(folder / "digest.toml", environ={}).store_url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(statement))]
    finally:
        engine.dispose()


def execute(folder: Path, statement: str) -> None:
    """Change the store of the digest.toml in folder behind the program's back (what
    another process, or an older version, would have written), committed."""
    from sqlalchemy import create_engine, text

    from digest.config import load_settings

    engine = create_engine(load_settings(folder / "digest.toml", environ={}).store_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


# --- delivery fixtures ------------------------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402

from digest.mail.loopback import LoopbackSMTPServer  # noqa: E402


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


# --- mail servers of the bounce tests --------------------------------------------------

from mailservers import Dovecot, need_dovecot  # noqa: E402


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    """A real Dovecot on 127.0.0.1, one per test module (stopping one takes a second);
    each test adds a user of its own."""
    need_dovecot()
    server = Dovecot().start()
    yield server
    server.stop()


def fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run code in a new interpreter (nothing imported yet); fails when it fails."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
