"""`digest articles retopic`: topics chosen again after the topics or [grouping] changed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..content.semantic import pack
from ..content.topics import Signals, TopicClassifier
from ..store.articles import TopicUpdate, learning_rows, retopic_articles
from ..store.db import Store
from ..store.models import Article

__all__ = ["RetopicReport", "retopic"]


@dataclass(frozen=True)
class RetopicReport:
    seen: int
    changed: int


def retopic(store: Store, classifier: TopicClassifier, since: datetime | None = None,
            progress: Callable[[int], None] | None = None) -> RetopicReport:
    """Choose the topic of the articles no edition took (with since: of every article
    added since then) again, as an import would now: tags, meaning, keywords, the
    catch-all. Topics someone chose (explicit, manual, a feed's) stay. Topics learn from
    the store first, as at import."""
    with store.sessions() as session:
        classifier.learn_rows(learning_rows(session))

    def assign(articles: Sequence[Article]) -> list[TopicUpdate]:
        batch = classifier.assign_batch([
            Signals(a.title, f"{a.summary or ''}\n{a.body}", tags=tuple(a.tags or ()))
            for a in articles])
        if progress is not None:
            progress(len(articles))
        return [TopicUpdate(new.topic, new.reason, new.confidence,
                            None if new.vector is None else pack(new.vector))
                for new in batch]

    seen, changed = retopic_articles(store, since, assign)
    return RetopicReport(seen, changed)
