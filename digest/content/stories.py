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
edition's. Pinned stories come first, then the highest score, then the newest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from ..config import GroupingSettings
from ..store.models import Article
from .semantic import unpack

__all__ = ["Story", "find_stories", "shared_names", "story_score"]

_WORD = re.compile(r"[^\W\d_][\w'’.-]*[^\W_]|\d+(?:[.,]\d+)*", re.UNICODE)
# Calibrated on the 581 AG News items (tests/data/topics), where same-event pairs from
# different agencies share 3 to 14 names and look-alikes (two retailers' quarterly
# profits, two games of the same teams) at most 2, or give different scores.
_SHARED_NAMES = 3
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


@dataclass
class Story:
    """Articles telling one story; the lead first."""

    lead: Article
    others: list[Article] = field(default_factory=list)
    score: float = 0.0

    @property
    def articles(self) -> list[Article]:
        return [self.lead, *self.others]

    @property
    def source_count(self) -> int:
        names = {name for a in self.articles for name in _source_names(a)}
        return max(1, len(names))


def _source_names(article: Article) -> list[str]:
    return [s.name for s in ([article.source] if article.source else []) + article.also_from]


def _when(article: Article) -> datetime:
    return article.published_at or article.added_at


def _fullness(article: Article) -> int:
    return len(article.body or article.summary or "")


def _names(article: Article) -> frozenset[str]:
    """The names and numbers an article's title and summary mention: capitalised words
    (except common ones) and figures, lower-cased."""
    text = f"{article.title} {(article.summary or article.body or '')[:400]}"
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
    decay = 0.5 ** (age / grouping.half_life_hours)
    return round(float(weight * (1 + 0.5 * (story.source_count - 1)) * decay), 3)


def find_stories(articles: Sequence[Article], grouping: GroupingSettings,
                 now: datetime) -> list[Story]:
    """The stories of these articles (every article in exactly one), each scored. An
    article joins the first story whose lead it matches; leads are taken fullest first,
    so the fullest article of a story leads it."""
    ordered = sorted(articles, key=lambda a: (-_fullness(a), a.id))
    vectors = [unpack(a.embedding) for a in ordered]
    names = [_names(a) for a in ordered]
    figures = [_figures(a.title) for a in ordered]
    window = timedelta(hours=grouping.story_window_hours)
    stories: list[Story] = []
    leads: list[int] = []                 # index in ordered of each story's lead
    matrix = _similarities(vectors)
    for i, article in enumerate(ordered):
        home = None
        if vectors[i] is not None:
            for s, lead in enumerate(leads):
                other = ordered[lead]
                if (matrix[i, lead] >= grouping.story_threshold
                        and abs(_when(article) - _when(other)) <= window
                        and (article.source_id is None or article.source_id != other.source_id)
                        and len(names[i] & names[lead]) >= _SHARED_NAMES
                        and not (figures[i] and figures[lead]
                                 and not figures[i] & figures[lead])):
                    home = s
                    break
        if home is None:
            stories.append(Story(article))
            leads.append(i)
        else:
            stories[home].others.append(article)
    for story in stories:
        story.others.sort(key=lambda a: (_when(a), a.id))
        story.score = story_score(story, now, grouping)
    return stories


def _similarities(vectors: Sequence[np.ndarray | None]) -> np.ndarray:
    """Cosine of every pair (vectors are unit length); 0 where one has none."""
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32)
    dims = next((v.shape[0] for v in vectors if v is not None), 1)
    rows = np.array([v if v is not None else np.zeros(dims, np.float32) for v in vectors])
    similarities: np.ndarray = rows @ rows.T
    return similarities
