"""Migrations: a new store gets the schema, an older one upgrades in place with its data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import Digest
from sqlalchemy import create_engine, text

from digest.store.db import create_fresh, head_revision, open_engine, upgrade_schema
from digest.store.models import Base

# The store's contract: on PostgreSQL too when DIGEST_TEST_POSTGRES names a server.
pytestmark = pytest.mark.both_backends


def test_the_migrations_build_exactly_the_models(store_url: str) -> None:
    engine = open_engine(store_url)
    try:
        assert upgrade_schema(engine) == (None, head_revision())
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_a_new_store_made_at_once_is_the_migrated_schema(store_url: str) -> None:
    """A new store gets the models' tables and the head revision in one step (replaying
    the migrations copied SQLite tables at every store made); it must be exactly what
    the migrations build, and later upgrades start from its revision."""
    engine = open_engine(store_url)
    try:
        assert create_fresh(engine) is True
        assert create_fresh(engine) is False                  # never twice
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            assert MigrationContext.configure(conn).get_current_revision() == head_revision()
        assert upgrade_schema(engine) == (head_revision(), head_revision())
    finally:
        engine.dispose()


def _old_store(store_url: str) -> None:
    """A store as the first released schema left it, with data in it."""
    engine = open_engine(store_url)
    upgrade_schema(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text(
            "insert into subscribers (email, email_key, name, status, topics, timezone, "
            "token_version, hard_bounces, created_at, updated_at) values ('ada@example.org', "
            "'ada@example.org', 'Ada', 'active', '[\"AI\"]', 'Europe/London', 1, 0, "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
        conn.execute(text(
            "insert into articles (title, body, topic, tags, content_hash, added_at) values "
            "('An old article', 'Its text.', 'AI', '[]', 'abc', '2026-01-01 00:00:00')"))
    engine.dispose()


def test_an_older_store_upgrades_in_place_with_its_data(tmp_path: Path, store_url: str) -> None:
    _old_store(store_url)
    d = Digest(tmp_path)
    (tmp_path / "digest.toml").write_text(f'[store]\nurl = "{store_url}"\n')
    head = head_revision()
    refused = d("articles", "list")
    assert refused.exit_code == 1
    assert f"has schema revision 0001, this digest needs {head}: run digest db upgrade" in \
        refused.output
    assert d.ok("db", "upgrade").stdout == \
        f"Upgraded the store from schema revision 0001 to {head}.\n"
    assert d.ok("db", "upgrade").stdout == \
        f"The store is at the current schema revision ({head}); nothing to do.\n"
    rows = json.loads(d.ok("articles", "list", "--new", "--format", "json").stdout)
    assert [r["title"] for r in rows] == ["An old article"]
    subs = json.loads(d.ok("subscribers", "list", "--format", "json").stdout)
    assert subs == [{"email": "ada@example.org", "name": "Ada", "status": "active",
                     "topics": ["AI"], "timezone": "Europe/London"}]
    d.ok("feeds", "add", "https://example.org/feed.xml", "--name", "New in 0002")


def test_a_store_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _old_store(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("drop table alembic_version"))   # made before there were any
    engine.dispose()
    engine = open_engine(url)
    assert upgrade_schema(engine) == ("0001", head_revision())
    with engine.connect() as conn:
        assert conn.execute(text("select title from articles")).scalar() == "An old article"
    engine.dispose()


def test_a_0002_store_upgrades_to_the_outbox_and_rate_limits(tmp_path: Path,
                                                              store_url: str) -> None:
    engine = open_engine(store_url)
    upgrade_schema(engine, "0002")
    engine.dispose()
    d = Digest(tmp_path)
    (tmp_path / "digest.toml").write_text(f'[store]\nurl = "{store_url}"\n')
    assert d.ok("db", "upgrade").stdout == \
        f"Upgraded the store from schema revision 0002 to {head_revision()}.\n"
    engine = create_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from outbox")).scalar() == 0
        assert conn.execute(text("select count(*) from rate_limits")).scalar() == 0
    engine.dispose()


def test_a_0003_store_upgrades_to_removed_articles_kept_as_tombstones(tmp_path: Path,
                                                                      store_url: str) -> None:
    engine = open_engine(store_url)
    upgrade_schema(engine, "0003")
    with engine.begin() as conn:
        conn.execute(text(
            "insert into articles (title, body, topic, tags, content_hash, added_at, "
            "is_backlog) values ('An article from 0003', 'Its text.', 'AI', '[]', 'abc', "
            "'2026-01-01 00:00:00', false)"))
    engine.dispose()
    d = Digest(tmp_path)
    (tmp_path / "digest.toml").write_text(f'[store]\nurl = "{store_url}"\n')
    assert "run digest db upgrade" in d("articles", "list").output
    assert d.ok("db", "upgrade").stdout == \
        f"Upgraded the store from schema revision 0003 to {head_revision()}.\n"
    rows = json.loads(d.ok("articles", "list", "--new", "--format", "json").stdout)
    assert [(r["title"], r["removed_at"]) for r in rows] == [("An article from 0003", None)]
    d.ok("articles", "remove", str(rows[0]["id"]))
    assert json.loads(d.ok("articles", "list", "--format", "json").stdout) == []
    engine = create_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(text("select title, body from articles where removed_at is not "
                                 "null")).all() == [("An article from 0003", "")]
    engine.dispose()


def test_the_head_every_store_is_checked_against_is_the_migrations() -> None:
    from digest.store.db import SCHEMA_HEAD

    assert head_revision() == SCHEMA_HEAD


def test_a_copied_config_never_starts_an_empty_store(tmp_path: Path) -> None:
    # `digest --config elsewhere/digest.toml subscribers list` used to create a fresh,
    # empty digest.db beside the copy and say "0 subscribers".
    home = Digest(tmp_path / "home")
    home.folder.mkdir()
    home.ok("init")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "digest.toml").write_text((home.folder / "digest.toml").read_text())
    for command in (["subscribers", "list"], ["db", "upgrade"], ["schedule", "run"],
                    ["serve", "--port", "9"]):
        result = home("--config", str(elsewhere / "digest.toml"), *command)
        assert result.exit_code == 1, (command, result.output)
        assert f"no store at {elsewhere / 'digest.db'}" in " ".join(result.output.split())
        assert "Traceback" not in result.output
    assert not (elsewhere / "digest.db").exists()


def test_the_store_file_is_its_owners_only(tmp_path: Path) -> None:
    # It holds addresses, consent records and password hashes: digest init made it 0644.
    d = Digest(tmp_path)
    d.ok("init")
    d.ok("subscribers", "add", "ada@example.org")
    for name in ("digest.db", "digest.db-wal", "digest.db-shm"):
        path = tmp_path / name
        if path.exists():
            assert path.stat().st_mode & 0o777 == 0o600, name
    assert (tmp_path / "digest.db").exists()
