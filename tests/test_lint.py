"""The code stays as checked as it is: ruff (E, F, W, I, B, UP, SIM) and mypy --strict,
with the settings in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "digest", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_finds_nothing() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


BENCH_SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name != "common.py")


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCH_SCRIPTS)
def test_each_bench_script_starts(script: str) -> None:
    """A bench script that no longer imports (a helper it took from another script was
    renamed) is found here rather than by the next person who measures."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")
