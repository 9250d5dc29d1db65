from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import ROOT, Digest

from digest.config import load_settings
from digest.content.topics import TopicClassifier
from digest.errors import ConfigError


def test_example_config_equals_the_built_in_defaults(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    example = load_settings(ROOT / "config.example.toml", environ={})
    defaults = load_settings(None, environ={})
    assert dataclasses.replace(example, config_path=None) == defaults


def test_lookup_order_and_environment_overlay(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.toml").write_text('[digest]\nname = "A"\n[smtp]\nport = 2525\n')
    (tmp_path / "b.toml").write_text('[digest]\nname = "B"\n')
    (tmp_path / "digest.toml").write_text('[digest]\nname = "Local"\n')
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, environ={}).digest.name == "Local"
    assert load_settings(None, environ={"DIGEST_CONFIG": "b.toml"}).digest.name == "B"
    s = load_settings("a.toml", environ={"DIGEST_CONFIG": "b.toml",
                                         "DIGEST_SMTP__PORT": "587",
                                         "DIGEST_SMTP__PASSWORD": "s3cret",
                                         "DIGEST_DELIVERY__WORKERS": "true"})
    assert (s.digest.name, s.smtp.port, s.smtp.password, s.delivery.workers) == \
        ("A", 587, "s3cret", True)
    assert "s3cret" not in repr(s)
    assert s.store_url == f"sqlite:///{tmp_path / 'digest.db'}"


@pytest.mark.parametrize("toml, message", [
    ('[smtp]\npassword = "x"\n', "secrets do not belong in files; remove it and set "
                                 "DIGEST_SMTP__PASSWORD in the environment"),
    ('[smtp]\nhots = "x"\n', "[smtp] hots is not a setting; known keys:"),
    ('[smtp]\nport = "many"\n', "[smtp] port: expected a whole number, got 'many'"),
    ('[smtp]\nsecurity = "tls"\n', "'tls' is not one of none, starttls, ssl"),
    ('[digest\n', "invalid TOML"),
    ('[schedule]\ntimezone = "Mars/Base"\n', "is not an IANA zone name"),
    ('[[topics]]\nkeywords = ["a"]\n', "topic #1 needs a name"),
    ('[tracking]\nclient_clicks = 0\n', "[tracking] client_clicks must be at least 1 and "
                                         "count_hours from 1 to 744 (31 days)"),
    ('[tracking]\ncount_hours = 0\n', "[tracking] client_clicks must be at least 1"),
])
def test_bad_config_is_one_clear_error(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "digest.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(path, environ={})
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_cli_reports_config_errors_in_one_line(tmp_path: Path) -> None:
    d = Digest(tmp_path)
    (tmp_path / "digest.toml").write_text("[digest]\nteaser_words = 2\n")
    result = d("articles", "list")
    assert result.exit_code == 1
    assert result.output == (f"Error: {tmp_path / 'digest.toml'}: [digest] teaser_words must "
                             f"be at least 5 (got 2)\n")
    result = d("--config", "nope.toml", "articles", "list")
    assert result.output == ("Error: config file nope.toml not found (create one with: "
                             "digest init)\n")


def test_init_refuses_to_overwrite(digest: Digest) -> None:
    result = digest("init")
    assert result.exit_code == 1
    assert "digest.toml already exists" in result.output


def test_topic_rules() -> None:
    s = load_settings(ROOT / "config.example.toml", environ={})
    c = TopicClassifier(s.topics, s.digest.catch_all_topic)
    assert c.assign("OpenAI unveils a new model", "") == "AI"
    assert c.assign("A quiet week", "The market fell, investors said, and the market rose.") \
        == "Business"
    # Whole words only: "paint" does not contain the keyword "AI".
    assert c.assign("Paint and waiting", "Plain chairs") == "More stories"
    assert c.assign("Anything", "", explicit="science") == "Science"
    assert c.assign("Anything", "", categories=["Misc", "sports"]) == "Sports"
    assert c.assign("Gardening tips", "", explicit="Gardening") == "Gardening"


def test_sqlite_urls_resolve_beside_the_config_and_keep_their_query(tmp_path: Path) -> None:
    (tmp_path / "digest.toml").write_text(
        '[store]\nurl = "sqlite+pysqlite:///data/news.db?timeout=5"\n')
    s = load_settings(tmp_path / "digest.toml", environ={})
    assert s.store_url == f"sqlite+pysqlite:///{tmp_path / 'data' / 'news.db'}?timeout=5"
    assert s.secret_file == tmp_path / "data" / "secret.key"
    memory = load_settings(tmp_path / "digest.toml",
                           environ={"DIGEST_STORE__URL": "sqlite:///:memory:"})
    assert memory.store_url == "sqlite:///:memory:"
    assert memory.secret_file == tmp_path / "secret.key"
