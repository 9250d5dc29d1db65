"""List hygiene: what bounces, complaints and unsubscribes do, the suppression list, the
consent record and erasure (GDPR), through the CLI and a real store on either backend."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import HTTP_TIMEOUT, NOW, SAMPLE_JSON, Digest, smtp_env, sql
from mailservers import free_port
from test_web import a_site, csrf_form, sign_up

from digest.audience.bounces import BounceDesk
from digest.audience.findings import Finding, Reading
from digest.config import load_settings
from digest.delivery.sender import session_bounce
from digest.mail.loopback import LoopbackSMTPServer
from digest.store.bounces import NewEvent
from digest.store.db import Store
from digest.store.ledger import Claim
from digest.store.models import BounceKind
from digest.tokens import Signer, Verp

SECRET = "a-test-secret-that-is-long-enough-0123456789"


_stores: list[Store] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _stores:
        _stores.pop().close()


def desk(digest: Digest, **env: str) -> BounceDesk:
    settings = load_settings(digest.folder / "digest.toml",
                             environ={"DIGEST_SECRET_KEY": SECRET, **env})
    store = Store.from_settings(settings)
    _stores.append(store)
    return BounceDesk(store, settings)


def status(digest: Digest, email: str) -> tuple[str, int]:
    [(value, score)] = sql(digest.folder, "select status, bounce_score from subscribers "
                                          f"where email_key = '{email.lower()}'")
    return value, score


def suppressed(digest: Digest) -> dict[str, str]:
    return dict(sql(digest.folder, "select email_key, reason from suppressions"))


def finding(kind: BounceKind, recipient: str, report: str, when: datetime | None = None,
            status: str | None = None) -> Reading:
    return Reading(report, [Finding(report, recipient, kind, status, "test", report_id=report,
                                    occurred_at=when)])


@pytest.mark.both_backends
def test_each_kind_does_what_it_says_and_a_report_counts_once(digest: Digest) -> None:
    for name in ("hard", "complainer", "vacation", "soft"):
        digest.ok("subscribers", "add", f"{name}@example.org")
    d = desk(digest)
    d.apply(finding(BounceKind.HARD, "HARD@example.org", "r1", status="5.1.1"))
    d.apply(finding(BounceKind.COMPLAINT, "complainer@example.org", "r2"))
    d.apply(finding(BounceKind.AUTO_REPLY, "vacation@example.org", "r3"))
    soft = d.apply(finding(BounceKind.SOFT, "soft@example.org", "r4", status="4.2.2"))
    assert [r.effect for r in soft.resolved] == ["score 1/5"]
    assert status(digest, "hard@example.org") == ("bounced", 0)
    assert status(digest, "complainer@example.org") == ("unsubscribed", 0)
    assert status(digest, "vacation@example.org") == ("active", 0)
    assert status(digest, "soft@example.org") == ("active", 1)
    assert suppressed(digest) == {"hard@example.org": "hard-bounced",
                                  "complainer@example.org": "complained"}
    # The same reports read again (a mailbox re-read, a webhook retried): nothing new.
    again = d.apply(finding(BounceKind.SOFT, "soft@example.org", "r4", status="4.2.2"))
    assert [r.effect for r in again.resolved] == ["recorded before"]
    assert sql(digest.folder, "select count(*) from bounce_events") == [(4,)]
    stranger = d.apply(finding(BounceKind.HARD, "stranger@example.org", "r5"))
    assert [r.effect for r in stranger.resolved] == ["not on the list"]
    assert sql(digest.folder, "select count(*) from bounce_events") == [(4,)]


@pytest.mark.both_backends
def test_soft_bounces_score_a_point_a_day_decay_and_bounce_at_the_threshold(
        digest: Digest) -> None:
    digest.ok("subscribers", "add", "full@example.org")
    d = desk(digest, DIGEST_BOUNCES__SCORE_THRESHOLD="3", DIGEST_BOUNCES__SCORE_RESET_DAYS="7")
    day = datetime(2026, 11, 2, 9, tzinfo=UTC)

    def soft(n: int, when: datetime) -> str:
        # The day that counts is the day the report is read (now), not its own date.
        out = d.apply(finding(BounceKind.SOFT, "full@example.org", f"s{n}", when, "4.2.2"),
                      now=when)
        return out.resolved[0].effect

    assert soft(1, day) == "score 1/3"
    assert soft(2, day + timedelta(hours=5)) == "score 1/3"       # the same day: no point
    assert soft(3, day + timedelta(days=1)) == "score 2/3"
    # Eight days without a bounce: the score is forgotten, and starts again.
    assert soft(4, day + timedelta(days=9)) == "score 1/3"
    assert soft(5, day + timedelta(days=10)) == "score 2/3"
    assert status(digest, "full@example.org") == ("active", 2)
    assert soft(6, day + timedelta(days=11)) == "bounced"
    assert status(digest, "full@example.org") == ("bounced", 3)
    assert suppressed(digest) == {"full@example.org": "bounced"}


def test_a_suppressed_address_never_gets_a_delivery_row(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    for name in ("ada", "boss", "grace"):
        digest.ok("subscribers", "add", f"{name}@example.org")
    digest.ok("suppressions", "add", "BOSS@example.org")
    assert "boss@example.org" in digest.ok("suppressions", "list").stdout
    listed = digest.ok("subscribers", "list").stdout
    assert re.search(r"boss@example\.org\s*│\s*│ suppressed", listed), listed
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("send", "--yes", env=smtp_env(smtp))
    assert sorted(m.recipients[0] for m in smtp.received) == ["ada@example.org",
                                                              "grace@example.org"]
    assert sql(digest.folder, "select s.email from deliveries d join subscribers s "
                              "on s.id = d.subscriber_id order by s.email") == [
        ("ada@example.org",), ("grace@example.org",)]


def test_add_and_import_refuse_a_suppressed_address_with_its_reason(
        digest: Digest, tmp_path: Path) -> None:
    digest.ok("subscribers", "add", "angry@example.org")
    desk(digest).apply(finding(BounceKind.COMPLAINT, "angry@example.org", "arf-1"))
    digest.ok("subscribers", "erase", "angry@example.org", "--yes")
    for args in (("subscribers", "add", "angry@example.org"),
                 ("subscribers", "add", "angry@example.org", "--force")):
        result = digest(*args)
        assert result.exit_code == 1
        assert result.output == ("Error: angry@example.org is on the suppression list: it "
                                 "was erased at their request; add it again only after an "
                                 "operator lifts it: digest suppressions remove "
                                 "angry@example.org\n")
    digest.ok("suppressions", "add", "nope@example.org")
    (tmp_path / "people.csv").write_text("email,name\nnope@example.org,No\nok@example.org,Ok\n")
    result = digest("subscribers", "import", str(tmp_path / "people.csv"))
    assert "people.csv:2: nope@example.org is on the suppression list: it was suppressed " \
           "by an operator" in result.output
    assert [r[0] for r in sql(digest.folder, "select email from subscribers "
                                             "where status = 'active'")] == ["ok@example.org"]
    # Someone who unsubscribed: the operator may bring them back with their consent.
    digest.ok("subscribers", "unsubscribe", "ok@example.org")
    result = digest("subscribers", "activate", "ok@example.org")
    assert result.exit_code == 1 and "--force" in result.output
    digest.ok("subscribers", "activate", "ok@example.org", "--force")
    assert "ok@example.org" not in suppressed(digest)
    digest.ok("suppressions", "remove", "angry@example.org")
    digest.ok("subscribers", "add", "angry@example.org")


def test_unsubscribed_people_stay_unsubscribed_in_a_new_store(
        digest: Digest, tmp_path: Path) -> None:
    digest.ok("subscribers", "add", "gone@example.org")
    digest.ok("subscribers", "add", "here@example.org")
    digest.ok("subscribers", "unsubscribe", "gone@example.org")
    digest.ok("subscribers", "export", str(tmp_path / "list.csv"))
    digest.ok("suppressions", "export", str(tmp_path / "suppressions.csv"))
    other = Digest(tmp_path / "new")
    other.folder.mkdir()
    other.ok("init")
    other.ok("subscribers", "import", str(tmp_path / "list.csv"))
    assert sorted(sql(other.folder, "select email, status from subscribers")) == [
        ("gone@example.org", "unsubscribed"), ("here@example.org", "active")]
    assert suppressed(other) == {"gone@example.org": "unsubscribed"}
    other.ok("suppressions", "import", str(tmp_path / "suppressions.csv"))
    result = other("subscribers", "add", "gone@example.org")
    assert result.exit_code == 1


@pytest.mark.both_backends
def test_show_and_export_person_hold_everything_and_erase_leaves_only_a_hash(
        digest: Digest, smtp: LoopbackSMTPServer, tmp_path: Path) -> None:
    digest.ok("subscribers", "add", "Erin.Erased@example.org", "--name", "Erin Example")
    digest.ok("subscribers", "add", "keep@example.org")
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("send", "--yes", env=smtp_env(smtp))
    desk(digest).apply(finding(BounceKind.SOFT, "erin.erased@example.org", "dsn-9",
                               status="4.2.2"))
    shown = digest.ok("subscribers", "show", "erin.erased@example.org").stdout
    assert "Erin Example" in shown and "source: cli" in shown and "4.2.2" in shown
    digest.ok("subscribers", "export-person", "erin.erased@example.org", "--out",
              str(tmp_path / "erin.json"))
    record = json.loads((tmp_path / "erin.json").read_text())
    assert record["profile"]["email"] == "Erin.Erased@example.org"
    assert record["consent"]["source"] == "cli" and record["consent"]["at"]
    assert [d["status"] for d in record["deliveries"]] == ["sent"]
    assert [e["kind"] for e in record["bounce_events"]] == ["soft"]

    result = digest.ok("subscribers", "erase", "Erin.Erased@example.org", "--yes")
    assert "keyed hash" in result.stdout
    keys = suppressed(digest)
    assert [r for k, r in keys.items() if k.startswith("hmac:")] == ["erased"]
    # The SQLite file and its WAL, byte by byte (free pages and old WAL frames included).
    for path in digest.folder.glob("digest.db*"):
        data = path.read_bytes().lower()
        assert b"erin.erased" not in data and b"erin example" not in data, path
    dump = json.dumps([sql(digest.folder, f"select * from {t}") for t in
                       ("subscribers", "deliveries", "bounce_events", "suppressions",
                        "outbox")], default=str).lower()
    assert "erin" not in dump
    result = digest("subscribers", "add", "erin.erased@example.org")
    assert result.exit_code == 1 and "erased at their request" in result.output


def test_a_5xx_to_rcpt_feeds_the_same_model_and_verp_names_the_message(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    for name in ("ada", "gone", "full"):
        digest.ok("subscribers", "add", f"{name}@example.org")
    replies = {"gone@example.org": "550 5.1.1 <gone@example.org>: user unknown",
               "full@example.org": "552 5.2.2 mailbox full"}

    def policy(phase: str, mail_from: str, rcpt: str) -> str | None:
        return replies.get(rcpt) if phase == "RCPT" else None

    smtp.reply_policy = policy
    digest.ok("articles", "import", str(SAMPLE_JSON))
    env = smtp_env(smtp, DIGEST_SECRET_KEY=SECRET,
                   DIGEST_BOUNCES__RETURN_PATH="bounces+{token}@example.org")
    digest.partly("send", "--yes", env=env)
    assert status(digest, "gone@example.org") == ("bounced", 0)
    assert status(digest, "full@example.org") == ("active", 1)
    assert sorted(sql(digest.folder, "select recipient, kind, status, source from "
                                     "bounce_events")) == [
        ("full@example.org", "soft", "5.2.2", "smtp session"),
        ("gone@example.org", "hard", "5.1.1", "smtp session")]
    [message] = smtp.received
    verp = Verp(SECRET.encode(), "bounces+{token}@example.org")
    claims = verp.read(message.mail_from)
    [(ada_id,)] = sql(digest.folder, "select id from subscribers where email = 'ada@example.org'")
    [(edition_id,)] = sql(digest.folder, "select id from editions")
    assert claims is not None and (claims.subscriber_id, claims.edition_id) == (ada_id,
                                                                                edition_id)
    assert message.mail_from.startswith("bounces+") and message.mail_from.endswith(
        "@example.org")
    shown = digest.ok("editions", "show", "1").stdout
    assert "Bounces and complaints: 1 hard, 1 soft; complaint rate 0.00% of 1 sent\n" in shown
    # Ada's provider reports her complaint; the VERP token names the edition.
    desk(digest, DIGEST_BOUNCES__RETURN_PATH="bounces+{token}@example.org").apply(Reading(
        "arf", [Finding("arf", "", BounceKind.COMPLAINT, None, "abuse",
                        subscriber_id=claims.subscriber_id, edition_id=claims.edition_id,
                        report_id="arf")]))
    assert ("Bounces and complaints: 1 complaint, 1 hard, 1 soft; complaint rate 100.00% of "
            "1 sent (above the 0.3% Gmail and Yahoo allow)") in digest.ok(
        "editions", "show", "1").stdout


def test_a_mail_to_the_unsubscribe_address_unsubscribes_its_sender(digest: Digest) -> None:
    digest.ok("subscribers", "add", "done@example.org")
    outcome = desk(digest).apply(Reading("mail-1", [], unsubscribe="Done@Example.org"))
    assert outcome.unsubscribed == "done@example.org"
    assert status(digest, "done@example.org") == ("unsubscribed", 0)
    assert suppressed(digest) == {"done@example.org": "unsubscribed"}
    # A stranger's mail changes nothing.
    assert desk(digest).apply(Reading("mail-2", [], unsubscribe="x@example.org")
                              ).unsubscribed is None


@pytest.mark.parametrize("dry_run", [True, False])
def test_dry_run_changes_nothing(digest: Digest, dry_run: bool) -> None:
    digest.ok("subscribers", "add", "hard@example.org")
    desk(digest).apply(finding(BounceKind.HARD, "hard@example.org", "x"), dry_run=dry_run)
    assert status(digest, "hard@example.org")[0] == ("active" if dry_run else "bounced")
    assert sql(digest.folder, "select count(*) from bounce_events") == [(0 if dry_run else 1,)]


# -- the web pages: sign-up against the suppression list, consent, welcome, your data --

def _confirm(site: Any, client: httpx.Client, email: str) -> httpx.Response:
    site.sent_mail()
    mail = [m for m in site.smtp.received if m.recipients == (email,)][-1].message()
    link = re.search(r"(http://\S+/confirm/\S+)", mail.get_content()).group(1)
    page = client.get(link)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post(link, data={"csrf_token": token})


def test_someone_who_unsubscribed_comes_back_only_through_double_opt_in(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    digest.ok("subscribers", "add", "back@example.org")
    digest.ok("subscribers", "unsubscribe", "back@example.org")
    digest.ok("subscribers", "add", "angry@example.org")
    desk(digest).apply(finding(BounceKind.COMPLAINT, "angry@example.org", "arf-2"))
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("subscribers", "add", "reader@example.org")
    digest.ok("send", "--yes", env=smtp_env(smtp))      # edition 1, in the archive
    with a_site(digest, smtp, DIGEST_SECRET_KEY=SECRET) as site, \
            httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
        smtp.received.clear()
        assert sign_up(client, "angry@example.org").status_code == 200
        assert sign_up(client, "back@example.org").status_code == 200
        site.sent_mail()
        # The complainer gets a confirmation too (a complaint can be forged: only the
        # mailbox's owner can confirm), and stays suppressed until they do.
        assert sorted(m.recipients for m in smtp.received) == [("angry@example.org",),
                                                               ("back@example.org",)]
        assert status(digest, "back@example.org")[0] == "unsubscribed"
        assert _confirm(site, client, "back@example.org").status_code == 200
        site.sent_mail()
        welcome = [m.message() for m in smtp.received
                   if m.message()["Subject"] == "Welcome to The Weekly Digest"]
    assert status(digest, "back@example.org")[0] == "active"
    assert suppressed(digest) == {"angry@example.org": "complained"}
    [(source, ip, confirmed)] = sql(digest.folder, "select consent_source, consent_ip, "
                                   "confirmed_at from subscribers where email_key = "
                                   "'back@example.org'")
    assert (source, ip) == ("sign-up", "127.0.0.1") and confirmed is not None
    [mail] = welcome
    html = mail.get_body(("html",)).get_content()
    text = mail.get_body(("plain",)).get_content()
    assert "/editions/1" in text and "/editions/1" in html and "/p/" in text


MAILGUN_KEY = "key-way-back"


def test_someone_complained_about_or_bounced_by_a_forgery_comes_back_by_confirming(
        digest: Digest, smtp: LoopbackSMTPServer, caplog: pytest.LogCaptureFixture) -> None:
    """A forged complaint (a signed Mailgun request with another event under it, arriving
    first) and a forged hard bounce suppress two readers. Each signs up again: the
    confirmation arrives, confirming lifts the suppression on record, and the next
    edition reaches them. An operator's suppression and an erasure stay."""
    from test_webhooks import body, mailgun_payload

    from digest.web.app import WebServer

    for name in ("victim", "hard", "kept", "gone"):
        digest.ok("subscribers", "add", f"{name}@example.org")
    digest.ok("suppressions", "add", "kept@example.org")           # the operator's
    env = {"DIGEST_SECRET_KEY": SECRET}
    digest.ok("subscribers", "erase", "gone@example.org", "--yes", env=env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = smtp_env(smtp, DIGEST_DIGEST__BASE_URL=base, DIGEST_SECRET_KEY=SECRET,
                   DIGEST_WEBHOOKS__MAILGUN_SIGNING_KEY=MAILGUN_KEY)
    settings = load_settings(digest.folder / "digest.toml", environ=env)
    server = WebServer(settings, "127.0.0.1", port, threads=4, clock=digest.clock)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    caplog.set_level("INFO", logger="digest")
    try:
        with httpx.Client(base_url=base, timeout=HTTP_TIMEOUT) as client:
            forged = mailgun_payload("mailgun-complained.json", key=MAILGUN_KEY,
                                     at=digest.clock.timestamp())
            forged["event-data"]["recipient"] = "victim@example.org"
            assert client.post("/webhooks/mailgun", content=body(forged)).status_code == 200
            BounceDesk(server.store, settings).apply(      # on the test's clock too
                finding(BounceKind.HARD, "hard@example.org", "forged-5.1.1"))
            assert suppressed(digest) == {"victim@example.org": "complained",
                                          "hard@example.org": "hard-bounced",
                                          "kept@example.org": "manual",
                                          **{k: "erased" for k in suppressed(digest)
                                             if k.startswith("hmac:")}}
            digest.clock.advance(minutes=5)
            smtp.received.clear()
            pages = {email: sign_up(client, email).text.replace(email, "ADDRESS")
                     for email in ("victim@example.org", "hard@example.org",
                                   "kept@example.org", "gone@example.org")}
            assert len(set(pages.values())) == 1       # the same answer for every one
            assert server.outbox.flush()
            assert sorted(m.recipients for m in smtp.received) == [("hard@example.org",),
                                                                   ("victim@example.org",)]
            for email in ("victim@example.org", "hard@example.org"):
                mail = [m for m in smtp.received if m.recipients == (email,)][-1].message()
                link = re.search(r"(http://\S+/confirm/\S+)",
                                 mail.get_content()).group(1)
                token = re.search(r'name="csrf_token" value="([^"]+)"',
                                  client.get(link).text).group(1)
                assert client.post(link, data={"csrf_token": token}).status_code == 200
    finally:
        server.stop()
        thread.join()
    assert status(digest, "victim@example.org") == ("active", 0)
    assert status(digest, "hard@example.org") == ("active", 0)
    assert set(suppressed(digest)) - {k for k in suppressed(digest) if k.startswith("hmac:")
                                      } == {"kept@example.org"}
    [(source, at, ip)] = sql(digest.folder, "select consent_source, consent_at, consent_ip "
                                            "from subscribers where email_key = "
                                            "'victim@example.org'")
    assert (source, ip) == ("sign-up", "127.0.0.1")
    assert datetime.fromisoformat(str(at)).replace(tzinfo=UTC) == digest.clock.now()
    lifted = [r.getMessage() for r in caplog.records
              if "lifted by the subscriber's confirmed sign-up" in r.getMessage()]
    assert len(lifted) == 2 and "(complained, since " in " ".join(lifted), lifted
    # The next edition reaches them; the operator's suppression still holds.
    smtp.received.clear()
    digest.ok("articles", "import", str(SAMPLE_JSON))
    digest.ok("send", "--yes", env=smtp_env(smtp))
    assert {m.recipients[0] for m in smtp.received} == {"victim@example.org",
                                                        "hard@example.org"}


def test_the_preferences_page_hands_over_and_deletes_the_readers_data(
        digest: Digest, smtp: LoopbackSMTPServer) -> None:
    digest.ok("subscribers", "add", "mine@example.org", "--name", "Mina")
    with a_site(digest, smtp, DIGEST_SECRET_KEY=SECRET) as site, \
            httpx.Client(base_url=site.base, timeout=HTTP_TIMEOUT) as client:
        [(sid, version)] = sql(digest.folder, "select id, token_version from subscribers")
        path = "/p/" + Signer(SECRET.encode(), "preferences").make(sid, version)
        token = csrf_form(client, path)
        data = client.post(path, data={"csrf_token": token, "action": "download"})
        assert data.status_code == 200
        assert data.headers["content-type"] == "application/json"
        assert data.json()["profile"]["name"] == "Mina"
        # Without its CSRF token or its confirmation box, "delete me" deletes nothing.
        assert client.post(path, data={"action": "erase", "confirm": "yes"}).status_code == 400
        assert client.post(path, data={"csrf_token": token, "action": "erase"}
                           ).status_code == 400
        assert status(digest, "mine@example.org")[0] == "active"
        gone = client.post(path, data={"csrf_token": token, "action": "erase",
                                       "confirm": "yes"})
        assert gone.status_code == 200 and "deleted" in gone.text
    assert sql(digest.folder, "select email, name from subscribers") == [
        (f"erased-{sid}@invalid", "")]
    assert [r for r in suppressed(digest).values()] == ["erased"]


def test_reactivate_cannot_lift_a_complaint(digest: Digest, tmp_path: Path) -> None:
    digest.ok("subscribers", "add", "angry@example.org")
    desk(digest).apply(finding(BounceKind.COMPLAINT, "angry@example.org", "arf-3"))
    (tmp_path / "back.csv").write_text("email,status\nangry@example.org,active\n")
    result = digest("subscribers", "import", str(tmp_path / "back.csv"), "--reactivate")
    assert "back.csv:2: unsubscribed here and stays so: angry@example.org is on the " \
           "suppression list: it reported our mail as spam" in result.output
    assert status(digest, "angry@example.org")[0] == "unsubscribed"


def test_the_retired_bounce_threshold_says_what_took_its_place(digest: Digest) -> None:
    """Configs that `digest init` wrote before carry it: they keep working, with a line."""
    config = digest.folder / "digest.toml"
    config.write_text(config.read_text().replace("[digest]\n", "[digest]\nbounce_threshold = 2\n"))
    result = digest("subscribers", "list")
    assert result.exit_code == 0
    assert result.stderr.startswith("Note: ")
    assert result.stderr.endswith("[digest] bounce_threshold is no longer a setting: a hard "
                                  "bounce now bounces a subscriber at once, and soft bounces "
                                  "count towards [bounces] score_threshold; it is ignored "
                                  "(remove it)\n")


def test_the_status_of_a_reply_is_the_code_after_its_digits_never_an_address() -> None:
    claim = Claim(1, 2, "", 0, "<m@x>", 3, "a@example.org", "", 1)
    def bounce(reply: str) -> NewEvent:
        return session_bounce(claim, reply, NOW)

    assert bounce("550 5.1.1 <a@example.org>: user unknown").status == "5.1.1"
    event = bounce("550 host 10.2.0.110 said: no such user here")
    assert (event.status, event.kind) == (None, BounceKind.HARD)
    assert bounce("552 5.2.2 over quota").kind is BounceKind.SOFT


BOUNCES = Path(__file__).parent / "data" / "bounces"


def test_a_real_complaint_and_a_real_unsubscribe_mail_through_bounces_import(
        digest: Digest, tmp_path: Path) -> None:
    """A feedback-loop report (abusix, ARF) and Apple Mail's unsubscribe mail to the
    List-Unsubscribe mailto, as their senders wrote them. The complaint is about mail
    this store never sent (no Message-ID of ours): it is held until an editor applies
    it. The unsubscribe mail acts once the receiving server vouches for its sender."""
    for email in ("kijitora@example.com", "example@icloud.com", "other@example.org"):
        digest.ok("subscribers", "add", email)
    env = {"DIGEST_DIGEST__UNSUBSCRIBE_MAILTO": "opt-out-100731.e75std53hz8rnmy4r@example.org",
           "DIGEST_BOUNCES__AUTHSERV_ID": "mx.example.org"}
    apple = tmp_path / "apple.eml"
    apple.write_bytes(b"Authentication-Results: mx.example.org; dkim=pass (2048-bit key) "
                      b"header.d=icloud.com header.s=1a1hai; dmarc=pass header.from="
                      b"icloud.com\n" + (BOUNCES / "sisimai" / "rb-bsd-arf-26.eml").read_bytes())
    result = digest.ok("bounces", "import", "--format", "json",
                       str(BOUNCES / "sisimai" / "rb-bsd-arf-17.eml"), str(apple), env=env)
    # What the held complaint claims is listed, and that it was held.
    assert [(f["recipient"], f["kind"], f["effect"]) for f in json.loads(result.stdout)] == [
        (who, "complaint", "held for review: quotes no Message-ID of mail this store sent")
        for who in ("kijitora@example.com", "sabatora@example.net")]
    assert "1 held for review" in result.stderr
    assert status(digest, "kijitora@example.com")[0] == "active"
    [held] = json.loads(digest.ok("bounces", "review", "--format", "json").stdout)
    assert held["claims"] == "complaint: kijitora@example.com, sabatora@example.net"
    assert held["held_because"] == "quotes no Message-ID of mail this store sent"
    applied = digest.ok("bounces", "review", "--apply", str(held["id"]), env=env)
    assert "kijitora@example.com" in applied.stdout
    assert status(digest, "kijitora@example.com")[0] == "unsubscribed"
    assert status(digest, "example@icloud.com")[0] == "unsubscribed"
    assert status(digest, "other@example.org")[0] == "active"
    assert suppressed(digest) == {"kijitora@example.com": "complained",
                                  "example@icloud.com": "unsubscribed"}
    # The report is from 2016; it was received today, which is what --since counts.
    today = digest.clock.now().strftime("%Y-%m-%d")
    listed = digest.ok("bounces", "list", "--since", today).stdout
    assert "kijitora@example.com" in listed and "complaint" in listed and today in listed
    [event] = json.loads(digest.ok("bounces", "list", "--format", "json").stdout)
    assert event["time"].startswith("2016-") and event["received"].startswith(today)


def test_adding_or_activating_an_existing_suppressed_subscriber_says_why_and_what_works(
        digest: Digest) -> None:
    for name in ("gone", "angry", "left"):
        digest.ok("subscribers", "add", f"{name}@example.org")
    d = desk(digest)
    d.apply(finding(BounceKind.HARD, "gone@example.org", "dsn-1", status="5.1.1"))
    d.apply(finding(BounceKind.COMPLAINT, "angry@example.org", "arf-1"))
    digest.ok("subscribers", "unsubscribe", "left@example.org")
    expected = {
        "gone": "gone@example.org is on the suppression list: it hard-bounced (the address "
                "does not exist); add it again only once the address works again: digest "
                "subscribers activate gone@example.org --force",
        "angry": "angry@example.org is on the suppression list: it reported our mail as spam; "
                 "add it again only after an operator lifts it: digest suppressions remove "
                 "angry@example.org",
        "left": "left@example.org is on the suppression list: it unsubscribed; add it again "
                "only with their consent: digest subscribers activate left@example.org --force",
    }
    for name, line in expected.items():
        for args in (("add",), ("add", "--force"), ("activate",)):
            result = digest("subscribers", *args, f"{name}@example.org")
            assert (result.exit_code, result.output) == (1, f"Error: {line}\n"), args
    digest.ok("subscribers", "activate", "gone@example.org", "--force")
    assert status(digest, "gone@example.org")[0] == "active"
    result = digest("subscribers", "activate", "angry@example.org", "--force")
    assert result.output == f"Error: {expected['angry']}\n"


@pytest.mark.both_backends
def test_suppressions_move_between_stores_with_their_reasons_dates_and_sources(
        digest: Digest, tmp_path: Path) -> None:
    digest.ok("subscribers", "add", "gone@example.org")
    desk(digest).apply(finding(BounceKind.HARD, "gone@example.org", "dsn-1"))
    digest.ok("suppressions", "add", "boss@example.org")
    digest.ok("suppressions", "export", str(tmp_path / "out.csv"))
    def rows(folder: Path) -> list[tuple[str, ...]]:
        # The two stores may be of different backends: a datetime (whose str() drops a
        # zero microsecond part) or SQLite's text; compared as one ISO form.
        return sorted((key, reason, source, datetime.fromisoformat(str(at)).isoformat())
                      for key, reason, source, at in sql(
            folder, "select email_key, reason, source, created_at from suppressions"))

    before = rows(digest.folder)
    other = Digest(tmp_path / "other")
    other.folder.mkdir()
    other.ok("init")
    assert "2 added" in other.ok("suppressions", "import", str(tmp_path / "out.csv")).stdout
    assert rows(other.folder) == before
    # A provider's list: its own header and its own words for the reasons.
    (tmp_path / "provider.csv").write_text(
        "Email Address,Reason,Created\n"
        "Hard@Example.com,Bounced,2026-10-01 10:00:00\n"
        "spam@example.com,Spam Report,2026-10-02 10:00:00\n"
        "left@example.com,Unsubscribe,\n"
        "not-an-address,Bounced,\n")
    result = other("suppressions", "import", str(tmp_path / "provider.csv"))
    assert result.exit_code == 3
    assert "provider.csv:5: 'not-an-address' is not a valid email address" in result.output
    assert "3 added, 0 already there, 1 rejected" in result.output
    rows = dict(sql(other.folder, "select email_key, reason from suppressions"))
    assert (rows["hard@example.com"], rows["spam@example.com"], rows["left@example.com"]) == (
        "hard-bounced", "complained", "unsubscribed")


def test_unsubscribe_mailto_must_be_a_bare_address(digest: Digest) -> None:
    """With "mailto:x" the header read <mailto:mailto:x?subject=unsubscribe> and no
    mail to it was ever recognised."""
    result = digest("subscribers", "list",
                    env={"DIGEST_DIGEST__UNSUBSCRIBE_MAILTO": "mailto:out@example.org"})
    assert result.exit_code == 1
    assert result.output.endswith("[digest] unsubscribe_mailto 'mailto:out@example.org' must "
                                  "be a bare address (the List-Unsubscribe header adds mailto: "
                                  "and the subject), e.g. out@example.org\n")


def test_an_address_only_the_suppression_list_holds_can_be_shown_and_erased(
        digest: Digest) -> None:
    digest.ok("suppressions", "add", "boss@example.org")
    shown = digest.ok("subscribers", "show", "boss@example.org").stdout
    assert shown.startswith("boss@example.org is not a subscriber. Suppressed: manual since ")
    record = json.loads(digest.ok("subscribers", "export-person", "boss@example.org",
                                  "--out", "-").stdout)
    assert record["profile"] is None and record["suppression"]["reason"] == "manual"
    erased = digest.ok("subscribers", "erase", "boss@example.org", "--yes").stdout
    assert "only the suppression list held it" in erased
    assert list(suppressed(digest).values()) == ["erased"]
    assert "boss" not in json.dumps(sql(digest.folder, "select * from suppressions"),
                                    default=str)


def test_a_bounce_on_standard_input_is_read_as_a_pipe_alias_hands_it_over(
        digest: Digest) -> None:
    digest.ok("subscribers", "add", "xxxxx@local.ie")
    bounce = (BOUNCES / "flufl" / "postfix_01.txt").read_text(encoding="latin-1")
    result = digest("bounces", "import", "-", input=bounce)
    assert result.exit_code == 0, result.output
    # It quotes no Message-ID of ours: read, and held for review.
    assert "1 held for review" in result.output
    assert status(digest, "xxxxx@local.ie")[0] == "active"
    [held] = json.loads(digest.ok("bounces", "review", "--format", "json").stdout)
    assert held["source"] == "stdin#1" and held["claims"] == "hard: xxxxx@local.ie"
    digest.ok("bounces", "review", "--apply", str(held["id"]))
    assert status(digest, "xxxxx@local.ie")[0] == "bounced"
