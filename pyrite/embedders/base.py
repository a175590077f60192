"""The embedder interface: a name, a dimension, embed(texts) -> float32 array, and chunking."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

import numpy as np

_WORD = re.compile(r"\S+")


def span_windows(text: str, spans: list[tuple[int, int]], *, size: int, overlap: int) -> list[str]:
    """Slices of text covering `size` consecutive spans (words or tokens), overlapping by `overlap` spans."""
    if len(spans) <= size:
        return [text]
    step = max(1, size - overlap)
    out = []
    for start in range(0, len(spans), step):
        window = spans[start:start + size]
        out.append(text[window[0][0]:window[-1][1]])
        if start + size >= len(spans):
            break
    return out


def word_windows(text: str, *, size: int, overlap: int) -> list[str]:
    """Split text into windows of `size` words that overlap by `overlap` words, cut at word boundaries."""
    return span_windows(text, [m.span() for m in _WORD.finditer(text)], size=size, overlap=overlap)


class Embedder(ABC):
    """Turns texts into unit-length float32 vectors; implementations are safe to call from one thread at a time."""

    provider: str = ""
    model: str = ""
    dimension: int | None = None
    # Largest number of texts sent in one call; the service splits larger batches.
    max_batch: int = 64
    # False when calls from two threads at once are unsafe; the service then serializes them.
    concurrent_safe: bool = True

    @abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """One vector per text, shape (len(texts), dimension), float32; raise EmbeddingError on failure."""

    def chunk(self, text: str) -> list[str]:
        """Pieces of text that each fit the model's input window (default: 200 words, 40 overlap)."""
        if len(text.split(None, 200)) <= 200:  # the common short text, without the regex pass
            return [text]
        return word_windows(text, size=200, overlap=40)

    def load(self) -> None:
        """Load the model or open the connection ahead of first use (optional)."""

    def close(self) -> None:
        """Release clients or models (optional)."""


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (rows of zeros stay zero)."""
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows stay non-finite; check_vectors refuses them
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (vectors / norms).astype(np.float32)
