"""Topics that know when they do not know, and learn from the editor: an article's own
topic that names no topic is refused (or mapped by an alias), off-topic writing goes to
the catch-all, and every topic an editor gives (set-topic, editions move, an import's
topic) is an example the classifier learns from, says it learned from, and re-applies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, Digest, sql
from test_topics import NOW, item, rows

from digest.clock import FixedClock
from digest.config import GroupingSettings, TopicRule, default_topics, load_settings
from digest.content.topics import Signals, TopicClassifier
from digest.errors import ConfigError

OFF_TOPIC = DATA / "topics" / "off_topic.jsonl"


@pytest.fixture
def frozen(digest: Digest) -> None:
    digest.clock = FixedClock(NOW)


def _write(digest: Digest, name: str, items: list[dict[str, Any]]) -> Path:
    path = digest.folder / name
    path.write_text(json.dumps(items))
    return path


def _topics(digest: Digest, block: str) -> None:
    """Replace the config's [[topics]] with block."""
    config = digest.folder / "digest.toml"
    text = config.read_text()
    start = text.index("[[topics]]")
    end = text.find("\n[[feeds]]", start)
    config.write_text(text[:start] + block + ("" if end < 0 else text[end:]))


# --- an article's own topic ----------------------------------------------------------------

def test_an_unknown_topic_is_refused_in_one_line_and_the_rest_come_in(digest: Digest) -> None:
    path = _write(digest, "items.json", [item(185, "AP", 1), item(536, "Reuters", 2,
                                                                  topic="Gardening"),
                                          item(553, "AP", 3, topic="Business")])
    result = digest("articles", "import", str(path))
    assert result.exit_code == 3, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {path}: item 2: topic 'Gardening' is not a configured topic; choose one of "
        "AI, Technology, Science, Business, World, Politics, Culture, Sports, More stories (or "
        "add it to a topic's aliases in [[topics]])"], result.output
    assert "Imported 2 new articles, skipped 0 duplicates, 1 problem." in result.output
    assert sql(digest.folder, "SELECT topic FROM articles ORDER BY id")[1] == ("Business",)
    assert ("Gardening",) not in sql(digest.folder, "SELECT DISTINCT topic FROM articles")


def test_an_alias_maps_to_its_topic(digest: Digest) -> None:
    """config.example.toml gives Technology the aliases Tech and Sci/Tech."""
    path = _write(digest, "items.json", [item(536, "Reuters", 2, topic="sci/tech"),
                                          item(553, "AP", 3, topic=" TECH ")])
    digest.ok("articles", "import", str(path))
    assert sql(digest.folder, "SELECT topic, topic_reason FROM articles ORDER BY id") == [
        ("Technology", "explicit"), ("Technology", "explicit")]
    result = digest("articles", "import", str(path), "--topic", "Tech")
    assert result.exit_code == 0 and "Imported 0 new articles" in result.output


def test_an_alias_that_names_another_topic_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text('[[topics]]\nname = "AI"\n\n[[topics]]\nname = "Technology"\n'
                      'aliases = ["Tech", "ai"]\n')
    with pytest.raises(ConfigError, match=r"alias 'ai' already names the topic 'AI'"):
        load_settings(config, environ={})


def test_a_feed_under_an_unknown_topic_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text('[[topics]]\nname = "AI"\naliases = ["ML"]\n\n'
                      '[[feeds]]\nurl = "https://a.example/rss"\ntopic = "ml"\n\n'
                      '[[feeds]]\nurl = "https://b.example/rss"\ntopic = "Gardening"\n')
    with pytest.raises(ConfigError, match=r"feed #2 \(https://b.example/rss\): topic "
                                          r"'Gardening' is not a configured topic"):
        load_settings(config, environ={})


# --- knowing when no topic fits ------------------------------------------------------------

def _off_topic() -> list[Signals]:
    return [Signals(row["title"], row["summary"])
            for row in map(json.loads, OFF_TOPIC.read_text(encoding="utf-8").splitlines())]


def test_off_topic_writing_goes_to_the_catch_all_and_news_keeps_its_topic() -> None:
    """Podcast episodes, gardening and recipes (written for this test) are near none of
    the default topics; real news is. bench/topics.py prints the figures."""
    classifier = TopicClassifier(default_topics(), "More stories", GroupingSettings())
    off = classifier.assign_batch(_off_topic())
    assert sum(a.topic == "More stories" for a in off) >= 18, [a.topic for a in off]
    news = classifier.assign_batch([Signals(title, text) for _, title, text in rows()])
    assert sum(a.topic == "More stories" for a in news) <= 0.03 * len(news)


def test_with_two_topics_the_rest_of_the_news_goes_to_the_catch_all() -> None:
    two = (TopicRule("World", ("war", "election", "government", "president", "minister",
                               "united nations", "military", "diplomacy")),
           TopicRule("Sports", ("football", "baseball", "basketball", "tennis", "olympics",
                                "team", "coach", "championship")))
    sample = rows()
    picked = TopicClassifier(two, "More stories", GroupingSettings()).assign_batch(
        [Signals(title, text) for _, title, text in sample])
    right = {"1": "World", "2": "Sports"}
    kept = [a.topic == right[c] for a, (c, _, _) in zip(picked, sample, strict=True)
            if c in right]
    out = [a.topic == "More stories" for a, (c, _, _) in zip(picked, sample, strict=True)
           if c not in right]
    assert sum(kept) / len(kept) >= 0.78 and sum(out) / len(out) >= 0.67


# --- learning from the editor --------------------------------------------------------------

# A topic whose name and keywords say nothing of what the editor files under it.
PICKS = ('[[topics]]\nname = "Desk picks"\nkeywords = ["picks"]\n\n'
         '[[topics]]\nname = "Sports"\nkeywords = ["football"]\n')
# Companies' quarterly results (Lowe's, Kmart, HP): the editor files them under Desk
# picks; Dell's is the article that should follow them.
TAUGHT = [536, 553, 28]
PROBE = 130


def test_set_topic_teaches_and_retopic_re_applies(digest: Digest, frozen: None) -> None:
    _topics(digest, PICKS)
    path = _write(digest, "items.json", [item(line, "AP", 5) for line in TAUGHT]
                  + [item(PROBE, "Reuters", 4)])
    digest.ok("articles", "import", str(path))
    before = sql(digest.folder, "SELECT topic FROM articles WHERE id = 4")
    assert before == [("More stories",)]
    assert digest.ok("preview", "--explain").output.startswith(
        "topics: no examples yet (set-topic, editions move, imports with a topic)\n")
    for article_id in (1, 2, 3):
        digest.ok("articles", "set-topic", str(article_id), "desk PICKS")
    result = digest.ok("articles", "retopic")
    assert result.output == ("Looked at 1 article: 1 changed topic (learned from 3 "
                             "examples).\n")
    # Three examples nudge the topic's prototype (the learned model decides from 100).
    assert sql(digest.folder, "SELECT id, topic, topic_reason FROM articles ORDER BY id") == [
        (1, "Desk picks", "manual"), (2, "Desk picks", "manual"), (3, "Desk picks", "manual"),
        (4, "Desk picks", "semantic")]
    assert digest.ok("preview", "--explain").output.startswith(
        "topics: learned from 3 examples (topics an editor gave)\n")


def test_a_move_on_the_desk_teaches_the_next_import(digest: Digest, frozen: None) -> None:
    _topics(digest, PICKS)
    digest.ok("articles", "import", str(_write(digest, "first.json",
                                               [item(line, "AP", 5) for line in TAUGHT])))
    digest.ok("subscribers", "add", "ada@example.org")
    digest.ok("editions", "draft")
    elsewhere = sql(digest.folder, "SELECT id FROM articles WHERE topic <> 'Desk picks'")
    assert elsewhere
    for (article_id,) in elsewhere:
        digest.ok("editions", "move", "1", str(article_id), "Desk picks")
    digest.ok("articles", "import", str(_write(digest, "next.json",
                                               [item(PROBE, "Reuters", 4)])))
    assert sql(digest.folder, "SELECT topic, topic_reason FROM articles WHERE id = 4") == [
        ("Desk picks", "semantic")]


def test_imported_topics_are_examples(digest: Digest, frozen: None) -> None:
    _topics(digest, PICKS)
    digest.ok("articles", "import", str(_write(digest, "first.json", [
        item(line, "AP", 5, topic="Desk picks") for line in TAUGHT])))
    digest.ok("articles", "import", str(_write(digest, "next.json",
                                               [item(PROBE, "Reuters", 4)])))
    assert sql(digest.folder, "SELECT topic, topic_reason FROM articles WHERE id = 4") == [
        ("Desk picks", "semantic")]


def test_an_old_configs_similarity_threshold_is_retired_with_a_line(digest: Digest) -> None:
    """Configs written before carry min_confidence = 0.05, a similarity; read as the new
    margin it would send most news to the catch-all: it is ignored, with a line."""
    config = digest.folder / "digest.toml"
    text = config.read_text()
    config.write_text(text.replace("min_margin = -0.1", "min_confidence = 0.05"))
    assert "min_confidence = 0.05" in config.read_text()
    result = digest("articles", "list")
    assert result.exit_code == 0
    assert " ".join(result.stderr.split()).endswith(
        "[grouping] min_confidence is no longer a setting: a topic's confidence is now its "
        "margin over the subjects no topic covers, set by [grouping] min_margin (-0.1 by "
        "default); the old similarity threshold is ignored (remove it)")


def test_two_examples_nudge_but_do_not_decide(digest: Digest, frozen: None) -> None:
    """An editor files two market reports under Technology: world news stays world news.
    (When any number of examples made the learned model choose, 23 of the sample's 163
    world items followed them to Technology.)"""
    world = [226, 227, 228, 231, 253, 254]
    path = _write(digest, "items.json", [item(line, "Reuters", 5) for line in [1, 2, *world]])
    digest.ok("articles", "import", str(path))
    for article_id in (1, 2):
        digest.ok("articles", "set-topic", str(article_id), "Technology")
    assert "(learned from 2 examples)" in digest.ok("articles", "retopic").output
    topics = dict(sql(digest.folder, "SELECT id, topic FROM articles WHERE id > 2"))
    assert set(topics.values()) <= {"World", "Politics"}, topics


def test_the_learned_model_decides_from_a_hundred_examples(digest: Digest,
                                                          frozen: None) -> None:
    # 120 items an editor filed (the sample's own classes, under the default topics'
    # names), then one more: it is chosen by the model they taught.
    editor = {"1": "World", "2": "Sports", "3": "Business", "4": "Technology"}
    taught = [item(line, "AP", 30, topic=editor[rows()[line - 1][0]])
              for line in range(1, 121)]
    digest.ok("articles", "import", str(_write(digest, "taught.json", taught)))
    digest.ok("articles", "import", str(_write(digest, "next.json",
                                               [item(130, "Reuters", 4)])))
    assert sql(digest.folder, "SELECT topic_reason FROM articles WHERE url = "
                              "'https://reuters.example/130'") == [("learned",)]
