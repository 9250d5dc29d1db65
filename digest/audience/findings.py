"""What reading a bounce, a complaint or a provider's event finds: the one shape every
source (the bounce mailbox, a folder of messages, a webhook, the SMTP session) hands to
`audience.bounces.record_findings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..store.models import BounceKind
from ..tokens import VerpClaims

__all__ = ["Finding", "Proof", "Reading"]


@dataclass(frozen=True)
class Finding:
    """One recipient a report is about."""

    source: str                      # where it came from: a file path, "imap:INBOX/42", …
    recipient: str                   # lower-cased address; "" when only VERP names them
    kind: BounceKind
    status: str | None               # the enhanced status code, e.g. "5.1.1"
    reason: str                      # short text (the diagnostic, cleaned, ≤ 300 chars)
    subscriber_id: int | None = None     # from a valid VERP token
    edition_id: int | None = None        # from a valid VERP token
    # Identifies the report, so that reading it twice records it once (the Message-ID of
    # the report, a provider's event id, …); the service adds the recipient and kind.
    report_id: str = ""
    occurred_at: datetime | None = None
    # Why, by the reason names of Sisimai (the reference bounce parser): userunknown,
    # hostunknown, hasmoved (hard); mailboxfull, filtered, blocked, policyviolation,
    # spamdetected, suspend, expired, … (soft); feedback for a complaint, vacation for an
    # automatic reply; "" when the source gives none (a provider's event, say).
    cause: str = ""


@dataclass(frozen=True)
class Proof:
    """What a message from the bounce mailbox shows of its link to mail we sent, as read
    from the message; the bounce desk checks it against the store before acting."""

    verp: VerpClaims | None = None       # a valid token of ours (VERP on)
    # Message-IDs the report quotes of the message it is about (the returned message or
    # its headers, an ARF's attached headers, "Message-ID:" lines of a quoted original).
    quoted_ids: tuple[str, ...] = ()
    # In-Reply-To and References: a reply to one of our mails.
    reply_ids: tuple[str, ...] = ()
    # The receiving server (its Authentication-Results, under the configured authserv-id)
    # says the From address passed DKIM (aligned header.d) or DMARC.
    sender_authenticated: bool = False


@dataclass
class Reading:
    """What one message yields: findings, a request to unsubscribe its sender (a mail to
    digest.unsubscribe_mailto), or nothing (ignored: ordinary mail)."""

    source: str
    findings: list[Finding] = field(default_factory=list)
    unsubscribe: str | None = None   # the From address of a mail to unsubscribe_mailto
    report_id: str = ""
    # Set for every message read from mail (anyone can write to the bounce address): the
    # desk acts only on what it proves. None for sources that authenticate themselves
    # (a provider's signed webhook, the SMTP session of our own sending).
    proof: Proof | None = None

    @property
    def ignored(self) -> bool:
        return not self.findings and self.unsubscribe is None
