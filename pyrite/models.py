"""The records pyrite passes around: entries, KBs and embedding statuses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class EmbedStatus(str, Enum):
    """An entry's embedding state: the status column of its embed_queue row."""

    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


EMBED_STATUSES: tuple[str, ...] = tuple(s.value for s in EmbedStatus)


@dataclass
class KB:
    """A knowledge base: a named folder of markdown files."""

    name: str
    path: str
    created: str
    entries: int | None = None
    names: str = "title"  # how create names new files: "title" (as written) or "slug"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "path": self.path, "created": self.created,
                               "names": self.names}
        if self.entries is not None:
            out["entries"] = self.entries
        return out


@dataclass
class Entry:
    """One markdown file of a KB, as indexed."""

    kb: str
    id: str
    title: str
    body: str = ""
    type: str = "note"
    tags: list[str] = field(default_factory=list)
    created: str = ""
    updated: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    embedding_status: str | None = None
    embedding_error: str | None = None

    def embed_text(self) -> str:
        """The text the embedding model sees: title and body."""
        return embed_text(self.title, self.body)

    @property
    def aliases(self) -> list[str]:
        """The other names the entry answers to (frontmatter `aliases`, kept in meta as written)."""
        return aliases_of(self.meta)

    def to_dict(self, *, with_body: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kb": self.kb,
            "title": self.title,
            "type": self.type,
            "tags": list(self.tags),
            "created": self.created,
            "updated": self.updated,
            "meta": dict(self.meta),
            "aliases": self.aliases,
            "path": self.path,
            "embedding_status": self.embedding_status,
        }
        if self.embedding_error:
            out["embedding_error"] = self.embedding_error
        if with_body:
            out["body"] = self.body
        return out


def embed_text(title: str, body: str) -> str:
    """Title and body joined as the model sees them; blank when both are blank."""
    title, body = title.strip(), body.strip()
    if title and body:
        return f"{title}\n\n{body}"
    return title or body


def text_hash(title: str, body: str) -> str:
    """The sha256 of embed_text(title, body): what the embed queue compares to know a text changed."""
    return hashlib.sha256(embed_text(title, body).encode("utf-8")).hexdigest()


def aliases_of(meta: dict[str, Any]) -> list[str]:
    """Frontmatter `aliases` (or Obsidian's older `alias`) as strings: a list, or one comma-separated string."""
    value = meta.get("aliases", meta.get("alias"))
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        items = [] if value is None or isinstance(value, dict) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            item = "true" if item else "false"
        if isinstance(item, (str, int, float)) and str(item).strip() and str(item).strip() not in out:
            out.append(str(item).strip())
    return out
