"""Embedding providers behind one interface; heavy ones are imported only when chosen."""

from __future__ import annotations

import importlib

from pyrite.config import Settings
from pyrite.embedders.base import Embedder
from pyrite.errors import ConfigError

# provider -> "module:Class", imported on demand so `pyrite --help` never loads torch.
_REGISTRY = {
    "local": "pyrite.embedders.local:LocalEmbedder",
    "hash": "pyrite.embedders.hashing:HashEmbedder",
    "openai": "pyrite.embedders.openai:OpenAIEmbedder",
    "gemini": "pyrite.embedders.gemini:GeminiEmbedder",
}


def create_embedder(settings: Settings) -> Embedder:
    """The embedder the settings name; ConfigError for 'none' or an unavailable provider."""
    provider = settings.embed_provider
    if provider == "none":
        raise ConfigError("embedding is disabled (provider 'none')")
    target = _REGISTRY.get(provider)
    if target is None:
        raise ConfigError(f"embedding provider {provider!r} is not available in this version")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if provider == "hash":
        return cls(model=settings.model, dimension=settings.embed_dimensions)
    if provider in ("openai", "gemini"):
        return cls(settings.model, url=settings.embed_url, api_key=settings.embed_api_key,
                   dimensions=settings.embed_dimensions, timeout=settings.embed_timeout)
    return cls(model=settings.model)


__all__ = ["Embedder", "create_embedder"]
