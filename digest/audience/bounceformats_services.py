"""Bounce notices of mail services and filtering gateways, read by the marks each writes:
the readers read_formats tries after the Unix MTAs'.

Each reader looks for lines only its service writes and returns nothing without them; the
cause a reader gives (from the service's own error table) is used only when the words of
the diagnostic name none (`bouncemail._formatted_failures`).

- Gmail (the plain-text notices before RFC 3464 ones): "Delivery to the following
  recipient failed permanently:" (or "… has been delayed:"), each recipient on an
  indented line, then "Technical details of … failure:" and the remote server's reply,
  which may end in Google's "(state N)" naming the SMTP stage that failed.
- Trend Micro InterScan MSS: the SMTP exchange that failed, "Sent <<< RCPT TO:<…>" and
  "Received >>> 550 …", or "Unable to deliver message to <…>".
- Digital Arts m-FILTER: the recipients one a line, then "-------server message" and the
  remote server's reply, "-------SMTP command" and the command.
- The MTA Sisimai calls X2: "Unable to deliver message to the following address(es).",
  then "<recipient>:" and what happened on the lines after it.
- au (EZweb): "The user(s) account is …", "Your message was not delivered within …" or
  "Each of the following recipients was rejected by a remote mail server", then
  "<recipient>" or "Recipient: <recipient>" lines.
- au by KDDI: "Your mail sent on: <date>", then "Could not be delivered to: <recipient>"
  and the reason on the indented lines after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .bounceformats import ADDRESS, MAX_LISTED, Listed, listed_with_details

__all__ = ["READERS"]


def _said(lines: list[str]) -> str:
    return " ".join(" ".join(lines).split())


# ---------------------------------------------------------------------------------------
# Gmail

_GMAIL_MARK = re.compile(r"^\s*Delivery to the following recipients? (?:failed permanently"
                         r"|has been delayed|failed)", re.I | re.M)
_GMAIL_RECIPIENT = re.compile(r"^\s+<?(" + ADDRESS + r")>?\s*$")
# Google's "(state N)": the stage of the SMTP session that failed, and Sisimai's reason.
_GMAIL_STATES = {"6": "systemerror", "8": "systemerror", "9": "systemerror",
                 "12": "norelaying", "13": "blocked", "14": "userunknown", "15": "filtered",
                 "17": "filtered", "18": "filtered"}
_GMAIL_MESSAGES = (("hostunknown", ("DNS Error: Domain name not found",
                                    "DNS Error: DNS server returned answer with no data")),
                   ("expired", ("DNS Error: Could not contact DNS servers",
                                "Delivery to the following recipient has been delayed",
                                "The recipient server did not accept our requests to connect")))


_GMAIL_REPLY = "The error that the other server returned was:"


def _gmail_cause(said: str) -> str:
    state = re.search(r"\(state (\d{1,2})\)", said)
    if state:
        return _GMAIL_STATES.get(state.group(1), "")
    for cause, phrases in _GMAIL_MESSAGES:
        if any(phrase in said for phrase in phrases):
            return cause
    return ""


def _gmail(notice: str) -> list[Listed]:
    mark = _GMAIL_MARK.search(notice)
    if mark is None:
        return []
    delayed = "delayed" in mark.group(0).lower()
    recipients = listed_with_details(notice[mark.end():].splitlines(), _GMAIL_RECIPIENT)
    # The technical details follow the last recipient and are about them all.
    details = _said(recipients[-1][1]) if recipients else ""
    found = []
    for address, lines in recipients:
        said = _said(lines) or details
        # The remote server's own reply, without Google's sentences around it.
        said = said.rpartition(_GMAIL_REPLY)[2].strip() or said
        cause = "expired" if delayed else _gmail_cause(said)
        found.append(Listed(address, said, cause, delayed=delayed))
    return found


# ---------------------------------------------------------------------------------------
# Trend Micro InterScan MSS

_TREND_SENT = re.compile(r"^\s*Sent <<< RCPT TO:\s*<(" + ADDRESS + r")>", re.I)
_TREND_RECEIVED = re.compile(r"^\s*Received >>> (.+)$", re.I)
_TREND_UNABLE = re.compile(r"^\s*Unable to deliver message to <(" + ADDRESS + r")>", re.I)


def _trendmicro(notice: str) -> list[Listed]:
    found: dict[str, Listed] = {}
    address = ""
    for line in notice.splitlines():
        sent = _TREND_SENT.match(line)
        unable = _TREND_UNABLE.match(line)
        received = _TREND_RECEIVED.match(line)
        if sent:
            address = sent.group(1).lower()
        elif unable:
            # Sisimai reads this line, with no reply quoted, as an unknown recipient.
            address = unable.group(1).lower()
            found.setdefault(address, Listed(address, line.strip(), "userunknown"))
        elif received and address:
            found[address] = Listed(address, received.group(1).strip())
        if len(found) >= MAX_LISTED:
            break
    return list(found.values())


# ---------------------------------------------------------------------------------------
# Digital Arts m-FILTER

_MFILTER_MARK = re.compile(r"^-------server message\s*$", re.M)
_MFILTER_RECIPIENT = re.compile(r"^\s*(" + ADDRESS + r")\s*$")


def _mfilter(notice: str) -> list[Listed]:
    mark = _MFILTER_MARK.search(notice)
    if mark is None or "m-FILTER" not in notice[: mark.start()]:
        return []
    addresses = [listed.group(1).lower() for line in notice[: mark.start()].splitlines()
                 if (listed := _MFILTER_RECIPIENT.match(line))][:MAX_LISTED]
    said = ""
    for line in notice[mark.end():].splitlines():
        if line.strip() and not line.startswith("-"):
            said = line.strip()
            break
    return [Listed(address, said) for address in dict.fromkeys(addresses)]


# ---------------------------------------------------------------------------------------
# X2 (Sisimai's name for an MTA it has seen but not identified)

_X2_MARK = re.compile(r"^Unable to deliver message to the following address", re.M)
_X2_RECIPIENT = re.compile(r"^<(" + ADDRESS + r")>:\s*$")


def _x2(notice: str) -> list[Listed]:
    mark = _X2_MARK.search(notice)
    if mark is None:
        return []
    lines = [line.strip() for line in notice[mark.end():].splitlines()[1:]]
    recipients = listed_with_details(lines, _X2_RECIPIENT)
    return [Listed(address, _said(lines)) for address, lines in recipients]


# ---------------------------------------------------------------------------------------
# au (EZweb)

_EZWEB_REASONS = (("mailboxfull", ("The user(s) account is temporarily over quota",)),
                  ("suspend", ("The user(s) account is disabled.",
                               "The user(s) account is temporarily limited.")),
                  ("expired", ("Your message was not delivered within ",)),
                  ("", ("Each of the following recipients was rejected by a remote mail"
                        " server",)))
_EZWEB_RECIPIENT = re.compile(r"^(?:<(" + ADDRESS + r")>:?(.*)|\s+Recipient: <(" + ADDRESS
                              + r")>.*)$")


def _ezweb(notice: str) -> list[Listed]:
    folded = " ".join(notice.split())
    marks = [(cause, phrase) for cause, phrases in _EZWEB_REASONS for phrase in phrases
             if phrase in folded]
    if not marks:
        return []
    cause, phrase = marks[0]
    recipients: list[tuple[str, list[str]]] = []
    rcpt: set[str] = set()
    for line in notice.splitlines():
        listed = _EZWEB_RECIPIENT.match(line)
        if listed:
            address = (listed.group(1) or listed.group(3)).lower()
            recipients.append((address, [(listed.group(2) or "").strip()]))
            if len(recipients) >= MAX_LISTED:
                break
        elif recipients and line.strip():
            if re.match(r"\s*>>> RCPT TO:", line, re.I):
                rcpt.add(recipients[-1][0])      # refused at RCPT TO: the address itself
            recipients[-1][1].append(line.strip())
    # au's sentence is about every recipient listed under it, and names the cause before
    # the reply quoted (Sisimai reads it first); a refusal at RCPT TO is the address's.
    return [Listed(address, _said(lines) if address in rcpt or not cause
                   else f"{phrase.strip()} {_said(lines)}".strip(),
                   "userunknown" if address in rcpt else cause)
            for address, lines in recipients]


# ---------------------------------------------------------------------------------------
# au by KDDI

_KDDI_MARK = re.compile(r"^Your mail (?:sent on|attempted to be delivered on):", re.M)
_KDDI_RECIPIENT = re.compile(r"^\s+Could not be delivered to: <(" + ADDRESS + r")>")
_KDDI_REASONS = (("mailboxfull", "As their mailbox is full"),
                 ("norelaying", "Due to the following SMTP relay error"),
                 ("hostunknown", "As the remote domain doesnt exist"))


def _kddi(notice: str) -> list[Listed]:
    mark = _KDDI_MARK.search(notice)
    if mark is None:
        return []
    # Only the indented lines under a recipient are about them.
    recipients = listed_with_details(notice[mark.start():].splitlines(), _KDDI_RECIPIENT,
                                     lambda line: line.startswith((" ", "\t")))
    found = []
    for address, lines in recipients:
        said = _said(lines)
        cause = next((name for name, phrase in _KDDI_REASONS if phrase in said), "")
        found.append(Listed(address, said, cause))
    return found


READERS: tuple[Callable[[str], list[Listed]], ...] = (
    _gmail, _trendmicro, _mfilter, _x2, _ezweb, _kddi)
