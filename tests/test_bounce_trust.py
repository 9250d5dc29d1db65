"""Only our own mail can take someone off the list: anyone can write to the bounce address
(it is in every message's Return-Path), so a report acts only when it is tied to a
delivery this store made (a valid VERP token, else a Message-ID we gave that recipient),
a mail to the unsubscribe address only for an authenticated sender or a reply to our
mail, never more than 10 recipients from one message, and the day a soft bounce counts
is the day it is read. Everything else is held for review and changes nobody.

Every test sends a real edition to a real SMTP server on 127.0.0.1 first (the Message-IDs
come off the wire) and feeds hostile .eml files to `digest bounces import` on a real
store; the mailbox path goes through a real Dovecot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.utils import format_datetime
from pathlib import Path

import pytest
from conftest import SAMPLE_JSON, Digest, smtp_env, sql
from mailservers import Dovecot, DovecotUser

from digest.mail.loopback import LoopbackSMTPServer
from digest.tokens import Verp

SECRET = "a-secret-for-the-bounce-trust-tests-0123456789"
UNSUBSCRIBE = "unsubscribe@news.example.org"
RETURN_PATH = "bounces+{token}@news.example.org"
PEOPLE = ("alice@example.net", "bob@example.net", "carol@example.net", "dave@example.net")


@pytest.fixture
def sent(digest: Digest, smtp: LoopbackSMTPServer) -> dict[str, str]:
    """Edition 1 sent to PEOPLE through a real SMTP server, without VERP: each person's
    Message-ID as it went over the wire."""
    return _send(digest, smtp, {})


def _send(digest: Digest, smtp: LoopbackSMTPServer, extra: dict[str, str]) -> dict[str, str]:
    for email in PEOPLE:
        digest.ok("subscribers", "add", email)
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("send", "--yes", env=smtp_env(smtp, **env(), **extra))
    ids = {}
    for item in smtp.received:
        [rcpt] = item.recipients
        ids[rcpt] = str(message_from_bytes(item.data)["Message-ID"]).strip()
    assert sorted(ids) == sorted(PEOPLE)
    return ids


def env(**extra: str) -> dict[str, str]:
    return {"DIGEST_SECRET_KEY": SECRET, "DIGEST_DIGEST__UNSUBSCRIBE_MAILTO": UNSUBSCRIBE,
            **extra}


def people(digest: Digest) -> dict[str, tuple[str, int]]:
    return {str(e): (str(s), int(b)) for e, s, b in sql(
        digest.folder, "select email, status, bounce_score from subscribers")}


def changed(digest: Digest, before: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    return {email: now for email, now in people(digest).items() if before.get(email) != now}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_bytes(text.replace("\n", "\r\n").encode())
    return path


def dsn(recipients: list[str], *, status: str = "5.1.1", to: str = "bounces@news.example.org",
        quoted_id: str = "", date: str = "Thu, 26 Nov 2026 10:00:00 +0000",
        report_id: str = "<dsn-1@mx.example.net>", diagnostic: str = "User unknown") -> str:
    """An RFC 3464 report, one block per recipient, the returned headers quoting
    quoted_id when given."""
    blocks = "".join(f"\nFinal-Recipient: rfc822; {r}\nAction: failed\nStatus: {status}\n"
                     f"Diagnostic-Code: smtp; 550 {status} <{r}>: {diagnostic}\n"
                     for r in recipients)
    headers = ("\n--B\nContent-Type: text/rfc822-headers\n\n"
               f"Message-ID: {quoted_id}\nFrom: news@news.example.org\n"
               f"To: {recipients[0]}\nSubject: The digest\n") if quoted_id else ""
    return (f"From: MAILER-DAEMON@mx.example.net\nTo: {to}\nDate: {date}\n"
            f"Message-ID: {report_id}\nSubject: Undelivered Mail Returned to Sender\n"
            "MIME-Version: 1.0\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
            "--B\nContent-Type: text/plain\n\nThe mail could not be delivered.\n\n"
            "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n"
            f"{blocks}{headers}\n--B--\n")


def arf(recipients: list[str], *, quoted_id: str = "") -> str:
    """A feedback report with Original-Rcpt-To lines and no Feedback-Type."""
    lines = "".join(f"Original-Rcpt-To: {r}\n" for r in recipients)
    headers = (f"\n--B\nContent-Type: text/rfc822-headers\n\nMessage-ID: {quoted_id}\n"
               f"From: news@news.example.org\nTo: {recipients[0]}\n") if quoted_id else ""
    return ("From: fbl@isp.example\nTo: bounces@news.example.org\n"
            "Message-ID: <arf-1@isp.example>\nSubject: complaint\nMIME-Version: 1.0\n"
            "Content-Type: multipart/report; report-type=feedback-report; boundary=B\n\n"
            "--B\nContent-Type: text/plain\n\nA complaint.\n\n"
            f"--B\nContent-Type: message/feedback-report\n\nUser-Agent: fbl/1\nVersion: 1\n"
            f"{lines}{headers}\n--B--\n")


def text_bounce(recipient: str) -> str:
    return ("From: MAILER-DAEMON@mx.example.net\nTo: bounces@news.example.org\n"
            "Message-ID: <text-1@mx.example.net>\nSubject: Undelivered mail\n\n"
            "This is the mail system at host mx.example.net.\n\n"
            "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients.\n\n"
            f"<{recipient}>: 550 5.1.1 User unknown\n")


def unsubscribe_mail(sender: str, *, headers: str = "",
                     message_id: str = "<u-1@example.net>") -> str:
    return (f"{headers}From: {sender}\nTo: {UNSUBSCRIBE}\nMessage-ID: {message_id}\n"
            "Subject: unsubscribe\n\nunsubscribe\n")


def import_(digest: Digest, *paths: Path, **extra: str) -> str:
    result = digest.ok("bounces", "import", *map(str, paths), env=env(**extra))
    return result.output


def held(digest: Digest) -> list[dict[str, str]]:
    rows = json.loads(digest.ok("bounces", "review", "--format", "json", env=env()).stdout)
    return sorted(rows, key=lambda r: r["id"])


# ---------------------------------------------------------------------------------------
# Without VERP: a report acts only when it quotes a Message-ID we gave that recipient.

def test_each_forged_report_is_held_and_changes_nobody(
        digest: Digest, sent: dict[str, str], tmp_path: Path) -> None:
    before = people(digest)
    files = [write(tmp_path, "alice.eml", dsn(["alice@example.net"])),
             write(tmp_path, "bob.eml", arf(["bob@example.net"])),
             write(tmp_path, "carol.eml", text_bounce("carol@example.net")),
             write(tmp_path, "dave.eml", unsubscribe_mail("dave@example.net"))]
    output = import_(digest, *files)
    assert "4 held for review" in output
    assert changed(digest, before) == {}
    assert sql(digest.folder, "select count(*) from suppressions") == [(0,)]
    assert sql(digest.folder, "select count(*) from bounce_events") == [(0,)]
    rows = held(digest)
    assert [(r["source"].rsplit("/", 1)[-1], r["claims"]) for r in rows] == [
        ("alice.eml", "hard: alice@example.net"), ("bob.eml", "complaint: bob@example.net"),
        ("carol.eml", "hard: carol@example.net"), ("dave.eml", "unsubscribe dave@example.net")]
    assert rows[0]["held_because"] == "quotes no Message-ID of mail this store sent"
    assert rows[3]["held_because"].startswith("its sender is neither authenticated")
    # Read again (a mailbox re-read): held once.
    import_(digest, *files)
    assert len(held(digest)) == 4
    # An editor dismisses one and applies another.
    digest.ok("bounces", "review", "--dismiss", str(rows[0]["id"]), env=env())
    digest.ok("bounces", "review", "--apply", str(rows[2]["id"]), env=env())
    assert changed(digest, before) == {"carol@example.net": ("bounced", 0)}
    assert [r["claims"] for r in held(digest)] == ["complaint: bob@example.net",
                                                  "unsubscribe dave@example.net"]
    again = digest("bounces", "review", "--apply", str(rows[0]["id"]), env=env())
    assert again.exit_code == 1 and again.output == (
        f"Error: held report {rows[0]['id']} was dismissed already (dismissed)\n")
    missing = digest("bounces", "review", "--apply", "999", env=env())
    assert missing.exit_code == 1 and missing.output == (
        "Error: no held report 999; see digest bounces review\n")


def test_a_report_quoting_our_message_id_acts_for_that_recipient_only(
        digest: Digest, sent: dict[str, str], tmp_path: Path) -> None:
    before = people(digest)
    # Alice's Message-ID, but the report names bob: held.
    wrong = write(tmp_path, "wrong.eml", dsn(["bob@example.net"],
                                             quoted_id=sent["alice@example.net"],
                                             report_id="<wrong@mx.example.net>"))
    # A Message-ID of the right shape that we never gave anyone: held.
    made_up = sent["alice@example.net"].replace("digest.1.", "digest.1.9")
    forged = write(tmp_path, "forged.eml", dsn(["alice@example.net"], quoted_id=made_up,
                                               report_id="<forged@mx.example.net>"))
    assert "2 held for review" in import_(digest, wrong, forged)
    assert changed(digest, before) == {}
    assert held(digest)[0]["held_because"] == (
        "names bob@example.net, to whom the mail it is about was not sent")
    # The genuine report about alice's message: alice bounced, nobody else.
    real = write(tmp_path, "real.eml", dsn(["alice@example.net"],
                                           quoted_id=sent["alice@example.net"]))
    import_(digest, real)
    assert changed(digest, before) == {"alice@example.net": ("bounced", 0)}
    # An ARF quoting bob's Message-ID unsubscribes bob.
    import_(digest, write(tmp_path, "arf.eml", arf(["bob@example.net"],
                                                   quoted_id=sent["bob@example.net"])))
    assert changed(digest, before)["bob@example.net"] == ("unsubscribed", 0)


def test_a_message_naming_500_recipients_changes_nobody(
        digest: Digest, sent: dict[str, str], tmp_path: Path) -> None:
    crowd = [f"reader{i:03d}@example.org" for i in range(500)]
    (tmp_path / "crowd.csv").write_text("email\n" + "\n".join(crowd) + "\n")
    digest.ok("subscribers", "import", str(tmp_path / "crowd.csv"))
    before = people(digest)
    # Even quoting a real Message-ID of ours (alice's), with alice among the recipients.
    big_dsn = write(tmp_path, "big.eml", dsn(["alice@example.net", *crowd[:249]],
                                             quoted_id=sent["alice@example.net"]))
    big_arf = write(tmp_path, "big-arf.eml", arf(["alice@example.net", *crowd[249:]],
                                                 quoted_id=sent["alice@example.net"]))
    assert 15_000 < big_dsn.stat().st_size < 40_000 and big_arf.stat().st_size > 9_000
    assert "2 held for review" in import_(digest, big_dsn, big_arf)
    assert changed(digest, before) == {}
    assert sql(digest.folder, "select count(*) from suppressions") == [(0,)]
    rows = held(digest)
    assert [r["held_because"] for r in rows] == [
        "names 250 recipients; at most 10 are acted on in one message",
        "names 252 recipients; at most 10 are acted on in one message"]
    assert rows[0]["claims"] == ("hard: alice@example.net, reader000@example.org, "
                                 "reader001@example.org, reader002@example.org, "
                                 "reader003@example.org and 245 more")


def test_back_dated_soft_bounces_count_one_point_a_day(
        digest: Digest, sent: dict[str, str], tmp_path: Path) -> None:
    assert digest.clock is not None
    now = digest.clock.now()
    files = [write(tmp_path, f"soft{n}.eml", dsn(
        ["alice@example.net"], status="4.2.2", quoted_id=sent["alice@example.net"],
        date=format_datetime(now - timedelta(days=n)), report_id=f"<soft{n}@mx.example.net>",
        diagnostic="Mailbox full"))
        for n in range(1, 6)]
    import_(digest, *files)
    assert people(digest)["alice@example.net"] == ("active", 1)
    assert len(sql(digest.folder, "select id from bounce_events")) == 5
    # The next day read: a second point; the report's own date does not matter.
    digest.clock.advance(days=1)
    import_(digest, write(tmp_path, "soft6.eml", dsn(
        ["alice@example.net"], status="4.2.2", quoted_id=sent["alice@example.net"],
        date=format_datetime(now - timedelta(days=30)), report_id="<soft6@mx.example.net>",
        diagnostic="Mailbox full")))
    assert people(digest)["alice@example.net"] == ("active", 2)


# ---------------------------------------------------------------------------------------
# Mail to the unsubscribe address.

def test_unsubscribe_mail_acts_for_an_authenticated_sender_or_a_reply_to_our_mail(
        digest: Digest, sent: dict[str, str], tmp_path: Path) -> None:
    before = people(digest)
    trusted = {"DIGEST_BOUNCES__AUTHSERV_ID": "mx.news.example.org"}

    def results(value: str) -> str:
        return f"Authentication-Results: {value}\n"

    forged = [
        # Another server's verdict (or one the sender wrote): not believed.
        unsubscribe_mail("dave@example.net", headers=results(
            "mx.evil.example; dkim=pass header.d=example.net; dmarc=pass "
            "header.from=example.net")),
        # Our server's, but the signature is another domain's.
        unsubscribe_mail("dave@example.net", message_id="<u-2@example.net>", headers=results(
            "mx.news.example.org; dkim=pass header.d=evil.example; dmarc=fail "
            "header.from=example.net")),
        # A reply, to someone else's message.
        unsubscribe_mail("dave@example.net", message_id="<u-3@example.net>",
                         headers=f"In-Reply-To: {sent['alice@example.net']}\n"),
        # The sender's own header under our server's id, below the one our server added
        # on top: only the topmost counts.
        unsubscribe_mail("dave@example.net", message_id="<u-7@example.net>", headers=results(
            "mx.news.example.org; dkim=none; dmarc=none header.from=example.net") + results(
            "mx.news.example.org; dkim=pass header.d=example.net")),
    ]
    files = [write(tmp_path, f"forged{n}.eml", text) for n, text in enumerate(forged)]
    assert "4 held for review" in import_(digest, *files, **trusted)
    # Without authserv_id, no server's word counts: the aligned verdict is held too.
    aligned = write(tmp_path, "aligned.eml", unsubscribe_mail(
        "carol@example.net", message_id="<u-4@example.net>", headers=results(
            "mx.news.example.org; dkim=pass (good signature) header.d=example.net")))
    assert "1 held for review" in import_(digest, aligned)
    assert changed(digest, before) == {}

    # Our server says dave's domain signed it (aligned): dave unsubscribed.
    dkim = write(tmp_path, "dkim.eml", unsubscribe_mail(
        "dave@example.net", message_id="<u-5@example.net>", headers=results(
            "mx.news.example.org; spf=none; dkim=pass header.d=example.net header.s=s1")))
    import_(digest, dkim, **trusted)
    # Bob replies to the edition we sent him: unsubscribed.
    reply = write(tmp_path, "reply.eml", unsubscribe_mail(
        "bob@example.net", message_id="<u-6@example.net>",
        headers=f"In-Reply-To: {sent['bob@example.net']}\n"))
    import_(digest, reply)
    assert changed(digest, before) == {"dave@example.net": ("unsubscribed", 0),
                                       "bob@example.net": ("unsubscribed", 0)}


# ---------------------------------------------------------------------------------------
# With VERP: a valid token for a delivery this store made, naming that subscriber.

@pytest.fixture
def sent_verp(digest: Digest, smtp: LoopbackSMTPServer) -> dict[str, str]:
    """Edition 1 sent with VERP: each person's return path as it went over the wire."""
    _send(digest, smtp, {"DIGEST_BOUNCES__RETURN_PATH": RETURN_PATH})
    return {item.recipients[0]: item.mail_from for item in smtp.received}


def test_with_verp_a_forged_or_foreign_token_changes_nobody(
        digest: Digest, sent_verp: dict[str, str], tmp_path: Path) -> None:
    verp_env = {"DIGEST_BOUNCES__RETURN_PATH": RETURN_PATH}
    before = people(digest)
    ids = {str(e): int(i) for e, i in sql(digest.folder, "select email, id from subscribers")}
    verp = Verp(SECRET.encode(), RETURN_PATH)
    reports = {
        # A token of the right shape with a made-up signature: falls back to nothing.
        "forged": dsn(["alice@example.net"], to="bounces+1-1-aaaaaaaaaaaaa@news.example.org"),
        # No token at all.
        "none": dsn(["bob@example.net"], report_id="<none@mx>"),
        # Carol's genuine token, the report naming alice.
        "other": dsn(["alice@example.net"], to=sent_verp["carol@example.net"],
                     report_id="<other@mx>"),
        # A validly signed token for an edition this store never sent.
        "unsent": dsn(["dave@example.net"], to=verp.address(ids["dave@example.net"], 99),
                      report_id="<unsent@mx>"),
    }
    files = [write(tmp_path, f"{name}.eml", text) for name, text in reports.items()]
    assert "4 held for review" in import_(digest, *files, **verp_env)
    assert changed(digest, before) == {}
    assert [r["held_because"] for r in held(digest)] == [
        "carries no valid VERP token of ours", "carries no valid VERP token of ours",
        "names alice@example.net, to whom the mail it is about was not sent",
        "its VERP token names a delivery this store did not send"]
    # Carol's genuine token on a report naming carol: carol bounced, nobody else.
    import_(digest, write(tmp_path, "carol.eml", dsn(
        ["carol@example.net"], to=sent_verp["carol@example.net"], report_id="<carol@mx>")),
        **verp_env)
    assert changed(digest, before) == {"carol@example.net": ("bounced", 0)}


# ---------------------------------------------------------------------------------------
# The bounce mailbox, through a real Dovecot.

@pytest.fixture
def inbox(dovecot: Dovecot) -> Iterator[DovecotUser]:
    yield dovecot.add_user()


def test_forged_reports_fetched_from_the_mailbox_are_held(
        digest: Digest, sent: dict[str, str], inbox: DovecotUser) -> None:
    before = people(digest)
    for text in (dsn(["alice@example.net"]), arf(["bob@example.net"]),
                 text_bounce("carol@example.net"), unsubscribe_mail("dave@example.net"),
                 dsn(["carol@example.net"], quoted_id=sent["carol@example.net"],
                     report_id="<genuine@mx>")):
        inbox.deliver(text.replace("\n", "\r\n").encode())
    result = digest.ok("bounces", "fetch", env={**env(), **inbox.env()})
    assert "4 held for review" in result.output
    assert changed(digest, before) == {"carol@example.net": ("bounced", 0)}
    assert inbox.messages() == []              # held ones leave the mailbox too
    assert len(held(digest)) == 4


def test_erasing_a_person_deletes_the_held_reports_naming_them(
        digest: Digest, sent: dict[str, str], tmp_path: Path) -> None:
    import_(digest, write(tmp_path, "alice.eml", dsn(["alice@example.net"])),
            write(tmp_path, "dave.eml", unsubscribe_mail("Dave@Example.net")))
    assert len(held(digest)) == 2
    digest.ok("subscribers", "erase", "alice@example.net", "--yes", env=env())
    digest.ok("subscribers", "erase", "dave@example.net", "--yes", env=env())
    assert held(digest) == []
    assert sql(digest.folder, "select count(*) from held_reports") == [(0,)]


def test_an_authserv_id_that_is_no_host_name_is_one_line(digest: Digest) -> None:
    result = digest("bounces", "review", env=env(DIGEST_BOUNCES__AUTHSERV_ID="mx; dkim=pass"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1
    assert "[bounces] authserv_id 'mx; dkim=pass' is not a host name" in result.output
