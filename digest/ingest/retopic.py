"""`digest articles retopic`: topics chosen again after the topics or [grouping] changed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..content.semantic import pack
from ..content.topics import Assignment, Signals, TopicClassifier
from ..store.articles import TopicUpdate, learning_rows, retopic_articles
from ..store.db import Store
from ..store.models import Article

__all__ = ["RetopicReport", "examples_in_store", "learn_from_store", "retopic"]


@dataclass(frozen=True)
class RetopicReport:
    seen: int
    changed: int
    examples: int = 0             # the editor's examples the topics learned from


def examples_in_store(store: Store, classifier: TopicClassifier) -> int:
    """How many of the editor's examples the topics would learn from (nothing fitted)."""
    with store.sessions() as session:
        return classifier.count_examples(learning_rows(session))


def learn_from_store(store: Store, classifier: TopicClassifier) -> int:
    """Let the topics learn from what the store holds (as an import does); returns how
    many of the editor's examples the learned model was fitted to."""
    with store.sessions() as session:
        classifier.learn_rows(learning_rows(session))
    return classifier.examples


# The reason of the articles stored before reasons were kept (migration 0006).
_BEFORE = "before"


def _chosen_before(article: Article, new: Assignment) -> TopicUpdate:
    """An article stored before reasons were kept, under a topic the keyword rules of
    then would not have given it: someone chose it (in its file, with --topic, by
    set-topic, or its feed's). It keeps the topic, and gets its vector."""
    return TopicUpdate(article.topic, _BEFORE, None,
                       None if new.vector is None else pack(new.vector))


def retopic(store: Store, classifier: TopicClassifier, since: datetime | None = None,
            progress: Callable[[int], None] | None = None) -> RetopicReport:
    """Choose the topic of the articles no edition took (with since: of every article
    added since then) again, as an import would now: tags, meaning, keywords, the
    catch-all. Topics someone chose (explicit, manual, a feed's) stay, and so does that
    of an article stored before reasons were kept whose topic the keyword rules would not
    have given it (someone chose it then). Topics learn from the store first, as at
    import."""
    examples = learn_from_store(store, classifier)
    rules = classifier.by_keywords()

    def assign(articles: Sequence[Article]) -> list[TopicUpdate]:
        signals = [Signals(a.title, f"{a.summary or ''}\n{a.body}", tags=tuple(a.tags or ()))
                   for a in articles]
        batch = classifier.assign_batch(signals)
        if progress is not None:
            progress(len(articles))
        return [_chosen_before(a, new) if a.topic_reason == _BEFORE
                and a.topic != rules.assign_batch([signal])[0].topic
                else TopicUpdate(new.topic, new.reason, new.confidence,
                                 None if new.vector is None else pack(new.vector))
                for a, new, signal in zip(articles, batch, signals, strict=True)]

    seen, changed = retopic_articles(store, since, assign)
    return RetopicReport(seen, changed, examples)
