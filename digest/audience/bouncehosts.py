"""Reasons some remote hosts give by their own error codes, as Sisimai's Rhost classes read
them: when the host that answered (a DSN's Remote-MTA, "host mx.example.net[192.0.2.1]
said:" in a notice) is one of these, its code or phrase names the cause before the
generic words of the diagnostic are read (Sisimai asks the remote host first, then its
reason classes).

Each family is the hosts it answers for (a name or any name under it) and how its codes
and phrases map to Sisimai's reason names:

- GoDaddy (smtp.secureserver.net, mailstore1.secureserver.net): "IB" and three digits
  at the end of the reply, then its phrases.
- Spectrum (charter.net): "AUP#I1000", "AUP#O1350", … four digits, read as ranges.
- Cox (cox.net): "AUP#CXBL", "AUP#IPBL0001", …, then its phrases.
- IUA (*.email.ua): a link to "https://mail.i.ua/err/N" in the reply.
- Orange and La Poste (*.orange.fr, *.wanadoo.fr, *.laposte.net): "OFR_506",
  "LPN105_104", "OUK_513", … the last three digits.
- Tencent (*.qq.com): its phrases.

As Sisimai does, a recipient whose domain is one of these names (reader@cox.net) is read
by that family's table too, whoever answered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["host_cause", "remote_host"]


@dataclass(frozen=True)
class _Family:
    name: str
    domains: tuple[str, ...]
    read: Callable[[str], str]

    def answers_for(self, host: str) -> bool:
        return any(host == domain or host.endswith("." + domain) for domain in self.domains)


def _phrases(table: dict[str, tuple[str, ...]], said: str) -> str:
    lowered = said.lower()
    for cause, phrases in table.items():
        if any(phrase in lowered for phrase in phrases):
            return cause
    return ""


# https://www.godaddy.com/help/what-does-my-email-bounceback-mean-3568
_GODADDY_CODES = {
    "IB401": "securityerror",    # authentication is not allowed on inbound mail
    "IB501": "notcompliantrfc",  # blank From: address
    "IB502": "notcompliantrfc",  # an IP address as the From: address
    "IB506": "rejected",         # From: domain is invalid
    "IB508": "authfailure",      # invalid SPF record
    "IB108": "requireptr",       # reverse DNS for this IP failed
    "IB212": "spamdetected",     # content judged to be spam
    "IB705": "virusdetected",    # virus infected message
    "IB605": "toomanyconn",      # too many recipients
    "IB007": "toomanyconn",      # too many sessions from this IP
    "IB101": "speeding",         # server temporarily unavailable, higher than normal volume
    "IB110": "blocked", "IB111": "blocked",  # blocked for sending spam (an hour, the day)
    "IB112": "blocked", "IB113": "blocked",  # blocked for mailing invalid recipients
    "IB504": "speeding",         # too many messages this hour
    "IB510": "speeding",         # too many messages in one session
    "IB607": "speeding",         # too many recipients this hour
    "IB103": "badreputation",    # poor reputation on Cloudmark Sender Intelligence
    "IB104": "blocked", "IB105": "blocked", "IB106": "blocked",  # Spamhaus SBL, XBL, PBL
}
_GODADDY_PHRASES = {
    "blocked": ("rbl reject", "www.spamhaus.org/query/bl?ip="),
    "expired": ("has been in the queue too long", "delivery timeout"),
    "mailboxfull": ("account storage limit",),
    "spamdetected": ("message rejected for spam or virus content",),
    "suspend": ("account disabled",),
    "systemerror": ("message is looping",),
    "userunknown": ("recipient not found", "account does not exist"),
}


def _godaddy(said: str) -> str:
    code = re.search(r" (IB\d{3})\b", said)
    if code and code.group(1) in _GODADDY_CODES:
        return _GODADDY_CODES[code.group(1)]
    return _phrases(_GODADDY_PHRASES, said)


# https://www.spectrumbusiness.net/support/internet/understanding-email-error-codes
# (first, last, cause): AUP#I… for mail to Charter, AUP#O… for mail from it.
_SPECTRUM_CODES = (
    (1000, 1000, "blocked"),          # IP address blocked for suspicious activity
    (1010, 1010, "rejected"),         # sending account blocked
    (1020, 1080, "rejected"),         # sending account limited
    (1090, 1090, "systemerror"),      # cannot be processed, try later
    (1100, 1150, "requireptr"),       # no full-circle (reverse) DNS
    (1160, 1190, "policyviolation"),  # against the domain's security policies
    (1200, 1210, "blocked"),          # flagged by Cloudmark CSI
    (1220, 1250, "blocked"),          # listed by Spamhaus
    (1260, 1260, "networkerror"),     # IPv6 is not accepted
    (1300, 1340, "toomanyconn"),      # too many concurrent connections
    (1350, 1490, "speeding"),         # too many messages or recipients
    (1500, 1500, "rejected"),         # sent as another address than signed in
    (1520, 1520, "rejected"),         # sent as a domain not hosted
    (1530, 1530, "mesgtoobig"),       # larger than 20 MB
    (1540, 1540, "speeding"),         # too many in one session
    (1550, 1550, "speeding"),         # too many recipients in one message
    (1560, 1560, "policyviolation"),  # too many invalid recipients
    (1580, 1580, "speeding"),         # too many recipients in a short time
)


def _spectrum(said: str) -> str:
    code = re.search(r"AUP#[-A-Za-z]*(\d{4})", said)
    if not code:
        return ""
    number = int(code.group(1))
    return next((cause for first, last, cause in _SPECTRUM_CODES if first <= number <= last),
                "")


# https://www.cox.com/residential/support/email-error-codes.html
_COX_CODES = {
    "CXBL": "blocked", "CDRBL": "blocked",  # IP blocked for spam-like behaviour
    "CXDNS": "requireptr",                  # reverse DNS of the IP fails
    "CXSNDR": "authfailure",                # SPF, DomainKeys or DKIM of the sender fail
    "CXSMTP": "rejected",                   # SMTP protocol violation
    "CXCNCT": "toomanyconn",                # too many concurrent connections
    "CXMXRT": "toomanyconn",                # too many recipients
    "CXTHRT": "securityerror", "CXMJ": "securityerror",  # suspicious account activity
    # The sending IP is on a DNS block list (Spamhaus, Return Path, ivmSIP, Cloudmark).
    **{f"IPBL{bits}": "blocked" for bits in (
        "0001", "0010", "0100", "0011", "0101", "0110", "0111", "1000", "1001", "1010",
        "1011", "1100", "1101", "1110", "1111", "00001")},
    # A URL in the body is on a block list (SURBL, Spamhaus DBL, ivmURI).
    **{f"URLBL{bits}": "spamdetected" for bits in ("011", "101", "110", "1001")},
}
_COX_PHRASES = {
    "blocked": ("cox too many bad commands from", "too many invalid recipients"),
    "requireptr": ("dns check failure - try again later", "rejected - no rdns"),
    "policyviolation": ("esmtp no data before greeting", "attachment extension is forbidden"),
    "rejected": ("sender rejected",),
    "systemerror": ("esmtp server temporarily not available",),
    "toomanyconn": ("too many sessions from", "requested action aborted: try again later",
                    "message threshold exceeded"),
    "userunknown": ("recipient rejected",),
}


def _cox(said: str) -> str:
    code = re.search(r"AUP#([0-9A-Z]+)", said)
    if code and code.group(1) in _COX_CODES:
        return _COX_CODES[code.group(1)]
    return _phrases(_COX_PHRASES, said)


# https://mail.i.ua/err/N
_IUA_CODES = {
    1: "norelaying",    # SMTP as a mail gateway is forbidden
    2: "userunknown",   # user is not found
    3: "suspend",       # mailbox not used for more than 3 months
    4: "mailboxfull",   # mailbox is full
    5: "toomanyconn",   # sending limit exceeded
    6: "norelaying",    # use the SMTP of your provider
    7: "blocked",       # wrong HELO/EHLO parameter
    8: "rejected",      # could not check the sender address
    9: "blocked",       # sender IP address is blacklisted
    10: "filtered",     # not in the list of mail address management
}


def _iua(said: str) -> str:
    code = re.search(r"\.i\.ua/err/(\d{1,2})\b", said, re.IGNORECASE)
    return _IUA_CODES.get(int(code.group(1)), "") if code else ""


# Orange and La Poste: the number after OFR, LPN or OUK names the cause (None: says
# nothing, read the words).
_FRANCE_CODES: dict[int, str | None] = {
    102: "blocked",        # source IP blocked for spamming issues
    103: "blocked",        # service refused
    104: "toomanyconn",    # too many connections, slow down
    105: None, 108: None, 109: None, 201: None,  # please try later
    305: "securityerror",  # invalid authentication code
    401: "blocked",        # SPF: not allowed to send mail
    402: "securityerror",  # authentication required
    403: "rejected", 405: "rejected", 415: "rejected",  # invalid sender
    416: "userunknown",    # invalid recipient
    417: "mailboxfull",    # recipient over quota
    418: "userunknown",    # invalid recipient
    420: "suspend",        # archived recipient
    421: "rejected",       # mail from not owned by user
    423: None, 424: None,  # service refused, please try later
    426: "suspend",        # the recipient account is blocked
    505: "systemerror",    # service refused, please try later
    506: "spamdetected",   # mail rejected
    510: "blocked",        # service refused, please try later
    513: None,             # mail rejected
    514: "mesgtoobig",     # message size limit reached
    999: "blocked",        # service refused
}


def _france(said: str) -> str:
    code = re.search(r"\b(?:LPN|OFR|OUK)(?:_(\d{3})|\d{3}[-_](\d{3}))\b", said, re.IGNORECASE)
    if not code:
        return ""
    return _FRANCE_CODES.get(int(code.group(1) or code.group(2))) or ""


# https://service.mail.qq.com/detail/122
_TENCENT_PHRASES = {
    "authfailure": ("spf check failed", "dmarc check failed"),
    "blocked": ("suspected bounce attacks", "suspected spam ip", "connection denied"),
    "mesgtoobig": ("message too large",),
    "rejected": ("suspected spam", "mail is rejected by recipients"),
    "spamdetected": ("spam is embedded in the email", "mail content denied"),
    "suspend": ("is a deactivated mailbox",),
    "syntaxerror": ("bad address syntax",),
    "toomanyconn": ("ip frequency limited", "domain frequency limited",
                    "sender frequency limited", "connection frequency limited"),
    "userunknown": ("mailbox not found",),
}


def _tencent(said: str) -> str:
    return _phrases(_TENCENT_PHRASES, said)


_FAMILIES = (
    _Family("GoDaddy", ("smtp.secureserver.net", "mailstore1.secureserver.net"), _godaddy),
    _Family("Spectrum", ("charter.net",), _spectrum),
    _Family("Cox", ("cox.net",), _cox),
    _Family("IUA", ("email.ua",), _iua),
    _Family("FrancePTT", ("orange.fr", "wanadoo.fr", "laposte.net"), _france),
    _Family("Tencent", ("qq.com",), _tencent),
)

# The host in a notice's own words: Postfix's "host mx.example.net[192.0.2.1] said:",
# Exim's "host mx.example.net [192.0.2.1]:", sendmail's "while talking to mx.example.net.:".
_HOST_IN_TEXT = re.compile(
    r"\bhost\s+([a-z0-9][a-z0-9.-]{0,250}\.[a-z]{2,63})\.?\s?\["
    r"|\bwhile talking to ([a-z0-9][a-z0-9.-]{0,250}\.[a-z]{2,63})\.?:", re.IGNORECASE)


def remote_host(field: str, *texts: str) -> str:
    """The remote host that answered, lowercased: a Remote-MTA field ("dns; mx.example.net"),
    else the first host a text names as the one that said it; "" when none does."""
    host = field.split(";", 1)[-1].strip().strip("[]").rstrip(".").lower()
    if host:
        return host
    for text in texts:
        found = _HOST_IN_TEXT.search(text)
        if found:
            return (found.group(1) or found.group(2)).lower()
    return ""


def host_cause(host: str, said: str, destination: str = "") -> str:
    """The reason a known remote host's own code or phrase in `said` gives, by Sisimai's
    reason names; "" for a host not listed here, or words its table does not hold. The
    recipient's domain (`destination`) is asked first, then the host, as Sisimai does:
    only a domain that is itself one of a family's names (cox.net, qq.com)."""
    if not said:
        return ""
    for family in _FAMILIES:
        if destination and destination in family.domains:
            return family.read(said)
    for family in _FAMILIES:
        if host and family.answers_for(host):
            return family.read(said)
    return ""
