"""What ranks an edition besides its articles: the click factors of its sources
([tracking] rank_by_clicks), together with what the editor gave it (intro, subject) and
the edition before it (whose stories go on as updates, or are left out).

Every rendering of one edition (the desk, the preview, the send, test copies, the
archive) asks here, so they all rank it the same: the factors count only the clicks made
before the edition's cut-off (less burst_seconds, so a burst still being judged counts
for nothing), and that does not change once the edition exists.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..config import Settings
from ..content.edition import Editorial
from ..content.stories import Previous, click_factors
from ..store.clicks import source_clicks
from ..store.db import Store
from ..store.editions import previous_edition
from ..store.models import Edition

__all__ = ["RANK_EDITIONS", "editorial_for", "previous_for", "ranking_factors"]

# How many editions before this one the clicks of a ranking come from.
RANK_EDITIONS = 4


def ranking_factors(store: Store, settings: Settings, number: int, cutoff: datetime
                    ) -> dict[int, float] | None:
    """The click factor of each source for ranking edition `number` (made at cutoff),
    from the clicks on the RANK_EDITIONS editions before it; None when [tracking]
    rank_by_clicks is off. The same for that edition whenever it is asked (see
    store.clicks.source_clicks), so ranking it again gives the same order."""
    tracking = settings.tracking
    if not tracking.rank_by_clicks:
        return None
    until = cutoff - timedelta(seconds=tracking.burst_seconds)
    return click_factors(source_clicks(store, number, until, RANK_EDITIONS))


def previous_for(store: Store, number: int) -> Previous | None:
    """The edition before edition `number` that went out, whose stories it goes on (the
    same for that edition whenever it is asked, once it exists)."""
    found = previous_edition(store, number)
    if found is None:
        return None
    edition, articles = found
    return Previous(edition.number, edition.cutoff, tuple(articles))


def editorial_for(store: Store, settings: Settings, edition: Edition | None, *,
                  number: int | None = None, cutoff: datetime | None = None) -> Editorial:
    """Everything beyond its articles that shapes a stored edition (or, without one, the
    edition `number` that would be made at `cutoff`): the editor's intro and subject, the
    click factors, and the edition before it."""
    if edition is not None:
        return Editorial.of(edition, ranking_factors(store, settings, edition.number,
                                                     edition.cutoff),
                            previous_for(store, edition.number))
    assert number is not None and cutoff is not None
    return Editorial(factors=ranking_factors(store, settings, number, cutoff),
                     previous=previous_for(store, number))
