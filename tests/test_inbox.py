"""Inbox quality, judged by tools written by others: SpamAssassin, the Nu HTML Checker,
dkimpy; and our own size, text-part and setup checks.

SpamAssassin and the Nu checker (vnu.jar, run with java) are skipped where they are not
installed, unless DIGEST_REQUIRE_JUDGES=1 (set by .ci/run, which installs them).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import subprocess
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import dkim
import pytest
from conftest import SAMPLE_JSON, SAMPLE_WEEK, Digest, smtp_env
from mailservers import closed_port

from digest.mail.loopback import LoopbackSMTPServer
from digest.mail.render import GMAIL_CLIP_BYTES

ROOT = Path(__file__).resolve().parent.parent
INFORMATIONAL = {"HTML_MESSAGE", "NO_RECEIVED", "NO_RELAYS"}


def judge(name: str, found: str | None) -> str:
    if found:
        return found
    if os.environ.get("DIGEST_REQUIRE_JUDGES") == "1":
        pytest.fail(f"{name} is not installed, and DIGEST_REQUIRE_JUDGES=1")
    pytest.skip(f"{name} is not installed (apt-get install spamassassin; npm install vnu-jar)")


def vnu_jar() -> str | None:
    candidates = [os.environ.get("VNU_JAR", ""),
                  str(ROOT / "node_modules/vnu-jar/build/dist/vnu.jar"),
                  "/tmp/vnu/node_modules/vnu-jar/build/dist/vnu.jar"]
    found = next((c for c in candidates if c and Path(c).is_file()), None)
    return found if found and shutil.which("java") else None


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> list[EmailMessage]:
    folder = tmp_path_factory.mktemp("demo")
    result = Digest(folder)("demo", "out")
    assert result.exit_code == 0, result.output
    return [message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
            for p in sorted((folder / "out" / "outbox").glob("*.eml"))]


def _raw(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=policy.SMTP)


@pytest.mark.slow
def test_spamassassin_scores_the_demo_digest_clean(demo: list[EmailMessage],
                                                   tmp_path: Path) -> None:
    spamassassin = judge("spamassassin", shutil.which("spamassassin"))
    for msg in demo:
        report = subprocess.run([spamassassin, "-t", "-L"], input=_raw(msg),
                                capture_output=True, timeout=120).stdout.decode()
        details = report.split("Content analysis details:", 1)[1]
        score = float(re.search(r"\(([-\d.]+) points", details).group(1))
        rules = re.findall(r"^\s*(-?\d+\.\d+)\s+([A-Z0-9_]+)\s", details, re.M)
        print(f"{msg['To']}: score {score}; rules fired: "
              + ", ".join(f"{name} {points}" for points, name in rules))
        assert score <= 1.0
        positive = [name for points, name in rules
                    if float(points) > 0 and name not in INFORMATIONAL]
        assert positive == [], positive


def test_nu_html_checker_finds_no_errors(demo: list[EmailMessage], tmp_path: Path) -> None:
    jar = judge("the Nu HTML Checker (vnu.jar) with java", vnu_jar())
    files = []
    for i, msg in enumerate(demo):
        path = tmp_path / f"message{i}.html"
        path.write_text(msg.get_body(("html",)).get_content())
        files.append(str(path))
    result = subprocess.run(["java", "-jar", jar, "--errors-only", *files],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stderr.strip() == ""


def test_every_message_has_the_headers_inboxes_want(demo: list[EmailMessage]) -> None:
    assert len(demo) == 6
    for msg in demo:
        for header in ("Date", "Message-ID", "From", "To", "Subject", "MIME-Version",
                       "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"):
            assert msg[header], header


class _Entries(HTMLParser):
    """Titles, teasers and links of the HTML part."""

    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []
        self.teasers: list[str] = []
        self.links: list[str] = []
        self._into: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and (a.get("href") or "").startswith("http"):
            self.links.append(a["href"] or "")
        cls = a.get("class") or ""
        if tag == "h3" and "title" in cls:
            self.titles.append("")
            self._into = self.titles
        elif tag == "p" and "teaser" in cls:
            self.teasers.append("")
            self._into = self.teasers

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h3", "p"):
            self._into = None

    def handle_data(self, data: str) -> None:
        if self._into is not None:
            self._into[-1] += data


def test_the_text_part_says_what_the_html_part_says(demo: list[EmailMessage]) -> None:
    for msg in demo:
        html = msg.get_body(("html",)).get_content()
        text = msg.get_body(("plain",)).get_content()
        flat = " ".join(text.split())
        page = _Entries()
        page.feed(html)
        assert page.titles and len(page.titles) == len(page.teasers)
        for item in page.titles + page.teasers:
            assert " ".join(item.split()) in flat, item
        for link in set(page.links):
            assert link in text, link
        assert msg["List-Unsubscribe"][1:-1] in text


def _sixty(folder: Path) -> Path:
    rng = random.Random(7)
    words = re.findall(r"[A-Za-z]{5,}", SAMPLE_JSON.read_text())
    articles = [{"title": " ".join(rng.sample(words, 12)).capitalize(),
                 "url": f"https://news.example.org/{i}/" + "-".join(rng.sample(words, 12)),
                 "source": " ".join(rng.sample(words, 4)),
                 "published_at": (SAMPLE_WEEK - timedelta(hours=i + 1)).isoformat(),
                 "body": " ".join(rng.sample(words, 200)) + "."} for i in range(60)]
    path = folder / "sixty.json"
    path.write_text(json.dumps(articles))
    return path


def test_sixty_articles_stay_under_gmails_clipping_limit(digest: Digest, tmp_path: Path,
                                                         smtp: LoopbackSMTPServer) -> None:
    digest.ok("articles", "import", str(_sixty(tmp_path)))
    digest.ok("subscribers", "add", "reader@example.org")
    env = smtp_env(smtp, DIGEST_DIGEST__MAX_ARTICLES="60", DIGEST_DIGEST__TEASER_WORDS="120")
    result = digest.ok("preview", "--check", "--out", "p.html", env=env)
    assert re.search(r"✓ size: HTML part [\d.]+ KB of Gmail's 102 KB clipping limit",
                     result.stdout)
    digest.ok("send", "--yes", env=env)
    [item] = smtp.received
    msg = item.message()
    html = msg.get_body(("html",)).get_content()
    size = len(html.encode())
    print(f"HTML part: {size} bytes")
    assert size <= GMAIL_CLIP_BYTES
    unsubscribe = msg["List-Unsubscribe"][1:-1]
    assert 0 < html.encode().index(unsubscribe.encode()) < GMAIL_CLIP_BYTES
    # It had to give something up to fit: shorter teasers at least, maybe fewer articles
    # (then each left-out article is behind its topic's "more stories" link).
    page = _Entries()
    page.feed(html)
    assert max(len(t.split()) for t in page.teasers) < 120
    shown = len(page.titles)
    if shown < 60:
        assert "more" in html and "in the online edition" in html


def _keypair(folder: Path) -> tuple[Path, bytes]:
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    return key, base64.b64encode(public)


def test_dkim_signature_verifies_and_breaks_when_a_header_changes(
        digest: Digest, tmp_path: Path, smtp: LoopbackSMTPServer) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl makes the test key")
    key, public = _keypair(tmp_path)
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "add", "reader@example.org", "--name", "Zoë Reader")
    env = smtp_env(smtp, DIGEST_DKIM__SELECTOR="news", DIGEST_DKIM__DOMAIN="example.org",
                   DIGEST_DKIM__PRIVATE_KEY=str(key))
    digest.ok("send", "--yes", env=env)
    [item] = smtp.received
    raw = item.data

    def dns(name: bytes, timeout: int = 5) -> bytes:      # the DNS lookup, stubbed
        assert name == b"news._domainkey.example.org."
        return b"v=DKIM1; k=rsa; p=" + public

    assert dkim.verify(raw, dnsfunc=dns)
    signature = item.message()["DKIM-Signature"]
    signed = {h.strip().lower() for h in re.search(r"h=([^;]+)", signature.replace(
        " ", "").replace("\r\n", "")).group(1).split(":")}
    assert {"from", "to", "subject", "date", "message-id", "list-unsubscribe",
            "list-unsubscribe-post"} <= signed
    tampered = raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                           b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks")
    assert tampered != raw
    assert not dkim.verify(tampered, dnsfunc=dns)
    body_tampered = raw.replace(b"Read more", b"Read less", 1)
    assert not dkim.verify(body_tampered, dnsfunc=dns)


def test_dkim_config_errors_are_clear(digest: Digest) -> None:
    result = digest("send", "--dry-run", env={"DIGEST_DKIM__SELECTOR": "news"})
    assert result.exit_code == 1
    assert "[dkim] needs selector, domain and private_key together" in result.output
    result = digest("check", env={"DIGEST_DKIM__SELECTOR": "news",
                                  "DIGEST_DKIM__DOMAIN": "example.org",
                                  "DIGEST_DKIM__PRIVATE_KEY": "missing.pem"})
    assert result.exit_code == 1
    assert "[dkim] private_key" in result.output and "does not exist" in result.output


def test_digest_check_walks_through_the_smtp_session(digest: Digest) -> None:
    with LoopbackSMTPServer(login=("sender", "s3cret")) as server:
        env = {"DIGEST_SMTP__PORT": str(server.port), "DIGEST_SMTP__USERNAME": "sender",
               "DIGEST_SMTP__PASSWORD": "s3cret", "DIGEST_SECRET_KEY": "k" * 32,
               # A real sender, site and postal address: none of the example's warnings.
               "DIGEST_DIGEST__FROM": "Weekly <news@newsroom.de>",
               "DIGEST_DIGEST__BASE_URL": "https://news.newsroom.de",
               "DIGEST_DIGEST__POSTAL_ADDRESS": "Newsroom GmbH, Hauptstr. 1, 10115 Berlin"}
        result = digest("check", env=env)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert [line.split(":")[0] for line in lines] == [
            "✓ config", "✓ store", "✓ secret key", "! DKIM", "✓ connect", "✓ EHLO",
            "✓ AUTH", "✓ QUIT"]
        assert "AUTH" in lines[5]                            # EHLO lists what it offers
        assert lines[6].startswith("✓ AUTH: as sender: 235")
        assert "s3cret" not in result.output
        bad = digest("check", env={**env, "DIGEST_SMTP__PASSWORD": "wrong"})
        assert bad.exit_code == 1
        assert "✗ AUTH: as sender:" in bad.stdout and "DIGEST_SMTP__PASSWORD" in bad.stdout
    with closed_port() as port:
        closed = digest("check", env={"DIGEST_SMTP__PORT": str(port)})
    assert closed.exit_code == 1
    assert (f"✗ connect: cannot reach 127.0.0.1:{port} (Connection refused); check [smtp] "
            f"host, port and security") in closed.stdout


def test_preview_check_reports_bad_links_and_images(digest: Digest, tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    (tmp_path / "mine").mkdir()
    template = (ROOT / "templates" / "digest.html.j2").read_text().replace(
        '<p class="greeting">', '<img src="https://e.org/logo.png"><a href="/relative">x</a>'
                                '<p class="greeting">')
    (tmp_path / "mine" / "digest.html.j2").write_text(template)
    result = digest("preview", "--check", env={"DIGEST_DIGEST__TEMPLATES_DIR": "mine"})
    assert result.exit_code == 1
    assert "✗ images: 1 without alt text: https://e.org/logo.png" in result.stdout
    assert "✗ links: 1 not absolute http(s): /relative" in result.stdout
    good = digest.ok("preview", "--check")
    assert "✓ text part: carries all 30 articles" in good.stdout
