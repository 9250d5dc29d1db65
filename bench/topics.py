"""Topic grouping on labelled news: accuracy and macro-F1, speed, memory.

    .venv/bin/python bench/topics.py [--rounds 3] [--curve]

--curve adds the accuracy after an editor filed 10 to 200 items, with the learned model
choosing against the examples only nudging the topics' prototypes (where
digest/content/topics.py's DECIDES comes from; about 20 s more).

The items are 581 AG News items (tests/data/topics/ag_news_train_sample.csv: class,
title, description; 1 World, 2 Sports, 3 Business, 4 Sci/Tech), each classified from its
title and description only. Two topic configs:

(a) the shipped default topics (config.example.toml); World is right under World or
    Politics, Sci/Tech under Technology, Science or AI;
(b) four topics as a user would write them, names and eight plain keywords each, written
    before any result was seen (FOUR below; not to be tuned to this sample).

Each is measured three ways: keyword rules (method = "keywords", today's before the
semantic method), semantic without refinement (a new store: prototypes from names,
descriptions and keywords only), and semantic refined (the same items imported a second
time into a store that holds the first pass: topics learn from what they confidently
hold, as an operator's store does week by week). The catch-all counts as wrong.

Then what the editor teaches: the items imported with their topics (AG News' class as
the topic an editor gave), scored by 5-fold cross-validation: each fifth is classified
by a classifier that learned from the other four fifths only, so no item is scored by a
model that saw its label.

Then knowing when no topic fits: with only "Sports" and "World" configured (FOUR's), the
share of sport and world news that keeps its topic and of business and tech news that
goes to the catch-all; and the share of tests/data/topics/off_topic.jsonl (podcast
episodes, gardening, recipes, written for the tests) that goes to the catch-all with the
default topics. The default [grouping] min_margin comes from this rule, not from a
search for the best figures: the equal-error point of the two sets the default topics
must tell apart — the 581 news items (all of which they should hold) and the off-topic
set (none of which they should) — rounded to one decimal; the bench prints that point.

Then the time per 1,000 articles of the topic work at import (the model loaded once),
the model's load time, the time to build an edition's content from 1,000 stored articles
(stories found, ranked, capped), and peak RSS. Timings alternate the contenders in rounds
and print medians.
"""

from __future__ import annotations

import argparse
import csv
import logging
import resource
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import json  # noqa: E402

import numpy as np  # noqa: E402

from digest.config import GroupingSettings, TopicRule, default_topics  # noqa: E402
from digest.content.semantic import embedder, pack  # noqa: E402
from digest.content.topics import DECIDES, Signals, TopicClassifier, embedding_text  # noqa: E402
from digest.store.articles import LearningRow  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "topics" / "ag_news_train_sample.csv"
OFF_TOPIC = ROOT / "tests" / "data" / "topics" / "off_topic.jsonl"
if not SAMPLE.exists():   # before the copy lands in tests/data
    SAMPLE = ROOT.parent / "shared" / "corpus" / "topics" / "ag_news_train_sample.csv"
CLASSES = {1: "World", 2: "Sports", 3: "Business", 4: "Sci/Tech"}
RIGHT = {1: {"World", "Politics"}, 2: {"Sports"}, 3: {"Business"},
         4: {"Technology", "Science", "AI", "Sci/Tech"}}
# (b): written as a user would, before looking at any result.
FOUR = (
    TopicRule("World", ("war", "election", "government", "president", "minister",
                        "united nations", "military", "diplomacy")),
    TopicRule("Sports", ("football", "baseball", "basketball", "tennis", "olympics", "team",
                         "coach", "championship")),
    TopicRule("Business", ("stocks", "market", "company", "earnings", "economy", "investors",
                           "oil prices", "merger")),
    TopicRule("Technology", ("software", "internet", "computer", "science", "space",
                             "research", "microsoft", "phone")),
)


def load_sample() -> tuple[list[Signals], list[int]]:
    signals, labels = [], []
    with SAMPLE.open(encoding="utf-8", newline="") as f:
        for label, title, description in csv.reader(f):
            signals.append(Signals(title, description.replace("\\", " ")))
            labels.append(int(label))
    return signals, labels


def scores(predicted: list[str], labels: list[int]) -> tuple[float, float]:
    """Accuracy and macro-F1 over the four classes (a prediction counts for the class
    whose topics include it; the catch-all counts for none)."""
    right = sum(p in RIGHT[y] for p, y in zip(predicted, labels, strict=True))
    f1s = []
    for c in CLASSES:
        tp = sum(p in RIGHT[c] and y == c for p, y in zip(predicted, labels, strict=True))
        fp = sum(p in RIGHT[c] and y != c for p, y in zip(predicted, labels, strict=True))
        fn = sum(p not in RIGHT[c] and y == c for p, y in zip(predicted, labels, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0)
    return right / len(labels), sum(f1s) / len(f1s)


def classify(rules: tuple[TopicRule, ...], method: str, signals: list[Signals],
             refined: bool) -> list[str]:
    classifier = TopicClassifier(rules, "More stories", GroupingSettings(method=method))
    first = classifier.assign_batch(signals)
    if not refined:
        return [a.topic for a in first]
    classifier.learn_rows(LearningRow(a.topic, a.reason, a.confidence, pack(a.vector))
                          for a in first if a.vector is not None)
    return [a.topic for a in classifier.assign_batch(signals)]


def accuracy_table(signals: list[Signals], labels: list[int]) -> None:
    print(f"{len(signals)} labelled items: "
          + ", ".join(f"{CLASSES[c]} {n}" for c, n in sorted(Counter(labels).items())))
    print(f"{'config':<28} {'method':<22} {'accuracy':>8} {'macro-F1':>8} {'catch-all':>9}")
    for name, rules in (("(a) shipped default topics", default_topics()),
                        ("(b) four topics, 8 keywords", FOUR)):
        for label, method, refined in (("keywords", "keywords", False),
                                       ("semantic, no refinement", "semantic", False),
                                       ("semantic, refined", "semantic", True)):
            predicted = classify(rules, method, signals, refined)
            accuracy, f1 = scores(predicted, labels)
            left = sum(p == "More stories" for p in predicted)
            print(f"{name:<28} {label:<22} {accuracy:>8.3f} {f1:>8.3f} {left:>9}")
        print(f"{name:<28} {'learned, 5-fold':<22} "
              f"{learned_accuracy(rules, signals, labels):>8.3f}")


# The topic an editor would give each class, under FOUR's names (the default topics have
# the same four names among theirs).
EDITOR = {1: "World", 2: "Sports", 3: "Business", 4: "Technology"}


def learned_accuracy(rules: tuple[TopicRule, ...], signals: list[Signals],
                     labels: list[int], folds: int = 5) -> float:
    """Accuracy by k-fold: each fold classified after learning from the others only."""
    classifier = TopicClassifier(rules, "More stories", GroupingSettings())
    vectors = classifier.embed([embedding_text(s.title, s.text, None) for s in signals])
    order = np.random.default_rng(0).permutation(len(signals))
    predicted: dict[int, str] = {}
    for fold in np.array_split(order, folds):
        held = set(fold.tolist())
        taught = TopicClassifier(rules, "More stories", GroupingSettings())
        taught.learn_rows(
            LearningRow(EDITOR[labels[i]], "explicit", None, pack(vectors[i]),
                        embedding_text(signals[i].title, signals[i].text, None))
            for i in range(len(signals)) if i not in held)
        batch = [signals[i] for i in fold]
        for i, assigned in zip(fold, taught.assign_batch(batch), strict=True):
            predicted[int(i)] = assigned.topic
    return scores([predicted[i] for i in range(len(signals))], labels)[0]


def knows_when_it_does_not_know(signals: list[Signals], labels: list[int]) -> None:
    two = tuple(rule for rule in FOUR if rule.name in ("Sports", "World"))
    picked = [a.topic for a in TopicClassifier(two, "More stories", GroupingSettings())
              .assign_batch(signals)]
    kept = [p in RIGHT[y] for p, y in zip(picked, labels, strict=True) if y in (1, 2)]
    out = [p == "More stories" for p, y in zip(picked, labels, strict=True) if y in (3, 4)]
    print(f"only Sports and World configured: {sum(kept) / len(kept):.3f} of sport and "
          f"world news keeps its topic, {sum(out) / len(out):.3f} of business and tech "
          f"news goes to the catch-all")
    off = [Signals(item["title"], item["summary"]) for item in
           map(json.loads, OFF_TOPIC.read_text(encoding="utf-8").splitlines())]
    everything = TopicClassifier(default_topics(), "More stories",
                                 GroupingSettings(min_margin=-1.0))
    news = np.array([a.confidence for a in everything.assign_batch(signals)])
    other = np.array([a.confidence for a in everything.assign_batch(off)])
    default = GroupingSettings().min_margin
    print(f"off-topic writing with the default topics: {np.mean(other < default):.3f} "
          f"({int(np.sum(other < default))} of {len(other)}) to the catch-all; news: "
          f"{np.mean(news < default):.3f} to the catch-all")
    steps = np.round(np.arange(-0.4, 0.2001, 0.001), 3)
    point = min(steps, key=lambda t: abs(np.mean(news < t) - np.mean(other >= t)))
    print(f"equal-error point of news and off-topic writing (default topics): {point:.3f} "
          f"(news lost {np.mean(news < point):.3f}, off-topic kept "
          f"{np.mean(other >= point):.3f}); default min_margin {default:g}")


def timings(signals: list[Signals], rounds: int, load: float) -> None:
    thousand = (signals * 2)[:1000]
    per: dict[str, list[float]] = {"keywords": [], "semantic": []}
    for _ in range(rounds):
        for method in per:
            classifier = TopicClassifier(default_topics(), "More stories",
                                         GroupingSettings(method=method))
            classifier.assign_batch(thousand[:10])          # prototypes built once
            started = time.perf_counter()
            classifier.assign_batch(thousand)
            per[method].append(time.perf_counter() - started)
    k, s = statistics.median(per["keywords"]), statistics.median(per["semantic"])
    print(f"model load: {load:.2f} s")
    print(f"topic work per 1,000 articles (median of {rounds}): keywords {k * 1000:.0f} ms, "
          f"semantic {s * 1000:.0f} ms ({s:.2f} ms per article; semantic/keywords "
          f"{s / k:.1f}x)")
    print(f"building the content of an edition of 1,000 articles (median of {rounds}): "
          f"{edition_build(rounds):.2f} s")


def edition_build(rounds: int) -> float:
    """Seconds to build the content of an edition from 1,000 stored articles."""
    import tempfile

    from digest.config import load_settings, with_overrides
    from digest.content.edition import build_content
    from digest.ingest.records import ArticleInput
    from digest.ingest.writer import write_articles
    from digest.store.articles import new_articles
    from digest.store.db import Store

    signals, _ = load_sample()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as folder:
        settings = with_overrides(load_settings(environ={}),
                                  store={"url": f"sqlite:///{folder}/bench.db"})
        store = Store.from_settings(settings)
        classifier = TopicClassifier.from_settings(settings)
        records = [ArticleInput(title=f"{s.title} ({i // len(signals)})", summary=s.text,
                                body=s.text, where=f"sample:{i}", url=f"https://news.example/{i}",
                                source_name=f"Feed {i % 7}",
                                published_at=now - timedelta(hours=i % 150))
                   for i, s in enumerate((signals * 2)[:1000])]
        with store.writes.begin() as session:
            write_articles(session, classifier, store.clock, records)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            with store.sessions() as session:
                articles = new_articles(session, now + timedelta(hours=1))
            build_content(articles, settings, 1, now)
            times.append(time.perf_counter() - started)
        store.close()
    return statistics.median(times)


def examples_curve(signals: list[Signals], labels: list[int], draws: int = 3) -> None:
    """Accuracy after an editor filed n items (random, their own classes), scored on the
    rest: the learned model choosing, against the examples only nudging the prototypes
    (where topics.DECIDES comes from)."""
    from digest.content import topics

    texts = [embedding_text(s.title, s.text, None) for s in signals]
    print("examples  topics           learned model  nudged prototypes")
    for name, rules in (("default", default_topics()), ("four", FOUR)):
        vectors = TopicClassifier(rules, "More stories", GroupingSettings()).embed(texts)
        for n in (10, 25, 50, 100, 200):
            right: dict[int, list[float]] = {0: [], 10**9: []}
            for draw in range(draws):
                rng = np.random.default_rng(draw)
                picked = rng.choice(len(signals), n, replace=False)
                rest = np.setdiff1d(np.arange(len(signals)), picked)
                for gate, got in right.items():
                    topics.DECIDES = gate
                    classifier = TopicClassifier(rules, "More stories", GroupingSettings())
                    classifier.learn_rows(
                        LearningRow(EDITOR[labels[i]], "explicit", None, pack(vectors[i]),
                                    texts[i]) for i in picked)
                    chosen = classifier.assign_batch([signals[i] for i in rest])
                    got.append(float(np.mean([a.topic in RIGHT[labels[i]]
                                              for a, i in zip(chosen, rest, strict=True)])))
            topics.DECIDES = DECIDES
            print(f"{n:>8}  {name:<15} {np.mean(right[0]):>14.3f} "
                  f"{np.mean(right[10**9]):>18.3f}")


def main() -> None:
    logging.disable(logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--curve", action="store_true",
                        help="also the accuracy by number of the editor's examples (slow)")
    args = parser.parse_args()
    started = time.perf_counter()
    embedder()
    load = time.perf_counter() - started
    signals, labels = load_sample()
    accuracy_table(signals, labels)
    knows_when_it_does_not_know(signals, labels)
    if args.curve:
        examples_curve(signals, labels)
    timings(signals, args.rounds, load)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MB")


if __name__ == "__main__":
    main()
