"""The editor's desk from the terminal: an edition drafted, shaped, approved and sent
through a real SMTP server (aiosmtpd on 127.0.0.1) from a real store; what an
unapproved draft, a cancelled edition and [schedule] approval do; and the scheduler's
part (draft ahead with a review mail, hold, remind, send once approved, veto)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import lxml.html
import pytest
from conftest import NOW, SAMPLE_JSON, Digest, smtp_env, sql

from digest.clock import FixedClock
from digest.config import load_settings, with_overrides
from digest.delivery import desk
from digest.delivery.approval import desk_slot, desk_sweep
from digest.delivery.runner import send_due
from digest.mail.loopback import LoopbackSMTPServer
from digest.mail.render import day
from digest.store.db import Store

SUBSCRIBERS = ("email,name,topics,timezone\n"
               "ada@example.org,Ada Lovelace,,Europe/London\n"
               "grace@example.org,Grace Hopper,,America/New_York\n")


@pytest.fixture
def newsroom(digest: Digest) -> Digest:
    digest.ok("articles", "import", str(SAMPLE_JSON))
    (digest.folder / "subs.csv").write_text(SUBSCRIBERS)
    digest.ok("subscribers", "import", "subs.csv")
    return digest


def _body(msg: EmailMessage, kind: str) -> str:
    part = msg.get_body((kind,))
    assert part is not None
    content: str = part.get_content()
    return content.replace("\r\n", "\n")


def _sections(text: str) -> dict[str, str]:
    """The text part's topic sections: heading → what follows it."""
    parts = re.split(r"\n([A-Z][A-Z ]+)\n-+\n\n", text)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _show(d: Digest, number: int) -> dict:  # type: ignore[type-arg]
    data: dict = json.loads(d.ok("editions", "show", str(number), "--format", "json").output)  # type: ignore[type-arg]
    return data


def _topic_of(view: dict, article: int) -> str:  # type: ignore[type-arg]
    return next(a["topic"] for a in view["articles"] if a["id"] == article)


@pytest.mark.both_backends
def test_the_whole_editorial_flow_in_the_terminal_reaches_the_mail(
        newsroom: Digest, smtp: LoopbackSMTPServer) -> None:
    d = newsroom
    env = smtp_env(smtp)
    drafted = d.ok("editions", "draft")
    assert drafted.output.startswith("Drafted edition 1: 30 stories in 8 topics")
    view = _show(d, 1)
    assert view["status"] == "draft" and len(view["articles"]) == 30
    # Nothing goes out before approval, whatever the command.
    refused = d("send", "--yes", env=env)
    assert refused.exit_code == 1
    assert refused.output == ("Error: edition 1 is a draft waiting for approval: review it "
                              "(digest editions show 1) and approve it with: digest "
                              "editions approve 1\n")
    assert d("send", "--edition", "1", "--yes", env=env).exit_code == 1
    assert smtp.received == [] and sql(d.folder, "select count(*) from deliveries") == [(0,)]

    science = [a["id"] for a in view["articles"] if a["topic"] == "Science"]
    ai = [a["id"] for a in view["articles"] if a["topic"] == "AI"]
    dropped, pinned, moved, last = 29, science[-1], ai[0], ai[-1]
    d.ok("editions", "drop", "1", str(dropped))
    d.ok("editions", "pin", "1", str(pinned))
    assert d.ok("editions", "move", "1", str(moved), "science").output == \
        f"Moved article {moved} to Science in edition 1.\n"
    d.ok("editions", "order", "1", str(last), "--before", str(ai[1]))
    d.ok("editions", "edit", "1", str(ai[2]), "--title", "A title the editor wrote")
    (d.folder / "note.md").write_text("## A word first\n\nThis week: **reefs** and "
                                      "<script>alert(1)</script> [our survey]"
                                      "(https://example.org/survey).\n")
    d.ok("editions", "intro", "1", "--file", "note.md")
    d.ok("editions", "subject", "1", "Reefs, code and a vote")
    view = _show(d, 1)
    assert dropped not in [a["id"] for a in view["articles"]]
    assert [a["id"] for a in view["articles"] if a["topic"] == "Science"][0] == pinned
    assert _topic_of(view, moved) == "Science"
    assert [a["id"] for a in view["articles"] if a["topic"] == "AI"][:2] == [last, ai[1]]
    assert d.ok("editions", "approve", "1", "--by", "Editor").output == "Approved edition 1.\n"

    sent = d("send", "--yes", env=env)
    assert sent.exit_code == 0, sent.output
    assert sorted(r.recipients[0] for r in smtp.received) == ["ada@example.org",
                                                             "grace@example.org"]
    msg = smtp.received[0].message()
    assert msg["Subject"] == "Reefs, code and a vote"
    html, text = _body(msg, "html"), _body(msg, "plain")
    assert "A word first" in html and "<strong>reefs</strong>" in html
    assert 'href="https://example.org/survey"' in html and "<script" not in html
    assert "A title the editor wrote" in text
    dropped_title = json.loads(SAMPLE_JSON.read_text())[dropped - 1]["title"]
    assert dropped_title not in text
    sections = _sections(text)
    pinned_title = next(a["title"] for a in view["articles"] if a["id"] == pinned)
    moved_title = next(a["title"] for a in view["articles"] if a["id"] == moved)
    assert sections["SCIENCE"].split("\n")[0] == pinned_title     # first under its topic
    assert moved_title in sections["SCIENCE"] and moved_title not in sections["AI"]
    # The dropped article went back to the pool: the next draft takes it.
    assert _show(d, 1)["status"] == "sent"
    gone = d("articles", "remove", str(pinned))
    assert gone.output == f"Error: article {pinned} went out in edition 1: what was sent " \
                          f"stays as it was\n"
    d.ok("editions", "draft")
    assert [a["id"] for a in _show(d, 2)["articles"]] == [dropped]


def test_cancel_returns_the_articles_and_the_edition_never_goes_out(
        newsroom: Digest, smtp: LoopbackSMTPServer) -> None:
    d = newsroom
    d.ok("editions", "draft")
    d.ok("editions", "approve", "1")
    assert d.ok("editions", "cancel", "1").output == \
        "Cancelled edition 1; its 30 articles will be in the next edition.\n"
    result = d("send", "--edition", "1", "--yes", env=smtp_env(smtp))
    assert result.exit_code == 1
    assert result.output == "Error: edition 1 was cancelled: it is never sent\n"
    changed = d("editions", "drop", "1", "3")
    assert changed.exit_code == 1 and "edition 1 is cancelled" in changed.output
    assert smtp.received == []
    # Without a draft, digest send builds the next edition as before, with every article.
    d.ok("send", "--yes", env=smtp_env(smtp))
    assert len(smtp.received) == 2
    assert sql(d.folder, "select number, status from editions order by number") == [
        (1, "cancelled"), (2, "sent")]
    assert sql(d.folder, "select count(*) from articles where edition_id = "
                         "(select id from editions where number = 2)") == [(30,)]


def test_show_of_a_draft_says_what_comes_next_and_keeps_the_intros_lines(
        newsroom: Digest) -> None:
    d = newsroom
    d.ok("editions", "draft")
    d("editions", "intro", "1", "--file", "-", input="# Hello\n\nFirst line.\n\n- one\n")
    shown = d.ok("editions", "show", "1").output
    assert "Intro:\n  # Hello\n  First line.\n  - one\n" in shown
    assert "Deliveries" not in shown and "Bounces and complaints" not in shown
    assert "Nothing is sent yet" in shown and "digest editions approve 1" in shown


def test_a_dropped_article_leaves_its_desk_pin_behind_and_limits_hold(newsroom: Digest) -> None:
    d = newsroom
    d.ok("editions", "draft")
    d.ok("editions", "pin", "1", "12")
    d.ok("editions", "drop", "1", "12")
    assert sql(d.folder, "select pinned, edition_id from articles where id = 12") == [
        (False, None)]
    long = d("editions", "subject", "1", "x" * 161)
    assert long.exit_code == 1 and "the subject has 161 characters; keep it to 160" in \
        long.output
    endless = d("editions", "intro", "1", "--file", "/dev/zero")
    assert endless.exit_code == 1 and "is far longer than 5000 characters" in endless.output
    blank = d("editions", "intro", "1", "--file", "-", input="\x00\x01\x1b")
    assert blank.exit_code == 1 and "the intro has no text" in blank.output


def test_changing_an_approved_edition_makes_it_a_draft_again(newsroom: Digest) -> None:
    d = newsroom
    d.ok("editions", "draft")
    d.ok("editions", "approve", "1")
    out = d.ok("editions", "pin", "1", "5", "--top").output
    assert out == ("Article 5 leads edition 1. Edition 1 is a draft again: approve it again "
                   "to send it.\n")
    view = _show(d, 1)
    assert view["status"] == "draft" and view["approved_by"] is None
    assert view["articles"][0]["id"] == 5 and view["articles"][0]["leads"]


def test_approval_required_refuses_a_send_without_a_draft(newsroom: Digest,
                                                         smtp: LoopbackSMTPServer) -> None:
    env = smtp_env(smtp, DIGEST_SCHEDULE__APPROVAL="required",
                   DIGEST_DIGEST__EDITORS="editor@example.org")
    result = newsroom("send", "--yes", env=env)
    assert result.exit_code == 1
    assert result.output == ('Error: [schedule] approval is "required": every edition needs '
                             'an editor; make a draft with: digest editions draft\n')
    assert smtp.received == [] and sql(newsroom.folder, "select count(*) from editions") == [
        (0,)]


@pytest.mark.parametrize("args, message", [
    (("drop", "1", "999"), "article 999 is not in edition 1 (see: digest editions show 1)"),
    (("move", "1", "3", "Gardening"), "Gardening"),
    (("edit", "1", "3"), "nothing to change: give --title, --teaser or both"),
    (("order", "1", "1", "--before", "14"), "move it first"),
    (("approve", "2"), "there is no edition 2 (see: digest editions list)"),
    (("intro", "1"), "give --file FILE (or - for standard input), or --clear"),
    (("intro", "1", "--file", "nosuch.md"),
     "cannot read the intro nosuch.md: No such file or directory; give a UTF-8 Markdown file"),
    (("move", "1", "3", "ai"), "article 3 is already under AI in edition 1"),
])
def test_wrong_requests_get_one_line_and_change_nothing(newsroom: Digest, args: tuple[str, ...],
                                                       message: str) -> None:
    newsroom.ok("editions", "draft")
    before = _show(newsroom, 1)
    result = newsroom("editions", *args)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0]      # a usage error adds click's hint
    assert "[Errno" not in result.output
    assert _show(newsroom, 1) == before


def test_a_second_draft_is_refused_and_refresh_adds_only_what_arrived(
        newsroom: Digest, tmp_path: Path) -> None:
    d = newsroom
    d.ok("editions", "draft")
    d.ok("editions", "drop", "1", "7")
    again = d("editions", "draft")
    assert again.exit_code == 1 and "edition 1 is already a draft" in again.output
    assert d.ok("editions", "refresh", "1").output == "Added 0 articles to edition 1.\n"
    extra = tmp_path / "late.json"
    extra.write_text(json.dumps([{"title": "A late story about reef fish",
                                  "url": "https://example.org/late", "summary": "Late.",
                                  "topic": "Science"}]))
    assert isinstance(d.clock, FixedClock)
    d.clock.advance(timedelta(minutes=5))                # it arrives after the draft
    d.ok("articles", "import", str(extra))
    assert d.ok("editions", "refresh", "1").output == "Added 1 article to edition 1.\n"
    ids = [a["id"] for a in _show(d, 1)["articles"]]
    assert 31 in ids and 7 not in ids      # the dropped one stays out


def test_intro_markdown_is_sanitised_and_shown_in_the_preview(newsroom: Digest) -> None:
    d = newsroom
    d.ok("editions", "draft")
    hostile = ('<img src=x onerror=alert(1)> [x](javascript:alert(1)) '
               '<a href="https://evil.example/">raw</a>\n\n# Big heading\n')
    result = d("editions", "intro", "1", "--file", "-", input=hostile)
    assert result.exit_code == 0, result.output
    d.ok("editions", "preview", "1", "--as", "ada@example.org", "--out", "p.html")
    html = (d.folder / "p.html").read_text()
    tree = lxml.html.fromstring(html)
    assert tree.xpath("//img") == []                                 # raw HTML is text
    assert not [a for a in tree.xpath("//a/@href") if not a.startswith(("https:", "#"))]
    assert "https://evil.example/" not in tree.xpath("//a/@href")
    assert not [n for n in tree.iter() if any(k.startswith("on") for k in n.attrib)]
    assert tree.xpath("//h3[normalize-space()='Big heading']") and "Hello Ada" in html
    # The preview greets as the mail does: "Hello Ada," (it said "Hello Ada Lovelace,").
    assert "Hello Ada," in html and "Hello Ada Lovelace" not in html


# --- the scheduler ---------------------------------------------------------------------

def _settings(store_url: str, smtp: LoopbackSMTPServer, approval: str, **schedule: object):  # type: ignore[no-untyped-def]
    settings = load_settings(None, environ={"DIGEST_STORE__URL": store_url,
                                            "DIGEST_SECRET_KEY": "k" * 32})
    return with_overrides(settings, smtp={"port": smtp.port, "timeout": 5.0},
                          digest={"editors": ("editor@example.org",),
                                  "base_url": "https://news.example.org"},
                          schedule={"approval": approval, "draft_lead": "24h", **schedule})


def _fill(store: Store, settings) -> None:  # type: ignore[no-untyped-def]
    """The sample articles (at the store's clock's time) and two readers."""
    from digest.audience.subscribers import SubscriberBook
    from digest.content.topics import TopicClassifier
    from digest.ingest import import_files
    import_files(store.writes, TopicClassifier(settings.topics, "More stories"), store.clock,
                 [SAMPLE_JSON])
    book = SubscriberBook(store, settings)
    book.add("ada@example.org")
    book.add("grace@example.org")


def _to(smtp: LoopbackSMTPServer) -> list[str]:
    return [r.recipients[0] for r in smtp.received]


@pytest.mark.both_backends
def test_required_drafts_ahead_holds_reminds_and_sends_once_approved(
        store_url: str, smtp: LoopbackSMTPServer) -> None:
    settings = _settings(store_url, smtp, "required")
    store = Store.from_settings(settings, FixedClock(NOW))     # the articles come at NOW
    _fill(store, settings)
    slot = NOW + timedelta(days=2)
    # Two days ahead: too early to draft.
    assert desk_sweep(store, settings, slot - timedelta(hours=30), slot) == []
    assert desk.coming_draft(store) is None
    lines = desk_sweep(store, settings, slot - timedelta(hours=23), slot)
    assert lines == [f"edition 1: drafted for {slot.isoformat()}; review mailed to 1 "
                     f"editor(s)"]
    assert _to(smtp) == ["editor@example.org"]
    review = smtp.received[0].message()
    assert review["Subject"].startswith("[Review] Edition 1: ")
    # Drafted a day ahead, it carries the date readers get it: its slot's, not today's.
    assert f"— {day(slot)}:" in review["Subject"]
    assert day(slot) != day(slot - timedelta(hours=23)) or slot.hour >= 23
    text = _body(review, "plain")
    assert "only once an editor approves it" in text
    assert "https://news.example.org/admin/editions/1/desk" in text
    assert "digest editions approve 1" in text
    # The sweep does not draft twice.
    assert desk_sweep(store, settings, slot - timedelta(hours=22), slot) == []

    held = desk_slot(store, settings, slot, slot)
    assert (held.action, held.edition) == ("held", 1)
    assert _to(smtp) == ["editor@example.org"] * 2          # the reminder, no reader
    assert smtp.received[1].message()["Subject"].startswith("[Reminder] Edition 1: ")
    assert desk_slot(store, settings, slot, slot + timedelta(minutes=5)).action == "held"
    assert len(smtp.received) == 2                           # reminded once per slot
    assert send_due(store, settings, now=slot + timedelta(minutes=10)) == []

    desk.approve_edition(store, settings, 1, "editor@example.org", slot + timedelta(hours=1))
    lines = desk_sweep(store, settings, slot + timedelta(hours=1), slot + timedelta(days=7))
    assert lines and lines[0].startswith("edition 1 (approved after its slot): sent")
    assert sorted(_to(smtp)[2:]) == ["ada@example.org", "grace@example.org"]
    store.close()


def test_required_approved_too_late_waits_for_the_next_slot(
        store_url: str, smtp: LoopbackSMTPServer) -> None:
    settings = _settings(store_url, smtp, "required", misfire_grace=3600)
    store = Store.from_settings(settings, FixedClock(NOW))     # the articles come at NOW
    _fill(store, settings)
    slot = NOW + timedelta(days=1)
    desk_sweep(store, settings, slot - timedelta(hours=1), slot)
    assert desk_slot(store, settings, slot, slot).action == "held"
    desk.approve_edition(store, settings, 1, "late editor", slot + timedelta(hours=3))
    later = slot + timedelta(hours=3)
    assert desk_sweep(store, settings, later, slot + timedelta(days=7)) == []
    assert [r for r in _to(smtp) if r != "editor@example.org"] == []
    outcome = desk_slot(store, settings, slot + timedelta(days=7), slot + timedelta(days=7))
    assert (outcome.action, outcome.edition) == ("sent", 1)
    assert sorted(r for r in _to(smtp) if r != "editor@example.org") == [
        "ada@example.org", "grace@example.org"]
    store.close()


def test_veto_sends_unless_cancelled(store_url: str, smtp: LoopbackSMTPServer) -> None:
    settings = _settings(store_url, smtp, "veto")
    store = Store.from_settings(settings, FixedClock(NOW))     # the articles come at NOW
    _fill(store, settings)
    slot = NOW + timedelta(days=1)
    desk_sweep(store, settings, slot - timedelta(hours=2), slot)
    review = _body(smtp.received[0].message(), "plain")
    assert "unless an editor cancels it" in review
    desk.cancel_edition(store, settings, 1, slot - timedelta(hours=1))
    cancelled = desk_slot(store, settings, slot, slot)
    assert (cancelled.action, cancelled.edition) == ("cancelled", 1)
    assert _to(smtp) == ["editor@example.org"]
    # The next week nobody cancels: it goes out at its slot.
    week = slot + timedelta(days=7)
    desk_sweep(store, settings, week - timedelta(hours=2), week)
    assert desk.coming_draft(store) == 2
    outcome = desk_slot(store, settings, week, week)
    assert (outcome.action, outcome.edition) == ("sent", 2)
    assert sorted(_to(smtp)[2:]) == ["ada@example.org", "grace@example.org"]
    view = desk.desk_view(store, settings, 2)
    assert view.approved_by == "the schedule (nobody cancelled it)"
    store.close()


@pytest.mark.parametrize("approval", ["none", "veto"])
def test_a_hand_made_draft_is_held_at_the_slot_until_approved(
        store_url: str, smtp: LoopbackSMTPServer, approval: str) -> None:
    # An editor drafts by hand (no slot, no review mail) and is still shaping it: under
    # no approval rule, and under "veto" too (nobody was given the time to veto it).
    settings = _settings(store_url, smtp, approval)
    store = Store.from_settings(settings)
    _fill(store, settings)
    now = datetime.now(UTC)
    desk.draft_edition(store, settings, now)
    slot = now + timedelta(minutes=1)
    outcome = desk_slot(store, settings, slot, slot)
    assert (outcome.action, outcome.edition) == ("held", 1)
    assert [r for r in _to(smtp) if r != "editor@example.org"] == []
    assert desk.desk_view(store, settings, 1).status.value == "draft"
    store.close()


@pytest.mark.both_backends
def test_an_approved_edition_keeps_local_time_waves(store_url: str,
                                                    smtp: LoopbackSMTPServer) -> None:
    settings = _settings(store_url, smtp, "required", cron="0 8 * * mon",
                         timezone="Europe/Berlin", local_time=True)
    slot = datetime(2026, 12, 6, 23, tzinfo=UTC)               # Monday 08:00 in Tokyo
    clock = FixedClock(slot - timedelta(days=1))               # the articles come on Sunday
    store = Store.from_settings(settings, clock)
    _fill(store, settings)
    from digest.audience.subscribers import SubscriberBook
    SubscriberBook(store, settings).add("tokyo@example.org", timezone="Asia/Tokyo")
    desk_sweep(store, settings, slot - timedelta(hours=20), slot)
    desk.approve_edition(store, settings, 1, "editor", slot - timedelta(hours=1))
    clock.set(slot)
    desk_slot(store, settings, slot, slot)
    readers = [r for r in _to(smtp) if r != "editor@example.org"]
    assert readers == ["tokyo@example.org"]                  # Berlin's 08:00 comes later
    clock.set(datetime(2026, 12, 7, 7, tzinfo=UTC))
    send_due(store, settings, now=clock.now())
    readers = [r for r in _to(smtp) if r != "editor@example.org"]
    assert sorted(readers) == ["ada@example.org", "grace@example.org", "tokyo@example.org"]
    store.close()


def test_digest_preview_shows_the_draft_and_schedule_show_the_approval(newsroom: Digest) -> None:
    d = newsroom
    d.ok("editions", "draft")
    d("editions", "intro", "1", "--file", "-", input="A note for *this* week.\n")
    d.ok("editions", "drop", "1", "29")
    result = d.ok("preview", "--out", "coming.html")
    assert "edition 1, 29 articles" in result.output
    html = (d.folder / "coming.html").read_text()
    assert "<em>this</em>" in html
    shown = d.ok("schedule", "show", env={"DIGEST_SCHEDULE__APPROVAL": "veto",
                                          "DIGEST_DIGEST__EDITORS": "ed@example.org"})
    assert ("Approval: veto: each edition is drafted 24h before its slot and mailed to "
            "ed@example.org for review; it goes out unless an editor cancels it"
            ) in shown.output.replace("\n", " ")


@pytest.mark.both_backends
def test_articles_of_a_draft_point_to_the_desk_and_discard_forgets_the_marks(
        newsroom: Digest) -> None:
    d = newsroom
    d.ok("editions", "draft")
    d.ok("editions", "edit", "1", "3", "--title", "Edited here")
    d.ok("editions", "pin", "1", "3", "--top")
    for args in (("remove", "3"), ("set-topic", "3", "AI")):
        result = d("articles", *args)
        assert result.exit_code == 1
        assert result.output == ("Error: article 3 is in edition 1, which an editor is "
                                 "shaping: take it out with: digest editions drop 1 3 (or "
                                 "change its topic there: digest editions move 1 3 TOPIC)\n")
    d.ok("editions", "discard", "1")
    assert sql(d.folder, "select edited_title, pin_top, position, edition_id from articles "
                         "where id = 3") == [(None, False, None, None)]


@pytest.mark.slow
def test_the_scheduler_process_holds_a_draft_until_an_editor_approves_it(
        newsroom: Digest, smtp: LoopbackSMTPServer) -> None:
    """`digest schedule run` with approval = "required", a slot every 6 seconds: the draft
    is made and mailed to the editor, held at its slot, and goes out at the first slot
    after `digest editions approve`."""
    from test_schedule import Scheduler, wait_until

    env = smtp_env(smtp, DIGEST_SCHEDULE__CRON="*/6 * * * * *",
                   DIGEST_SCHEDULE__TIMEZONE="UTC", DIGEST_SCHEDULE__MISFIRE_GRACE="60",
                   DIGEST_SCHEDULE__APPROVAL="required", DIGEST_SCHEDULE__DRAFT_LEAD="1m",
                   DIGEST_DIGEST__EDITORS="editor@example.org")
    sched = Scheduler(newsroom.folder, env)
    try:
        held = sched.wait_for("edition 1 held: waiting for an editor's approval")
        assert "slot " in held
        readers = lambda: [r for r in _to(smtp) if r != "editor@example.org"]  # noqa: E731
        assert readers() == []
        subjects = [r.message()["Subject"] for r in smtp.received]
        assert any(s.startswith("[Review] Edition 1: ") for s in subjects), subjects
        assert any(s.startswith("[Reminder] Edition 1: ") for s in subjects), subjects
        assert _show(newsroom, 1)["status"] == "draft"
        newsroom.ok("editions", "approve", "1", env=env)
        wait_until(lambda: len(readers()) == 2, timeout=60)
        sched.wait_for("edition 1 sent: sent 2")
    finally:
        assert sched.stop() == 0, "\n".join(sched.lines)
    assert sorted(readers()) == ["ada@example.org", "grace@example.org"]
    assert _show(newsroom, 1)["status"] == "sent"


def test_an_edition_of_only_an_intro_goes_out_only_with_allow_empty(
        newsroom: Digest, smtp: LoopbackSMTPServer) -> None:
    """An editor's note with no articles (a holiday notice) is sent only when asked for by
    name: --force never sends an edition without articles; the dry run says the same as
    the real run, and a scheduled slot holds it."""
    d, env = newsroom, smtp_env(smtp)
    d.ok("send", "--yes", env=env)
    assert len(smtp.received) == 2
    refused = d("editions", "draft")
    assert "digest editions draft --allow-empty" in refused.output
    assert d.ok("editions", "draft", "--allow-empty").output.startswith(
        "Drafted edition 2: 0 stories in 0 topics")
    assert d("editions", "approve", "2").output == (
        "Error: edition 2 has no articles and no intro: refresh it, write an intro (digest "
        "editions intro 2) or cancel it\n")
    (d.folder / "note.md").write_text("We are **on holiday** until the 24th.\n")
    d.ok("editions", "intro", "2", "--file", "note.md")
    assert d.ok("editions", "approve", "2").output == (
        "Approved edition 2. It has no articles, only its intro: digest send --allow-empty "
        "sends it (a scheduled slot holds it).\n")
    held = ("Edition 2 has no articles, only its intro: nothing to send unless you mean it "
            "(digest send --allow-empty sends it as it is; digest editions cancel 2 drops "
            "it).\n")
    for flags in ((), ("--force",), ("--edition", "2")):
        assert d.ok("send", "--dry-run", *flags, env=env).output == held, flags
        assert d.ok("send", "--yes", *flags, env=env).output == held, flags
        assert d.ok("send", "--enqueue", *flags, env=env).output == held, flags
    settings = load_settings(d.folder / "digest.toml", environ={})
    settings = with_overrides(settings, smtp={"port": smtp.port, "host": "127.0.0.1"})
    store = Store.from_settings(settings, FixedClock(NOW))
    try:
        slot = NOW - timedelta(minutes=1)
        outcome = desk_slot(store, settings, slot, NOW)
    finally:
        store.close()
    assert (outcome.action, outcome.edition) == ("held", 2)
    assert "digest send --allow-empty" in outcome.detail
    assert len(smtp.received) == 2 and sql(d.folder, "select count(*) from deliveries") \
        == [(2,)]

    dry = d.ok("send", "--dry-run", "--allow-empty", env=env)
    assert dry.output == ("Dry run: edition 2 would carry only its intro (no articles: "
                          "--allow-empty) and go to 2 subscribers in 1 variant (0 skipped: "
                          "nothing new in their topics). Nothing was stored or sent.\n")
    sent = d.ok("send", "--yes", "--allow-empty", env=env)
    assert sent.output.startswith("Edition 2 has no articles, only its intro: it goes out "
                                  "as it is (--allow-empty).\n")
    assert len(smtp.received) == 4
    for item in smtp.received[2:]:
        text = _body(item.message(), "plain")
        assert "We are **on holiday** until the 24th." in text
        assert "Nothing new this time" not in text
        assert "on holiday" in _body(item.message(), "html")


def test_drop_takes_several_articles_in_one_change_or_none(newsroom: Digest) -> None:
    """`editions drop N A` took one article: dropping five meant five commands, five
    subject rewrites, and a typo half-way left the edition half-changed."""
    d = newsroom
    d.ok("editions", "draft")

    def held() -> set[int]:
        return {row[0] for row in sql(d.folder, "select id from articles where edition_id "
                                                "is not null")}

    before = held()
    refused = d("editions", "drop", "1", "3", "99999", "5", "88888")
    assert (refused.exit_code, refused.output) == (
        1, "Error: articles 99999, 88888 are not in edition 1 (see: digest editions show 1); "
           "nothing was dropped\n")
    assert held() == before
    dropped = d.ok("editions", "drop", "1", "3", "5", "12").output
    assert dropped.startswith("Dropped articles 3, 5, 12")
    assert dropped.rstrip().endswith("from edition 1; back in the pool for the next edition.")
    assert not {3, 5, 12} & held() and len(held()) < len(before)
    everything = [str(i) for i in sorted(held())]
    refused = d("editions", "drop", "1", *everything)
    assert refused.exit_code == 1 and "all edition 1 has left: cancel the edition instead" \
        in refused.output
