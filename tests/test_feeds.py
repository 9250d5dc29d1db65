"""Feeds fetched over real HTTP from 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import CORPUS, Digest, need

from digest.config import load_settings
from digest.feeds import FeedBook
from digest.store import Store


def rss(title: str, items: list[tuple[str, str, str]]) -> bytes:
    entries = "".join(
        f"<item><title>{t}</title><link>{link}</link><description>{d}</description>"
        f"<pubDate>Mon, 0{i + 1} Jun 2026 10:00:00 GMT</pubDate></item>"
        for i, (t, link, d) in enumerate(items))
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>'
            f"<link>https://example.org/</link>{entries}</channel></rss>").encode()


class FeedServer:
    """Serves the corpus feeds and a few misbehaving paths; records (path, status)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(self, status: int, body: bytes = b"", **headers: str) -> None:
                server.log.append((self.path, status))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key.replace("_", "-"), value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path
                if path == "/slow.xml":
                    time.sleep(5)
                    return self.reply(200, rss("Slow", [("Late", "https://e.org/l", "x")]))
                if path.startswith("/redirect/"):
                    target = {"/redirect/file": "file:///etc/passwd",
                              "/redirect/ftp": "ftp://example.org/feed.xml",
                              "/redirect/loop": "/redirect/loop",
                              "/redirect/ok": "/feeds/feedjira__TechCrunch.xml"}[path]
                    return self.reply(302, Location=target)
                body = server.files.get(path)
                if body is None:
                    return self.reply(404, b"not found")
                etag = '"' + hashlib.sha1(body).hexdigest() + '"'
                if self.headers.get("If-None-Match") == etag:
                    return self.reply(304)
                kind = "text/html" if path.endswith(".html") else "application/xml"
                self.reply(200, body, ETag=etag, Content_Type=kind,
                           Last_Modified="Mon, 01 Jun 2026 10:00:00 GMT")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.stop()


def feeds_json(digest: Digest) -> dict[str, dict[str, object]]:
    return {f["name"]: f for f in json.loads(digest.ok("feeds", "list", "--format",
                                                       "json").stdout)}


_STORES: list[Store] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _STORES:
        _STORES.pop().close()


def book(folder: Path) -> FeedBook:
    settings = load_settings(folder / "digest.toml", environ={})
    store = Store.from_settings(settings)
    _STORES.append(store)
    return FeedBook(store, settings)


def test_every_corpus_feed_over_http(digest: Digest, http: FeedServer, tmp_path: Path) -> None:
    corpus = need(CORPUS / "feeds")
    files = sorted(p for p in corpus.iterdir() if p.suffix in (".xml", ".json"))
    feeds = book(tmp_path)
    for path in files:
        http.files[f"/feeds/{path.name}"] = path.read_bytes()
        feeds.add(f"{http.base}/feeds/{path.name}", path.stem, backfill=1000)
    result = digest("feeds", "fetch")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    added = int(result.stdout.split("feeds: ")[1].split(" new")[0])
    assert added > 200
    health = feeds_json(digest)
    assert health["feedjira__TechCrunch"]["last_success"] is not None
    assert health["feedjira__TechCrunch"]["items_added"] == 20
    empty = health["feedparser__rss_empty_document"]
    assert empty["last_status"] == "error" and "not a readable feed" in str(empty["last_error"])
    assert f"error: feedparser__rss_empty_document: {http.base}/feeds/" in result.stderr

    # Second fetch: conditional GET, 304 for every feed, nothing added.
    http.log.clear()
    again = digest.ok("feeds", "fetch")
    assert "0 new articles" in again.stdout
    assert {status for _path, status in http.log} == {304}
    assert len(http.log) == len(files)
    assert feeds_json(digest)["feedjira__TechCrunch"]["last_status"] == "not modified"

    # The hostile markup in the corpus does not survive into the rendered digest.
    digest.ok("preview", "--out", "p.html", env={"DIGEST_DIGEST__MAX_ARTICLES": "1000"})
    digest.ok("preview", "--text", "--out", "p.txt", env={"DIGEST_DIGEST__MAX_ARTICLES": "1000"})
    for name in ("p.html", "p.txt"):
        page = (tmp_path / name).read_text().lower()
        for bad in ("<script", "javascript:", "onerror=", "onload=", "expression(",
                    "<iframe", "<object", "<embed", "vbscript:"):
            assert bad not in page, (name, bad)


def test_redirects_are_checked_and_bounded(digest: Digest, http: FeedServer,
                                           tmp_path: Path) -> None:
    corpus = need(CORPUS / "feeds")
    http.files["/feeds/feedjira__TechCrunch.xml"] = \
        (corpus / "feedjira__TechCrunch.xml").read_bytes()
    feeds = book(tmp_path)
    for name in ("file", "ftp", "loop", "ok"):
        feeds.add(f"{http.base}/redirect/{name}", name)
    result = digest("feeds", "fetch")
    assert result.exit_code == 0
    health = feeds_json(digest)
    assert health["file"]["last_error"] == \
        f"{http.base}/redirect/file: refused a non-http(s) address 'file:///etc/passwd'"
    assert health["ftp"]["last_error"] == (f"{http.base}/redirect/ftp: refused a non-http(s) "
                                           f"address 'ftp://example.org/feed.xml'")
    assert health["loop"]["last_error"] == f"{http.base}/redirect/loop: more than 5 redirects"
    assert health["ok"]["items_added"] == 20
    new = json.loads(digest.ok("articles", "list", "--new", "--format", "json").stdout)
    assert len(new) == 3                           # the default backfill
    assert not any(path.startswith("/etc") for path, _ in http.log)


def test_feeds_add_refuses_other_schemes(digest: Digest) -> None:
    result = digest("feeds", "add", "file:///etc/passwd")
    assert result.exit_code == 1
    assert result.output == ("Error: refused a non-http(s) address 'file:///etc/passwd'; "
                             "feeds must be http:// or https:// URLs\n")


def test_a_silent_server_times_out_while_the_others_are_fetched(
        digest: Digest, http: FeedServer, tmp_path: Path) -> None:
    http.files["/good.xml"] = rss("Good", [("Fine story here", "https://e.org/a", "Text.")])
    feeds = book(tmp_path)
    feeds.add(f"{http.base}/slow.xml", "slow")
    feeds.add(f"{http.base}/good.xml", "good")
    result = digest("feeds", "fetch", env={"DIGEST_FETCH__TIMEOUT": "1"})
    assert result.exit_code == 0
    health = feeds_json(digest)
    assert health["slow"]["last_error"] == f"{http.base}/slow.xml: timed out after 1 s"
    assert health["good"]["items_added"] == 1
    assert "error: slow: " in result.stderr


def test_an_html_page_is_reported(digest: Digest, http: FeedServer, tmp_path: Path) -> None:
    http.files["/page.html"] = b"<!DOCTYPE html><html><head><title>Hi</title></head>" \
                               b"<body><p>Not a feed</p></body></html>"
    book(tmp_path).add(f"{http.base}/page.html", "page")
    result = digest("feeds", "fetch")
    assert result.exit_code == 1                  # the only feed failed
    assert feeds_json(digest)["page"]["last_error"] == \
        f"{http.base}/page.html: this is an HTML page, not an RSS/Atom feed"


def test_a_huge_feed_is_refused(digest: Digest, http: FeedServer, tmp_path: Path) -> None:
    http.files["/huge.xml"] = rss("Huge", [("x", "https://e.org/x", "y" * 2_000_000)])
    book(tmp_path).add(f"{http.base}/huge.xml", "huge")
    digest("feeds", "fetch", env={"DIGEST_FETCH__MAX_BYTES": "1000000"})
    assert feeds_json(digest)["huge"]["last_error"] == \
        f"{http.base}/huge.xml: larger than the 0.95 MB limit ([fetch] max_bytes)"


def test_the_same_story_in_two_feeds_is_one_article(digest: Digest, http: FeedServer,
                                                    tmp_path: Path) -> None:
    http.files["/a.xml"] = rss("Wire A", [
        ("Parliament passes the long-awaited digital services act today",
         "https://news.example.com/2026/act?utm_source=rss", "Lawmakers voted 402 to 98."),
        ("City opens a new library", "https://a.example.com/library", "Books for all."),
    ])
    http.files["/b.xml"] = rss("Wire B", [
        ("Parliament passes long-awaited digital services act today",     # near-identical
         "https://b.example.net/act-passes", "Lawmakers approved the act."),
        ("City opens a new library", "https://news.example.com/library#top", "Books!"),
        ("Something else entirely", "https://b.example.net/else", "Other."),
    ])
    http.files["/c.xml"] = rss("Wire C", [
        ("City opens a new library", "http://a.example.com/library/?fbclid=1", "Again."),
    ])
    feeds = book(tmp_path)
    for name in ("a", "b", "c"):
        feeds.add(f"{http.base}/{name}.xml", f"Wire {name.upper()}")
    digest.ok("feeds", "fetch", "--name", "Wire A")
    digest.ok("feeds", "fetch", "--name", "Wire B")
    digest.ok("feeds", "fetch", "--name", "Wire C")
    rows = json.loads(digest.ok("articles", "list", "--format", "json").stdout)
    by_title = {r["title"]: r for r in rows}
    assert len(rows) == 3
    act = by_title["Parliament passes the long-awaited digital services act today"]
    assert act["source"] == "Wire A · Wire B"
    assert by_title["City opens a new library"]["source"] == "Wire A · Wire B · Wire C"
    digest.ok("preview", "--out", "p.html")
    assert "Wire A · Wire B" in (tmp_path / "p.html").read_text()


def test_a_new_feed_does_not_flood_the_next_digest(digest: Digest, http: FeedServer,
                                                   tmp_path: Path) -> None:
    items = [(f"Story number {i} of the archive", f"https://e.org/{i}", "Text.")
             for i in range(10)]
    http.files["/blog.xml"] = rss("Blog", items)
    digest.ok("feeds", "add", f"{http.base}/blog.xml", "--name", "Blog", "--backfill", "2")
    digest.ok("feeds", "fetch")
    new = json.loads(digest.ok("articles", "list", "--new", "--format", "json").stdout)
    assert sorted(r["title"] for r in new) == ["Story number 8 of the archive",
                                               "Story number 9 of the archive"]
    assert len(json.loads(digest.ok("articles", "list", "--format", "json").stdout)) == 10
    http.files["/blog.xml"] = rss("Blog", items + [("A fresh story", "https://e.org/new", "T")])
    digest.ok("feeds", "fetch")
    new = json.loads(digest.ok("articles", "list", "--new", "--format", "json").stdout)
    assert "A fresh story" in {r["title"] for r in new} and len(new) == 3


def test_feeds_from_the_config_and_remove(digest: Digest, http: FeedServer,
                                          tmp_path: Path) -> None:
    http.files["/c.xml"] = rss("Configured", [("From the config file", "https://e.org/c", "T")])
    config = tmp_path / "digest.toml"
    config.write_text(config.read_text() + f'\n[[feeds]]\nurl = "{http.base}/c.xml"\n'
                      f'name = "Configured"\ntopic = "Science"\n')
    digest.ok("feeds", "fetch")
    [row] = json.loads(digest.ok("articles", "list", "--format", "json").stdout)
    assert (row["source"], row["topic"]) == ("Configured", "Science")
    assert feeds_json(digest)["Configured"]["from_config"] is True
    digest.ok("feeds", "add", f"{http.base}/other.xml", "--name", "Other")
    assert "Removed feed Other" in digest.ok("feeds", "remove", "Other").stdout
    assert set(feeds_json(digest)) == {"Configured"}
