"""An article's publication date when its record has none: from its page (htmldate reads
meta tags, JSON-LD, the URL and visible dates) or from its text (a dateline, or a full
date such as "May 17, 2024" near the top).

Every function takes `now` from its caller: a date after it is no publication date, and
nothing here reads the machine's clock (htmldate would, unless given max_date)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

__all__ = ["DATE_SOURCES", "date_from_page", "date_from_text"]

# Where an article's date came from, most trusted first; "imported": it has none, and is
# ranked by when it came in.
DATE_SOURCES = ("record", "page", "text", "imported")

# How far into an article's text a date still says when it was published: news states it
# in the dateline or the first sentences; a date further down is about something else.
_LEAD_CHARS = 400
# A dateline starts the text: "May 17, 2024 —", "WASHINGTON, May 17, 2024 (Reuters) -",
# "Updated: 17 May 2024 10:30 IST".
_DATELINE_CHARS = 80
# A page or text date this far after `now` is a clock or time-zone slip of the source
# (a date at most this far ahead is kept, and clamped by the writer).
_SKEW = timedelta(days=1)
_EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)

_MONTHS = {
    "jan": 1, "january": 1, "feb": 2, "february": 2, "mar": 3, "march": 3, "apr": 4,
    "april": 4, "may": 5, "jun": 6, "june": 6, "jul": 7, "july": 7, "aug": 8, "august": 8,
    "sep": 9, "sept": 9, "september": 9, "oct": 10, "october": 10, "nov": 11,
    "november": 11, "dec": 12, "december": 12,
}
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
# A full date only (day, month and year): "May 2024" or "May 17" alone says too little.
_PATTERNS = (
    re.compile(rf"(?<![\w-]){_MONTH}\s+{_DAY},?\s+{_YEAR}(?!\d)", re.IGNORECASE),
    re.compile(rf"(?<![\w-]){_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}(?!\d)", re.IGNORECASE),
    re.compile(r"(?<![\d-])(?P<year>(?:19|20)\d\d)-(?P<month>[01]\d)-(?P<day>[0-3]\d)(?![\d])"),
)


def _found(text: str) -> list[tuple[int, datetime]]:
    """(position, date) of each full date in text, in order."""
    dates = []
    for pattern in _PATTERNS:
        for match in pattern.finditer(text):
            month = match["month"]
            number = int(month) if month.isdigit() else _MONTHS[month.casefold()]
            try:
                date = datetime(int(match["year"]), number, int(match["day"]), tzinfo=UTC)
            except ValueError:                # "February 30, 2024"
                continue
            dates.append((match.start(), date))
    return sorted(dates, key=lambda found: found[0])


def date_from_text(text: str, now: datetime) -> datetime | None:
    """The publication date a news text states near its top, or None: a date in the
    dateline (the text's first characters) first, else the latest full date in the lead
    that is not after now (a story dated by the events it reports: the latest of them is
    nearest its publication). The day only, at midnight UTC."""
    lead = " ".join(text[:_LEAD_CHARS * 2].split())[:_LEAD_CHARS]
    found = [(at, date) for at, date in _found(lead) if _EARLIEST <= date <= now + _SKEW]
    if not found:
        return None
    at, first = found[0]
    if at < _DATELINE_CHARS:
        return first
    return max(date for _, date in found)


def date_from_page(html: bytes | str, now: datetime) -> datetime | None:
    """The publication date an HTML page states (htmldate: its meta tags, JSON-LD, URL,
    then visible dates), with the time when the page gives one, or None."""
    # Imported here: only HTML pages need it (lxml, dateparser behind it).
    import htmldate

    # htmldate logs every page it cannot date at WARNING; that is our None.
    logging.getLogger("htmldate").setLevel(logging.ERROR)
    found = None
    # Its metadata first (url=""), which gives the time too; then also the date in its
    # address ("/2019/11/18/"), which htmldate would otherwise take before everything.
    for url in ("", None):
        try:
            found = htmldate.find_date(html, url=url, original_date=True,
                                       extensive_search=True,
                                       outputformat="%Y-%m-%dT%H:%M:%S%z",
                                       min_date=_EARLIEST.strftime("%Y-%m-%d"),
                                       max_date=(now + _SKEW).strftime("%Y-%m-%d"))
        except (ValueError, TypeError):      # a page htmldate cannot read at all
            return None
        if found:
            break
    if not found:
        return None
    try:
        date = datetime.fromisoformat(found)
    except ValueError:
        return None
    return date.replace(tzinfo=UTC) if date.tzinfo is None else date.astimezone(UTC)
