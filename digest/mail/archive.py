"""An edition as the public archive shows it: every article, with sample personal links."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import Settings, with_overrides
from ..content.edition import build_content
from ..store.models import Article, Edition
from .render import Personal, Renderer

__all__ = ["render_archived"]


def render_archived(renderer: Renderer, settings: Settings, edition: Edition,
                    articles: Sequence[Article]) -> str:
    """The HTML of a published edition with all its articles (the email may have shown
    fewer), its personal links pointing at the site's general pages."""
    base = settings.digest.base_url.rstrip("/")
    everything = with_overrides(settings, digest={"max_articles": max(1, len(articles))})
    rendered = renderer.render(build_content(list(articles), everything, edition.number,
                                             edition.cutoff))
    html, _text = rendered.personalise(Personal(
        greeting="", email="you", unsubscribe_url=f"{base}/unsubscribe",
        preferences_url=f"{base}/subscribe"))
    return html
