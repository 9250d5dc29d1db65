"""Meaning as numbers: the text-embedding model, loaded from the installed package only.

The model is WordLlama's 256-dimension static token embeddings (the `wordllama` wheel
carries its weights and tokenizer; nothing is downloaded, ever). A text's vector is the
average of its tokens' vectors, unit length, so the cosine of two texts is a dot product.
One model per process, loaded on first use (about 0.15 s).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = [
    "DIMENSIONS",
    "Embedder",
    "ModelMissing",
    "embedder",
    "pack",
    "unpack",
]

DIMENSIONS = 256
# How much of an article the model reads: the title and the start of its text, where a
# news story says what it is about.
_TEXT_CHARS = 600
_lock = threading.Lock()
_loaded: Embedder | None = None


class ModelMissing(ConfigError):
    """The embedding model is not installed (or not readable)."""


class Embedder:
    """Texts to unit vectors with the packaged model."""

    def __init__(self) -> None:
        # wordllama calls logging.basicConfig(level=INFO) when imported, which would put
        # every library's INFO lines (the demo's SMTP server, alembic) on the user's
        # terminal: the root logger is put back as it was.
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            import wordllama
            from wordllama import WordLlama
        except ImportError:
            raise ModelMissing(
                "the topic model is not installed (the wordllama package); install it with: "
                "pip install wordllama, or set [grouping] method = \"keywords\"") from None
        finally:
            for handler in [h for h in root.handlers if h not in handlers]:
                root.removeHandler(handler)
            root.setLevel(level)
        # The wheel holds weights/ and tokenizers/ beside its code; the loader looks for the
        # tokenizer in a folder named differently, so it is pointed at the package itself,
        # and told never to fetch anything.
        home = Path(wordllama.__file__).parent
        try:
            self._model: Any = WordLlama.load(cache_dir=home, disable_download=True)
        except (OSError, ValueError) as exc:
            raise ModelMissing(f"the topic model in {home} cannot be read ({exc}); reinstall "
                               f"it with: pip install --force-reinstall wordllama") from None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length float32 row per text (a zero row for a text with no words)."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        clipped = [text[:_TEXT_CHARS] for text in texts]
        vectors = np.asarray(self._model.embed(clipped, norm=False), dtype=np.float32)
        lengths = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit: np.ndarray = np.divide(vectors, lengths, out=np.zeros_like(vectors),
                                     where=lengths > 0)
        return unit


def embedder() -> Embedder:
    """The process's model, loaded on first use."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = Embedder()
        return _loaded


def pack(vector: np.ndarray) -> bytes:
    """A vector as stored: 256 half-precision floats, 512 bytes."""
    return np.asarray(vector, dtype="<f2").tobytes()


def unpack(data: bytes | None) -> np.ndarray | None:
    """A stored vector (float32), or None when there is none or it is not one of ours."""
    if not data or len(data) != DIMENSIONS * 2:
        return None
    return np.frombuffer(data, dtype="<f2").astype(np.float32)
