"""The bounce mailbox read over IMAP and POP3 from a real Dovecot on 127.0.0.1: what is
dealt with leaves the folder, the rest stays for next time, and every way of not getting
in is one line naming the mailbox and the setting that fixes it."""

from __future__ import annotations

import imaplib
import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import DATA, Digest, need, sql
from mailservers import Dovecot, DovecotUser, closed_port

from digest.audience.mailbox import MAX_TRIES, FetchReport, fetch_mailbox
from digest.config import Settings, load_settings, with_overrides
from digest.errors import ConfigError


@pytest.fixture
def inbox(dovecot: Dovecot) -> DovecotUser:
    """A new user of the server, with an empty mailbox."""
    return dovecot.add_user()


@pytest.fixture
def base(tmp_path: Path) -> Settings:
    (tmp_path / "digest.toml").write_text("")
    return load_settings(tmp_path / "digest.toml", environ={})


def message(n: int, subject: str = "") -> bytes:
    """A small message as an MTA would store it, each one different."""
    return (f"Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.example.net\r\n"
            f"To: bounces@example.org\r\nMessage-ID: <m{n}@mx.example.net>\r\n"
            f"Subject: {subject or f'Undelivered Mail {n}'}\r\n\r\n"
            f"message {n}\r\n").encode()


class Desk:
    """A handler that deals with every message but those whose subject says keep (left)
    or raise (the handler fails on them), and remembers what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, str]] = []

    def __call__(self, raw: bytes, source: str) -> bool:
        self.seen.append((raw, source))
        if b"Subject: raise" in raw:
            raise ValueError("cannot read this one")
        return b"Subject: keep" not in raw


MODES = [("imap", "ssl"), ("imap", "starttls"), ("imap", "none"), ("pop3", "ssl"),
         ("pop3", "starttls")]


@pytest.mark.parametrize(("protocol", "security"), MODES)
def test_every_message_is_read_and_only_the_handled_ones_leave(
        inbox: DovecotUser, base: Settings, protocol: str, security: str) -> None:
    sent = [message(1), message(2, "keep"), message(3), message(4, "raise"), message(5)]
    for raw in sent:
        inbox.deliver(raw)
    settings = with_overrides(base, bounces=inbox.bounces(protocol, security))
    desk, told = Desk(), Counter[str]()
    report = fetch_mailbox(settings, desk, progress=lambda outcome: told.update([outcome]))

    assert (report.read, report.handled, report.left) == (5, 3, 2)
    assert [raw for raw, _ in desk.seen] == sent          # byte for byte, in order
    assert told == {"handled": 3, "left": 1, "error": 1}
    user = quote(inbox.username, safe="")
    if protocol == "imap":
        port = inbox.server.imaps_port if security == "ssl" else inbox.server.imap_port
        assert desk.seen[0][1] == f"imap://{user}@127.0.0.1:{port}/INBOX;UID=1"
        assert report.errors == [f"imap://{user}@127.0.0.1:{port}/INBOX;UID=4: ValueError: "
                                 f"cannot read this one"]
        assert inbox.messages("Processed") == [sent[0], sent[2], sent[4]]
    else:
        port = inbox.server.pop3s_port if security == "ssl" else inbox.server.pop3_port
        assert all(source.startswith(f"pop3://{user}@127.0.0.1:{port}/")
                   for _, source in desk.seen)
        assert len({source for _, source in desk.seen}) == 5
        assert report.errors == [f"{desk.seen[3][1]}: ValueError: cannot read this one"]
        assert inbox.messages("Processed") == []        # POP3 deletes what it handled
    assert inbox.messages() == [sent[1], sent[3]]

    # Next time: the two left behind are read again, and nothing else.
    again = Desk()
    report = fetch_mailbox(settings, again)
    assert (report.read, report.handled, report.left) == (2, 0, 2)
    assert [raw for raw, _ in again.seen] == [sent[1], sent[3]]
    assert inbox.messages() == [sent[1], sent[3]]
    if protocol == "imap":      # read with BODY.PEEK: a person still sees them as unread
        assert inbox.flags() == ["", ""]
    assert fetch_mailbox(settings, lambda raw, source: True).handled == 2
    assert fetch_mailbox(settings, Desk()) == FetchReport()


def test_after_delete_leaves_no_copy(inbox: DovecotUser, base: Settings) -> None:
    for n in range(1, 4):
        inbox.deliver(message(n, "keep" if n == 2 else ""))
    settings = with_overrides(base, bounces=inbox.bounces(after="delete"))
    report = fetch_mailbox(settings, Desk())
    assert (report.read, report.handled, report.left) == (3, 2, 1)
    assert inbox.messages() == [message(2, "keep")]
    assert not inbox.folder_exists("Processed")


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_big_mailbox_goes_in_batches(inbox: DovecotUser, base: Settings,
                                       protocol: str) -> None:
    for n in range(300):
        inbox.deliver(message(n))
    settings = with_overrides(base, bounces=inbox.bounces(protocol))
    seen_on_disk: list[int] = []

    def handle(raw: bytes, source: str) -> bool:
        # How many the server still had in INBOX when this one came: IMAP moves a batch
        # as one, POP3 deletes a session's batch when it ends.
        seen_on_disk.append(len(inbox.messages()))
        return True

    report = fetch_mailbox(settings, handle, limit=250)
    assert (report.read, report.handled) == (250, 250)
    assert seen_on_disk == [300] * 100 + [200] * 100 + [100] * 50
    assert len(inbox.messages()) == 50
    assert fetch_mailbox(settings, handle).read == 50
    assert inbox.messages() == []


def _refusal(settings: Settings, **bounces: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        fetch_mailbox(with_overrides(settings, bounces=bounces), Desk())
    text = str(caught.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_wrong_password_is_one_line(inbox: DovecotUser, base: Settings,
                                      protocol: str) -> None:
    inbox.deliver(message(1))
    text = _refusal(base, **inbox.bounces(protocol, password="wrong"))
    port = inbox.server.imaps_port if protocol == "imap" else inbox.server.pop3s_port
    assert text.startswith(f"the {protocol} mailbox {inbox.username} at 127.0.0.1:{port} "
                           f"refused the login ("), text
    assert text.endswith("); check [bounces] username and DIGEST_BOUNCES__PASSWORD"), text
    assert "Authentication failed" in text
    assert len(inbox.messages()) == 1


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_closed_port_is_one_line(base: Settings, protocol: str) -> None:
    with closed_port() as port:
        text = _refusal(base, protocol=protocol, host="127.0.0.1", port=port,
                        username="bounces@example.org", password="secret", timeout=5.0)
    assert text == (f"cannot reach the {protocol} mailbox bounces@example.org at "
                    f"127.0.0.1:{port} (Connection refused); check [bounces] host, port and "
                    f"security")


@pytest.mark.parametrize(("protocol", "security"), [("imap", "ssl"), ("imap", "starttls"),
                                                    ("pop3", "ssl"), ("pop3", "starttls")])
def test_an_untrusted_certificate_is_refused_without_ca_file(
        inbox: DovecotUser, base: Settings, protocol: str, security: str) -> None:
    inbox.deliver(message(1))
    bounces = inbox.bounces(protocol, security, ca_file="")
    text = _refusal(base, **bounces)
    assert text == (f"the {protocol} mailbox {inbox.username} at 127.0.0.1:"
                    f"{bounces['port']}: its certificate is not trusted (unable to get local "
                    f"issuer certificate); set [bounces] ca_file to the certificate of the CA "
                    f"that signed it")
    assert len(inbox.messages()) == 1


def test_a_missing_folder_is_one_line(inbox: DovecotUser, base: Settings) -> None:
    inbox.deliver(message(1))
    text = _refusal(base, **inbox.bounces(folder="Bounces"))
    assert text == (f"the imap mailbox {inbox.username} at 127.0.0.1:"
                    f"{inbox.server.imaps_port} has no folder 'Bounces' (it has: INBOX); "
                    f"check [bounces] folder")


def test_settings_that_cannot_work_are_refused_before_connecting(base: Settings,
                                                                  tmp_path: Path) -> None:
    assert _refusal(base, host="") == ("[bounces] host is empty: set [bounces] host, username "
                                       "and DIGEST_BOUNCES__PASSWORD to read the bounce mailbox")
    assert _refusal(base, host="mail.example.org", username="b") == (
        "no password for the imap mailbox b at mail.example.org: set DIGEST_BOUNCES__PASSWORD "
        "in the environment")
    full = {"host": "mail.example.org", "username": "b", "password": "p"}
    assert _refusal(base, **full, security="starttls", port=993).startswith(
        "[bounces] port 993 speaks TLS from the start")
    assert _refusal(base, **full, processed_folder="INBOX").startswith(
        "[bounces] processed_folder is the folder read ('INBOX')")
    missing = tmp_path / "no-such-ca.pem"
    assert _refusal(base, **full, ca_file="no-such-ca.pem") == (
        f"[bounces] ca_file {missing}: cannot load it (No such file or directory); name a PEM "
        f"file of CA certificates")


# --- through the CLI: digest bounces fetch -------------------------------------------------

REPORT = DATA / "bounces" / "sisimai" / "rb-bsd-email-postfix-02.eml"   # 5.1.1 for one


def test_digest_bounces_fetch_holds_a_report_about_mail_we_never_sent(
        digest: Digest, inbox: DovecotUser, tmp_path: Path) -> None:
    """A real MTA's report naming a subscriber, about a message this store never sent
    (its quoted Message-ID is not ours): fetched, held for review, bouncing nobody until
    an editor applies it."""
    (tmp_path / "subs.csv").write_text("email,name\nuserunknown@example.co.jp,Gone\n"
                                       "reader@example.org,Reader\n")
    digest.ok("subscribers", "import", str(tmp_path / "subs.csv"))
    report = need(REPORT).read_bytes()
    inbox.deliver(report)
    env = inbox.env()

    digest.ok("bounces", "fetch", "--dry-run", env=env)
    assert inbox.messages() == [report]                    # a dry run leaves it there
    assert _statuses(tmp_path)["userunknown@example.co.jp"] == "active"

    result = digest.ok("bounces", "fetch", env=env)
    assert "1 held for review" in result.output
    assert _statuses(tmp_path) == {"userunknown@example.co.jp": "active",
                                   "reader@example.org": "active"}
    assert inbox.messages() == []
    assert inbox.messages("Processed") == [report]
    digest.ok("bounces", "fetch", env=env)                 # nothing new: nothing changes
    assert inbox.messages("Processed") == [report]
    [held] = json.loads(digest.ok("bounces", "review", "--format", "json").stdout)
    assert held["claims"] == "hard: filtered@example.co.jp, userunknown@example.co.jp"
    digest.ok("bounces", "review", "--apply", str(held["id"]))
    assert _statuses(tmp_path) == {"userunknown@example.co.jp": "bounced",
                                   "reader@example.org": "active"}


def _statuses(folder: Path) -> dict[str, str]:
    return {str(email): str(status)
            for email, status in sql(folder, "SELECT email, status FROM subscribers")}


def test_digest_bounces_fetch_refusals_are_one_line_and_exit_1(
        digest: Digest, inbox: DovecotUser) -> None:
    wrong = digest("bounces", "fetch", env=inbox.env("pop3", password="wrong"))
    assert wrong.exit_code == 1
    assert wrong.output.startswith(f"Error: the pop3 mailbox {inbox.username} at 127.0.0.1:"
                                   f"{inbox.server.pop3s_port} refused the login ("), wrong.output
    assert wrong.output.count("\n") == 1 and "Traceback" not in wrong.output
    with closed_port() as port:
        closed = digest("bounces", "fetch", env=inbox.env(port=port))
    assert closed.exit_code == 1
    assert closed.output == (f"Error: cannot reach the imap mailbox {inbox.username} at "
                             f"127.0.0.1:{port} (Connection refused); check [bounces] host, "
                             f"port and security\n")


# --- bounded work: long lines, big messages, bad messages ------------------------------------

def long_line_message(n: int, width: int = 3000) -> bytes:
    """A bounce that quotes a long HTML line of the original, as real ones do: one line of
    `width` characters, over poplib's 2,048-byte limit."""
    line = "<p>" + "x" * (width - 7) + "</p>"
    return (f"Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.example.net\r\n"
            f"To: bounces@example.org\r\nMessage-ID: <long{n}@mx.example.net>\r\n"
            f"Subject: Undelivered Mail {n}\r\n\r\n{line}\r\n.starts with a dot\r\n"
            f"message {n}\r\n").encode()


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_a_line_of_3000_characters_over_pop3_is_read_and_so_are_the_next_ones(
        inbox: DovecotUser, base: Settings, security: str) -> None:
    sent = [message(1), long_line_message(2), message(3)]
    for raw in sent:
        inbox.deliver(raw)
    settings = with_overrides(base, bounces=inbox.bounces("pop3", security))
    desk = Desk()
    report = fetch_mailbox(settings, desk)
    assert (report.read, report.handled, report.left, report.errors) == (3, 3, 0, [])
    assert [raw for raw, _ in desk.seen] == sent          # byte for byte, the dot too
    assert inbox.messages() == []                         # the session ended with QUIT


class MemoryTries:
    """Failures remembered across fetches, as the store does for digest bounces fetch."""

    def __init__(self) -> None:
        self.failures = Counter[str]()

    def spent(self, source: str) -> bool:
        return self.failures[source] >= MAX_TRIES

    def failed(self, source: str) -> None:
        self.failures[source] += 1


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_broken_message_is_skipped_logged_and_the_rest_are_read(
        inbox: DovecotUser, base: Settings, protocol: str,
        caplog: pytest.LogCaptureFixture) -> None:
    sent = [message(1), message(2, "raise"), message(3)]
    for raw in sent:
        inbox.deliver(raw)
    settings = with_overrides(base, bounces=inbox.bounces(protocol))
    tries = MemoryTries()
    caplog.set_level("WARNING", logger="digest.bounces")
    report = fetch_mailbox(settings, Desk(), tries=tries)
    assert (report.read, report.handled, report.left) == (3, 2, 1)
    [error] = report.errors
    assert error.endswith(": ValueError: cannot read this one")
    assert f"{error} (left in the mailbox)" in caplog.messages
    assert inbox.messages() == [sent[1]]
    # It is tried in MAX_TRIES fetches, then left alone: not fetched, one line each time.
    for _ in range(MAX_TRIES - 1):
        desk = Desk()
        assert fetch_mailbox(settings, desk, tries=tries).errors != []
        assert [raw for raw, _ in desk.seen] == [sent[1]]
    desk = Desk()
    report = fetch_mailbox(settings, desk, tries=tries)
    assert desk.seen == [] and (report.read, report.errors) == (0, [])
    assert report.skipped == [f"{error.partition(': ValueError')[0]}: failed in {MAX_TRIES} "
                              f"fetches; left in the mailbox"]
    assert inbox.messages() == [sent[1]]


def big_message(n: int, size: int) -> bytes:
    """A message of about `size` bytes: lines of 76 characters, as base64 attachments are."""
    line = b"Q" * 76 + b"\r\n"
    return message(n) + line * (size // len(line))


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_message_over_max_message_bytes_is_not_fetched_and_stays(
        inbox: DovecotUser, base: Settings, protocol: str) -> None:
    sent = [message(1), big_message(2, 300_000), message(3)]
    for raw in sent:
        inbox.deliver(raw)
    settings = with_overrides(base, bounces=inbox.bounces(protocol,
                                                          max_message_bytes=100_000))
    desk, told = Desk(), Counter[str]()
    report = fetch_mailbox(settings, desk, progress=lambda outcome: told.update([outcome]))
    assert [raw for raw, _ in desk.seen] == [sent[0], sent[2]]
    assert (report.read, report.handled, told) == (2, 2, {"handled": 2, "skipped": 1})
    [skipped] = report.skipped
    assert skipped.endswith(f": {len(sent[1])} bytes, over [bounces] max_message_bytes "
                            f"(100000); left in the mailbox")
    assert inbox.messages() == [sent[1]]
    if protocol == "imap":
        assert inbox.flags() == [""]                   # a person still sees it as unread


def test_imap_asks_every_size_first_then_fetches_one_message_per_command(
        inbox: DovecotUser, base: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # Sizes around a cap of 100 KB: the same commands as 8 MB messages under the 10 MB
    # default (bench/mailbox.py measures the memory those take), without the server
    # indexing 27 MB for every run of the suite.
    sent = [big_message(1, 80_000), big_message(2, 80_000), big_message(3, 150_000),
            message(4)]
    for raw in sent:
        inbox.deliver(raw)
    # What the client says to the real server: imaplib's commands, passed on unchanged.
    said: list[tuple[str, ...]] = []
    command = imaplib.IMAP4._command

    def record(self: imaplib.IMAP4, name: str, *args: Any) -> Any:
        said.append((name, *(a.decode() if isinstance(a, bytes) else str(a) for a in args)))
        return command(self, name, *args)

    monkeypatch.setattr(imaplib.IMAP4, "_command", record)
    lengths: list[int] = []
    report = fetch_mailbox(with_overrides(base, bounces=inbox.bounces(max_message_bytes=100_000)),
                           lambda raw, source: lengths.append(len(raw)) is None)
    fetches = [args for name, *args in said if name == "UID" and args[0] == "FETCH"]
    assert fetches == [["FETCH", "1,2,3,4", "(RFC822.SIZE)"],
                       ["FETCH", "1", "(BODY.PEEK[])"], ["FETCH", "2", "(BODY.PEEK[])"],
                       ["FETCH", "4", "(BODY.PEEK[])"]]
    assert lengths == [len(sent[0]), len(sent[1]), len(sent[3])]
    assert report.handled == 3 and len(report.skipped) == 1
    assert inbox.messages() == [sent[2]]               # over the cap: left for a person


def test_digest_bounces_fetch_over_pop3_reads_past_a_long_line(
        digest: Digest, inbox: DovecotUser, tmp_path: Path) -> None:
    (tmp_path / "subs.csv").write_text("email,name\nuserunknown@example.co.jp,Gone\n")
    digest.ok("subscribers", "import", str(tmp_path / "subs.csv"))
    report = need(REPORT).read_bytes()
    inbox.deliver(long_line_message(1))
    inbox.deliver(report)
    inbox.deliver(message(3))
    result = digest.ok("bounces", "fetch", env=inbox.env("pop3"))
    assert "3 message(s)" in result.output and "not handled" not in result.output
    # The report, read whole after the long line, is about mail this store never sent:
    # held for review, nobody changed.
    assert "1 held for review" in result.output, result.output
    assert _statuses(tmp_path) == {"userunknown@example.co.jp": "active"}
    assert inbox.messages() == []
