"""Which files of a KB folder are entries: every visible *.md at any depth, less what ignore files exclude."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pathspec import GitIgnoreSpec

from pyrite.names import entry_id_problem

SUFFIX = ".md"
IGNORE_FILES = (".gitignore", ".pyriteignore")  # read in every folder; .pyriteignore wins over .gitignore
SKIP_FOLDERS = frozenset({"node_modules"})  # besides hidden ones (.git, .obsidian, .trash ...)


@dataclass
class TreeFile:
    """One entry file found by walk: its id, its path inside the KB (with '/' and '.md') and its stat."""

    id: str
    path: str
    abspath: str
    stat: os.stat_result


@dataclass
class Walk:
    """What walk found besides entries: a line per markdown file that cannot be an entry."""

    problems: list[str] = field(default_factory=list)


def _load_spec(folder: str) -> GitIgnoreSpec | None:
    """The patterns of the ignore files in folder (gitignore syntax), or None if it has none."""
    lines: list[str] = []
    for name in IGNORE_FILES:
        try:
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as fh:
                lines.extend(fh.read().splitlines())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            continue
    lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return GitIgnoreSpec.from_lines(lines) if lines else None


def _ignored(specs: list[tuple[str, GitIgnoreSpec]], rel: str, is_dir: bool) -> bool:
    """True if the deepest ignore file with a pattern matching rel (path inside the KB) excludes it."""
    for base, spec in reversed(specs):  # as git does: a nested file's patterns override its parents'
        sub = rel[len(base):] if base else rel
        result = spec.check_file(sub + "/" if is_dir else sub)
        if result.include is not None:
            return bool(result.include)
    return False


def _inside(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def walk(folder: Path, report: Walk | None = None) -> Iterator[TreeFile]:
    """The entry files of the KB at folder, folder by folder; names that cannot be ids go to report.problems.

    Hidden files and folders, node_modules and ignore-file matches are skipped without a word, and so is every
    file that is not *.md (attachments). Symlinked folders are never entered (no loops, no escape); a
    symlinked file counts only if it resolves to a file inside the KB folder. Raises OSError only for the KB
    folder itself; a subfolder that vanishes or cannot be read is skipped.
    """
    report = report if report is not None else Walk()
    root = str(folder)
    real_root = os.path.realpath(root)
    top = os.scandir(root)  # errors here are the caller's: the KB folder itself is gone or unreadable
    todo: list[tuple[str, str, list[tuple[str, GitIgnoreSpec]], Any]] = [
        (root, "", [], top)]
    while todo:
        abs_dir, rel_dir, parent_specs, opened = todo.pop()
        spec = _load_spec(abs_dir)
        specs = parent_specs + [(rel_dir, spec)] if spec is not None else parent_specs
        try:
            with opened if opened is not None else os.scandir(abs_dir) as listing:
                items = list(listing)
        except OSError:
            continue  # removed or unreadable since its parent was listed
        subdirs: list[tuple[str, str]] = []
        for item in items:
            name = item.name
            if name.startswith("."):
                continue
            rel = rel_dir + name
            try:
                is_dir = item.is_dir(follow_symlinks=False)
                if is_dir:
                    if name not in SKIP_FOLDERS and not (specs and _ignored(specs, rel, True)):
                        subdirs.append((item.path, rel + "/"))
                    continue
                if not name.endswith(SUFFIX) or (specs and _ignored(specs, rel, False)):
                    continue
                if item.is_symlink():
                    target = os.path.realpath(item.path)
                    if not _inside(target, real_root) or not os.path.isfile(target):
                        continue  # pointing out of the KB, at a folder, or nowhere
                    st = os.stat(item.path)
                elif item.is_file(follow_symlinks=False):
                    st = item.stat(follow_symlinks=False)
                else:
                    continue  # a socket, fifo, device
            except OSError:
                continue  # gone between the listing and the look: a later sync sees it
            entry_id = rel[:-len(SUFFIX)]
            problem = entry_id_problem(entry_id)
            if problem is not None:
                report.problems.append(f"{_printable(rel)}: skipped, the path cannot be an entry id ({problem})")
                continue
            yield TreeFile(entry_id, rel, item.path, st)
        # Depth first, in the folder's own order: nothing depends on it, and sorting 100,000 names costs.
        for abs_sub, rel_sub in reversed(subdirs):
            todo.append((abs_sub, rel_sub, specs, None))


def _printable(text: str) -> str:
    """text for a message, with undecodable bytes and control characters escaped."""
    return text if text.isprintable() else repr(text)
