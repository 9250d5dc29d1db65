"""Reading bounce mail: what one raw message from the bounce mailbox says about whom.

`read_message` turns a message into a `Reading`: the recipients an RFC 3464 delivery
status notification (or a non-standard bounce, by its MTA's own format in
bounceformats*, else through Mailman's detectors in flufl.bounce) reports as failed or
delayed, the readers an ARF feedback report (RFC 5965), Microsoft's JMRP or Amazon SES's
complaint mail says complained, the sender of an automatic reply (RFC 3834), or the
sender of a mail to the unsubscribe address. Nothing here touches the store: the bounce
desk (`audience.bounces`) records what a Reading holds.

`classify_failure` says whether a failure is hard (the address is gone) or soft (full,
blocked, too large, a network fault, expired, or unknown): the one rule for reports read
here and for a 5xx reply to RCPT TO during sending.

`iter_sources` reads messages from Maildirs, mbox files, folders of .eml files and single
message files.

Everything here reads hostile input: a malformed message yields at most an ignored
Reading, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import html
import json
import logging
import mailbox
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from pathlib import Path

from flufl.bounce import all_failures

from ..errors import InputError
from ..store.models import BounceKind
from ..text import clean_label
from ..tokens import VerpClaims
from .bounceformats import read_formats
from .bouncehosts import host_cause, remote_host
from .bouncereasons import cause_of, is_hard
from .findings import Finding, Proof, Reading
from .webhooks import WebhookRejected, read_ses_notification

__all__ = ["VerpLookup", "VerpLookupError", "classify_failure", "iter_sources", "read_message"]

log = logging.getLogger(__name__)

# Reads one of our VERP return paths (tokens.Verp.read): the claims of a valid token.
VerpLookup = Callable[[str], VerpClaims | None]

MAX_MESSAGE_BYTES = 20 * 1024 * 1024   # the rest of a bigger message is not read
MAX_PARTS = 400                        # MIME parts looked at in one message
MAX_DEPTH = 12                         # multipart nesting followed
MAX_TEXT = 64 * 1024                   # characters of one text part read
REASON_CHARS = 300
MAX_RECIPIENTS = 1000                  # recipients read from one message; the rest are not
MAX_SAID = 2000                        # characters of one recipient's diagnostic read

# ---------------------------------------------------------------------------------------
# Classifying a failure: hard (the address is gone) or soft (anything else).

# An enhanced status code (RFC 3463) in text; not part of a dotted IP address.
_CODE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")

# Addresses, host names, IP addresses and URLs: names, not words ("user@network.example"
# says nothing about the network, "mx.policy.example" nothing about a policy).
_NAMES = re.compile(r"\S*@\S*|\w+://\S*|[\w-]+(?:\.[\w-]+)+")


def _prose(text: str) -> str:
    return _NAMES.sub(" ", text)


def _codes(text: str) -> list[tuple[int, int, int]]:
    return [(int(a), int(b), int(c)) for a, b, c in _CODE.findall(text)]


def _pick_code(status: str | None, text: str) -> tuple[int, int, int] | None:
    """The most telling enhanced code: the status's when it is specific, else the first
    specific one in the text, else whatever generic code there is."""
    found = _codes(status or "") + _codes(text)
    specific = [code for code in found if code[2] != 0]
    if specific:
        return specific[0]
    return found[0] if found else None


def _code_text(code: tuple[int, int, int] | None) -> str | None:
    return ".".join(map(str, code)) if code else None


def _cause_of(status: str | None, text: str, *, delayed: bool = False, host: str = "",
              destination: str = "") -> tuple[BounceKind, str, str | None]:
    """(kind, cause, code) for a failure: the cause by Sisimai's reason names
    (`bouncereasons.cause_of`; a known remote host's own code first, `bouncehosts`), the
    kind by its hard-bounce rule."""
    code = _code_text(_pick_code(status, text))
    words = _prose(text)
    cause = cause_of(code, words, delayed=delayed, told=host_cause(host, text, destination))
    kind = BounceKind.HARD if is_hard(cause, code, words) else BounceKind.SOFT
    return kind, cause, code


# A recipient's own words (its diagnostic, its lines of the notice), kept: a report that
# says the same thing of a thousand recipients is read once. A whole notice is kept by
# its message (`_Text.cause`), not here, so this holds short texts only.
_cause = functools.lru_cache(maxsize=512)(_cause_of)


def classify_failure(status: str | None, text: str) -> BounceKind:
    """hard or soft for a failure, from its enhanced status code and its diagnostic text.

    The text's words name the cause first (an unknown user, a full mailbox, a filter, a
    block, …; `bouncereasons`), else the code's meaning (5.1.1 bad mailbox, 5.1.2 bad
    domain, 5.1.6 moved, 5.2.2 full, 5.7.x security, …). Hard only when the address is
    gone (userunknown, hostunknown, hasmoved) or its domain accepts no mail; a policy,
    filter or block is the sender's problem and soft, as is a failure nothing explains."""
    return _cause(status, text or "")[0]


# ---------------------------------------------------------------------------------------
# Small helpers: headers, addresses, text.

_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"@]+@[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,}")


def _bytes_text(data: bytes, charset: str = "utf-8") -> str:
    """Bytes as text: in the charset they claim, else UTF-8, else Windows-1252 (which
    takes any byte); a charset Python does not know is not trusted."""
    for name in (charset, "utf-8"):
        try:
            return data.decode(name)
        except (LookupError, ValueError, TypeError):
            continue
    return data.decode("cp1252", "replace")


def _escaped(value: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in value)


def _unfolded(value: str) -> str:
    """A raw header value as text: 8-bit bytes (which the parser keeps as surrogate
    escapes) read by `_bytes_text`, encoded words decoded."""
    if _escaped(value):
        value = _bytes_text(value.encode("ascii", "surrogateescape"))
    with contextlib.suppress(ValueError, LookupError, UnicodeError, TypeError, AttributeError,
                             MessageError):
        value = str(make_header(decode_header(value)))
    return clean_label(value)


def _all_headers(msg: Message, name: str) -> list[str]:
    """Every value of a header, as text."""
    name = name.lower()
    return [_unfolded(str(value)) for key, value in msg.raw_items() if key.lower() == name]


def _header(msg: Message, name: str) -> str:
    """A header's (first) value as text; "" when absent."""
    values = _all_headers(msg, name)
    return values[0] if values else ""


def _address(text: str) -> str:
    """A lower-cased mailbox address from "rfc822; <a@b>", "Name <a@b>" or "a@b"; "" when
    the text holds none."""
    text = text.strip()
    if ";" in text and "@" not in text.split(";", 1)[0]:
        text = text.split(";", 1)[1]
    text = text.strip().strip("<>").strip()
    if "<" in text or " " in text:
        text = parseaddr(text)[1]
    text = clean_label(text).strip("<>").lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or "." not in domain or len(text) > 254 or " " in text:
        return ""
    return text


def _addresses(values: Sequence[str]) -> list[str]:
    found = (_address(addr) for _, addr in getaddresses(list(values)))
    return [addr for addr in found if addr]


def _reason(text: str) -> str:
    return clean_label(text)[:REASON_CHARS]


def _raw_id(raw: bytes) -> str:
    """A report without a Message-ID is known by a hash of its bytes, line endings made
    one (IMAP hands over CRLF, a Maildir file holds LF: the same report)."""
    return "sha256:" + hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()


def _report_id(msg: Message | None, raw: bytes) -> str:
    message_id = _header(msg, "Message-ID").strip() if msg is not None else ""
    if message_id:
        return message_id[:250]
    return _raw_id(raw)


def _date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def _parts(msg: Message) -> Iterator[Message]:
    """The message and its parts, depth first, without entering attached messages
    (message/rfc822 is yielded, not opened); bounded in number and depth."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part
        if part.get_content_type() == "message/rfc822" or depth >= MAX_DEPTH:
            continue
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            children = [child for child in payload if isinstance(child, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


def _decoded(part: Message) -> str:
    """A text part's content as text, whatever its charset claims."""
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError, LookupError):
        data = None
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload[:MAX_TEXT] if isinstance(payload, str) else ""
    text = _bytes_text(data[: MAX_TEXT * 4], part.get_content_charset() or "utf-8")
    if part.get_content_subtype() == "html":
        text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    return text[:MAX_TEXT]


# Where the copy of the original message starts in a bounce's text.
_ORIGINAL = re.compile(
    r"^[\s>|*-]*(-+ ?(original message|below this line|this is a copy|the header of the"
    r" original|message header follows|returned message|original mail|unsent message|"
    r"start of returned message|message text follows)|original message (follows|headers)|"
    r"original message details|below this line is a copy|a copy of the original message|"
    r"the original message follows)",
    re.IGNORECASE | re.MULTILINE,
)



# What malformed input makes the email package (and the detectors built on it) raise.
_MALFORMED = (ValueError, TypeError, LookupError, UnicodeError, AttributeError,
              AssertionError, RecursionError, MessageError)


@dataclass(frozen=True)
class _Failure:
    recipient: str
    kind: BounceKind
    status: str | None
    reason: str
    cause: str = "undefined"


# Causes that say nothing yet: look further (the recipient's lines, then the notice).
_UNTOLD = frozenset({"undefined"})


class _Text:
    """A message's text, read once: every text part (the quoted original included), the
    report's own words (cut where the quoted original starts), and what they say, worked
    out once per message however many recipients ask."""

    def __init__(self, full: str) -> None:
        self.full = full
        cut = _ORIGINAL.search(full)
        self.notice = full[: cut.start()] if cut and cut.start() > 0 else full
        self._lines: list[str] | None = None
        self._where: dict[str, int] | None = None
        self._causes: dict[tuple[str | None, bool, str, str],
                           tuple[BounceKind, str, str | None]] = {}

    def cause(self, status: str | None, *, delayed: bool = False, host: str = "",
              destination: str = "") -> tuple[BounceKind, str, str | None]:
        """What the whole notice says, for a recipient whose own lines say nothing."""
        key = (status, delayed, host, destination)
        if key not in self._causes:
            self._causes[key] = _cause_of(status, self.notice, delayed=delayed, host=host,
                                          destination=destination)
        return self._causes[key]

    def window(self, address: str) -> str:
        """The lines of the notice about one address: the line naming it and the few
        after it, up to the next line that is only another address."""
        if self._lines is None or self._where is None:
            self._lines = self.notice.splitlines()
            self._where = {}
            for at, line in enumerate(self._lines):
                for named in _ADDRESS.findall(line):
                    self._where.setdefault(named.lower(), at)
        found = self._where.get(address)
        if found is None:
            return ""
        lines = self._lines
        picked = [lines[found]]
        for following in lines[found + 1: found + 7]:
            only = _ADDRESS.fullmatch(following.strip().strip("<>:\"' "))
            if only and only.group(0).lower() != address:
                break
            picked.append(following)
        return " ".join(picked)


def _texts(msg: Message) -> _Text:
    texts: list[str] = []
    for part in _parts(msg):
        # A multipart whose boundary is broken keeps its body as one string.
        broken = part.get_content_maintype() == "multipart" and isinstance(
            part.get_payload(), str)
        if broken or part.get_content_maintype() == "text" and part.get_content_subtype() in (
                "plain", "html"):
            texts.append(_decoded(part))
        if sum(len(text) for text in texts) > MAX_TEXT:
            break
    return _Text("\n".join(texts))


def _explain(recipient: str, status: str | None, said: str, text: _Text, *,
             delayed: bool = False, otherwise: str = "", remote_mta: str = "") -> _Failure:
    """The failure of one recipient: what its own diagnostic says, else the lines of the
    notice about it, else the notice as a whole (read once per message). The remote host
    that answered (the DSN's Remote-MTA, else the host the words name) may read its own
    codes (`bouncehosts`), as may the recipient's domain when it is such a host's."""
    said = said[:MAX_SAID]
    nearby = text.window(recipient)[:MAX_SAID] if recipient else ""
    where = {"host": remote_host(remote_mta, said, nearby),
             "destination": recipient.rpartition("@")[2]}
    kind, cause, code = _cause(status, said, delayed=delayed, **where)
    if cause in _UNTOLD and nearby:
        kind, cause, more = _cause(status, nearby, delayed=delayed, **where)
        code = code or more
    if cause in _UNTOLD:
        kind, cause, more = text.cause(status, delayed=delayed, **where)
        code = code or more
    if delayed and cause in _UNTOLD:
        cause = "expired"      # still being retried, and nothing says why
    reason = said or nearby or otherwise or ("delayed" if delayed else "failed")
    return _Failure(recipient, kind, code, _reason(reason), cause)


def _add(failures: dict[str, _Failure], failure: _Failure) -> None:
    """One failure per recipient; a hard one wins over a soft one for the same address."""
    known = failures.get(failure.recipient)
    if known is None or (known.kind is BounceKind.SOFT and failure.kind is BounceKind.HARD):
        failures[failure.recipient] = failure


# ---------------------------------------------------------------------------------------
# Delivery status notifications (RFC 3464).

_NO_BOUNCE_ACTIONS = ("deliver", "relay", "expand")


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    # A delivery-status part the parser left as text (encoded, or with odd headers).
    return [message_from_string(block.strip() + "\n")
            for block in re.split(r"\n[ \t]*\n", _decoded(part)) if block.strip()]


def _wrapped_reports(msg: Message) -> Iterator[Message]:
    """Delivery reports a gateway wrapped, as attached messages, in a message of its own
    (to add a disclaimer, say)."""
    for part in _parts(msg):
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            if (isinstance(inner, list) and inner and isinstance(inner[0], Message)
                    and inner[0].get_content_type() == "multipart/report"):
                yield inner[0]


def _recipient_blocks(msg: Message) -> list[Message] | None:
    """The per-recipient blocks of every message/delivery-status part (of the message,
    else of a report wrapped in it); None when there is no such part at all."""
    for report in (msg, *_wrapped_reports(msg)):
        blocks: list[Message] | None = None
        for part in _parts(report):
            if part.get_content_type() == "message/delivery-status":
                blocks = blocks if blocks is not None else []
                blocks.extend(block for block in _status_blocks(part) if
                              block.get("final-recipient") or block.get("original-recipient"))
                if len(blocks) >= MAX_RECIPIENTS:
                    return blocks[:MAX_RECIPIENTS]
        if blocks is not None:
            return blocks
    return None


def _dsn_recipient(block: Message) -> str:
    # Original-Recipient is the address as we gave it; Final-Recipient may be rewritten
    # (an alias, a gateway's form, an X.400 address).
    for name in ("original-recipient", "final-recipient"):
        recipient = _address(_header(block, name))
        if recipient:
            return recipient
    return ""


def _dsn_failure(block: Message, text: _Text) -> _Failure | None:
    """The failure one recipient block reports; None when it reports a delivery (or an
    action it does not name)."""
    action = _header(block, "action").lower()
    status = _header(block, "status")
    if action.startswith(_NO_BOUNCE_ACTIONS):
        return None
    delayed = action.startswith("delay") or (not action and status.startswith("4"))
    if not delayed and not action.startswith(("fail", "error")) and action:
        return None
    diagnostic = _header(block, "diagnostic-code")
    if re.match(r"^[\w-]{1,20};", diagnostic):
        diagnostic = diagnostic.split(";", 1)[1].strip()
    said = diagnostic or re.sub(r"^\s*\d\.\d{1,3}\.\d{1,3}\s*", "", status).strip(" ()")
    return _explain(_dsn_recipient(block), status, said, text, delayed=delayed,
                    remote_mta=_header(block, "remote-mta"))


def _dsn_failures(msg: Message, text: _Text) -> list[_Failure] | None:
    """Failures a DSN reports, one per recipient; [] for a DSN that reports only
    deliveries; None when the message holds no recipient block."""
    blocks = _recipient_blocks(msg)
    if not blocks:
        return None
    failures: dict[str, _Failure] = {}
    for block in blocks:
        failure = _dsn_failure(block, text)
        if failure is not None:
            _add(failures, failure)
    return list(failures.values())


# ---------------------------------------------------------------------------------------
# Bounces in other shapes: Mailman's detectors (flufl.bounce), Lotus Notes, plain lists.

_NOTES = re.compile(r"-+ *Failure Reasons *-+\s*\n(.*?)\n\s*-+ *Returned Message",
                    re.IGNORECASE | re.DOTALL)
# "The following recipients failed:", "… list of recipients:", "… addresses had permanent
# fatal errors -----", "… address failed:", GroupWise's "… was undeliverable to the
# following:" and the like, then the addresses.
_LIST_HEADING = re.compile(
    r"((following|these) (list of )?(recipient|address|user)s?(\(s\)|\(es\)|es)?"
    r"[^\n.]{0,60}|(undeliverable|not (be )?delivered) to the following)[:-]\s*$",
    re.IGNORECASE | re.MULTILINE)
_ANGLE_LINE = re.compile(r"^<" + _ADDRESS.pattern + r">:")
_LISTED_LINE = re.compile(r"^\s*[<\"']?(" + _ADDRESS.pattern + r")[>\"']?:?\s*(.*)$")


def _listed(text: _Text) -> list[tuple[str, str]]:
    """(address, what is said about it) from formats Mailman's detectors do not know:
    Lotus Notes' "Failure Reasons" and a plain list of failed recipients after a heading
    (OpenSMTPD, GMX, …)."""
    notes = _NOTES.search(text.full)
    if notes:
        said = notes.group(1)
        return [(address.lower(), said) for address in _ADDRESS.findall(said)]
    heading = _LIST_HEADING.search(text.notice)
    lines = text.notice[heading.end():].splitlines()[:20] if heading else [
        # No heading: Postfix's and qmail's "<address>: what happened" lines.
        line for line in text.notice.splitlines() if _ANGLE_LINE.match(line)]
    found = []
    for line in lines:
        listed = _LISTED_LINE.match(line)
        if listed:
            address = listed.group(1).lower()
            found.append((address, text.window(address) or listed.group(2)))
    return found


def _explained(address: str, text: _Text, temporary: bool) -> _Failure:
    return _explain(address, None, "", text, delayed=temporary,
                    otherwise="" if temporary else text.notice)


def _for_detectors(msg: Message) -> None:
    """Ready a message for Mailman's detectors, in place (nothing after them needs what
    this drops).

    8-bit header values are rewritten as text: the parser hands them out as Header
    objects, on which the detectors call str methods and raise (flufl.bounce 6.0: the
    Sina, Postfix and other detectors), which stops every detector after them. A message
    without a From gets an empty one: the Yale detector takes the first of
    getaddresses([""]), which is [] on this Python, and raises too. Attachments that are
    not text are emptied and long text cut (as `_decoded` reads it): the SimpleMatch
    detector runs its patterns over every line of every part, and a 20 MB attachment
    took it ten seconds."""
    if not str(msg.get("from", "")).strip():
        del msg["from"]
        msg["From"] = "<>"
    for count, part in enumerate(msg.walk()):
        if count >= MAX_PARTS:
            break
        payload = part.get_payload()
        if part.get_content_maintype() not in ("text", "message", "multipart"):
            part.set_payload("")
        elif isinstance(payload, str) and len(payload) > MAX_TEXT * 4:
            part.set_payload(payload[: MAX_TEXT * 4])
        items = list(part.raw_items())
        if any(_escaped(str(value)) for _, value in items):
            for name in {name for name, _ in items}:
                del part[name]
            for name, value in items:
                part[name] = _unfolded(str(value)) if _escaped(str(value)) else value


def _formatted_failures(text: _Text) -> list[_Failure]:
    """Failures an MTA's own notice format names (`bounceformats`), the cause taken from
    the MTA's own error name when it gives one."""
    found: dict[str, _Failure] = {}
    for listed in read_formats(text.notice):
        failure = _explain(listed.address, None, listed.said, text, delayed=listed.delayed)
        # The MTA's own error name for this recipient, when their own words name no
        # cause, before what the rest of the notice says (it may be about others).
        own = _cause(None, listed.said)[1] if listed.said else "undefined"
        if listed.cause and (own in _UNTOLD or failure.cause in {
                "undefined", "expired", "securityerror", "systemerror"}):
            hard = is_hard(listed.cause, failure.status, listed.said) and not listed.delayed
            failure = replace(failure, cause=listed.cause,
                              kind=BounceKind.HARD if hard else BounceKind.SOFT)
        _add(found, failure)
    return list(found.values())


def _detected_failures(msg: Message, text: _Text) -> list[_Failure]:
    formatted = _formatted_failures(text)
    if formatted:
        return formatted
    _for_detectors(msg)
    try:
        temporary, permanent = all_failures(msg)
    except _MALFORMED:
        temporary, permanent = frozenset(), frozenset()
    found: dict[str, _Failure] = {}
    for addresses, is_temporary in ((permanent, False), (temporary, True)):
        for raw_address in sorted(addresses)[:MAX_RECIPIENTS]:
            address = _address(raw_address.decode("ascii", "replace"))
            if address:
                _add(found, _explained(address, text, is_temporary))
    if not found:
        for address, said in _listed(text):
            _add(found, _explain(address, None, said, text))
    return list(found.values())


_BOUNCE_SENDER = re.compile(
    r"^(mailer-?daemon|mail-?daemon|postmaster|mdaemon|mail\.delivery\.system|ndr"
    r"|mailerdaemon|mmdf)$", re.IGNORECASE)
_BOUNCE_NAME = re.compile(
    r"mail ?delivery|delivery (subsystem|system|service|status)|postmaster|mailer-?daemon"
    r"|system administrator|mail administrator", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|not (be )?delivered|delivery (status|failure|failed|problem|report"
    r"|notification|has failed)|returned mail|returning message|failure notice|failed mail"
    r"|mail delivery|non-?delivery|could not be delivered|delayed mail|message delayed"
    r"|mail (system )?error|warning: message|error during delivery|delivery failure"
    r"|processing error|rejected mail|non remis|unzustellbar|nicht zustellbar"
    r"|^fail(ed|ure) delivery",
    re.IGNORECASE)


def _bounce_shape(msg: Message) -> str:
    """"report" for a delivery report by its shape or its sender, "subject" for a
    message only its subject calls one, "" for anything else."""
    if msg.get("x-failed-recipients") or any(
            part.get_content_type() == "message/delivery-status" for part in _parts(msg)):
        return "report"
    name, sender = parseaddr(_header(msg, "from"))
    if _BOUNCE_SENDER.match(sender.split("@")[0]) or _BOUNCE_NAME.search(name):
        return "report"
    return "subject" if _BOUNCE_SUBJECT.search(_header(msg, "subject")) else ""


# ---------------------------------------------------------------------------------------
# Complaints: ARF feedback reports (RFC 5965) and Microsoft's JMRP.

# A reader (or their provider for them) said they do not want this mail: abuse is the
# "this is spam" button, fraud and virus are reports against the message, "other" is a
# complaint without a category and opt-out is a request to stop. not-spam takes a
# complaint back; auth-failure is a DMARC/DKIM/SPF failure report about our domain,
# sent whatever the reader did. Neither is a complaint.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other", "opt-out"})


def _attached_headers(msg: Message) -> Message | None:
    """The headers of the message a report is about (message/rfc822 or
    text/rfc822-headers)."""
    for part in _parts(msg):
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                encoded = payload[0].get_payload()
                if _header(part, "content-transfer-encoding").strip().lower() == "base64" \
                        and not payload[0].keys() and isinstance(encoded, str):
                    # Base64 (against RFC 2046, but feedback loops do it): the parser
                    # took the encoded text for a message without headers.
                    with contextlib.suppress(binascii.Error, ValueError):
                        data = base64.b64decode(encoded[: MAX_TEXT * 4], validate=False)
                        return message_from_string(_bytes_text(data).lstrip() + "\n")
                return payload[0]
        elif kind == "text/rfc822-headers":
            return message_from_string(_decoded(part).lstrip() + "\n")
    return None


def _feedback_fields(msg: Message) -> Message | None:
    for part in _parts(msg):
        if part.get_content_type() == "message/feedback-report":
            blocks = _status_blocks(part)
            return blocks[0] if blocks else Message()
    report_type = (msg.get_param("report-type") or "") if msg.get_content_type() == (
        "multipart/report") else ""
    return Message() if str(report_type).lower() == "feedback-report" else None


@dataclass(frozen=True)
class _Complaint:
    recipients: list[str]
    reason: str
    occurred_at: datetime | None


# A report's fields written in its text (a feedback report whose fields are not in a
# message/feedback-report part).
_REPORTED_LINE = re.compile(r"^(?:original-rcpt-to|removal-recipient):[ \t]*(.+)$",
                            re.I | re.M)


def _complained(msg: Message, fields: Message | None, text: _Text) -> list[str]:
    """The readers a complaint names, as Sisimai::ARF reads them: its Original-Rcpt-To
    fields (Removal-Recipient in an opt-out report), else those fields written in its
    text, else the reported message's X-HmXmrOriginalRecipient (Microsoft's) or To (a
    report that redacts Original-Rcpt-To, or leaves it out, still returns the message)."""
    found: list[str] = []
    if fields is not None:
        found = _addresses(_all_headers(fields, "original-rcpt-to")
                           + _all_headers(fields, "removal-recipient"))
    if not found:
        found = _addresses(_REPORTED_LINE.findall(text.notice)[:MAX_RECIPIENTS])
    original = _attached_headers(msg)
    if not found and original is not None:
        found = _addresses(_all_headers(original, "x-hmxmroriginalrecipient")) or _addresses(
            _all_headers(original, "to"))
    return list(dict.fromkeys(found))[:MAX_RECIPIENTS]


def _arf(msg: Message, text: _Text) -> _Complaint | None:
    """None when the message is no feedback report; a complaint with no recipients for a
    report that is not one (not-spam, auth-failure)."""
    fields = _feedback_fields(msg)
    if fields is None:
        return None
    feedback_type = (_header(fields, "feedback-type").lower().split() or ["abuse"])[0]
    if feedback_type not in COMPLAINT_TYPES:
        return _Complaint([], "", None)
    recipients = _complained(msg, fields, text)
    agent = _header(fields, "user-agent") or _header(msg, "from")
    when = _date(_header(fields, "arrival-date") or _header(fields, "received-date"))
    return _Complaint(recipients, _reason(f"ARF {feedback_type} report ({agent})"), when)


def _jmrp(msg: Message, text: _Text) -> _Complaint | None:
    """Microsoft's Junk Mail Reporting Program and Amazon SES's complaints by mail
    (complaints@email-abuse.amazonses.com): not ARF, "complaint about message from …",
    the reported message attached; the reader's address in its X-HmXmrOriginalRecipient
    (Microsoft), in Original-Rcpt-To lines of the report's text, or its To."""
    subject = _header(msg, "subject").lower()
    sender = _address(_header(msg, "from"))
    if not subject.startswith("complaint about message from") and sender not in (
            "staff@hotmail.com", "complaints@email-abuse.amazonses.com"):
        return None
    original = _attached_headers(msg)
    if original is None:
        return None
    if not original.get("x-hmxmroriginalrecipient") and not (
            subject.startswith("complaint about message from")
            and sender in ("staff@hotmail.com", "complaints@email-abuse.amazonses.com")):
        return None        # the reader named only by the To of a message: only theirs
    recipients = _complained(msg, None, text)
    if not recipients:
        return None
    name = "JMRP complaint" if original.get("x-hmxmroriginalrecipient") else "complaint"
    return _Complaint(recipients, _reason(f"{name} ({sender})"), None)


# ---------------------------------------------------------------------------------------
# Amazon SES notifications mailed by SNS (an email subscription to the SES identity's
# bounce and complaint topic): the body is the notification's JSON ("email"), or SNS's
# envelope with the notification in its Message ("email-json"), then SNS's footer.

_SNS_SENDER = re.compile(r"@(sns\.amazonaws\.com|amazonses\.com|[\w.-]+\.amazonses\.com)$")


def _ses_mail(msg: Message, text: _Text, reading: Reading) -> list[Finding] | None:
    """The findings of an SES notification mailed by SNS; None for any other message."""
    if not _SNS_SENDER.search(_address(_header(msg, "from"))):
        return None
    start = text.notice.find("{")
    if start < 0:
        return None
    try:
        notification, _ = json.JSONDecoder().raw_decode(text.notice[start:])
        if isinstance(notification, dict) and isinstance(notification.get("Message"), str):
            notification = json.loads(notification["Message"])
        if not isinstance(notification, dict):
            return None
        found = read_ses_notification(notification, _header(msg, "message-id"))
    except (ValueError, WebhookRejected, RecursionError):
        return None
    return [replace(finding, source=reading.source, report_id=reading.report_id,
                    cause="feedback"
                    if finding.kind is BounceKind.COMPLAINT
                    else _cause(finding.status, finding.reason)[1]) for finding in found]


# ---------------------------------------------------------------------------------------
# Automatic replies (RFC 3834) and mail to the unsubscribe address.

_AUTO_SUBJECT = re.compile(
    r"out of (the )?office|\bauto(matic)?[ -]?(reply|response|answer|antwort)|autoreply"
    r"|\bauto:|vacation|away from (the office|my desk|my mail)|abwesen|automatische antwort"
    r"|r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica|\bOOO\b",
    re.IGNORECASE)


def _is_auto_reply(msg: Message) -> bool:
    """RFC 3834's Auto-Submitted, the older X-Autoreply/X-Autorespond and Precedence
    markers, or an out-of-office subject. Exchange's X-Auto-Response-Suppress is not one:
    it asks others not to reply, and ordinary bulk mail carries it."""
    if _header(msg, "x-apple-unsubscribe").lower() == "true":
        return False          # Apple Mail's unsubscribe mail says auto-replied too
    submitted = _header(msg, "auto-submitted").lower()
    if submitted and not submitted.startswith("no"):
        return True
    if any(msg.get(name) for name in ("x-autoreply", "x-autorespond", "x-autoresponder")):
        return True
    if {_header(msg, "precedence").lower(), _header(msg, "x-precedence").lower()} & {
            "auto_reply", "auto-reply"}:
        return True
    return bool(_AUTO_SUBJECT.search(_header(msg, "subject")))


def _unsubscriber(msg: Message, unsubscribe_address: str) -> str | None:
    """The sender of a mail to the unsubscribe address (the List-Unsubscribe mailto)."""
    target = unsubscribe_address.strip().lower()
    if not target:
        return None
    addressed = _addresses(_all_headers(msg, "to") + _all_headers(msg, "delivered-to")
                           + _all_headers(msg, "x-original-to"))
    if target not in addressed:
        return None
    senders = _addresses(_all_headers(msg, "from"))
    return senders[0] if senders else None


# ---------------------------------------------------------------------------------------
# VERP: the return path we gave the message names the subscriber and the edition.

_RETURN_PATH_LINE = re.compile(r"^(?:return-path|x-postfix-sender|original-mail-from):"
                               r"[ \t]*(?:rfc822;)?[ \t]*<?([^>\s]+)", re.I | re.M)


def _verp_candidates(msg: Message, text: _Text) -> Iterator[str]:
    for name in ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to"):
        yield from _all_headers(msg, name)
    original = _attached_headers(msg)
    if original is not None:
        yield from _all_headers(original, "return-path")
    for part in _parts(msg):
        if part.get_content_type() in ("message/delivery-status", "message/feedback-report"):
            for block in _status_blocks(part)[:1]:
                yield from _all_headers(block, "x-postfix-sender")
                yield from _all_headers(block, "original-mail-from")
    yield from _RETURN_PATH_LINE.findall(text.full)


class VerpLookupError(RuntimeError):
    """The verp callable given to read_message raised (a programming error)."""


def _verp_claims(verp: VerpLookup | None, msg: Message, text: _Text) -> VerpClaims | None:
    if verp is None:
        return None
    for candidate in _verp_candidates(msg, text):
        for address in {_address(candidate), *_addresses([candidate])}:
            if not address:
                continue
            try:
                claims = verp(address)
            except Exception as exc:
                # The caller's mistake, not the message's: never read as "malformed".
                raise VerpLookupError(f"the VERP lookup failed on {address!r}: {exc!r}") \
                    from exc
            if claims is not None:
                return claims
    return None


# ---------------------------------------------------------------------------------------
# What ties a message to mail we sent: the Message-IDs it quotes or replies to, and the
# receiving server's word on who sent it.

MAX_IDS = 20          # Message-IDs kept of one message

_MESSAGE_ID = re.compile(r"<[^<>\s@]+@[^<>\s]+>")
_QUOTED_ID_LINE = re.compile(r"^[ \t>]*message-id:[ \t]*(<[^<>\s@]+@[^<>\s]+>)",
                             re.IGNORECASE | re.MULTILINE)


def _message_ids(values: Sequence[str]) -> tuple[str, ...]:
    found = (m.lower() for value in values for m in _MESSAGE_ID.findall(value))
    return tuple(dict.fromkeys(found))[:MAX_IDS]


def _quoted_ids(msg: Message, text: _Text) -> tuple[str, ...]:
    """The Message-IDs of the message a report is about: of every attached message or
    header block (message/rfc822, text/rfc822-headers), and of "Message-ID:" lines in
    the text (a plain-text bounce quoting the original). Never the report's own."""
    values: list[str] = []
    for part in _parts(msg):
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                values += _all_headers(payload[0], "message-id")
        elif kind == "text/rfc822-headers":
            headers = message_from_string(_decoded(part).lstrip() + "\n")
            values += _all_headers(headers, "message-id")
    values += _QUOTED_ID_LINE.findall(text.full)
    return _message_ids(values)


def _results(value: str) -> tuple[str, list[tuple[str, str, dict[str, str]]]]:
    """An Authentication-Results value (RFC 8601): its authserv-id and each result as
    (method, result, {ptype.property: value}); comments dropped."""
    for _ in range(5):          # nested comments, a few levels deep
        value = re.sub(r"\([^()]*\)", " ", value)
    fields = [field.strip() for field in value.split(";")]
    head = fields[0].split()
    results = []
    for field in fields[1:]:
        words = field.split()
        if not words or "=" not in words[0]:
            continue
        method, _, result = words[0].partition("=")
        props = {key.lower(): val.strip('"').lower()
                 for key, _, val in (word.partition("=") for word in words[1:]) if val}
        results.append((method.lower().split("/")[0], result.lower(), props))
    return (head[0].lower() if head else ""), results


def _ascii_domain(domain: str) -> str:
    """A domain as DNS writes it (an IDN in xn-- form), lower-cased."""
    domain = domain.strip(".").lower()
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return domain


def _aligned(signer: str, domain: str) -> bool:
    """A DKIM signing domain aligned with the From domain (relaxed: the same domain or
    a parent of it), IDNs compared in their xn-- form."""
    signer, domain = _ascii_domain(signer), _ascii_domain(domain)
    return bool(signer) and "." in signer and (domain == signer
                                               or domain.endswith("." + signer))


def _sender_authenticated(msg: Message, authserv_id: str) -> bool:
    """True when the receiving server's Authentication-Results (the topmost header with
    the configured authserv-id; the server adds its own on top) says the one From address
    passed DMARC, or DKIM with a signing domain aligned with it."""
    wanted = authserv_id.strip().lower()
    senders = _addresses(_all_headers(msg, "from"))
    if not wanted or len(senders) != 1:
        return False
    domain = senders[0].rpartition("@")[2]
    for value in _all_headers(msg, "authentication-results"):
        server, results = _results(value)
        if server != wanted:
            continue
        return any(
            (method == "dmarc" and result == "pass"
             and _ascii_domain(props.get("header.from", "")) == _ascii_domain(domain))
            or (method == "dkim" and result == "pass"
                and _aligned(props.get("header.d", ""), domain))
            for method, result, props in results)
    return False


# ---------------------------------------------------------------------------------------
# Reading one message.


def read_message(raw: bytes, source: str, *, verp: VerpLookup | None = None,
                 unsubscribe_address: str = "", authserv_id: str = "") -> Reading:
    """What one raw RFC 5322 message from the bounce mailbox says.

    verp reads our VERP return paths (`tokens.Verp.read`): a valid token found in the
    report's envelope recipient or the returned message's Return-Path fills subscriber_id
    and edition_id. unsubscribe_address is the address of our List-Unsubscribe mailto: a
    mail to it (not itself an automatic reply or a bounce) asks to unsubscribe its
    sender. authserv_id names the receiving server whose Authentication-Results header
    is believed (empty: none is). The Reading's proof holds what ties the message to mail
    we sent, for the desk to check. Never raises for what the message holds: a malformed
    message is ignored."""
    reading = Reading(source=source, report_id=_raw_id(raw), proof=Proof())
    try:
        # Blank lines before the headers (a message saved from a web mail or pasted into
        # a file) would end the header section at once and leave a message of no headers.
        msg = message_from_bytes(raw[:MAX_MESSAGE_BYTES].lstrip(b" \t\r\n"))
        reading.report_id = _report_id(msg, raw)
        return _read(msg, reading, verp, unsubscribe_address, authserv_id)
    except _MALFORMED as error:
        log.info("%s: unreadable message ignored (%s)", source, type(error).__name__)
        return Reading(source=source, report_id=reading.report_id, proof=Proof())


def _read(msg: Message, reading: Reading, verp: VerpLookup | None,
          unsubscribe_address: str, authserv_id: str) -> Reading:
    text = _texts(msg)
    claims = _verp_claims(verp, msg, text)
    reading.proof = Proof(verp=claims, quoted_ids=_quoted_ids(msg, text),
                          reply_ids=_message_ids(_all_headers(msg, "in-reply-to")
                                                 + _all_headers(msg, "references")),
                          sender_authenticated=_sender_authenticated(msg, authserv_id))
    when = _date(_header(msg, "date"))
    mailed = _ses_mail(msg, text, reading)
    if mailed is not None:
        reading.findings = mailed
        return reading
    complaint = _arf(msg, text) or _jmrp(msg, text)
    if complaint is not None:
        if complaint.reason:
            recipients = complaint.recipients or ([""] if claims else [])
            reading.findings = [_finding(reading, recipient, BounceKind.COMPLAINT, None,
                                         complaint.reason, claims, complaint.occurred_at or when,
                                         "feedback")
                                for recipient in recipients]
        return reading
    shape = _bounce_shape(msg)
    if shape:
        reading.findings = [_finding(reading, failure.recipient, failure.kind, failure.status,
                                     failure.reason, claims, when, failure.cause)
                            for failure in _bounce_failures(msg, text, claims)]
        # A reply whose subject only sounds like a bounce ("Re: delivery report") is
        # read by the rules below when it reports no failure.
        if reading.findings or shape == "report":
            return reading
    if _is_auto_reply(msg):
        senders = _addresses(_all_headers(msg, "from"))
        if senders or claims:
            reason = _reason(_header(msg, "subject") or "automatic reply")
            reading.findings = [_finding(reading, senders[0] if senders else "",
                                         BounceKind.AUTO_REPLY, None, reason, claims, when,
                                         "vacation")]
        return reading
    reading.unsubscribe = _unsubscriber(msg, unsubscribe_address)
    return reading


def _bounce_failures(msg: Message, text: _Text, claims: VerpClaims | None) -> list[_Failure]:
    """The failures a bounce reports; one without an address when only VERP names the
    subscriber; none for a report of deliveries only."""
    reported = _dsn_failures(msg, text)
    if reported is not None and not reported:
        return []
    failures = [failure for failure in reported or [] if failure.recipient]
    if not failures:
        failures = _detected_failures(msg, text)
    if not failures and claims is not None:
        kind, cause, status = text.cause(None)
        failures = [_Failure("", kind, status, _reason(text.notice or "failed"), cause)]
    return failures


def _finding(reading: Reading, recipient: str, kind: BounceKind, status: str | None,
             reason: str, claims: VerpClaims | None, when: datetime | None,
             cause: str) -> Finding:
    return Finding(source=reading.source, recipient=recipient, kind=kind, status=status,
                   reason=reason, subscriber_id=claims.subscriber_id if claims else None,
                   edition_id=claims.edition_id if claims else None,
                   report_id=reading.report_id, occurred_at=when, cause=cause)


# ---------------------------------------------------------------------------------------
# Where messages come from: Maildirs, mbox files, folders of .eml files, single files.


def iter_sources(paths: Sequence[str | Path]) -> Iterator[tuple[str, bytes]]:
    """(source, raw bytes) for each message of each path: a Maildir (cur/, new/, tmp/),
    an mbox file (it starts with "From "; messages named "path#N", N from 1), a folder of
    files (recursive: every file that starts like mail) or any other file as one
    message. A path that does not exist
    or cannot be read raises InputError naming it."""
    for given in paths:
        path = Path(given)
        try:
            if str(given) == "-":
                # Standard input: what an MTA's pipe alias hands over, one message or mbox.
                yield from _piped(Path("stdin"), sys.stdin.buffer.read())
                continue
            yield from _messages_in(path)
        except (OSError, ValueError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise InputError(f"{path}: cannot be read ({reason}); give a Maildir, an mbox "
                             f"file, a folder of .eml files or a message file") from None


def _messages_in(path: Path) -> Iterator[tuple[str, bytes]]:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; give a Maildir, an mbox file, "
                         f"a folder of .eml files or a message file")
    if path.is_dir():
        if all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            yield from _maildir(path)
        else:
            # Every file that looks like mail (.eml, .txt, a Maildir's new/ or cur/ …);
            # hidden files and other files (a README, a licence) are passed over.
            for file in sorted(path.rglob("*")):
                if file.is_file() and not any(p.startswith(".") for p in
                                              file.relative_to(path).parts) \
                        and _looks_like_mail(file):
                    yield from _messages_in(file)
        return
    if not path.is_file():
        # A pipe (an MTA alias piping each bounce into /dev/stdin): it can be read once.
        yield from _piped(path, path.read_bytes())
        return
    with path.open("rb") as opened:
        is_mbox = opened.read(5) == b"From "
    if is_mbox:
        yield from _mbox(path)
    else:
        yield str(path), path.read_bytes()


def _piped(path: Path, data: bytes) -> Iterator[tuple[str, bytes]]:
    if not data.startswith(b"From "):
        yield str(path), data
        return
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "piped.mbox"
        copy.write_bytes(data)
        for source, raw in _mbox(copy):
            yield f"{path}#{source.rsplit('#', 1)[1]}", raw


# A header field's first line ("Name: value", RFC 5322 field names) or mbox's "From ".
_MAIL_START = re.compile(rb"(From |[!-9;-~]+:)")


def _looks_like_mail(file: Path) -> bool:
    with file.open("rb") as opened:
        return _MAIL_START.match(opened.read(200).lstrip(b"\xef\xbb\xbf")) is not None


def _maildir(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.keys()):
        try:
            data = box.get_bytes(key)
        except (KeyError, FileNotFoundError):
            continue          # taken away (by another reader) since it was listed
        yield f"{path}#{key}", data


def _mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.mbox(path, factory=None, create=False)
    try:
        for number, key in enumerate(box.keys(), start=1):
            yield f"{path}#{number}", box.get_bytes(key)
    finally:
        box.close()
