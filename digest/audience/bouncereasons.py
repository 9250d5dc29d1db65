"""Why a delivery failed, by the reason names of Sisimai (the reference bounce parser),
and whether that makes the bounce hard or soft.

A failure's cause is decided in one order: the words of the diagnostic first, matched
against each reason's phrases in turn (a full mailbox before an unknown user, an unknown
user before a filter or a policy, a policy before a network fault), then the enhanced
status code's own meaning (RFC 3463), then "expired" for a delivery still being retried
and "undefined" when nothing tells. Hard bounces are the failures that say the address
itself is gone: userunknown, hostunknown and hasmoved, and notaccept (a domain that
accepts no mail, RFC 7505) unless the code or text says it is temporary. Everything else
(a full mailbox, a filter, a block, a policy, spam, a suspended account, an expired
delivery, a network or system fault) is soft: the address may work tomorrow, or the
problem is the sender's.

Some reason names come only from a remote host's own error codes (`bouncehosts`):
speeding (too many messages in too short a time), requireptr (no reverse DNS for the
sending IP), badreputation (the sending IP's reputation), authfailure (SPF, DKIM or DMARC
of the sender failed) and notcompliantrfc (the message breaks the RFCs, a blank From:,
say). All of them are soft: they are about the sender, not the address.
"""

from __future__ import annotations

import re

__all__ = ["CAUSES", "HARD_CAUSES", "HOST_CAUSES", "cause_of", "is_hard"]

HARD_CAUSES = frozenset({"userunknown", "hostunknown", "hasmoved"})

_I = re.IGNORECASE

# Checked in this order; the first whose phrases the text holds is the cause.
_PHRASES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(pattern, _I)) for
                                                          name, pattern in (
    ("mailboxfull",
     r"quota|mail ?box (is )?(full|over)|mail ?folder is full|(inbox|disk|storage|mailbox)"
     r" (is )?full|full mailbox|insufficient (system )?storage|space not enough"
     r"|not enough (storage|space)|exceeded storage|user has exceeded|too much mail data"
     r"|mailbox size limit|account is full|boite (du destinataire )?pleine"),
    ("mesgtoobig",
     r"too (large|big)|exceeds? (the )?(maximum|fixed maximum|size)|size (limit|exceed)"
     r"|maximum (incoming |inbound )?message size|message size exceeds|message length exceeds"
     r"|message too long"),
    ("exceedlimit", r"message header size exceeds limit|exceeds? (the )?limit"),
    ("suspend",
     r"invalid/inactive user|account that you tried to reach is disabled|deactivated mailbox"
     r"|mailbox (currently )?suspended|mailbox unavailable or access denied|user suspended"
     r"|recipient suspend|account (has been |is )?(disabled|discontinued|suspended|deactivated"
     r"|locked|inactive)|mailbox (is )?(disabled|inactive|deactivated)"),
    ("hasmoved", r"has moved|moved permanently|no longer on server|address has changed"),
    ("norelaying",
     r"relay(ing)? (access )?(denied|not (permitted|allowed))|unable to relay"
     r"|not permitted to relay|we do not relay|relaying mail to .{1,80} is not allowed"),
    # About our sender address, not the recipient's ("sender address domain does not
    # exist"): read before the words of an unknown recipient.
    ("rejected",
     r"sender (address )?(was )?(rejected|refused|denied|invalid|unknown|verify failed)"
     r"|sender address domain|domain of sender address|sender domain|bad sender"
     r"|envelope sender|mail from .{0,80} (rejected|refused)"),
    ("userunknown",
     r"user(name)? (is )?unknown|unknown (user|recipient|local[- ]?part|mailbox|e-?mail address"
     r"|address)|addressee unknown|unknown or illegal user|illegal user|user not known"
     r"|no such (user|mailbox|recipient|address|account|person|local user)"
     r"|does ?n[o']t exist|did not exist|n'existe pas|existiert nicht|unbekannt"
     # "Domain name not found" is about the domain (hostunknown), not a user's name.
     r"|(user|recipient|address|mailbox|account|(?<!domain )name) (was )?not"
     r" (found|known|listed|present)"
     r"|not listed in|recipientnotfound|wasn'?t found at|was not found (at|in)"
     r"|invalid (recipient|mailbox|address|user|final delivery userid|e-?mail)"
     r"|bad destination mailbox|bad[-_ ]recipient|no mailbox|no (account|mailbox) (here )?by"
     r" that name|(does ?n[o']t|does not) have an?\s+(\S+\s+)?account"
     r"|not (a )?(valid|known) (user|recipient|address|mailbox)|is not an active address"
     r"|no longer (valid|exists|active|in use|accepts mail)|(is )?not recognized"
     r"|mailbox unavailable|mailbox (is )?unavailable|archived recipient|non-?existent user"
     r"|not a local address|no one at this address|badrcptto|no valid recipients"
     r"|recipient address rejected: access denied|final email delivery point"
     r"|did not (exactly )?match an? [\w ]{0,20}address"
     r"|account (has been |is )?(closed|deleted|terminated|removed)|ディレクトリ"),
    ("filtered",
     r"due to extended inactivity|has restricted sms e-?mail|rejected by the recipient"
     r"|recipient (has )?(rejected|refused)|refused by the recipient|message filtered"
     r"|content filter|filtered"),
    ("rejected",
     r"return path|not accepting mail from|do(es)? not accept mail from|from address"),
    ("hostunknown",
     r"no such domain|domain (name )?(does ?n[o']t exist|not found|is not registered)"
     r"|unknown (host|domain)|host (or domain name )?not found(?!, try again)|host unknown"
     r"|nxdomain|unrouteable address|nameserver query|name or service not known"
     r"|no (mx|dns|mail exchanger) (record )?for|domain (is )?invalid"),
    ("spamdetected",
     r"spam|unsolicited|\bube\b|bulk mail|junk mail|message content rejected|scored too high"),
    ("toomanyconn",
     r"too many (connections|concurrent|simultaneous|sessions)|connection limit|rate limit"
     r"|too many (messages|recipients|errors)|throttl|try again (later|slower)"
     r"|exceeded the rate"),
    ("blocked",
     r"blocked|\bblock ?list|black ?list|deny ?list|\brbl\b|reputation|dnsbl|spamhaus"
     r"|client host .{0,80}rejected|connection refused by|access denied|banned|ptr record"
     r"|reverse (dns|lookup)|not allowed to send|grey ?list|postmaster\.info"),
    ("policyviolation",
     r"policy|not authori[sz]ed|permission denied|prohibited|violat|not permitted"),
    ("virusdetected", r"virus|malware|infected"),
    ("securityerror",
     r"\bspf\b|\bdkim\b|dmarc|authentication (required|failed)|tls required|starttls"
     r"|certificate|must (authenticate|issue a starttls)"),
    ("networkerror",
     r"\bloop|\bhops\b|connection (refused|reset|lost|timed out)|could not connect"
     r"|unable to connect|did not accept our requests to connect|establish an smtp connection"
     r"|socket error|no route|unreachable|not reachable|not responding|did not respond"
     r"|could not find a gateway|network|not found, try again|name service error"
     r"|timed? ?out|time-out|dns (error|failure|lookup)"),
    ("systemerror",
     r"temporar|try again later|server (unavailable|busy)|system (error|failure|problem)"
     r"|internal (error|server error)|local error|service (is )?(temporarily )?unavailable"
     r"|out of memory|i/o error|resources"),
    ("expired",
     r"expired|too long|postponed|delayed|deferred|not yet been delivered"
     r"|will (continue|be retried)|retry time|could not be delivered for|giving up"
     r"|queue(d)? (for|too long)"),
    ("contenterror", r"message content|header (is |was )?(invalid|malformed)|8-?bit data"
                     r"|mime|content rejected"),
    ("systemfull", r"system (is )?full|out of disk|no space left|insufficient disk"),
    ("notaccept", r"does not accept (any )?mail|null mx|accepts no mail|not accepting mail"
                  r"|no mail is accepted"),
    ("mailererror",
     r"x-unix|mailer error|command (died|failed)|exit code|procmail|\bpipe\b|mail(er)? program"),
))

# Reasons a remote host's own codes give (`bouncehosts`), which no words here name.
HOST_CAUSES = frozenset({"speeding", "requireptr", "badreputation", "authfailure",
                         "notcompliantrfc"})

# What an enhanced status code means on its own (RFC 3463, as Sisimai reads it).
_BY_CODE: dict[str, str] = {
    "1.0": "userunknown", "1.1": "userunknown", "1.2": "hostunknown", "1.3": "userunknown",
    "1.4": "userunknown", "1.5": "userunknown", "1.6": "hasmoved", "1.7": "rejected",
    "1.8": "rejected", "1.9": "systemerror", "1.10": "userunknown",
    "2.0": "filtered", "2.1": "filtered", "2.2": "mailboxfull", "2.3": "exceedlimit",
    "2.4": "systemerror",
    "3.0": "systemerror", "3.1": "systemfull", "3.2": "notaccept", "3.3": "systemerror",
    "3.4": "mesgtoobig", "3.5": "systemerror",
    "4.0": "networkerror", "4.1": "networkerror", "4.2": "networkerror",
    "4.3": "systemerror", "4.4": "networkerror", "4.5": "networkerror",
    "4.6": "networkerror", "4.7": "expired",
    "7.1": "securityerror", "7.13": "suspend", "7.14": "securityerror",
    "7.26": "securityerror", "7.25": "blocked", "7.27": "notaccept",
}

# Every reason name a failure can be given.
CAUSES = frozenset({name for name, _ in _PHRASES} | set(_BY_CODE.values()) | HOST_CAUSES
                   | {"syntaxerror", "contenterror", "securityerror", "expired", "undefined"})


def _by_code(code: str | None) -> str:
    if not code:
        return ""
    klass, _, rest = code.partition(".")
    if klass not in ("4", "5"):
        return ""
    cause = _BY_CODE.get(rest, "")
    if not cause:
        subject = rest.split(".", 1)[0]
        cause = {"5": "syntaxerror", "6": "contenterror", "7": "securityerror"}.get(subject, "")
    if klass == "4" and cause in ("userunknown", "hostunknown", "hasmoved", "notaccept"):
        # A temporary code for an address problem: the server is still deciding.
        return "" if cause != "notaccept" else cause
    return cause


def cause_of(code: str | None, words: str, *, delayed: bool = False, told: str = "") -> str:
    """Sisimai's reason name for a failure: what the remote host's own code told (`told`,
    from `bouncehosts`: Sisimai asks the remote host before its reason words), else from
    the diagnostic's words (names already taken out), else from the enhanced status code,
    else "undefined" (which a caller reads as "expired" for a delivery still being
    retried, once nothing else tells)."""
    if told:
        return "expired" if delayed and told in HARD_CAUSES else told
    for name, pattern in _PHRASES:
        if pattern.search(words):
            if delayed and name in HARD_CAUSES:
                # A delivery still being retried is not yet a verdict on the address.
                return "expired"
            return name
    cause = _by_code(code)
    if delayed and cause in HARD_CAUSES:
        return "expired"
    return cause or "undefined"


def is_hard(cause: str, code: str | None, words: str = "") -> bool:
    """Sisimai's hard-bounce rule: the address is gone (userunknown, hostunknown,
    hasmoved), or its domain accepts no mail (notaccept) and nothing says temporary."""
    if cause in HARD_CAUSES:
        return True
    if cause != "notaccept":
        return False
    return not ((code or "").startswith("4") or re.search(r"\btemporar|\bpersistent", words,
                                                         _I))
