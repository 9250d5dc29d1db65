"""What a store URL names, read the way the engine will read it (SQLAlchemy's parser).

Imported by the config (where the secret file goes depends on the store), so this
module imports nothing of digest: the config sits below the store.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["sqlite_file"]


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite store URL; None for any other store (a server, an
    in-memory database) and for a URL that does not parse (opening the store says what
    is wrong with it)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "",
                                                                          ":memory:"):
        return Path(parsed.database)
    return None
