"""The subscriber pages over real HTTP on 127.0.0.1 (waitress), with mail through a real
SMTP server."""

from __future__ import annotations

import json
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import waitress
from conftest import SAMPLE_JSON, Digest, run_digest, smtp_env

from digest.config import load_settings
from digest.loopback import LoopbackSMTPServer, free_port
from digest.store import Store
from digest.tokens import Signer
from digest.web import create_app

SECRET = "a-test-secret-that-is-long-enough-0123456789"


@dataclass
class Site:
    base: str
    env: dict[str, str]
    digest: Digest
    smtp: LoopbackSMTPServer

    def status(self, email: str) -> str:
        rows = json.loads(self.digest.ok("subscribers", "list", "--format", "json").stdout)
        return next(r["status"] for r in rows if r["email"] == email)


@pytest.fixture
def site(digest: Digest, tmp_path: Path, smtp: LoopbackSMTPServer) -> Iterator[Site]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = smtp_env(smtp, DIGEST_DIGEST__BASE_URL=base, DIGEST_SECRET_KEY=SECRET)
    settings = load_settings(tmp_path / "digest.toml", environ=env)
    store = Store.from_settings(settings)
    server = waitress.create_server(create_app(settings, store), host="127.0.0.1",
                                    port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield Site(base, env, digest, smtp)
    server.close()
    thread.join(timeout=5)
    store.close()


def send_edition(site: Site) -> None:
    site.digest.ok("articles", "import", str(SAMPLE_JSON))
    site.digest.ok("send", "--yes", env=site.env)


def csrf_form(client: httpx.Client, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def test_one_click_unsubscribe_the_way_gmail_does_it(site: Site) -> None:
    site.digest.ok("subscribers", "add", "ada@example.org")
    site.digest.ok("subscribers", "add", "bob@example.org")
    send_edition(site)
    msg = next(i.message() for i in site.smtp.received if i.recipients == ("ada@example.org",))
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = msg["List-Unsubscribe"].strip("<>")
    assert url.startswith(site.base + "/u/")

    # A link scanner (or the reader) following the link: a page, nobody unsubscribed.
    page = httpx.get(url)
    assert page.status_code == 200 and "Unsubscribe?" in page.text
    assert site.status("ada@example.org") == "active"

    # Gmail: a POST with exactly this body, no cookies, no confirmation.
    response = httpx.post(url, content=b"List-Unsubscribe=One-Click",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    assert "set-cookie" not in response.headers
    assert site.status("ada@example.org") == "unsubscribed"
    assert site.status("bob@example.org") == "active"
    # Again: still fine, nothing else changes.
    assert httpx.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200

    # The next edition skips Ada.
    (site.digest.folder / "more.json").write_text(json.dumps(
        [{"title": "A story for the second edition", "body": "Text of it."}]))
    site.digest.ok("articles", "import", "more.json")
    before = len(site.smtp.received)
    site.digest.ok("send", "--yes", env=site.env)
    assert [i.recipients for i in site.smtp.received[before:]] == [("bob@example.org",)]


def test_forged_or_altered_tokens_get_400_and_change_nothing(site: Site) -> None:
    site.digest.ok("subscribers", "add", "ada@example.org")
    send_edition(site)
    url = site.smtp.received[0].message()["List-Unsubscribe"].strip("<>")
    token = url.rsplit("/", 1)[1]
    payload, mac = token.split(".")
    other_id = Signer(b"wrong-secret", "unsubscribe").make(1, 1)
    preferences_token = Signer(SECRET.encode(), "preferences").make(1, 1)
    for bad in (f"{payload}.{mac[:-2]}xx", f"{payload[:-1]}A.{mac}", "garbage", other_id,
                preferences_token, "a.b.c"):
        response = httpx.post(f"{site.base}/u/{bad}", data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 400, bad
        assert "not valid" in response.text
        assert "Traceback" not in response.text
    assert site.status("ada@example.org") == "active"
    # A POST without the RFC 8058 body changes nothing either.
    assert httpx.post(url, data={}).status_code == 400
    assert site.status("ada@example.org") == "active"


def test_sign_up_with_double_opt_in(site: Site) -> None:
    with httpx.Client(base_url=site.base) as client:
        token = csrf_form(client, "/subscribe")
        response = client.post("/subscribe", data={
            "csrf_token": token, "email": "New.Reader@Example.org", "name": "New Reader",
            "topics": ["AI", "Science"]})
        assert response.status_code == 200
        assert "Check your inbox" in response.text
    assert site.status("New.Reader@example.org") == "pending"
    [mail] = site.smtp.received
    msg = mail.message()
    assert msg["Subject"] == "Confirm your subscription to The Weekly Digest"
    link = re.search(r"(http://\S+/confirm/\S+)", msg.get_content()).group(1)

    confirmed = httpx.get(link)
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    row = json.loads(site.digest.ok("subscribers", "list", "--format", "json").stdout)[0]
    assert (row["status"], row["name"], row["topics"]) == ("active", "New Reader",
                                                           ["AI", "Science"])
    reused = httpx.get(link)
    assert reused.status_code == 400 and "already used" in reused.text

    expired = Signer(SECRET.encode(), "confirm").make(1, 2, int(time.time()) - 1)
    response = httpx.get(f"{site.base}/confirm/{expired}")
    assert response.status_code == 400 and "expired" in response.text


def test_sign_up_says_the_same_for_known_addresses_and_is_rate_limited(site: Site) -> None:
    site.digest.ok("subscribers", "add", "known@example.org")
    bodies = []
    with httpx.Client(base_url=site.base) as client:
        for email in ("known@example.org", "unknown@example.org"):
            token = csrf_form(client, "/subscribe")
            response = client.post("/subscribe", data={"csrf_token": token, "email": email})
            bodies.append(response.text.replace(email, "ADDRESS"))
        assert bodies[0] == bodies[1]
        assert [i.recipients for i in site.smtp.received] == [("unknown@example.org",)]
        codes = []
        for _ in range(5):
            token = csrf_form(client, "/subscribe")
            codes.append(client.post("/subscribe", data={"csrf_token": token,
                                                         "email": "x@example.org"}).status_code)
        assert codes[:3] == [200, 200, 200] and codes[-1] == 429


def test_forms_need_their_csrf_token(site: Site) -> None:
    response = httpx.post(f"{site.base}/subscribe", data={"email": "a@example.org"})
    assert response.status_code == 400 and "Form expired" in response.text
    assert site.smtp.received == []


def test_bad_sign_up_input_is_a_400_page(site: Site) -> None:
    with httpx.Client(base_url=site.base) as client:
        token = csrf_form(client, "/subscribe")
        response = client.post("/subscribe", data={"csrf_token": token, "email": "nope"})
    assert response.status_code == 400
    assert "is not a valid email address" in response.text
    assert "Traceback" not in response.text


def test_preferences_change_topics_and_timezone(site: Site) -> None:
    site.digest.ok("subscribers", "add", "ada@example.org")
    send_edition(site)
    html = site.smtp.received[0].message().get_body(("html",)).get_content()
    url = re.search(r'href="(http://[^"]+/p/[^"]+)"', html).group(1)
    with httpx.Client() as client:
        page = client.get(url)
        assert page.status_code == 200 and "Your preferences" in page.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        saved = client.post(url, data={"csrf_token": token, "topics": ["Culture", "Sports"],
                                       "timezone": "Asia/Tokyo", "action": "save"})
        assert saved.status_code == 200 and "Saved." in saved.text
        bad = client.post(url, data={"csrf_token": token, "topics": ["Astrology"]})
        assert bad.status_code == 400 and "unknown topic &#39;Astrology&#39;" in bad.text
    row = json.loads(site.digest.ok("subscribers", "list", "--format", "json").stdout)[0]
    assert (row["topics"], row["timezone"]) == (["Culture", "Sports"], "Asia/Tokyo")


def test_the_archive_shows_sent_editions(site: Site) -> None:
    site.digest.ok("subscribers", "add", "ada@example.org")
    send_edition(site)
    listing = httpx.get(f"{site.base}/editions")
    assert listing.status_code == 200 and "No. 1:" in listing.text
    page = httpx.get(f"{site.base}/editions/1")
    assert page.status_code == 200
    assert "Open-weight language models close the gap" in page.text
    assert "/u/" not in page.text and "/p/" not in page.text and "ada@" not in page.text
    # The email's "view in browser" link points here.
    mail_html = site.smtp.received[0].message().get_body(("html",)).get_content()
    assert f'href="{site.base}/editions/1"' in mail_html
    # An article without a URL of its own has a page.
    note = re.search(r'href="' + re.escape(site.base) + r'/articles/(\d+)"', mail_html)
    article = httpx.get(f"{site.base}/articles/{note.group(1)}")
    assert article.status_code == 200 and "Editor&#39;s note" in article.text
    feed = httpx.get(f"{site.base}/editions.atom")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    entries = ET.fromstring(feed.content).findall("{http://www.w3.org/2005/Atom}entry")
    assert len(entries) == 1
    assert httpx.get(f"{site.base}/editions/2").status_code == 404
    assert httpx.get(f"{site.base}/articles/999").status_code == 404


def test_security_headers_and_404(site: Site) -> None:
    for path in ("/subscribe", "/editions", "/no/such/page", "/u/forged"):
        response = httpx.get(site.base + path)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert SECRET not in response.text
    assert httpx.get(site.base + "/no/such/page").status_code == 404
    assert httpx.get(site.base + "/.env").status_code == 404


def test_digest_serve_runs_under_waitress(digest: Digest, tmp_path: Path) -> None:
    port = free_port()
    proc = run_digest(tmp_path, "serve", "--port", str(port),
                      env={"DIGEST_SECRET_KEY": SECRET})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/editions")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, proc.stderr
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.headers["server"] == "digest"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
