"""A deterministic, model-free embedder (signed feature hashing of words) for tests and benchmarks."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from pyrite.embedders.base import Embedder, normalize

_TOKEN = re.compile(r"\w+")


class HashEmbedder(Embedder):
    """Bag-of-words vectors: texts sharing words are near. Fast and offline; not a language model."""

    provider = "hash"

    def __init__(self, model: str = "hash-384", dimension: int | None = None) -> None:
        self.model = model
        self.dimension = dimension or 384

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dimension] += 1.0 if (value >> 32) & 1 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0  # punctuation-only text still gets a valid vector
        return normalize(out)
