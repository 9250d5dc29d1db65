"""Real input written by others: every feed and page imports without a crash."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest
from conftest import CORPUS, NOW, SEED, Digest, need

from digest.ingest import parse_path


def _tokens(text: str) -> collections.Counter[str]:
    return collections.Counter(re.findall(r"\w+", text.lower()))


def token_f1(got: str, want: str) -> float:
    a, b = _tokens(got), _tokens(want)
    common = sum((a & b).values())
    if not common:
        return 0.0
    precision, recall = common / sum(a.values()), common / sum(b.values())
    return 2 * precision * recall / (precision + recall)


def test_every_feed_file_imports_without_a_crash(digest: Digest) -> None:
    feeds = need(CORPUS / "feeds")
    result = digest("articles", "import", str(feeds))
    assert "Traceback" not in result.output
    assert result.exit_code == 3          # partly done: some files are bad on purpose
    files = sorted(p for p in feeds.iterdir() if p.suffix in (".xml", ".json"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    # One line per bad file, naming it; no file is reported twice.
    named = [line.split(": ")[1] for line in errors]
    assert len(named) == len(set(named))
    for line in errors:
        assert line.split(": ")[1].startswith(str(feeds)), line
    new = int(re.search(r"Imported (\d+) new", result.stdout).group(1))
    too_old = int(re.search(r"kept (\d+) too old", result.stdout).group(1))
    assert new + too_old > 200
    bad = {Path(n).name for n in named}
    good = [f.name for f in files if f.name not in bad]
    assert len(good) >= 20
    assert "feedparser__rss_empty_document.xml" in bad


def test_every_page_imports_and_the_body_matches_the_expected_text(digest: Digest) -> None:
    pages = need(CORPUS / "pages" / "html")
    scores = []
    for page in sorted(pages.glob("*.html")):
        parsed = next(parse_path(page, NOW))
        assert not parsed.problems, parsed.problems
        [record] = parsed.records
        assert record.title
        expected = (pages.parent / "expected" / (page.stem + ".txt")).read_text()
        scores.append(token_f1(record.body, expected))
    mean = sum(scores) / len(scores)
    print(f"token F1 over {len(scores)} pages: mean {mean:.3f}, min {min(scores):.3f}")
    assert mean >= 0.8
    result = digest.ok("articles", "import", str(pages))
    assert f"Imported 0 new articles, kept {len(scores)} too old to be news" in result.stdout


def test_page_metadata_title_url_date(digest: Digest) -> None:
    page = need(CORPUS / "pages" / "html" /
                "04a6711caa7c687592777718866e781e976e0fe684faebe8b3cedcef8cd0ea34.html")
    [record] = next(parse_path(page, NOW)).records
    assert record.title == "Opinion | Republicans Are Following Trump to Nowhere"
    assert record.url == ("https://www.nytimes.com/2019/11/19/opinion/"
                          "republicans-elections-impeachment.html")
    assert record.published_at is not None and record.published_at.year == 2019
    assert record.source_name == "NYTimes"


def test_hostile_feed_content_is_sanitised(digest: Digest, tmp_path: Path) -> None:
    feeds = need(CORPUS / "feeds")
    for name in ("feedparser__entry_content_crazy.xml",
                 "feedparser__item_content_encoded_crazy.xml",
                 "feedparser__large_atom_feed_that_needs_css_sanitisation.xml"):
        for record in next(parse_path(feeds / name, NOW)).records:
            for value in (record.body_html or "", record.body, record.summary or ""):
                lowered = value.lower()
                for bad in ("<script", "javascript:", "onload=", "onerror=", "expression(",
                            "<iframe", "<object", "<embed"):
                    assert bad not in lowered, (name, bad)


@pytest.mark.slow
@pytest.mark.both_backends
def test_corpus_de_duplication_is_unchanged_but_for_distinct_items_of_one_feed(
        digest: Digest) -> None:
    """The indexed near-duplicate search stores what the pairwise scan stored (274 new, 3
    duplicates, measured with it), except two items that the scan merged although their
    feed gives them different guids: two different "Typepad Release Notes" posts, and two
    different apps announced under near-identical titles. Within a feed an item is its
    guid, so both stay."""
    feeds, pages = need(CORPUS / "feeds"), need(CORPUS / "pages" / "html")
    result = digest("articles", "import", str(feeds), str(pages), str(need(SEED.parent)))
    assert result.exit_code == 3, result.output  # partly done: the bad files
    # 275 stored: all but two (undated) too old to be news; one more problem than the
    # scan's 8: the line-noise feed's item whose title is only symbols is refused.
    assert ("Imported 2 new articles, kept 273 too old to be news (published before "
            "2026-10-28; offered to no edition), skipped 1 duplicate, 9 problems."
            in result.stdout)
    titles = sorted(a["title"] for a in json.loads(
        digest.ok("articles", "list", "--format", "json").stdout))
    assert titles.count("Typepad Release Notes") == 2
    assert "Программы для Nokia 5800 и Nokia N97: XpressCut v.0.1" in titles
    assert "Программы для Nokia 5800 и Nokia N97: ZXLightControl v.1.0.0" in titles
