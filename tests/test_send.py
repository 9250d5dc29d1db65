"""Sending through a real SMTP server on 127.0.0.1: the ledger, replies, crashes."""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE_JSON, Digest, run_digest, smtp_env, sql, write_subscribers
from mailservers import closed_port

from digest.mail.loopback import DROP, LoopbackSMTPServer

HEADERS = ("Date", "Message-ID", "From", "To", "Subject", "MIME-Version", "List-Id",
           "List-Unsubscribe", "List-Unsubscribe-Post")


def ledger(folder: Path) -> dict[str, int]:
    return dict(sql(folder, "select status, count(*) from deliveries group by status"))


def editions(folder: Path) -> list[tuple[int, str]]:
    return sql(folder, "select number, status from editions order by number")


def per_recipient(server: LoopbackSMTPServer) -> dict[str, int]:
    return {rcpt: len(items) for rcpt, items in server.by_recipient().items()}


@pytest.fixture
def newsroom(digest: Digest, tmp_path: Path) -> Digest:
    """Sample articles and 20 subscribers."""
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 20)))
    return digest


@pytest.mark.both_backends
def test_send_reaches_everyone_once(newsroom: Digest, smtp: LoopbackSMTPServer,
                                    tmp_path: Path) -> None:
    result = newsroom.ok("send", "--yes", env=smtp_env(smtp))
    assert "this run │ 20" in result.stdout
    counts = per_recipient(smtp)
    assert len(counts) == 20 and set(counts.values()) == {1}
    assert ledger(tmp_path) == {"sent": 20}
    assert editions(tmp_path) == [(1, "sent")]
    for item in smtp.received:
        msg = item.message()
        for header in HEADERS:
            assert msg[header], header
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        assert msg["List-Unsubscribe"].startswith("<https://digest.example.org/u/")
        unsubscribe_url = msg["List-Unsubscribe"][1:-1]
        assert unsubscribe_url in msg.get_body(("plain",)).get_content()
        assert unsubscribe_url in msg.get_body(("html",)).get_content()

    again = newsroom.ok("send", "--yes", env=smtp_env(smtp))
    assert again.stdout == ("No new articles since edition 1: nothing to send (import some "
                            "with: digest articles import FILE…).\n")
    assert len(smtp.received) == 20

    shown = newsroom.ok("editions", "show", "1").stdout
    assert "Status sent" in shown and "sent 20" in shown
    assert "│ 1   │" in newsroom.ok("editions", "list").stdout
    assert "│ 20 sent    │" in newsroom.ok("editions", "list").stdout


def test_send_asks_unless_yes(newsroom: Digest, smtp: LoopbackSMTPServer) -> None:
    result = newsroom("send", env=smtp_env(smtp))
    assert result.exit_code == 1
    assert result.output == ("Error: edition 1 would go to 20 subscribers; add --yes to send "
                             "without asking\n")
    assert smtp.received == []


def test_dry_run_sends_and_stores_nothing(newsroom: Digest, smtp: LoopbackSMTPServer,
                                          tmp_path: Path) -> None:
    newsroom.ok("subscribers", "add", "only-sports@example.org", "--topic", "Sports")
    newsroom.ok("subscribers", "add", "nothing@example.org", "--topic", "Culture")
    result = newsroom.ok("send", "--dry-run", env=smtp_env(smtp))
    assert result.stdout == (
        "Dry run: edition 1 would take 30 articles in 8 topics and go to 22 subscribers in "
        "3 variants (0 skipped: nothing new in their topics). Nothing was stored or sent.\n")
    assert smtp.received == [] and editions(tmp_path) == [] and ledger(tmp_path) == {}


def test_test_copy_leaves_the_ledger_alone(newsroom: Digest, smtp: LoopbackSMTPServer,
                                           tmp_path: Path) -> None:
    result = newsroom.ok("send", "--to", "editor@example.org", env=smtp_env(smtp))
    assert result.stdout.startswith("Sent a test copy to editor@example.org: [TEST] ")
    [item] = smtp.received
    assert item.recipients == ("editor@example.org",)
    assert item.message()["Subject"].startswith("[TEST] The Weekly Digest")
    assert editions(tmp_path) == [] and ledger(tmp_path) == {}


def test_per_subscriber_topics(digest: Digest, smtp: LoopbackSMTPServer,
                               tmp_path: Path) -> None:
    (tmp_path / "two.json").write_text(json.dumps([
        {"title": "OpenAI ships a model", "body": "Text about AI.", "topic": "AI"},
        {"title": "Telescope news", "body": "Text about space.", "topic": "Science"},
    ]))
    digest.ok("articles", "import", "two.json")
    digest.ok("subscribers", "add", "all@example.org")
    digest.ok("subscribers", "add", "ai@example.org", "--topic", "AI")
    digest.ok("subscribers", "add", "ai2@example.org", "--topic", "AI", "--topic", "Sports")
    digest.ok("subscribers", "add", "both@example.org", "--topic", "AI", "--topic", "Science")
    digest.ok("subscribers", "add", "culture@example.org", "--topic", "Culture")
    digest.ok("send", "--yes", env=smtp_env(smtp))
    got = {item.recipients[0]: item.message() for item in smtp.received}
    assert set(got) == {"all@example.org", "ai@example.org", "ai2@example.org",
                        "both@example.org"}
    for address, topics in [("all@example.org", {"AI", "Science"}),
                            ("both@example.org", {"AI", "Science"}),
                            ("ai@example.org", {"AI"}), ("ai2@example.org", {"AI"})]:
        html = got[address].get_body(("html",)).get_content()
        shown = {t for t in ("AI", "Science") if f">{t}</h2>" in html}
        assert shown == topics, address
    rows = dict(sql(tmp_path, "select s.email, d.status || ':' || coalesce(d.last_error, '') "
                              "from deliveries d join subscribers s on s.id = d.subscriber_id"))
    variants = {v for (v,) in sql(tmp_path, "select distinct variant from deliveries "
                                            "where status = 'sent'")}
    assert rows["culture@example.org"] == "skipped:nothing new in chosen topics"
    assert variants == {"", '["AI"]'}    # two renders for four recipients


def test_server_unreachable_at_the_start(newsroom: Digest, tmp_path: Path) -> None:
    with closed_port() as port:
        result = newsroom("send", "--yes", env={"DIGEST_SMTP__PORT": str(port)})
    assert result.exit_code == 1
    assert result.output == (f"Error: cannot reach the SMTP server at 127.0.0.1:{port} "
                             f"(Connection refused); check [smtp] host, port and security, "
                             f"and that the server is running\n")
    assert editions(tmp_path) == [] and ledger(tmp_path) == {}


@pytest.mark.both_backends
def test_451_is_deferred_then_sent_by_retry(newsroom: Digest, smtp: LoopbackSMTPServer,
                                            tmp_path: Path) -> None:
    seen: set[str] = set()

    def greylist(phase: str, _from: str, rcpt: str) -> str | None:
        if phase == "RCPT" and rcpt.startswith("reader0000") and rcpt not in seen:
            seen.add(rcpt)
            return "451 4.7.1 Greylisted, try again later"
        return None

    smtp.reply_policy = greylist
    first = newsroom.ok("send", "--yes", env=smtp_env(smtp))
    assert ledger(tmp_path) == {"sent": 10, "deferred": 10}
    assert editions(tmp_path) == [(1, "sent")]
    shown = newsroom.ok("editions", "show", "1").stdout
    assert "deferred reader00000@example.org: 451 4.7.1 Greylisted, try again later" in shown
    assert ("10 deferred after temporary errors: digest send --retry sends them once due"
            in first.stdout)
    result = newsroom.ok("send", "--retry", env=smtp_env(smtp))
    assert "this run │ 10" in result.stdout
    assert ledger(tmp_path) == {"sent": 20}
    assert set(per_recipient(smtp).values()) == {1} and len(smtp.received) == 20


def test_backoff_waits_before_retrying(newsroom: Digest, smtp: LoopbackSMTPServer,
                                       tmp_path: Path) -> None:
    smtp.reply_policy = lambda phase, _f, rcpt: "452 mailbox busy" if (
        phase == "RCPT" and rcpt == "reader00003@example.org") else None
    env = smtp_env(smtp, DIGEST_DELIVERY__RETRY_BASE_SECONDS="3600")
    newsroom.ok("send", "--yes", env=env)
    [(attempts, retry_at)] = sql(tmp_path, "select attempts, next_attempt_at from deliveries "
                                           "where status = 'deferred'")
    if isinstance(retry_at, str):     # SQLite keeps datetimes as text
        retry_at = datetime.fromisoformat(retry_at)
    gap = (retry_at.replace(tzinfo=UTC) - newsroom.clock.now()).total_seconds()
    assert attempts == 1 and 3500 < gap <= 3600
    newsroom.ok("send", "--retry", env=env)
    assert ledger(tmp_path) == {"sent": 19, "deferred": 1}   # not due yet


@pytest.mark.both_backends
def test_550_fails_that_recipient_and_bounces(newsroom: Digest, smtp: LoopbackSMTPServer,
                                              tmp_path: Path) -> None:
    smtp.reply_policy = lambda phase, _f, rcpt: "550 5.1.1 No such user" if (
        phase == "RCPT" and rcpt in ("reader00002@example.org", "reader00007@example.org")
    ) else None
    newsroom.partly("send", "--yes", env=smtp_env(smtp))        # 5.1.1: hard, bounced at once
    assert ledger(tmp_path) == {"sent": 18, "failed": 2}
    bounced = json.loads(newsroom.ok("subscribers", "list", "--status", "bounced",
                                     "--format", "json").stdout)
    assert sorted(s["email"] for s in bounced) == ["reader00002@example.org",
                                                   "reader00007@example.org"]
    assert "failed   reader00002@example.org: 550 5.1.1 No such user" in \
        newsroom.ok("editions", "show", "1").stdout


def test_connection_dropped_mid_data(newsroom: Digest, smtp: LoopbackSMTPServer,
                                     tmp_path: Path) -> None:
    dropped: set[str] = set()

    def drop_once(phase: str, _from: str, rcpt: str) -> str | None:
        if phase == "DATA" and rcpt in ("reader00004@example.org", "reader00011@example.org") \
                and rcpt not in dropped:
            dropped.add(rcpt)
            return DROP
        return None

    smtp.reply_policy = drop_once
    newsroom.ok("send", "--yes", env=smtp_env(smtp))
    assert ledger(tmp_path) == {"sent": 18, "deferred": 2}
    newsroom.ok("send", "--retry", env=smtp_env(smtp))
    assert ledger(tmp_path) == {"sent": 20}
    assert set(per_recipient(smtp).values()) == {1} and len(per_recipient(smtp)) == 20


def test_too_many_errors_in_a_row_pause_the_edition(newsroom: Digest, smtp: LoopbackSMTPServer,
                                                    tmp_path: Path) -> None:
    smtp.reply_policy = lambda phase, _f, _r: "421 4.3.2 Service shutting down" \
        if phase == "RCPT" else None
    env = smtp_env(smtp, DIGEST_DELIVERY__MAX_CONSECUTIVE_ERRORS="5",
                   DIGEST_SMTP__CONNECTIONS="1")
    result = newsroom("send", "--yes", env=env)
    assert result.exit_code == 1
    assert ("Error: edition 1 paused after 5 errors in a row (last: 421 4.3.2 Service "
            "shutting down); the rest stays pending: fix the cause and run digest send to "
            "resume") in result.output
    assert editions(tmp_path) == [(1, "paused")]
    assert ledger(tmp_path) == {"deferred": 5, "pending": 15}
    smtp.reply_policy = None
    newsroom.ok("send", "--yes", env=env)
    newsroom.ok("send", "--retry", env=env)
    assert ledger(tmp_path) == {"sent": 20}
    assert editions(tmp_path) == [(1, "sent")]
    assert set(per_recipient(smtp).values()) == {1}


def test_maildir_transport(newsroom: Digest, tmp_path: Path) -> None:
    (tmp_path / "mail").mkdir()                 # an existing plain folder becomes a Maildir
    (tmp_path / "mail" / "README").write_text("kept")
    newsroom.ok("send", "--yes", env={"DIGEST_DELIVERY__TRANSPORT": "maildir",
                                      "DIGEST_DELIVERY__MAILDIR": "mail"})
    files = list((tmp_path / "mail" / "new").iterdir())
    assert len(files) == 20
    msg = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.both_backends
@pytest.mark.slow
def test_sigkill_mid_send_then_resume(digest: Digest, smtp: LoopbackSMTPServer,
                                      tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 300)))
    env = smtp_env(smtp, DIGEST_SMTP__CONNECTIONS="4", DIGEST_SMTP__MAX_PER_SECOND="150")
    proc = run_digest(tmp_path, "send", "--yes", env=env)
    deadline = time.monotonic() + 30
    while len(smtp.received) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = len(smtp.received)
    assert 100 <= before < 300, "killed mid-send"
    mid = ledger(tmp_path)
    assert mid.get("sending", 0) > 0 or mid.get("pending", 0) > 0

    again = run_digest(tmp_path, "send", "--yes", env=env)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    counts = per_recipient(smtp)
    assert len(counts) == 300, "nobody missed"
    duplicates = {rcpt: n for rcpt, n in counts.items() if n > 1}
    assert len(duplicates) <= 4, duplicates                # at most one per connection
    for rcpt in duplicates:
        ids = {item.message()["Message-ID"] for item in smtp.by_recipient()[rcpt]}
        assert len(ids) == 1, "a resend carries the same Message-ID"
    assert ledger(tmp_path) == {"sent": 300}
    assert editions(tmp_path) == [(1, "sent")]


@pytest.mark.both_backends
@pytest.mark.slow
def test_two_senders_at_once_never_send_twice(digest: Digest, smtp: LoopbackSMTPServer,
                                              tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 400)))
    env = smtp_env(smtp, DIGEST_SMTP__CONNECTIONS="3", DIGEST_DELIVERY__BATCH_SIZE="10")
    procs = [run_digest(tmp_path, "send", "--yes", env=env) for _ in range(2)]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    counts = per_recipient(smtp)
    assert len(counts) == 400 and set(counts.values()) == {1}
    assert ledger(tmp_path) == {"sent": 400}
    assert editions(tmp_path) == [(1, "sent")]


def test_demo_in_a_fresh_folder(tmp_path: Path) -> None:
    d = Digest(tmp_path)
    result = d("demo", "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    emls = sorted((out / "outbox").glob("*.eml"))
    assert len(emls) == 6
    assert (out / "preview.html").read_text().startswith("<!DOCTYPE html>")
    for path in emls:
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        for header in HEADERS:
            assert msg[header], (path, header)
    assert "The loopback SMTP server received 6 messages" in result.stdout
    again = d("demo", "out")
    assert again.exit_code == 0
    assert len(list((out / "outbox").glob("*.eml"))) == 6
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused = d("demo", "mine")
    assert refused.exit_code == 1 and "is not empty" in refused.output


def test_demo_preview_is_the_whole_edition_and_its_config_says_the_server_is_gone(
        tmp_path: Path) -> None:
    """preview.html was the first message the demo's server received: one subscriber's,
    with only their topics. And demo-out/digest.toml named no server that still listens,
    without saying so."""
    d = Digest(tmp_path)
    result = d("demo", "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"

    def topics(html: str) -> set[str]:
        return set(re.findall(r"<h2[^>]*>\s*([^<]+?)\s*<", html))

    in_mail = [topics(message_from_bytes(p.read_bytes(), policy=policy.default)
                      .get_body(preferencelist=("html",)).get_content())  # type: ignore[union-attr]
               for p in sorted((out / "outbox").glob("*.eml"))]
    shown = topics((out / "preview.html").read_text())
    assert shown == set().union(*in_mail) and len(shown) == 8
    assert any(len(t) < len(shown) for t in in_mail)      # some chose a few topics
    assert (out / "digest.toml").read_text().startswith("# Written by `digest demo`. Its SMTP "
                                                        "server (127.0.0.1, a port of the "
                                                        "moment) ran only")
    assert "The demo's SMTP server has stopped: to try sending again, " in result.stdout
    assert "--config out/digest.toml send --dry-run" in result.stdout
    assert d("--config", "out/digest.toml", "send", "--dry-run").exit_code == 0


def subscriber_state(folder: Path) -> set[tuple[str, int]]:
    return set(sql(folder, "select status, hard_bounces from subscribers"))


def test_a_title_longer_than_a_header_line_still_goes_out(digest: Digest, smtp: LoopbackSMTPServer,
                                                          tmp_path: Path) -> None:
    """A 1,200-character title becomes the subject through {top_story}: the server once
    answered "500 Line too long" to every message. Now the subject is cut and folded."""
    (tmp_path / "long.json").write_text(json.dumps([
        {"title": "Breaking " + "x" * 1200, "url": "https://example.org/long",
         "body": "A story with a very long title."}]))
    digest.ok("articles", "import", "long.json")
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 5)))
    digest.ok("send", "--yes", env=smtp_env(smtp, DIGEST_DIGEST__SUBJECT="{top_story}"))
    assert ledger(tmp_path) == {"sent": 5}
    subject = smtp.received[0].message()["Subject"]
    assert subject.startswith("Breaking") and subject.endswith("…") and len(subject) <= 160
    assert subscriber_state(tmp_path) == {("active", 0)}


@pytest.mark.parametrize(("phase", "reply", "where"), [
    ("MAIL", "530 5.7.0 Authentication required", "the sender address (MAIL FROM)"),
    ("DATA", "554 5.7.1 Message rejected by policy", "the message (DATA)"),
    ("DATA", "500 Line too long", "the message (DATA)"),
])
def test_a_5xx_about_the_server_or_message_pauses_and_changes_nobody(
        newsroom: Digest, smtp: LoopbackSMTPServer, tmp_path: Path, phase: str, reply: str,
        where: str) -> None:
    smtp.reply_policy = lambda p, _f, _r: reply if p == phase else None
    env = smtp_env(smtp)     # a 5xx to RCPT TO bounces at once: none of these may
    result = newsroom("send", "--yes", env=env)
    assert result.exit_code == 1
    assert (f"Error: edition 1 paused after the SMTP server refused {where}: {reply}; no "
            f"delivery failed and no subscriber changed: fix the cause and run digest send "
            f"to resume. 20 deliveries pending; ") in result.output
    assert editions(tmp_path) == [(1, "paused")]
    assert ledger(tmp_path) == {"pending": 20}
    assert subscriber_state(tmp_path) == {("active", 0)}
    assert reply in newsroom.ok("editions", "show", "1").stdout    # the reason is on record
    smtp.reply_policy = None
    newsroom.ok("send", "--yes", env=env)
    assert ledger(tmp_path) == {"sent": 20}
    assert editions(tmp_path) == [(1, "sent")]
    assert set(per_recipient(smtp).values()) == {1} and len(per_recipient(smtp)) == 20


@pytest.mark.both_backends
def test_a_data_5xx_for_one_message_fails_that_delivery_only(
        newsroom: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    """A relay refuses one subscriber's message at DATA (their name holds a spam test
    string) while it takes the same edition for everyone else: that delivery fails, named
    in the summary, no bounce is counted, the edition is finished and the next one goes."""
    bad, reply = "reader00012@example.org", "554 5.7.1 Message rejected as spam"
    smtp.reply_policy = lambda p, _f, rcpt: reply if p == "DATA" and rcpt == bad else None
    env = smtp_env(smtp)
    result = newsroom.partly("send", "--yes", env=env)
    assert ledger(tmp_path) == {"sent": 19, "failed": 1}
    assert editions(tmp_path) == [(1, "sent")]
    error = f"refused at DATA, this message only (the server took the edition for others): {reply}"
    assert ("1 failed (digest send --retry-failed --edition 1 sends it again once the cause "
            f"is fixed):\n  {bad}: {error}\n") in result.stdout
    assert f"failed   {bad}: {error}" in newsroom.ok("editions", "show", "1").stdout
    assert subscriber_state(tmp_path) == {("active", 0)}       # not a bounce
    assert sql(tmp_path, "select count(*) from bounce_events") == [(0,)]
    assert bad not in per_recipient(smtp)

    (tmp_path / "more.json").write_text(json.dumps([
        {"title": "A telescope finds a second moon", "topic": "Science",
         "url": "https://example.org/second-moon", "body": "Astronomers say so."}]))
    newsroom.ok("articles", "import", "more.json")
    newsroom.partly("send", "--yes", env=env)
    assert editions(tmp_path) == [(1, "sent"), (2, "sent")]
    assert set(per_recipient(smtp).values()) == {2} and len(per_recipient(smtp)) == 19


def test_a_data_5xx_for_the_first_message_waits_for_the_next_one_to_decide(
        newsroom: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    """The very first message of the edition is refused at DATA, one at a time: the
    next one, taken, says the refusal was about that message only."""
    bad, reply = "reader00000@example.org", "554 5.7.1 Listed URI in message"
    smtp.reply_policy = lambda p, _f, rcpt: reply if p == "DATA" and rcpt == bad else None
    env = smtp_env(smtp, DIGEST_SMTP__CONNECTIONS="1", DIGEST_DELIVERY__BATCH_SIZE="1")
    newsroom.partly("send", "--yes", env=env)
    assert ledger(tmp_path) == {"sent": 19, "failed": 1}
    assert editions(tmp_path) == [(1, "sent")]


def test_a_data_5xx_is_decided_by_what_the_server_took_in_an_earlier_run(
        newsroom: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    """Only the refused subscriber's delivery is left (here: deferred, then retried): the
    server took the same message for the 19 others in the first run, so the refusal is
    that one message's, and nothing pauses."""
    bad, reply = "reader00004@example.org", "554 5.7.1 Message rejected as spam"
    smtp.reply_policy = lambda p, _f, rcpt: "451 4.7.1 Try again later" if (
        p == "RCPT" and rcpt == bad) else None
    env = smtp_env(smtp)
    newsroom.ok("send", "--yes", env=env)
    assert ledger(tmp_path) == {"sent": 19, "deferred": 1}
    smtp.reply_policy = lambda p, _f, rcpt: reply if p == "DATA" and rcpt == bad else None
    result = newsroom("send", "--retry", env=env)  # the one delivery: failed
    assert ledger(tmp_path) == {"sent": 19, "failed": 1}
    assert result.exit_code == 1, result.output
    assert (f"  {bad}: refused at DATA, this message only (the server took the edition for "
            f"others): {reply}\n") in result.stdout
    assert subscriber_state(tmp_path) == {("active", 0)}


def test_a_data_5xx_for_every_message_still_pauses(newsroom: Digest, smtp: LoopbackSMTPServer,
                                                   tmp_path: Path) -> None:
    reply = "554 5.7.1 Message rejected by policy"
    smtp.reply_policy = lambda p, _f, _r: reply if p == "DATA" else None
    env = smtp_env(smtp)
    result = newsroom("send", "--yes", env=env)
    assert result.exit_code == 1
    assert result.output.endswith(
        f"Error: edition 1 paused after the SMTP server refused the message (DATA): {reply}; "
        f"no delivery failed and no subscriber changed: fix the cause and run digest send to "
        f"resume. 20 deliveries pending; no new edition is made until this one is finished "
        f"(to give up on it: digest editions discard 1, which nobody received; its articles "
        f"go to the next edition)\n")
    assert ledger(tmp_path) == {"pending": 20}
    assert editions(tmp_path) == [(1, "paused")]
    assert subscriber_state(tmp_path) == {("active", 0)}

    again = newsroom("send", "--yes", env=env)
    assert again.exit_code == 1
    assert again.output.startswith("Edition 1 is paused: sending its 20 pending deliveries "
                                   "before any new edition.\n")
    assert "has nothing pending" not in again.output
    assert again.output.endswith("Error: edition 1 paused after the SMTP server refused the "
                                 f"message (DATA): {reply}; no delivery failed and no "
                                 "subscriber changed: fix the cause and run digest send to "
                                 "resume. 20 deliveries pending; no new edition is made until "
                                 "this one is finished (to give up on it: digest editions "
                                 "discard 1, which nobody received; its articles go to the "
                                 "next edition)\n")
    assert smtp.received == []


def test_a_paused_edition_someone_received_can_be_given_up_on(
        newsroom: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    env = smtp_env(smtp, DIGEST_DELIVERY__MAX_CONSECUTIVE_ERRORS="3",
                   DIGEST_SMTP__CONNECTIONS="1", DIGEST_DELIVERY__RETRY_BASE_SECONDS="3600")
    smtp.reply_policy = lambda p, _f, rcpt: "421 4.3.2 Service shutting down" if (
        p == "RCPT" and rcpt >= "reader00005@example.org") else None
    result = newsroom("send", "--yes", env=env)
    assert result.output.endswith(
        "Error: edition 1 paused after 3 errors in a row (last: 421 4.3.2 Service shutting "
        "down); the rest stays pending: fix the cause and run digest send to resume. 12 "
        "deliveries pending; no new edition is made until this one is finished (to give up "
        "on it: digest editions finish 1; its pending deliveries fail, to be sent later with "
        "--retry-failed if need be)\n")
    assert ledger(tmp_path) == {"sent": 5, "deferred": 3, "pending": 12}
    refused = newsroom("editions", "finish", "2")
    assert refused.output == "Error: there is no edition 2 (see: digest editions list)\n"
    done = newsroom.ok("editions", "finish", "1")
    assert done.stdout == ("Finished edition 1: 15 deliveries not sent, marked failed (digest "
                           "send --retry-failed --edition 1 sends them after all).\n")
    assert ledger(tmp_path) == {"sent": 5, "failed": 15}
    assert editions(tmp_path) == [(1, "sent")]
    again = newsroom("editions", "finish", "1")
    assert again.output == ("Error: edition 1 is sent: only a paused edition can be given up "
                            "on (see: digest editions show 1)\n")
    smtp.reply_policy = None
    newsroom.ok("send", "--retry-failed", "--edition", "1", env=env)
    assert ledger(tmp_path) == {"sent": 20}


def test_a_5xx_greeting_refuses_before_anything_is_written(newsroom: Digest,
                                                           tmp_path: Path) -> None:
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def refuse() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"554 5.7.1 No SMTP service here\r\n")

    threading.Thread(target=refuse, daemon=True).start()
    try:
        result = newsroom("send", "--yes", env={"DIGEST_SMTP__HOST": "127.0.0.1",
                                                "DIGEST_SMTP__PORT": str(port)})
    finally:
        listener.close()
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: SMTP server 127.0.0.1:{port} refused the "
                                    f"session: 554 5.7.1 No SMTP service here;")
    assert editions(tmp_path) == [] and ledger(tmp_path) == {}


@pytest.mark.both_backends
def test_retry_failed_sends_an_editions_failed_deliveries_again(
        newsroom: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    refused = {"reader00002@example.org", "reader00007@example.org"}
    smtp.reply_policy = lambda p, _f, rcpt: "550 5.7.1 Relay access denied" if (
        p == "RCPT" and rcpt in refused) else None
    env = smtp_env(smtp)
    newsroom.partly("send", "--yes", env=env)
    assert ledger(tmp_path) == {"sent": 18, "failed": 2}
    newsroom.ok("subscribers", "unsubscribe", "reader00007@example.org")
    usage = newsroom("send", "--retry-failed", env=env)
    assert usage.exit_code == 2 and "--retry-failed needs --edition N" in usage.output
    smtp.reply_policy = None
    result = newsroom.ok("send", "--retry-failed", "--edition", "1", env=env)
    assert ("Edition 1: 1 failed delivery to send again; 1 for subscribers no longer active "
            "stay failed.") in result.stdout
    assert ledger(tmp_path) == {"sent": 19, "failed": 1}
    assert editions(tmp_path) == [(1, "sent")]
    assert per_recipient(smtp)["reader00002@example.org"] == 1
    assert "reader00007@example.org" not in per_recipient(smtp)


def test_retry_before_anything_is_due_says_when(newsroom: Digest, smtp: LoopbackSMTPServer,
                                                tmp_path: Path) -> None:
    smtp.reply_policy = lambda p, _f, rcpt: "452 mailbox busy" if (
        p == "RCPT" and rcpt == "reader00003@example.org") else None
    env = smtp_env(smtp, DIGEST_DELIVERY__RETRY_BASE_SECONDS="3600")
    assert newsroom.ok("send", "--retry", env=env).stdout == (
        "Nothing is deferred: nothing to retry.\n")
    newsroom.ok("send", "--yes", env=env)
    result = newsroom.ok("send", "--retry", env=env)
    assert result.stdout.startswith("Nothing to retry yet: the next deferred delivery is due "
                                    "at ")
    assert "UTC (in 1 h 0 min)." in result.stdout or "UTC (in 59 min)." in result.stdout


def test_no_subscribers_no_edition(digest: Digest, smtp: LoopbackSMTPServer,
                                   tmp_path: Path) -> None:
    """Sending with nobody to send to once made edition 1 "sent" and used up every
    article; now it is refused, nothing is created, and the articles wait."""
    digest.ok("articles", "import", str(SAMPLE_JSON))
    for args in (["send", "--yes"], ["send", "--enqueue"], ["send", "--dry-run"]):
        result = digest(*args, env=smtp_env(smtp))
        assert result.exit_code == 1, args
        assert result.output == ("Error: there are no active subscribers: nothing to send, and "
                                 "the new articles wait for the next edition (add someone "
                                 "with: digest subscribers add EMAIL)\n")
    assert editions(tmp_path) == []
    assert sql(tmp_path, "select count(*) from articles where edition_id is null") == [(30,)]
    digest.ok("subscribers", "add", "sports@example.org", "--topic", "Sports")
    (tmp_path / "ai.json").write_text(json.dumps([{"title": "Only AI news", "topic": "AI",
                                                   "url": "https://example.org/ai-only"}]))
    digest.ok("send", "--yes", env=smtp_env(smtp))             # sports fans get sports
    digest.ok("articles", "import", "ai.json")
    result = digest("send", "--yes", env=smtp_env(smtp))
    assert result.exit_code == 1
    assert "none of the 1 active subscribers chose a topic with new articles (AI)" in \
        result.output
    assert editions(tmp_path) == [(1, "sent")]


@pytest.mark.both_backends
def test_discard_an_edition_nobody_received(newsroom: Digest, smtp: LoopbackSMTPServer,
                                            tmp_path: Path) -> None:
    smtp.reply_policy = lambda p, _f, _r: "554 5.7.1 Rejected" if p == "DATA" else None
    assert newsroom("send", "--yes", env=smtp_env(smtp)).exit_code == 1
    assert editions(tmp_path) == [(1, "paused")]
    result = newsroom.ok("editions", "discard", "1")
    assert result.stdout == "Discarded edition 1; its 30 articles will be in the next edition.\n"
    assert editions(tmp_path) == [] and ledger(tmp_path) == {}
    assert sql(tmp_path, "select count(*) from articles where edition_id is null") == [(30,)]
    smtp.reply_policy = None
    newsroom.ok("send", "--yes", env=smtp_env(smtp))
    assert editions(tmp_path) == [(1, "sent")]
    refused = newsroom("editions", "discard", "1")
    assert refused.exit_code == 1
    assert refused.output == ("Error: edition 1 was sent to 20 subscribers: it cannot be "
                              "discarded (an edition someone received stays in the record)\n")
    missing = newsroom("editions", "discard", "7")
    assert missing.output == "Error: there is no edition 7 (see: digest editions list)\n"


def test_articles_remove_and_set_topic(digest: Digest, tmp_path: Path) -> None:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    title = sql(tmp_path, "select title from articles where id = 3")[0][0]
    assert digest.ok("articles", "remove", "3").stdout == f"Removed article 3: {title}\n"
    gone = digest("articles", "remove", "4", "3")
    assert gone.exit_code == 1
    assert gone.output == "Error: there is no article 3 (see: digest articles list)\n"
    assert sql(tmp_path, "select count(*) from articles where removed_at is null") == \
        [(29,)]                                                          # all or none
    result = digest.ok("articles", "set-topic", "5", "science")
    assert result.stdout.startswith("Article 5 is now under Science: ")
    assert sql(tmp_path, "select topic from articles where id = 5") == [("Science",)]
    bad = digest("articles", "set-topic", "5", "Gardening")
    assert bad.exit_code == 1 and bad.output.startswith("Error: 'Gardening' is not a configured "
                                                        "topic; choose one of AI, ")


def test_a_tag_naming_a_topic_or_keyword_decides(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "tagged.json").write_text(json.dumps([
        {"title": "Quarterly notes", "url": "https://example.org/q", "tags": ["ai"]},
        {"title": "Weekend notes", "url": "https://example.org/w", "tags": ["Sports"]},
        {"title": "Other notes", "url": "https://example.org/o", "tags": ["gardening"]}]))
    # The keyword rules: "Other notes" says nothing a keyword or tag knows.
    digest.ok("articles", "import", "tagged.json", env={"DIGEST_GROUPING__METHOD": "keywords"})
    assert sql(tmp_path, "select title, topic from articles order by id") == [
        ("Quarterly notes", "AI"), ("Weekend notes", "Sports"), ("Other notes", "More stories")]


@pytest.mark.both_backends
@pytest.mark.slow
def test_ctrl_c_finishes_what_is_in_flight_and_says_how_to_resume(
        digest: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    """SIGINT (Ctrl-C, no terminal) once printed only "Aborted!" and left claimed rows in
    "sending". Now the messages in flight finish, the claims go back, the summary prints."""
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 200)))
    env = smtp_env(smtp, DIGEST_SMTP__CONNECTIONS="2", DIGEST_SMTP__MAX_PER_SECOND="40")
    proc = run_digest(tmp_path, "send", "--yes", env=env)
    deadline = time.monotonic() + 30
    while len(smtp.received) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "this run" in out and "Aborted" not in out + err
    assert "Interrupted: " in err and "run `digest send` again to resume" in err
    mid = ledger(tmp_path)
    assert "sending" not in mid and mid["sent"] == len(smtp.received) < 200
    assert editions(tmp_path) == [(1, "sending")]
    digest.ok("send", "--yes", env=smtp_env(smtp))
    counts = per_recipient(smtp)
    assert len(counts) == 200 and set(counts.values()) == {1}
    assert ledger(tmp_path) == {"sent": 200}


def test_without_a_signing_key_nothing_is_created(newsroom: Digest, smtp: LoopbackSMTPServer,
                                                  tmp_path: Path) -> None:
    (tmp_path / "secret.key").unlink()
    for args in (["send", "--yes"], ["send", "--enqueue"], ["worker", "--until-done"]):
        result = newsroom(*args, env=smtp_env(smtp))
        assert result.exit_code == 1, args
        assert result.output.startswith("Error: no key to sign links with: "), args
    assert editions(tmp_path) == [] and ledger(tmp_path) == {}


@pytest.mark.slow
def test_the_question_comes_before_any_progress_bar(newsroom: Digest, smtp: LoopbackSMTPServer,
                                                    tmp_path: Path) -> None:
    """In a terminal the progress bar was drawn, then the y/N question over it."""
    import os
    import pty
    import select
    import subprocess
    import sys

    from conftest import ROOT

    main, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(smtp_env(smtp), PYTHONPATH=str(ROOT), COLUMNS="80", TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-m", "digest", "send"], cwd=tmp_path, env=env,
                            stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while b"[y/N]" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                seen += os.read(main, 4096)
        assert b"Send edition 1 (30 articles) to 20 subscribers? [y/N]" in seen
        assert b"Sending" not in seen and b"\x1b[?25l" not in seen    # no bar, cursor kept
        os.write(main, b"n\n")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    assert proc.returncode == 1                      # Aborted!
    assert editions(tmp_path) == [] and smtp.received == []


def test_removed_articles_stay_out_of_every_edition(newsroom: Digest, smtp: LoopbackSMTPServer,
                                                    tmp_path: Path) -> None:
    """A removed article once came back as new on the next import and went out."""
    title = sql(tmp_path, "select title from articles where id = 1")[0][0]
    newsroom.ok("articles", "remove", "1")
    assert "Imported 0 new articles, skipped 30 duplicates" in \
        newsroom.ok("articles", "import", str(SAMPLE_JSON)).output
    newsroom.ok("send", "--yes", env=smtp_env(smtp))
    assert editions(tmp_path) == [(1, "sent")]
    assert sql(tmp_path, "select edition_id from articles where id = 1") == [(None,)]
    assert sql(tmp_path, "select count(*) from articles where edition_id is not null") == \
        [(29,)]
    assert smtp.received and all(title not in item.message().get_body(("plain",)).get_content()
                                 for item in smtp.received)
    again = newsroom.ok("send", "--yes", env=smtp_env(smtp))
    assert again.stdout.startswith("No new articles since edition 1: nothing to send")


def test_set_topic_refuses_an_article_in_an_edition(newsroom: Digest, smtp: LoopbackSMTPServer,
                                                    tmp_path: Path) -> None:
    """set-topic once rewrote what a sent edition shows; remove already refused."""
    newsroom.ok("send", "--yes", env=smtp_env(smtp))
    shown = newsroom.ok("editions", "show", "1").stdout
    topic = sql(tmp_path, "select topic from articles where id = 5")[0][0]
    refused = newsroom("articles", "set-topic", "5", "Sports" if topic != "Sports" else "AI")
    assert refused.exit_code == 1
    # The edition went out: no advice to discard it, which would be refused.
    assert refused.output == ("Error: article 5 went out in edition 1: what was sent stays "
                              "as it was\n")
    assert newsroom("articles", "remove", "5").output == refused.output
    assert sql(tmp_path, "select topic from articles where id = 5") == [(topic,)]
    assert newsroom.ok("editions", "show", "1").stdout == shown


def test_a_test_copy_cannot_be_a_dry_run(newsroom: Digest, smtp: LoopbackSMTPServer) -> None:
    """--to with --dry-run once sent a real test copy."""
    result = newsroom("send", "--to", "me@example.org", "--dry-run", env=smtp_env(smtp))
    assert result.exit_code == 2
    assert "--to sends a real test copy; leave out --dry-run (or --to)" in result.output
    assert smtp.received == []


@pytest.mark.slow
def test_ctrl_c_does_not_wait_for_the_rate_limit(digest: Digest, smtp: LoopbackSMTPServer,
                                                 tmp_path: Path) -> None:
    """A message waiting for its turn under max_per_second is not in flight: Ctrl-C hands
    it back instead of waiting for the turn and sending it."""
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "import", str(write_subscribers(tmp_path, 10)))
    env = smtp_env(smtp, DIGEST_SMTP__CONNECTIONS="2", DIGEST_SMTP__MAX_PER_SECOND="0.2")
    proc = run_digest(tmp_path, "send", "--yes", env=env)
    deadline = time.monotonic() + 30
    while not smtp.received and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len(smtp.received) == 1                # the next turn was 5 s away
    assert ledger(tmp_path) == {"sent": 1, "pending": 9}


@pytest.mark.both_backends
def test_a_small_list_is_shared_among_the_connections(newsroom: Digest, smtp: LoopbackSMTPServer,
                                                      tmp_path: Path) -> None:
    """With the default batch of 50, the first connection claimed all of a small list and
    the others had nothing to send: now each batch is at most a fair share."""
    from digest.config import load_settings
    from digest.delivery.editions import open_edition
    from digest.delivery.sender import Sender
    from digest.mail.transport import make_transport
    from digest.store.db import Store
    from digest.store.ledger import StoreLedger

    settings = load_settings(tmp_path / "digest.toml",
                             environ=smtp_env(smtp, DIGEST_SMTP__CONNECTIONS="4"))
    store = Store.from_settings(settings)
    limits: list[int] = []

    class Recording(StoreLedger):
        def claim(self, limit: int, *args: Any, **kwargs: Any) -> Any:
            limits.append(limit)
            return super().claim(limit, *args, **kwargs)

    try:
        edition, _ = open_edition(store, settings, store.clock.now())
        sender = Sender(store, settings, make_transport(settings),
                        ledger=lambda: Recording(store))
        assert sender.run(edition_id=edition.id)["sent"] == 20
    finally:
        store.close()
    assert settings.delivery.batch_size == 50 and set(limits) == {5}


def test_the_loopback_server_takes_another_port_when_its_pick_is_taken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A free port can be taken by another process before the server binds it (a parallel
    test did so): the server chooses again instead of failing with EADDRINUSE."""
    import socket

    import digest.mail.loopback as loopback

    with socket.create_server(("127.0.0.1", 0)) as taken:
        picks = iter([taken.getsockname()[1]])
        real = loopback.free_port
        monkeypatch.setattr(loopback, "free_port", lambda: next(picks, None) or real())
        server = loopback.LoopbackSMTPServer().start()
        try:
            assert server.port != taken.getsockname()[1]
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
                assert conn.recv(100).startswith(b"220 ")
        finally:
            server.stop()


def test_force_after_a_sent_edition_mails_nobody_an_empty_issue(
        newsroom: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    """`send --dry-run --force` once said "nothing to send" while `send --yes --force`
    mailed every subscriber an issue that said only "Nothing new this time.": the dry run
    and the real run decided apart. Both now decide alike, and an edition with nothing in
    it is never made."""
    newsroom.ok("send", "--yes", env=smtp_env(smtp))
    assert len(smtp.received) == 20
    nothing = ("No new articles since edition 1: nothing to send (import some with: digest "
               "articles import FILE…).\n")
    for flags in (("--force",), ("--force", "--allow-empty"), ("--allow-empty",)):
        dry = newsroom.ok("send", "--dry-run", *flags, env=smtp_env(smtp))
        real = newsroom.ok("send", "--yes", *flags, env=smtp_env(smtp))
        queued = newsroom.ok("send", "--enqueue", *flags, env=smtp_env(smtp))
        assert dry.stdout == real.stdout == queued.stdout == nothing, flags
    assert len(smtp.received) == 20
    assert editions(tmp_path) == [(1, "sent")] and ledger(tmp_path) == {"sent": 20}


def test_a_dry_run_of_enqueue_stores_nothing(newsroom: Digest, smtp: LoopbackSMTPServer,
                                             tmp_path: Path) -> None:
    """`send --enqueue --dry-run` once made the edition and its ledger: the dry run was
    not asked."""
    result = newsroom.ok("send", "--enqueue", "--dry-run", env=smtp_env(smtp))
    assert result.stdout.startswith("Dry run: edition 1 would take 30 articles")
    assert "it would be queued for `digest worker`s" in result.stdout
    assert editions(tmp_path) == [] and ledger(tmp_path) == {} and smtp.received == []


def test_min_articles_holds_a_send_and_force_lifts_it(newsroom: Digest,
                                                      smtp: LoopbackSMTPServer,
                                                      tmp_path: Path) -> None:
    env = smtp_env(smtp, DIGEST_DIGEST__MIN_ARTICLES="31")
    held = ("30 new articles, fewer than min_articles 31; they carry over to the next "
            "edition (--force sends them now).\n")
    assert newsroom.ok("send", "--dry-run", env=env).stdout == held
    assert newsroom.ok("send", "--yes", env=env).stdout == held
    assert editions(tmp_path) == []
    dry = newsroom.ok("send", "--dry-run", "--force", env=env)
    assert dry.stdout.startswith("Dry run: edition 1 would take 30 articles")
    newsroom.ok("send", "--yes", "--force", env=env)
    assert editions(tmp_path) == [(1, "sent")] and len(smtp.received) == 20
