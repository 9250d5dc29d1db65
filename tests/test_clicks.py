"""Click counts that track no one: the tracked link is byte-identical in every
subscriber's message; following it answers a redirect to the article and the count goes
up; HEAD requests, scanners, bursts, forged links and drafts' articles count for nothing.
Real SQLite, a real `digest send` to a real SMTP server on 127.0.0.1, the real app."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import (
    DATA,
    HTTP_TIMEOUT,
    NOW,
    SAMPLE_JSON,
    Digest,
    execute,
    need,
    smtp_env,
    sql,
    write_subscribers,
)
from flask.testing import FlaskClient
from mailservers import free_port

from digest.audience.clicks import ClickCounter, is_scanner
from digest.clock import FixedClock
from digest.config import Settings, load_settings, with_overrides
from digest.content.edition import ranked_stories
from digest.content.stories import click_factors
from digest.mail.loopback import LoopbackSMTPServer
from digest.mail.ranking import ranking_factors
from digest.store.articles import upcoming_edition
from digest.store.clicks import (
    ClickTarget,
    article_clicks,
    edition_clicks,
    record_click,
    source_clicks,
    uncounted_clicks,
)
from digest.store.db import Store
from digest.tokens import BadToken, ClickSigner, Signer
from digest.web.app import WebServer, create_app

SECRET = "a-test-secret-that-is-long-enough-0123456789"
BASE = "https://digest.example.org"
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, "
           "like Gecko) Version/17.4 Safari/605.1.15")
TRACKED = re.compile(re.escape(BASE) + r"/r/[0-9a-z]+\.[0-9a-z]+\.[A-Za-z0-9_-]{16}")
# Real User-Agents of machines that follow links in mail (as mail senders and bot lists
# record them): a security gateway, Gmail's image proxy, Outlook's existence check, link
# previews, a crawler, an HTTP library, and none at all.
SCANNERS = (
    "Barracuda Sentinel (EE)",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
    "GoogleImageProxy)",
    "Microsoft Office Existence Discovery",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/42.0.2311.135 Safari/537.36 Edge/12.246 Mozilla/5.0",
    "Mozilla/5.0 (compatible; Proofpoint)",
    "Mimecast-URL-Protect",
    "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/534+ (KHTML, like Gecko) BingPreview/1.0b",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "python-requests/2.32.3",
    "",
)
READERS = (
    BROWSER,
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Mobile Safari/537.36",
)


# [tracking] client_clicks as it is by default.
CLIENT_CLICKS = 50


def tracking_env(smtp: LoopbackSMTPServer, **extra: str) -> dict[str, str]:
    return smtp_env(smtp, **{"DIGEST_SECRET_KEY": SECRET, "DIGEST_TRACKING__CLICKS": "true",
                             "DIGEST_DIGEST__BASE_URL": BASE,
                             "DIGEST_DIGEST__UTM_SOURCE": "digest", **extra})


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [value for name, value in attrs if tag == "a" and name == "href"
                       and value]


def html_links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.hrefs


@dataclass
class Sent:
    """An edition sent with click counts on, and the app that answers its links."""

    digest: Digest
    smtp: LoopbackSMTPServer
    settings: Settings
    store: Store
    client: FlaskClient
    edition_id: int
    articles: list[int]

    def get(self, link: str, agent: str = BROWSER, address: str = "198.51.100.7",
            method: str = "GET") -> tuple[int, str | None]:
        path = urlsplit(link).path
        response = self.client.open(path, method=method, headers={"User-Agent": agent},
                                    environ_base={"REMOTE_ADDR": address})
        return response.status_code, response.headers.get("Location")

    def link(self, article_id: int, number: int = 1) -> str:
        return ClickCounter(self.store, self.settings).link(number, article_id)

    def flush(self) -> None:
        """Store what the app's click service holds (its flusher would, within a second)."""
        counter = self.client.application.extensions.get("digest-clicks")
        if hasattr(counter, "flush"):
            counter.flush()

    def counts(self) -> dict[int, int]:
        self.flush()
        return article_clicks(self.store, self.edition_id)

    def reasons(self) -> list[str]:
        """The reasons of the candidate clicks' rows, oldest first."""
        self.flush()
        return [r for (r,) in sql(self.digest.folder, "select reason from clicks order by id")]

    def uncounted(self) -> dict[str, int]:
        self.flush()
        return uncounted_clicks(self.store, self.edition_id)


def send(digest: Digest, smtp: LoopbackSMTPServer, readers: int, **extra: str) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(digest.folder, readers)))
    digest.ok("send", "--yes", env=tracking_env(smtp, **extra))


def open_sent(digest: Digest, smtp: LoopbackSMTPServer, **extra: str) -> Iterator[Sent]:
    settings = load_settings(digest.folder / "digest.toml", environ=tracking_env(smtp, **extra))
    store = Store.from_settings(settings)
    try:
        [(edition_id,)] = sql(digest.folder, "select id from editions where number = 1")
        articles = [i for (i,) in sql(digest.folder, "select id from articles where "
                                      f"edition_id = {edition_id} order by id")]
        client = create_app(settings, store).test_client()
        sent = Sent(digest, smtp, settings, store, client, edition_id, articles)
        yield sent
    finally:
        counter = client.application.extensions.get("digest-clicks")
        if hasattr(counter, "close"):
            counter.close()
        store.close()


@pytest.fixture
def sent(digest: Digest, smtp: LoopbackSMTPServer) -> Iterator[Sent]:
    send(digest, smtp, 3)
    yield from open_sent(digest, smtp)


# -- the link in the message --

def body(msg: EmailMessage, kind: str) -> str:
    part = msg.get_body((kind,))
    assert isinstance(part, EmailMessage)
    content: str = part.get_content()
    return content


def tracked_links(msg: EmailMessage) -> tuple[list[str], list[str]]:
    """The tracked links of a message's HTML part (each <a href>) and its text part."""
    html = body(msg, "html")
    plain = body(msg, "plain")
    return ([h for h in html_links(html) if TRACKED.fullmatch(h)], TRACKED.findall(plain))


def test_every_subscribers_message_carries_the_very_same_tracked_links(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    send(digest, smtp, 5)
    assert len(smtp.received) == 5
    seen = [tracked_links(item.message()) for item in smtp.received]
    html, plain = seen[0]
    assert len(html) >= 10 and sorted(set(html)) == sorted(set(plain))
    assert all(links == seen[0] for links in seen[1:])
    # The link is the same bytes in every message, on the wire too.
    raws = [item.data for item in smtp.received]
    for link in set(html):
        assert raws[0].count(link.encode()) > 0
        assert all(raw.count(link.encode()) == raws[0].count(link.encode()) for raw in raws)
    # Each names an article of edition 1, nothing else; articles go there only through it.
    signer = ClickSigner(SECRET.encode())
    ids = {i for (i,) in sql(digest.folder, "select id from articles where edition_id = "
                                            "(select id from editions where number = 1)")}
    claims = [signer.read(link.rsplit("/", 1)[1]) for link in html]
    assert {c.number for c in claims} == {1} and {c.article_id for c in claims} <= ids
    direct = [h for h in html_links(body(smtp.received[0].message(), "html"))
              if "utm_campaign" in h]
    assert direct == []


def test_also_covered_links_are_tracked_each_with_its_own_article(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    # One event from three feeds (AG News rows, tests/data/topics): one entry, whose
    # "Also covered by" links lead to the other two articles through links of their own.
    with need(DATA / "topics" / "ag_news_train_sample.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    now = digest.clock.now()
    items = [{"title": rows[line - 1][1], "summary": rows[line - 1][2].replace("\\", " "),
              "body": rows[line - 1][2].replace("\\", " "), "source": source,
              "url": f"https://{source.lower().replace(' ', '-')}.example/{line}",
              "published_at": (now - timedelta(hours=hours)).isoformat()}
             for line, source, hours in ((342, "AP", 5), (488, "Boston Globe", 20),
                                         (334, "Reuters", 3))]
    (digest.folder / "items.json").write_text(json.dumps(items))
    digest.ok("articles", "import", str(digest.folder / "items.json"))
    digest.ok("subscribers", "import", str(write_subscribers(digest.folder, 2)))
    digest.ok("send", "--yes", env=tracking_env(smtp))
    signer = ClickSigner(SECRET.encode())
    ids = dict(sql(digest.folder, "select url, id from articles"))
    for item in smtp.received:
        text_part = body(item.message(), "plain")
        assert "Also covered by" in text_part and "example/" not in text_part
        html, plain = tracked_links(item.message())
        assert sorted(signer.read(link.rsplit("/", 1)[1]).article_id for link in set(html)) \
            == sorted(ids.values())
        assert set(plain) == set(html)


def test_a_default_send_has_no_tracked_link(digest: Digest, smtp: LoopbackSMTPServer) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(digest.folder, 2)))
    digest.ok("send", "--yes", env=smtp_env(smtp, DIGEST_DIGEST__BASE_URL=BASE))
    urls = {u for (u,) in sql(digest.folder, "select url from articles")}
    for item in smtp.received:
        assert b"/r/" not in item.data
        assert urls & set(html_links(body(item.message(), "html")))


# -- following it --

@pytest.mark.both_backends
def test_a_click_redirects_to_the_article_and_counts(sent: Sent) -> None:
    article = sent.articles[0]
    [(url,)] = sql(sent.digest.folder, f"select url from articles where id = {article}")
    response = sent.client.get(urlsplit(sent.link(article)).path,
                               headers={"User-Agent": BROWSER},
                               environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.split("?")[0] == url.split("?")[0]
    assert parse_qs(urlsplit(location).query)["utm_campaign"] == ["digest-1"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert sent.counts() == {article: 1}
    assert edition_clicks(sent.store) == {sent.edition_id: 1}
    # Another reader, another article, and the first one again: each counts.
    assert sent.get(sent.link(sent.articles[1]), READERS[1], "203.0.113.9")[0] == 302
    assert sent.get(sent.link(article), READERS[2], "2001:db8::1")[0] == 302
    assert sent.counts() == {article: 2, sent.articles[1]: 1}
    assert edition_clicks(sent.store) == {sent.edition_id: 3}
    # What a click keeps: the edition, the article, when, a keyed hash, and why.
    rows = sql(sent.digest.folder, "select client, counted, reason from clicks")
    assert all(re.fullmatch(r"[0-9a-f]{64}", client) for client, _, _ in rows)
    assert not any("198.51" in client or "2001" in client for client, _, _ in rows)
    assert {(bool(c), r) for _, c, r in rows} == {(True, "counted")}
    # The archive's copy links to the articles themselves: its visitors are no readers
    # of the mail, and are not counted.
    archive = sent.client.get("/editions/1").get_data(as_text=True)
    assert "/r/" not in archive and url.split("?")[0] in archive


@pytest.mark.parametrize("agent", READERS)
def test_readers_browsers_count(sent: Sent, agent: str) -> None:
    assert not is_scanner(agent)
    assert sent.get(sent.link(sent.articles[0]), agent)[0] == 302
    assert sent.counts() == {sent.articles[0]: 1}


def test_head_requests_and_scanners_are_not_counted(sent: Sent) -> None:
    link = sent.link(sent.articles[0])
    status, location = sent.get(link, method="HEAD")
    assert status == 302 and location
    for number, agent in enumerate(SCANNERS):
        # Each from an address of its own: none of them is a burst.
        assert sent.get(link, agent, f"192.0.2.{number + 1}") == (302, location)
    assert sent.counts() == {}
    assert edition_clicks(sent.store) == {}
    assert sent.uncounted() == {"head": 1, "scanner": len(SCANNERS)}
    assert sent.reasons() == []         # tallies, not a row per request
    # editions show says what was left out, and why (a curl tried by hand is a tool).
    shown = sent.digest.ok("editions", "show", "1").output
    assert (f"Clicks: 0 counted; not counted: 1 HEAD requests, {len(SCANNERS)} link "
            f"scanners or tools") in shown
    data = json.loads(sent.digest.ok("editions", "show", "1", "--format", "json").output)
    assert data["clicks_not_counted"] == {"head": 1, "scanner": len(SCANNERS)}


def test_a_burst_from_one_address_counts_for_nothing(sent: Sent) -> None:
    # burst_seconds = 3600: on however slow a machine, these requests are one burst.
    slow = with_overrides(sent.settings, tracking={"burst_seconds": 3600})
    sent.client = create_app(slow, sent.store).test_client()
    a, b, c = sent.articles[:3]
    assert sent.get(sent.link(a))[0] == 302
    assert sent.counts() == {a: 1}
    assert sent.get(sent.link(b))[0] == 302
    assert sent.get(sent.link(c))[0] == 302        # the third: a scanner's
    assert sent.counts() == {}
    assert sent.reasons() == ["burst"] * 3
    # The same links from readers elsewhere still count.
    assert sent.get(sent.link(a), address="203.0.113.1")[0] == 302
    assert sent.get(sent.link(b), address="203.0.113.2")[0] == 302
    assert sent.counts() == {a: 1, b: 1}


@pytest.mark.both_backends
def test_the_burst_rule_by_the_clock(sent: Sent) -> None:
    target = [ClickTarget(sent.edition_id, 1, a, None, True) for a in sent.articles[:6]]
    start = datetime(2030, 1, 1, tzinfo=UTC)
    rule = {"burst_clicks": 3, "burst_seconds": 10}

    def click(n: int, seconds: float, client: str) -> str:
        return record_click(sent.store, target[n], client, "counted",
                            start + timedelta(seconds=seconds), **rule)

    # A reader's three clicks over a minute count; three within 10 s do not, and the
    # two before the third are taken back.
    assert [click(i, 25.0 * i, "reader") for i in range(3)] == ["counted"] * 3
    assert [click(i, 100 + 4.0 * i, "gateway") for i in range(2)] == ["counted"] * 2
    assert click(2, 109.0, "gateway") == "burst"
    assert click(3, 111.0, "gateway") == "burst"       # the burst goes on
    assert click(4, 200.0, "gateway") == "counted"     # and ends
    reasons = [r for (r,) in sql(sent.digest.folder,
                                 "select reason from clicks where client = 'gateway'")]
    assert reasons == ["burst", "burst", "burst", "burst", "counted"]
    assert sum(sent.counts().values()) == 4


@pytest.mark.both_backends
def test_a_reader_counts_once_per_article_however_they_pace_their_clicks(sent: Sent) -> None:
    """One address clicking one link every 5.1 s (never a burst) was counted every time:
    17,000 a day on one article, and through rank_by_clicks its source's ranking."""
    target = [ClickTarget(sent.edition_id, 1, a, None, True) for a in sent.articles[:2]]
    start = datetime(2030, 1, 1, tzinfo=UTC)
    rule = {"burst_clicks": 3, "burst_seconds": 5}
    reasons = [record_click(sent.store, target[0], "pacer", "counted",
                            start + timedelta(seconds=5.1 * n), **rule) for n in range(30)]
    assert reasons == ["counted"] + ["repeat"] * 29
    assert record_click(sent.store, target[1], "pacer", "counted",
                        start + timedelta(hours=1), **rule) == "counted"
    assert record_click(sent.store, target[0], "another reader", "counted",
                        start + timedelta(hours=1), **rule) == "counted"
    assert sent.counts() == {sent.articles[0]: 2, sent.articles[1]: 1}
    shown = sent.digest.ok("editions", "show", "1").output
    assert "Clicks: 3 counted; not counted: 29 repeats of a link from one address" in shown


def test_forged_altered_and_cut_links_count_nothing(sent: Sent) -> None:
    good = sent.link(sent.articles[0]).rsplit("/", 1)[1]
    number, article, mac = good.split(".")
    other_secret = ClickSigner(b"another-secret-that-is-long-enough-0123456789")
    forged = [
        f"{number}.{int(article, 36) + 1:x}.{mac}",                  # another article
        f"2.{article}.{mac}",                                        # another edition
        f"{number}.{article}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        good[:-3],                                                   # cut
        f"0{good}",                                                  # padded
        other_secret.make(1, sent.articles[0]),                      # another site's
        Signer(SECRET.encode(), "unsubscribe").make(1, 1),           # another purpose
        "x" * 300,
    ]
    for token in forged:
        response = sent.client.get(f"/r/{token}", headers={"User-Agent": BROWSER})
        assert response.status_code == 400, token
        assert b"not valid" in response.data
        assert "Location" not in response.headers
    # Well signed, but naming no article of a sent edition: nothing there.
    for claims in ((1, 10**6), (7, sent.articles[0])):
        response = sent.client.get(urlsplit(sent.link(claims[1], claims[0])).path)
        assert response.status_code == 404
    assert sql(sent.digest.folder, "select count(*) from clicks") == [(0,)]


def test_the_signer_names_only_the_edition_and_the_article() -> None:
    signer = ClickSigner(SECRET.encode())
    token = signer.make(12, 345678)
    assert token == ClickSigner(SECRET.encode()).make(12, 345678)   # every reader's
    assert signer.read(token).number == 12 and signer.read(token).article_id == 345678
    assert re.fullmatch(r"[0-9a-z.A-Z_-]{20,40}", token)
    with pytest.raises(BadToken):
        ClickSigner(b"another-secret-that-is-long-enough-0123456789").read(token)


def test_a_removed_or_cancelled_article_leads_nowhere(sent: Sent) -> None:
    first, second = sent.articles[:2]
    links = sent.link(first), sent.link(second)
    execute(sent.digest.folder, f"update articles set removed_at = '2030-01-01 00:00:00' "
                                f"where id = {first}")
    assert sent.get(links[0])[0] == 404
    execute(sent.digest.folder, f"update editions set status = 'cancelled' "
                                f"where id = {sent.edition_id}")
    assert sent.get(links[1])[0] == 404
    for status in ("paused", "sending", "sent"):
        execute(sent.digest.folder, f"update editions set status = '{status}' "
                                    f"where id = {sent.edition_id}")
        assert sent.get(links[1], address=f"192.0.2.{len(status)}")[0] == 302, status
    assert sql(sent.digest.folder, "select count(*) from clicks where article_id = "
                                   f"{first}") == [(0,)]
    assert sent.counts() == {second: 3}


def test_a_drafts_links_work_in_test_copies_but_count_once_it_goes_out(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    env = tracking_env(smtp)
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(digest.folder, 2)))
    digest.ok("editions", "draft", env=env)
    # The editor's preview shows the links readers will get.
    digest.ok("editions", "preview", "1", "--out", "p.html", env=env)
    previewed = [h for h in html_links((digest.folder / "p.html").read_text())
                 if TRACKED.fullmatch(h)]
    assert len(previewed) >= 10
    for s in open_sent(digest, smtp):
        # An editor following a link of the preview or of a test copy reaches the
        # article (it was a 404), and nothing counts.
        status, location = s.get(previewed[0])
        assert status == 302 and location
        digest.ok("editions", "approve", "1", "--by", "editor@example.org", env=env)
        assert s.get(previewed[0], address="192.0.2.99")[0] == 302
        assert s.uncounted() == {"early": 2} and s.reasons() == []
        digest.ok("send", "--yes", env=env)
        assert sorted(tracked_links(smtp.received[0].message())[0]) == sorted(previewed)
        status, location = s.get(previewed[0])
        assert status == 302 and location
        article = ClickSigner(SECRET.encode()).read(previewed[0].rsplit("/", 1)[1]).article_id
        assert s.counts() == {article: 1}
        shown = json.loads(digest.ok("editions", "show", "1", "--format", "json",
                                     env=env).stdout)
        assert shown["clicks"] == 1


def test_a_click_before_any_message_went_out_is_early(digest: Digest,
                                                      smtp: LoopbackSMTPServer) -> None:
    smtp.reply_policy = lambda phase, _f, _r: "451 4.7.1 try later" if phase == "RCPT" \
        else None
    send(digest, smtp, 2)
    assert sql(digest.folder, "select status, count(*) from deliveries group by status") \
        == [("deferred", 2)]
    for s in open_sent(digest, smtp):
        assert s.get(s.link(s.articles[0]))[0] == 302
        assert s.counts() == {} and s.uncounted() == {"early": 1}


def test_links_keep_working_when_counts_are_turned_off(digest: Digest,
                                                       smtp: LoopbackSMTPServer) -> None:
    send(digest, smtp, 1)
    for s in open_sent(digest, smtp, DIGEST_TRACKING__CLICKS="false"):
        status, location = s.get(s.link(s.articles[0]))
        assert status == 302 and location
        assert sql(digest.folder, "select count(*) from clicks") == [(0,)]


@contextmanager
def serving(settings: Settings) -> Iterator[httpx.Client]:
    """`digest serve`'s server on a free port of 127.0.0.1, and a client of it."""
    port = free_port()
    server = WebServer(settings, "127.0.0.1", port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=HTTP_TIMEOUT) as client:
            yield client
    finally:
        server.stop()
        thread.join(timeout=10)


def test_a_link_from_a_received_message_over_real_http(digest: Digest,
                                                       smtp: LoopbackSMTPServer) -> None:
    send(digest, smtp, 2)
    html, _ = tracked_links(smtp.received[0].message())
    path = urlsplit(html[0]).path
    settings = load_settings(digest.folder / "digest.toml", environ=tracking_env(smtp))
    with serving(settings) as client:
        head = client.head(path, headers={"User-Agent": BROWSER})
        response = client.get(path, headers={"User-Agent": BROWSER})
    assert head.status_code == 302 and response.status_code == 302
    assert response.headers["location"] == head.headers["location"]
    assert "utm_source=" in response.headers["location"]
    assert response.headers["cache-control"] == "no-store"
    token = path.rsplit("/", 1)[1]
    article = ClickSigner(SECRET.encode()).read(token).article_id
    assert sql(digest.folder, "select article_id, counted, reason from clicks order by id") \
        == [(article, 1, "counted")]
    assert sql(digest.folder, "select article_id, reason, requests from click_tallies") \
        == [(article, "head", 1)]


@pytest.mark.both_backends
def test_a_gateway_opening_every_link_at_once_counts_for_nothing(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    send(digest, smtp, 2)
    links = sorted(set(tracked_links(smtp.received[0].message())[0]))[:12]
    # Behind one proxy, so each request can come from an address of its own.
    settings = load_settings(digest.folder / "digest.toml",
                             environ=tracking_env(smtp, DIGEST_WEB__TRUSTED_PROXIES="1",
                                                  DIGEST_TRACKING__BURST_SECONDS="3600"))

    def get(client: httpx.Client, link: str, address: str) -> int:
        return client.get(urlsplit(link).path, headers={
            "User-Agent": BROWSER, "X-Forwarded-For": address}).status_code

    with serving(settings) as client, ThreadPoolExecutor(6) as pool:
        # A security gateway: every link from one address, side by side.
        assert set(pool.map(lambda link: get(client, link, "192.0.2.50"), links)) == {302}
        # Twelve readers, one link each.
        assert set(pool.map(lambda n: get(client, links[n], f"198.51.100.{n + 1}"),
                            range(len(links)))) == {302}
    rows = sql(digest.folder, "select client, counted, reason from clicks")
    by_client: dict[str, set[tuple[int, str]]] = {}
    for client_hash, counted, reason in rows:
        by_client.setdefault(client_hash, set()).add((counted, reason))
    assert len(rows) == 24 and len(by_client) == 13
    assert sorted(map(sorted, by_client.values())) == \
        [[(0, "burst")]] + [[(1, "counted")]] * 12
    store = Store.from_settings(settings)
    try:
        assert edition_clicks(store) == {1: 12}
    finally:
        store.close()


# -- what a flood leaves, and what is kept of a client --

@contextmanager
def clocked(sent: Sent, **tracking: int) -> Iterator[tuple[Sent, FixedClock]]:
    """The sent edition's app on a store whose clock stands still until the test moves it."""
    clock = FixedClock(sent.digest.clock.now() if sent.digest.clock else NOW)
    settings = with_overrides(sent.settings, tracking=tracking) if tracking else sent.settings
    store = Store.from_settings(settings, clock)
    client = create_app(settings, store).test_client()
    moved = Sent(sent.digest, sent.smtp, settings, store, client, sent.edition_id,
                 sent.articles)
    try:
        yield moved, clock
    finally:
        counter = client.application.extensions.get("digest-clicks")
        if hasattr(counter, "close"):
            counter.close()
        store.close()


def test_3000_requests_from_one_client_leave_a_bounded_number_of_rows(sent: Sent) -> None:
    """One address asking for the edition's links 3,000 times (GETs of every link, HEADs,
    a scanner's agent) was 3,000 rows: the table grew with the flood. The redirect works
    every time; what is kept is at most [tracking] client_clicks rows of that client and
    one tally per (article, reason)."""
    links = [urlsplit(sent.link(a)).path for a in sent.articles]
    kinds = (("GET", BROWSER), ("HEAD", BROWSER), ("GET", SCANNERS[0]))
    for n in range(3000):
        method, agent = kinds[n % 3]
        response = sent.client.open(links[n % len(links)], method=method,
                                    headers={"User-Agent": agent},
                                    environ_base={"REMOTE_ADDR": "192.0.2.66"})
        assert response.status_code == 302
    assert sent.counts() == {}
    limit = CLIENT_CLICKS
    [(rows,)] = sql(sent.digest.folder, "select count(*) from clicks")
    assert rows <= limit
    [(tallies, requests)] = sql(sent.digest.folder,
                                "select count(*), sum(requests) from click_tallies")
    assert tallies <= len(sent.articles) * 5 and rows + requests == 3000
    assert sum(sent.uncounted().values()) == 3000


def test_a_hundred_readers_count_once_each_and_a_network_over_its_limit_not_at_all(
        sent: Sent) -> None:
    """The rule: an article's counted clicks are the distinct client networks that asked
    for it in the edition, except networks over [tracking] client_clicks, which count for
    nothing. One address pacing itself past the burst rule (a request every 11 s over the
    edition's links) was counted once per article, on top of the hundred readers."""
    with clocked(sent) as (app, clock):
        first = app.link(app.articles[0])
        for n in range(100):
            for _ in range(2):          # a double click is one click
                assert app.get(first, address=f"198.51.100.{n + 1}")[0] == 302
        assert app.counts() == {app.articles[0]: 100}
        for n in range(CLIENT_CLICKS + 10):
            clock.advance(timedelta(seconds=11))
            link = app.link(app.articles[n % len(app.articles)])
            assert app.get(link, address="198.51.100.1")[0] == 302
        assert app.counts() == {app.articles[0]: 99}
        assert app.uncounted()["limit"] >= 10


def test_clicks_the_limit_takes_back_still_count_for_rankings_made_before(sent: Sent) -> None:
    target = [ClickTarget(sent.edition_id, 1, a, None, True) for a in sent.articles[:6]]
    start = datetime(2030, 1, 1, tzinfo=UTC)
    rule = {"burst_clicks": 3, "burst_seconds": 5, "client_clicks": 3}
    assert record_click(sent.store, target[0], "x", "counted", start, **rule) == "counted"
    until = start + timedelta(hours=1)
    before = source_clicks(sent.store, 2, until, 4)
    assert sum(c for c, _ in before.values()) == 1
    reasons = [record_click(sent.store, target[n], "x", "counted",
                            start + timedelta(hours=2, minutes=n), **rule) for n in range(1, 6)]
    assert reasons == ["counted", "counted", "limit", "limit", "limit"]
    assert sent.counts() == {}
    assert source_clicks(sent.store, 2, until, 4) == before
    assert sum(c for c, _ in source_clicks(sent.store, 2, start + timedelta(hours=3),
                                           4).values()) == 0


def test_when_counting_closes_no_client_hash_nor_key_remains_and_counts_stay(
        sent: Sent) -> None:
    with clocked(sent) as (app, clock):
        for n, article in enumerate(app.articles[:4]):
            assert app.get(app.link(article), address=f"203.0.113.{n + 1}")[0] == 302
        assert app.get(app.link(app.articles[0]), address="203.0.113.1")[0] == 302  # repeat
        assert app.get(app.link(app.articles[0]), SCANNERS[0], "203.0.113.9")[0] == 302
        counts, uncounted = app.counts(), app.uncounted()
        assert counts == {a: 1 for a in app.articles[:4]}
        assert uncounted == {"repeat": 1, "scanner": 1}
        # While counting is open: a hash keyed by the edition's own random key, which
        # nothing derived from the secret file tells again.
        clients = {c for (c,) in sql(app.digest.folder, "select client from clicks")}
        old_style = hmac.new(hmac.new(SECRET.encode(), b"digest-token:click-client",
                                      hashlib.sha256).digest(), b"1:203.0.113.1",
                             hashlib.sha256).hexdigest()
        assert old_style not in clients
        from digest.tokens import client_hash

        [(key,)] = sql(app.digest.folder, "select key from click_keys")
        assert client_hash(bytes.fromhex(key), "203.0.113.1") in clients
        # A day later counting closes: the key and every hash are gone, the counts stay.
        clock.advance(timedelta(hours=app.settings.tracking.count_hours, seconds=1))
        app.flush()
        assert sql(app.digest.folder, "select count(*) from click_keys") == [(0,)]
        assert sql(app.digest.folder, "select distinct client from clicks") == [("",)]
        assert app.counts() == counts and app.uncounted() == uncounted
        assert edition_clicks(app.store) == {app.edition_id: 4}
        # A later click counts again, under a new key of its own.
        assert app.get(app.link(app.articles[5]), address="203.0.113.1")[0] == 302
        assert app.counts() == {**counts, app.articles[5]: 1}
        [(later,)] = sql(app.digest.folder, "select key from click_keys")
        assert later != key


def test_each_edition_hashes_its_clients_with_a_key_of_its_own(sent: Sent) -> None:
    from digest.store.clicks import click_keys

    now = sent.digest.clock.now() if sent.digest.clock else NOW
    execute(sent.digest.folder, "insert into editions (number, cutoff, created_at, subject, "
                                f"status) values (2, '{now:%Y-%m-%d %H:%M:%S}', "
                                f"'{now:%Y-%m-%d %H:%M:%S}', 'No. 2', 'sent')")
    [(second,)] = sql(sent.digest.folder, "select id from editions where number = 2")
    keys = click_keys(sent.store, [sent.edition_id, second], now)
    assert keys[sent.edition_id] != keys[second]
    assert len(keys[second]) == 32
    assert click_keys(sent.store, [sent.edition_id, second], now) == keys     # kept
    stored = dict(sql(sent.digest.folder, "select edition_id, key from click_keys"))
    assert stored == {e: k.hex() for e, k in keys.items()}
    assert SECRET not in str(stored)


# -- clicks as a ranking signal --

def test_click_factors_are_shares_over_shares_held_between_half_and_double() -> None:
    assert click_factors({}) == {}
    assert click_factors({1: (0, 10), 2: (0, 30)}) == {1: 1.0, 2: 1.0}
    # Half the articles each; all 80 clicks on source 2.
    assert click_factors({1: (0, 10), 2: (80, 10)}) == {1: 0.5, 2: 1.8}
    # A handful of clicks moves a factor a little; thousands as far as the bounds.
    few = click_factors({1: (0, 10), 2: (3, 10)})
    assert 0.85 < few[1] < 1 < few[2] < 1.15
    many = click_factors({1: (0, 10), 2: (5000, 10), 3: (5000, 10)})
    assert many[1] == 0.5 and many[2] == many[3] == pytest.approx(1.5, abs=0.002)
    assert click_factors({1: (10_000, 1), 2: (0, 99)}) == {1: 2.0, 2: 0.5}


@pytest.mark.both_backends
def test_a_source_readers_click_ranks_higher_in_the_next_edition(sent: Sent) -> None:
    folder = sent.digest.folder
    sources = dict(sql(folder, "select name, id from sources"))
    lab, finance = sources["Lab Notes"], sources["Finance Daily"]
    clicked = [a for (a,) in sql(folder, f"select id from articles where source_id = {lab}")]
    an_hour_ago = sent.digest.clock.now() - timedelta(hours=1)
    for n in range(30):
        target = ClickTarget(sent.edition_id, 1, clicked[n % len(clicked)], None, True)
        record_click(sent.store, target, f"reader-{n}", "counted",
                     an_hour_ago + timedelta(seconds=n), burst_clicks=3, burst_seconds=10)
    assert sum(sent.counts().values()) == 30
    # The next edition: an older story of Lab Notes and a newer one of Finance Daily.
    now = sent.digest.clock.now()
    items = [{"title": title, "summary": text, "body": text, "source": source,
              "topic": "AI", "url": f"https://{source.split()[0].lower()}.example/{n}",
              "published_at": (now - timedelta(hours=hours)).isoformat()}
             for n, (source, hours, title, text) in enumerate([
                 ("Lab Notes", 20, "Benchmarks for small language models disagree",
                  "Three leaderboards rank the same eight open models in different orders."),
                 ("Finance Daily", 2, "Insurers ask chip makers for outage clauses",
                  "Underwriters want contracts to name who pays when accelerator supply "
                  "stops.")])]
    (folder / "next.json").write_text(json.dumps(items))
    sent.digest.ok("articles", "import", str(folder / "next.json"))
    now = sent.digest.clock.now()
    number, articles = upcoming_edition(sent.store, now)
    assert number == 2

    def ai_order(factors: dict[int, float] | None) -> list[str]:
        ranked = dict(ranked_stories(articles, sent.settings, now, factors=factors))
        return [story.lead.source_name or "" for story in ranked["AI"]]

    assert ranking_factors(sent.store, sent.settings, 2, now) is None      # off
    ranking = with_overrides(sent.settings, tracking={"rank_by_clicks": True})
    factors = ranking_factors(sent.store, ranking, 2, now)
    assert factors is not None
    assert 1 < factors[lab] <= 2 and 0.5 <= factors[finance] < 1
    assert all(0.5 <= f <= 2 for f in factors.values())
    assert ai_order(None) == ["Finance Daily", "Lab Notes"]
    assert ai_order(factors) == ["Lab Notes", "Finance Daily"]
    # Clicks after the edition was made leave its ranking as it was.
    late = ClickTarget(sent.edition_id, 1, sent.articles[-1], None, True)
    for n in range(20):
        record_click(sent.store, late, f"late-{n}", "counted", now + timedelta(seconds=n),
                     burst_clicks=3, burst_seconds=10)
    assert ranking_factors(sent.store, ranking, 2, now) == factors
    # Every rendering of edition 2 ranks by the same factors: the desk, the preview and the
    # sent mail (and, without the setting, none of them does).
    env = tracking_env(sent.smtp, DIGEST_TRACKING__RANK_BY_CLICKS="true")
    sent.digest.ok("editions", "draft", env=env)
    shown = json.loads(sent.digest.ok("editions", "show", "2", "--format", "json",
                                      env=env).output)
    assert [a["source"] for a in shown["articles"] if a["topic"] == "AI"] == [
        "Lab Notes", "Finance Daily"]
    plain = json.loads(sent.digest.ok("editions", "show", "2", "--format", "json").output)
    assert [a["source"] for a in plain["articles"] if a["topic"] == "AI"] == [
        "Finance Daily", "Lab Notes"]
    sent.digest.ok("preview", "--text", "--out", "p.txt", env=env)
    preview = (folder / "p.txt").read_text()
    assert preview.index("Benchmarks for small") < preview.index("Insurers ask chip")
    sent.digest.ok("editions", "approve", "2", env=env)
    before = len(sent.smtp.received)
    sent.digest.ok("send", "--yes", env=env)
    mail = body(sent.smtp.received[before].message(), "plain")
    assert mail.index("Benchmarks for small") < mail.index("Insurers ask chip")
