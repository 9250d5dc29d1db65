"""What goes into an edition: the new articles, grouped by topic, capped, as template data.

The content of an edition variant is a pure function of its articles, the settings and
the variant's topic set, so a resumed send renders exactly what the first run rendered.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from datetime import datetime

from ..config import Settings
from ..store.models import Article, Edition
from .intro import Intro, render_intro
from .links import add_utm
from .stories import Earlier, Previous, Story, click_factor, find_stories, follow_up
from .teasers import teaser_for

__all__ = [
    "ALSO_SHOWN",
    "BYLINE_SHOWN",
    "ALL_TOPICS",
    "Also",
    "EditionContent",
    "Editorial",
    "Entry",
    "Limits",
    "Section",
    "Showing",
    "Update",
    "build_content",
    "cap_counts",
    "effective_variant",
    "left_out_stories",
    "order_topics",
    "ranked_stories",
    "read_more_url",
    "showing",
    "variant_topics",
]

# The variant key of the full edition (every topic).
ALL_TOPICS = ""


@dataclass(frozen=True)
class Also:
    """Another source that carried an entry's story: with a link to its own article, or
    none when its copy was the same article (found a duplicate at import)."""

    source: str
    url: str | None = None


# An entry names at most this many other sources ("Also covered by"); the rest are
# counted ("and 45 more"), so a story carried by fifty outlets stays one short line. Its
# byline names at most BYLINE_SHOWN of the sources its lead article came in from.
ALSO_SHOWN = 5
BYLINE_SHOWN = 3


@dataclass(frozen=True)
class Update:
    """An entry that goes on a story the previous edition told: that edition's number,
    the title it gave the story, and how many new reports this entry links."""

    number: int
    title: str
    reports: int

    @property
    def text(self) -> str:
        """The line above the entry: "Update: 3 new reports since No. 4"."""
        noun = "report" if self.reports == 1 else "reports"
        return f"Update: {self.reports} new {noun} since No. {self.number}"


@dataclass(frozen=True)
class Entry:
    id: int
    title: str
    url: str            # the "Read more" target, always absolute http(s)
    source: str | None
    date: datetime
    teaser: str
    topic: str
    also: tuple[Also, ...] = ()
    also_more: int = 0  # further sources, beyond those in also
    update: Update | None = None   # it goes on a story of the previous edition


@dataclass(frozen=True)
class Section:
    topic: str
    anchor: str
    entries: tuple[Entry, ...]
    more: int           # articles of this topic left out by max_articles
    total: int
    catch_all: bool = False

    @property
    def more_text(self) -> str:
        """"3 more AI stories"; for the catch-all, whose name is already a phrase ("More
        stories"), just "15 more stories"."""
        noun = "story" if self.more == 1 else "stories"
        return f"{self.more} more {noun}" if self.catch_all else \
            f"{self.more} more {self.topic} {noun}"


@dataclass(frozen=True)
class Editorial:
    """What an editor gave the edition as a whole: a note above the contents (Markdown)
    and a subject of their own (None: the [digest] subject pattern's)."""

    intro: str | None = None
    subject: str | None = None
    # [tracking] rank_by_clicks: source id → click factor (stories.click_factors).
    factors: Mapping[int, float] | None = None
    # The edition before it that went out: its stories go on as updates, or are left out.
    previous: Previous | None = None

    @classmethod
    def of(cls, edition: Edition, factors: Mapping[int, float] | None = None,
           previous: Previous | None = None) -> Editorial:
        """What the editor gave a stored edition (and the click factors it ranks by, and
        the edition before it)."""
        return cls(edition.intro, edition.subject if edition.subject_set else None, factors,
                   previous)


@dataclass(frozen=True)
class EditionContent:
    number: int
    date: datetime
    sections: tuple[Section, ...]
    archive_url: str
    intro: Intro | None = None
    subject: str | None = None      # the editor's own, when they chose one

    @property
    def shown(self) -> int:
        return sum(len(s.entries) for s in self.sections)

    @property
    def total(self) -> int:
        return sum(s.total for s in self.sections)

    @property
    def top_story(self) -> Entry | None:
        return self.sections[0].entries[0] if self.sections else None


def _sort_time(article: Article) -> datetime:
    return article.published_at or article.added_at


def order_topics(groups: Mapping[str, Sized], settings: Settings) -> list[str]:
    """Configured topics in config order, then other topics by size, the catch-all last."""
    configured = [t.name for t in settings.topics]
    catch_all = settings.digest.catch_all_topic
    first = [t for t in configured if t in groups and t != catch_all]
    others = sorted((t for t in groups if t not in configured and t != catch_all),
                    key=lambda t: (-len(groups[t]), t.casefold()))
    return first + others + ([catch_all] if catch_all in groups else [])


def _anchor(topic: str) -> str:
    return "topic-" + (re.sub(r"[^a-z0-9]+", "-", topic.casefold()).strip("-") or "x")


def cap_counts(groups: Sequence[Sized], limit: int) -> list[int]:
    """How many of each group to show: round-robin, so every topic keeps its newest."""
    shown = [0] * len(groups)
    left = limit
    while left > 0 and any(shown[i] < len(g) for i, g in enumerate(groups)):
        for i, group in enumerate(groups):
            if left and shown[i] < len(group):
                shown[i] += 1
                left -= 1
    return shown


def variant_topics(variant: str) -> frozenset[str] | None:
    """The topic set of a variant key; None for the full edition."""
    return None if variant == ALL_TOPICS else frozenset(json.loads(variant))


def effective_variant(chosen: Sequence[str], edition_topics: Iterable[str]) -> str | None:
    """The variant key a subscriber with chosen topics gets, or None when none of their
    topics has anything in this edition. Choosing every present topic is the full edition;
    an edition with no topic at all (only an intro) goes to everyone."""
    present = set(edition_topics)
    if not chosen or not present:
        # An edition without stories (only the editor's note, sent on purpose) is a
        # note to every reader.
        return ALL_TOPICS
    wanted = present & {t for t in chosen}
    if not wanted:
        return None
    if wanted == present:
        return ALL_TOPICS
    return json.dumps(sorted(wanted))


@dataclass(frozen=True)
class Limits:
    """How much of an edition a rendering shows: articles in all, words per teaser; and
    with click counts on ([tracking] clicks), each article's tracked link in this edition
    (article id → ``{base_url}/r/{token}``, the same for every reader), which the
    "Read more" and "Also covered by" links then are."""

    max_articles: int
    teaser_words: int
    clicks: Callable[[int], str] | None = None
    # [tracking] rank_by_clicks: source id → click factor (stories.click_factors).
    factors: Mapping[int, float] | None = None

    @classmethod
    def configured(cls, settings: Settings) -> Limits:
        """The limits [digest] sets."""
        return cls(settings.digest.max_articles, settings.digest.teaser_words)


def ranked_stories(articles: Sequence[Article], settings: Settings, date: datetime,
                   variant: str = ALL_TOPICS, factors: Mapping[int, float] | None = None,
                   previous: Previous | None = None) -> list[tuple[str, list[Story]]]:
    """The edition's topics in order, each with its stories in order (what `build_content`
    shows, before the cap): what `digest preview --explain` explains. factors: each
    source's click factor, which scales its stories' scores ([tracking] rank_by_clicks);
    previous: the edition before, whose stories go on as updates (or are left out, see
    left_out_stories)."""
    groups = _ordered_stories(articles, settings, date, variant_topics(variant), factors,
                              previous)
    order = order_topics(groups, settings)
    # The story an editor pinned to lead the whole edition takes its topic to the top.
    lead = next((t for t in order if any(a.pin_top for a in groups[t][0].articles)), None)
    if lead is not None:
        order = [lead] + [t for t in order if t != lead]
    return [(topic, groups[topic]) for topic in order]


@dataclass(frozen=True)
class Showing:
    """What an edition would show, every topic and before the cap: the topics of its
    stories (a story is under its lead's topic, so these decide whom it reaches) and how
    many articles they hold."""

    topics: frozenset[str]
    articles: int

    @property
    def empty(self) -> bool:
        return not self.topics


def showing(articles: Sequence[Article], settings: Settings, date: datetime,
            previous: Previous | None = None) -> Showing:
    """What an edition of these articles would show (the same grouping its rendering
    does; with the edition before it, without what only repeats that one)."""
    stories = [s for _topic, group in ranked_stories(articles, settings, date,
                                                     previous=previous)
               for s in group]
    return Showing(frozenset(s.lead.topic for s in stories),
                   sum(len(s.articles) for s in stories))


def left_out_stories(articles: Sequence[Article], settings: Settings, date: datetime,
                     previous: Previous | None) -> list[Story]:
    """The stories of these articles that only repeat what the previous edition sent
    (each with update_of naming it): taken by the edition, never shown."""
    stories = find_stories(articles, settings.grouping, date)
    return follow_up(stories, previous, settings.grouping, date)[1]


def _ordered_stories(articles: Sequence[Article], settings: Settings, date: datetime,
                     only: frozenset[str] | None, factors: Mapping[int, float] | None = None,
                     previous: Previous | None = None) -> dict[str, list[Story]]:
    """Topic → its stories (a story is under its lead's topic): the one pinned to lead
    the edition, then pinned ones, then in the order an editor gave (stories they did not
    place after those they did), then by score, then newest. Stories that only repeat
    the previous edition are not among them."""
    groups: dict[str, list[Story]] = defaultdict(list)
    found = find_stories(articles, settings.grouping, date)
    for story in follow_up(found, previous, settings.grouping, date)[0]:
        if factors:
            story.score = round(story.score * click_factor(story, factors), 3)
        if only is None or story.lead.topic in only:
            groups[story.lead.topic].append(story)
    for group in groups.values():
        group.sort(key=_story_order)
    return groups


def _story_order(story: Story) -> tuple[bool, bool, bool, int, float, float, int]:
    placed = [a.position for a in story.articles if a.position is not None]
    return (not any(a.pin_top for a in story.articles), not story.pinned, not placed,
            min(placed, default=0), -story.score, -_sort_time(story.lead).timestamp(),
            -story.lead.id)


def read_more_url(url: str | None, article_id: int, settings: Settings, campaign: str) -> str:
    """Where an article's "Read more" leads: its own link, or its page on our site, with
    the UTM parameters of the edition's campaign (a tracked link redirects here)."""
    d = settings.digest
    return add_utm(url or f"{d.base_url.rstrip('/')}/articles/{article_id}", d.utm_source,
                   d.utm_medium, campaign)


def _entry(story: Story, topic: str, settings: Settings, campaign: str,
           limits: Limits) -> Entry:
    def link(a: Article) -> str:
        if limits.clicks is not None:
            return limits.clicks(a.id)
        return read_more_url(a.url, a.id, settings, campaign)

    a = story.lead
    names = _names(a)
    also = _also(story, names, link)
    teaser = a.edited_teaser if a.edited_teaser is not None else \
        teaser_for(a.summary, a.body, limits.teaser_words)
    return Entry(id=a.id, title=a.edited_title or a.title, url=link(a), source=_byline(names),
                 date=_sort_time(a), teaser=teaser, topic=topic,
                 also=tuple(also[:ALSO_SHOWN]), also_more=len(also[ALSO_SHOWN:]),
                 update=_update(story.update_of, len(story.articles)))


def _update(earlier: Earlier | None, reports: int) -> Update | None:
    return None if earlier is None else Update(earlier.number, earlier.title, reports)


def _byline(names: Sequence[str]) -> str | None:
    """The sources of the lead article (it came in from each): the first BYLINE_SHOWN,
    then how many others."""
    if len(names) <= BYLINE_SHOWN:
        return " · ".join(names) or None
    return f"{' · '.join(names[:BYLINE_SHOWN])} and {len(names) - BYLINE_SHOWN} others"


def _names(article: Article) -> list[str]:
    """The names of the sources that carried an article, its first source first."""
    sources = ([article.source] if article.source else []) + list(article.also_from)
    return list(dict.fromkeys(s.name for s in sources))


def _also(story: Story, shown: Sequence[str], link: Callable[[Article], str]) -> list[Also]:
    """Each source of the story's other articles but those in shown, once: first each
    article's own source, with a link to it, then the further sources of each (those
    whose copy was found a duplicate of it), without one."""
    seen = set(shown)
    linked, named = [], []
    for article in story.others:
        for position, name in enumerate(_names(article)):
            if name in seen:
                continue
            seen.add(name)
            if position == 0:
                linked.append(Also(name, link(article)))
            else:
                named.append(Also(name))
        if not _names(article):
            linked.append(Also("Another source", link(article)))
    return linked + named


def build_content(articles: Sequence[Article], settings: Settings, number: int,
                  date: datetime, variant: str = ALL_TOPICS,
                  limits: Limits | None = None,
                  editorial: Editorial | None = None) -> EditionContent:
    """Group articles into stories and topics, rank and cap them into the data the
    templates render, within limits (default: the configured ones), with what an editor
    gave the edition."""
    limits = limits or Limits.configured(settings)
    editorial = editorial or Editorial()
    factors = limits.factors if limits.factors is not None else editorial.factors
    ranked = ranked_stories(articles, settings, date, variant, factors, editorial.previous)
    order = [topic for topic, _ in ranked]
    ordered = [stories for _, stories in ranked]
    counts = cap_counts(ordered, limits.max_articles)
    d = settings.digest
    campaign = d.utm_campaign.format(number=number)
    sections = []
    for topic, group, count in zip(order, ordered, counts, strict=True):
        entries = tuple(_entry(story, topic, settings, campaign, limits)
                        for story in group[:count])
        if entries:
            sections.append(Section(topic, _anchor(topic), entries, len(group) - count,
                                    len(group), topic == d.catch_all_topic))
    base = d.base_url.rstrip("/")
    return EditionContent(number, date, tuple(sections), f"{base}/editions/{number}",
                          render_intro(editorial.intro), editorial.subject)
