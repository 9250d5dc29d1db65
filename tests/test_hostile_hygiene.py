"""Hostile tests of list hygiene: paths around the suppression list, forged reports,
broken input and erasure."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SAMPLE_JSON, Digest, smtp_env, sql
from mailservers import Dovecot
from test_webhooks import (  # noqa: F401
    Hooks,
    body,
    fake_sns,
    hooks,
    mailgun_payload,
    rsa_key,
    sample,
    sns_notification,
)

from digest.audience.bounces import BounceDesk
from digest.audience.findings import Finding, Reading
from digest.audience.outbox import drain_outbox
from digest.audience.subscribers import SubscriberBook
from digest.audience.suppressions import SuppressionBook
from digest.config import Settings, load_settings
from digest.mail.loopback import LoopbackSMTPServer
from digest.store.db import Store
from digest.store.models import BounceKind
from digest.tokens import Verp

SECRET = "a-test-secret-that-is-long-enough-0123456789"


def test_a_broken_mailgun_request_cannot_free_a_token_someone_else_used(
        hooks: Hooks) -> None:  # noqa: F811
    """A request that makes the view raise (a lone surrogate in the signature) must not
    forget the claim another, verified request made of that token: else the token's
    signature can be sent again with another event in the body (Mailgun signs only the
    timestamp and the token)."""
    good = mailgun_payload("mailgun-failed-permanent.json")
    assert hooks.client.post("/webhooks/mailgun", data=body(good)).status_code == 200
    broken = json.dumps({"signature": dict(good["signature"], signature="\ud800"),
                         "event-data": {}}).encode()
    hooks.client.post("/webhooks/mailgun", data=broken)
    altered = good | {"event-data": sample("mailgun-complained.json")}
    assert hooks.client.post("/webhooks/mailgun", data=body(altered)).status_code == 403
    assert hooks.status("recipient@example.com") == "active"


def test_an_edition_nobody_received_can_be_discarded_after_a_5xx(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    """Every recipient refused at RCPT TO: nobody received the edition, so discard is
    allowed; the bounce events of the session (which name the edition) must not turn
    it into a traceback."""
    digest.ok("subscribers", "add", "gone@example.org")
    smtp.reply_policy = lambda phase, mail_from, rcpt: (
        "550 5.1.1 user unknown" if phase == "RCPT" else None)
    digest.ok("articles", "import", str(SAMPLE_JSON))
    assert digest("send", "--yes", env=smtp_env(smtp)).exit_code == 1  # its only one
    assert sql(digest.folder, "select count(*) from bounce_events") == [(1,)]
    result = digest("editions", "discard", "1")
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output


def _settings(digest: Digest, **env: str) -> Settings:
    return load_settings(digest.folder / "digest.toml",
                         environ={"DIGEST_SECRET_KEY": SECRET, **env})


def test_a_confirmation_waiting_in_the_outbox_is_not_sent_once_the_address_is_suppressed(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    """Sign-up queues a confirmation; before the outbox sends it (the server was down, a
    retry is due later), the operator suppresses the address. It must not be mailed."""
    settings = _settings(digest, **smtp_env(smtp))
    store = Store.from_settings(settings)
    try:
        book = SubscriberBook(store, settings)

        def mail(sub: Any) -> tuple[str, bytes]:
            return "digest@example.org", (f"To: {sub.email}\r\nSubject: confirm\r\n\r\n"
                                          f"link\r\n").encode()

        book.sign_up("boss@example.org", "", [], mail)
        SuppressionBook(store, settings).add("boss@example.org")
        drain_outbox(store, settings)
    finally:
        store.close()
    assert [m.recipients for m in smtp.received] == []


def _desk(digest: Digest, **env: str) -> tuple[BounceDesk, Store]:
    settings = _settings(digest, **env)
    store = Store.from_settings(settings)
    return BounceDesk(store, settings), store


def _soft(report: str, when: datetime) -> Reading:
    return Reading(report, [Finding(report, "full@example.org", BounceKind.SOFT, "4.2.2",
                                    "mailbox full", report_id=report, occurred_at=when)])


@pytest.mark.both_backends
def test_soft_bounces_read_on_one_day_score_one_point_whatever_dates_they_carry(
        digest: Digest) -> None:
    """The day a soft bounce counts on is the day it is read: reports dated Monday,
    Wednesday and Monday again, all read on Thursday, are one point (their dates are the
    sender's word); one more read on Friday is the second."""
    digest.ok("subscribers", "add", "full@example.org")
    desk, store = _desk(digest)
    monday = datetime(2026, 11, 2, 9, tzinfo=UTC)
    thursday = monday + timedelta(days=3)
    try:
        for report, when in (("a", monday), ("b", monday + timedelta(days=2)),
                             ("c", monday + timedelta(hours=3))):
            desk.apply(_soft(report, when), now=thursday)
        assert sql(digest.folder, "select bounce_score from subscribers") == [(1,)]
        desk.apply(_soft("d", monday), now=thursday + timedelta(days=1))
    finally:
        store.close()
    assert sql(digest.folder, "select bounce_score from subscribers") == [(2,)]


def test_a_failure_after_retry_failed_is_a_new_bounce_event(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    """`send --retry-failed` resets the attempts, and the session bounce's fingerprint is
    built from the delivery and its attempts: the second refusal (now "user unknown")
    must still be recorded and bounce the subscriber, not be taken for the first one."""
    digest.ok("subscribers", "add", "moved@example.org")
    replies = {"RCPT": "552 5.2.2 mailbox full"}
    smtp.reply_policy = lambda phase, mail_from, rcpt: replies.get(phase)
    digest.ok("articles", "import", str(SAMPLE_JSON))
    assert digest("send", "--yes", env=smtp_env(smtp)).exit_code == 1  # its only one
    assert sql(digest.folder, "select status, bounce_score from subscribers") == [("active", 1)]
    replies["RCPT"] = "550 5.1.1 user unknown"
    assert digest("send", "--edition", "1", "--retry-failed", env=smtp_env(smtp)).exit_code == 1
    assert sql(digest.folder, "select kind from bounce_events order by id") == [
        ("soft",), ("hard",)]
    assert sql(digest.folder, "select status from subscribers") == [("bounced",)]


def _dsn(to: str, recipient: str, message_id: str) -> str:
    return (f"From: MAILER-DAEMON@mx.example.net\nTo: {to}\n"
            f"Subject: Undelivered Mail Returned to Sender\nMessage-ID: <{message_id}>\n"
            f"Date: Mon, 02 Nov 2026 09:00:00 +0000\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n"
            f"--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
            f"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
            f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: 5.1.1\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 user unknown\n\n--B--\n")


def test_a_bounce_whose_verp_token_names_no_edition_of_this_store_stops_nothing(
        digest: Digest, tmp_path: Path) -> None:
    """A signed VERP token for an edition this store does not hold (a store restored
    from an older backup, a second store with the same secret) must not make `bounces
    import` end in a traceback, nor keep the next message from being read."""
    for name in ("ada", "bob"):
        digest.ok("subscribers", "add", f"{name}@example.org")
    verp = Verp(SECRET.encode(), "bounces+{token}@example.org")
    folder = tmp_path / "bounces"
    folder.mkdir()
    (folder / "1.eml").write_text(_dsn(verp.address(1, 999), "ada@example.org", "m1@x"))
    (folder / "2.eml").write_text(_dsn("bounces@example.org", "bob@example.org", "m2@x"))
    env = {"DIGEST_SECRET_KEY": SECRET,
           "DIGEST_BOUNCES__RETURN_PATH": "bounces+{token}@example.org"}
    result = digest("bounces", "import", str(folder), env=env)
    assert "Traceback" not in result.output
    # Both read: the first names an edition never sent, the second has no token at all,
    # so each is held for review and nobody changes.
    assert "2 held for review" in result.output
    assert sql(digest.folder, "select held_because from held_reports order by id") == [
        ("its VERP token names a delivery this store did not send",),
        ("carries no valid VERP token of ours",)]
    assert sql(digest.folder, "select distinct status from subscribers") == [("active",)]


@pytest.mark.slow
def test_erase_says_so_when_a_copy_is_left_in_the_sqlite_file(digest: Digest) -> None:
    """Another connection in the middle of a read (a `digest serve` request, a backup, a
    long export) keeps the checkpoint from copying the vacuumed pages into the file:
    erase then reports success while the name and address are still in digest.db.
    Either the file is clean when erase says so, or erase says it is not. (Slow: the
    store's busy timeout is waited out twice.)"""
    url = load_settings(digest.folder / "digest.toml", environ={}).store_url
    if not url.startswith("sqlite"):
        pytest.skip("SQLite only")
    digest.ok("subscribers", "add", "wilhelmina@example.org", "--name", "Wilhelmina Zzyzx")
    reader = sqlite3.connect(digest.folder / "digest.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM subscribers").fetchall()
        result = digest("subscribers", "erase", "wilhelmina@example.org", "--yes")
        left = [p.name for p in digest.folder.glob("digest.db*")
                if b"Zzyzx" in p.read_bytes() or b"wilhelmina@" in p.read_bytes()]
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert left == [] or result.exit_code != 0, (left, result.output)


@pytest.mark.parametrize("command", ["suppressions", "subscribers"])
def test_an_unclosed_quote_in_a_big_csv_is_one_line_not_a_traceback(
        digest: Digest, tmp_path: Path, command: str) -> None:
    """A quote left open on line 2 of a long file makes the cell swallow the rest of
    the file; past 128 KiB the csv module raises csv.Error, which must become one line
    and exit 1 like every other bad row."""
    rows = ["email,name", 'q1@example.org,"Ada Lovelace']
    rows += [f"r{i}@example.org,Reader {i}" for i in range(6000)]
    path = tmp_path / "people.csv"
    path.write_text("\n".join(rows) + "\n")
    result = digest(command, "import", str(path))
    assert result.exit_code == 1
    assert "Traceback" not in result.output


def test_an_unsubscribe_mail_from_an_idn_address_in_unicode_unsubscribes_it(
        digest: Digest, tmp_path: Path) -> None:
    """The subscriber was stored with the domain in ASCII (xn--); their mail client
    writes it in Unicode in From, and the receiving server names the signing domain in
    ASCII. Their request to stop must still be honoured."""
    digest.ok("subscribers", "add", "ada@bücher.de")
    mail = tmp_path / "unsubscribe.eml"
    mail.write_bytes("Authentication-Results: mx.example.org; dkim=pass "
                     "header.d=xn--bcher-kva.de\n"
                     "From: Ada <ada@bücher.de>\nTo: unsubscribe@example.org\n"
                     "Subject: unsubscribe\nMessage-ID: <u1@example.net>\n\n"
                     "unsubscribe\n".encode())
    digest.ok("bounces", "import", str(mail),
              env={"DIGEST_DIGEST__UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
                   "DIGEST_BOUNCES__AUTHSERV_ID": "mx.example.org"})
    assert sql(digest.folder, "select status from subscribers") == [("unsubscribed",)]


@pytest.mark.both_backends
def test_a_report_without_message_id_read_from_imap_and_from_a_file_counts_once(
        digest: Digest) -> None:
    """A bounce without a Message-ID (not every MTA adds one) is known by the hash of its
    bytes; the same report as IMAP hands it over (CRLF) and as a Maildir file holds it
    (LF) is still one report: held for review once (it quotes no Message-ID of ours),
    and once applied, one event."""
    digest.ok("subscribers", "add", "full@example.org")
    desk, store = _desk(digest)
    report = _dsn("bounces@example.org", "full@example.org", "x").replace(
        "Message-ID: <x>\n", "").replace("Status: 5.1.1", "Status: 4.2.2").replace(
        "550 5.1.1 user unknown", "452 4.2.2 mailbox full")
    try:
        for raw in (report.encode(), report.replace("\n", "\r\n").encode()):
            desk.apply(desk.read(raw, "somewhere"))
        [(held,)] = sql(digest.folder, "select id from held_reports")
        desk.apply_held(int(held))
    finally:
        store.close()
    assert sql(digest.folder, "select count(*) from bounce_events") == [(1,)]


def test_a_provider_list_imported_after_an_erasure_does_not_bring_the_address_back(
        digest: Digest, tmp_path: Path) -> None:
    """The erased address is on the list as a keyed hash, so that it is never stored
    again by mistake. A provider's suppression list imported later (it still names the
    person) finds it suppressed already: the address must not return in clear text."""
    digest.ok("subscribers", "add", "erin@example.org", "--name", "Erin")
    digest.ok("subscribers", "erase", "erin@example.org", "--yes")
    provider = tmp_path / "provider.csv"
    provider.write_text("email,reason\nerin@example.org,hard-bounced\n"
                        "other@example.org,hard-bounced\n")
    digest.ok("suppressions", "import", str(provider))
    keys = [key for (key,) in sql(digest.folder, "select email_key from suppressions")]
    assert "erin@example.org" not in keys
    assert "other@example.org" in keys


def test_a_strangers_sign_up_does_not_rewrite_the_consent_of_someone_who_left(
        digest: Digest) -> None:
    """Ada consented (cli) and later unsubscribed. A stranger types her address into the
    sign-up form: she gets a confirmation, but until she confirms, her consent record
    (source, time, client address) must stay what she gave, not the stranger's."""
    digest.ok("subscribers", "add", "ada@example.org")
    digest.ok("subscribers", "unsubscribe", "ada@example.org")
    before = sql(digest.folder, "select consent_source, consent_at, consent_ip "
                                "from subscribers")
    settings = _settings(digest)
    store = Store.from_settings(settings)
    try:
        SubscriberBook(store, settings).sign_up(
            "ada@example.org", "", [], lambda sub: ("digest@example.org", b"x"),
            client="203.0.113.9")
    finally:
        store.close()
    assert sql(digest.folder, "select status from subscribers") == [("unsubscribed",)]
    assert sql(digest.folder, "select consent_source, consent_at, consent_ip "
                              "from subscribers") == before


def test_an_sns_message_with_a_lone_surrogate_is_refused_not_a_500(
        hooks: Hooks) -> None:  # noqa: F811
    """Anyone may POST to /webhooks/ses; a \\ud800 escape in a signed field (valid JSON)
    made building the canonical string raise: a 500 and a traceback in the log for an
    unauthenticated request. It is a request that does not verify (403) or is malformed
    (400)."""
    message = sns_notification("ses-bounce-with-dsn.json", hooks.sns.key)
    message["Message"] = "\ud800"
    answer = hooks.client.post("/webhooks/ses", data=json.dumps(message).encode())
    assert answer.status_code in (400, 403)


def test_a_test_copy_is_not_sent_to_a_suppressed_address(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    """`send --to` mails whatever address it is given, even one that complained (with
    their real unsubscribe and preferences links). The suppression list is the list of
    addresses never mailed: a test copy to one is refused with the reason."""
    digest.ok("subscribers", "add", "angry@example.org")
    digest.ok("suppressions", "add", "angry@example.org", "--reason", "complained")
    digest.ok("articles", "import", str(SAMPLE_JSON))
    result = digest("send", "--to", "Angry@example.org", env=smtp_env(smtp))
    assert smtp.received == []
    assert result.exit_code == 1 and "suppression list" in result.output


def test_a_bounce_piped_to_dev_stdin_is_read_whole_or_refused(digest: Digest) -> None:
    """An MTA alias that pipes each bounce into `digest bounces import /dev/stdin` is the
    usual way to hook a bounce processor up. The file is sniffed (its first 5 bytes) and
    then read again, and a pipe cannot be read twice: the message loses its first bytes
    and is silently counted as no bounce. It is read whole, or refused with one line."""
    digest.ok("subscribers", "add", "bob@example.org")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "digest", "bounces", "import", "/dev/stdin"],
                          cwd=digest.folder, env=env, capture_output=True, text=True,
                          input=_dsn("bounces@example.org", "bob@example.org", "p1@x"),
                          timeout=120)
    # Read whole, it is a hard bounce for bob (held for review: no Message-ID of ours).
    read = sql(digest.folder, "select summary from held_reports") == [
        ("hard: bob@example.org",)]
    assert read or done.returncode == 1, done.stdout + done.stderr


def test_fetch_of_an_empty_mailbox_does_not_ask_for_a_maildir(
        digest: Digest, dovecot: Dovecot) -> None:
    """`bounces fetch` with nothing (new) in the mailbox printed import's hint "No
    messages found (give a Maildir with cur/ new/ tmp/, an mbox file, …)"."""
    result = digest.ok("bounces", "fetch", env=dovecot.add_user().env("imap"))
    assert "Maildir" not in result.output and "mbox" not in result.output


@pytest.mark.both_backends
def test_two_sign_ups_of_one_new_address_at_once_both_get_their_answer(
        digest: Digest) -> None:
    """A double click on the sign-up form: two requests for the same new address at
    once. On PostgreSQL both read "no such subscriber" and one insert fails on the
    unique email_key (a 500 page). Each request gets its answer. (SQLite serialises the
    writes and passes.)"""
    settings = _settings(digest)
    store = Store.from_settings(settings)
    errors: list[str] = []
    try:
        book = SubscriberBook(store, settings)
        for round_ in range(10):
            barrier = threading.Barrier(4)

            def sign_up(n: int = round_, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                try:
                    book.sign_up(f"twice{n}@example.org", "", [],
                                 lambda sub: ("digest@example.org", b"x"))
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:100]}")

            threads = [threading.Thread(target=sign_up) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        store.close()
    assert errors == []
    assert sql(digest.folder, "select count(*) from subscribers") == [(10,)]
