"""Topic assignment (explicit topic, feed category, keyword rules, catch-all) and grouping."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..config import Settings, TopicRule
from ..errors import InputError

__all__ = ["TopicClassifier", "UnknownTopic"]

# Below this score an article is not "about" a topic: one title hit (3) or two body hits.
_MIN_SCORE = 2
_TITLE_WEIGHT = 3
_BODY_CAP = 10


@dataclass(frozen=True)
class _Compiled:
    name: str
    pattern: re.Pattern[str] | None


class UnknownTopic(InputError):
    """A name that is not a topic; `name` as given, `choices` the topics there are."""

    def __init__(self, name: str, choices: Sequence[str]) -> None:
        super().__init__(f"unknown topic {name!r}; choose from {', '.join(choices)}")
        self.name = name
        self.choices = tuple(choices)


class TopicClassifier:
    """Picks one topic per article from the configured rules, and holds the one rule for
    what names a topic: `known` (and `require`, which says what to choose from)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicClassifier:
        """The classifier of the config's [[topics]] and catch-all: the one place it is
        built from settings."""
        return cls(settings.topics, settings.digest.catch_all_topic)

    def __init__(self, rules: Sequence[TopicRule], catch_all: str) -> None:
        self.catch_all = catch_all
        self._rules = [
            _Compiled(rule.name, re.compile(
                r"(?<!\w)(?:" + "|".join(re.escape(k) for k in sorted(rule.keywords, key=len,
                                                                       reverse=True))
                + r")(?!\w)", re.IGNORECASE) if rule.keywords else None)
            for rule in rules
        ]
        self._by_key = {rule.name.casefold(): rule.name for rule in rules}
        self._by_key.setdefault(catch_all.casefold(), catch_all)
        # A tag names a topic when it equals the topic's name or one of its keywords
        # (an article tagged "ai" is about AI); the earlier topic wins a shared keyword.
        self._by_tag: dict[str, str] = {}
        for rule in rules:
            for word in (rule.name, *rule.keywords):
                self._by_tag.setdefault(word.strip().casefold(), rule.name)

    @property
    def names(self) -> tuple[str, ...]:
        """The configured topics in config order, then the catch-all."""
        return tuple(self._by_key.values())

    def known(self, name: str, also: Iterable[str] = ()) -> str | None:
        """The spelling of the topic `name` names, or None: names match trimmed and
        case-insensitively, a configured topic first, then the first of `also` (topics
        that exist beyond the config, e.g. those of stored articles)."""
        key = name.strip().casefold()
        found = self._by_key.get(key)
        if found is None:
            found = next((t for t in also if t.casefold() == key), None)
        return found

    def require(self, name: str, also: Iterable[str] = ()) -> str:
        """The spelling of the topic `name` names (see `known`); UnknownTopic, naming the
        choices (configured topics, then those of `also`), when it names none."""
        also = list(also)
        found = self.known(name, also)
        if found is None:
            choices = {t.casefold(): t for t in self.names}
            for topic in also:
                choices.setdefault(topic.casefold(), topic)
            raise UnknownTopic(name, list(choices.values()))
        return found

    def assign(self, title: str, text: str, explicit: str | None = None,
               categories: Iterable[str] = (), tags: Iterable[str] = ()) -> str:
        """Explicit topic first, then a category naming a configured topic, then a tag equal
        to a topic's name or keyword, then the best keyword score (title weighs more than
        body; ties go to the earlier topic), then the catch-all."""
        if explicit and explicit.strip():
            return self.known(explicit) or explicit.strip()
        for category in categories:
            known = self.known(category)
            if known:
                return known
        for tag in tags:
            if tag.strip().casefold() in self._by_tag:
                return self._by_tag[tag.strip().casefold()]
        best, best_score = self.catch_all, 0
        for rule in self._rules:
            if rule.pattern is None:
                continue
            score = (_TITLE_WEIGHT * len(rule.pattern.findall(title))
                     + min(len(rule.pattern.findall(text)), _BODY_CAP))
            if score > best_score:
                best, best_score = rule.name, score
        return best if best_score >= _MIN_SCORE else self.catch_all
