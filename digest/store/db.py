"""Engine and session factories, and the Store that owns them for one process.

SQLite gets WAL and a busy timeout; the schema is checked (or created) on open. The
Store lives here, beside the engine it owns, rather than in the package's __init__: the
query modules (articles, editions, ledger, locks, ...) import it, and the package's
__init__ importing them back would make an import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, Engine, Result, Table, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..clock import Clock, system_clock
from ..config import Settings
from ..errors import StoreError
from .models import Base

if TYPE_CHECKING:       # alembic is imported only to migrate (80 ms of every start)
    from alembic.config import Config

# Session is here for the services that run several queries in one transaction of theirs.
__all__ = ["SCHEMA_HEAD", "STORE_ERRORS", "Session", "Store", "StoreConflict",
           "StoreUnavailable", "check_schema", "create_fresh",
           "current_revision", "head_revision", "open_engine", "rowcount", "session_factory",
           "table_of", "upgrade_schema", "upgrade_store"]

# What a query raises when the database went away or stayed locked past the busy
# timeout: named here so that callers outside store/ (the CLI's one-line error) need not
# import SQLAlchemy.
StoreUnavailable = OperationalError

# A write that broke a unique constraint: another transaction wrote the same row first.
StoreConflict = IntegrityError

# Every error a query raises when the store cannot answer it (StoreUnavailable, a table
# missing or refused, ...): what callers outside store/ catch to report a store problem.
STORE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError,)


def table_of(model: type[Base]) -> Table:
    """A model's Core table, for statements that bypass the ORM (bulk and hot paths)."""
    return cast(Table, model.__table__)


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched (their results are cursor results)."""
    return int(cast(CursorResult[Any], result).rowcount or 0)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL survives a killed process (only power loss can drop the last commits).
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # Claims ask for BEGIN IMMEDIATE (execution option sqlite_begin) to take the write
    # lock up front, so two senders never read the same pending rows.
    conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def _sqlite_file(url: str, create: bool) -> None:
    """An SQLite store's file: created readable by its owner only (it holds addresses,
    consent records and password hashes; SQLite gives its -wal and -shm files the same
    mode) when create, else a StoreError when it does not exist (a command given a copied
    config must not start an empty store beside it)."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.exists():
        return
    if not create:
        raise StoreError(f"no store at {path.resolve()} (store.url {url!r}); create it with "
                         f"`digest init` in that folder, or set store.url to the store")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:                 # made by another process meanwhile
        pass
    except OSError as exc:
        raise StoreError(f"cannot create the store at {path}: {exc.strerror}") from None


def open_engine(url: str, create: bool = True) -> Engine:
    """An engine for url; raises StoreError with the fix when it cannot be opened (or,
    unless create, when an SQLite store's file does not exist)."""
    try:
        if url.startswith("sqlite"):
            _sqlite_file(url, create)
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            # Let SQLAlchemy issue BEGIN itself, so BEGIN IMMEDIATE can be used for claims.
            event.listen(engine, "connect", lambda c, _r: setattr(c, "isolation_level", None))
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"store.url {url!r} is not usable: {exc}") from None
    return engine


MIGRATIONS = "digest.store:migrations"
# The newest migration's revision: what every store is checked against when it opens,
# without reading the migration scripts (tests/test_db.py keeps it equal to theirs).
SCHEMA_HEAD = "0011"
_FIRST_TABLES = {"sources", "articles", "subscribers", "editions", "deliveries"}


def _alembic_config(connection: Any) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision, as the migration scripts say."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The store's schema revision (None: none recorded), read without alembic."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if version is None else str(version)


def upgrade_schema(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Bring the store to `revision` (default: the newest); returns (before, after).
    A store made before migrations existed (its tables, no version) is taken to be at the
    first revision and upgraded from there."""
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                # Batch migrations copy tables; foreign keys would cascade on the drop.
                # (The pragma is ignored inside a transaction, so it goes first.)
                driver: Any = conn.connection.driver_connection
                driver.execute("PRAGMA foreign_keys=OFF")
            with conn.begin():
                before, after = _upgrade(conn, revision)
            if engine.dialect.name == "sqlite":
                driver.execute("PRAGMA foreign_keys=ON")
    except OperationalError as exc:
        raise StoreError(f"cannot open the store at {engine.url!r}: {exc.orig}") from None
    return before, after


def upgrade_store(url: str, create: bool = True) -> tuple[str | None, str]:
    """Open the store at `url`, bring it to the newest schema and let go of it again;
    returns (before, after) as upgrade_schema does. What `digest init` and `digest db
    upgrade` run, with no process holding the store; unless create, a missing SQLite
    store is a StoreError."""
    engine = open_engine(url, create)
    try:
        if create_fresh(engine):
            return None, SCHEMA_HEAD
        return upgrade_schema(engine)
    finally:
        engine.dispose()


def create_fresh(engine: Engine) -> bool:
    """Give a new, empty store the newest schema at once: the tables of the models and
    the head revision, in one transaction, instead of replaying every migration (each
    of SQLite's batch migrations copies tables; tests/test_db.py keeps the two equal).
    False (nothing done) when the store holds digest's tables or a revision already."""
    try:
        with engine.begin() as conn:
            tables = set(inspect(conn).get_table_names())
            if tables & _FIRST_TABLES or "alembic_version" in tables:
                return False
            Base.metadata.create_all(conn)
            conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT "
                              "NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY "
                              "(version_num))"))
            conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"),
                         {"head": SCHEMA_HEAD})
    except OperationalError as exc:
        raise StoreError(f"cannot open the store at {engine.url!r}: {exc.orig}") from None
    return True


def _upgrade(conn: Any, revision: str) -> tuple[str | None, str]:
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    tables = set(inspect(conn).get_table_names())
    before = MigrationContext.configure(conn).get_current_revision()
    config = _alembic_config(conn)
    if before is None and tables >= _FIRST_TABLES:
        command.stamp(config, "0001")
        before = "0001"
    command.upgrade(config, revision)
    after = MigrationContext.configure(conn).get_current_revision()
    return before, after or ""


def check_schema(engine: Engine) -> None:
    """A new, empty store gets the schema; one at an older revision is an error telling
    how to upgrade (several processes must not migrate at once behind each other's back)."""
    try:
        current = current_revision(engine)
        if current is None:
            tables = set(inspect(engine).get_table_names())
            if not tables & _FIRST_TABLES:
                if not create_fresh(engine):
                    upgrade_schema(engine)
                return
        head = SCHEMA_HEAD
        if current != head:
            have = current or "none"
            raise StoreError(f"the store at {engine.url!r} has schema revision {have}, this "
                             f"digest needs {head}: run digest db upgrade")
    except OperationalError as exc:
        raise StoreError(f"cannot open the store at {engine.url!r}: {exc.orig}") from None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class Store:
    """Owns the engine and the session factories; the store's query modules take it.

    It also carries the clock of whoever opened it: what the store stamps (when an
    article was added, when a delivery is due again) is that clock's time, so a caller
    that sets the time gets it everywhere below."""

    def __init__(self, url: str, clock: Clock | None = None, create: bool = True) -> None:
        self.url = url
        self.clock: Clock = clock or system_clock()
        self.engine: Engine = open_engine(url, create)
        try:
            check_schema(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        # Sessions that write: on SQLite they take the write lock at BEGIN, so a
        # read-then-write never fails with "database is locked" when another process
        # committed in between (SQLite cannot upgrade a stale read snapshot).
        self.writes: sessionmaker[Session] = session_factory(
            self.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE"))

    @property
    def single_writer(self) -> bool:
        """Whether one writer at a time locks the whole store (SQLite), rather than rows."""
        return self.engine.dialect.name == "sqlite"

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None,
                      create: bool = True) -> Store:
        return cls(settings.store_url, clock, create)

    def close(self) -> None:
        self.engine.dispose()
