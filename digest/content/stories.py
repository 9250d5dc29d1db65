"""One entry per story, and the order of a topic's stories.

Articles from different sources about the same event are one story: their meanings are
close ([grouping] story_threshold), they appeared within story_window_hours of each other,
they name at least three of the same people, places, organisations or figures (so
that two companies' earnings reports, alike in every other word, stay two stories), and
their titles do not give different figures (two games between the same teams: "Indians
Beat Twins 7-1", "Twins Rally to Beat Indians in 10 Innings"). The fullest article
leads; the others become "Also covered by" links.

A story's score, shown by `digest preview --explain`:

    score = weight × (1 + 0.5 × (sources − 1)) × 0.5 ^ (age in hours / half_life_hours)

weight is the largest [[feeds]] weight among its sources (1 for other sources), sources
how many different sources carried it, age the time from its lead's date to the
edition's. An undated lead (no date in its record, page or text) is aged from when it
came in, and at least half_life_hours: it is never ranked as brand new. With [tracking]
rank_by_clicks, the score is then multiplied by the largest click factor among its
sources (`click_factors`: how much more than its share of the articles readers clicked a
source, 0.5 to 2). Pinned stories (any of whose articles is pinned) come first, then the
highest score, then the newest.

A story the previous edition told goes on (`follow_up`): when one of its articles tells
the same story as an article of that edition (the same test, from any source, within
story_window_hours of it), its reports dated after that edition's cut-off are new
coverage, shown as an update of it. A report dated before the cut-off (it came in late),
or one that tells it in nearly the words of a report already sent (a wire copy another
paper ran a day later), only repeats what readers were sent: it is left out. A story
with no new coverage is left out whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from itertools import chain

import numpy as np

from ..config import GroupingSettings
from ..store.models import Article
from .semantic import DIMENSIONS, unpack

__all__ = ["CLICK_PRIOR", "Earlier", "Previous", "Story", "click_factor", "click_factors",
           "find_stories", "follow_up", "shared_names", "story_score", "undated"]

_WORD = re.compile(r"[^\W\d_][\w'’.-]*[^\W_]|\d+(?:[.,]\d+)*", re.UNICODE)
# Calibrated on the 581 AG News items (tests/data/topics), where same-event pairs from
# different agencies share 3 to 14 names and look-alikes (two retailers' quarterly
# profits, two games of the same teams) at most 2, or give different scores.
_SHARED_NAMES = 3
# A report this similar to one already sent is that report again (a wire copy run by
# another paper): on AG News, the AP's and the Boston Globe's texts of one AP story are
# 0.93 alike, the reports of the same event by different agencies 0.70 to 0.85.
_SAME_REPORT = 0.9
_FIGURE = re.compile(r"\d+(?:[.,]\d+)*")
# Capitalised words that name nothing in particular, and the agencies and days that a
# news text names whatever it is about.
_COMMON_WORDS = """
a an the and or but nor of to in on at by for from with without as is are was were be
been it its this that these those he she they we you i his her their our my your after
before over under up down out into onto about than then new more most says said say
will would can could may might not no yes all any some one two three first last next
how why what when where who which while amid against during between report reports
update live breaking exclusive watch video photos opinion analysis review reuters ap
afp upi cnn bbc nyt wsj dpa ansa efe press associated agence monday tuesday wednesday
thursday friday saturday sunday today yesterday tomorrow january february march april
june july august september october november december jan feb mar apr jun jul aug sep
sept oct nov dec
"""
_NOT_NAMES = frozenset(_COMMON_WORDS.split())


@dataclass(frozen=True)
class Previous:
    """The edition before this one that went out: its number, cut-off and articles (the
    stories an edition goes on from)."""

    number: int
    cutoff: datetime
    articles: Sequence[Article]


@dataclass(frozen=True)
class Earlier:
    """The story of an earlier edition that a story goes on: that edition's number, and
    the id and title of the article that led it there."""

    number: int
    article_id: int
    title: str


@dataclass
class Story:
    """Articles telling one story; the lead first. A story that goes on one the previous
    edition told (update_of) holds only its new coverage; its reports that only repeat
    what was sent are in repeats (taken by the edition, never shown)."""

    lead: Article
    others: list[Article] = field(default_factory=list)
    score: float = 0.0
    update_of: Earlier | None = None
    repeats: list[Article] = field(default_factory=list)

    @property
    def articles(self) -> list[Article]:
        return [self.lead, *self.others]

    @property
    def pinned(self) -> bool:
        """Whether the editor pinned any of its articles (`digest articles pin`): a pin
        holds whichever of them leads."""
        return any(a.pinned for a in self.articles)

    @property
    def source_count(self) -> int:
        names = {name for a in self.articles for name in _source_names(a)}
        return max(1, len(names))


def _source_names(article: Article) -> list[str]:
    return [s.name for s in ([article.source] if article.source else []) + article.also_from]


def undated(article: Article) -> bool:
    """Whether nothing told the article's date (its record, page or text): it is dated by
    when it came in."""
    return article.published_at is None or article.date_source == "imported"


def _when(article: Article) -> datetime:
    return article.published_at or article.added_at


def _fullness(article: Article) -> int:
    return len(article.body or article.summary or "")


def _names(article: Article) -> frozenset[str]:
    """The names and numbers an article's title and summary mention: capitalised words
    (except common ones) and figures, lower-cased."""
    return _names_in(f"{article.title} {(article.summary or article.body or '')[:400]}")


# One edition's articles are read several times over (its stories, the previous
# edition's, the updates, each variant): the names of a text are worked out once.
@lru_cache(maxsize=16384)
def _names_in(text: str) -> frozenset[str]:
    found = set()
    for match in _WORD.finditer(text):
        word = match.group().strip(".'’-")
        if word[:1].isdigit() or (word[:1].isupper() and len(word) > 1):
            key = word.casefold()
            if key not in _NOT_NAMES:
                found.add(key)
    return frozenset(found)


def _figures(title: str) -> frozenset[str]:
    return frozenset(m.group() for m in _FIGURE.finditer(title))


def shared_names(a: Article, b: Article) -> frozenset[str]:
    """The names and numbers both articles mention."""
    return _names(a) & _names(b)


def story_score(story: Story, now: datetime, grouping: GroupingSettings) -> float:
    """The score of the module's formula, rounded to 3 places."""
    weight = max([s.weight for a in story.articles
                  for s in ([a.source] if a.source else []) + a.also_from] or [1.0])
    age = max(0.0, (now - _when(story.lead)).total_seconds() / 3600)
    if undated(story.lead):
        age = max(age, grouping.half_life_hours)
    decay = 0.5 ** (age / grouping.half_life_hours)
    return round(float(weight * (1 + 0.5 * (story.source_count - 1)) * decay), 3)


# Pseudo-clicks spread over the sources as their articles were, added to the real ones:
# a handful of clicks moves a factor a little, hundreds move it as far as they say.
CLICK_PRIOR = 20
_CLICK_BOUNDS = (0.5, 2.0)


def click_factors(shares: Mapping[int, tuple[int, int]]) -> dict[int, float]:
    """Source id → its click factor, from each source's (counted clicks, articles) in
    the editions looked at: its share of the clicks over its share of the articles,
    smoothed by CLICK_PRIOR and held between 0.5 and 2, rounded to 3 places."""
    clicks = sum(c for c, _ in shares.values())
    shown = sum(n for _, n in shares.values())
    low, high = _CLICK_BOUNDS
    out = {}
    for source, (clicked, articles) in shares.items():
        if articles <= 0:
            continue
        expected = articles / shown
        share = (clicked + CLICK_PRIOR * expected) / (clicks + CLICK_PRIOR)
        out[source] = round(min(high, max(low, share / expected)), 3)
    return out


def click_factor(story: Story, factors: Mapping[int, float]) -> float:
    """The largest click factor among the story's sources (1 for a source without one)."""
    return max([factors.get(s.id, 1.0) for a in story.articles
                for s in ([a.source] if a.source else []) + a.also_from] or [1.0])


def find_stories(articles: Sequence[Article], grouping: GroupingSettings,
                 now: datetime) -> list[Story]:
    """The stories of these articles (every article in exactly one), each scored. An
    article joins the first story whose lead it matches; leads are taken fullest first,
    so the fullest article of a story leads it. An article without a vector (stored
    before topics by meaning, or with the keywords method) neither joins nor is joined.

    The similarities are computed a block of articles at a time against those before
    them, and the shared names, similarity, window and source are tested for all leads
    at once: an edition of 10,000 articles takes about a second and a few megabytes,
    not a matrix of all pairs and a Python loop over every lead."""
    ordered = sorted(articles, key=lambda a: (-_fullness(a), a.id))
    facts = _Facts(ordered, grouping)
    stories: list[Story] = []
    story_of = np.zeros(len(ordered), dtype=np.int64)   # a lead's story, by index
    for start in range(0, len(ordered), _BLOCK):
        stop = min(start + _BLOCK, len(ordered))
        block = facts.rows[start:stop] @ facts.rows[:stop].T
        for i in range(start, stop):
            lead = facts.first_lead(i, block[i - start, :i])
            if lead is None:
                story_of[i] = len(stories)
                stories.append(Story(ordered[i]))
                facts.add_lead(i)
            else:
                stories[int(story_of[lead])].others.append(ordered[i])
    for story in stories:
        story.others.sort(key=lambda a: (_when(a), a.id))
        story.score = story_score(story, now, grouping)
    return stories


# Articles whose similarities are computed at once (a block × all before it).
_BLOCK = 512
# Up to this many near leads, the names are compared one lead at a time; beyond, counted
# for all of them at once.
_FEW = 64


class _Facts:
    """What find_stories compares, per article in its order: the vector (zero when
    there is none), the time, the source, the names and the title's figures."""

    def __init__(self, ordered: Sequence[Article], grouping: GroupingSettings) -> None:
        self.ordered = ordered
        self.threshold = grouping.story_threshold
        self.window = grouping.story_window_hours * 3600
        vectors = [unpack(a.embedding) for a in ordered]
        self.has = np.array([v is not None for v in vectors], dtype=bool)
        self.rows = np.zeros((len(ordered), DIMENSIONS), dtype=np.float32)
        for i, vector in enumerate(vectors):
            if vector is not None:
                self.rows[i] = vector
        self.times = np.array([_when(a).timestamp() for a in ordered], dtype=np.float64)
        self.sources = np.array([-1 if a.source_id is None else a.source_id
                                 for a in ordered], dtype=np.int64)
        self.names = [_names(a) for a in ordered]
        self.figures = [_figures(a.title) for a in ordered]
        self.postings: dict[str, list[int]] = {}   # name → the leads naming it
        self.leads = np.zeros(len(ordered), dtype=bool)   # leads with a vector

    def add_lead(self, i: int) -> None:
        """Article i leads a story: later articles may join it (when it has a vector)."""
        if self.has[i]:
            self.leads[i] = True
            for name in self.names[i]:
                self.postings.setdefault(name, []).append(i)

    def first_lead(self, i: int, similarity: np.ndarray) -> int | None:
        """The first lead (by index, below i) that article i tells the same story as:
        similar enough, within the window, from another source, three names shared and
        no other figures in the title. The first four are tested for every lead at once
        (the names from the leads of each name, when many leads are near)."""
        names = self.names[i]
        if not self.has[i] or len(names) < _SHARED_NAMES:
            return None
        near = ((similarity >= self.threshold) & self.leads[:i]
                & (np.abs(self.times[:i] - self.times[i]) <= self.window))
        if self.sources[i] >= 0:
            near &= self.sources[:i] != self.sources[i]
        candidates = np.flatnonzero(near)
        if len(candidates) > _FEW:
            lists = [self.postings.get(name, ()) for name in names]
            shared = np.bincount(np.fromiter(chain.from_iterable(lists), dtype=np.int64),
                                 minlength=i)[:i]
            candidates = np.flatnonzero(near & (shared >= _SHARED_NAMES))
        figures = self.figures[i]
        for lead in candidates:
            if (len(names & self.names[lead]) >= _SHARED_NAMES
                    and not (figures and self.figures[lead] and not figures & self.figures[lead])):
                return int(lead)
        return None


def _continued(articles: Sequence[Article], earlier: Sequence[Article],
               grouping: GroupingSettings) -> dict[int, tuple[int, float]]:
    """Article id → (the index in earlier of the most similar article it tells the same
    story as, their similarity): the test find_stories makes, but from any source (an
    outlet's own follow-up goes on its story)."""
    if not articles or not earlier:
        return {}
    new, old = _Facts(articles, grouping), _Facts(earlier, grouping)
    similarity = new.rows @ old.rows.T
    near = ((similarity >= new.threshold) & new.has[:, None] & old.has[None, :]
            & (np.abs(old.times[None, :] - new.times[:, None]) <= new.window))
    found: dict[int, tuple[int, float]] = {}
    for i in np.flatnonzero(near.any(axis=1)):
        names, figures = new.names[i], new.figures[i]
        if len(names) < _SHARED_NAMES:
            continue
        for j in sorted(np.flatnonzero(near[i]), key=lambda j: -similarity[i, j]):
            if (len(names & old.names[j]) >= _SHARED_NAMES
                    and not (figures and old.figures[j] and not figures & old.figures[j])):
                found[articles[int(i)].id] = (int(j), float(similarity[i, j]))
                break
    return found


def follow_up(stories: Sequence[Story], previous: Previous | None,
              grouping: GroupingSettings, now: datetime) -> tuple[list[Story], list[Story]]:
    """(the stories to show, the stories left out): a story that goes on one the previous
    edition told becomes an update of it, made of its new coverage (reports dated after
    that edition's cut-off and not nearly the words of one it sent; the fullest leads,
    rescored), the others kept as its repeats; one without new coverage is left out whole
    (update_of set)."""
    if previous is None or not previous.articles:
        return list(stories), []
    earlier = list(previous.articles)
    matched = _continued([a for s in stories for a in s.articles], earlier, grouping)
    if not matched:
        return list(stories), []
    told: dict[int, Earlier] = {}
    for story in find_stories(earlier, grouping, previous.cutoff):
        lead = story.lead
        for article in story.articles:
            told[article.id] = Earlier(previous.number, lead.id,
                                       lead.edited_title or lead.title)
    shown: list[Story] = []
    left: list[Story] = []
    for story in stories:
        hit = next((matched[a.id][0] for a in story.articles if a.id in matched), None)
        if hit is None:
            shown.append(story)
            continue
        update_of = told[earlier[hit].id]
        fresh = [a for a in story.articles if _when(a) > previous.cutoff
                 and matched.get(a.id, (0, 0.0))[1] < _SAME_REPORT]
        if not fresh:
            story.update_of = update_of
            left.append(story)
            continue
        ordered = sorted(fresh, key=lambda a: (-_fullness(a), a.id))
        update = Story(ordered[0], sorted(ordered[1:], key=lambda a: (_when(a), a.id)),
                       update_of=update_of,
                       repeats=[a for a in story.articles if a not in fresh])
        update.score = story_score(update, now, grouping)
        shown.append(update)
    return shown, left
