"""The editor's desk: an edition as a draft an editor shapes, then approves or cancels.

draft → approved → sending → sent (plus paused and cancelled). A draft reserves its
articles (no other edition takes them) and has no ledger yet: that is written when the
approved edition starts sending (digest.delivery.editions.open_edition). Every change is
one transaction holding the edition lock; changing an approved edition makes it a draft
again, to be approved again. What the desk shows is what the mail will show: the same
grouping, ranking and cap (digest.content.edition), with the editor's marks on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..config import Settings
from ..content.edition import (
    ALL_TOPICS,
    Limits,
    build_content,
    cap_counts,
    effective_variant,
    left_out_stories,
    ranked_stories,
    showing,
)
from ..content.intro import INTRO_MAX
from ..content.quality import article_flags
from ..content.stories import Story
from ..content.topics import TopicClassifier
from ..errors import InputError, NotFound, NothingToSend
from ..mail.ranking import editorial_for, previous_for
from ..mail.render import SUBJECT_MAX, Personal, Renderer
from ..store.clicks import article_clicks, uncounted_clicks
from ..store.db import Store
from ..store.drafts import COMING, DraftWork, coming_number, draft_work, read_draft
from ..store.models import Article, Edition, EditionStatus
from ..text import clean_control, clean_label, greeting

__all__ = [
    "DeskArticle",
    "DeskSection",
    "DeskView",
    "LeftOut",
    "Preview",
    "add_article",
    "approve_edition",
    "cancel_edition",
    "coming_draft",
    "desk_view",
    "draft_edition",
    "drop_article",
    "drop_articles",
    "edit_article",
    "move_article",
    "order_article",
    "pin_article",
    "preview_edition",
    "refresh_draft",
    "set_intro",
    "set_subject",
    "shift_article",
]

# The longest teaser an editor may write (the configured teaser_words cut the others).
TEASER_MAX = 2000


@dataclass(frozen=True)
class DeskArticle:
    id: int
    title: str
    teaser: str
    topic: str
    source: str | None
    url: str | None
    pinned: bool
    pin_top: bool
    position: int | None
    edited: bool            # the editor changed its title or teaser
    clicks: int
    also: int               # further articles of its story (other sources)
    shown: bool             # within [digest] max_articles: in the mail, not only online
    # It goes on a story of the previous edition: that edition's number and title for
    # it; its own reports that only repeat that edition (taken, not shown).
    update_of: int | None = None
    update_title: str | None = None
    repeats: tuple[int, ...] = ()
    # What an editor should look at (content.quality): undated, mojibake, …
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LeftOut:
    """An article the edition takes but does not show: it only repeats a story the
    previous edition (number) sent, under that title."""

    id: int
    title: str
    topic: str
    source: str | None
    number: int
    story: str


@dataclass(frozen=True)
class DeskSection:
    topic: str
    articles: list[DeskArticle]


@dataclass(frozen=True)
class DeskView:
    number: int
    status: EditionStatus
    subject: str
    intro: str | None
    cutoff: datetime
    created_at: datetime
    slot: datetime | None
    approved_at: datetime | None
    approved_by: str | None
    sections: list[DeskSection]
    clicks: int
    subject_set: bool = False      # the subject is the editor's own, not the pattern's
    # Requests of its links left out of the counts, by why: head, scanner, early, burst.
    uncounted: dict[str, int] = field(default_factory=dict)
    # Articles it takes that only repeat the previous edition's stories.
    left_out: list[LeftOut] = field(default_factory=list)

    @property
    def articles(self) -> list[DeskArticle]:
        return [a for s in self.sections for a in s.articles]

    @property
    def fingerprint(self) -> str:
        """What readers would get, as one short value: an approval given for one
        fingerprint is refused once the draft has changed (another editor, a refresh)."""
        seen = (self.number, self.subject, self.intro,
                [(a.id, a.title, a.teaser, a.topic, a.pinned, a.pin_top, a.also,
                  a.update_of, a.repeats) for a in self.articles],
                [a.id for a in self.left_out])
        return hashlib.sha256(repr(seen).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Preview:
    subject: str
    html: str
    text: str


def coming_draft(store: Store) -> int | None:
    """The number of the draft or approved edition that has not started sending."""
    return coming_number(store)


# --- making and viewing ---------------------------------------------------------------------

def _subject(store: Store, settings: Settings, edition: Edition,
             articles: Sequence[Article]) -> str:
    content = build_content(articles, settings, edition.number, edition.date,
                            editorial=editorial_for(store, settings, edition))
    return Renderer(settings).subject(content)


def draft_edition(store: Store, settings: Settings, now: datetime, *,
                  slot: datetime | None = None, allow_empty: bool = False) -> DeskView:
    """The next edition as a draft: the new articles reserved, no ledger yet. Refused
    while another draft waits; NothingToSend when nothing is new (with allow_empty: a
    draft without articles, for an editor's note)."""
    settings.signing_key  # noqa: B018  (nothing is made that could not be sent)
    with draft_work(store) as work:
        waiting = work.coming()
        if waiting is not None:
            state = "a draft" if waiting.status is EditionStatus.DRAFT else "approved"
            raise InputError(f"edition {waiting.number} is already {state} "
                             f"and waiting to go out (see: digest editions show "
                             f"{waiting.number}); send or cancel it before drafting another")
        articles = work.new_articles(now)
        number = work.next_number()
        previous = previous_for(store, number)
        if not allow_empty and showing(articles, settings, now, previous).empty:
            said = ("no new articles" if not articles or previous is None else
                    f"nothing new since edition {previous.number} (the new articles only "
                    f"repeat stories it sent)")
            raise NothingToSend(f"{said}: nothing to draft (import some with: digest "
                                f"articles import FILE…; or draft an edition of only an "
                                f"intro with: digest editions draft --allow-empty)")
        work.add(Edition(number=number, cutoff=now, created_at=now, slot=slot,
                         subject="", status=EditionStatus.DRAFT))
        work.take(articles)
        work.edition.subject = _subject(store, settings, work.edition, work.articles())
        number = work.edition.number
    return desk_view(store, settings, number)


def _stories(store: Store, settings: Settings, edition: Edition,
             articles: Sequence[Article]) -> list[tuple[str, list[Story]]]:
    """The edition's stories by topic, in the order the mail has them."""
    editorial = editorial_for(store, settings, edition)
    return ranked_stories(articles, settings, edition.date, factors=editorial.factors,
                          previous=editorial.previous)


def desk_view(store: Store, settings: Settings, number: int) -> DeskView:
    """Edition number as the desk shows it: its articles in the order the mail has them
    (one per story, its lead), with the editor's marks and the clicks they had."""
    with read_draft(store, number) as work:
        e = work.edition
        articles = work.articles()
        ranked = _stories(store, settings, e, articles)
        left_out = [LeftOut(a.id, a.edited_title or a.title, a.topic, a.source_name,
                            story.update_of.number, story.update_of.title)
                    for story in left_out_stories(articles, settings, e.date,
                                                  previous_for(store, e.number))
                    if story.update_of is not None for a in story.articles]
        edition_id = e.id
    clicks = article_clicks(store, edition_id)
    uncounted = uncounted_clicks(store, edition_id)
    counts = cap_counts([stories for _, stories in ranked], settings.digest.max_articles)
    limits = Limits.configured(settings)
    sections = [DeskSection(topic, [_desk_article(story, topic, clicks, i < count, limits)
                                    for i, story in enumerate(stories)])
                for (topic, stories), count in zip(ranked, counts, strict=True)]
    return DeskView(e.number, e.status, e.subject, e.intro, e.cutoff, e.created_at, e.slot,
                    e.approved_at, e.approved_by, sections, sum(clicks.values()),
                    e.subject_set, uncounted, left_out)


def _desk_article(story: Story, topic: str, clicks: dict[int, int], shown: bool,
                  limits: Limits) -> DeskArticle:
    from ..content.teasers import teaser_for

    a = story.lead
    teaser = a.edited_teaser if a.edited_teaser is not None else \
        teaser_for(a.summary, a.body, limits.teaser_words)
    return DeskArticle(a.id, a.edited_title or a.title, teaser, topic, a.source_name, a.url,
                       story.pinned, any(x.pin_top for x in story.articles), a.position,
                       a.edited_title is not None or a.edited_teaser is not None,
                       sum(clicks.get(x.id, 0) for x in story.articles), len(story.others),
                       shown, story.update_of.number if story.update_of else None,
                       story.update_of.title if story.update_of else None,
                       tuple(x.id for x in story.repeats),
                       tuple(article_flags(a, limits.teaser_words)))


# --- shaping ----------------------------------------------------------------------------------

Change = Callable[[DraftWork], str]


def _shape(store: Store, settings: Settings, number: int, change: Change) -> str:
    """Apply change to draft (or approved) edition number in one transaction; the subject
    follows the new lead unless the editor chose one; an approved edition goes back to
    draft. Returns what happened, in a sentence or two."""
    with draft_work(store, number) as work:
        e = work.edition
        if e.status not in COMING:
            raise InputError(f"edition {number} is {e.status.value}: only a draft (or an "
                             f"approved edition not yet sending) can be changed")
        said = change(work)
        if not e.subject_set:
            e.subject = _subject(store, settings, e, work.articles())
        if e.status is EditionStatus.APPROVED:
            e.status, e.approved_at, e.approved_by = EditionStatus.DRAFT, None, None
            said += f" Edition {number} is a draft again: approve it again to send it."
    return said


def refresh_draft(store: Store, settings: Settings, number: int, now: datetime) -> int:
    """Add the articles that arrived since the draft was made (or last refreshed)."""
    added: list[Article] = []

    def change(work: DraftWork) -> str:
        since = work.edition.cutoff
        added.extend(a for a in work.new_articles(now) if a.added_at > since)
        work.take(added)
        work.edition.cutoff = now
        return f"Added {len(added)} article{'s' * (len(added) != 1)} to edition {number}."

    if _status(store, number) in COMING:
        # Nothing arrived: nothing changes (an approved edition stays approved).
        with read_draft(store, number) as work:
            since = work.edition.cutoff
            if not any(a.added_at > since for a in work.new_articles(now)):
                return 0
    _shape(store, settings, number, change)
    return len(added)


def _status(store: Store, number: int) -> EditionStatus:
    with read_draft(store, number) as work:
        return work.edition.status


def add_article(store: Store, settings: Settings, number: int, article_id: int) -> str:
    """Put a stored article that no edition holds into the edition: one that came in too
    old to be news, a feed's back catalogue, or one dropped from it before."""
    def change(work: DraftWork) -> str:
        article = work.outside(article_id)
        work.take([article])
        why = (" (it came in too old to be news)" if article.too_old else
               " (it came in as a feed's back catalogue)" if article.is_backlog else "")
        return f"Added article {article_id} to edition {number}{why}."

    return _shape(store, settings, number, change)


def drop_article(store: Store, settings: Settings, number: int, article_id: int) -> str:
    """Take an article (and the rest of its story) out of the edition: back to the pool,
    for the next edition."""
    return drop_articles(store, settings, number, [article_id])


def drop_articles(store: Store, settings: Settings, number: int,
                  article_ids: Sequence[int]) -> str:
    """Take articles (each with the rest of its story) out of the edition in one
    transaction: back to the pool, for the next edition. All or none: an id the edition
    does not hold is named (every such id), and nothing changes."""
    ids = list(dict.fromkeys(article_ids))

    def change(work: DraftWork) -> str:
        held = {a.id for a in work.articles()}
        unknown = [i for i in ids if i not in held]
        if unknown:
            listed = ", ".join(map(str, unknown))
            raise NotFound(f"article{'s' * (len(unknown) != 1)} {listed} "
                           f"{'is' if len(unknown) == 1 else 'are'} not in edition {number} "
                           f"(see: digest editions show {number}); nothing was dropped")
        stories = [story for _topic, found in _stories(store, settings, work.edition,
                                                        work.articles())
                   for story in found if any(a.id in ids for a in story.articles)]
        going = {a.id: a for story in stories for a in story.articles}
        named = (f"article {ids[0]}" if len(ids) == 1
                 else f"articles {', '.join(map(str, ids))}")
        if len(going) == len(held):
            raise InputError(f"{named} {'is' if len(ids) == 1 else 'are'} all edition "
                             f"{number} has left: cancel the edition instead (digest "
                             f"editions cancel {number})")
        work.release(list(going.values()))
        also = len(going) - len(ids)
        return (f"Dropped {named}" + (f" and {also} more of {'its' if len(ids) == 1 else 'their'}"
                                      f" stor{'y' if len(ids) == 1 else 'ies'}" if also else "")
                + f" from edition {number}; back in the pool for the next edition.")

    return _shape(store, settings, number, change)


def pin_article(store: Store, settings: Settings, number: int, article_id: int, *,
                top: bool = False, unpin: bool = False) -> str:
    """Pin an article to lead its topic (top: the whole edition), or unpin it."""
    def change(work: DraftWork) -> str:
        article = work.article(article_id)
        if unpin:
            article.pinned = article.pin_top = False
            return f"Unpinned article {article_id} in edition {number}."
        article.pinned = True
        if top:
            for other in work.articles():
                other.pin_top = other.id == article_id
            return f"Article {article_id} leads edition {number}."
        return f"Article {article_id} leads its topic, {article.topic}, in edition {number}."

    return _shape(store, settings, number, change)


def move_article(store: Store, settings: Settings, number: int, article_id: int,
                 topic: str) -> str:
    """Put an article's story under another topic (a configured one, or one the edition
    already has)."""
    def change(work: DraftWork) -> str:
        story = _story_of(store, settings, work, article_id)
        present = sorted({a.topic for a in work.articles()})
        name = TopicClassifier.from_settings(settings).require(topic, also=present)
        if story.lead.topic == name:
            raise InputError(f"article {article_id} is already under {name} in edition "
                             f"{number}")
        for article in story.articles:
            article.topic, article.topic_reason, article.topic_confidence = \
                name, "manual", None
            article.position = None
        return f"Moved article {article_id} to {name} in edition {number}."

    return _shape(store, settings, number, change)


def _story_of(store: Store, settings: Settings, work: DraftWork, article_id: int) -> Story:
    work.article(article_id)        # InputError when it is not in the edition
    for _topic, stories in _stories(store, settings, work.edition, work.articles()):
        for story in stories:
            if any(a.id == article_id for a in story.articles):
                return story
    raise AssertionError("every article of an edition is in one of its stories")


def _reorder(store: Store, settings: Settings, work: DraftWork, article_id: int,
             place: Callable[[list[Story], int], int]) -> str:
    """Move an article's story to the index `place(stories, current)` gives among its
    topic's stories (within its tier: pinned ones stay above the others), and write the
    whole topic's order down."""
    work.article(article_id)
    for topic, stories in _stories(store, settings, work.edition, work.articles()):
        current = next((i for i, s in enumerate(stories)
                        if any(a.id == article_id for a in s.articles)), None)
        if current is None:
            continue
        story = stories.pop(current)
        tier = [i for i, s in enumerate(stories) if _tier(s) == _tier(story)]
        lowest, highest = (min(tier), max(tier) + 1) if tier else (current, current)
        stories.insert(max(lowest, min(highest, place(stories, current))), story)
        for position, s in enumerate(stories, 1):
            for a in s.articles:
                a.position = position
        return topic
    raise AssertionError("every article of an edition is in one of its stories")


def _tier(story: Story) -> tuple[bool, bool]:
    return any(a.pin_top for a in story.articles), story.pinned


def order_article(store: Store, settings: Settings, number: int, article_id: int,
                  before_id: int) -> str:
    """Put an article's story just before another's, in the same topic."""
    def change(work: DraftWork) -> str:
        other = _story_of(store, settings, work, before_id)
        mine = _story_of(store, settings, work, article_id)
        if other.lead.id == mine.lead.id:
            raise InputError(f"article {article_id} cannot come before "
                             + ("itself" if before_id == article_id else
                                f"{before_id}: they are one story in edition {number}")
                             + f"; name another article of its topic (digest editions "
                               f"show {number})")
        if other.lead.topic != mine.lead.topic:
            raise InputError(f"article {article_id} is under {mine.lead.topic} and "
                             f"{before_id} under {other.lead.topic}: move it first "
                             f"(digest editions move {number} {article_id} TOPIC)")
        if _tier(other) != _tier(mine):
            raise InputError(f"one of articles {article_id} and {before_id} is pinned and "
                             f"the other is not: pinned stories lead their topic; pin or "
                             f"unpin first (digest editions pin {number} ID [--unpin])")

        def before(stories: list[Story], _current: int) -> int:
            return next(i for i, s in enumerate(stories)
                        if any(a.id == before_id for a in s.articles))

        topic = _reorder(store, settings, work, article_id, before)
        return f"Article {article_id} now comes before {before_id} in {topic}."

    return _shape(store, settings, number, change)


def shift_article(store: Store, settings: Settings, number: int, article_id: int,
                  steps: int) -> str:
    """Move an article's story up (steps < 0) or down among its topic's stories."""
    def change(work: DraftWork) -> str:
        topic = _reorder(store, settings, work, article_id,
                         lambda _s, current: current + steps)
        return f"Moved article {article_id} {'up' if steps < 0 else 'down'} in {topic}."

    return _shape(store, settings, number, change)


def edit_article(store: Store, settings: Settings, number: int, article_id: int, *,
                 title: str | None = None, teaser: str | None = None) -> str:
    """The title and teaser the article shows in this edition ("" puts its own back)."""
    if title is None and teaser is None:
        raise InputError("nothing to change: give --title, --teaser or both")
    new_title = None if title is None else clean_label(title)[:1000]
    new_teaser = None if teaser is None else " ".join(clean_control(teaser).split())
    if new_teaser is not None and len(new_teaser) > TEASER_MAX:
        raise InputError(f"the teaser has {len(new_teaser)} characters; keep it under "
                         f"{TEASER_MAX} (it is a teaser: the article is a click away)")

    def change(work: DraftWork) -> str:
        article = work.article(article_id)
        if new_title is not None:
            article.edited_title = new_title or None
        if new_teaser is not None:
            article.edited_teaser = new_teaser or None
        return f"Edited article {article_id} in edition {number}."

    return _shape(store, settings, number, change)


def set_intro(store: Store, settings: Settings, number: int, markdown: str) -> str:
    """The note above the contents, in Markdown ("" removes it)."""
    text = clean_control(markdown.replace("\r\n", "\n")).strip()
    if markdown.strip() and not text:
        raise InputError("the intro has no text, only control characters; give Markdown "
                         "text (or --clear to remove the intro)")
    if len(text) > INTRO_MAX:
        raise InputError(f"the intro has {len(text)} characters; keep it under {INTRO_MAX}")

    def change(work: DraftWork) -> str:
        work.edition.intro = text or None
        return (f"Set the intro of edition {number}." if text
                else f"Removed the intro of edition {number}.")

    return _shape(store, settings, number, change)


def set_subject(store: Store, settings: Settings, number: int, subject: str) -> str:
    """The edition's own subject ("" goes back to the [digest] subject pattern)."""
    text = clean_label(subject)
    if len(text) > SUBJECT_MAX:
        raise InputError(f"the subject has {len(text)} characters; keep it to {SUBJECT_MAX} "
                         f"(mail apps show about 60)")

    def change(work: DraftWork) -> str:
        work.edition.subject_set = bool(text)
        if text:
            work.edition.subject = text
        return (f"The subject of edition {number} is now: {text}" if text
                else f"Edition {number} takes its subject from [digest] subject again.")

    return _shape(store, settings, number, change)


# --- deciding -------------------------------------------------------------------------------

def approve_edition(store: Store, settings: Settings, number: int, by: str,
                    now: datetime, *, seen: str | None = None) -> str:
    """Approve draft number: `digest send` (or its slot) sends it. With seen (the
    fingerprint of the draft the editor looked at), only when it is still that draft."""
    with draft_work(store, number) as work:
        e = work.edition
        # Read under the edition lock: no change can come between this and the approval.
        if seen is not None and e.status is EditionStatus.DRAFT and \
                desk_view(store, settings, number).fingerprint != seen:
            raise InputError(f"edition {number} changed since you looked at it (another "
                             f"editor, or newer articles): look at it again, then approve it")
        if e.status is EditionStatus.APPROVED:
            return f"Edition {number} was already approved by {e.approved_by}."
        if e.status is not EditionStatus.DRAFT:
            raise InputError(f"edition {number} is {e.status.value}: only a draft can be "
                             f"approved")
        if showing(work.articles(), settings, e.date,
                   previous_for(store, e.number)).empty:
            if not e.intro:
                raise InputError(f"edition {number} has no articles and no intro: refresh "
                                 f"it, write an intro (digest editions intro {number}) or "
                                 f"cancel it")
            e.status, e.approved_at, e.approved_by = EditionStatus.APPROVED, now, by
            return (f"Approved edition {number}. It has no articles, only its intro: "
                    f"digest send --allow-empty sends it (a scheduled slot holds it).")
        e.status, e.approved_at, e.approved_by = EditionStatus.APPROVED, now, by
    return f"Approved edition {number}."


def cancel_edition(store: Store, settings: Settings, number: int, now: datetime) -> int:
    """Cancel a draft or approved edition: it is never sent, its articles go back to the
    pool. Returns how many."""
    with draft_work(store, number) as work:
        e = work.edition
        if e.status not in COMING:
            raise InputError(f"edition {number} is {e.status.value}: only a draft or an "
                             f"approved edition can be cancelled (one that is sending "
                             f"can be paused by stopping the sender)")
        articles = work.articles()
        work.release(articles)
        e.status, e.finished_at = EditionStatus.CANCELLED, now
        return len(articles)


def preview_edition(store: Store, settings: Settings, number: int,
                    address: str | None = None) -> Preview:
    """Edition number as a subscriber would get it (the one at address: their name and
    topics; else the whole edition), with sample personal links."""
    with read_draft(store, number) as work:
        e = work.edition
        articles = work.articles()
        sub = work.subscriber(address.strip().lower()) if address else None
        if address and sub is None:
            raise InputError(f"{address} is not a subscriber (see: digest subscribers list)")
        editorial = editorial_for(store, settings, e)
    variant = ALL_TOPICS
    if sub is not None:
        found = effective_variant(sub.topics or [], {a.topic for a in articles})
        if found is None:
            raise NothingToSend(f"{sub.email} chose topics this edition has nothing in: "
                                f"they would get no mail")
        variant = found
    rendered = Renderer(settings).render_edition(articles, e.number, e.date, variant,
                                                 editorial=editorial)
    base = settings.digest.base_url.rstrip("/")
    html, text = rendered.personalise(Personal(
        greeting=greeting(sub.name) if sub is not None else "Hello,",
        email=sub.email if sub is not None else "reader@example.org",
        unsubscribe_url=f"{base}/unsubscribe", preferences_url=f"{base}/subscribe"))
    return Preview(rendered.subject, html, text)
