"""Article import: bad input stays the bad record's (or file's) problem, text is cleaned at
the parser boundary, near-duplicate search is exact and near-linear, commits come in short
batches, and within a feed an item is its guid."""

from __future__ import annotations

import csv
import json
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from conftest import NOW, Digest, sql

from digest.config import load_settings
from digest.content.topics import Assignment, Signals, TopicClassifier
from digest.ingest import parse_path
from digest.ingest.records import ArticleInput
from digest.ingest.writer import (
    BATCH_SIZE,
    TitleIndex,
    _title_tokens,
    import_files,
    same_story,
)
from digest.store.db import Store

DATA = Path(__file__).parent / "data" / "ingest"
PODCAST = DATA / "podcast-shared-link.rss"
BIDI = "\u202e\u2066\u2069\u200e\u200f\u202a\u202c\ufeff\u2060"


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def _article(i: int, **extra: object) -> dict[str, object]:
    return {"title": f"Harbour council report number {i} on the new ferry timetable",
            "url": f"https://news.example.org/ferry/{i}",
            "body": f"The council published report {i} today. It covers the ferry.", **extra}


# --- 7(b), 7(f): the parser boundary cleans every record ----------------------------------

@pytest.mark.both_backends
def test_nul_and_control_characters_never_reach_the_store(digest: Digest,
                                                          tmp_path: Path) -> None:
    # PostgreSQL refuses NUL in text: before, the whole file rolled back on that backend.
    path = tmp_path / "nul.jsonl"
    lines = [_article(1), _article(2, title="Ferry\x00 strike \x07called off\x1b[31m today",
                                   body="Crews\x00 voted \x0bto return.\x00"), _article(3)]
    path.write_text("\n".join(json.dumps(a) for a in lines) + "\n")
    result = digest("articles", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "Imported 3 new articles" in result.stdout
    rows = sql(tmp_path, "SELECT title, body FROM articles ORDER BY id")
    assert rows[1] == ("Ferry strike called off[31m today", "Crews voted to return.")
    for title, body in rows:
        assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", title + body)


def test_bidi_and_format_characters_are_stripped_from_titles(digest: Digest,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "bidi.json"
    title = f"Quarterly\u202e fdp.exe results{BIDI} are in"
    path.write_text(json.dumps([{"title": title, "body": "Revenue rose.\ufeff",
                                 "author": "Ann\u2066 Lee", "url": "https://e.org/q"}]))
    digest.ok("articles", "import", str(path))
    [(stored, author)] = sql(tmp_path, "SELECT title, author FROM articles")
    assert stored == "Quarterly fdp.exe results are in"
    assert author == "Ann Lee"
    digest.ok("preview", "--text", "--out", "p.txt")
    digest.ok("preview", "--out", "p.html")
    for name in ("p.txt", "p.html"):
        text = (tmp_path / name).read_text()
        assert "Quarterly fdp.exe results are in" in text
        assert not any(ch in text for ch in "\u202e\u2066\u2069\u202a\u202c")


def test_zero_width_joiners_stay_in_titles() -> None:
    # ZWJ builds emoji sequences and ZWNJ is needed in Persian; neither reorders text.
    record = ArticleInput(title="Family \U0001f468\u200d\U0001f469 and "
                                "\u0645\u06cc\u200c\u0634\u0648\u062f", body="x", where="t")
    assert "\u200d" in record.title and "\u200c" in record.title


# --- 7(c), 7(d): one line per bad file or line, the rest goes on --------------------------

def test_a_deeply_nested_json_file_is_one_line_and_later_files_go_on(
        digest: Digest, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-deep.json").write_text("[" * 200_000 + "]" * 200_000)
    (folder / "b-good.json").write_text(json.dumps([_article(1)]))
    (folder / "c-deep.jsonl").write_text(json.dumps(_article(2)) + "\n"
                                         + "[" * 200_000 + "]" * 200_000 + "\n")
    result = digest("articles", "import", str(folder))
    assert "Traceback" not in result.output
    assert result.exit_code == 3, result.output
    assert "Imported 2 new articles" in result.stdout
    errors = _errors(result.stderr)
    assert errors == [f"error: {folder / 'a-deep.json'}: not valid JSON: nested too deeply "
                      f"to read (an article is an object of strings and lists, a few levels "
                      f"deep)",
                      f"error: {folder / 'c-deep.jsonl'}:2: not valid JSON: nested too deeply "
                      f"to read (an article is an object of strings and lists, a few levels "
                      f"deep)"]


def test_a_jsonl_file_with_bad_lines_keeps_its_good_lines(digest: Digest,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    good = [json.dumps(_article(i)).encode() for i in range(1, 5)]
    path.write_bytes(b"\n".join([
        good[0],
        b'{"title": "Caf\xe9 opens", "body": "Latin-1 bytes in a UTF-8 file"}',   # line 2
        good[1],
        json.dumps(_article(9, published_at=1e20)).encode(),                       # line 4
        b'{"title": ',                                                               # line 5
        good[2],
        json.dumps(_article(8, tags={"not": "a list"})).encode(),                  # line 7
        good[3],
    ]) + b"\n")
    result = digest("articles", "import", str(path))
    assert "Traceback" not in result.output
    assert result.exit_code == 3, result.output
    assert "Imported 4 new articles" in result.stdout
    assert [line.split(": ", 2)[1] for line in _errors(result.stderr)] == [
        f"{path}:2", f"{path}:4", f"{path}:5", f"{path}:7"]
    assert "not UTF-8 text (invalid continuation byte at column 15)" in result.stderr
    assert "1e+20 is out of range for a Unix time" in result.stderr


# --- 7(e): text files that are not UTF-8 ---------------------------------------------------

def test_a_latin1_text_file_is_read_in_its_encoding(digest: Digest, tmp_path: Path) -> None:
    page = DATA / "greve-orly-latin1.txt"
    with pytest.raises(UnicodeDecodeError):
        page.read_bytes().decode("utf-8")
    result = digest.ok("articles", "import", str(page))
    assert "read as cp1252" in result.stderr
    [(title, body)] = sql(tmp_path, "SELECT title, body FROM articles")
    assert title == "Grève des contrôleurs aériens : des centaines de vols annulés à Orly"
    assert "« Nous sommes désolés pour les voyageurs, mais la sécurité n'est pas " \
           "négociable »" in body
    assert "\ufffd" not in body


def test_a_text_file_in_no_readable_encoding_is_refused_with_a_line(
        digest: Digest, tmp_path: Path) -> None:
    path = tmp_path / "noise.txt"
    path.write_bytes(bytes(range(256)) * 8)
    result = digest("articles", "import", str(path))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert _errors(result.stderr) == [
        f"error: {path}: not UTF-8 text (an invalid byte at byte 128) and its encoding "
        f"cannot be told; save it as UTF-8"]


# --- 6(d): within a feed, an item is its guid ----------------------------------------------

def test_podcast_items_sharing_the_show_link_are_all_kept(digest: Digest,
                                                          tmp_path: Path) -> None:
    # 40 episodes, each with its own guid and enclosure, all linking the show's homepage;
    # two of them are both called "Listener mailbag".
    # Episodes from 2021: taken as news for this import.
    result = digest.ok("articles", "import", str(PODCAST), "--since", "2021-01-01")
    assert "Imported 40 new articles, skipped 0 duplicates" in result.stdout
    rows = sql(tmp_path, "SELECT title, url FROM articles ORDER BY id")
    assert len({url for _title, url in rows}) == 40
    by_title = dict(rows)
    assert by_title["Ep. 40: Seed banks with Dr. Amara Okafor"] == \
        "https://www.example-radio.org/field-notes/episodes/40"          # guid permalink
    assert by_title["Ep. 39: City bees with Mei Lin"] == \
        "https://media.example-radio.org/field-notes/fn-039.mp3"        # enclosure
    assert [t for t, _u in rows].count("Listener mailbag") == 2
    again = digest.ok("articles", "import", str(PODCAST))
    assert "Imported 0 new articles, skipped 40 duplicates" in again.stdout


def test_a_shared_link_without_permalink_or_enclosure_is_no_identity(tmp_path: Path) -> None:
    feed = tmp_path / "f.rss"
    feed.write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Desk</title>'
        "<link>https://desk.example.org/</link>"
        + "".join(f"<item><title>Note {i}: the desk's daily note on topic {i}</title>"
                  f"<link>https://desk.example.org/</link><guid isPermaLink=\"false\">n{i}"
                  f"</guid><description>Text of note {i}.</description></item>"
                  for i in range(3))
        + "<item><title>A story with its own page</title><link>https://desk.example.org/s"
          "</link><description>Own page.</description></item></channel></rss>")
    records = next(parse_path(feed, NOW)).records
    assert [(r.url, r.url_is_identity, r.guid) for r in records] == [
        ("https://desk.example.org/", False, "n0"), ("https://desk.example.org/", False, "n1"),
        ("https://desk.example.org/", False, "n2"), ("https://desk.example.org/s", True, None)]


@pytest.mark.both_backends
def test_the_same_story_from_two_feeds_is_one_article_naming_both(digest: Digest,
                                                                   tmp_path: Path) -> None:
    # Cross-source de-duplication still works for items that were re-identified.
    episode = ("<item><title>Ep. 39: City bees with Mei Lin</title><link>"
               "https://media.example-radio.org/field-notes/fn-039.mp3</link><description>"
               "Picked by our editors.</description></item>")
    picks = tmp_path / "picks.rss"
    picks.write_text('<?xml version="1.0"?><rss version="2.0"><channel><title>Weekly picks'
                     f"</title><link>https://picks.example.net/</link>{episode}"
                     "</channel></rss>")
    digest.ok("articles", "import", str(PODCAST))
    result = digest.ok("articles", "import", str(picks))
    assert "Imported 0 new articles, skipped 1 duplicate" in result.stdout
    listed = json.loads(digest.ok("articles", "list", "--format", "json").stdout)
    [bees] = [a for a in listed if a["title"] == "Ep. 39: City bees with Mei Lin"]
    assert bees["source"] == "Field Notes · Weekly picks"


# --- 7(a): exact near-duplicate search without comparing each pair -------------------------

def _corpus_titles() -> list[str]:
    with (DATA / "ag_news_train_sample.csv").open(newline="", encoding="utf-8") as file:
        titles = [row[1] for row in csv.reader(file)]
    # Add the same stories re-reported under lightly edited titles, and near misses
    # ("Part 2" vs "Part 3", one word in five changed).
    edited = []
    for i, title in enumerate(titles):
        words = title.split()
        if i % 3 == 0:
            edited.append("Update: " + title)
        elif i % 3 == 1 and len(words) > 5:
            edited.append(" ".join(words[:-1] + ["2"]))
        elif len(words) > 4:
            edited.append(" ".join(w.upper() if j == 2 else w for j, w in enumerate(words)))
    return titles + edited


def _pairwise(titles: Iterable[str]) -> Iterator[int | None]:
    """The old scan: each title against every earlier one, first match wins."""
    seen: list[tuple[int, frozenset[str]]] = []
    for key, title in enumerate(titles):
        tokens = _title_tokens(title)
        yield next((k for k, other in seen if same_story(tokens, other)), None)
        seen.append((key, tokens))


def test_title_index_finds_exactly_what_the_pairwise_scan_finds() -> None:
    titles = _corpus_titles()
    index = TitleIndex()
    found = []
    for key, title in enumerate(titles):
        tokens = _title_tokens(title)
        found.append(index.find(tokens))
        index.add(key, tokens)
    expected = list(_pairwise(titles))
    assert found == expected
    assert sum(f is not None for f in found) > 300       # the edited copies are found


# --- 7(a): short write transactions ------------------------------------------------------

class _PausingClassifier(TopicClassifier):
    """A real classifier that, at one record, hands control to the test and waits."""

    def __init__(self, base: TopicClassifier, at: str, reached: threading.Event,
                 resume: threading.Event) -> None:
        self.__dict__.update(base.__dict__)
        self.at, self.reached, self.resume = at, reached, resume

    def assign_batch(self, batch: Sequence[Signals]) -> list[Assignment]:
        if any(signals.title == self.at for signals in batch):
            self.reached.set()
            self.resume.wait(120)
        return super().assign_batch(batch)


@pytest.mark.both_backends
def test_other_writers_complete_while_a_long_import_runs(digest: Digest,
                                                         tmp_path: Path) -> None:
    """Before, an import held the write lock for a whole file: an unsubscribe during it
    waited, then failed with "database is locked"."""
    assert BATCH_SIZE < 700 < 2 * BATCH_SIZE < 1200     # record 700: in batch 2 of 3
    digest.ok("subscribers", "add", "reader@example.org")
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps(_article(i)) + "\n" for i in range(1, 1201)))
    settings = load_settings(tmp_path / "digest.toml", environ={})
    store = Store.from_settings(settings)
    reached, resume = threading.Event(), threading.Event()
    classifier = _PausingClassifier(
        TopicClassifier(settings.topics, settings.digest.catch_all_topic),
        at=str(_article(700)["title"]), reached=reached, resume=resume)
    reports = []
    importer = threading.Thread(target=lambda: reports.append(
        import_files(store.writes, classifier, store.clock, [path])))
    importer.start()
    try:
        assert reached.wait(120), "the import never reached record 700"
        # The import is in the second batch of one file: others write now, not after it.
        result = digest("subscribers", "unsubscribe", "reader@example.org")
        assert result.exit_code == 0, result.output
        assert sql(tmp_path, "SELECT status FROM subscribers") == [("unsubscribed",)]
    finally:
        resume.set()
        importer.join()
        store.close()
    [report] = reports
    assert (report.added, report.duplicates, report.problems) == (1200, 0, [])
