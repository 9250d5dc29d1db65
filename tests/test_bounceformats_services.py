"""Bounce notices of mail services and filtering gateways (bounceformats_services) and
complaints mailed outside ARF's multipart/report, read by read_message.

No real sample of these formats is public outside the reference parser's own collection,
so each notice here is written from the wording its service prints, as Sisimai's Lhost
module for it records it (lib/Sisimai/Lhost/<name>.pm, lib/Sisimai/ARF.pm): the marker
lines, the recipient lines and the error words are the service's; the addresses and hosts
are example ones."""

from __future__ import annotations

import base64

import pytest

from digest.audience.bounceformats import read_formats
from digest.audience.bouncemail import read_message
from digest.store.models import BounceKind

HARD, SOFT = BounceKind.HARD, BounceKind.SOFT


def _plain(sender: str, subject: str, body: str, *, headers: str = "") -> bytes:
    return (f"From: {sender}\nTo: bounces@news.example.org\nSubject: {subject}\n"
            f"Date: Mon, 07 Dec 2026 10:00:00 +0000\nMessage-ID: <n1@mx.example.net>\n"
            f"{headers}MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
            f"{body}").encode()


def _found(message: bytes) -> list[tuple[str, BounceKind, str]]:
    reading = read_message(message, "notice")
    return [(f.recipient, f.kind, f.cause) for f in reading.findings]


# Gmail.pm's comments: Gmail's plain-text notice, permanent and delayed, old and new forms.
GMAIL_OLD = """This is an automatically generated Delivery Status Notification

Delivery to the following recipient failed permanently:

     gone@example.jp

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the recipient
domain. We recommend contacting the other email provider for further
information about the cause of this error. The error that the other server
returned was: 550 550 <gone@example.jp>: User unknown (state 14).

----- Original message -----

Subject: The weekly digest
"""

GMAIL_NEW = """Delivery to the following recipient failed permanently:

     nobody@example.jp

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for
 the recipient domain example.jp by mx.example.jp. [192.0.2.59].

The error that the other server returned was:
550 5.1.1 <nobody@example.jp>... User Unknown

----- Original message -----
"""

GMAIL_DELAYED = """THIS IS A WARNING MESSAGE ONLY.

YOU DO NOT NEED TO RESEND YOUR MESSAGE.

Delivery to the following recipient has been delayed:

     full@example.jp

Message will be retried for 2 more day(s)

Technical details of temporary failure:
Google tried to deliver your message, but it was rejected by the recipient
domain. The error that the other server returned was: 450 450 4.2.2
<full@example.jp>... Mailbox Full (state 14).
"""

# A delay warning as a Gmail user quoted it in a public forum thread: still retried, so no
# verdict on the address whatever the DNS said.
GMAIL_DELAYED_DNS = """This is an automatically generated Delivery Status Notification

THIS IS A WARNING MESSAGE ONLY.

YOU DO NOT NEED TO RESEND YOUR MESSAGE.

Delivery to the following recipient has been delayed:

     kevin@mydomain.example

Message will be retried for 1 more day(s)

Technical details of temporary failure:
DNS Error: Domain name not found

----- Original message -----
"""

GMAIL_DNS = """Delivery to the following recipient failed permanently:

     someone@nxdomain.example

Technical details of permanent failure:
DNS Error: Domain name not found
"""


@pytest.mark.parametrize(("body", "expected"), [
    (GMAIL_OLD, [("gone@example.jp", HARD, "userunknown")]),
    (GMAIL_NEW, [("nobody@example.jp", HARD, "userunknown")]),
    (GMAIL_DELAYED, [("full@example.jp", SOFT, "mailboxfull")]),
    (GMAIL_DNS, [("someone@nxdomain.example", HARD, "hostunknown")]),
    (GMAIL_DELAYED_DNS, [("kevin@mydomain.example", SOFT, "expired")]),
])
def test_gmail_plain_text_notices_name_their_recipients(
        body: str, expected: list[tuple[str, BounceKind, str]]) -> None:
    message = _plain("Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
                     "Delivery Status Notification (Failure)", body)
    assert _found(message) == expected


def test_gmail_state_names_the_cause_when_the_reply_says_none() -> None:
    # (state 13): refused at EHLO, Gmail.pm's table says blocked; the reply's words
    # ("Access denied") name nothing.
    body = GMAIL_OLD.replace("550 550 <gone@example.jp>: User unknown (state 14)",
                             "550 550 Access denied (state 13)")
    assert _found(_plain("mailer-daemon@googlemail.com", "Delivery Status Notification",
                         body)) == [("gone@example.jp", SOFT, "blocked")]


# TrendMicro.pm's comments: InterScan MSS quotes the SMTP exchange, or says it could not
# deliver to an address (which Sisimai reads as an unknown recipient).
TREND = """Mail could not be delivered

Sent <<< RCPT TO:<kijitora@example.co.jp>
Received >>> 550 5.1.1 <kijitora@example.co.jp>... user unknown

Unable to deliver message to <neko@example.jp> (and other recipients in the same domain).
"""


def test_trend_micro_interscan_notice_names_each_recipient() -> None:
    message = _plain('"InterScan MSS" <postmaster@gw.example.co.jp>',
                     "Mail could not be delivered", TREND)
    assert sorted(_found(message)) == [("kijitora@example.co.jp", HARD, "userunknown"),
                                       ("neko@example.jp", HARD, "userunknown")]


# mFILTER.pm's comments: m-FILTER's Japanese notice, ISO-2022-JP as it is mailed.
MFILTER = """このメールは「m-FILTER」が自動的に生成して送信しています。
メールサーバーとの通信中、下記の理由により
このメールは送信できませんでした。

以下のメールアドレスへの送信に失敗しました。
kijitora@example.jp


-------server message
550 5.1.1 unknown user <kijitora@example.jp>

-------SMTP command
DATA

-------original message
"""


def test_m_filter_notice_names_the_recipient_and_the_reply() -> None:
    message = (b"From: Mail Delivery System <mailer-daemon@gw.example.jp>\n"
               b"To: bounces@news.example.org\nSubject: failure notice\nX-Mailer: m-FILTER\n"
               b"MIME-Version: 1.0\nContent-Type: text/plain; charset=iso-2022-jp\n\n"
               + MFILTER.encode("iso-2022-jp"))
    assert _found(message) == [("kijitora@example.jp", HARD, "userunknown")]


# X2.pm's comments.
X2 = """Message from example.com.
Unable to deliver message to the following address(es).

<kijitora@example.com>:
This user doesn't have a example.com account (kijitora@example.com) [0]

--- Original message follows.
"""


@pytest.mark.parametrize("subject", ["failure delivery", "failed delivery"])
def test_x2_notice_names_the_recipient(subject: str) -> None:
    # X2.pm knows the notice by these subjects as well as by a MAILER-DAEMON sender; a
    # sender of no daemon's name is not what makes it a bounce.
    message = _plain("Mail System <mail@mx.example.com>", subject, X2)
    assert _found(message) == [("kijitora@example.com", HARD, "userunknown")]


# EZweb.pm's comments and its table of au's own sentences.
EZWEB_DISABLED = """The user(s) account is disabled.

<disabled@ezweb.ne.jp>: 550 user unknown
"""

EZWEB_REJECTED = """Each of the following recipients was rejected by a remote
mail server.

   Recipient: <nobody@ezweb.ne.jp>
   >>> RCPT TO:<nobody@ezweb.ne.jp>
   <<< 550 <nobody@ezweb.ne.jp>: rejected
"""

EZWEB_QUOTA = """The user(s) account is temporarily over quota.

<full@ezweb.ne.jp>
"""


@pytest.mark.parametrize(("body", "expected"), [
    # au's own sentence names the cause for the recipients under it (Sisimai: suspend).
    (EZWEB_DISABLED, [("disabled@ezweb.ne.jp", SOFT, "suspend")]),
    (EZWEB_REJECTED, [("nobody@ezweb.ne.jp", HARD, "userunknown")]),
    (EZWEB_QUOTA, [("full@ezweb.ne.jp", SOFT, "mailboxfull")]),
])
def test_au_ezweb_notices_name_their_recipients(
        body: str, expected: list[tuple[str, BounceKind, str]]) -> None:
    message = _plain("<Postmaster@ezweb.ne.jp>", "Mail System Error - Returned Mail", body)
    assert _found(message) == expected


# KDDI.pm's comments and its table.
KDDI = """Your mail sent on: Thu, 29 Apr 2010 11:04:47 +0900
    Could not be delivered to: <full@example.ezweb.ne.jp>
    As their mailbox is full.

Your mail sent on: Thu, 29 Apr 2010 11:04:47 +0900
    Could not be delivered to: <lost@nowhere.example>
    As the remote domain doesnt exist.
"""


def test_au_by_kddi_notice_names_each_recipient_with_its_cause() -> None:
    message = _plain("no-reply@app.auone-net.jp", "Returned mail", KDDI)
    assert sorted(_found(message)) == [("full@example.ezweb.ne.jp", SOFT, "mailboxfull"),
                                       ("lost@nowhere.example", HARD, "hostunknown")]


def test_readers_of_services_read_no_other_notice() -> None:
    # A Postfix-like list and prose that only talks about these services' words.
    other = ("I was unable to deliver your message to the following addresses:\n\n"
             "<someone@example.org>: host mx.example.org said: 550 unknown user\n"
             "Delivery to the following person was lovely.\n")
    assert read_formats(other) == []


# ---------------------------------------------------------------------------------------
# Complaints.

ORIGINAL = ("From: Digest <news@news.example.org>\nTo: reader@example.com\n"
            "Subject: The weekly digest\nMessage-ID: <ed1@news.example.org>\n\nHello\n")


def _ses_complaint(original_part: str) -> bytes:
    # ARF.pm: Amazon SES's complaint mail is multipart/mixed, From
    # complaints@email-abuse.amazonses.com, "complaint about message from <IP>".
    return ("From: complaints@email-abuse.amazonses.com\nTo: bounces@news.example.org\n"
            "Subject: complaint about message from 192.0.2.1\n"
            "Date: Mon, 07 Dec 2026 10:00:00 +0000\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="B"\n\n--B\n'
            "Content-Type: text/plain\n\nThis is an email abuse report for an email message"
            " received from IP 192.0.2.1 on Mon, 07 Dec 2026 09:00:00 +0000\n\n--B\n"
            + original_part + "\n--B--\n").encode()


def test_amazon_ses_complaint_mail_names_the_reader_by_the_original_to() -> None:
    message = _ses_complaint("Content-Type: message/rfc822\n\n" + ORIGINAL)
    assert _found(message) == [("reader@example.com", BounceKind.COMPLAINT, "feedback")]


def test_amazon_ses_complaint_mail_with_original_rcpt_to_in_its_text() -> None:
    message = _ses_complaint("Content-Type: message/rfc822\n\n" + ORIGINAL).replace(
        b"+0000\n\n--B\nContent-Type: message/rfc822",
        b"+0000\nOriginal-Rcpt-To: <named@example.com>\n\n--B\nContent-Type: message/rfc822")
    assert _found(message) == [("named@example.com", BounceKind.COMPLAINT, "feedback")]


def test_a_complaint_subject_alone_names_nobody_by_the_original_to() -> None:
    message = _ses_complaint("Content-Type: message/rfc822\n\n" + ORIGINAL).replace(
        b"complaints@email-abuse.amazonses.com", b"someone@example.net")
    assert _found(message) == []


def _arf(original_part: str, fields: str = "Feedback-Type: abuse\nUser-Agent: FBL/1.0\n"
         "Version: 1\n") -> bytes:
    return ("From: fbl@isp.example\nTo: bounces@news.example.org\nSubject: FBL report\n"
            "MIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\n\n'
            "--B\nContent-Type: text/plain\n\nThis is an email abuse report.\n\n--B\n"
            f"Content-Type: message/feedback-report\n\n{fields}\n--B\n"
            + original_part + "\n--B--\n").encode()


def test_arf_reader_is_the_to_of_a_base64_encoded_original() -> None:
    encoded = base64.encodebytes(ORIGINAL.encode()).decode()
    message = _arf("Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
                   + encoded)
    assert _found(message) == [("reader@example.com", BounceKind.COMPLAINT, "feedback")]


def test_arf_opt_out_names_the_removal_recipient() -> None:
    message = _arf("Content-Type: text/rfc822-headers\n\n" + ORIGINAL.split("\n\n")[0],
                   fields="Feedback-Type: opt-out\nUser-Agent: FBL/1.0\nVersion: 1\n"
                          "Removal-Recipient: leaving@example.com\n")
    assert _found(message) == [("leaving@example.com", BounceKind.COMPLAINT, "feedback")]
