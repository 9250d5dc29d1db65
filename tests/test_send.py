"""Sending through a real SMTP server on 127.0.0.1: the ledger, replies, crashes."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from conftest import SAMPLE_JSON, Digest, run_digest, smtp_env, sql, write_subscribers

from digest.loopback import DROP, LoopbackSMTPServer

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
    from digest.loopback import free_port
    port = free_port()
    result = newsroom("send", "--yes", env={"DIGEST_SMTP__PORT": str(port)})
    assert result.exit_code == 1
    assert result.output == (f"Error: cannot reach the SMTP server at 127.0.0.1:{port} "
                             f"(Connection refused); check [smtp] host, port and security, "
                             f"and that the server is running\n")
    assert editions(tmp_path) == [] and ledger(tmp_path) == {}


def test_451_is_deferred_then_sent_by_retry(newsroom: Digest, smtp: LoopbackSMTPServer,
                                            tmp_path: Path) -> None:
    seen: set[str] = set()

    def greylist(phase: str, _from: str, rcpt: str) -> str | None:
        if phase == "RCPT" and rcpt.startswith("reader0000") and rcpt not in seen:
            seen.add(rcpt)
            return "451 4.7.1 Greylisted, try again later"
        return None

    smtp.reply_policy = greylist
    newsroom.ok("send", "--yes", env=smtp_env(smtp))
    assert ledger(tmp_path) == {"sent": 10, "deferred": 10}
    assert editions(tmp_path) == [(1, "sent")]
    shown = newsroom.ok("editions", "show", "1").stdout
    assert "deferred reader00000@example.org: 451 4.7.1 Greylisted, try again later" in shown
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
    gap = (retry_at.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
    assert attempts == 1 and 3500 < gap <= 3600
    newsroom.ok("send", "--retry", env=env)
    assert ledger(tmp_path) == {"sent": 19, "deferred": 1}   # not due yet


def test_550_fails_that_recipient_and_bounces(newsroom: Digest, smtp: LoopbackSMTPServer,
                                              tmp_path: Path) -> None:
    smtp.reply_policy = lambda phase, _f, rcpt: "550 5.1.1 No such user" if (
        phase == "RCPT" and rcpt in ("reader00002@example.org", "reader00007@example.org")
    ) else None
    newsroom.ok("send", "--yes", env=smtp_env(smtp, DIGEST_DIGEST__BOUNCE_THRESHOLD="1"))
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
