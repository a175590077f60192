"""The file side of a move: rename an entry file without overwriting, and retarget links to it in another file."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyrite.errors import ConflictError
from pyrite.link_rules import MARKDOWN, markdown_target, parse_links, rewrite, wiki_target
from pyrite.models import Entry
from pyrite.storage import files


@dataclass
class MoveResult:
    """What a move did: the entry under its new id, and the files whose links were rewritten."""

    entry: Entry
    old_id: str
    rewritten: list[str] = field(default_factory=list)  # ids of the entries whose links changed
    skipped: list[str] = field(default_factory=list)  # "id: why" for linking files left as they were

    def to_dict(self) -> dict[str, Any]:
        return {"entry": self.entry.to_dict(with_body=False), "old_id": self.old_id,
                "rewritten": list(self.rewritten), "skipped": list(self.skipped)}


def retarget(data: bytes, source_id: str, keys: set[str], old_id: str, new_id: str, *,
             bare_is_unique: bool) -> bytes | None:
    """data with every link in its body whose key is in keys pointed at new_id, keeping alias, heading, block
    and link style; every other byte as it was (links by an alias stay: the alias moves with the entry).
    None when nothing changes."""
    old_name = old_id.rsplit("/", 1)[-1].lower()
    text = data.decode("utf-8")
    _, body = files.parse_markdown(text)
    if not text.endswith(body):  # offsets into the body must be offsets into the file
        return None
    offset = len(text) - len(body)
    changes = []
    for link in parse_links(body, source_id):
        if link.key not in keys or (not link.by_path and link.key != old_name):
            continue
        if link.kind == MARKDOWN:
            new = markdown_target(link, body, source_id, new_id)
        else:
            new = wiki_target(new_id, had_path=link.by_path, bare_is_unique=bare_is_unique)
        if new != body[link.start:link.end]:
            changes.append((offset + link.start, offset + link.end, new))
    if not changes:
        return None
    return rewrite(text, changes).encode("utf-8")


def rebase(data: bytes, old_id: str, new_id: str) -> bytes | None:
    """data, the file of entry old_id, with its relative links (markdown `](../x.md)`, wiki `[[./x]]`) written
    so they reach the same files from new_id's folder (a link to itself follows it); every other byte as it
    was. None when nothing changes (same folder and no link to itself)."""
    text = data.decode("utf-8")
    _, body = files.parse_markdown(text)
    if not text.endswith(body):
        return None
    offset, changes = len(text) - len(body), []
    for link in parse_links(body, old_id):
        written = body[link.start:link.end]
        if link.kind == MARKDOWN and not link.target.startswith("/"):
            target = _within(old_id, link.target[:-3])
        elif link.kind != MARKDOWN and written.startswith(("./", "../")):
            target = _within(old_id, written)
        else:
            continue  # by name, KB path or from the KB's root: resolved the same wherever the file is
        if target is None:
            continue  # points outside the KB: left as written
        target = new_id if target == old_id else target
        if link.kind == MARKDOWN:
            new = markdown_target(link, body, new_id, target)
        else:
            new = posixpath.relpath(target, _folder(new_id))
            new = new if new.startswith("../") else "./" + new
        if new != written:
            changes.append((offset + link.start, offset + link.end, new))
    return rewrite(text, changes).encode("utf-8") if changes else None


def _folder(entry_id: str) -> str:
    return posixpath.dirname(entry_id) or "."


def _within(source_id: str, relative: str) -> str | None:
    """The KB path `relative` names from source_id's folder, or None if it leaves the KB."""
    path = posixpath.normpath(posixpath.join(_folder(source_id), relative))
    return None if path == "." or path.startswith("../") or path == ".." else path


def rename_exclusive(old: Path, new: Path) -> None:
    """Move file old to new, making new's folders; ConflictError if new exists (a case-only rename of the same
    file on a case-insensitive file system is allowed)."""
    new.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(new):
        if os.path.samefile(old, new):
            os.rename(old, new)  # the same file under another case: rename() is the only way
            return
        raise ConflictError(f"{new} exists already; a move never overwrites a file")
    try:
        os.link(old, new)  # never replaces an existing file
    except FileExistsError:
        raise ConflictError(f"{new} exists already; a move never overwrites a file") from None
    except OSError:
        os.rename(old, new)  # no hard links here; the name was free a moment ago
        return
    os.unlink(old)
