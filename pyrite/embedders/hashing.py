"""Deterministic, model-free embedders (feature hashing of words) for tests and benchmarks."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np

from pyrite.embedders.base import Embedder, normalize

_TOKEN = re.compile(r"\w+")


def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


@lru_cache(maxsize=50_000)
def _dense_direction(token: str, dimension: int) -> np.ndarray:
    """A fixed pseudo-random unit direction for one word (the same on every machine)."""
    vec = np.random.default_rng(_token_hash(token)).standard_normal(dimension).astype(np.float32)
    return vec / np.linalg.norm(vec)


class HashEmbedder(Embedder):
    """Bag-of-words vectors: texts sharing words are near. Fast and offline; not a language model.

    A model name starting with "dense" (e.g. "dense-384") gives dense vectors, each word a fixed
    random direction, so the vector space looks like a real model's to an index (no zero columns);
    any other name gives sparse signed hashing into the dimensions.
    """

    provider = "hash"

    def __init__(self, model: str = "hash-384", dimension: int | None = None) -> None:
        self.model = model
        self.dimension = dimension or 384
        self.dense = model.startswith("dense")

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            counts: dict[str, int] = {}
            for token in _TOKEN.findall(text.lower()):
                counts[token] = counts.get(token, 0) + 1
            if self.dense:
                for token, n in counts.items():
                    out[row] += (1.0 + np.log(n)) * _dense_direction(token, self.dimension)
            else:
                for token, n in counts.items():
                    value = _token_hash(token)
                    out[row, value % self.dimension] += n if (value >> 32) & 1 else -n
            if not out[row].any():
                out[row, 0] = 1.0  # punctuation-only text still gets a valid vector
        return normalize(out)
