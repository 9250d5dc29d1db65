"""The subscriber pages over real HTTP on 127.0.0.1 (waitress), with mail through a real
SMTP server."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import stat
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import HTTP_TIMEOUT, SAMPLE_JSON, Digest, run_digest, smtp_env, sql

from digest.config import Settings, load_settings
from digest.mail.loopback import LoopbackSMTPServer, free_port
from digest.tokens import Signer
from digest.web.app import WebServer

SECRET = "a-test-secret-that-is-long-enough-0123456789"


@contextmanager
def running(settings: Settings, port: int) -> Iterator[WebServer]:
    """`digest serve`'s server (app, waitress, outbox thread) on 127.0.0.1:port."""
    server = WebServer(settings, "127.0.0.1", port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join()


@dataclass
class Site:
    base: str
    env: dict[str, str]
    digest: Digest
    smtp: LoopbackSMTPServer
    server: WebServer

    def status(self, email: str) -> str:
        rows = json.loads(self.digest.ok("subscribers", "list", "--format", "json").stdout)
        return next(r["status"] for r in rows if r["email"] == email)

    def sent_mail(self) -> None:
        """Wait until the outbox thread has tried everything queued so far."""
        assert self.server.outbox.flush()


@contextmanager
def a_site(digest: Digest, smtp: LoopbackSMTPServer, **extra: str) -> Iterator[Site]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = smtp_env(smtp, DIGEST_DIGEST__BASE_URL=base, **extra)
    settings = load_settings(digest.folder / "digest.toml", environ=env)
    with running(settings, port) as server:
        yield Site(base, env, digest, smtp, server)


@pytest.fixture
def site(digest: Digest, smtp: LoopbackSMTPServer) -> Iterator[Site]:
    with a_site(digest, smtp, DIGEST_SECRET_KEY=SECRET) as s:
        yield s


def sign_up(client: httpx.Client, email: str, **fields: object) -> httpx.Response:
    token = csrf_form(client, "/subscribe")
    return client.post("/subscribe", data={"csrf_token": token, "email": email, **fields})


def send_edition(site: Site) -> None:
    site.digest.ok("articles", "import", str(SAMPLE_JSON))
    site.digest.ok("send", "--yes", env=site.env)


def csrf_form(client: httpx.Client, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


@pytest.mark.both_backends
def test_one_click_unsubscribe_the_way_gmail_does_it(site: Site) -> None:
    site.digest.ok("subscribers", "add", "ada@example.org")
    site.digest.ok("subscribers", "add", "bob@example.org")
    send_edition(site)
    msg = next(i.message() for i in site.smtp.received if i.recipients == ("ada@example.org",))
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = msg["List-Unsubscribe"].strip("<>")
    assert url.startswith(site.base + "/u/")

    # A link scanner (or the reader) following the link: a page, nobody unsubscribed.
    page = httpx.get(url, timeout=HTTP_TIMEOUT)
    assert page.status_code == 200 and "Unsubscribe?" in page.text
    assert site.status("ada@example.org") == "active"

    # Gmail: a POST with exactly this body, no cookies, no confirmation.
    response = httpx.post(url, content=b"List-Unsubscribe=One-Click",
                          headers={"Content-Type": "application/x-www-form-urlencoded"},
                          timeout=HTTP_TIMEOUT)
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    assert "set-cookie" not in response.headers
    assert site.status("ada@example.org") == "unsubscribed"
    assert site.status("bob@example.org") == "active"
    # Again: still fine, nothing else changes.
    assert httpx.post(url, data={"List-Unsubscribe": "One-Click"},
                      timeout=HTTP_TIMEOUT).status_code == 200

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
        response = httpx.post(f"{site.base}/u/{bad}", data={"List-Unsubscribe": "One-Click"},
                              timeout=HTTP_TIMEOUT)
        assert response.status_code == 400, bad
        assert "not valid" in response.text
        assert "Traceback" not in response.text
    assert site.status("ada@example.org") == "active"
    # A POST without the RFC 8058 body changes nothing either.
    assert httpx.post(url, data={}, timeout=HTTP_TIMEOUT).status_code == 400
    assert site.status("ada@example.org") == "active"


def test_sign_up_with_double_opt_in(site: Site) -> None:
    with httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
        token = csrf_form(client, "/subscribe")
        response = client.post("/subscribe", data={
            "csrf_token": token, "email": "New.Reader@Example.org", "name": "New Reader",
            "topics": ["AI", "Science"]})
        assert response.status_code == 200
        assert "Check your inbox" in response.text
    assert site.status("New.Reader@example.org") == "pending"
    site.sent_mail()
    [mail] = site.smtp.received
    msg = mail.message()
    assert msg["Subject"] == "Confirm your subscription to The Weekly Digest"
    link = re.search(r"(http://\S+/confirm/\S+)", msg.get_content()).group(1)

    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        # A mail scanner (or the reader) following the link: a button, nobody subscribed.
        page = client.get(link)
        assert page.status_code == 200 and "Yes, subscribe me" in page.text
        assert site.status("New.Reader@example.org") == "pending"
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        confirmed = client.post(link, data={"csrf_token": token})
        assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
        row = json.loads(site.digest.ok("subscribers", "list", "--format", "json").stdout)[0]
        assert (row["status"], row["name"], row["topics"]) == ("active", "New Reader",
                                                               ["AI", "Science"])
        # A second click, a second POST: said plainly, nothing changes.
        again = client.post(link, data={"csrf_token": token})
        assert again.status_code == 200 and "already subscribed" in again.text
        later = client.get(link)
        assert later.status_code == 200 and "already subscribed" in later.text
        assert "Yes, subscribe me" not in later.text
    # The POST needs the form's CSRF token (a page elsewhere cannot confirm for you).
    assert httpx.post(link, data={}, timeout=HTTP_TIMEOUT).status_code == 400

    expired = Signer(SECRET.encode(), "confirm").make(1, 2, int(time.time()) - 1)
    response = httpx.get(f"{site.base}/confirm/{expired}", timeout=HTTP_TIMEOUT)
    assert response.status_code == 400 and "expired" in response.text


@pytest.mark.both_backends
def test_sign_up_says_the_same_for_known_addresses_and_is_rate_limited(site: Site) -> None:
    site.digest.ok("subscribers", "add", "known@example.org")
    bodies = []
    with httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
        for email in ("known@example.org", "unknown@example.org"):
            response = sign_up(client, email)
            bodies.append(response.text.replace(email, "ADDRESS"))
        assert bodies[0] == bodies[1]
        # Both queue one mail: the known address hears it is already subscribed.
        site.sent_mail()
        subjects = {i.recipients: i.message()["Subject"] for i in site.smtp.received}
        assert subjects == {
            ("known@example.org",): "You are already subscribed to The Weekly Digest",
            ("unknown@example.org",): "Confirm your subscription to The Weekly Digest"}
        assert site.status("known@example.org") == "active"
        codes = []
        for _ in range(5):
            token = csrf_form(client, "/subscribe")
            codes.append(client.post("/subscribe", data={"csrf_token": token,
                                                         "email": "x@example.org"}).status_code)
        assert codes[:3] == [200, 200, 200] and codes[-1] == 429


def test_forms_need_their_csrf_token(site: Site) -> None:
    response = httpx.post(f"{site.base}/subscribe", data={"email": "a@example.org"},
                          timeout=HTTP_TIMEOUT)
    assert response.status_code == 400 and "Form expired" in response.text
    site.sent_mail()
    assert site.smtp.received == []


def test_bad_sign_up_input_is_a_400_page(site: Site) -> None:
    with httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
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
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
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
    listing = httpx.get(f"{site.base}/editions", timeout=HTTP_TIMEOUT)
    assert listing.status_code == 200 and "No. 1:" in listing.text
    page = httpx.get(f"{site.base}/editions/1", timeout=HTTP_TIMEOUT)
    assert page.status_code == 200
    assert "Open-weight language models close the gap" in page.text
    assert "/u/" not in page.text and "/p/" not in page.text and "ada@" not in page.text
    # The email's "view in browser" link points here.
    mail_html = site.smtp.received[0].message().get_body(("html",)).get_content()
    assert f'href="{site.base}/editions/1"' in mail_html
    # An article without a URL of its own has a page.
    note = re.search(r'href="' + re.escape(site.base) + r'/articles/(\d+)"', mail_html)
    article = httpx.get(f"{site.base}/articles/{note.group(1)}", timeout=HTTP_TIMEOUT)
    assert article.status_code == 200 and "Editor&#39;s note" in article.text
    feed = httpx.get(f"{site.base}/editions.atom", timeout=HTTP_TIMEOUT)
    assert feed.headers["content-type"].startswith("application/atom+xml")
    entries = ET.fromstring(feed.content).findall("{http://www.w3.org/2005/Atom}entry")
    assert len(entries) == 1
    assert httpx.get(f"{site.base}/editions/2", timeout=HTTP_TIMEOUT).status_code == 404
    assert httpx.get(f"{site.base}/articles/999", timeout=HTTP_TIMEOUT).status_code == 404


def test_security_headers_and_404(site: Site) -> None:
    for path in ("/subscribe", "/editions", "/no/such/page", "/u/forged"):
        response = httpx.get(site.base + path, timeout=HTTP_TIMEOUT)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert SECRET not in response.text
    assert httpx.get(site.base + "/no/such/page", timeout=HTTP_TIMEOUT).status_code == 404
    assert httpx.get(site.base + "/.env", timeout=HTTP_TIMEOUT).status_code == 404


@pytest.mark.slow
def test_digest_serve_runs_under_waitress_and_sends_confirmations(
        digest: Digest, tmp_path: Path, smtp: LoopbackSMTPServer) -> None:
    port = free_port()
    proc = run_digest(tmp_path, "serve", "--port", str(port),
                      env=smtp_env(smtp, DIGEST_DIGEST__BASE_URL=f"http://127.0.0.1:{port}"))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/editions", timeout=HTTP_TIMEOUT)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.headers["server"] == "digest"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=HTTP_TIMEOUT) as client:
            assert sign_up(client, "reader@example.org").status_code == 200
        # The server's outbox thread sends it (woken by the sign-up).
        deadline = time.monotonic() + 20
        while not smtp.received:
            assert time.monotonic() < deadline, "no confirmation arrived"
            time.sleep(0.05)
        [mail] = smtp.received
        link = re.search(r"(http://\S+/confirm/\S+)", mail.message().get_content()).group(1)
        # Signed with the secret `digest init` wrote (no DIGEST_SECRET_KEY here).
        assert "Yes, subscribe me" in httpx.get(link, timeout=HTTP_TIMEOUT).text
        assert sql(tmp_path, "SELECT count(*) FROM outbox") == [(0,)]
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


# --- out-of-range ids ---------------------------------------------------------------------

def test_ids_out_of_the_stores_range_are_404_pages(site: Site) -> None:
    for path in ("/editions/99999999999999999999999", "/articles/9223372036854775808",
                 "/articles/2147483648", "/editions/2147483648", "/editions/0",
                 "/articles/-1", "/articles/1e3"):
        response = httpx.get(site.base + path, timeout=HTTP_TIMEOUT)
        assert response.status_code == 404, path
        assert "There is nothing at this address." in response.text
    # The largest id the store holds is a plain "not found" from the store.
    assert httpx.get(site.base + "/articles/2147483647", timeout=HTTP_TIMEOUT).status_code == 404


# --- the outbox -----------------------------------------------------------------------------

def test_sign_up_only_queues_and_the_outbox_retries_a_temporary_failure(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    site.smtp.reply_policy = lambda phase, _from, _rcpt: "451 4.3.0 try again later" \
        if phase == "RCPT" else None
    with caplog.at_level(logging.INFO), httpx.Client(base_url=site.base,
                                                     timeout=HTTP_TIMEOUT) as client:
        assert sign_up(client, "ada@example.org").status_code == 200
        site.sent_mail()
    assert site.smtp.received == []
    [(attempts, error)] = sql(site.digest.folder, "SELECT attempts, last_error FROM outbox")
    # (One try for the sign-up's wake-up, maybe one more for the flush.)
    assert attempts in (1, 2) and error.startswith("451")
    assert "deferred (attempt 1): 451" in caplog.text
    # The message (with its signed link) and the secret never reach the log.
    assert "/confirm/" not in caplog.text and SECRET not in caplog.text

    site.smtp.reply_policy = None
    site.sent_mail()        # retry_base_seconds is 0 in these tests: due at once
    [mail] = site.smtp.received
    assert mail.recipients == ("ada@example.org",)
    assert sql(site.digest.folder, "SELECT count(*) FROM outbox") == [(0,)]


def test_a_refused_confirmation_is_dropped_with_a_log_line(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    site.smtp.reply_policy = lambda phase, _from, _rcpt: "550 5.1.1 no such user" \
        if phase == "RCPT" else None
    with caplog.at_level(logging.INFO), httpx.Client(base_url=site.base,
                                                     timeout=HTTP_TIMEOUT) as client:
        assert sign_up(client, "nobody@example.org").status_code == 200
        site.sent_mail()
    assert "refused the confirmation mail to subscriber 1: 550" in caplog.text
    assert sql(site.digest.folder, "SELECT count(*) FROM outbox") == [(0,)]


# --- rate limits per real client, shared by every process ------------------------------------

def post_sign_ups(base: str, count: int, forwarded_for: str | None = None) -> list[int]:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    codes = []
    with httpx.Client(base_url=base, headers=headers, timeout=HTTP_TIMEOUT) as client:
        for _ in range(count):
            codes.append(sign_up(client, "x@example.org").status_code)
    return codes


def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    with a_site(digest, smtp, DIGEST_SECRET_KEY=SECRET, DIGEST_WEB__TRUSTED_PROXIES="1") as s:
        assert post_sign_ups(s.base, 6, "203.0.113.7") == [200] * 5 + [429]
        assert post_sign_ups(s.base, 1, "203.0.113.8") == [200], \
            sql(digest.folder, "SELECT key, hits FROM rate_limits")
        # The proxy appends the peer: only the last address counts, the rest is the client's.
        assert post_sign_ups(s.base, 1, "198.51.100.1, 203.0.113.7") == [429]


def test_without_trusted_proxies_x_forwarded_for_is_ignored(site: Site) -> None:
    codes = [post_sign_ups(site.base, 1, f"203.0.113.{i}")[0] for i in range(6)]
    assert codes == [200] * 5 + [429]


@pytest.mark.both_backends
def test_two_servers_on_one_store_share_the_buckets(site: Site) -> None:
    settings = load_settings(site.digest.folder / "digest.toml", environ=site.env)
    port = free_port()
    with running(settings, port) as _other:
        assert post_sign_ups(site.base, 3) == [200] * 3
        assert post_sign_ups(f"http://127.0.0.1:{port}", 3) == [200, 200, 429]


def test_trusted_proxies_must_not_be_negative(digest: Digest) -> None:
    result = digest("serve", env={"DIGEST_WEB__TRUSTED_PROXIES": "-1"})
    assert result.exit_code == 1
    assert result.output == (f"Error: {digest.folder / 'digest.toml'}: [web] trusted_proxies "
                             f"must be 0 or more (the number of proxies in front of digest "
                             f"serve)\n")


# --- the signing key ----------------------------------------------------------------------------

def test_init_writes_a_private_secret_that_signs_the_links(digest: Digest,
                                                          smtp: LoopbackSMTPServer) -> None:
    key_file = digest.folder / "secret.key"
    mode = stat.S_IMODE(key_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    key = key_file.read_bytes().strip()
    assert len(key) >= 48
    # Never replaced: not by init --force, not by a second init.
    digest.ok("init", "--force")
    assert digest("init").exit_code == 1
    assert key_file.read_bytes().strip() == key
    digest.ok("subscribers", "add", "ada@example.org")
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("send", "--yes", env=smtp_env(smtp))
    url = smtp.received[0].message()["List-Unsubscribe"].strip("<>")
    assert url.rsplit("/", 1)[1] == Signer(key, "unsubscribe").make(1, 1)


def test_a_key_derived_from_the_stores_location_is_refused(digest: Digest,
                                                           smtp: LoopbackSMTPServer) -> None:
    digest.ok("subscribers", "add", "ada@example.org")
    with a_site(digest, smtp) as s:
        store_url = load_settings(digest.folder / "digest.toml", environ={}).store_url
        guessed = Signer(("digest-insecure-default:" + store_url).encode(), "unsubscribe")
        response = httpx.post(f"{s.base}/u/{guessed.make(1, 1)}",
                              data={"List-Unsubscribe": "One-Click"}, timeout=HTTP_TIMEOUT)
        assert response.status_code == 400
        assert s.status("ada@example.org") == "active"


def test_without_a_key_signing_commands_refuse_with_one_line(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    (digest.folder / "secret.key").unlink()
    fix = (f"Error: no key to sign links with: DIGEST_SECRET_KEY is not set and "
           f"{digest.folder / 'secret.key'} does not exist; set DIGEST_SECRET_KEY, or run: "
           f"digest init {digest.folder}\n")
    result = digest("serve", "--port", str(free_port()))
    assert (result.exit_code, result.output) == (1, fix)
    digest.ok("subscribers", "add", "ada@example.org")
    digest.ok("articles", "import", str(SAMPLE_JSON))
    result = digest("send", "--yes", env=smtp_env(smtp))
    assert result.exit_code == 1 and result.output.endswith(fix), result.output
    assert smtp.received == []
    # `digest init` in the existing folder adds the key and keeps the config.
    config = (digest.folder / "digest.toml").read_text()
    assert digest.ok("init").output.startswith("Wrote the secret key ")
    assert (digest.folder / "digest.toml").read_text() == config
    assert digest("init").exit_code == 1
    digest.ok("send", "--yes", env=smtp_env(smtp))
    assert [i.recipients for i in smtp.received] == [("ada@example.org",)]


# --- shutting the server down -------------------------------------------------------------------

def test_stopping_the_server_during_a_request_uses_no_closed_socket(
        digest: Digest, caplog: pytest.LogCaptureFixture) -> None:
    """Closing waitress's sockets from another thread than its loop made a worker (or the
    loop) use a closed descriptor now and then: OSError: Bad file descriptor."""
    settings = load_settings(digest.folder / "digest.toml", environ={})
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment]
    try:
        port = free_port()
        server = WebServer(settings, "127.0.0.1", port, threads=2)

        @server.app.get("/slow")
        def slow() -> str:
            entered.set()
            release.wait()
            return "done"

        loop = threading.Thread(target=server.run)
        loop.start()
        client = threading.Thread(target=lambda: _quietly(f"http://127.0.0.1:{port}/slow"))
        with caplog.at_level(logging.ERROR, logger="waitress"):
            client.start()
            assert entered.wait(10)
            stopper = threading.Thread(target=server.stop)
            stopper.start()
            release.set()
            stopper.join()
            loop.join()
            client.join()
    finally:
        threading.excepthook = hook
    assert errors == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("waitress")] == []


def _quietly(url: str) -> None:
    # The server going away mid-request is what this test does.
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=HTTP_TIMEOUT)
