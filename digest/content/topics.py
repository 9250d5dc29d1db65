"""Topic assignment: explicit topic, the feed's topic, tags, then meaning (or keyword rules),
then the catch-all."""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..config import GroupingSettings, Settings, TopicRule
from ..errors import InputError
from ..store.articles import LearningRow
from .learned import MAX_EXAMPLES, Example, TopicModel
from .semantic import Embedder, embedder, unpack
from .teasers import strip_lead

__all__ = ["Assignment", "Signals", "TopicClassifier", "UnknownTopic", "embedding_text"]

# Below this score an article is not "about" a topic: one title hit (3) or two body hits.
_MIN_SCORE = 2
_TITLE_WEIGHT = 3
_BODY_CAP = 10
# The semantic step: each keyword hit (title hits count triple, as above) adds this to a
# topic's similarity, at most _BOOST_CAP hits.
_KEYWORD_BOOST = 0.02
_BOOST_CAP = 4
# How much the store's own articles move a topic's prototype: a topic holding this much
# weight of confidently assigned articles is half its seed (name, description, keywords)
# and half their centroid.
_HALF_LEARNED = 10.0
# What an article teaches its topic, by what chose it; a semantic choice teaches only
# when made with this much more than min_margin.
_TEACHES = {"explicit": 3.0, "manual": 3.0, "feed": 2.0, "tag": 2.0, "semantic": 1.0,
            "learned": 1.0}
_SURE = 0.1
# What an editor chose: the labelled examples of the learned model.
_LABELLED = ("explicit", "manual")
# The learned model chooses topics once it has this many examples; fewer only move the
# topics' prototypes towards them (a few examples nudge, enough decide). Measured on the
# AG News sample (n random labelled items, scored on the rest, 3 draws; default topics /
# four topics): with 10 examples the learned model gets 0.70 / 0.65 and the nudged
# prototypes 0.75 / 0.73; with 25, 0.67 / 0.61 against 0.74 / 0.75; with 100 they are
# even (0.77 / 0.77); with 200 the model is ahead (0.78 against 0.75).
DECIDES = 100
# "None of these": the sections of a general news service (the top level of the IPTC
# Media Topics, less its cross-cutting facets: human interest, society, labour, weather)
# and kinds of writing that are not news. A subject that a configured topic covers (the
# topic is nearer to it than any other subject is) counts for that topic; the others
# stand for everything the configured topics do not hold: an article nearer to one of
# them than to every topic goes to the catch-all.
ELSEWHERE = (
    "Arts, culture and entertainment: film, music, books, theatre, television, museums",
    "Conflict, war and peace: armed conflict, troops, terrorism, ceasefire, peace talks",
    "Crime, law and justice: police, courts, trials, crime, lawsuits, prisons",
    "Disasters and accidents: earthquakes, hurricanes, floods, fires, crashes, emergencies",
    "Economy, business and finance: companies, markets, stocks, earnings, banks, trade",
    "Education: schools, universities, students, teachers, exams",
    "Environment: climate change, pollution, wildlife, conservation, energy",
    "Health: medicine, hospitals, diseases, doctors, patients, drugs",
    "Lifestyle and leisure: travel, food, fashion, hobbies, home",
    "Politics: government, elections, parliament, parties, diplomacy",
    "Religion: churches, faith, the pope, religious leaders, belief",
    "Science and technology: research, scientists, computers, software, the internet, space",
    "Sport: games, teams, players, matches, championships, the Olympics",
    "Recipes and cooking: ingredients, bake, cook, serve, tablespoon, oven, minutes",
    "Gardening: plants, seeds, soil, flowers, vegetables, pruning, the garden",
    "Podcast episodes: episode, listen, podcast, host, interview, show notes, subscribe",
)


@dataclass(frozen=True)
class _Compiled:
    name: str
    pattern: re.Pattern[str] | None


@dataclass(frozen=True)
class Signals:
    """What an article says about its topic."""

    title: str
    text: str = ""                              # summary and body
    explicit: str | None = None                 # the record's own topic, or --topic
    feed_topic: str | None = None               # the topic its feed is configured with
    categories: Sequence[str] = ()
    tags: Sequence[str] = ()


@dataclass(frozen=True)
class Assignment:
    """A topic and why: explicit, feed, tag, semantic, keyword or catch-all; the confidence
    of a semantic choice (the similarity it was made with); the article's vector."""

    topic: str
    reason: str
    confidence: float | None = None
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


def embedding_text(title: str, summary: str | None, body: str | None) -> str:
    """What the model reads of an article: its title and the start of its text, without
    the dateline or byline news text starts with."""
    lead = " ".join(strip_lead((summary or body or "")[:800]).split())
    return f"{title}. {lead}" if lead else title


class UnknownTopic(InputError):
    """A name that is not a topic; `name` as given, `choices` the topics there are."""

    def __init__(self, name: str, choices: Sequence[str]) -> None:
        super().__init__(f"unknown topic {name!r}; choose from {', '.join(choices)}")
        self.name = name
        self.choices = tuple(choices)


class TopicClassifier:
    """Picks one topic per article, and holds the one rule for what names a topic: `known`
    (and `require`, which says what to choose from)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicClassifier:
        """The classifier of the config's [[topics]], catch-all and [grouping]: the one place
        it is built from settings."""
        return cls(settings.topics, settings.digest.catch_all_topic, settings.grouping)

    def __init__(self, rules: Sequence[TopicRule], catch_all: str,
                 grouping: GroupingSettings | None = None) -> None:
        self.catch_all = catch_all
        self.grouping = grouping or GroupingSettings(method="keywords")
        self._topic_rules = tuple(rules)
        self._rules = [
            _Compiled(rule.name, re.compile(
                r"(?<!\w)(?:" + "|".join(re.escape(k) for k in sorted(rule.keywords, key=len,
                                                                       reverse=True))
                + r")(?!\w)", re.IGNORECASE) if rule.keywords else None)
            for rule in rules
        ]
        self._by_key = {rule.name.casefold(): rule.name for rule in rules}
        self._by_key.setdefault(catch_all.casefold(), catch_all)
        self._aliases = {alias.strip().casefold(): rule.name for rule in rules
                         for alias in rule.aliases}
        # A tag names a topic when it equals the topic's name or one of its keywords
        # (an article tagged "ai" is about AI); the earlier topic wins a shared keyword.
        self._by_tag: dict[str, str] = {}
        for rule in rules:
            for word in (rule.name, *rule.keywords):
                self._by_tag.setdefault(word.strip().casefold(), rule.name)
        self._seeds: np.ndarray | None = None
        self._prototypes: np.ndarray | None = None
        self._subjects: tuple[list[tuple[int, np.ndarray]], np.ndarray] | None = None
        self._learned: dict[str, float] = {}
        self._has_learned = False
        self._model_of_examples: TopicModel | None = None
        self._examples = 0
        self._example_vectors = np.zeros((0, 1), dtype=np.float32)

    def by_keywords(self) -> TopicClassifier:
        """The same topics with the keywords method: the rules every article was sorted by
        before topics by meaning."""
        return TopicClassifier(self._topic_rules, self.catch_all,
                               replace(self.grouping, method="keywords"))

    @property
    def semantic(self) -> bool:
        return self.grouping.method == "semantic" and bool(self._topic_rules)

    @property
    def names(self) -> tuple[str, ...]:
        """The configured topics in config order, then the catch-all."""
        return tuple(self._by_key.values())

    def known(self, name: str, also: Iterable[str] = ()) -> str | None:
        """The spelling of the topic `name` names, or None: names match trimmed and
        case-insensitively, a configured topic (or one of its aliases) first, then the
        first of `also` (topics that exist beyond the config, e.g. those of stored
        articles)."""
        key = name.strip().casefold()
        found = self._by_key.get(key) or self._aliases.get(key)
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
        """The topic of one article (see `assign_batch`)."""
        signals = Signals(title, text, explicit, None, tuple(categories), tuple(tags))
        return self.assign_batch([signals])[0].topic

    def assign_batch(self, batch: Sequence[Signals]) -> list[Assignment]:
        """Each article's topic, in this order: its explicit topic, its feed's topic, a
        category or tag naming a topic (by name or keyword), then — semantic — by
        meaning: the catch-all when the article is nearer to a subject none of the
        topics covers than to every topic by more than [grouping] min_margin allows
        (see `confidence`), else the topic the editor's examples point to (`learned`,
        once there are any) or the topic whose prototype it is nearest, keyword hits a
        boost; — keywords — the best keyword score; else the catch-all. With the
        semantic method every article gets its vector, whatever decided its topic."""
        texts = [embedding_text(s.title, s.text, None) for s in batch]
        if not self.semantic:
            return [self._assign(signals, None, None) for signals in batch]
        vectors = self.embed(texts)
        model = self._model_of_examples if self.decides else None
        taught = model.probabilities(vectors, texts, vectors @ self.seeds().T) \
            if model is not None and len(batch) else [None] * len(batch)
        return [self._assign(signals, vector, learned) for signals, vector, learned
                in zip(batch, vectors, taught, strict=True)]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._model().embed(texts)

    def _model(self) -> Embedder:
        return embedder()

    def _assign(self, s: Signals, vector: np.ndarray | None,
                taught: np.ndarray | None) -> Assignment:
        for value, reason in ((s.explicit, "explicit"), (s.feed_topic, "feed")):
            if value and value.strip():
                return Assignment(self.known(value) or value.strip(), reason, None, vector)
        for category in s.categories:
            known = self.known(category)
            if known:
                return Assignment(known, "tag", None, vector)
        for tag in s.tags:
            if tag.strip().casefold() in self._by_tag:
                return Assignment(self._by_tag[tag.strip().casefold()], "tag", None, vector)
        hits = self._keyword_scores(s.title, s.text)
        if vector is None or not vector.any():
            best = int(np.argmax(hits)) if hits.size else 0
            if hits.size and hits[best] >= _MIN_SCORE:
                return Assignment(self._rules[best].name, "keyword", None, vector)
            return Assignment(self.catch_all, "catch-all", None, vector)
        similarity = self._similarities(vector)
        scores = similarity + _KEYWORD_BOOST * np.minimum(hits, _BOOST_CAP)
        confidence = round(self.confidence(scores, vector), 4)
        if confidence < self.grouping.min_margin:
            return Assignment(self.catch_all, "catch-all", confidence, vector)
        if taught is not None:
            return Assignment(self._rules[int(np.argmax(taught))].name, "learned",
                              confidence, vector)
        best = int(np.argmax(scores))
        reason = "semantic" if best == int(np.argmax(similarity)) else "keyword"
        return Assignment(self._rules[best].name, reason, confidence, vector)

    def confidence(self, scores: np.ndarray, vector: np.ndarray) -> float:
        """How much nearer an article is to its nearest topic (`scores`: each topic's
        similarity, keyword boost included) or to the nearest of the editor's examples
        than to the nearest subject of ELSEWHERE no topic covers: above 0 it is more like
        one of the topics than like anything else."""
        _, rest = self.subjects()
        elsewhere = float(np.max(rest @ vector)) if len(rest) else 0.0
        nearest = float(np.max(scores))
        if len(self._example_vectors):
            # An article like one an editor put under a topic is near that topic.
            nearest = max(nearest, float(np.max(self._example_vectors @ vector)))
        return nearest - elsewhere

    def _similarities(self, vector: np.ndarray) -> np.ndarray:
        """Each topic's similarity to vector: its prototype's, or that of a subject of
        ELSEWHERE it covers when nearer."""
        similarity: np.ndarray = self.prototypes() @ vector
        covered, _ = self.subjects()
        for topic, subject in covered:
            similarity[topic] = max(similarity[topic], float(subject @ vector))
        return similarity

    def subjects(self) -> tuple[list[tuple[int, np.ndarray]], np.ndarray]:
        """ELSEWHERE as vectors: (topic index, vector) of the subjects a topic covers, and
        the rows of the others, which stand for what no topic holds. A topic covers the
        subject nearest its seed, and every subject it is as near to as two neighbouring
        subjects typically are (the median similarity of a subject to its nearest other)."""
        if self._subjects is None:
            subjects = self.embed(list(ELSEWHERE))
            among = subjects @ subjects.T
            np.fill_diagonal(among, -1.0)
            typical = float(np.median(among.max(axis=1)))
            near = self.seeds() @ subjects.T                    # topics × subjects
            covers = near >= typical
            covers[np.arange(len(near)), np.argmax(near, axis=1)] = True
            covered = [(int(t), subjects[i]) for t, i in zip(*np.nonzero(covers),
                                                               strict=True)]
            rest = subjects[~covers.any(axis=0)]
            self._subjects = covered, rest
        return self._subjects

    def _keyword_scores(self, title: str, text: str) -> np.ndarray:
        """Each configured topic's keyword score: title hits count triple, body hits at
        most _BODY_CAP."""
        return np.array([
            0 if rule.pattern is None else
            _TITLE_WEIGHT * len(rule.pattern.findall(title))
            + min(len(rule.pattern.findall(text)), _BODY_CAP)
            for rule in self._rules], dtype=np.float32)

    def seeds(self) -> np.ndarray:
        """Each topic's seed: the mean of its name, description (counted twice) and
        keywords, as vectors, unit length."""
        if self._seeds is None:
            rows = []
            for rule in self._topic_rules:
                parts = [rule.name, *([rule.description] * 2 * bool(rule.description)),
                         *rule.keywords]
                rows.append(self.embed(parts).mean(axis=0))
            self._seeds = _unit(np.array(rows, dtype=np.float32))
        return self._seeds

    def prototypes(self) -> np.ndarray:
        """What each topic means now: its seed, moved towards what it has learned."""
        if self._prototypes is None:
            self._prototypes = self.seeds()
        return self._prototypes

    def learn(self, centroids: Mapping[str, tuple[np.ndarray, float]]) -> None:
        """Move each topic towards the weighted sum of the vectors of the articles the
        store holds under it with confidence (topic → (sum of vectors, total weight)): a
        topic with _HALF_LEARNED weight is half seed, half its articles' centroid."""
        if not self.semantic:
            return
        rows = self.seeds().copy()
        self._learned = {}
        for i, rule in enumerate(self._topic_rules):
            total, weight = centroids.get(rule.name, (None, 0.0))
            if total is None or weight <= 0 or not total.any():
                continue
            share = weight / (weight + _HALF_LEARNED)
            rows[i] = (1 - share) * rows[i] + share * _unit(total[None, :])[0]
            self._learned[rule.name] = weight
        self._prototypes = _unit(rows)

    @property
    def has_learned(self) -> bool:
        return self._has_learned

    def learn_rows(self, rows: Iterable[LearningRow]) -> None:
        """Learn from stored articles. The prototypes (see `learn`): a topic someone
        chose (explicit, manual) weighs 3, the feed's or a tag's 2, a semantic choice 1
        when it was made with a confidence at least _SURE above min_margin; keyword
        and catch-all choices, and articles under topics no longer configured, teach
        nothing. The learned model (see `examples`): every article under a configured
        topic an editor chose (explicit, manual), the most recent MAX_EXAMPLES."""
        self._has_learned = True
        if not self.semantic:
            return
        sums: dict[str, np.ndarray] = {}
        weights: dict[str, float] = {}
        sure = self.grouping.min_margin + _SURE
        index = {rule.name: i for i, rule in enumerate(self._topic_rules)}
        examples: list[Example] = []
        for row in rows:
            weight = _TEACHES.get(row.reason, 0.0)
            if row.reason in ("semantic", "learned") and (row.confidence or 0.0) < sure:
                weight = 0.0
            vector = unpack(row.embedding)
            if vector is None or row.topic not in index:
                continue
            if _is_example(row, index) and len(examples) < MAX_EXAMPLES:
                examples.append(Example(index[row.topic], vector, row.text))
            if weight > 0:
                sums[row.topic] = sums.get(row.topic, 0) + weight * vector
                weights[row.topic] = weights.get(row.topic, 0.0) + weight
        self.learn({topic: (sums[topic], weights[topic]) for topic in sums})
        self.learn_examples(examples)

    def count_examples(self, rows: Iterable[LearningRow]) -> int:
        """How many of rows learn_rows would fit the learned model to, without fitting
        it (what `preview --explain` says)."""
        if not self.semantic:
            return 0
        configured = {rule.name for rule in self._topic_rules}
        return min(MAX_EXAMPLES, sum(_is_example(row, configured) for row in rows))

    def learn_examples(self, examples: Sequence[Example]) -> None:
        """Fit the learned model to the editor's examples, each topic's seed text (name,
        description, keywords) one example more; with none, topics are chosen by their
        prototypes alone."""
        self._examples = len(examples)
        if not examples or not self.semantic:
            self._model_of_examples = None
            self._example_vectors = np.zeros((0, 1), dtype=np.float32)
            return
        self._example_vectors = np.array([e.vector for e in examples], dtype=np.float32)
        seeds = [Example(i, vector, _seed_text(rule))
                 for i, (rule, vector) in enumerate(zip(self._topic_rules, self.seeds(),
                                                        strict=True))]
        rows = [*seeds, *examples]
        self._model_of_examples = TopicModel(
            rows, len(self._topic_rules), np.array([e.vector for e in rows]) @ self.seeds().T)

    @property
    def decides(self) -> bool:
        """Whether the learned model chooses topics (it has DECIDES examples or more)."""
        return self._model_of_examples is not None and self._examples >= DECIDES

    @property
    def examples(self) -> int:
        """How many of the editor's examples the learned model was fitted to (0: none)."""
        return self._examples

    @property
    def learned(self) -> Mapping[str, float]:
        """The weight of articles each topic learned from."""
        return dict(self._learned)


def _seed_text(rule: TopicRule) -> str:
    return " ".join([rule.name, rule.description, *rule.keywords])


def _is_example(row: LearningRow, configured: Container[str]) -> bool:
    """Whether a stored article is one of the editor's examples: a topic someone chose,
    one of the configured topics, with its vector."""
    return row.reason in _LABELLED and row.topic in configured and row.embedding is not None


def _unit(rows: np.ndarray) -> np.ndarray:
    lengths = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: np.ndarray = np.divide(rows, lengths, out=np.zeros_like(rows), where=lengths > 0)
    return unit
