"""Non-standard bounce notices read by the marks their MTA writes, before Mailman's generic
detectors: the lines that name each failed recipient and what the remote server said.

Each reader looks for its MTA's own marker line in the notice (the words the MTA's source
writes, as Sisimai's Lhost modules record them) and returns nothing when it is absent, so
the readers never guess at a notice another MTA wrote.

- Microsoft Exchange 2007 and later: "Diagnostic information for administrators:", then
  "Generating server: …", then each recipient on a line of its own followed by
  "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##" or "Remote Server returned '…'".
  Exchange's own error names (RESOLVER.ADR.RecipNotFound, QUEUE.Expired, …) give the
  cause.
- Lotus Domino: "… was not delivered to:", the recipients, "because:", the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["ADDRESS", "MAX_LISTED", "Listed", "listed_with_details", "read_formats"]

# An address as bounce notices write it (no quoted local parts, a dotted domain).
ADDRESS = r"[^\s<>()\[\]\\,;:\"@]+@[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,}"
MAX_LISTED = 1000


@dataclass(frozen=True)
class Listed:
    """One recipient a notice names: what the server said, the cause when the MTA's own
    error name gives it, and whether the notice says delivery is only delayed (still
    being retried: never a hard bounce)."""

    address: str
    said: str
    cause: str = ""
    delayed: bool = False


def listed_with_details(lines: Iterable[str], recipient: re.Pattern[str],
                        detail: Callable[[str], bool] | None = None,
                        ) -> list[tuple[str, list[str]]]:
    """(address, its detail lines) for each line recipient matches (its first group is
    the address), with the non-blank lines after it that detail accepts, up to
    MAX_LISTED recipients: the shape of notices that list each recipient and then what
    the server said about them."""
    found: list[tuple[str, list[str]]] = []
    for line in lines:
        named = recipient.match(line)
        if named:
            found.append((named.group(1).lower(), []))
            if len(found) >= MAX_LISTED:
                break
        elif found and line.strip() and (detail is None or detail(line)):
            found[-1][1].append(line.strip())
    return found


# Exchange's error names and Sisimai's reason for each.
_EXCHANGE_ERRORS = {
    "smtpsend.dns.nonexistentdomain": "hostunknown",
    "smtpsend.dns.mxloopback": "networkerror",
    "resolver.adr.badprimary": "systemerror",
    "resolver.adr.recipnotfound": "userunknown",
    "resolver.adr.exrecipnotfound": "userunknown",
    "resolver.adr.reciplimit": "toomanyconn",
    "resolver.adr.invalidinsmtp": "systemerror",
    "resolver.adr.ambiguous": "systemerror",
    "resolver.rst.authrequired": "securityerror",
    "resolver.rst.notauthorized": "rejected",
    "resolver.rst.recipsizelimit": "mesgtoobig",
    "queue.expired": "expired",
}
_EXCHANGE_MARK = re.compile(r"^\s*Diagnostic information for administrators:", re.I | re.M)
_EXCHANGE_END = re.compile(r"^\s*Original message headers:", re.I | re.M)
_EXCHANGE_ERROR = re.compile(r"\b((?:RESOLVER|QUEUE|SMTPSEND)\.[A-Za-z]+(?:\.\w+)?)")
_EXCHANGE_REPLY = re.compile(r"[45]\d\d[ -][45]\.\d{1,3}\.\d{1,3}\b")


def _exchange(notice: str) -> list[Listed]:
    mark = _EXCHANGE_MARK.search(notice)
    if mark is None:
        return []
    body = notice[mark.end():]
    end = _EXCHANGE_END.search(body)
    found: list[Listed] = []
    address = ""
    for line in (body[: end.start()] if end else body).splitlines():
        line = line.strip()
        only = re.fullmatch(r"<?(" + ADDRESS + r")>?", line)
        if only:
            address = only.group(1).lower()
            continue
        if address and _EXCHANGE_REPLY.search(line):
            error = _EXCHANGE_ERROR.search(line)
            cause = _EXCHANGE_ERRORS.get(error.group(1).lower(), "") if error else ""
            found.append(Listed(address, line.strip("#' "), cause))
            address = ""
            if len(found) >= MAX_LISTED:
                break
    return found


_DOMINO = re.compile(r"was not delivered to:\s*\n(?P<who>.*?)\n\s*because:\s*\n(?P<why>.*?)"
                     r"(?:\n\s*\n|\Z)", re.I | re.S)


def _domino(notice: str) -> list[Listed]:
    found = _DOMINO.search(notice)
    if found is None:
        return []
    why = " ".join(found.group("why").split())
    return [Listed(address.lower(), why)
            for address in re.findall(ADDRESS, found.group("who"))[:MAX_LISTED]]


def read_formats(notice: str) -> list[Listed]:
    """The recipients the notice names by its MTA's own format; [] when no reader knows
    it (the notice is then left to the generic detectors)."""
    # Imported here: the readers of other MTAs build on Listed and the patterns above.
    from .bounceformats_services import READERS as SERVICES
    from .bounceformats_unix import READERS as UNIX

    for reader in (_exchange, _domino, *UNIX, *SERVICES):
        found = reader(notice)
        if found:
            return found
    return []
