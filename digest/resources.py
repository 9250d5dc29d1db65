"""Files shipped with the package: templates, the example config, sample data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["package_resource"]


def package_resource(name: str) -> Path:
    """A shipped file; in a source checkout it is read from the repository's top level."""
    packaged = Path(str(resources.files("digest"))) / name
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / name
