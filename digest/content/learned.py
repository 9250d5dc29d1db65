"""What the editor taught: a linear model of topics over an article's meaning and words.

Every topic an editor gave an article (`articles set-topic`, `editions move`, the desk's
move, an import's own topic or `--topic`) is a labelled example. The model is a
multinomial logistic regression (numpy only) over two kinds of feature, each scaled to
the same length: the article's vector (its meaning, the packaged model's) and its words
(tf-idf over the words two or more examples share). The meaning carries a topic to
stories that use other words; the words carry what a static embedding averages away
(names, the house's own vocabulary). Each topic's seed text (name, description,
keywords) is an example too, so that a topic nobody has taught yet can still be chosen,
and each row also carries the article's similarity to each topic's prototype, with one
weight shared by all topics (fitted like the others): with a few examples the prototypes
still decide, with many the examples do.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_EXAMPLES", "Example", "TopicModel", "words"]

# Features are unit rows scaled by this; with the penalty below, a topic's weights stay
# small enough that a handful of examples move it, and a few hundred decide it.
_SCALE = 16.0
# The L2 penalty on the weights (per example, on the mean loss): one value, set once
# (0.03 to 0.3 measure alike in bench/topics.py's k-fold run).
_PENALTY = 0.1
_ITERATIONS = 500
# A word is a feature when this many examples hold it: a word of one example says
# nothing about the next.
_MIN_EXAMPLES = 2
# At most this many examples (the most recent): the model stays a second's work.
MAX_EXAMPLES = 3000
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_STOP = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "for", "from", "had",
    "has", "have", "he", "her", "his", "i", "in", "into", "is", "it", "its", "of", "on",
    "or", "our", "said", "says", "she", "that", "the", "their", "them", "they", "this",
    "to", "was", "we", "were", "which", "will", "with", "would", "you"})


def words(text: str) -> list[str]:
    """The words of a text that may say what it is about: lower case, no stop words."""
    return [w for w in _WORD.findall(text.casefold()) if w not in _STOP and len(w) > 1]


@dataclass(frozen=True)
class Example:
    """One labelled article (or a topic's seed text): its topic's index, its vector, its
    text and how much it counts."""

    topic: int
    vector: np.ndarray
    text: str
    weight: float = 1.0


class TopicModel:
    """A multinomial logistic regression over [vector | tf-idf words]."""

    def __init__(self, examples: Sequence[Example], topics: int,
                 similarities: np.ndarray) -> None:
        counts: Counter[str] = Counter()
        tokens = [words(e.text) for e in examples]
        for found in tokens:
            counts.update(set(found))
        kept = sorted(w for w, n in counts.items() if n >= _MIN_EXAMPLES)
        self._vocabulary = {w: i for i, w in enumerate(kept)}
        total = len(examples)
        self._idf = np.array([np.log((1 + total) / (1 + counts[w])) + 1 for w in kept],
                             dtype=np.float32)
        features = self._features(np.array([e.vector for e in examples], dtype=np.float32),
                                  tokens)
        labels = np.array([e.topic for e in examples])
        # Each topic weighs the same, however many examples it has: a topic the editor
        # has not taught yet (its seed text only) is not swamped by one taught often.
        per_topic = np.bincount(labels, minlength=topics).astype(np.float32)
        weights = np.array([e.weight for e in examples], dtype=np.float32) / per_topic[labels]
        self._weights, self._bias, self._nearness = _fit(
            features, _SCALE * similarities.astype(np.float32), labels, weights, topics)

    def probabilities(self, vectors: np.ndarray, texts: Sequence[str],
                      similarities: np.ndarray) -> np.ndarray:
        """Each row's probability of each topic (`similarities`: each row's similarity to
        each topic's prototype)."""
        features = self._features(vectors, [words(t) for t in texts])
        return _softmax(features @ self._weights + self._bias
                        + self._nearness * _SCALE * similarities.astype(np.float32))

    def _features(self, vectors: np.ndarray, tokens: Sequence[Sequence[str]]) -> np.ndarray:
        bag = np.zeros((len(tokens), len(self._vocabulary)), dtype=np.float32)
        for row, found in enumerate(tokens):
            for word in found:
                column = self._vocabulary.get(word)
                if column is not None:
                    bag[row, column] += 1
        bag *= self._idf
        return _SCALE * np.hstack([_unit(vectors), _unit(bag)])


def _fit(features: np.ndarray, near: np.ndarray, labels: np.ndarray, weights: np.ndarray,
         topics: int) -> tuple[np.ndarray, np.ndarray, np.float32]:
    """Weights, bias and the shared weight of `near` (each row's similarity to each
    topic) minimising the weighted mean cross-entropy plus _PENALTY/2 × |weights|²:
    accelerated gradient descent with the step of the loss's Lipschitz bound, so it
    needs no tuning."""
    share = (weights / weights.sum()).astype(np.float32)
    target = np.eye(topics, dtype=np.float32)[labels]
    # The largest eigenvalue of the weighted Gram matrix (the smaller side's), squared
    # norm of the weighted features: the curvature bound the step follows.
    scaled = features * np.sqrt(share)[:, None]
    gram = scaled @ scaled.T if len(scaled) <= scaled.shape[1] else scaled.T @ scaled
    spread = float(np.linalg.eigvalsh(gram.astype(np.float64))[-1]) \
        + float(np.sum(share[:, None] * near ** 2))
    step = np.float32(1.0 / (0.5 * spread + _PENALTY + 0.5))
    transposed = np.ascontiguousarray(features.T)
    w = np.zeros((features.shape[1], topics), dtype=np.float32)
    b = np.zeros(topics, dtype=np.float32)
    a = a_ahead = np.float32(0.0)
    w_ahead, b_ahead, t = w.copy(), b.copy(), 1.0
    for _ in range(_ITERATIONS):
        # (wᵀ·featuresᵀ)ᵀ rather than features·w: a matrix of few columns on the right
        # makes OpenBLAS split the work over threads that then wait for each other.
        logits = (w_ahead.T @ transposed).T + b_ahead + a_ahead * near
        error = (_softmax(logits) - target) * share[:, None]
        w_next = w_ahead - step * (transposed @ error + np.float32(_PENALTY) * w_ahead)
        b_next = b_ahead - step * error.sum(axis=0)
        a_next = np.float32(a_ahead - step * (np.sum(error * near) + _PENALTY * a_ahead))
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        momentum = np.float32((t - 1) / t_next)
        w_ahead = w_next + momentum * (w_next - w)
        b_ahead = b_next + momentum * (b_next - b)
        a_ahead = np.float32(a_next + momentum * (a_next - a))
        w, b, a, t = w_next, b_next, a_next, t_next
    return w, b, a


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    result: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return result


def _unit(rows: np.ndarray) -> np.ndarray:
    lengths = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: np.ndarray = np.divide(rows, lengths, out=np.zeros_like(rows), where=lengths > 0)
    return unit
