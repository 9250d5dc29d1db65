"""Leads taken off teasers (strip_lead) on the real material in tests/data: how many of the
581 AG News descriptions start with a dateline, a byline or a wire's name before and after,
counted by a check written apart from strip_lead's patterns; which teasers of the real
pages and feeds change and what each loses; the time on hostile 100 KB lines.

    .venv/bin/python bench/teasers.py              # figures, disagreements, every change
    .venv/bin/python bench/teasers.py --sample 20  # and 20 AG News cuts picked at random
    .venv/bin/python bench/teasers.py --leads      # and every distinct lead cut, counted

"Before" is the same code with strip_lead made to return its text unchanged.
"""

from __future__ import annotations

import argparse
import collections
import csv
import random
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

from digest.content import teasers
from digest.content.teasers import strip_lead, teaser_for
from digest.ingest import parse_path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
AG_NEWS = DATA / "topics" / "ag_news_train_sample.csv"
PAGES = DATA / "corpus" / "pages"
FEEDS = DATA / "corpus" / "feeds"
WORDS = 45          # the default teaser length ([edition] teaser_words)

# The check: before the first dash that stands between spaces (or an em dash, or "--") in
# the first 80 characters, every word starts with a capital, a parenthesis or a slash, or
# is a site's name. Looser than strip_lead on purpose ("Hurricane Charley - one of …"
# passes it), so that what it counts and strip_lead does not are read by eye.
_CHECK = re.compile(r"\s*([^\n]{1,80}?)(?:\s+(?:-{1,2}|–|—)\s+|\s*—\s*|--)")


def looks_like_lead(text: str) -> bool:
    found = _CHECK.match(text)
    return bool(found) and all(w[0].isupper() or w[0] in "(/" or "." in w
                               for w in found.group(1).split())


@contextmanager
def leads_kept() -> Iterator[None]:
    """The teasers as they were: strip_lead returns its text unchanged."""
    with mock.patch.object(teasers, "strip_lead", lambda text: text):
        yield


def kind(cut: str) -> str:
    if cut.startswith("By "):
        return "byline, then a dateline"
    if re.match(r"\S+\.(?:com|net|org) ", cut):
        return "a site's name"
    if re.match(r"\(?(?:Reuters|AP|AFP|Canadian Press)\)? ", cut):
        return "a wire's name"
    return "dateline"


def ag_news(sample: int, leads: bool) -> None:
    with AG_NEWS.open(encoding="utf-8", newline="") as f:
        descriptions = [row[2] for row in csv.reader(f)]
    after = [strip_lead(d) for d in descriptions]
    cuts = [d[:len(d) - len(a)].strip() for d, a in zip(descriptions, after, strict=True)
            if a != d]
    before_n = sum(looks_like_lead(d) for d in descriptions)
    after_n = sum(looks_like_lead(a) for a in after)
    print(f"AG News descriptions                       {len(descriptions)}")
    print(f"  starting with a lead (the check), before {before_n}")
    print(f"  starting with a lead (the check), after  {after_n}")
    print(f"  cut by strip_lead                        {len(cuts)}")
    for name, n in collections.Counter(kind(c) for c in cuts).most_common():
        print(f"    {name:38} {n}")
    print(f"  not a suffix of the description          "
          f"{sum(not d.endswith(a) for d, a in zip(descriptions, after, strict=True))}")
    print(f"  story after the cut starts in lower case "
          f"{sum(a[:1].islower() for d, a in zip(descriptions, after, strict=True) if a != d)}")
    kept = [a for a in after if looks_like_lead(a)]
    print(f"  the check sees a lead strip_lead keeps:  {len(kept)}")
    for text in kept:
        print(f"    {text[:90]!r}")
    unseen = [d for d, a in zip(descriptions, after, strict=True)
              if a != d and not looks_like_lead(d)]
    print(f"  strip_lead cuts what the check does not see: {len(unseen)}")
    for text in unseen:
        print(f"    {text[:90]!r}")
    picked = random.Random(14).sample(range(len(cuts)), min(sample, len(cuts)))
    for i in sorted(picked):
        print(f"    cut {cuts[i]!r}")
    if leads:
        for cut, n in sorted(collections.Counter(cuts).items()):
            print(f"    {n:3} {cut!r}")


def records() -> Iterator[tuple[str, str, str | None, str]]:
    """(corpus, file, summary, body) of every page and feed item."""
    for corpus, folder in (("pages", PAGES / "html"), ("feeds", FEEDS)):
        for path in sorted(folder.iterdir()):
            if path.suffix in (".html", ".xml", ".json"):
                for parsed in parse_path(path, datetime.now(UTC)):
                    for record in parsed.records:
                        yield corpus, path.name, record.summary, record.body


def pages_and_feeds() -> None:
    rows = list(records())
    after = [teaser_for(summary, body, WORDS) for _, _, summary, body in rows]
    with leads_kept():
        before = [teaser_for(summary, body, WORDS) for _, _, summary, body in rows]
    for corpus in ("pages", "feeds"):
        picked = [i for i, row in enumerate(rows) if row[0] == corpus]
        changed = [i for i in picked if before[i] != after[i]]
        bodies = [i for i in picked if strip_lead(rows[i][3]) != rows[i][3]]
        print(f"{corpus}: teasers {len(picked)}, changed {len(changed)}; "
              f"bodies with a lead {len(bodies)}")
        for i in bodies:
            body = rows[i][3]
            print(f"  {rows[i][1][:24]}  body lead {body[:len(body) - len(strip_lead(body))]!r}")
        for i in changed:
            lost = before[i][:before[i].find(after[i][:30])] if after[i] else before[i]
            print(f"  {rows[i][1][:24]}  teaser loses {lost!r}")
            print(f"    before {before[i]!r}")
            print(f"    after  {after[i]!r}")


def hostile() -> None:
    lines = {"'A, ' × 33 334": "A, " * 33_334, "'-' × 100 000": "-" * 100_000,
             "'—' × 100 000": "—" * 100_000, "'By ' + 'A ' × 50 000": "By " + "A " * 50_000,
             "'WASHINGTON ' × 9 091": "WASHINGTON " * 9_091,
             "' ' × 100 000 + 'x'": " " * 100_000 + "x",
             "'.' × 100 000 + ' a …'": "." * 100_000 + " a " + "w " * 60}
    for name, text in lines.items():
        start = time.perf_counter()
        strip_lead(text)
        middle = time.perf_counter()
        teaser_for(text, text, WORDS)
        end = time.perf_counter()
        print(f"  {name:28} strip_lead {1000 * (middle - start):6.2f} ms, "
              f"teaser_for {1000 * (end - middle):6.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=0, help="AG News cuts to print")
    parser.add_argument("--leads", action="store_true", help="every distinct lead cut")
    args = parser.parse_args()
    ag_news(args.sample, args.leads)
    pages_and_feeds()
    print("hostile 100 KB lines")
    hostile()
    return 0


if __name__ == "__main__":
    sys.exit(main())
