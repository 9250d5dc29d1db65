"""`digest preview`: the coming edition rendered as one reader would see it, nothing stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ..config import Settings
from ..content.edition import effective_variant, left_out_stories, ranked_stories
from ..content.stories import Story
from ..content.topics import TopicClassifier
from ..errors import InputError, NothingToSend
from ..store.articles import upcoming_edition
from ..store.db import Store
from ..store.drafts import coming_articles, next_coming
from .ranking import editorial_for
from .render import Personal, Renderer

__all__ = ["PreviewResult", "render_preview"]


@dataclass(frozen=True)
class PreviewResult:
    html: str
    text: str
    subject: str
    number: int
    articles: int
    topics: int
    # The edition's topics in order, each with its stories in order, uncapped.
    ranking: tuple[tuple[str, tuple[Story, ...]], ...] = ()
    # Its stories that only repeat the previous edition's: taken, not shown.
    left_out: tuple[Story, ...] = ()


def render_preview(store: Store, settings: Settings, now: datetime,
                   topics: Sequence[str] = ()) -> PreviewResult:
    """Render the next edition (or one subscriber's variant of it) with sample personal links."""
    classifier = TopicClassifier.from_settings(settings)
    coming = next_coming(store)
    if coming is not None:
        # The draft (or approved edition) an editor is shaping is what goes out next.
        number, articles, now = coming.number, coming_articles(store, coming), coming.date
    else:
        number, articles = upcoming_edition(store, now)
    editorial = editorial_for(store, settings, coming, number=number, cutoff=now)
    if not articles:
        raise NothingToSend("no new articles since the last edition: nothing to preview "
                            "(import some with: digest articles import FILE…)")
    present = {a.topic for a in articles}
    chosen = []
    for topic in topics:
        known = classifier.known(topic, also=sorted(present))
        if known is None:
            raise InputError(f"--topic {topic!r} is not a topic; choose from "
                             f"{', '.join(settings.topic_names)}")
        chosen.append(known)
    variant = effective_variant(chosen, present)
    if variant is None:
        raise NothingToSend(f"nothing new in {', '.join(chosen)} for this edition")
    rendered = Renderer(settings).render_edition(articles, number, now, variant,
                                                 editorial=editorial)
    base = settings.digest.base_url.rstrip("/")
    html, text = rendered.personalise(Personal(
        greeting="Hello,", email="reader@example.org",
        unsubscribe_url=f"{base}/unsubscribe", preferences_url=f"{base}/subscribe"))
    ranking = tuple((topic, tuple(stories))
                    for topic, stories in ranked_stories(articles, settings, now, variant,
                                                         editorial.factors,
                                                         editorial.previous))
    left_out = tuple(left_out_stories(articles, settings, now, editorial.previous))
    return PreviewResult(html, text, rendered.subject, number, rendered.articles,
                         rendered.topics, ranking, left_out)
