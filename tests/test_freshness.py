"""What goes into an edition: true dates (record, page, text, or undated), fresh news only
([ingest] max_age_days), no junk (mojibake repaired, symbol-only titles refused), and
`preview --check` naming what an editor should look at."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CORPUS, NOW, SAMPLE_WEEK, SEED, Digest, need, sql

from digest.config import load_settings
from digest.errors import ConfigError
from digest.ingest import parse_path
from digest.ingest.dates import date_from_text

# What each corpus page states as its publication date (its article:published_time or
# JSON-LD datePublished meta data, read by hand in the HTML; the day only where the page
# gives no time, or only the day in its address).
PAGE_DATES = {
    "042bb7b5": "2019-11-19T13:03:00+00:00",
    "04a6711c": "2019-11-19",
    "05844573": "2019-11-20T06:35:39+00:00",
    "06e5123e": "2019-11-19T07:03:25+00:00",
    "06ee193d": "2019-11-20T04:31:13+00:00",
    "076f4f33": "2019-11-19T03:31:42+00:00",
    "08f79376": "2019-11-19T02:24:00+00:00",
    "098bb3e9": "2019-11-20T01:50:59+00:00",
    "0d461229": "2019-11-19",
    "0dd13570": "2018-10-09T15:02:36+00:00",
    "0e014df6": "2014-09-15T14:22:02+00:00",
    "0ec95c72": "2018-08-25",
    "11ea381a": "2010-10-22T23:13:51+00:00",
    "14cc2a0c": "2019-11-18T23:41:18+00:00",
    "156770d6": "2019-11-19T11:56:43+00:00",
}


def _articles(digest: Digest, *options: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(
        digest.ok("articles", "list", "--format", "json", *options).stdout)
    return listed


def _json(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def _item(title: str, published: datetime | None = None, **more: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "title": title, "url": f"https://news.example/{abs(hash(title))}",
        "summary": f"{title}: what happened, who said what, and what comes next.",
        "topic": "Science", **more}
    if published is not None:
        item["published_at"] = published.isoformat()
    return item


# --- true dates -------------------------------------------------------------------------

def test_the_seed_article_is_dated_by_its_text_and_is_too_old(digest: Digest) -> None:
    # "Jan Leike, ... on May 17, 2024, announced his resignation": the scraped page has
    # no date of its own; it used to be dated the day it came in, and led its topic.
    result = digest.ok("articles", "import", str(need(SEED)))
    assert ("Imported 0 new articles, kept 1 too old to be news (published before "
            "2026-10-28; offered to no edition), skipped 0 duplicates." in result.stdout)
    [article] = _articles(digest)
    assert article["published_at"] == "2024-05-17T00:00:00+00:00"
    assert (article["date_source"], article["too_old"]) == ("text", True)
    assert _articles(digest, "--new") == []
    assert [a["id"] for a in _articles(digest, "--old")] == [article["id"]]


def test_corpus_pages_get_the_dates_their_pages_state() -> None:
    pages = sorted(need(CORPUS / "pages" / "html").glob("*.html"))
    assert len(pages) == len(PAGE_DATES)
    for page in pages:
        [record] = next(parse_path(page, NOW)).records
        stated = datetime.fromisoformat(PAGE_DATES[page.stem[:8]])
        got = record.published_at
        assert got is not None, page.name
        assert record.date_source == "page"
        if stated.tzinfo is None:           # the page states the day only
            assert got.date() == stated.date(), page.name
        else:
            assert got == stated, page.name


@pytest.mark.parametrize(("text", "date"), [
    ("WASHINGTON, March 3, 2031 (Reuters) - Lawmakers passed the act on March 1, 2031.",
     "2031-03-03"),                                                 # the dateline first
    ("Officials said on 2 March 2031 that the bridge, opened on 14 June 1998, will stay "
     "shut.", "2031-03-02"),                                        # the latest in the lead
    ("Updated 2031-02-27 09:12. The council met again.", "2031-02-27"),
    ("The launch window opens on April 9, 2031, the agency said.", None),   # future only
    ("A story with no date at all, and the 1990s mentioned once.", None),
    ("Results for February 30, 2031 were void.", None),             # no such day
    ("x" * 900 + " on May 17, 2024", None),                          # far from the top
])
def test_a_date_from_the_text(text: str, date: str | None) -> None:
    found = date_from_text(text, NOW)
    assert (found.date().isoformat() if found else None) == date


def test_a_date_in_the_future_is_clamped_and_noted(digest: Digest, tmp_path: Path) -> None:
    now = SAMPLE_WEEK
    path = _json(tmp_path / "a.json", [_item("Eclipse seen across the south", now + timedelta(
        days=400)), _item("Comet brightens", now - timedelta(hours=3))])
    result = digest.ok("articles", "import", str(path))
    assert f"warning: {path}: item 1: dated {now + timedelta(days=400):%Y-%m-%d %H:%M} UTC, " \
        f"in the future; dated when it came in instead" in " ".join(result.stderr.split())
    by_title = {a["title"]: a for a in _articles(digest)}
    eclipse = by_title["Eclipse seen across the south"]
    assert eclipse["published_at"] == now.isoformat() and eclipse["date_clamped"] is True
    assert by_title["Comet brightens"]["date_clamped"] is False
    explained = digest.ok("preview", "--explain").stdout
    assert "Eclipse seen across the…  (future date)" in explained


def test_an_undated_article_is_never_ranked_as_brand_new(digest: Digest,
                                                        tmp_path: Path) -> None:
    # Both came in just now; the dated one was published a day ago, the other says
    # nothing of its date: the dated one leads, and the undated one is marked.
    now = SAMPLE_WEEK
    dated = _item("Reef survey finds coral recovering", now - timedelta(hours=24))
    undated = _item("Volcano observatory raises alert level")
    digest.ok("articles", "import", str(_json(tmp_path / "a.json", [undated, dated])))
    by_title = {a["title"]: a for a in _articles(digest)}
    assert by_title["Volcano observatory raises alert level"]["date_source"] == "imported"
    assert by_title["Volcano observatory raises alert level"]["published_at"] is None
    explained = digest.ok("preview", "--explain").stdout.splitlines()
    rows = [line for line in explained if "Reef survey" in line or "Volcano" in line]
    assert "Reef survey" in rows[0] and "0.707" in rows[0]         # a day old: 0.5 ^ 0.5
    assert "Volcano observatory raises" in rows[1] and rows[1].endswith("  (undated)")
    assert "0.500" in rows[1]                       # one half-life, however new it is


# --- fresh news only ----------------------------------------------------------------------

def test_old_corpus_feeds_offer_none_of_their_items_to_the_next_edition(
        digest: Digest) -> None:
    result = digest.partly("articles", "import", str(need(CORPUS / "feeds")))
    stored = _articles(digest)
    dated = [a for a in stored if a["published_at"] is not None]
    assert len(dated) > 200
    assert all(a["too_old"] for a in dated)
    assert f"kept {len(dated)} too old to be news" in result.stdout
    # What the next edition is offered: the two items that state no date at all.
    offered = {a["id"] for a in _articles(digest, "--new")}
    assert offered == {a["id"] for a in stored if a["published_at"] is None}
    assert len(offered) == 2
    explained = digest.ok("preview", "--explain").stdout
    assert explained.count("(undated)") == 2


def test_max_age_days_and_since(digest: Digest, tmp_path: Path) -> None:
    now = SAMPLE_WEEK
    items = [_item(f"Story {days} days old", now - timedelta(days=days))
             for days in (1, 29, 31, 200)]
    path = _json(tmp_path / "a.json", items)
    digest.ok("articles", "import", str(path))
    assert {a["title"] for a in _articles(digest, "--new")} == {
        "Story 1 days old", "Story 29 days old"}
    # --since for one import; a second store with no limit at all.
    other = tmp_path / "other"
    other.mkdir()
    again = Digest(other, digest.clock)
    again.ok("init")
    again.ok("articles", "import", str(path), "--since", f"{now - timedelta(days=100):%Y-%m-%d}")
    assert len(_articles(again, "--new")) == 3
    unlimited = tmp_path / "unlimited"
    unlimited.mkdir()
    free = Digest(unlimited, digest.clock)
    free.ok("init")
    free.ok("articles", "import", str(path), env={"DIGEST_INGEST__MAX_AGE_DAYS": "0"})
    assert len(_articles(free, "--new")) == 4


def test_an_editor_adds_a_too_old_article_to_a_draft(digest: Digest, tmp_path: Path) -> None:
    now = SAMPLE_WEEK
    digest.ok("articles", "import", str(_json(tmp_path / "a.json", [
        _item("This week's news", now - timedelta(hours=5)),
        _item("An anniversary piece", now - timedelta(days=90))])))
    old = {a["title"]: a["id"] for a in _articles(digest)}["An anniversary piece"]
    digest.ok("editions", "draft")
    said = digest.ok("editions", "add", "1", str(old)).stdout
    assert said.startswith(f"Added article {old} to edition 1 (it came in too old to be "
                           f"news).")
    shown = json.loads(digest.ok("editions", "show", "1", "--format", "json").stdout)
    assert old in [a["id"] for a in shown["articles"]]
    again = digest("editions", "add", "1", str(old))
    assert again.exit_code == 1 and again.output.strip().endswith(
        f"article {old} is already in edition 1")
    missing = digest("editions", "add", "1", "999")
    assert missing.exit_code == 1 and "no article 999" in missing.output


@pytest.mark.parametrize("days", [-1, 800000])
def test_a_max_age_outside_0_to_a_century_is_a_config_error(tmp_path: Path,
                                                            days: int) -> None:
    # 800,000 days used to end an import with an OverflowError (a date before year 1).
    config = tmp_path / "digest.toml"
    config.write_text(f"[ingest]\nmax_age_days = {days}\n")
    with pytest.raises(ConfigError, match=rf"\[ingest\] max_age_days must be 0 \(no limit\) "
                                          rf"to 36500 days \(got {days}\)"):
        load_settings(config, environ={})


def test_a_feed_counts_its_old_items_as_too_old(digest: Digest, tmp_path: Path) -> None:
    old = SAMPLE_WEEK - timedelta(days=60)
    fresh = SAMPLE_WEEK - timedelta(hours=2)
    feed = tmp_path / "f.xml"
    feed.write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Wire</title>'
        + "".join(f"<item><title>{t}</title><link>https://w.example/{n}</link>"
                  f"<description>{t}, in full.</description><pubDate>"
                  f"{d:%a, %d %b %Y %H:%M:%S} GMT</pubDate></item>"
                  for n, (t, d) in enumerate([("Old harbour news", old),
                                              ("New harbour news", fresh)]))
        + "</channel></rss>")
    result = digest.ok("articles", "import", str(feed))
    assert "Imported 1 new article, kept 1 too old" in result.stdout
    assert [a["title"] for a in _articles(digest, "--new")] == ["New harbour news"]


# --- no junk --------------------------------------------------------------------------------

def test_mojibake_is_repaired_and_a_symbol_only_title_is_refused(digest: Digest,
                                                               tmp_path: Path) -> None:
    now = SAMPLE_WEEK - timedelta(hours=1)
    path = _json(tmp_path / "a.json", [
        _item("CafÃ© owners â€œcautiously optimisticâ€\x9d about spring", now),
        _item("â€™â€©", now),                    # the line-noise feed's item, in JSON
        _item("X", now, summary="The platform formerly known as Twitter changed again."),
        _item("π", now, summary="Mathematicians celebrated the constant's day."),
        _item("9", now, summary="Nine things to know about the budget vote."),
    ])
    result = digest("articles", "import", str(path))
    assert result.exit_code == 3, result.output
    assert " ".join(result.stderr.split()) == (
        f"error: {path}: item 2: the title '’' has no letter or digit (even after "
        f"repairing its encoding); not imported: give the article a real title")
    assert "Imported 4 new articles" in result.stdout
    titles = {a["title"] for a in _articles(digest)}
    assert titles == {"Café owners “cautiously optimistic” about spring", "X", "π", "9"}


def test_the_line_noise_feed_item_never_leads_a_section(digest: Digest) -> None:
    feed = need(CORPUS / "feeds" / "feedparser__bozo_linenoise.xml")
    result = digest("articles", "import", str(feed), "--since", "1990-01-01")
    assert "has no letter or digit" in result.stderr
    assert not any(a["title"].strip("’”©\u2029 ") == "" for a in _articles(digest))


# --- preview --check ------------------------------------------------------------------------

def test_preview_check_fails_on_an_undated_lead_and_warns_on_the_rest(
        digest: Digest, tmp_path: Path) -> None:
    now = SAMPLE_WEEK
    digest.ok("articles", "import", str(_json(tmp_path / "a.json", [
        _item("Glacier retreat measured from orbit", topic="Science"),     # undated lead
        _item("Satellite maps sea ice", now - timedelta(hours=60), topic="Science"),
        _item("Rate decision due on Thursday", now - timedelta(hours=2), topic="Business",
              summary="Rate decision due on Thursday, analysts say."),  # the title again
    ])))
    result = digest("preview", "--check", "--out", str(tmp_path / "p.html"))
    assert result.exit_code == 1
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert any(line.startswith("✗ article: 1 (Science lead) 'Glacier retreat measured from "
                               "orbit': undated") and line.endswith("fix it or move it "
                                                                    "before sending")
               for line in lines), lines
    assert any(line.startswith("✗ article: 3 (Business lead)") and "its teaser only "
               "repeats the title" in line for line in lines), lines
    assert not any("Satellite maps sea ice" in line for line in lines)


def test_preview_check_names_other_flagged_articles_as_warnings(digest: Digest,
                                                               tmp_path: Path) -> None:
    now = SAMPLE_WEEK
    digest.ok("articles", "import", str(_json(tmp_path / "a.json", [
        _item("Observatory opens to visitors", now - timedelta(hours=1), topic="Science"),
        _item("Telescope mirror polished", topic="Science"),             # undated, second
        _item("Moscow metro extends hours", now - timedelta(hours=20), topic="Science",
              summary="Московский метрополитен продлит часы работы в праздничные дни, "
                      "сообщили в пресс-службе."),
    ])))
    result = digest("preview", "--check", "--out", str(tmp_path / "p.html"))
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert result.exit_code == 0, lines
    assert any(line.startswith("! article: 2 (Science) 'Telescope mirror polished': undated")
               for line in lines), lines
    assert any(line.startswith("! article: 3 (Science)") and "its title has no Cyrillic "
               "letter while its text is Cyrillic" in line for line in lines), lines


def test_preview_check_passes_clean_articles(digest: Digest, tmp_path: Path) -> None:
    now = SAMPLE_WEEK
    digest.ok("articles", "import", str(_json(tmp_path / "a.json", [
        _item("Observatory opens to visitors", now - timedelta(hours=1)),
        _item("Telescope mirror polished", now - timedelta(hours=9))])))
    result = digest.ok("preview", "--check", "--out", str(tmp_path / "p.html"))
    assert "✓ articles: all 2 dated, readable and with a teaser of their own" in result.stdout


def test_the_store_keeps_where_each_date_came_from(digest: Digest, tmp_path: Path) -> None:
    digest.ok("articles", "import", str(_json(tmp_path / "a.json", [
        _item("From the record", SAMPLE_WEEK - timedelta(hours=2)),
        _item("From the text", body="LONDON, November 25, 2026 - The museum reopened."),
        _item("From nowhere")])))
    rows = dict(sql(tmp_path, "select title, date_source from articles"))
    assert rows == {"From the record": "record", "From the text": "text",
                    "From nowhere": "imported"}


def test_editions_show_names_what_to_check(digest: Digest, tmp_path: Path) -> None:
    now = SAMPLE_WEEK
    digest.ok("articles", "import", str(_json(tmp_path / "a.json", [
        _item("Observatory opens to visitors", now - timedelta(hours=1)),
        _item("Telescope mirror polished")])))                          # undated
    digest.ok("editions", "draft")
    shown = json.loads(digest.ok("editions", "show", "1", "--format", "json").stdout)
    flags = {a["title"]: a["flags"] for a in shown["articles"]}
    assert flags["Observatory opens to visitors"] == []
    assert flags["Telescope mirror polished"][0].startswith("undated")
    table = digest.ok("editions", "show", "1").stdout
    assert "check: undated" in table


def test_preview_check_fails_on_a_lead_with_no_teaser(digest: Digest, tmp_path: Path) -> None:
    # Its summary only repeated the title, so the import dropped it: the entry would show
    # a title and nothing else.
    digest.ok("articles", "import", str(_json(tmp_path / "a.json", [
        _item("Rate decision due on Thursday", SAMPLE_WEEK - timedelta(hours=2),
              topic="Business", summary="Rate decision due on Thursday.")])))
    result = digest("preview", "--check", "--out", str(tmp_path / "p.html"))
    assert result.exit_code == 1
    assert "no teaser (it has no text beyond its title)" in " ".join(result.stdout.split())


def test_a_removed_article_cannot_be_added_to_an_edition(digest: Digest,
                                                        tmp_path: Path) -> None:
    digest.ok("articles", "import", str(_json(tmp_path / "a.json", [
        _item("This week's news", SAMPLE_WEEK - timedelta(hours=5)),
        _item("A retracted piece", SAMPLE_WEEK - timedelta(hours=6))])))
    gone = {a["title"]: a["id"] for a in _articles(digest)}["A retracted piece"]
    digest.ok("articles", "remove", str(gone))
    digest.ok("editions", "draft")
    result = digest("editions", "add", "1", str(gone))
    assert result.exit_code == 1
    assert f"article {gone} was removed (digest articles remove)" in result.output


def test_a_title_of_only_invisible_characters_is_named_as_empty(digest: Digest,
                                                               tmp_path: Path) -> None:
    path = _json(tmp_path / "a.json", [_item("\u200b\u200e", SAMPLE_WEEK)])
    result = digest("articles", "import", str(path))
    assert "item 1: the title is empty once control and format characters are removed" \
        in " ".join(result.stderr.split())


def test_importing_again_with_since_takes_too_old_articles_as_news(digest: Digest,
                                                                  tmp_path: Path) -> None:
    # Stored too old first; the same file again with --since: they are news now (they
    # used to stay too old, skipped as duplicates "already in the store").
    path = _json(tmp_path / "a.json", [
        _item("An anniversary piece", SAMPLE_WEEK - timedelta(days=90)),
        _item("A year-old review", SAMPLE_WEEK - timedelta(days=400))])
    digest.ok("articles", "import", str(path))
    assert _articles(digest, "--new") == []
    again = digest.ok("articles", "import", str(path), "--since",
                      f"{SAMPLE_WEEK - timedelta(days=100):%Y-%m-%d}")
    assert ("skipped 2 duplicates (1 of them stored too old before: news now, for the next "
            "edition)." in " ".join(again.stdout.split()))
    assert [a["title"] for a in _articles(digest, "--new")] == ["An anniversary piece"]
