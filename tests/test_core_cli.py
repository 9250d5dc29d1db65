"""The core pipeline through the CLI: init, import, preview."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import SAMPLE_JSON, SEED, Digest, need

SEED_TITLE = "OpenAI Executive Jan Leike Resigns, Citing Safety Concerns"
BOILERPLATE = ["ADVERTISEMENT", "Show Full Article", "Print Article", "Next Story",
               "More Stories", "Highlights"]


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.read_more: list[str] = []
        self.h2: list[str] = []
        self.styled = 0
        self._href: str | None = None
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("style"):
            self.styled += 1
        if tag == "a":
            self._href = a.get("href")
        if tag == "h2":
            self._in_h2 = True
            self.h2.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.h2[-1] += data
        if self._href is not None and "Read more" in data:
            self.read_more.append(self._href)
            self._href = None


def test_init_import_preview(digest: Digest, tmp_path: Path) -> None:
    seed = need(SEED)
    # The seed says it is from May 2024 (too old by default): taken as news here.
    result = digest.ok("articles", "import", str(seed), "--since", "2024-05-01")
    assert "Imported 1 new article, skipped 0 duplicates." in result.output
    result = digest.ok("articles", "import", str(SAMPLE_JSON))
    assert "Imported 30 new articles, skipped 0 duplicates." in result.output

    result = digest.ok("preview", "--out", "d.html")
    assert "Wrote d.html: edition 1, 30 articles in 8 topics." in result.output
    html = (tmp_path / "d.html").read_text()
    page = Links()
    page.feed(html)
    assert page.styled > 50, "premailer inlined the CSS"
    assert "@media" in html and "prefers-color-scheme: dark" in html
    topics = [h.strip() for h in page.h2]
    assert topics == ["AI", "Technology", "Science", "Business", "Politics", "Culture",
                      "Sports", "More stories"]
    assert len(page.read_more) == 30
    assert all(re.match(r"https?://[^/]+/", href) for href in page.read_more)
    entry = html[html.rindex('<div class="entry"', 0, html.index(f">{SEED_TITLE}</a>")):]
    entry = entry[:entry.index("Read more")]
    assert entry.count(SEED_TITLE) == 1
    assert "Jan Leike, OpenAI's alignment lead, resigns" in entry.replace("&#39;", "'")
    for line in BOILERPLATE:
        assert line not in html

    result = digest.ok("preview", "--text", "--out", "d.txt")
    text = (tmp_path / "d.txt").read_text()
    assert text.count(SEED_TITLE) == 1
    assert "Jan Leike, OpenAI's alignment lead, resigns" in text
    assert text.count("Read more: ") == 30
    data = json.loads(SAMPLE_JSON.read_text())
    shown = " ".join(text.split())
    missing = [a["title"] for a in data if " ".join(a["title"].split()[:4]) not in shown]
    assert len(missing) <= 1, missing          # 31 articles, 30 shown: one waits online
    for line in BOILERPLATE:
        assert line not in text


@pytest.mark.both_backends
def test_reimport_adds_nothing_and_says_so(digest: Digest) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    result = digest.ok("articles", "import", str(SAMPLE_JSON))
    assert result.output.strip() == ("Imported 0 new articles, skipped 30 duplicates (nothing "
                                     "new: these articles are already in the store).")


@pytest.mark.both_backends
def test_a_removed_article_stays_removed_and_is_still_a_duplicate(digest: Digest,
                                                                    tmp_path: Path) -> None:
    """Removing once deleted the rows: the next import of the same file brought them back
    as new (and into the next edition). Now they stay out, counted as duplicates."""
    digest.ok("articles", "import", str(SAMPLE_JSON))
    first, second = json.loads(SAMPLE_JSON.read_text())[:2]
    assert digest.ok("articles", "remove", "1", "2").stdout == (
        f"Removed article 1: {first['title']}\nRemoved article 2: {second['title']}\n")
    again = digest.ok("articles", "import", str(SAMPLE_JSON))
    assert again.output.strip() == ("Imported 0 new articles, skipped 30 duplicates (nothing "
                                    "new: these articles are already in the store).")
    # The same story under a near-identical title, with other text and no URL: still one.
    (tmp_path / "retold.json").write_text(json.dumps([
        {"title": first["title"].replace("close the gap", "closing the gap"),
         "body": "Told differently."},
        {"title": second["title"], "body": "Told differently too."}]))
    assert "Imported 0 new articles, skipped 2 duplicates" in \
        digest.ok("articles", "import", "retold.json").output
    listed = json.loads(digest.ok("articles", "list", "--format", "json").stdout)
    assert len(listed) == 28 and {1, 2}.isdisjoint(r["id"] for r in listed)
    new = json.loads(digest.ok("articles", "list", "--new", "--format", "json").stdout)
    assert len(new) == 28 and {1, 2}.isdisjoint(r["id"] for r in new)
    removed = json.loads(digest.ok("articles", "list", "--removed", "--format", "json").stdout)
    assert sorted((r["id"], r["title"]) for r in removed) == [(1, first["title"]),
                                                              (2, second["title"])]
    assert all(r["removed_at"] and r["body"] == "" for r in removed)
    assert "28 articles" in digest.ok("articles", "list").stdout
    assert "Wrote p.html: edition 1, 28 articles" in digest.ok("preview", "--out",
                                                               "p.html").output
    assert first["title"] not in (tmp_path / "p.html").read_text()
    gone = digest("articles", "remove", "1")
    assert gone.output == "Error: there is no article 1 (see: digest articles list)\n"
    moved = digest("articles", "set-topic", "2", "Science")
    assert moved.output == "Error: there is no article 2 (see: digest articles list)\n"


@pytest.mark.both_backends
def test_duplicate_by_canonical_url_and_by_text(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(o) for o in [
        {"title": "Story one", "url": "https://www.example.com/a/?utm_source=x&id=3#top",
         "body": "First text."},
        {"title": "Story one, retitled", "url": "http://example.com/a?id=3&fbclid=abc",
         "body": "Other text."},
        {"title": "  STORY   two ", "body": "Same body, spaced   differently."},
        {"title": "Story two", "body": "same body spaced differently"},
    ]))
    result = digest.ok("articles", "import", "a.jsonl")
    assert "Imported 2 new articles, skipped 2 duplicates." in result.output


@pytest.mark.both_backends
def test_articles_list_json_gives_every_field(digest: Digest) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    rows = json.loads(digest.ok("articles", "list", "--format", "json", "--topic", "ai").stdout)
    assert rows and all(r["topic"] == "AI" for r in rows)
    assert {"title", "url", "canonical_url", "author", "published_at", "added_at", "summary",
            "body", "topic", "tags", "content_hash", "source"} <= set(rows[0])
    assert rows[0]["body"]
    new = json.loads(digest.ok("articles", "list", "--new", "--format", "json").stdout)
    assert len(new) == 30


def test_bad_files_get_one_line_each(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('[{"title": "x", ')
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04")
    result = digest("articles", "import", "broken.json", "empty.txt", "notes.docx")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [
        "error: broken.json:1: not valid JSON: Expecting property name enclosed in double "
        "quotes",
        "error: empty.txt: no text in the file (the first non-empty line is the title, the "
        "rest the article)",
        "error: notes.docx: unknown file type '.docx'; use one of .json, .jsonl, .txt, "
        ".html, .htm, .xml, .rss, .atom",
    ]
    assert "Traceback" not in result.output

    (tmp_path / "good.json").write_text(json.dumps([{"title": "Fine", "body": "Some text."}]))
    result = digest("articles", "import", "broken.json", "good.json")
    assert result.exit_code == 3          # partly done
    assert "Imported 1 new article, skipped 0 duplicates, 1 problem." in result.stdout
    assert "broken.json:1: not valid JSON" in result.stderr


def test_bad_record_does_not_take_the_good_ones_down(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "mixed.jsonl").write_text("\n".join([
        json.dumps({"title": "Good one", "body": "Text."}),
        json.dumps({"body": "no title"}),
        "{not json",
        json.dumps({"title": "Bad date", "body": "x y", "published_at": "last tuesday"}),
        json.dumps({"title": "Bad url", "body": "x y", "url": "javascript:alert(1)"}),
        json.dumps({"title": "Good two", "body": "More text."}),
    ]))
    result = digest("articles", "import", "mixed.jsonl")
    assert result.exit_code == 3          # partly done
    assert "Imported 2 new articles" in result.stdout
    assert result.stderr.splitlines() == [
        "error: mixed.jsonl:2: missing title (every article needs a non-empty \"title\")",
        "error: mixed.jsonl:3: not valid JSON: Expecting property name enclosed in double "
        "quotes (column 2)",
        "error: mixed.jsonl:4: 'last tuesday' is not a date; use ISO 8601, e.g. "
        "2024-05-17T09:00:00Z",
        "error: mixed.jsonl:5: url 'javascript:alert(1)' is not an absolute http(s) URL",
    ]


def test_hostile_html_never_reaches_the_output(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "evil.json").write_text(json.dumps([{
        "title": "Hello <script>alert('t')</script><img src=x onerror=alert(1)>world",
        "summary": "Summary <a href=\"javascript:alert(2)\">click</a> with enough words to "
                   "count as a summary <svg onload=alert(3)>",
        "body": "<p>Body</p><script>document.cookie</script><iframe src=//evil></iframe>"
                "<a href='javascript:steal()' onclick='x()'>link</a> and more words here.",
        "url": "https://example.com/evil",
    }]))
    digest.ok("articles", "import", "evil.json")
    for args in (["preview", "--out", "p.html"], ["preview", "--text", "--out", "p.txt"]):
        digest.ok(*args)
        out = (tmp_path / args[-1]).read_text().lower()
        for bad in ("<script", "onerror", "onload", "javascript:", "<iframe", "<svg",
                    "document.cookie", "onclick"):
            assert bad not in out, bad
    rows = json.loads(digest.ok("articles", "list", "--format", "json").stdout)
    assert rows[0]["title"] == "Hello world"
    assert "<script" not in (rows[0]["body_html"] or "")
    assert "javascript:" not in (rows[0]["body_html"] or "")


def test_topic_option_and_unknown_topic(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text(json.dumps([{"title": "Parliament votes", "body": "Text."}]))
    result = digest("articles", "import", "one.json", "--topic", "Gardening")
    assert result.exit_code == 1
    assert result.output.startswith("Error: --topic 'Gardening' is not a configured topic")
    digest.ok("articles", "import", "one.json", "--topic", "science")
    rows = json.loads(digest.ok("articles", "list", "--format", "json").stdout)
    assert rows[0]["topic"] == "Science"


def test_preview_with_nothing_new(digest: Digest) -> None:
    result = digest("preview")
    assert result.exit_code == 1
    assert result.output == ("Error: no new articles since the last edition: nothing to "
                             "preview (import some with: digest articles import FILE…)\n")


def test_preview_of_one_subscribers_topics(digest: Digest, tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    result = digest.ok("preview", "--topic", "AI", "--topic", "sports", "--out", "v.html")
    assert "articles in 2 topics" in result.output
    html = (tmp_path / "v.html").read_text()
    assert ">AI</h2>" in html and ">Sports</h2>" in html and ">Science</h2>" not in html


def test_max_articles_caps_with_more_line(digest: Digest, tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    result = digest.ok("preview", "--text", "--out", "t.txt",
                       env={"DIGEST_DIGEST__MAX_ARTICLES": "8"})
    assert "8 articles in 8 topics" in result.output
    text = (tmp_path / "t.txt").read_text()
    assert text.count("Read more: ") == 8
    assert "4 more AI stories: https://digest.example.org/editions/1#topic-ai" in text


def test_the_catch_alls_more_line_reads_well(digest: Digest, tmp_path: Path) -> None:
    """The catch-all's name is a phrase already: never "2 more More stories stories"."""
    (tmp_path / "misc.json").write_text(json.dumps([
        {"title": f"Village fete number {i}", "url": f"https://example.org/fete-{i}",
         "body": "Cakes and a tombola on the green.", "topic": "More stories"}
        for i in range(3)]))
    digest.ok("articles", "import", "misc.json")
    digest.ok("preview", "--text", "--out", "t.txt",
              env={"DIGEST_DIGEST__MAX_ARTICLES": "1"})
    text = (tmp_path / "t.txt").read_text()
    assert "2 more stories: https://digest.example.org/editions/1#topic-more-stories" in text
    digest.ok("preview", "--out", "t.html", env={"DIGEST_DIGEST__MAX_ARTICLES": "1"})
    html = (tmp_path / "t.html").read_text()
    assert "2 more stories in the online edition" in html
    assert "More stories stor" not in text + html


def test_templates_dir_overrides_one_template(digest: Digest, tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "digest.txt.j2").write_text(
        "{% for s in sections %}{{ s.topic }}={{ s.entries|length }};{% endfor %}"
        "{{ unsubscribe_url }}")
    digest.ok("preview", "--text", "--out", "t.txt",
              env={"DIGEST_DIGEST__TEMPLATES_DIR": "mine"})
    assert re.match(r"AI=\d+;Technology=\d+;", (tmp_path / "t.txt").read_text())
    digest.ok("preview", "--out", "t.html", env={"DIGEST_DIGEST__TEMPLATES_DIR": "mine"})
    assert "<table role=\"presentation\"" in (tmp_path / "t.html").read_text()


def test_utm_parameters_on_read_more_links(digest: Digest, tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("preview", "--text", "--out", "t.txt", env={"DIGEST_DIGEST__UTM_SOURCE": "weekly"})
    text = (tmp_path / "t.txt").read_text()
    # The feed's own utm_* are replaced, not doubled.
    assert ("https://healthwire.example.net/ml-triage-pilot?utm_source=weekly&utm_medium=email"
            "&utm_campaign=digest-1") in text
    assert "utm_source=rss" not in text


def test_outside_a_digest_folder_commands_refuse_and_create_nothing(tmp_path: Path) -> None:
    """Run anywhere, a command once made an empty digest.db there and worked on it."""
    d = Digest(tmp_path)
    for args in (["articles", "list"], ["subscribers", "add", "a@example.org"],
                 ["send", "--yes"]):
        result = d(*args)
        assert result.exit_code == 1, args
        assert result.output == (f"Error: no digest.toml in {tmp_path}; run `digest init` "
                                 f"here, or pass --config PATH (or set DIGEST_CONFIG)\n")
    assert list(tmp_path.iterdir()) == []
    assert d("--help").exit_code == 0 and d("articles", "--help").exit_code == 0


def test_tables_at_80_columns_never_cut_what_identifies_a_row(digest: Digest,
                                                              tmp_path: Path) -> None:
    """At 80 columns `editions list` once showed "2026-1…" and the import table's long file
    names all ended alike in "…"."""
    folder = tmp_path / "exports-from-the-old-content-management-system" / "weekly"
    folder.mkdir(parents=True)
    data = json.loads(SAMPLE_JSON.read_text())
    for i in range(3):
        (folder / f"articles-of-the-newsroom-archive-part-{i}.json").write_text(
            json.dumps(data[i * 10:(i + 1) * 10]))
    result = digest.ok("articles", "import", str(folder))
    assert "…" not in result.stdout
    flat = re.sub(r"[\s│┃]", "", result.stdout)
    for i in range(3):
        assert f"articles-of-the-newsroom-archive-part-{i}.json" in flat
    digest.ok("subscribers", "add", "a-rather-long-address-for-a-reader@example.org",
              "--timezone", "America/Argentina/ComodRivadavia")
    listed = digest.ok("subscribers", "list").stdout
    assert "a-rather-long-address-for-a-reader@example.org" in listed
    assert "America/Argentina/ComodRivadavia" in listed and "…" not in listed
    digest.ok("send", "--enqueue")
    editions = digest.ok("editions", "list").stdout
    assert re.search(r"│ 1\s+│ \d{4}-\d\d-\d\d \d\d:\d\d │ sending │ 30\s+│ 1 pending", editions)
    assert all(len(line) <= 80 for line in editions.splitlines()) and "…" not in editions


def test_preview_to_stdout(digest: Digest, tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    result = digest.ok("preview", "--text", "--out", "-")
    assert result.stdout.startswith("The Weekly Digest · No. 1 · ")
    assert result.stderr.startswith("Rendered edition 1, 30 articles in 8 topics.\nSubject: ")
    assert not (tmp_path / "-").exists() and not (tmp_path / "preview.txt").exists()


def test_serve_on_a_port_in_use_is_one_line(digest: Digest) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = digest("serve", "--port", str(port))
    assert result.exit_code == 1
    assert result.output == (f"Error: cannot listen on 127.0.0.1:{port} (Address already in "
                             f"use); stop what uses that port, or choose another with --port\n")
    bad = digest("serve", "--host", "127.0.0.l", "--port", str(port))
    assert bad.exit_code == 1 and bad.output.startswith("Error: cannot listen on 127.0.0.l:")
    assert bad.output.endswith("--host must be an address of this machine, such as 127.0.0.1 "
                               "(or 0.0.0.0 for all of them)\n")


def test_init_where_no_folder_can_be_made_is_one_line(tmp_path: Path) -> None:
    result = Digest(tmp_path)("init", "/proc/no-such-place")
    assert result.exit_code == 1
    assert result.output == ("Error: cannot create the folder /proc/no-such-place (No such "
                             "file or directory); choose a folder you can write to\n")


def test_patterns_and_addresses_are_checked_when_the_config_is_read(digest: Digest) -> None:
    cases = {
        "DIGEST_DIGEST__UTM_CAMPAIGN": ("digest-{num}", "[digest] utm_campaign 'digest-{num}' "
                                        "is invalid (KeyError('num')); it may use {number}"),
        "DIGEST_DIGEST__SUBJECT": ("{name} {top", "[digest] subject '{name} {top' is invalid"),
        "DIGEST_DIGEST__REPLY_TO": ("not an address", "[digest] reply_to 'not an address' has "
                                    "no address"),
    }
    for key, (value, message) in cases.items():
        result = digest("preview", env={key: value})
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:   # never serves, whatever happens
        short = digest("serve", "--port", str(taken.getsockname()[1]),
                       env={"DIGEST_SECRET_KEY": "short"})
    assert short.output.startswith("Error: DIGEST_SECRET_KEY has fewer than 32 characters")


def _rows(table: str) -> list[list[str]]:
    """The body rows of a printed table, as their cells."""
    return [[cell.strip() for cell in line.strip("│").split("│")]
            for line in table.splitlines() if line.startswith("│")]


def test_lists_at_80_columns_give_the_room_to_titles_and_urls(digest: Digest,
                                                              tmp_path: Path) -> None:
    """At 80 columns `articles list` squeezed titles to 14 characters (four lines a row)
    beside a wide source column; `feeds list` cut names and URLs into 5-character chunks;
    `suppressions list` wrapped addresses. One line a row now, the long value cut with
    "…", the title or URL taking the room."""
    digest.ok("articles", "import", str(SAMPLE_JSON))
    listed = digest.ok("articles", "list").stdout
    assert all(len(line) <= 80 for line in listed.splitlines())
    rows = _rows(listed)
    assert len(rows) == 30                              # one line a row, none wrapped
    titles = {a["id"]: a["title"] for a in json.loads(
        digest.ok("articles", "list", "--format", "json").stdout)}
    for row in rows:
        title = titles[int(row[0])]
        shown = row[2]
        assert shown == title or (shown.endswith("…") and title.startswith(shown[:-1])
                                  and len(shown) >= 24), (shown, title)
    digest.ok("feeds", "add", "https://news.example.org/sections/science-and-research/"
              "feeds/everything.xml", "--name", "Science and research, everything")
    feeds = digest.ok("feeds", "list").stdout
    assert all(len(line) <= 80 for line in feeds.splitlines())
    [feed] = _rows(feeds)
    assert feed[1].startswith("https://news.example.org/sec") and feed[1].endswith("…")
    assert feed[0].startswith("Science and")
    digest.ok("suppressions", "add", "someone.with.a.rather.long.address@newsroom.example.com")
    suppressed = digest.ok("suppressions", "list").stdout
    [entry] = _rows(suppressed)
    assert entry[0] == "someone.with.a.rather.long.address@newsroom.example.com"


def test_articles_list_is_newest_published_first_undated_last(digest: Digest,
                                                             tmp_path: Path) -> None:
    """"newest first" sorted by import: an undated note imported last came first, and
    the sample's week was in id order, not by date."""
    digest.ok("articles", "import", str(SAMPLE_JSON))
    (tmp_path / "note.json").write_text(json.dumps([{
        "title": "An undated note about gardens", "url": "https://example.org/undated",
        "summary": "Soil, seeds and patience."}]))
    digest.ok("articles", "import", "note.json")
    listed = json.loads(digest.ok("articles", "list", "--format", "json").stdout)
    dates = [a["published_at"] for a in listed]
    assert dates[-1] is None and listed[-1]["title"] == "An undated note about gardens"
    assert dates[:-1] == sorted(dates[:-1], reverse=True)
    assert [_rows(digest.ok("articles", "list", "--limit", "1").stdout)[0][4]] == [
        dates[0][:10]]
