"""An edition as the public archive shows it: every article, with sample personal links."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import Settings
from ..content.edition import Editorial, Limits, build_content
from ..store.models import Article, Edition
from .render import Personal, Renderer

__all__ = ["render_archived"]


def render_archived(renderer: Renderer, settings: Settings, edition: Edition,
                    articles: Sequence[Article], editorial: Editorial | None = None) -> str:
    """The HTML of a published edition with all its articles (the email may have shown
    fewer), its personal links pointing at the site's general pages."""
    base = settings.digest.base_url.rstrip("/")
    everything = Limits(max_articles=max(1, len(articles)),
                        teaser_words=settings.digest.teaser_words)
    rendered = renderer.render(build_content(list(articles), settings, edition.number,
                                             edition.date, limits=everything,
                                             editorial=editorial or Editorial.of(edition)))
    html, _text = rendered.personalise(Personal(
        greeting="", email="you", unsubscribe_url=f"{base}/unsubscribe",
        preferences_url=f"{base}/subscribe"))
    return html
