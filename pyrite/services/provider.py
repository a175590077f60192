"""The embedding provider of this process: its settings, its embedder, and the one check of what it returns."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import numpy as np

from pyrite.config import Settings
from pyrite.embedders import Embedder, create_embedder
from pyrite.errors import ConfigError, EmbeddingError
from pyrite.secrets import redact
from pyrite.storage import vectors
from pyrite.storage.db import Database

log = logging.getLogger("pyrite.embedding")

# The settings whose change means another embedder (re-read after a misconfiguration).
_EMBEDDER_KEYS = ("embed_provider", "embed_model", "embed_url", "embed_api_key", "embed_dimensions", "embed_timeout")


def check_vectors(vecs: Any, *, count: int, dim: int | None = None) -> np.ndarray:
    """vecs as a C-contiguous float32 (count, dim) array, or EmbeddingError if the shape or values are wrong.

    The one check every embedder's output passes before it is stored or searched with; `dim` is the
    model's dimension (see vectors.model_dimension), None while the model has no vectors yet.
    """
    try:
        arr = np.asarray(vecs, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(f"embedder returned non-numeric vectors: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] != count:
        raise EmbeddingError(f"embedder returned {arr.shape[0] if arr.ndim else 0} vectors for {count} inputs")
    if arr.shape[1] < 1:
        raise EmbeddingError("embedder returned empty vectors")
    if dim is not None and arr.shape[1] != dim:
        # Retryable, not a pause: a provider mid-rollout may answer from another deployment for a while.
        raise EmbeddingError(f"embedder returned vectors of dimension {arr.shape[1]}, expected {dim} (this "
                             "model's dimension); nothing was stored. If the model really changed, set "
                             "PYRITE_EMBED_DIMENSIONS or PYRITE_EMBED_MODEL, then run `pyrite index embed --force`")
    if not np.isfinite(arr).all():
        raise EmbeddingError("embedder returned NaN or infinite values", per_input=True)
    if (np.abs(arr).sum(axis=1) == 0).any():
        raise EmbeddingError("embedder returned an all-zero vector", per_input=True)
    return np.ascontiguousarray(arr)


class Provider:
    """Creates the embedder on first use, serializes calls into one that is not thread-safe, checks its output."""

    def __init__(self, db: Database, settings: Settings, embedder: Embedder | None = None,
                 reload: Callable[[], Settings] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.reload = reload
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        # Serializes calls into embedders that are not thread-safe (the local model's tokenizer).
        self._model_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when entries get embedded: a provider is set and sqlite-vec works."""
        return self.settings.embed_provider != "none" and self.db.vec_available

    @property
    def model_id(self) -> str:
        """The vector space this provider embeds into (provider:model, with dimensions if set)."""
        return self.settings.model_id

    def why_disabled(self) -> str | None:
        """A message saying why embedding is off and how to turn it on; None if on."""
        if self.settings.embed_provider == "none":
            return "embedding is off (provider 'none'); set PYRITE_EMBED_PROVIDER=local to turn it on"
        return self.db.vec_problem

    def require(self) -> None:
        """ConfigError saying why and how to turn it on, unless embedding is on."""
        reason = self.why_disabled()
        if reason is not None:
            raise ConfigError(reason)

    @property
    def embedder(self) -> Embedder:
        """This process's embedder, created on first use."""
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = create_embedder(self.settings)
            return self._embedder

    def loaded(self) -> bool:
        """True once the embedder exists in this process (the model is loaded)."""
        return self._embedder is not None and (self._embedder.dimension is not None)

    def refresh_settings(self) -> bool:
        """Re-read the settings (after a misconfiguration); True if the embedding ones changed."""
        if self.reload is None:
            return False
        try:
            fresh = self.reload()
        except Exception as exc:  # a broken config.yaml: keep the old settings, say why
            log.error("cannot re-read settings: %s", exc)
            return False
        if all(getattr(fresh, k) == getattr(self.settings, k) for k in _EMBEDDER_KEYS):
            return False
        with self._embedder_lock:
            old, self._embedder = self._embedder, None
            self.settings = fresh
        if old is not None:
            old.close()
        log.info("embedding settings changed; now using %s", fresh.model_id)
        return True

    def redact(self, message: str) -> str:
        """message with this process's secrets masked; every error is recorded or logged through it."""
        return redact(message, [self.settings.embed_api_key, self.settings.api_token])

    def dimension(self) -> int | None:
        """The configured model's dimension: the embedder's own, else that of its vectors in the index."""
        dim = self.embedder.dimension
        if dim is None and self.db.vec_available:
            dim = vectors.model_dimension(self.db.conn, self.model_id)
        return dim

    def chunk(self, text: str) -> list[str]:
        """text cut into the pieces the model embeds (each within its input limit)."""
        embedder = self.embedder
        if embedder.concurrent_safe:
            return embedder.chunk(text)
        with self._model_lock:
            return embedder.chunk(text)

    def embed(self, texts: list[str]) -> np.ndarray:
        """One checked float32 vector per text, in the model's dimension; EmbeddingError says what went wrong."""
        embedder = self.embedder
        dim = self.dimension()
        parts = []
        for start in range(0, len(texts), embedder.max_batch):
            piece = texts[start:start + embedder.max_batch]
            try:
                if embedder.concurrent_safe:
                    raw = embedder.embed(piece)
                else:
                    with self._model_lock:
                        raw = embedder.embed(piece)
            except EmbeddingError:
                raise
            except ConfigError as exc:
                raise EmbeddingError(str(exc), misconfigured=True) from exc
            except Exception as exc:  # an embedder bug must fail items, never kill the worker
                raise EmbeddingError(f"{type(exc).__name__}: {exc}", per_input=True) from exc
            parts.append(check_vectors(raw, count=len(piece), dim=dim))
            dim = int(parts[-1].shape[1])  # one call, one dimension
        arr = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if embedder.dimension is None:
            embedder.dimension = int(arr.shape[1])
        return arr

    def embed_query(self, text: str) -> np.ndarray:
        """The query's vector in the configured model's space; EmbeddingError (redacted) if the provider fails."""
        try:
            return self.embed([text])[0]
        except EmbeddingError as exc:
            exc.args = (self.redact(str(exc)),)
            raise
