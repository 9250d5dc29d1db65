"""Text cleaning for messy scraped or feed text, and sentence-aware teasers.

Everything that turns untrusted markup into text or safe HTML lives here, so the
rest of the code only ever sees clean strings.
"""

from __future__ import annotations

import html
import re

import nh3
import regex

__all__ = [
    "clean_text",
    "clean_title",
    "html_to_text",
    "make_teaser",
    "normalise_for_hash",
    "sanitize_html",
    "split_highlights",
    "strip_lead",
    "teaser_for",
]

_BOILERPLATE = {
    "advertisement", "advertisements", "ad", "sponsored", "sponsored content",
    "show full article", "print article", "print", "next story", "previous story",
    "more stories", "related stories", "related articles", "related", "read more",
    "read full article", "continue reading", "share", "share this", "share this article",
    "share on facebook", "share on twitter", "tweet", "email", "comments", "view comments",
    "subscribe", "sign up", "skip to content", "skip to main content", "menu", "close",
    "loading", "loading...", "trending", "most popular", "recommended", "top stories",
    "click here", "follow us", "story continues below advertisement",
}
_HIGHLIGHT_HEADINGS = {"highlights", "key points", "key takeaways", "summary", "tl;dr",
                       "tldr", "in brief", "at a glance", "the gist"}
# A feed summary's tail that only points at the full article.
# A match starts only where a run of spaces does, and swallows runs whole: linear in the
# length of the text however long its runs of spaces or dots.
_TRAILERS = re.compile(
    r"(?<!\s)\s*+(\[(…|\.\.\.|&hellip;)\]|(continue reading|read more|the post .{0,200} appeared"
    r" first on .{0,200})[\s.…→»>]*+)\s*$", re.IGNORECASE)
_BLOCK_TAGS = re.compile(
    r"<\s*(?:br|hr|/?p|/?div|/?li|/?ul|/?ol|/?h[1-6]|/?blockquote|/?tr|/?table|/?section|"
    r"/?article|/?header|/?footer|/?figure|/?figcaption|/?pre)\b[^>]*>", re.IGNORECASE)
_LOOKS_LIKE_HTML = re.compile(r"<[a-zA-Z!/][^>]*>|&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_ALLOWED_SCHEMES = {"http", "https", "mailto"}


def sanitize_html(fragment: str) -> str:
    """Untrusted HTML made safe to embed: no scripts, handlers, styles or non-http(s) links."""
    return nh3.clean(fragment, url_schemes=_ALLOWED_SCHEMES,
                     link_rel="noopener noreferrer nofollow")


def html_to_text(fragment: str) -> str:
    """Visible text of an HTML fragment, paragraphs separated by blank lines."""
    if not _LOOKS_LIKE_HTML.search(fragment):
        return fragment
    marked = _BLOCK_TAGS.sub("\n\n", fragment)
    # nh3 drops <script>/<style> with their content and every other tag, keeping text.
    text = nh3.clean(marked, tags=set(), clean_content_tags={"script", "style", "noscript",
                                                               "template", "iframe", "object"})
    return html.unescape(text)


def _norm_line(line: str) -> str:
    return re.sub(r"[\W_]+", " ", line).strip().casefold()


def clean_title(text: str) -> str:
    """A title as one line: tags stripped, entities decoded, whitespace folded; nothing
    else dropped (a title may be one character: "X", "π", "9")."""
    return " ".join(html_to_text(text).split())


def clean_text(text: str, title: str | None = None) -> str:
    """Tags stripped, entities decoded, whitespace folded, boilerplate and a repeated title
    dropped. Paragraphs are separated by one blank line."""
    text = html_to_text(text)
    title_key = _norm_line(title) if title else None
    paragraphs: list[str] = []
    current: list[str] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = _SPACES.sub(" ", raw).strip()
        key = _norm_line(line)
        if not line:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        if (key in _BOILERPLATE or len(line) == 1 or (title_key and key == title_key)
                or not key and len(line) < 4):
            continue
        current.append(line)
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def split_highlights(text: str) -> tuple[str | None, str]:
    """Take a "Highlights"-style block (a heading line, then text up to a blank line) out of
    cleaned text: returns (the block's text or None, the rest)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.strip().rstrip(":").casefold() in _HIGHLIGHT_HEADINGS:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block: list[str] = []
            while j < len(lines) and lines[j].strip():
                block.append(lines[j].strip())
                j += 1
            if block:
                rest = "\n".join(lines[:i] + lines[j:])
                return " ".join(block), re.sub(r"\n{3,}", "\n\n", rest).strip()
    return None, text


# The lead of news text: what stands before the story proper. Only the first _PREFIX
# characters are ever matched: the patterns' repetitions are bounded and each word's
# characters are matched possessively, so a hostile 100 KB line costs what a short one does.
_PREFIX = 200
_MAX_LEADS = 4          # "By JANE DOE  Canadian Press - OTTAWA (CP) - …" is three
_WIRES = ("The Associated Press", "Associated Press", "Agence France-Presse",
          "The Canadian Press", "Canadian Press", "PA Media", "Kyodo News", "Reuters",
          "Bloomberg", "Xinhua", "Interfax", "Bernama", "Kyodo", "Yonhap", "IANS", "TASS",
          "ANSA", "UPI", "AFP", "AAP", "ANI", "PTI", "EFE", "dpa", "DPA", "CNN", "BBC", "NPR",
          "AP", "CP")
_PICTURE_SOURCES = ("Getty Images", "AP Photo", "AP Images", "Shutterstock", "iStockphoto",
                    "iStock", "Alamy", "EPA-EFE", "EPA", "NurPhoto", "SOPA Images", "WireImage",
                    "ZUMA Press", "ZUMA Wire", "Sipa", "PA Wire", "PA Images", "Corbis",
                    "Reuters", "AFP", "Bloomberg", "Xinhua", "AP")


def _one_of(names: tuple[str, ...]) -> str:
    return "(?:" + "|".join(regex.escape(n) for n in sorted(names, key=len, reverse=True)) + ")"


_WIRE = _one_of(_WIRES)
_PICTURE = _one_of(_PICTURE_SOURCES)
# A dash that ends a dateline: a single hyphen or en dash only with a space after it, so
# that "NATO-Russia" or "NATO–Russia talks" is never one.
_DASH = r"\s*+(?:-{2,3}|[—―]|[-‐‑‒–−](?=\s|$))\s*+"
_CAPS = r"\p{Lu}[\p{Lu}.'’]*+(?:-\p{Lu}[\p{Lu}.'’]*+)?"            # WASHINGTON, ST., N.J.
_WORD = r"\p{Lu}[\p{L}.'’]*+(?:-\p{L}[\p{L}.'’]*+)?"              # Venezuela, Calif.
# An ALL-CAPS place of two words or more, or of one with at least three letters: "US" or
# "AI" before a dash is a title's word, not a place.
_PLACE = rf"(?:{_CAPS}(?:(?: |\s?/\s?){_CAPS}){{1,5}}|(?=\p{{Lu}}\.?\p{{Lu}}\.?\p{{Lu}}){_CAPS})"
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
          r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_DATE = rf"(?:,?\s?(?:{_MONTH}\s\d{{1,2}}|\d{{1,2}}\s{_MONTH})(?:,?\s\d{{4}})?)"
_REGION = rf"(?:,\s?{_WORD}(?: {_WORD}){{0,2}}){{0,2}}"              # , Venezuela  , Calif.
_DATELINE = (
    rf"(?:\(\s?{_WIRE}(?: \p{{Lu}}\p{{L}}*+)?\s?\)"                   # (Reuters) (CNN Business)
    rf"|{_WIRE}|[\p{{L}}\d][\p{{L}}\d\-]{{0,40}}+\.(?:com|net|org)"       # AP  SPACE.com
    rf"|{_PLACE}{_REGION}{_DATE}?(?:(?:\s?--)?\s?\(\p{{Lu}}[^()\n]{{0,40}}+\))?"  # (AP) --(WIRE)--
    rf"(?:\s?/[\p{{L}} \-]{{2,30}}+/)?"                                # /PRNewswire/
    rf"|{_WORD}(?: {_WORD}){{0,2}}{_REGION}{_DATE}?\s?\({_WIRE}\)"      # Washington (Reuters)
    rf"){_DASH}")
_NAME_WORD = r"\p{Lu}[\p{L}.'’\-]*+"
_NAME = rf"{_NAME_WORD}(?: (?:(?:de|da|del|der|di|van|von|la|le|bin|al) )?{_NAME_WORD}){{0,4}}"
_NAMES = rf"{_NAME}(?:(?:, | and | & ){_NAME}){{0,3}}"
_ROLE = (rf"(?:(?:\p{{Lu}}\p{{Ll}}++ ){{0,3}}(?:Writer|Reporter|Correspondent|Editor|Columnist"
         rf"|Contributor|Critic|Staff)s?|(?:The )?{_WIRE})")
# Within a line a byline ends where a role or an agency says it does, or where a dateline
# begins; otherwise a name cannot be told from the sentence after it.
_BYLINE = rf"(?:By|BY)\s+{_NAMES}(?:(?:\s?[,|/]\s?|\s){_ROLE}\b|(?=\s++{_DATELINE}))"
_CREDIT_LABEL = (r"(?i:photo(?:graph|s)?|picture|pic|image|video|illustration|graphic|caption)"
                 r"(?i: credits?)?")
_CREDIT_SAYS = rf"(?:{_CREDIT_LABEL}\s?(?::|\s(?i:by)\s)|(?i:credits?)\s?:)"
_AGENCY_CREDIT = (rf"(?:{_NAME}\s?/\s?)?{_PICTURE}(?:\s?/\s?{_NAME})?"
                  rf"(?:\s(?:via|for)\s(?:Getty Images|{_WIRE}))?")
_CREDIT = (rf"\((?:\s?{_CREDIT_SAYS}[^()\n]{{1,100}}+|\s?{_AGENCY_CREDIT}\s?)\)"
           rf"|{_CREDIT_LABEL}\s?:\s?{_NAME}\s?/\s?{_PICTURE}(?=\s|$)")
_LEADS = [regex.compile(p) for p in (_DATELINE, _BYLINE, _CREDIT)]
# Leads that only stand alone: a line that is a credit, a caption or a byline with a role.
_LEAD_LINE = regex.compile(rf"\(\s?{_CREDIT_SAYS}[^()]{{1,150}}+\)|\(?{_AGENCY_CREDIT}\)?\.?"
                           rf"|{_NAMES}\s?[,|]\s?{_ROLE}\.?")
# A caption is a line of its own only where a line break ends it: in text flattened to one
# line, "Photo: …" runs on into the story.
_CAPTION_LINE = regex.compile(rf"{_CREDIT_SAYS}.{{1,150}}+")
_BY_START = regex.compile(r"(?:(?:Written|Reporting|Words|Story|Text) by|By|by|BY)\s+")
_NAME_JOINERS = {"and", "&", "of", "the", "for", "at", "in", "de", "da", "del", "der", "di",
                 "van", "von", "la", "le", "bin", "al"}
_STAMP_START = regex.compile(
    r"(?i:(?:last |first )?(?:updated|published|posted|modified)(?: on| at)?)\s?:?\s*+")
_CALENDAR = {
    "jan", "january", "feb", "february", "mar", "march", "apr", "april", "may", "jun", "june",
    "jul", "july", "aug", "august", "sep", "sept", "september", "oct", "october", "nov",
    "november", "dec", "december", "mon", "monday", "tue", "tues", "tuesday", "wed",
    "wednesday", "thu", "thur", "thurs", "thursday", "fri", "friday", "sat", "saturday", "sun",
    "sunday"}
_STAMP_WORDS = _CALENDAR | {
    "am", "pm", "a", "p", "m", "et", "est", "edt", "ct", "cst", "cdt", "mt", "mst", "mdt",
    "pt", "pst", "pdt", "gmt", "utc", "bst", "cet", "cest", "ist", "aest", "aedt", "jst",
    "hkt", "sgt", "z", "at", "on", "of", "ago", "hour", "hours", "hr", "hrs", "minute",
    "minutes", "min", "mins", "day", "days", "week", "weeks", "yesterday", "today", "just",
    "now", "last", "updated", "published", "st", "nd", "rd", "th"}
_NEXT_CHAR = regex.compile(r"\s*+(\S)")


def strip_lead(text: str) -> str:
    """text without what news text starts with before the story: a dateline ("CARACAS,
    Venezuela (Reuters) - ", "Reuters - ", "(CNN) — "), a byline ("By Jane Doe, Staff
    Writer"), a photo credit or caption ("(AP Photo/Evan Vucci)") or a time stamp ("Updated
    3:45 PM ET, Tue May 5, 2024"); several in a row, and whole lines that are nothing else.
    What a lead is followed by must not start in lower case, so "Apple - the company - said"
    stays. text itself (not a copy) when it starts with none."""
    rest = text.lstrip()
    for _ in range(_MAX_LEADS):
        end = _lead_end(rest)
        if not end:
            break
        rest = rest[end:].lstrip()
    return rest if len(rest) < len(text.lstrip()) else text


def _lead_end(text: str) -> int:
    """How many characters the lead text starts with takes (0: it starts with none)."""
    head = text[:_PREFIX]
    newline = head.find("\n")
    line = head[:newline] if newline > 0 else text if len(text) <= _PREFIX else ""
    if _is_lead_line(line.strip(), newline > 0):
        return len(line)
    for lead in _LEADS:
        found = lead.match(head)
        if found and found.end():
            after = _NEXT_CHAR.match(text, found.end())
            if not (after and after.group(1).islower()):
                return int(found.end())
    return 0


def _is_lead_line(line: str, broken: bool) -> bool:
    """A line that is only a credit, a caption (when a line break ends it), a byline or a
    time stamp."""
    return (bool(line) and len(line) <= 160
            and (_LEAD_LINE.fullmatch(line) is not None or _is_byline_line(line)
                 or _is_stamp_line(line)
                 or broken and _CAPTION_LINE.fullmatch(line) is not None))


def _is_byline_line(line: str) -> bool:
    """By, then up to ten words that are names, joiners between them, or punctuation."""
    found = _BY_START.match(line)
    if not found or "?" in line or "!" in line:
        return False
    words = line[found.end():].split()
    return (0 < len(words) <= 10 and words[0][0].isupper()
            and all(w.lstrip("(\"“'")[:1].isupper() or w.lower() in _NAME_JOINERS
                    or not any(c.isalnum() for c in w) for w in words))


def _is_stamp_line(line: str) -> bool:
    """"Updated 3:45 PM ET, Tue May 5, 2024", "Posted on May 5, 2024 by Jane Doe", or a
    date alone ("Tuesday 5 May 2024 14.30 BST"): words of dates and times only."""
    said = _STAMP_START.match(line)
    when, _, by = line[said.end() if said else 0:].partition(" by ")
    words = re.findall(r"[^\W_]+", when.casefold())
    if not words or len(by.split()) > 5 or (by and not said):
        return False
    if not all(w in _STAMP_WORDS or any(c.isdigit() for c in w) for w in words):
        return False
    return bool(said) or (any(w in _CALENDAR for w in words)
                          and any(c.isdigit() for c in when))


_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "inc", "ltd", "co", "corp", "vs",
    "etc", "e.g", "i.e", "u.s", "u.k", "u.n", "no", "gen", "gov", "sen", "rep", "lt", "col",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "approx", "dept", "est", "fig", "mt", "ft",
}
_SENTENCE_END = re.compile(r"(?<![.!?…])[.!?…]++[\"'”’)\]]*+(?=\s+[\"'“‘(\[]?[A-Z0-9])")


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        before = text[start:m.start()].split()
        last = before[-1].rstrip(".").lower() if before else ""
        if m.group().startswith(".") and (last in _ABBREVIATIONS
                                          or (len(last) == 1 and last.isalpha())):
            continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def _with_ellipsis(text: str) -> str:
    text = text.rstrip(" ,;:-–—")
    if text.endswith("…"):
        return text
    if text.endswith("."):
        return text.rstrip(".") + "…"
    return text + "…"


def make_teaser(text: str, max_words: int) -> str:
    """At most max_words words of text without its lead (strip_lead), whole sentences where
    possible, never a cut word; ends with "…" when shortened."""
    return _cut(strip_lead(text), max_words)


def _cut(text: str, max_words: int) -> str:
    flat = " ".join(text.split())
    if not flat:
        return ""
    if len(flat.split()) <= max_words:
        return flat
    chosen: list[str] = []
    count = 0
    for sentence in _sentences(flat):
        n = len(sentence.split())
        if count + n > max_words:
            break
        chosen.append(sentence)
        count += n
    if chosen and count >= max_words // 3:
        return _with_ellipsis(" ".join(chosen))
    # The first sentence alone is too long (or too little fits): cut at a word boundary.
    return _with_ellipsis(" ".join(flat.split()[:max_words]))


def teaser_for(summary: str | None, body: str, max_words: int) -> str:
    """The teaser of an article: its explicit summary when it has one, else its body; either
    without the dateline, byline or credit it starts with (strip_lead)."""
    story = strip_lead(body)
    if summary:
        own = strip_lead(_TRAILERS.sub("", summary).strip())
        cleaned = own.rstrip(".…")
        if len(cleaned.split()) >= 5 and not _is_cut_from(cleaned, story):
            return _cut(own, max_words)
    return _cut(story, max_words) or make_teaser(summary or "", max_words)


def _is_cut_from(summary: str, body: str) -> bool:
    """A feed's summary that is only the start of the body with its markup stripped (often
    with words glued together where tags were): the body makes the better teaser."""
    letters = re.sub(r"\W+", "", summary)
    return len(letters) > 20 and re.sub(r"\W+", "", body).startswith(letters)


def normalise_for_hash(text: str) -> str:
    """Case, punctuation and whitespace folded: two copies of one text compare equal."""
    return " ".join(re.sub(r"[\W_]+", " ", text.casefold()).split())
