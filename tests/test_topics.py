"""Topics by meaning, one entry per story, the ranking and `preview --explain`.

The news items are real: AG News items (tests/data/topics, see SOURCES.md), each
row's class, title and description, imported as a feed would bring them."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, SEED, Digest, fresh_python, need, sql
from conftest import NOW as START

from digest.clock import FixedClock
from digest.config import GroupingSettings, TopicRule, default_topics
from digest.content.semantic import pack
from digest.content.topics import Signals, TopicClassifier
from digest.store.articles import LearningRow

SAMPLE = DATA / "topics" / "ag_news_train_sample.csv"
# The time of the tests that set the clock (`frozen`); the articles' dates are set from it.
NOW = START


def rows() -> list[list[str]]:
    with need(SAMPLE).open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def item(line: int, source: str, hours_ago: float, **extra: Any) -> dict[str, Any]:
    """Row `line` (1-based, as in the file) as an article of `source`."""
    _, title, description = rows()[line - 1]
    text = description.replace("\\", " ")
    return {"title": title, "summary": text, "body": text, "source": source,
            "url": f"https://{source.lower().replace(' ', '-')}.example/{line}",
            "published_at": (NOW - timedelta(hours=hours_ago)).isoformat(), **extra}


def import_items(digest: Digest, items: list[dict[str, Any]]) -> None:
    path = digest.folder / "items.json"
    path.write_text(json.dumps(items))
    digest.ok("articles", "import", str(path))


@pytest.fixture
def frozen(digest: Digest) -> None:
    """Every `digest …` of the test (imports and preview alike) sees NOW as the time."""
    digest.clock = FixedClock(NOW)


# --- choosing the topic -------------------------------------------------------------------

FOUR = (TopicRule("World", ("war", "election", "government", "president")),
        TopicRule("Sports", ("football", "baseball", "tennis", "olympics")),
        TopicRule("Business", ("stocks", "market", "company", "earnings")),
        TopicRule("Technology", ("software", "internet", "computer", "phone")))


def test_meaning_finds_topics_no_keyword_names() -> None:
    """None of these titles or descriptions holds a keyword of its topic."""
    classifier = TopicClassifier(FOUR, "More stories", GroupingSettings())
    picked = classifier.assign_batch([
        Signals("Yankees rally past Red Sox"),
        Signals("Dream Team Stunned by Puerto Rico 92-73"),
        Signals("Lowe's Second-Quarter Profit Rises"),
        Signals("Rwandan troops arrive in Darfur as president vows force to protect monitors"),
    ])
    assert [(a.topic, a.reason) for a in picked] == [
        ("Sports", "semantic"), ("Sports", "semantic"), ("Business", "semantic"),
        ("World", "semantic")]
    assert all(a.confidence is not None and a.vector is not None for a in picked)


def test_explicit_feed_and_tags_come_before_meaning() -> None:
    classifier = TopicClassifier(FOUR, "More stories", GroupingSettings())
    football = "Yankees rally past Red Sox in the ninth"
    picked = classifier.assign_batch([
        Signals(football, explicit="business"),
        Signals(football, feed_topic="Technology"),
        Signals(football, explicit="Gardening"),
        Signals(football, tags=("earnings",)),
        Signals(football, categories=("World",)),
    ])
    assert [(a.topic, a.reason, a.confidence) for a in picked] == [
        ("Business", "explicit", None), ("Technology", "feed", None),
        ("Gardening", "explicit", None), ("Business", "tag", None), ("World", "tag", None)]


def test_the_keywords_method_never_loads_the_model() -> None:
    classifier = TopicClassifier(FOUR, "More stories", GroupingSettings(method="keywords"))
    picked = classifier.assign_batch([Signals("Yankees rally past Red Sox"),
                                      Signals("Tennis final tonight")])
    assert [(a.topic, a.reason, a.vector) for a in picked] == [
        ("More stories", "catch-all", None), ("Sports", "keyword", None)]


def test_what_no_topic_is_close_to_goes_to_the_catch_all() -> None:
    grouping = GroupingSettings(min_margin=0.5)
    picked = TopicClassifier(FOUR, "More stories", grouping).assign_batch(
        [Signals("Happy holidays from all of us")])[0]
    assert (picked.topic, picked.reason) == ("More stories", "catch-all")
    assert picked.confidence is not None and picked.confidence < 0.5


def test_topics_learn_from_what_the_store_holds() -> None:
    """A topic whose words say little ("Home") sharpens on the articles an editor put
    under it."""
    rules = (TopicRule("Home", ("house",)), TopicRule("Sports", ("football",)))
    classifier = TopicClassifier(rules, "More stories", GroupingSettings())
    taught = classifier.embed(["Lowe's Second-Quarter Profit Rises on home improvement",
                               "Home Depot reports record sales of tools and lumber",
                               "Mortgage rates fall as housing market cools"])
    probe = Signals("Home improvement retailer Lowe's beats estimates")
    before = classifier.assign_batch([probe])[0].confidence
    classifier.learn_rows([LearningRow("Home", "manual", None, pack(v)) for v in taught])
    after = classifier.assign_batch([probe])[0]
    assert classifier.learned == {"Home": 9.0}
    assert after.topic == "Home" and before is not None and after.confidence is not None
    assert after.confidence > before + 0.05


def test_accuracy_on_labelled_news_stays_above_its_floor() -> None:
    """bench/topics.py prints the figures; these floors sit a little under them."""
    signals, labels = [], []
    for label, title, description in rows():
        signals.append(Signals(title, description.replace("\\", " ")))
        labels.append(int(label))
    right = {1: {"World", "Politics"}, 2: {"Sports"}, 3: {"Business"},
             4: {"Technology", "Science", "AI"}}
    classifier = TopicClassifier(default_topics(), "More stories", GroupingSettings())
    picked = classifier.assign_batch(signals)
    accuracy = sum(a.topic in right[y] for a, y in zip(picked, labels, strict=True)) / len(labels)
    assert accuracy >= 0.66


def test_the_seed_article_lands_under_ai(digest: Digest) -> None:
    digest.ok("articles", "import", str(need(SEED)))
    assert sql(digest.folder, "SELECT topic, topic_reason FROM articles") == [("AI", "semantic")]


# --- stories ---------------------------------------------------------------------------

POPE = [item(342, "AP", 5), item(488, "Boston Globe", 20), item(334, "Reuters", 3)]


def test_one_event_from_three_feeds_is_one_entry(digest: Digest, frozen: None) -> None:
    import_items(digest, POPE)
    digest.ok("preview", "--out", "p.html")
    html = (digest.folder / "p.html").read_text()
    assert html.count('class="title"') == 1
    # The fullest of the three leads; the others follow as links.
    assert "Pope struggles at shrine Mass" in html and "Also covered by" in html
    assert 'href="https://ap.example/342' in html
    assert 'href="https://reuters.example/334' in html
    digest.ok("preview", "--text", "--out", "p.txt")
    text = (digest.folder / "p.txt").read_text()
    assert "Also covered by AP: https://ap.example/342" in text


def test_look_alike_stories_stay_apart(digest: Digest, frozen: None) -> None:
    import_items(digest, [
        # Two retailers' quarterly profits on the same Monday.
        item(536, "Reuters", 2), item(553, "AP", 3),
        # Two games of the same teams a day apart: the scores differ.
        item(185, "AP", 30), item(380, "Reuters", 6),
        # The same story, a week apart: past the window.
        item(342, "AP", 2), item(488, "Boston Globe", 2 + 24 * 7),
    ])
    result = digest.ok("preview", "--explain")
    stories = {line.split()[3] for line in result.output.splitlines()
               if line.strip()[:1].isdigit()}
    assert len(stories) == 6, result.output


def test_explain_lists_topic_reason_story_and_score(digest: Digest, frozen: None) -> None:
    import_items(digest, [*POPE, item(536, "Reuters", 24, topic="Business"),
                          item(185, "AP", 30), item(553, "AP", 48)])
    digest.ok("articles", "pin", "6")
    result = digest.ok("preview", "--explain")
    # Pope: 3 sources, the lead 20 h old: 1 × (1 + 0.5 × 2) × 0.5^(20/48) = 1.498.
    assert result.output == (
        "topics: learned from 1 example (topics an editor gave)\n"
        "story: the article that leads it; conf: margin of a choice by meaning\n"
        "score: weight × (1 + 0.5 × (sources − 1)) × 0.5^(age ÷ half_life_hours)\n"
        "undated: no date in its record, page or text; aged from when it came in,\n"
        "at least one half-life\n"
        "\n"
        "Business (2 stories)\n"
        "    id  why        conf  story   score  title\n"
        "     6  semantic   0.35      6  pinned  Cost Cuts Boost Kmart Quarterly Profit…\n"
        "     4  explicit      -      4   0.707  Lowe's Second-Quarter Profit Rises\n"
        "\n"
        "Sports (1 story)\n"
        "    id  why        conf  story   score  title\n"
        "     5  semantic   0.07      5   0.648  Indians Beat Twins 7-1, Nearing AL Lead…\n"
        "\n"
        # A papal Mass is religion, a subject none of the default topics covers.
        "More stories (1 story)\n"
        "    id  why        conf  story   score  title\n"
        "     2  catch-all -0.14      2   1.498  Pope struggles at shrine Mass\n"
        "     1  catch-all -0.16      2          Pope Struggles Through Mass at Lourdes…\n"
        "     3  catch-all -0.24      2          Frail Pope Ends Tiring Lourdes Pilgrima…\n")


def test_a_heavier_feed_ranks_first(digest: Digest, frozen: None, tmp_path: Path) -> None:
    from digest.config import load_settings
    from digest.ingest.feeds import FeedBook
    from digest.store.db import Store

    config = tmp_path / "digest.toml"
    config.write_text(config.read_text() + '\n[[feeds]]\nurl = "https://wire.example/rss"\n'
                      'name = "Wire"\nweight = 3\n')
    store = Store.from_settings(load_settings(config, environ={}))
    try:
        FeedBook(store, load_settings(config, environ={})).add(
            "https://wire.example/rss", "Wire", from_config=True)
        FeedBook(store, load_settings(config, environ={})).sync_config()
    finally:
        store.close()
    import_items(digest, [item(536, "Reuters", 1, topic="Business"),
                          item(553, "Wire", 20, topic="Business")])
    result = digest.ok("preview", "--explain")
    ids = [line.split()[0] for line in result.output.splitlines()
           if line.strip()[:1].isdigit()]
    assert ids == ["2", "1"], result.output


# --- retopic -------------------------------------------------------------------------------

@pytest.mark.both_backends
def test_retopic_after_the_topics_changed(digest: Digest) -> None:
    import_items(digest, [item(185, "AP", 1), item(536, "Reuters", 2),
                          item(553, "AP", 3, topic="Business")])
    config = digest.folder / "digest.toml"
    text = config.read_text()
    start = text.index("[[topics]]")
    config.write_text(text[:start] + '[[topics]]\nname = "Baseball"\n'
                      'description = "Major league baseball games and players"\n'
                      'keywords = ["baseball", "MLB", "pitcher"]\n')
    result = digest.ok("articles", "retopic")
    assert result.output == "Looked at 2 articles: 2 changed topic.\n"
    assert sql(digest.folder, "SELECT id, topic, topic_reason FROM articles ORDER BY id") == [
        (1, "Baseball", "semantic"), (2, "More stories", "catch-all"),
        (3, "Business", "explicit")]


def test_loading_the_model_leaves_logging_alone() -> None:
    """wordllama sets the root logger to INFO with a handler when imported: `digest demo`
    then printed every line of its SMTP server's log."""
    code = ("import logging\n"
            "from digest.content.semantic import embedder\n"
            "embedder().embed(['a test'])\n"
            "root = logging.getLogger()\n"
            "print(len(root.handlers), logging.getLevelName(root.level))\n")
    result = fresh_python(code)
    assert result.stdout == "0 WARNING\n", result.stderr
