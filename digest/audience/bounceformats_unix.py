"""Bounce notices of the Unix MTAs that write no RFC 3464 report (or a thin one), read by
the marks each writes: the readers read_formats tries after Exchange's and Domino's.

Each reader needs its MTA's own marker line (the words its source prints, as Sisimai's
Lhost modules record them) and returns [] without it. A notice that says delivery is
only delayed (a warning, the message still queued) lists its recipients as delayed: a
delay is not a verdict on the address, so such a failure is never hard.

- Sendmail (v8 and v5, savemail.c): "----- Transcript of session follows -----", then
  "550 5.1.1 <user@host>... User unknown" (v5 without the enhanced code) or
  "<user@host>... Deferred: …"; "<<< " lines hold the remote server's reply. v8's
  warnings say "THIS IS A WARNING MESSAGE ONLY".
- Sun/Oracle Communications Messaging Server (iPlanet): "This report relates to a
  message you sent with the following header fields:", then per recipient
  "Recipient address:" (or "Original address:"), "Reason:" and "Diagnostic code:".
- OpenSMTPD (bounce.c): "This is the MAILER-DAEMON, please DO NOT REPLY to this
  e-mail.", then "user@host: 550 5.1.1 …" per recipient; its warnings say "A message is
  delayed for more than …" and "this is only a temporary failure report". Its first
  releases wrote "Recipient: user@host" and "Reason:" with the reason below.
- Exim (deliver.c): "This message was created automatically by mail delivery software."
  (or another of its opening lines), then each recipient indented two spaces, what
  happened indented four; its warnings say "has not yet been delivered", "Delay
  reason:", "No action is required on your part".
- Postfix (bounce templates): "This is the mail system at host …" (or "This is the
  Postfix program at host …"), then "<user@host>: what happened", continued on indented
  lines; a delay notice says "THIS IS A WARNING ONLY".
- qmail's notices ("Hi. This is the qmail-send program at …") are read by Mailman's
  qmail detector and need no reader here.
- Apache James (AbstractNotify.java): "Error message below:", the error, then
  "Message details:" with "RCPT TO: user@host" for each recipient.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .bounceformats import ADDRESS, MAX_LISTED, Listed

__all__ = ["READERS"]

_M = re.MULTILINE
_AT = re.compile(ADDRESS)


def _clean(text: str) -> str:
    return " ".join(text.split())


def _listed(people: list[tuple[str, list[str]]], delayed: bool) -> list[Listed]:
    """One Listed per address (its first mention), what is said about it on one line."""
    found: dict[str, Listed] = {}
    for address, said in people:
        if address:
            found.setdefault(address, Listed(address, _clean(" ".join(said)), delayed=delayed))
    return list(found.values())


# Sendmail ------------------------------------------------------------------------------

_SENDMAIL_MARK = re.compile(r"^\s*-+ ?Transcript of session follows ?-+\s*$", _M)
_SENDMAIL_WARNING = re.compile(r"THIS IS A WARNING MESSAGE ONLY|^Warning: message still"
                               r" undelivered", _M | re.I)
# "550 5.1.1 <user@host>... User unknown", "550 <user@host>... User unknown" (v5). A
# line without the reply code ("<user@host>... Deferred: …") is Sendmail's summary of a
# try, not its verdict on the recipient.
_SENDMAIL_LINE = re.compile(r"^([45])\d\d[ -](?:[45]\.\d{1,3}\.\d{1,3}[ -])?<("
                            + ADDRESS + r")>\.\.\.\s*(.*)$")
_SENDMAIL_REPLY = re.compile(r"^<<<\s*(.*)$")


def _sendmail(notice: str) -> list[Listed]:
    mark = _SENDMAIL_MARK.search(notice)
    if mark is None:
        return []
    warning = bool(_SENDMAIL_WARNING.search(notice))
    found: dict[str, Listed] = {}
    reply = ""
    for line in notice[mark.end():].splitlines():
        line = line.strip()
        answered = _SENDMAIL_REPLY.match(line)
        if answered:
            reply = answered.group(1)
            continue
        listed = _SENDMAIL_LINE.match(line)
        if listed is None:
            continue
        address = listed.group(2)
        # A warning, or a temporary (4xx) reply: delivery is still being retried.
        delayed = warning or listed.group(1) == "4"
        # The remote server's own reply says more than Sendmail's summary of it.
        whole = _clean(f"{line} {reply}") if reply else line
        found.setdefault(address.lower(), Listed(address.lower(), whole, delayed=delayed))
        reply = ""
        if len(found) >= MAX_LISTED:
            break
    return list(found.values())


# Sun/Oracle Communications Messaging Server ---------------------------------------------

_MESSAGING_MARK = re.compile(r"^\s*This report relates to a message you sent with the"
                             r" following header fields:", _M)
_MESSAGING_FIELD = re.compile(r"^\s+(Recipient address|Original address|Reason"
                              r"|Diagnostic code):\s*(.*)$", re.I)


def _messaging_server(notice: str) -> list[Listed]:
    mark = _MESSAGING_MARK.search(notice)
    if mark is None:
        return []
    people: list[tuple[str, list[str]]] = []
    for line in notice[mark.end():].splitlines():
        field = _MESSAGING_FIELD.match(line)
        if field is None:
            continue
        name, value = field.group(1).lower(), field.group(2).strip()
        if name.endswith("address"):
            named = _AT.search(value)
            if named is None:
                continue
            address = named.group(0).lower()
            if not people or people[-1][0] != address:
                if name == "original address" and people and people[-1][1] == []:
                    people[-1] = (address, [])
                else:
                    people.append((address, []))
        elif people:
            # "Diagnostic code: smtp;550 5.1.1 <user@host>... User Unknown"
            people[-1][1].append(value.split(";", 1)[-1] if name.startswith("diag")
                                 else value)
    found: dict[str, Listed] = {}
    for address, said in people[:MAX_LISTED]:
        # The diagnostic (the remote server's words) before Messaging Server's reason.
        found.setdefault(address, Listed(address, _clean(" ".join(reversed(said)))))
    return list(found.values())


# OpenSMTPD -------------------------------------------------------------------------------

_OPENSMTPD_MARK = re.compile(r"^\s*This is the MAILER-DAEMON, please DO NOT REPLY to this", _M)
_OPENSMTPD_END = re.compile(r"^\s*Below is a copy of the original message", _M)
_OPENSMTPD_DELAY = re.compile(r"A message is delayed for more than|only a temporary"
                              r" failure report", re.I)
_OPENSMTPD_LINE = re.compile(r"^\s*<?(" + ADDRESS + r")>?:\s*(.+)$")
# Its first releases: "Recipient: user@host", then "Reason:" and the reason below it.
_OPENSMTPD_OLD = re.compile(r"^\s*Recipient:\s*<?(" + ADDRESS + r")>?\s*\n\s*Reason:\s*\n?"
                            r"(.*)$", _M)


def _opensmtpd(notice: str) -> list[Listed]:
    mark = _OPENSMTPD_MARK.search(notice)
    if mark is None:
        return []
    body = notice[mark.end():]
    end = _OPENSMTPD_END.search(body)
    body = body[: end.start()] if end else body
    delayed = bool(_OPENSMTPD_DELAY.search(body))
    found: dict[str, Listed] = {}
    for address, said in _OPENSMTPD_OLD.findall(body)[:MAX_LISTED]:
        found.setdefault(address.lower(), Listed(address.lower(), said.strip()))
    for line in body.splitlines():
        listed = _OPENSMTPD_LINE.match(line)
        if listed:
            address = listed.group(1).lower()
            found.setdefault(address, Listed(address, listed.group(2).strip(),
                                             delayed=delayed))
            if len(found) >= MAX_LISTED:
                break
    return list(found.values())


# Exim ----------------------------------------------------------------------------------

_EXIM_MARK = re.compile(
    r"^\s*(This message was created automatically by mail delivery software\."
    r"|A message that you sent (could not be delivered to all of its recipients"
    r"|contained one or more recipient addresses|was rejected by the local scann?ing code)"
    r"|The \S+ router encountered the following error\(s\):)", _M)
_EXIM_DELAY = re.compile(r"has not yet been delivered|Delay reason:|No action is required"
                         r" on your part|Delivery attempts will continue", re.I)
# "  user@host", "  user@host: forced freeze", "  user@host <other@host>: …" (the
# address in brackets is the one that failed), "  an undisclosed address".
_EXIM_RECIPIENT = re.compile(r"^(?:  |\t)(?:(" + ADDRESS + r")(?:\s+<(" + ADDRESS
                             + r")>)?|an undisclosed address)(?::\s*(.*))?$")
# "    (generated from user@host)", "    generated by user@host": the address the list
# was sent to, when the failed one is a pipe, a file or an undisclosed address.
_EXIM_ALIAS = re.compile(r"^\s+\(?generated (?:from|by) <?(" + ADDRESS + r")>?\)?")
_EXIM_DETAIL = re.compile(r"^(?: {4,}|\t)\S")


def _exim(notice: str) -> list[Listed]:
    mark = _EXIM_MARK.search(notice)
    if mark is None:
        return []
    body = notice[mark.end():]
    delayed = bool(_EXIM_DELAY.search(body))
    people: list[tuple[str, list[str]]] = []
    open_ = False
    for line in body.splitlines():
        named = _EXIM_RECIPIENT.match(line)
        if named:
            address = (named.group(2) or named.group(1) or "").lower()
            people.append((address, [named.group(3) or ""]))
            open_ = True
            if len(people) >= MAX_LISTED:
                break
            continue
        alias = _EXIM_ALIAS.match(line)
        if alias and open_ and not people[-1][0]:
            people[-1] = (alias.group(1).lower(), people[-1][1])
        elif open_ and _EXIM_DETAIL.match(line):
            people[-1][1].append(line)
        elif line.strip() and people:
            break    # the list ends at the next unindented text
    return _listed(people, delayed)


# Postfix: "<user@host>: what happened" -----------------------------------------------

_POSTFIX_MARK = re.compile(r"^\s*This is the (mail system|Postfix program) at host ", _M)
_POSTFIX_DELAY = re.compile(r"THIS IS A WARNING ONLY|YOU DO NOT NEED TO RESEND", re.I)
# "<user@host>: …", "<user@host> (expanded from <list-member@host>): …": the address
# before expansion is the one mail was sent to.
_ANGLED = re.compile(r"^<(" + ADDRESS + r")>(?:\s+\(expanded from <(" + ADDRESS
                     + r")>\))?:\s*(.*)$")


def _angled(body: str, delayed: bool) -> list[Listed]:
    """Recipients named on lines of their own as "<user@host>:", what happened on the
    rest of the line and the lines after it up to a blank line."""
    people: list[tuple[str, list[str]]] = []
    open_ = False
    for line in body.splitlines():
        named = _ANGLED.match(line.strip())
        if named:
            people.append(((named.group(2) or named.group(1)).lower(), [named.group(3)]))
            open_ = True
            if len(people) >= MAX_LISTED:
                break
        elif not line.strip():
            open_ = False
        elif open_:
            people[-1][1].append(line)
    return _listed(people, delayed)


def _postfix(notice: str) -> list[Listed]:
    mark = _POSTFIX_MARK.search(notice)
    if mark is None:
        return []
    return _angled(notice[mark.end():], bool(_POSTFIX_DELAY.search(notice)))


# Apache James ---------------------------------------------------------------------------

_JAMES_MARK = re.compile(r"^\s*Error message below:\s*$", _M)
_JAMES_DETAILS = re.compile(r"^\s*Message details:\s*$", _M)
_JAMES_RECIPIENT = re.compile(r"^\s+RCPT TO:\s*<?(" + ADDRESS + r")>?\s*$", _M | re.I)


def _james(notice: str) -> list[Listed]:
    mark = _JAMES_MARK.search(notice)
    if mark is None:
        return []
    body = notice[mark.end():]
    details = _JAMES_DETAILS.search(body)
    if details is None:
        return []
    said = _clean(body[: details.start()])
    found: dict[str, Listed] = {}
    for address in _JAMES_RECIPIENT.findall(body[details.end():])[:MAX_LISTED]:
        found.setdefault(address.lower(), Listed(address.lower(), said))
    return list(found.values())


READERS: tuple[Callable[[str], list[Listed]], ...] = (
    _sendmail, _messaging_server, _opensmtpd, _exim, _postfix, _james)
