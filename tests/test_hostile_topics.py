"""Topics and stories as a careless or hostile user meets them: each test failed before the
fix it guards (config values no time span can be, an edition of thousands of articles, a
story carried by fifty outlets, a pin on an article that does not lead its story, a store
from before topics by meaning, ids no column holds, titles wider than their characters)."""

from __future__ import annotations

import re
import tracemalloc
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import Digest, execute, sql
from rich.cells import cell_len
from test_topics import NOW, POPE, import_items, item

from digest.clock import FixedClock
from digest.config import GroupingSettings, load_settings
from digest.content.stories import find_stories
from digest.errors import ConfigError
from digest.store.models import Article, Source


@pytest.fixture
def frozen(digest: Digest) -> None:
    """Every `digest …` of the test (imports and preview alike) sees NOW as the time."""
    digest.clock = FixedClock(NOW)


def _config(digest: Digest) -> Path:
    return digest.folder / "digest.toml"


# --- config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["story_window_hours", "half_life_hours"])
@pytest.mark.parametrize("value", ["inf", "nan", "1e300"])
def test_a_time_span_that_is_no_number_of_hours_is_refused(tmp_path: Path, key: str,
                                                          value: str) -> None:
    """inf and nan passed "more than 0"; the story window then crashed preview and send
    (timedelta overflow), a nan half-life made every score nan."""
    config = tmp_path / "digest.toml"
    config.write_text(f"[grouping]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=rf"\[grouping\] {key} must be more than 0"):
        load_settings(config, environ={})
    config.write_text("")
    with pytest.raises(ConfigError, match=key):
        load_settings(config, environ={f"DIGEST_GROUPING__{key.upper()}": value})


def test_a_story_window_of_inf_is_one_line_not_a_traceback(digest: Digest) -> None:
    import_items(digest, POPE)
    config = _config(digest)
    config.write_text(re.sub(r"(?m)^story_window_hours = .*$", "story_window_hours = inf",
                             config.read_text()))
    result = digest("preview", "--explain")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "story_window_hours" in result.output


def test_a_feed_weight_of_true_is_not_a_number(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text('[[feeds]]\nurl = "https://wire.example/rss"\nweight = true\n')
    with pytest.raises(ConfigError, match="weight: expected a number, got True"):
        load_settings(config, environ={})


# --- stories at scale ----------------------------------------------------------------------

def _articles(count: int, seed: int = 7) -> list[Article]:
    """count articles with random vectors, dates, sources and a few shared names."""
    from digest.content.semantic import pack

    rng = np.random.default_rng(seed)
    sources = [Source(id=k, kind="file", name=f"Source {k}", weight=1.0) for k in range(1, 6)]
    places = ["Paris", "Lagos", "Lima", "Oslo", "Quito", "Hanoi", "Perth", "Cairo"]
    articles = []
    base = rng.standard_normal(256)
    for i in range(count):
        # Pairs of near copies, so that some stories form.
        base = rng.standard_normal(256) if i % 2 == 0 else base + 0.2 * rng.standard_normal(256)
        names = " ".join(places[(i // 2 + k) % len(places)] for k in range(3))
        source = sources[int(rng.integers(0, 5))] if i % 7 else None
        article = Article(id=i + 1, title=f"{names} news", summary=f"{names} said. " * (i % 5),
                          body="", topic="World", pinned=False, added_at=NOW,
                          published_at=NOW - timedelta(hours=float(rng.integers(0, 100))),
                          source_id=source.id if source else None,
                          embedding=None if i % 11 == 0 else
                          pack((base / np.linalg.norm(base)).astype(np.float32)))
        article.source, article.also_from = source, []
        articles.append(article)
    return articles


def _reference(articles: list[Article], grouping: GroupingSettings) -> list[list[int]]:
    """The stories by the rule, pair by pair: what find_stories must give."""
    from digest.content import stories as s

    ordered = sorted(articles, key=lambda a: (-s._fullness(a), a.id))
    leads: list[list[Article]] = []
    for article in ordered:
        mine = s.unpack(article.embedding)
        for story in leads:
            lead = story[0]
            theirs = s.unpack(lead.embedding)
            if (mine is not None and theirs is not None
                    and float(mine @ theirs) >= grouping.story_threshold
                    and abs(s._when(article) - s._when(lead))
                    <= timedelta(hours=grouping.story_window_hours)
                    and (article.source_id is None or article.source_id != lead.source_id)
                    and len(s.shared_names(article, lead)) >= 3
                    and not (s._figures(article.title) and s._figures(lead.title)
                             and not s._figures(article.title) & s._figures(lead.title))):
                story.append(article)
                break
        else:
            leads.append([article])
    return sorted(sorted(a.id for a in story) for story in leads)


@pytest.mark.parametrize("threshold", [0.7, 0.0])
def test_stories_are_those_of_the_pairwise_rule(threshold: float) -> None:
    """An article without a vector neither joins nor is joined, whatever the threshold."""
    articles = _articles(400)
    grouping = GroupingSettings(story_threshold=threshold)
    found = find_stories(articles, grouping, NOW)
    assert sorted(sorted(a.id for a in s.articles) for s in found) == \
        _reference(articles, grouping)
    assert any(len(s.articles) > 1 for s in found)


def test_an_edition_of_thousands_needs_no_matrix_of_all_pairs() -> None:
    """5,000 articles: the similarities of all pairs were one 100 MB matrix (1.6 GB at
    20,000), and every article was compared with every lead in Python (8 s at 10,000)."""
    articles = _articles(5000)
    tracemalloc.start()
    try:
        stories = find_stories(articles, GroupingSettings(), NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(len(s.articles) for s in stories) == 5000
    assert peak < 40_000_000


# --- fifty sources -------------------------------------------------------------------------

def test_a_story_of_fifty_sources_names_five_and_counts_the_rest(digest: Digest,
                                                                 frozen: None) -> None:
    pope = item(342, "AP", 5)
    # The same text from 40 outlets (found duplicates: one article, 40 sources), and the
    # story from two more agencies in their own words.
    copies = [{**pope, "source": f"Outlet {n}", "url": f"https://outlet{n}.example/pope"}
              for n in range(40)]
    import_items(digest, [*copies, item(488, "Boston Globe", 20), item(334, "Reuters", 3)])
    digest.ok("preview", "--out", "p.html")
    html = (digest.folder / "p.html").read_text()
    also = re.search(r'<p class="also"[^>]*>(.*?)</p>', html, re.S)
    assert also is not None
    links = re.findall(r"<a [^>]*>([^<]*)</a>", also.group(1))
    # Each link is one source's own article, never a list of names.
    assert links == ["Outlet 0", "Reuters"]
    assert also.group(1).count("&middot;") + also.group(1).count("·") == 4
    assert also.group(1).rstrip().endswith("and 36 more")
    meta = re.search(r'<p class="meta"[^>]*>(.*?)</p>', html, re.S)
    assert meta is not None and "Outlet" not in meta.group(1)
    digest.ok("preview", "--text", "--out", "p.txt")
    text = (digest.folder / "p.txt").read_text()
    assert "Also covered by Outlet 0: https://outlet0.example/pope" in text
    assert text.count("Also covered by") == 6
    assert "Also covered by 36 more sources" in text



def test_an_article_from_forty_sources_names_three_in_its_byline(digest: Digest,
                                                                 frozen: None) -> None:
    pope = item(342, "AP", 5)
    import_items(digest, [{**pope, "source": f"Outlet {n}",
                           "url": f"https://outlet{n}.example/pope"} for n in range(40)])
    digest.ok("preview", "--text", "--out", "p.txt")
    text = (digest.folder / "p.txt").read_text()
    assert "\nOutlet 0 · Outlet 1 · Outlet 2 and 37 others · " in text
    assert "Outlet 3" not in text and "Also covered by" not in text


def test_also_covered_links_are_light_in_dark_mode(digest: Digest, frozen: None) -> None:
    import_items(digest, POPE)
    digest.ok("preview", "--out", "p.html")
    html = (digest.folder / "p.html").read_text()
    dark = html[html.index("prefers-color-scheme: dark"):]
    # The rule that lightens the links (premailer writes the selectors on one line).
    rule = next(line for line in dark.splitlines() if ".more-link" in line)
    assert ".also a" in rule
    assert "#8cb8e6 !important" in dark[dark.index(rule):].split("}")[0]


# --- pins ------------------------------------------------------------------------------------

def test_a_pin_holds_when_the_pinned_article_does_not_lead(digest: Digest,
                                                           frozen: None) -> None:
    """The Pope story is led by the Boston Globe's fuller text (2); the AP's (1) is pinned.
    Unpinned, the fresh story (4) ranks first."""
    import_items(digest, [item(342, "AP", 50, topic="World"),
                          item(488, "Boston Globe", 60, topic="World"),
                          item(334, "Reuters", 45, topic="World"),
                          item(536, "Reuters", 1, topic="World")])
    leads = _leads(digest.ok("preview", "--explain").output)
    assert [lead for lead, _ in leads] == ["4", "2"]
    digest.ok("articles", "pin", "1")
    leads = _leads(digest.ok("preview", "--explain").output)
    assert leads == [("2", "pinned"), ("4", "0.986")]


def _leads(explained: str) -> list[tuple[str, str]]:
    """(id, score) of each lead line of --explain."""
    rows = [line.split() for line in explained.splitlines() if line.strip()[:1].isdigit()]
    return [(row[0], row[4]) for row in rows if row[0] == row[3]]


def test_pin_of_an_id_no_column_holds_is_one_line(digest: Digest) -> None:
    for command in (["articles", "pin"], ["articles", "set-topic"], ["articles", "remove"]):
        args = [*command, "99999999999999999999"] + (["AI"] if "set-topic" in command else [])
        result = digest(*args)
        assert result.exit_code == 1
        assert result.output == "Error: there is no article 99999999999999999999 " \
                                "(see: digest articles list)\n"


# --- a store from before topics by meaning ---------------------------------------------------

def test_retopic_keeps_what_someone_chose_before_reasons_were_kept(digest: Digest,
                                                                   frozen: None) -> None:
    """Migration 0006 gave every stored article the reason "before" and no vector. One
    was put under Sports by hand (the keyword rules give it Business): retopic keeps it
    there, with its vector; the others it sorts by meaning. Story finding, preview and
    --explain work before and after."""
    config = _config(digest)
    semantic = config.read_text()
    config.write_text(semantic.replace('method = "semantic"', 'method = "keywords"'))
    import_items(digest, [item(536, "Reuters", 2), item(553, "AP", 3), *POPE])
    config.write_text(semantic)
    execute(digest.folder, "UPDATE articles SET topic_reason = 'before', embedding = NULL, "
                            "topic_confidence = NULL")
    execute(digest.folder, "UPDATE articles SET topic = 'Sports' WHERE id = 1")
    assert "before" in digest.ok("preview", "--explain").output
    digest.ok("preview", "--out", "p.html")
    digest.ok("articles", "retopic")
    rows = sql(digest.folder, "SELECT id, topic, topic_reason, embedding IS NOT NULL "
                              "FROM articles ORDER BY id")
    assert rows[0] == (1, "Sports", "before", True)
    assert all(reason != "before" and has for _, _, reason, has in rows[1:])
    result = digest.ok("preview", "--explain")
    assert "Sports (1 story)" in result.output


# --- --explain in a terminal -----------------------------------------------------------------

def test_explain_fits_80_columns_with_wide_titles(digest: Digest, frozen: None) -> None:
    titles = ["人工知能の研究者が新しい言語モデルを発表、東京大学とソフトバンクが共同で開発",
              "🎉🚀🔥 AI startup raises money 🎉🚀🔥 for a new language model 🤖🤖🤖🤖",
              "한국어 제목: 인공지능 기계 학습 신경망 연구 발표 대규모 언어 모델",
              "A very long title about machine learning and neural networks that goes on"]
    import_items(digest, [{"title": title, "summary": "Machine learning research.",
                           "source": f"S{n}", "url": f"https://w.example/{n}",
                           "published_at": (NOW - timedelta(hours=n)).isoformat()}
                          for n, title in enumerate(titles)])
    config = _config(digest)
    config.write_text(re.sub(r"(?m)^max_articles = .*$", "max_articles = 1",
                             config.read_text()))
    for args in ([], ["--topic", "AI"]):
        output = digest.ok("preview", "--explain", *args).output
        assert "(online only)" in output and "…" in output
        assert max(cell_len(line) for line in output.splitlines()) <= 80, output
