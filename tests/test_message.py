"""The fast message path equals the email package's, byte for meaning."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from pathlib import Path

import pytest
from conftest import NOW, SAMPLE_JSON
from sqlalchemy import select

from digest.audience.subscribers import SubscriberBook
from digest.clock import FixedClock
from digest.config import Settings, load_settings, with_overrides
from digest.content.edition import build_content
from digest.content.topics import TopicClassifier
from digest.delivery.editions import open_edition
from digest.delivery.sender import Sender
from digest.ingest import import_files
from digest.mail.message import (
    SMTP_POLICY,
    MessageTemplate,
    Recipient,
    build_email_message,
    message_id,
)
from digest.mail.render import Renderer
from digest.mail.transport import MaildirTransport
from digest.store.articles import new_articles
from digest.store.db import Store
from digest.store.models import Delivery, DeliveryStatus

NAMES = ["", "Ada", "Zoë Müller-Łukasiewicz", "Evil\r\nBcc: victim@example.org",
         'Doe, "John" <x>', "李小龍", "A" * 150, "word " * 40, "B" * 200, "😀" * 200,
         "Mallory \u202egpj.exe\u202c Smith"]
COMPARED = ("From", "To", "Subject", "Message-ID", "List-Id", "List-Unsubscribe",
            "List-Unsubscribe-Post", "MIME-Version", "Reply-To")


@pytest.fixture
def setup(store_url: str) -> Iterator[tuple[Settings, Store]]:
    settings = load_settings(None, environ={"DIGEST_STORE__URL": store_url,
                                            "DIGEST_SECRET_KEY": "k" * 32})
    settings = with_overrides(settings, digest={
        "base_url": "https://newsletters.example-publishing-group.org/a/very/long/prefix/"
                    "for/the/archive/and/the/unsubscribe/pages",
        "reply_to": "Letters <letters@example.org>",
        "unsubscribe_mailto": "unsubscribe@example.org"})
    store = Store.from_settings(settings, FixedClock(NOW))
    import_files(store.writes, TopicClassifier(settings.topics, "More stories"), store.clock,
                 [SAMPLE_JSON])
    yield settings, store
    store.close()


def decoded(raw: bytes, header: str) -> str | None:
    """A header's value as RFC 2047 reads it (white space between adjacent encoded-words
    is not part of the text); the email package's default policy keeps that white space
    inside display names, so it cannot judge two ways of folding one name."""
    value = message_from_bytes(raw)[header]
    if value is None:
        return None
    return str(make_header(decode_header(re.sub(r"\r?\n(?=[ \t])", "", value))))


def template(settings: Settings, store: Store, variant: str = "") -> MessageTemplate:
    now = store.clock.now()
    with store.sessions() as session:
        content = build_content(new_articles(session, now), settings, 7, now, variant)
    return MessageTemplate(settings, Renderer(settings).render(content), variant, 7,
                           clock=store.clock)


def test_fast_path_equals_the_email_package(setup: tuple[Settings, Store]) -> None:
    settings, store = setup
    for variant in ("", '["AI", "Science"]'):
        t = template(settings, store, variant)
        for i, name in enumerate(NAMES):
            r = Recipient(i + 1, f"reader{i}@example.org", name, 3,
                          message_id(settings, 7, i + 1))
            fast_bytes = t.build(r)
            slow_bytes = build_email_message(t, r).as_bytes(policy=SMTP_POLICY)
            fast = message_from_bytes(fast_bytes, policy=policy.default)
            slow = message_from_bytes(slow_bytes, policy=policy.default)
            assert not fast.defects and not slow.defects
            for header in COMPARED:
                assert decoded(fast_bytes, header) == decoded(slow_bytes, header), (header,
                                                                                     name)
            assert fast["Date"] and fast["Bcc"] is None
            assert fast.get_content_type() == slow.get_content_type() == "multipart/alternative"
            fast_parts = [(p.get_content_type(), p.get_content()) for p in fast.iter_parts()]
            slow_parts = [(p.get_content_type(), p.get_content()) for p in slow.iter_parts()]
            assert fast_parts == slow_parts
            assert [p[0] for p in fast_parts] == ["text/plain", "text/html"]
            assert all(len(line) <= 998 for line in fast_bytes.split(b"\r\n"))
            assert b"\n" not in fast_bytes.replace(b"\r\n", b"")
            assert b"\r" not in fast_bytes.replace(b"\r\n", b"")


def test_headers_carry_no_line_breaks_and_long_urls_stay_whole(
        setup: tuple[Settings, Store]) -> None:
    settings, store = setup
    t = template(settings, store)
    r = Recipient(5, "r@example.org", "Evil\r\nBcc: victim@example.org", 1,
                  message_id(settings, 7, 5))
    raw = t.build(r)
    head = raw.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n") if line[:1] not in b" \t"]
    assert b"Bcc" not in names
    # Folded between the two addresses (CRLF before the space), never inside a URL.
    unfolded = head.replace(b"\r\n ", b" ")
    [unsub] = [line for line in unfolded.split(b"\r\n") if line.startswith(b"List-Unsubscribe:")]
    url = t.personal(r).unsubscribe_url.encode()
    assert len(url) > 78 and b"<" + url + b">" in unsub and b"=?" not in unsub
    assert b"mailto:unsubscribe@example.org?subject=unsubscribe" in unsub
    # The email package path, with the folding policy DESIGN.md names, keeps it whole too.
    slow = build_email_message(t, r).as_bytes(policy=SMTP_POLICY)
    assert b"<" + url + b">" in slow


def test_message_id_is_stable_per_edition_and_subscriber(setup: tuple[Settings, Store]) -> None:
    settings, _ = setup
    assert message_id(settings, 3, 9) == message_id(settings, 3, 9)
    assert len({message_id(settings, 3, 9), message_id(settings, 3, 10),
                message_id(settings, 4, 9)}) == 3


def test_message_id_cannot_be_worked_out_without_the_secret(
        setup: tuple[Settings, Store]) -> None:
    """A bounce report acts only when it quotes the Message-ID we gave a delivery, so the
    Message-ID must not follow from public facts (the ids, the store's URL): another
    secret, the same store, gives another tag."""
    settings, _ = setup
    other = dataclasses.replace(settings, secret_key="o" * 32)
    assert message_id(settings, 3, 9) != message_id(other, 3, 9)
    assert message_id(settings, 3, 9).startswith("<digest.3.9.")


def test_one_render_per_variant_not_per_subscriber(setup: tuple[Settings, Store],
                                                   tmp_path: Path) -> None:
    settings, store = setup
    book = SubscriberBook(store, settings)
    for i in range(30):
        book.add(f"r{i}@example.org", topics=[["AI"], ["Science", "AI"], []][i % 3])
    edition, created = open_edition(store, settings, store.clock.now())
    assert created
    sender = Sender(store, settings, MaildirTransport(tmp_path / "mail"))
    counts = sender.run(edition_id=edition.id)
    assert counts["sent"] == 30
    assert sender.rendered_variants == 3
    with store.sessions() as session:
        rows = session.scalars(select(Delivery)).all()
    assert {r.status for r in rows} == {DeliveryStatus.SENT}
    assert all(r.sent_at == NOW for r in rows)
    assert len(list((tmp_path / "mail" / "new").iterdir())) == 30


def test_settings_are_frozen(setup: tuple[Settings, Store]) -> None:
    settings, _ = setup
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.digest.name = "x"  # type: ignore[misc]


def _header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


@pytest.mark.parametrize("title", ["T" * 1200, "word " * 400, "Zoë " * 300 + "ünïcödé" * 50,
                                   "\u202eevil\u2066 title\ufeff " * 40])
def test_a_long_or_hostile_title_keeps_every_header_line_within_the_limits(
        setup: tuple[Settings, Store], title: str) -> None:
    """A title becomes the subject through {top_story}: whatever it holds, every header
    line stays within 998 octets (folded near 78), the subject is cut to SUBJECT_MAX with
    "…", bidi and invisible characters are gone, and both message paths agree."""
    from digest.mail.render import SUBJECT_MAX

    settings, store = setup
    settings = with_overrides(settings, digest={"subject": "{top_story}"})
    now = store.clock.now()
    with store.sessions() as session:
        articles = new_articles(session, now)
    articles[0].title = title
    t = MessageTemplate(settings, Renderer(settings).render(
        build_content(articles[:1], settings, 7, now)), "", 7, clock=store.clock)
    for i, name in enumerate(NAMES):
        r = Recipient(i + 1, f"reader{i}@example.org", name, 3, message_id(settings, 7, i + 1))
        fast_bytes = t.build(r)
        slow_bytes = build_email_message(t, r).as_bytes(policy=SMTP_POLICY)
        for raw in (fast_bytes, slow_bytes):
            assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
        # Folded near 78 wherever there is a space to fold at.
        assert all(len(line) <= 78 or b" " not in line.split(b": ", 1)[-1].strip()
                   for line in _header_lines(fast_bytes)
                   if not line.startswith(b"Content-Type:")), name
        fast = message_from_bytes(fast_bytes, policy=policy.default)
        assert not fast.defects
        assert not message_from_bytes(slow_bytes, policy=policy.default).defects
        for header in COMPARED:
            assert decoded(fast_bytes, header) == decoded(slow_bytes, header), (header, name)
        subject = str(fast["Subject"])
        assert len(subject) <= SUBJECT_MAX and subject.endswith("…")
        assert not set(subject + str(fast["To"])) & {"\u202e", "\u2066", "\ufeff", "\u202c"}


def test_content_cannot_fill_in_a_readers_data(setup: tuple[Settings, Store]) -> None:
    """Placeholders are drawn per rendering: an article that spells out any placeholder
    (old or guessed) gets no subscriber's address or unsubscribe link filled in."""
    settings, store = setup
    now = store.clock.now()
    with store.sessions() as session:
        articles = new_articles(session, now)
    bait = ("__DIGEST_EMAIL__ __DIGEST_UNSUBSCRIBE_URL__ __DIGEST_PREFERENCES_URL__ "
            "__DIGEST_GREETING__")
    articles[0].title = f"Track {bait}"
    articles[0].summary = f"See https://tracker.example.net/?who={bait}"
    articles[0].url = "https://tracker.example.net/?e=__DIGEST_EMAIL__"
    t = MessageTemplate(settings, Renderer(settings).render(
        build_content(articles, settings, 7, now)), "", 7, clock=store.clock)
    r = Recipient(5, "victim@example.org", "Victim", 1, message_id(settings, 7, 5))
    msg = message_from_bytes(t.build(r), policy=policy.default)
    unsubscribe = t.personal(r).unsubscribe_url
    for part in msg.iter_parts():
        body = part.get_content()
        assert "tracker.example.net" in body and "__DIGEST_EMAIL__" in body
        # The address appears only where the templates put it: the footer, once.
        assert body.count("victim@example.org") == 1
        assert body.count(unsubscribe) == 1


@pytest.mark.parametrize(("name", "said"), [
    ("Ada Lovelace", "Hello Ada,"),
    ("Hopper, Grace", "Hello Grace,"),              # a list's "Last, First": "Hopper,," before
    ("Grace,", "Hello Grace,"),
    ("https://evil.example/verify-your-account now", "Hello,"),   # never a link
    ("www.evil.example", "Hello,"),
    ("ada@example.org", "Hello,"),
    ("", "Hello,"),
])
def test_one_greeting_for_every_mail(name: str, said: str) -> None:
    from digest.text import greeting

    assert greeting(name) == said
