"""The admin pages in a real browser: Debian's chromium driven by selenium through
chromedriver (tests/test_browser.py's Browser), against `digest serve`'s server on
127.0.0.1, a real SQLite store and a real SMTP server (aiosmtpd on 127.0.0.1).

The whole editorial flow: sign in, drop, pin, move, write the intro, approve — every
step a button, no JavaScript — then `digest send`, and the mail that arrives reflects
each change; before approval `digest send` refuses and nothing is sent. Every page is
screenshotted at 1024 and 375 px, light and dark: into docs/admin-*.png when
DIGEST_SCREENSHOTS=docs, else into the test's tmp_path. The browser's console must stay
empty (no CSP violation, no failed load) on every page.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE_JSON, Digest, smtp_env
from test_browser import WAIT, Browser, browser  # noqa: F401  (browser: the fixture)

from digest.config import load_settings
from digest.delivery import desk
from digest.mail.loopback import LoopbackSMTPServer
from digest.web.app import WebServer

pytestmark = pytest.mark.slow

# Read when the module loads: conftest's autouse fixture clears DIGEST_* for each test.
INTO_DOCS = os.environ.get("DIGEST_SCREENSHOTS") == "docs"
PASSWORD = "correct horse battery staple"
EDITOR = "editor@example.org"


@contextmanager
def serving(digest: Digest) -> Iterator[tuple[str, WebServer]]:
    settings = load_settings(digest.folder / "digest.toml",
                             environ={"DIGEST_DIGEST__BASE_URL": "http://127.0.0.1"})
    server = WebServer(settings, "127.0.0.1", 0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}", server
    finally:
        server.stop()
        thread.join()


class Shots:
    """Screenshots of the admin pages at a width and colour scheme; docs/ or tmp_path."""

    def __init__(self, chrome: Browser, tmp_path: Path) -> None:
        self.browser = chrome
        self.folder = ROOT / "docs" if INTO_DOCS else tmp_path / "admin-shots"
        self.folder.mkdir(exist_ok=True)
        self.taken: list[str] = []

    def look(self, width: int, dark: bool, height: int = 900) -> None:
        driver = self.browser.driver
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [
            {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})

    def take(self, name: str, width: int = 1024, dark: bool = False, height: int = 900,
             top: bool = True) -> None:
        """Screenshot the page as it looks at width (the console checked first, and that
        every field has a label)."""
        self.browser.page_done(name)
        unlabelled = self.browser.driver.execute_script(
            "return Array.from(document.querySelectorAll("
            "'input:not([type=hidden]), select, textarea'))"
            ".filter(e => e.labels.length === 0).map(e => e.name || e.id)")
        assert unlabelled == [], f"{name}: fields without a label: {unlabelled}"
        self.look(width, dark, height)
        if top:
            self.browser.driver.execute_script("window.scrollTo(0, 0)")
        path = self.folder / f"admin-{name}.png"
        assert self.browser.driver.save_screenshot(str(path))
        self.taken.append(path.name)
        self.look(1024, False)


def press(chrome: Browser, article: int, action: str) -> None:
    from selenium.webdriver.common.by import By

    chrome.driver.find_element(
        By.CSS_SELECTOR, f"#article-{article} button[value={action}]").click()


def said(chrome: Browser, text: str) -> None:
    """Wait for the page (a new one, after a button) that says text in its notice."""
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(_: object) -> bool:
        # Read in one script, in the page as it is: element handles taken from a page that
        # is being replaced go stale (or "do not belong to the document") in between.
        notes = chrome.driver.execute_script(
            "return Array.from(document.querySelectorAll('[role=status]'),"
            " note => note.innerText)")
        return any(text in note for note in notes or [])

    WebDriverWait(chrome.driver, WAIT, poll_frequency=0.05).until(
        shown, f"no notice saying {text!r} within {WAIT} s")


def sections(msg: EmailMessage) -> dict[str, list[str]]:
    """The text part's topics, each with its lines in order."""
    part = msg.get_body(("plain",))
    assert part is not None
    text = part.get_content().replace("\r\n", "\n")
    parts = re.split(r"\n([A-Z][A-Z ]+)\n-+\n\n", text)
    return {head: [line for line in body.split("\n") if line]
            for head, body in zip(parts[1::2], parts[2::2], strict=True)}


@pytest.fixture
def newsroom(digest: Digest) -> Digest:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(ROOT / "digest" / "data" / "sample_subscribers.csv"))
    digest.ok("subscribers", "add", "gone@example.org", "--name", "Gone Away")
    # A feed on this machine, allowed as an intranet's would be: nothing listens on port 9.
    intranet = {"DIGEST_FETCH__ALLOW_PRIVATE": "true"}
    digest.ok("feeds", "add", "http://127.0.0.1:9/feed.xml", "--name", "Lab notes",
              env=intranet)
    assert digest("feeds", "fetch", env=intranet).exit_code == 1
    result = digest("admin", "add-user", EDITOR, "--password-file", "-", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    digest.ok("editions", "draft")
    return digest


def test_the_whole_editorial_flow_in_a_real_browser_reaches_the_mail(
        newsroom: Digest, smtp: LoopbackSMTPServer, browser: Browser,  # noqa: F811
        tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    shots = Shots(browser, tmp_path)
    env = smtp_env(smtp)
    with serving(newsroom) as (base, server):
        store, settings = server.store, server.app.extensions["digest"].settings
        view = desk.desk_view(store, settings, 1)
        ids = {s.topic: [a.id for a in s.articles] for s in view.sections}
        titles = {a.id: a.title for s in view.sections for a in s.articles}
        dropped, pinned, moved = ids["Technology"][0], ids["Science"][-1], ids["AI"][0]

        # Anonymous: the sign-in page, whose fields come in order from the keyboard.
        browser.open(f"{base}/admin/draft")
        browser.heading("Sign in")
        email = browser.driver.switch_to.active_element
        assert email.get_attribute("id") == "email"
        email.send_keys(EDITOR + Keys.TAB)
        password = browser.driver.switch_to.active_element
        assert password.get_attribute("id") == "password"
        password.send_keys(PASSWORD + Keys.TAB)
        assert browser.driver.switch_to.active_element.text == "Sign in"
        shots.take("login")
        browser.driver.switch_to.active_element.send_keys(Keys.ENTER)
        browser.heading("Edition 1 draft")

        # Not approved yet: digest send refuses, nothing goes out.
        refused = newsroom("send", "--yes", env=env)
        assert refused.exit_code == 1 and "waiting for approval" in refused.output
        assert smtp.received == []

        press(browser, dropped, "drop")
        said(browser, f"Dropped article {dropped}")
        assert not browser.driver.find_elements(By.ID, f"article-{dropped}")
        assert browser.driver.current_url.endswith("#topic-technology")
        press(browser, pinned, "pin")
        said(browser, f"Article {pinned} leads its topic, Science")
        Select(browser.driver.find_element(By.ID, f"topic-{moved}")).select_by_visible_text(
            "Science")
        press(browser, moved, "move")
        said(browser, f"Moved article {moved} to Science")
        intro = browser.driver.find_element(By.ID, "intro-text")
        intro.clear()
        intro.send_keys("## A word first\n\nThis week: **reefs**, code and a vote.")
        browser.click("Save the intro")
        said(browser, "Set the intro of edition 1.")
        rows = [r.get_attribute("id") for r in browser.driver.find_elements(
            By.CSS_SELECTOR, "#topic-science + table tbody tr")]
        assert rows[0] == f"article-{pinned}" and f"article-{moved}" in rows
        # The preview, framed by the desk, shows the intro.
        frame = browser.driver.find_element(By.CSS_SELECTOR, "iframe.preview")
        browser.driver.switch_to.frame(frame)
        WebDriverWait(browser.driver, WAIT, poll_frequency=0.05).until(
            lambda d: "A word first" in d.execute_script(
                "return document.body ? document.body.innerText : ''"),
            f"the framed preview shows no intro within {WAIT} s")
        browser.driver.switch_to.default_content()
        desk_shots(shots)

        browser.click("Approve edition 1")
        said(browser, "Approved edition 1.")
        browser.heading("Edition 1 approved")

        smtp.reply_policy = lambda phase, _f, rcpt: "550 5.1.1 no such user" \
            if phase == "RCPT" and rcpt == "gone@example.org" else None
        sent = newsroom("send", "--yes", env=env)
        assert sent.exit_code == 3, sent.output     # partly done: one recipient failed
        the_mail_shows_every_change(smtp, titles, dropped, pinned, moved)
        other_pages(browser, shots)
    assert len(shots.taken) == 14


def desk_shots(shots: Shots) -> None:
    from selenium.webdriver.common.by import By

    shots.take("desk", height=1300)
    shots.take("desk-dark", dark=True, height=1300)
    shots.take("desk-375", width=375, height=1300)
    shots.take("desk-375-dark", width=375, dark=True, height=1300)
    shots.browser.driver.find_element(By.ID, "preview").location_once_scrolled_into_view  # noqa: B018
    shots.take("desk-preview", height=1100, top=False)


def the_mail_shows_every_change(smtp: LoopbackSMTPServer, titles: dict[int, str],
                                dropped: int, pinned: int, moved: int) -> None:
    recipients = sorted(r.recipients[0] for r in smtp.received)
    assert "ada@example.org" in recipients and "gone@example.org" not in recipients
    ada = next(r.message() for r in smtp.received if r.recipients == ("ada@example.org",))
    html = ada.get_body(("html",))
    assert html is not None and "A word first" in html.get_content()
    by_topic = sections(ada)
    everything = "\n".join(line for lines in by_topic.values() for line in lines)
    assert titles[dropped] not in everything
    assert by_topic["SCIENCE"][0] == titles[pinned]
    assert titles[moved] in by_topic["SCIENCE"] and titles[moved] not in by_topic["AI"]


def other_pages(chrome: Browser, shots: Shots) -> None:
    from selenium.webdriver.common.by import By

    chrome.driver.find_element(By.LINK_TEXT, "Editions").click()
    chrome.heading("Editions")
    assert "1 failed" in chrome.text()
    shots.take("editions")
    shots.take("editions-375-dark", width=375, dark=True)
    chrome.driver.find_element(By.LINK_TEXT, "1").click()
    chrome.heading("Edition 1 sent")
    assert "gone@example.org" in chrome.text() and "550 5.1.1" in chrome.text()
    shots.take("edition")
    chrome.driver.find_element(By.LINK_TEXT, "Subscribers").click()
    chrome.heading("Subscribers")
    chrome.driver.find_element(By.ID, "q").send_keys("example.org")
    chrome.click("Search")
    chrome.heading("Subscribers")
    assert "6 subscribers match" in chrome.text()
    shots.take("subscribers")
    chrome.driver.find_element(By.LINK_TEXT, "zoe@example.org").click()
    chrome.heading("zoe@example.org")
    shots.take("subscriber")
    chrome.driver.find_element(By.LINK_TEXT, "Bounces").click()
    chrome.heading("Bounces")
    assert "gone@example.org" in chrome.text()
    shots.take("bounces")
    chrome.driver.find_element(By.LINK_TEXT, "Suppressions").click()
    chrome.heading("Suppressions")
    assert "gone@example.org" in chrome.text()
    shots.take("suppressions")
    chrome.driver.find_element(By.LINK_TEXT, "Feeds").click()
    chrome.heading("Feeds")
    assert "failing" in chrome.text()
    shots.take("feeds")
