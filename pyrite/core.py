"""Pyrite: the one object every front end holds (settings, database and the services)."""

from __future__ import annotations

from typing import Callable

from pyrite.config import Settings
from pyrite.embedders import Embedder
from pyrite.services.embedding_service import EmbeddingService
from pyrite.services.kb_service import KBService
from pyrite.services.provider import Provider
from pyrite.services.search_service import SearchService
from pyrite.storage.db import Database


class Pyrite:
    """A pyrite home opened for use: the index database, the embedding provider, and the KB, search and
    embedding services.

    Who checkpoints the WAL is decided here, not by front ends: commits do (SQLite's automatic checkpoint)
    until a worker attaches in this process, whose threads then do it between batches. autocheckpoint=False
    keeps commits from ever doing it (tests and benchmarks of the worker's own checkpoints).
    """

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, autocheckpoint: bool = True,
                 reload: Callable[[], Settings] | None = None) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.db_path, autocheckpoint=autocheckpoint)
        self.provider = Provider(self.db, settings, embedder, reload=reload)
        self.embedding = EmbeddingService(self.db, self.provider)
        self.kbs = KBService(self.db, settings, hooks=self.embedding)
        self.search = SearchService(self.db, self.embedding)

    def close(self) -> None:
        """Close every database connection."""
        self.db.close()
