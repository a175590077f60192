"""Where a new entry goes and what its file is called: folder checks, title or slug names, free-name search."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from pyrite.config import KB_NAMES
from pyrite.errors import ConflictError, ValidationError
from pyrite.names import check_entry_id, check_folder as _check_folder, slugify, title_file_name, with_suffix

SUFFIX = ".md"
SUFFIX_MAX = 10_000  # "-2" ... "-9999": past that, a title is clearly being created in a loop


def check_names(names: object) -> str:
    """names if it is a KB naming scheme ("title" or "slug"), else ValidationError."""
    if names not in KB_NAMES:
        raise ValidationError(f"names must be one of {', '.join(KB_NAMES)}, not {names!r}")
    return str(names)


def check_folder(folder: object) -> str:
    """The folder path inside a KB a new entry goes in ('' for the top level), or ValidationError."""
    if folder is None:
        return ""
    return _check_folder(folder)  # type: ignore[arg-type]


def base_id(folder: str, title: str, names: str) -> str:
    """The id a new entry would get before clash suffixes: folder/name, the name from title or its slug."""
    name = slugify(title) if names == "slug" else title_file_name(title)
    return check_entry_id(f"{folder}/{name}" if folder else name)


def _fold(name: str) -> str:
    return name.casefold()


def check_parent(root: Path, entry_id: str) -> None:
    """Refuse a new entry's folder path that leaves the KB or has a case twin; missing folders are fine.

    Each existing folder on the way must be a real folder (a symlinked one is never indexed, and may lead
    out of the KB). A missing folder whose name differs only in case from an existing one is refused: on
    macOS and Windows they are the same folder, so the vault would not survive a copy there.
    """
    here = root
    for segment in entry_id.split("/")[:-1]:
        nxt = here / segment
        try:
            os.lstat(nxt)
        except FileNotFoundError:
            twin = _twin(here, segment)
            if twin is not None:
                raise ConflictError(f"folder {segment!r} differs only in case from the existing folder {twin!r} "
                                    f"in {here}; use {twin!r}") from None
            return  # the rest is made by make_parent
        if os.path.islink(nxt) or not os.path.isdir(nxt):
            raise ValidationError(f"{nxt} is not a folder of the KB (a file or a symlink); choose another folder")
        here = nxt


def _twin(folder: Path, name: str) -> str | None:
    """The name in folder that equals name ignoring case (and is not name), or None."""
    want = _fold(name)
    try:
        with os.scandir(folder) as items:
            for item in items:
                if item.name != name and _fold(item.name) == want:
                    return item.name
    except (FileNotFoundError, NotADirectoryError):
        return None
    return None


def free_id(root: Path, base: str, indexed_twin: Callable[[str], str | None]) -> str:
    """The first of base, base-2, base-3 ... free in the index and on disk, ignoring case.

    indexed_twin(candidate) returns an indexed id equal to candidate ignoring case, or None.
    """
    for n in range(1, SUFFIX_MAX):
        candidate = with_suffix(base, n)
        if indexed_twin(candidate) is not None:
            continue
        path = root / f"{candidate}{SUFFIX}"
        if os.path.lexists(path):
            continue  # a file not (yet) indexed holds this name (or, case-insensitive disk, its twin)
        if not candidate.isascii() and _twin(path.parent, path.name) is not None:
            continue  # the index folds ASCII case only: ask the folder for other scripts' case twins
        return check_entry_id(candidate)
    raise ConflictError(f"too many entries named like {base!r}")


def make_parent(root: Path, rel: str) -> None:
    """Make the folders of rel (a path inside the KB at root) that are missing."""
    parent = os.path.dirname(rel)
    if parent:
        os.makedirs(root / parent, exist_ok=True)
