"""Reasons by the remote host that answered (digest.audience.bouncehosts), read through
read_message: a DSN whose Remote-MTA, or a notice whose "host … said:", names a host
whose own error codes Sisimai's Rhost classes know. Each notice is written here from the
codes and phrases the host's documentation (as the Sisimai class quotes it) lists."""

from __future__ import annotations

import pytest

from digest.audience import bouncehosts
from digest.audience.bouncehosts import host_cause, remote_host
from digest.audience.bouncemail import read_message
from digest.store.models import BounceKind

HARD, SOFT = BounceKind.HARD, BounceKind.SOFT


def dsn(remote_mta: str, status: str, diagnostic: str,
        recipient: str = "reader@example.net") -> bytes:
    """A minimal RFC 3464 report for one failed recipient."""
    remote = f"Remote-MTA: dns; {remote_mta}\n" if remote_mta else ""
    return f"""\
From: Mail Delivery System <MAILER-DAEMON@mta.example.org>
To: bounces@news.example.org
Subject: Undelivered Mail Returned to Sender
Message-ID: <report-1@mta.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

Your message could not be delivered.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mta.example.org

Final-Recipient: rfc822; {recipient}
Action: failed
Status: {status}
{remote}Diagnostic-Code: smtp; {diagnostic}

--b1--
""".encode()


def found(message: bytes) -> list[tuple[str, BounceKind, str]]:
    return [(f.recipient, f.kind, f.cause) for f in read_message(message, "x").findings]


# Sisimai::Rhost::GoDaddy: "IB" codes at the end of smtp.secureserver.net's replies.
@pytest.mark.parametrize(("diagnostic", "cause"), [
    ("421 Temporarily rejected. Reverse DNS for this IP failed. IB108", "requireptr"),
    ("550 192.0.2.22 has sent to too many recipients this hour. IB607", "speeding"),
    ("554 Connection refused. This IP has a poor reputation on Cloudmark Sender "
     "Intelligence (CSI). IB103", "badreputation"),
    ("550 reader@example.net Invalid SPF record. Inspect your SPF settings, and try "
     "again. IB508", "authfailure"),
    ("550 reader@example.net Blank From: addresses are not allowed. Provide a valid "
     "From. IB501", "notcompliantrfc"),
])
def test_godaddy_codes_name_the_cause(diagnostic: str, cause: str) -> None:
    status = "4.7.1" if diagnostic.startswith("4") else "5.7.1"
    message = dsn("smtp.secureserver.net", status, diagnostic)
    assert found(message) == [("reader@example.net", SOFT, cause)]


# Sisimai::Rhost::Spectrum: AUP#I / AUP#O and four digits, read as ranges.
def test_spectrum_aup_codes_name_the_cause() -> None:
    message = dsn("mx.charter.net", "5.7.1",
                  "554 5.7.1 Blocked - see https://www.spectrum.net/support AUP#I1370")
    assert found(message) == [("reader@example.net", SOFT, "speeding")]
    message = dsn("mx.charter.net", "5.7.1",
                  "554 5.7.1 Rejected - reverse DNS check failed AUP#I1120")
    assert found(message) == [("reader@example.net", SOFT, "requireptr")]


# Sisimai::Rhost::Cox: AUP# and Cox's own code names, then its phrases.
def test_cox_codes_and_phrases_name_the_cause() -> None:
    message = dsn("mx.east.cox.net", "5.7.1",
                  "554 5.7.1 cox.net rejected connection, AUP#CXDNS")
    assert found(message) == [("reader@example.net", SOFT, "requireptr")]
    message = dsn("mx.east.cox.net", "5.7.1",
                  "554 5.7.1 sender authentication failed AUP#CXSNDR")
    assert found(message) == [("reader@example.net", SOFT, "authfailure")]
    message = dsn("mx.east.cox.net", "4.7.1",
                  "421 4.7.1 esmtp no data before greeting - contact your provider")
    assert found(message) == [("reader@example.net", SOFT, "policyviolation")]


# Sisimai::Rhost::IUA: a link to mail.i.ua/err/N in the reply of *.email.ua.
def test_iua_error_links_name_the_cause() -> None:
    # Error 3: the mailbox was not used for three months (suspend, soft), though the
    # words and the code alone say "unknown" (hard).
    said = "550 5.1.1 Mailbox unknown, see https://mail.i.ua/err/3/"
    assert found(dsn("mx1.email.ua", "5.1.1", said)) == [
        ("reader@example.net", SOFT, "suspend")]
    assert found(dsn("mx1.email.ua", "5.2.2", "552 see https://mail.i.ua/err/4/")) == [
        ("reader@example.net", SOFT, "mailboxfull")]


# Sisimai::Rhost::FrancePTT: OFR, LPN or OUK and a number, of Orange and La Poste.
def test_orange_and_la_poste_codes_name_the_cause() -> None:
    message = dsn("smtp-in.orange.fr", "5.5.0",
                  "550 5.5.0 Le compte du destinataire est bloque. The recipient account is"
                  " blocked. LPN007_426")
    assert found(message) == [("reader@example.net", SOFT, "suspend")]
    message = dsn("mx.laposte.net", "4.2.0", "421 mwinf5c04 ME Trop de connexions, "
                  "ralentissez. Too many connections, slow down. LPN105_104")
    assert found(message) == [("reader@example.net", SOFT, "toomanyconn")]


# Sisimai::Rhost::Tencent: the phrases of *.qq.com.
def test_tencent_phrases_name_the_cause() -> None:
    message = dsn("mx3.qq.com", "5.7.1",
                  "550 Mail is rejected by recipients [MG5Bc3ADr0E= IP: 192.0.2.1]. "
                  "https://open.work.weixin.qq.com/help?doc_id=17528&notice=1")
    assert found(message) == [("reader@example.net", SOFT, "rejected")]
    message = dsn("mx3.qq.com", "5.7.1", "550 DMARC check failed. https://service.mail.qq.com")
    assert found(message) == [("reader@example.net", SOFT, "authfailure")]


def test_a_recipient_domain_of_a_known_host_reads_its_codes() -> None:
    # Sisimai asks the recipient's domain first: reader@cox.net, whatever relay answered.
    message = dsn("relay.example.org", "5.7.1", "554 5.7.1 rejected AUP#CXDNS",
                  recipient="reader@cox.net")
    assert found(message) == [("reader@cox.net", SOFT, "requireptr")]


def test_the_host_named_in_a_postfix_notice_reads_its_codes() -> None:
    # No DSN part: the host comes from "host … said:" in the notice's own words.
    message = b"""\
From: MAILER-DAEMON@mta.example.org (Mail Delivery System)
To: bounces@news.example.org
Subject: Undelivered Mail Returned to Sender
Message-ID: <report-2@mta.example.org>

This is the mail system at host mta.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<reader@example.net>: host mx1.email.ua[192.0.2.7] said: 550 5.1.1 Mailbox
    unknown, see https://mail.i.ua/err/3/ (in reply to RCPT TO command)
"""
    assert found(message) == [("reader@example.net", SOFT, "suspend")]


@pytest.mark.parametrize("host", ["mx.example.net", "secureserver.net.example.net",
                                  "notcox.net", "mx1.email.ua.example.org", "cox.com",
                                  "mx.qq.com.example.org", ""])
def test_other_hosts_keep_the_generic_reading(host: str) -> None:
    # The same words from a host that is not the family's (a look-alike name included)
    # are read by the generic words: an unknown mailbox, hard.
    said = "550 5.1.1 Mailbox unknown, see https://mail.i.ua/err/3/ IB108 AUP#CXDNS"
    assert found(dsn(host, "5.1.1", said)) == [("reader@example.net", HARD, "userunknown")]


def test_a_delayed_report_is_never_hard_by_the_hosts_code() -> None:
    message = dsn("mx1.email.ua", "4.1.1", "450 see https://mail.i.ua/err/2/").replace(
        b"Action: failed", b"Action: delayed")
    assert found(message) == [("reader@example.net", SOFT, "expired")]


def test_every_host_reason_is_a_known_soft_or_hard_cause() -> None:
    from digest.audience.bouncereasons import CAUSES, HARD_CAUSES
    tables = (bouncehosts._GODADDY_CODES, bouncehosts._GODADDY_PHRASES,
              dict((c, c) for *_, c in bouncehosts._SPECTRUM_CODES), bouncehosts._COX_CODES,
              bouncehosts._COX_PHRASES, bouncehosts._IUA_CODES, bouncehosts._FRANCE_CODES,
              bouncehosts._TENCENT_PHRASES)
    names = {cause for table in tables for cause in table.values() if isinstance(cause, str)}
    names |= {cause for table in (bouncehosts._GODADDY_PHRASES, bouncehosts._COX_PHRASES,
                                  bouncehosts._TENCENT_PHRASES) for cause in table}
    assert names <= CAUSES
    assert len(bouncehosts._FAMILIES) == 6
    assert not {"speeding", "requireptr", "authfailure"} & HARD_CAUSES


def test_remote_host_reads_the_field_then_the_words() -> None:
    assert remote_host("dns; MX.Charter.NET.") == "mx.charter.net"
    assert remote_host("", "host mx1.email.ua[192.0.2.7] said: 550") == "mx1.email.ua"
    assert remote_host("", "... while talking to mx.east.cox.net.:") == "mx.east.cox.net"
    assert remote_host("", "no host here") == ""
    assert host_cause("mx.charter.net", "AUP#I9999") == ""
