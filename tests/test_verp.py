"""The VERP round trip through a real MTA: Postfix on 127.0.0.1 (a private instance the
tests start, tests/mailservers.py) relays to a far end that refuses some recipients after
Postfix accepted the message, so Postfix itself writes the DSN, into a Maildir."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from mailservers import PostfixServer, need_postfix

pytestmark = pytest.mark.slow


@pytest.fixture
def mta() -> Iterator[PostfixServer]:
    need_postfix()
    with PostfixServer() as server:
        yield server


def read_mail(path: Path) -> EmailMessage:
    msg = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def delivery_status(dsn: EmailMessage) -> list[dict[str, str]]:
    """The per-recipient fields of a multipart/report's message/delivery-status part."""
    [part] = [p for p in dsn.walk() if p.get_content_type() == "message/delivery-status"]
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    return [{k.lower(): v for k, v in block.items()} for block in blocks[1:]]


def send(mta: PostfixServer, sender: str, *recipients: str) -> None:
    with smtplib.SMTP("127.0.0.1", mta.port, timeout=10) as client:
        client.sendmail(sender, list(recipients),
                        b"From: news@example.org\r\nTo: reader@example.net\r\n"
                        b"Subject: Edition 1\r\n\r\nHello.\r\n")


def test_postfix_returns_a_refused_recipient_as_a_dsn_to_the_verp_address(
        mta: PostfixServer) -> None:
    send(mta, "bounces+abc@example.org", "someone@gone.example", "reader@example.net")
    [path] = mta.wait_for_mail("bounces")
    dsn = read_mail(path)
    assert dsn["To"] == "bounces+abc@example.org"
    assert dsn["Delivered-To"] == "bounces+abc@example.org"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    [status] = delivery_status(dsn)
    assert status["final-recipient"] == "rfc822; someone@gone.example"
    assert status["action"] == "failed"
    assert status["status"] == "5.1.1"
    assert status["diagnostic-code"].startswith("smtp; 550 5.1.1 <someone@gone.example>")
    # The other recipient was delivered by the far end, and only it.
    [(mail_from, recipients)] = [(r.mail_from, r.recipients) for r in mta.far_end.received]
    assert (mail_from, recipients) == ("bounces+abc@example.org", ("reader@example.net",))


def test_a_full_mailbox_comes_back_with_its_4xx_status(mta: PostfixServer) -> None:
    send(mta, "bounces+def@example.org", "someone@full.example")
    [path] = mta.wait_for_mail("bounces")
    dsn = read_mail(path)
    assert dsn["To"] == "bounces+def@example.org"
    [status] = delivery_status(dsn)
    assert status["final-recipient"] == "rfc822; someone@full.example"
    assert status["status"] == "4.2.2"
    assert status["diagnostic-code"] == "smtp; 452 4.2.2 <someone@full.example>: Mailbox full"
    assert mta.far_end.received == []
