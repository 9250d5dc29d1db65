"""Bounce notices of the Unix MTAs that carry no RFC 3464 report, read by each MTA's own
marker lines (digest.audience.bounceformats_unix) through read_message.

No public sample of these notices outside Sisimai's own collection is at hand, so each
notice here is the smallest one the MTA writes, its wording taken from the MTA's source
as cited beside it; none is added to the labelled corpus."""

from __future__ import annotations

from digest.audience.bounceformats import read_formats
from digest.audience.bouncemail import read_message
from digest.store.models import BounceKind

HARD, SOFT = BounceKind.HARD, BounceKind.SOFT


def _notice(sender: str, subject: str, body: str) -> bytes:
    head = (f"From: {sender}\nTo: news@example.org\nSubject: {subject}\n"
            "Date: Mon, 07 Dec 2026 10:00:00 +0000\nMessage-ID: <notice-1@mx.example.net>\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n")
    return (head + body).encode()


def _found(message: bytes) -> list[tuple[str, BounceKind, str]]:
    return [(f.recipient, f.kind, f.cause) for f in read_message(message, "test").findings]


# The quoted original, as every notice below ends.
ORIGINAL = ("From: news@example.org\nTo: subscriber@example.net\nSubject: This week\n"
            "Message-ID: <edition-7@example.org>\n\nThe news.\n")


def test_sendmail_v5_transcript_names_each_failed_recipient() -> None:
    """Sendmail v5 (savemail.c: "----- Transcript of session follows -----", then
    "550 <user@host>... User unknown" per recipient, the remote reply on "<<< " lines):
    two recipients, one unknown (hard), one over quota (soft)."""
    body = ("   ----- Transcript of session follows -----\n"
            "While talking to mx.example.net:\n"
            ">>> RCPT To:<alice@example.net>\n"
            "<<< 550 <alice@example.net>... User unknown\n"
            "550 <alice@example.net>... User unknown\n"
            ">>> RCPT To:<bob@example.net>\n"
            "<<< 552 <bob@example.net>... Mailbox full\n"
            "552 <bob@example.net>... Mailbox full\n\n"
            "   ----- Unsent message follows -----\n" + ORIGINAL)
    message = _notice("Mail Delivery Subsystem <MAILER-DAEMON@mx.example.org>",
                      "Returned mail: User unknown", body)
    assert _found(message) == [("alice@example.net", HARD, "userunknown"),
                               ("bob@example.net", SOFT, "mailboxfull")]


def test_sendmail_v8_warning_is_soft_whatever_the_words() -> None:
    """Sendmail v8's delay warning (savemail.c: "**  THIS IS A WARNING MESSAGE ONLY  **")
    without a DSN part: the transcript's 4xx reply is a delay, never a hard bounce."""
    body = ("    **********************************************\n"
            "    **      THIS IS A WARNING MESSAGE ONLY      **\n"
            "    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **\n"
            "    **********************************************\n\n"
            "The original message was received at Mon, 7 Dec 2026 06:00:00 GMT\n\n"
            "   ----- Transcript of session follows -----\n"
            "451 4.1.1 <carol@example.net>... No such user here, try again later\n"
            "Warning: message still undelivered after 4 hours\n\n"
            "   ----- Original message follows -----\n" + ORIGINAL)
    message = _notice("Mail Delivery Subsystem <MAILER-DAEMON@mx.example.org>",
                      "Warning: could not send message for past 4 hours", body)
    assert _found(message) == [("carol@example.net", SOFT, "expired")]


def test_messaging_server_report_is_read_by_its_fields() -> None:
    """Sun/Oracle Communications Messaging Server: "This report relates to a message you
    sent with the following header fields:", then per recipient "Recipient address:",
    "Reason:" and "Diagnostic code:" (the text part, here without its DSN part)."""
    body = ("This report relates to a message you sent with the following header fields:\n\n"
            "  Message-id: <edition-7@example.org>\n"
            "  Date: Mon, 07 Dec 2026 09:00:00 +0000\n"
            "  From: news@example.org\n"
            "  To: dave@example.net\n"
            "  Subject: This week\n\n"
            "Your message cannot be delivered to the following recipients:\n\n"
            "  Recipient address: dave@example.net\n"
            "  Reason: Remote SMTP server has rejected address\n"
            "  Diagnostic code: smtp;550 5.1.1 <dave@example.net>... User Unknown\n"
            "  Remote system: dns;mx.example.net (TCP|192.0.2.1|47323|192.0.2.25|25)\n\n"
            "  Recipient address: erin@example.net\n"
            "  Reason: Remote SMTP server has rejected address\n"
            "  Diagnostic code: smtp;552 5.2.2 Quota exceeded\n")
    message = _notice("Internet Mail Delivery <postmaster@mx.example.org>",
                      "Delivery Notification: Delivery has failed", body)
    assert _found(message) == [("dave@example.net", HARD, "userunknown"),
                               ("erin@example.net", SOFT, "mailboxfull")]


OPENSMTPD_INTRO = ("    Hi!\n\n"
                   "    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n")


def test_opensmtpd_failure_names_each_recipient() -> None:
    """OpenSMTPD (bounce.c: NOTICE_INTRO, notice_error, then "user@host: reply" lines,
    then "Below is a copy of the original message:")."""
    body = (OPENSMTPD_INTRO
            + "    An error has occurred while attempting to deliver a message for\n"
              "    the following list of recipients:\n\n"
              "frank@example.net: 550 5.1.1 <frank@example.net>: Recipient address rejected:"
              " User unknown in local recipient table\n"
              "grace@example.net: 552 5.2.2 Mailbox full\n\n"
              "    Below is a copy of the original message:\n\n" + ORIGINAL)
    message = _notice("Mailer Daemon <MAILER-DAEMON@mx.example.org>",
                      "Delivery status notification: error", body)
    assert _found(message) == [("frank@example.net", HARD, "userunknown"),
                               ("grace@example.net", SOFT, "mailboxfull")]


def test_opensmtpd_delay_warning_is_soft() -> None:
    """OpenSMTPD's notice_warning ("A message is delayed for more than …", "this is only
    a temporary failure report"): soft, whatever the remote server's words."""
    body = (OPENSMTPD_INTRO
            + "    A message is delayed for more than 4 hours for the following\n"
              "    list of recipients:\n\n"
              "heidi@example.net: 450 4.1.1 <heidi@example.net>: User unknown, try later\n\n"
              "    Please note that this is only a temporary failure report.\n"
              "    The message is kept in the queue for up to 4 days.\n"
              "    You DO NOT NEED to re-send the message to these recipients.\n\n"
              "    Below is a copy of the original message:\n\n" + ORIGINAL)
    message = _notice("Mailer Daemon <MAILER-DAEMON@mx.example.org>",
                      "Delivery status notification: warning", body)
    assert _found(message) == [("heidi@example.net", SOFT, "expired")]


def test_opensmtpd_first_releases_recipient_and_reason() -> None:
    """OpenSMTPD's first releases (smtpd's bounce client: "Hi !", the MAILER-DAEMON
    line, "Recipient: user@host", "Reason:" and the reason on the next line)."""
    body = ("Hi !\n\n"
            "This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n"
            "An error has occurred while attempting to deliver a message.\n\n"
            "Recipient: ruth@example.net\n"
            "Reason:\n"
            "550 5.1.1 <ruth@example.net>... User unknown\n\n"
            "Below is a copy of the original message:\n\n" + ORIGINAL)
    message = _notice("Mailer Daemon <MAILER-DAEMON@mx.example.org>",
                      "Delivery status notification", body)
    assert _found(message) == [("ruth@example.net", HARD, "userunknown")]


EXIM_INTRO = "This message was created automatically by mail delivery software.\n\n"


def test_exim_failure_reads_each_indented_recipient() -> None:
    """Exim (deliver.c: "This message was created automatically by mail delivery
    software.", "A message that you sent could not be delivered …", each recipient
    indented two spaces, what happened four), without X-Failed-Recipients."""
    body = (EXIM_INTRO
            + "A message that you sent could not be delivered to one or more of its\n"
              "recipients. This is a permanent error. The following address(es) failed:\n\n"
              "  ivan@example.net\n"
              "    SMTP error from remote mail server after RCPT TO:<ivan@example.net>:\n"
              "    host mx.example.net [192.0.2.1]: 550 5.1.1 No such user here\n"
              "  judy@example.net\n"
              "    SMTP error from remote mail server after end of data:\n"
              "    host mx.example.net [192.0.2.1]: 552 5.2.2 Mailbox is full\n\n"
              "------ This is a copy of the message, including all the headers. ------\n\n"
              + ORIGINAL)
    message = _notice("Mail Delivery System <Mailer-Daemon@mx.example.org>",
                      "Mail delivery failed: returning message to sender", body)
    assert _found(message) == [("ivan@example.net", HARD, "userunknown"),
                               ("judy@example.net", SOFT, "mailboxfull")]


def test_exim_delay_warning_is_soft() -> None:
    """Exim's warning (deliver.c: "has not yet been delivered", "Delay reason:", "No
    action is required on your part"): soft, whatever the remote server's words."""
    body = (EXIM_INTRO
            + "A message that you sent has not yet been delivered to one or more of its\n"
              "recipients after more than 24 hours on the queue on mx.example.org.\n\n"
              "The message identifier is:     1kmXyZ-0001aB-Cd\n"
              "The subject of the message is: This week\n\n"
              "The address to which the message has not yet been delivered is:\n\n"
              "  mallory@example.net\n"
              "    Delay reason: SMTP error from remote mail server after RCPT TO:"
              "<mallory@example.net>:\n"
              "    host mx.example.net [192.0.2.1]: 450 4.1.1 User unknown, try later\n\n"
              "No action is required on your part. Delivery attempts will continue for\n"
              "some time, and this warning may be repeated at intervals if the message\n"
              "remains undelivered. Eventually the mail delivery software will give up,\n"
              "and when that happens, the message will be returned to you.\n")
    message = _notice("Mail Delivery System <Mailer-Daemon@mx.example.org>",
                      "Warning: message 1kmXyZ-0001aB-Cd delayed 24 hours", body)
    assert _found(message) == [("mallory@example.net", SOFT, "expired")]


POSTFIX_INTRO = ("This is the mail system at host mx.example.org.\n\n"
                 "####### THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE."
                 " #######\n\n")


def test_postfix_delay_notice_without_its_report_part_is_soft() -> None:
    """Postfix's delayed-mail notice (bounce_template.c's default delay template) whose
    message/delivery-status part a gateway dropped: a delay, soft, for every recipient it
    lists, the one an alias expanded by the address it was sent to."""
    body = (POSTFIX_INTRO
            + "Your message could not be delivered for more than 4 hour(s).\n"
              "It will be retried until it is 5 day(s) old.\n\n"
              "For further assistance, please send mail to postmaster.\n\n"
              "                   The mail system\n\n"
              "<niaj@example.net>: host mx.example.net[192.0.2.1] said: 450 4.1.1\n"
              "    <niaj@example.net>: Recipient address rejected: User unknown (in reply\n"
              "    to RCPT TO command)\n\n"
              "<olivia@example.net>: connect to mx.example.net[192.0.2.1]:25: Connection\n"
              "    timed out\n\n"
              "<p.one@mail.example.net> (expanded from <pat@example.net>): host\n"
              "    mail.example.net[192.0.2.2] said: 452 4.2.2 Mailbox full (in reply to\n"
              "    RCPT TO command)\n")
    message = _notice("Mail Delivery System <MAILER-DAEMON@mx.example.org>",
                      "Delayed Mail (still being retried)", body)
    assert _found(message) == [("niaj@example.net", SOFT, "expired"),
                               ("olivia@example.net", SOFT, "networkerror"),
                               ("pat@example.net", SOFT, "mailboxfull")]


def test_apache_james_names_the_rcpt_to_of_its_details() -> None:
    """Apache James (AbstractNotify.java: "Error message below:", the error, "Message
    details:" with "RCPT TO: user@host")."""
    body = ("Hi. This is the James mail server at mx.example.org.\n"
            "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
            "This is a permanent error; I've given up. Sorry it didn't work out.  Below\n"
            "I include the list of recipients and the reason why I was unable to deliver\n"
            "your message.\n\n"
            "Error message below:\n"
            "550 - Requested action not taken: no such user here\n\n"
            "Message details:\n"
            "  Subject: This week\n"
            "  Sent date: Mon Dec 07 09:00:00 UTC 2026\n"
            "  MAIL FROM: news@example.org\n"
            "  RCPT TO: peggy@example.net\n"
            "  From: news@example.org\n"
            "  To: peggy@example.net\n"
            "  Size (in bytes): 1024\n"
            "  Number of lines: 12\n")
    message = _notice("postmaster@mx.example.org", "[BOUNCE]", body)
    assert _found(message) == [("peggy@example.net", HARD, "userunknown")]


def test_readers_need_their_marker() -> None:
    """Without its MTA's marker line no reader names anyone: a plain message that lists
    addresses the way these notices do is no notice."""
    lookalike = ("Our new addresses:\n\n  ivan@example.net\n    sales\n"
                 "<niaj@example.net>: support\n"
                 "550 <alice@example.net>... the old one\n"
                 "  RCPT TO: peggy@example.net\n")
    assert read_formats(lookalike) == []


QMAIL = ("Hi. This is the qmail-send program at mx.example.org.\n"
         "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
         "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
         "<quinn@example.net>:\n"
         "Sorry, no mailbox here by that name. (#5.1.1)\n\n"
         "<rupert@example.net>:\n"
         "192.0.2.1 does not like recipient.\n"
         "Remote host said: 552 5.2.2 Mailbox quota exceeded\n"
         "Giving up on 192.0.2.1.\n\n"
         "--- Below this line is a copy of the message.\n\n")


def test_qmail_names_each_recipient() -> None:
    """qmail (qmail-send.c: "Hi. This is the qmail-send program at …", then "<user@host>:"
    and what happened on the lines after it, up to a blank line), read by Mailman's qmail
    detector: no reader here takes it over."""
    message = _notice("MAILER-DAEMON@mx.example.org", "failure notice", QMAIL + ORIGINAL)
    assert _found(message) == [("quinn@example.net", HARD, "userunknown"),
                               ("rupert@example.net", SOFT, "mailboxfull")]
