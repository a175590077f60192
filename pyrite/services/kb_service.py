"""KBs and entries: every write is the markdown file plus one index transaction (row, FTS, queue, event)."""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from pyrite.config import Settings
from pyrite.errors import ConflictError, NotFoundError, PyriteError, StorageError, ValidationError
from pyrite.kb_folders import check_kb_folder
from pyrite.models import KB, Entry
from pyrite.link_rules import file_links
from pyrite.models import aliases_of
from pyrite.names import check_entry_id, check_kb_name
from pyrite import field_rules
from pyrite.services import file_fields, moves, naming
from pyrite.storage import events, files, frontmatter, links, passages, queue, tree
from pyrite.storage.db import Database

_ENTRY_COLUMNS = "rowid, kb, id, title, body, type, tags, meta, created, updated, path"


class WriteHooks(Protocol):
    """What the embedding pipeline does around each entry write (EmbeddingService is one).

    The queue's transitions are the pipeline's: KBService never writes embed_queue itself.
    """

    def queue_entry(self, conn: Any, rowid: int, kb: str, title: str, body: str, *, now: float) -> None:
        """Inside the write's transaction: the entry's text is now title+body (queued unless already embedded)."""

    def forget(self, conn: Any, rowids: Sequence[int]) -> None:
        """Inside the transaction that deletes these entries: drop their embedding work and vectors."""

    def forget_kb(self, conn: Any, kb: str) -> None:
        """Inside the transaction that removes a KB (after forget of its entries): drop what is left of it."""

    def must_embed_here(self, conn: Any) -> bool:
        """Inside the write's transaction: True if no worker will embed it, so this process must."""

    def after_write(self, rowids: Sequence[int], embed_here: bool) -> bool:
        """After the commit: wake a worker or embed now; True if the entries were embedded now."""


class _NameTaken(Exception):
    """The file name of a new entry was created by someone else between the check and the link."""


def now_iso() -> str:
    """The current UTC time as YYYY-MM-DDTHH:MM:SSZ."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class IndexReport:
    """What an index build or sync changed."""

    kb: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    queued: int = 0
    moved_from: set[str] = field(default_factory=set)  # ids whose file turned up under another name
    errors: list[str] = field(default_factory=list)  # a line per file skipped
    warnings: list[str] = field(default_factory=list)  # a line per file indexed with a problem (broken YAML)
    rowids: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kb": self.kb, "added": self.added, "updated": self.updated, "removed": self.removed,
                "unchanged": self.unchanged, "moved": len(self.moved_from), "queued": self.queued,
                "errors": list(self.errors), "warnings": list(self.warnings)}


def file_error(exc: OSError, kb: str, folder: Path) -> PyriteError:
    """What an OSError from reading or writing a KB's files means, as an error that says what to do."""
    where = exc.filename or folder
    if not folder.is_dir():
        return NotFoundError(
            f"the folder of KB {kb!r}, {folder}, is gone (removed or moved): put it back, or run "
            f"`pyrite kb remove {kb}` and register the folder where it is now with `pyrite kb create {kb} --path DIR`")
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"{where} is a folder, not a markdown file; rename it, then run "
                            f"`pyrite index sync --kb {kb}`")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"cannot write in the folder of KB {kb!r}: {where} is not writable by this user "
                            f"({exc.strerror}); make it writable (chmod/chown, or remount read-write) and try again")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"cannot write in the folder of KB {kb!r}, {folder}: {exc.strerror}; free some space "
                            "and try again")
    return StorageError(f"cannot write {where} (KB {kb!r}): {exc.strerror or exc}")


def rowid_hint(entry: Entry) -> str:
    """A short, file-name-safe token for an entry (its id's hash)."""
    return files.content_hash(entry.id.encode("utf-8"))[:12]


def _frontmatter(entry: Entry) -> dict[str, Any]:
    """The frontmatter of a file pyrite creates (no `id`: the file's path is its id)."""
    front: dict[str, Any] = {"title": entry.title, "type": entry.type, "tags": list(entry.tags),
                             "created": entry.created, "updated": entry.updated}
    front.update(entry.meta)
    return front


def _own_created(fields: file_fields.FileFields) -> bool:
    """True if the file states when it was created (`created` or `date`), rather than its stat telling."""
    return "created" in fields.keys or "date" in fields.keys


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON says (so 1 and true differ, as they do in the file)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _changed_keys(fields: file_fields.FileFields, changes: dict[str, Any], meta_set: dict[str, Any],
                  meta_drop: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The frontmatter keys an update must write (those whose value differs from the file's) and drop."""
    sets: dict[str, Any] = {}
    for key, now in (("title", fields.title), ("type", fields.type), ("tags", fields.front_tags)):
        if changes[key] is not None and changes[key] != now:
            sets[key] = changes[key]
    for key, value in meta_set.items():
        if key not in fields.meta or not _same(fields.meta[key], value):
            sets[key] = value
    return sets, [key for key in meta_drop if key in fields.meta]


def _entry_of(kb: str, entry_id: str, name: str, fields: file_fields.FileFields) -> Entry:
    return Entry(kb=kb, id=entry_id, title=fields.title, body=fields.body, type=fields.type, tags=fields.tags,
                 created=fields.created, updated=fields.updated, meta=fields.meta, path=name)


def _entry_from_row(row: Any, state: tuple[str | None, str | None] = (None, None)) -> Entry:
    return Entry(kb=row[1], id=row[2], title=row[3], body=row[4], type=row[5], tags=json.loads(row[6]),
                 meta=json.loads(row[7]), created=row[8], updated=row[9], path=row[10],
                 embedding_status=state[0], embedding_error=state[1])


def _indexed_twin(conn: Any, kb: str, entry_id: str) -> str | None:
    """An indexed id of kb equal to entry_id ignoring (ASCII) case, by the entries_id_nocase index."""
    row = conn.execute("SELECT id FROM entries WHERE kb = ? AND id = ? COLLATE NOCASE LIMIT 1",
                       (kb, entry_id)).fetchone()
    return row[0] if row else None


def _renames(gone: list[str], known: dict[str, tuple[Any, ...]]) -> dict[str, str]:
    """file hash -> id of the vanished entries whose content is unique among them (a move can be matched)."""
    by_hash: dict[str, list[str]] = {}
    for entry_id in gone:
        by_hash.setdefault(known[entry_id][2], []).append(entry_id)
    return {h: ids[0] for h, ids in by_hash.items() if len(ids) == 1 and h}


BULK_CACHE_KIB = 64 * 1024  # page cache of a large build or sync (SQLite's default is 2 MiB)


class KBService:
    """The KB and entry operations every front end uses; holds no front-end logic."""

    def __init__(self, db: Database, settings: Settings, hooks: WriteHooks) -> None:
        self.db = db
        self.settings = settings
        self.hooks = hooks
        # KB name -> folder, so a write can start its file before its transaction; the transaction checks it.
        self._folders: dict[str, Path] = {}

    # -- KBs ---------------------------------------------------------------

    def create_kb(self, name: str, path: str | Path | None = None, *, create: bool = False,
                  names: str | None = None) -> KB:
        """Register a KB folder (default $PYRITE_HOME/kbs/NAME, made if missing); files are never touched.

        A given path must be absolute and an existing folder, or is made when create is set; see
        kb_folders.check_kb_folder for the folders that may never be a KB. names: how new entries' files
        are named, "title" or "slug" (default: the kb_names setting).
        """
        check_kb_name(name)
        names = naming.check_names(self.settings.kb_names if names is None else names)
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM kbs WHERE name = ?", (name,)).fetchone():
                raise ConflictError(f"KB {name!r} exists already")
            others = [(r[0], r[1]) for r in conn.execute("SELECT name, path FROM kbs")]
            folder = check_kb_folder(self.settings.kbs_dir / name if path is None else path,
                                     home=self.settings.home, others=others, create=create or path is None)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValidationError(f"cannot create {folder}: {exc.strerror}") from None
            kb = KB(name=name, path=str(folder), created=now_iso(), entries=0, names=names)
            conn.execute("INSERT INTO kbs (name, path, created, names) VALUES (?, ?, ?, ?)",
                         (kb.name, kb.path, kb.created, kb.names))
        return kb

    def get_kb(self, name: str) -> KB:
        """The KB called name, or NotFoundError."""
        check_kb_name(name)
        row = self.db.query("SELECT name, path, created, NULL, names FROM kbs WHERE name = ?", (name,))
        if not row:
            raise NotFoundError(f"no KB named {name!r} (see `pyrite kb list`)")
        return KB(*row[0])

    def list_kbs(self) -> list[KB]:
        """Every KB with its entry count, by name."""
        rows = self.db.query(
            "SELECT k.name, k.path, k.created, (SELECT count(*) FROM entries e WHERE e.kb = k.name), k.names "
            "FROM kbs k ORDER BY k.name"
        )
        return [KB(*r) for r in rows]

    def remove_kb(self, name: str) -> KB:
        """Drop a KB and its index rows and vectors; its folder and files stay untouched."""
        kb = self.get_kb(name)
        with self.db.write() as conn:
            rowids = [r[0] for r in conn.execute("SELECT rowid FROM entries WHERE kb = ?", (name,))]
            passages.delete(conn, rowids)
            links.forget_kb(conn, name)
            self.hooks.forget(conn, rowids)
            self.hooks.forget_kb(conn, name)
            conn.execute("DELETE FROM entries WHERE kb = ?", (name,))
            conn.execute("DELETE FROM kbs WHERE name = ?", (name,))
        self._folders.pop(name, None)
        return kb

    # -- entries -------------------------------------------------------------

    def create_entry(self, kb: str, title: str, body: str = "", *, tags: Iterable[str] = (),
                     type: str = "note", meta: dict[str, Any] | None = None, embed: bool = True,
                     folder: str = "") -> Entry:
        """Write a new entry file in folder (made if needed) named after its title, as written or as a slug
        (the KB's names setting; -2, -3 on a clash, checked case-insensitively), and index it."""
        title, body = field_rules.check_title(title), self._check_size(field_rules.check_body(body))
        tag_list, kind, extra = field_rules.check_tags(tags), field_rules.check_type(type), field_rules.check_meta(meta)
        check_kb_name(kb)
        where = naming.check_folder(folder)
        stamp = now_iso()
        slug = naming.base_id(where, title, self.get_kb(kb).names)
        entry = Entry(kb=kb, id=slug, title=title, body=body, type=kind, tags=tag_list,
                      created=stamp, updated=stamp, meta=extra)
        for _ in range(5):
            try:
                with self._file_errors(kb):
                    return self._create(entry, slug, embed)
            except _NameTaken:
                continue  # the next attempt sees the file and takes the next free name
        raise ConflictError(f"could not find a free file name for {slug!r} in KB {kb!r}; try again")

    def _create(self, entry: Entry, slug: str, embed: bool) -> Entry:
        # The file is written and its fsync started before the lock. Everything else the write does runs
        # while it flushes, and the file is linked into place once it is on disk, just before COMMIT.
        folder = self._folders.get(entry.kb) or self._folder(entry.kb)
        data = self._render(entry)
        staged = files.stage(folder, data)
        installed: Path | None = None
        try:
            with self.db.write() as conn:
                actual = self._folder(entry.kb)  # the thread's connection: read in this transaction
                naming.check_parent(actual, slug)  # the folder path: inside the KB, no case twin
                candidate = naming.free_id(actual, slug, lambda c: _indexed_twin(conn, entry.kb, c))
                if candidate != entry.id or actual != folder:  # the id is in the frontmatter: render again
                    files.discard(staged)
                    entry.id, folder = candidate, actual
                    data = self._render(entry)
                    staged = files.stage(folder, data)
                entry.path = f"{candidate}.md"
                rowid, embed_here = self._put_and_plan(conn, entry, data, staged.stat, "entry_created", embed)
                naming.make_parent(folder, entry.path)
                try:
                    files.install(staged, folder / entry.path, exclusive=True)
                except FileExistsError:  # created between the check and the link: roll back, try again
                    raise _NameTaken() from None
                installed = folder / entry.path
        except BaseException:
            if installed is not None:  # the commit failed after the link: the file goes too
                installed.unlink(missing_ok=True)
            else:
                files.discard(staged)
            raise
        return self._finish(entry, rowid, embed, embed_here)

    def get_entry(self, kb: str, entry_id: str) -> Entry:
        """The indexed entry, with its embedding status, or NotFoundError."""
        check_kb_name(kb)
        check_entry_id(entry_id)
        rows = self.db.query(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE kb = ? AND id = ?", (kb, entry_id))
        if not rows:
            self.get_kb(kb)
            raise NotFoundError(f"no entry {entry_id!r} in KB {kb!r}")
        return self._with_states(rows)[0]

    def update_entry(self, kb: str, entry_id: str, *, title: str | None = None, body: str | None = None,
                     tags: Iterable[str] | None = None, type: str | None = None,
                     meta: dict[str, Any] | None = None, embed: bool = True) -> Entry:
        """Change the given fields (meta merges; a None value drops a key), keeping every other frontmatter key."""
        current = self.get_entry(kb, entry_id)
        folder = Path(self.get_kb(kb).path)
        path = folder / current.path
        changes = {
            "title": None if title is None else field_rules.check_title(title),
            "body": None if body is None else field_rules.check_body(body),
            "tags": None if tags is None else field_rules.check_tags(tags),
            "type": None if type is None else field_rules.check_type(type),
        }
        # A None value drops the key; the others are checked like new meta.
        meta_set = field_rules.check_meta({k: v for k, v in (meta or {}).items() if v is not None})
        meta_drop = [k for k, v in (meta or {}).items() if v is None]
        if body is not None:
            self._check_size(changes["body"])
        with self._file_errors(kb):
            planned = self._update(kb, entry_id, current, path, changes, meta_set, meta_drop, embed)
        if planned is None:
            return current  # nothing changed: no file written, no event
        entry, rowid, embed_here = planned
        return self._finish(entry, rowid, embed, embed_here)

    def _update(self, kb: str, entry_id: str, current: Entry, path: Path, changes: dict[str, Any],
                meta_set: dict[str, Any], meta_drop: list[str], embed: bool) -> tuple[Entry, int, bool] | None:
        """The file and index part of update_entry; None when the update changes nothing (nothing written)."""
        folder = path.parent
        replaced: bytes | None = None  # the old content, once the new file is in place
        try:
            with self.db.write() as conn:
                try:
                    with open(path, "rb") as fh:
                        old, st = fh.read(), os.fstat(fh.fileno())
                except FileNotFoundError:
                    if not folder.is_dir():
                        raise
                    raise NotFoundError(
                        f"the file of entry {entry_id!r} is gone from {folder}; run `pyrite index sync --kb {kb}`"
                    ) from None
                # The file is the source of truth: start from what is on disk now, edits made elsewhere included.
                fields = file_fields.read_fields(old, current.path, st)
                entry = _entry_of(kb, entry_id, current.path, fields)
                if not _own_created(fields):  # dated by the file's stat, which a rewrite changes: keep the index's
                    entry.created = current.created
                sets, drops = _changed_keys(fields, changes, meta_set, meta_drop)
                body = changes["body"] if changes["body"] is not None and changes["body"] != fields.body else None
                if not sets and not drops and body is None:  # the file already says this: not written again
                    indexed = conn.execute("SELECT file_hash FROM entries WHERE kb = ? AND id = ?",
                                           (kb, entry_id)).fetchone()
                    if indexed is not None and indexed[0] == files.content_hash(old):
                        return None
                    # Edited elsewhere and not indexed yet: index the file as it is.
                    return (entry, *self._put_and_plan(conn, entry, old, st, "entry_updated", embed))
                if fields.problem is not None and (sets or drops):
                    raise ValidationError(
                        f"{current.path}: line {fields.problem.line}: the frontmatter is not valid YAML "
                        f"({fields.problem.reason}); pyrite will not change it: fix it in an editor first (an "
                        "update of the body alone works)")
                if fields.problem is None and "updated" in fields.keys:
                    sets["updated"] = now_iso()  # only a file that keeps the key: an update adds no key unasked
                text = frontmatter.edit_text(file_fields.decode(old), sets, drops, body, name=current.path)
                data = text.encode("utf-8")
                staged = files.stage(folder, data, mode=stat.S_IMODE(st.st_mode))  # keep its permissions
                try:
                    # The entry as the new file reads (so the index and a later rebuild agree).
                    entry = _entry_of(kb, entry_id, current.path, file_fields.read_fields(data, current.path, staged.stat))
                    if not _own_created(fields):
                        entry.created = current.created
                    # Rows first, while the new content is flushed; the file is replaced only once both are done.
                    rowid, embed_here = self._put_and_plan(conn, entry, data, staged.stat, "entry_updated", embed)
                    files.install(staged, path)
                    replaced = old
                except BaseException:
                    files.discard(staged)
                    raise
        except BaseException:
            if replaced is not None:  # the commit failed after the file changed: put the old one back
                files.write_atomic(path, replaced)
            raise
        return entry, rowid, embed_here

    def delete_entry(self, kb: str, entry_id: str) -> None:
        """Remove the entry's file, index row, vectors and queue row together."""
        current = self.get_entry(kb, entry_id)
        path = Path(self.get_kb(kb).path) / current.path
        # Move the file aside first, so a failed commit can put it back.
        aside = path.with_name(f".pyrite-deleting-{os.getpid()}-{rowid_hint(current)}.tmp")
        with self._file_errors(kb), self.db.write() as conn:
            moved = False
            try:
                os.replace(path, aside)
                moved = True
            except FileNotFoundError:
                pass
            try:
                self._delete_rows(conn, kb, [entry_id])
            except BaseException:
                if moved:
                    os.replace(aside, path)
                raise
        if moved:
            aside.unlink(missing_ok=True)

    def move_entry(self, kb: str, entry_id: str, new_id: str, *, embed: bool = True) -> moves.MoveResult:
        """Rename the entry's file to NEW_ID.md (folders made, never overwriting) and point every link to it in
        other files there, in one transaction; the row keeps its rowid, so its vectors and queue state."""
        current = self.get_entry(kb, entry_id)
        check_entry_id(new_id)
        result = moves.MoveResult(entry=current, old_id=entry_id)
        if new_id == entry_id:  # a conflict with the current state, like a taken id (409), not bad input
            raise ConflictError(f"{entry_id!r} is already the entry's id")
        folder = Path(self.get_kb(kb).path)
        old_path, new_path = folder / current.path, folder / f"{new_id}.md"
        undo: list[Callable[[], None]] = []  # file changes made so far, to reverse if the commit fails
        staged_files: list[tuple[files.Staged, Path, bytes]] = []
        installed = 0
        try:
            with self.db.write() as conn:
                row = conn.execute("SELECT rowid FROM entries WHERE kb = ? AND id = ?", (kb, entry_id)).fetchone()
                if row is None:
                    raise NotFoundError(f"no entry {entry_id!r} in KB {kb!r}")
                rowid = row[0]
                if conn.execute("SELECT 1 FROM entries WHERE kb = ? AND id = ?", (kb, new_id)).fetchone():
                    raise ConflictError(f"KB {kb!r} has an entry {new_id!r} already")
                try:
                    data, st = old_path.read_bytes(), old_path.stat()
                except FileNotFoundError:
                    raise NotFoundError(f"the file of entry {entry_id!r} is gone from {folder}; "
                                        f"run `pyrite index sync --kb {kb}`") from None
                bare_unique = not links.answers_to(conn, kb, new_id.rsplit("/", 1)[-1].lower(), other_than=rowid)
                plans = self._retarget_plans(conn, kb, folder, rowid, entry_id, new_id, bare_unique, result)
                rebased = moves.rebase(data, entry_id, new_id)  # its own relative links, seen from the new folder
                own = links.keys_to_itself(conn, rowid)  # and its links to itself by name or KB path
                if own:
                    rebased = moves.retarget(rebased or data, new_id, own, entry_id, new_id,
                                             bare_is_unique=bare_unique) or rebased
                if rebased is not None:  # installed over the renamed file (undo: its old bytes back)
                    staged = files.stage(old_path.parent, rebased, mode=stat.S_IMODE(st.st_mode))
                    staged_files.append((staged, new_path, data))
                    data, st = rebased, staged.stat
                    result.rewritten.append(new_id)
                self._move_row(conn, kb, entry_id, new_id, f"{new_id}.md")
                moved, stated = self._entry_from_file(kb, new_id, f"{new_id}.md", data, st)
                rowids = [self._put_row(conn, moved, data, st, None, created_stated=stated)]
                for source_id, path, old, sst, new in plans:
                    staged = files.stage(path.parent, new, mode=stat.S_IMODE(sst.st_mode))  # keep its permissions
                    staged_files.append((staged, path, old))
                    entry, stated = self._entry_from_file(kb, source_id, path.relative_to(folder).as_posix(), new,
                                                          staged.stat)
                    rowids.append(self._put_row(conn, entry, new, staged.stat, "entry_updated", created_stated=stated))
                    result.rewritten.append(source_id)
                states = queue.states(conn, rowids)  # the rewritten files' text changed: embed them again
                pending = [r for r in rowids if states.get(r, ("",))[0] == "pending"]
                embed_here = bool(embed and pending and self.hooks.must_embed_here(conn))
                # The files last, just before COMMIT: the rename, then each rewritten file.
                moves.rename_exclusive(old_path, new_path)
                undo.append(lambda: moves.rename_exclusive(new_path, old_path))
                for staged, path, old in staged_files:
                    files.install(staged, path)
                    installed += 1
                    undo.append(lambda path=path, old=old: files.write_atomic(path, old))
        except BaseException:
            for step in reversed(undo):
                step()
            for staged, _, _ in staged_files[installed:]:
                files.discard(staged)
            raise
        if embed and pending:
            self.hooks.after_write(pending, embed_here)
        result.entry = self.get_entry(kb, new_id)
        return result

    def _retarget_plans(self, conn: Any, kb: str, folder: Path, rowid: int, old_id: str, new_id: str,
                        bare_unique: bool, result: moves.MoveResult
                        ) -> list[tuple[str, Path, bytes, os.stat_result, bytes]]:
        """For each other file linking to the entry: (id, path, old bytes, stat, new bytes) to write
        (bare_unique: the new file name answers to no other entry, so a link by name is enough)."""
        plans = []
        for source, keys in links.linking_sources(conn, rowid).items():
            source_id, rel = conn.execute("SELECT id, path FROM entries WHERE rowid = ?", (source,)).fetchone()
            path = folder / rel
            try:
                old, sst = path.read_bytes(), path.stat()
                new = moves.retarget(old, source_id, keys, old_id, new_id, bare_is_unique=bare_unique)
            except (OSError, UnicodeDecodeError, ValidationError) as exc:
                result.skipped.append(f"{source_id}: {exc}")
                continue
            if new is not None:
                plans.append((source_id, path, old, sst, new))
        return plans

    def entry_links(self, kb: str, entry_id: str) -> dict[str, list[dict[str, Any]]]:
        """The entry's resolved outgoing links, its backlinks and its unresolved links."""
        rowid = self._rowid_or_404(kb, entry_id)
        out = links.outgoing(self.db.conn, rowid)
        return {"outgoing": [x for x in out if x["id"] is not None],
                "backlinks": links.backlinks(self.db.conn, rowid),
                "unresolved": [x for x in out if x["id"] is None]}

    def unresolved_links(self, kb: str) -> list[dict[str, Any]]:
        """Every link of the KB that resolves to no entry, by file."""
        self.get_kb(kb)
        return links.unresolved(self.db.conn, kb)

    def _rowid_or_404(self, kb: str, entry_id: str) -> int:
        check_kb_name(kb)
        check_entry_id(entry_id)
        rows = self.db.query("SELECT rowid FROM entries WHERE kb = ? AND id = ?", (kb, entry_id))
        if not rows:
            self.get_kb(kb)
            raise NotFoundError(f"no entry {entry_id!r} in KB {kb!r}")
        return int(rows[0][0])

    def list_entries(self, kb: str, *, limit: int | None = None, offset: int = 0) -> list[Entry]:
        """Entries of a KB, most recently updated first."""
        self.get_kb(kb)
        sql = (f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE kb = ? ORDER BY updated DESC, rowid DESC "
               "LIMIT ? OFFSET ?")
        return self._with_states(self.db.query(sql, (kb, -1 if limit is None else int(limit), max(0, int(offset)))))

    def _with_states(self, rows: list[Any]) -> list[Entry]:
        """Entries from rows of _ENTRY_COLUMNS, each with its embedding status and error."""
        states = queue.states(self.db.conn, [r[0] for r in rows])
        return [_entry_from_row(r, states.get(r[0], (None, None))) for r in rows]

    # -- index build and sync ------------------------------------------------

    def build(self, kb: str, *, force: bool = False, batch: int = 2000) -> IndexReport:
        """Read every markdown file of the KB and bring the index in line (force: rewrite unchanged rows too)."""
        return self._reconcile(kb, read_all=True, force=force, batch=batch)

    def sync(self, kb: str, *, batch: int = 2000) -> IndexReport:
        """Index files added, edited or removed outside pyrite; reads only files whose size or mtime moved."""
        return self._reconcile(kb, read_all=False, force=False, batch=batch)

    def _reconcile(self, kb: str, *, read_all: bool, force: bool, batch: int) -> IndexReport:
        folder = Path(self.get_kb(kb).path)
        report = IndexReport(kb=kb)
        known = {r[0]: (r[1], r[2], r[3], r[4]) for r in self.db.query(
            "SELECT id, file_mtime_ns, file_size, file_hash, path FROM entries WHERE kb = ?", (kb,))}
        seen: set[str] = set()
        todo: list[tuple[str, str, os.stat_result]] = []
        walked = tree.Walk()
        try:
            found = list(tree.walk(folder, walked))
        except OSError as exc:
            raise file_error(exc, kb, folder) from None
        report.errors.extend(walked.problems)
        for item in found:
            entry_id, st = item.id, item.stat
            seen.add(entry_id)
            old = known.get(entry_id)
            if old is None or read_all or old[0] != st.st_mtime_ns or old[1] != st.st_size:
                todo.append((entry_id, item.path, st))
            else:
                report.unchanged += 1
        gone = [entry_id for entry_id in known if entry_id not in seen]
        renames = _renames(gone, known)
        batches = [todo[start:start + batch] for start in range(0, len(todo), batch)]
        with self.db.cache_size(BULK_CACHE_KIB if len(todo) > batch else None), \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyrite-parse") as reader:
            # A bigger page cache while thousands of rows go in: FTS5 re-reads its segments as it merges.
            # The next batch is read and parsed on a thread while this one is written: SQLite releases the
            # GIL, so on two cores the parsing mostly hides behind the writing.
            ahead = [reader.submit(self._parse_files, kb, folder, batches[0], known)] if batches else []
            for i in range(len(batches)):
                parsed, errors, warnings, vanished = ahead.pop().result()
                if i + 1 < len(batches):
                    ahead.append(reader.submit(self._parse_files, kb, folder, batches[i + 1], known))
                report.errors.extend(errors)
                report.warnings.extend(warnings)
                gone.extend(entry_id for entry_id in vanished if entry_id in known)
                self._write_parsed(kb, parsed, known, force, report, renames)
        gone = [entry_id for entry_id in gone if entry_id not in report.moved_from]
        for start in range(0, len(gone), batch):
            with self.db.write() as conn:
                self._delete_rows(conn, kb, gone[start:start + batch])
            report.removed += len(gone[start:start + batch])
        return report

    def _parse_files(self, kb: str, folder: Path, todo: list[tuple[str, str, os.stat_result]],
                     known: dict[str, tuple[Any, ...]]
                     ) -> tuple[list[tuple[Entry, bytes, os.stat_result, bool, bool]], list[str], list[str], list[str]]:
        """Read and parse files (no database access): the entries, an error line per skipped file, a warning
        line per file indexed despite a problem, and the ids whose files were deleted since the walk (skipped
        without a word: they are simply gone)."""
        parsed: list[tuple[Entry, bytes, os.stat_result, bool, bool]] = []
        errors: list[str] = []
        warnings: list[str] = []
        vanished: list[str] = []
        for entry_id, rel, st in todo:
            try:
                data = (folder / rel).read_bytes()
                entry, stated = self._entry_from_file(kb, entry_id, rel, data, st, warnings=warnings)
            except FileNotFoundError:
                vanished.append(entry_id)
                continue
            except (OSError, UnicodeDecodeError, ValidationError) as exc:
                errors.append(f"{rel}: skipped, {exc}")
                continue
            old = known.get(entry_id)
            same = old is not None and old[2] == files.content_hash(data)
            parsed.append((entry, data, st, same, stated))
        return parsed, errors, warnings, vanished

    def _write_parsed(self, kb: str, parsed: list[tuple[Entry, bytes, os.stat_result, bool, bool]],
                      known: dict[str, tuple[Any, ...]], force: bool, report: IndexReport,
                      renames: dict[str, str] | None = None) -> None:
        """Write parsed entries in one transaction; unchanged ones only get their file stamps. A new file with
        the content of a vanished one (renames: file hash -> old id) takes over its row: a move."""
        with self.db.write() as conn:
            link_batch: list[Any] = []  # links are resolved once for the batch: they may name each other
            for entry, data, st, same, stated in parsed:
                if same and not force:
                    conn.execute("UPDATE entries SET file_mtime_ns = ?, file_size = ? WHERE kb = ? AND id = ?",
                                 (st.st_mtime_ns, st.st_size, kb, entry.id))
                    report.unchanged += 1
                    continue
                is_new = entry.id not in known
                old_id = renames.pop(files.content_hash(data), None) if is_new and renames else None
                if old_id is not None:
                    self._move_row(conn, kb, old_id, entry.id, entry.path)
                    report.moved_from.add(old_id)
                    self._put_row(conn, entry, data, st, None, created_stated=stated, link_batch=link_batch)
                    continue
                rowid = self._put_row(conn, entry, data, st, "entry_created" if is_new else "entry_updated",
                                      created_stated=stated, link_batch=link_batch)
                report.rowids.append(rowid)
                if is_new:
                    report.added += 1
                else:
                    report.updated += 1
            links.index_entries(conn, kb, link_batch)
        report.queued = len(report.rowids)

    def _move_row(self, conn: Any, kb: str, old_id: str, new_id: str, path: str) -> None:
        """Give an entry row a new id and path, keeping its rowid (its vectors and queue row); log the move."""
        conn.execute("UPDATE entries SET id = ?, path = ? WHERE kb = ? AND id = ?", (new_id, path, kb, old_id))
        events.append(conn, "entry_moved", kb=kb, entry_id=new_id, old_id=old_id, now=time.time())

    def _entry_from_file(self, kb: str, entry_id: str, name: str, data: bytes, st: os.stat_result,
                         warnings: list[str] | None = None) -> tuple[Entry, bool]:
        """The entry a file's content gives (rules in file_fields) and whether the file states its created;
        broken YAML adds a line to warnings."""
        fields = file_fields.read_fields(data, name, st)
        if fields.problem is not None and warnings is not None:
            warnings.append(file_fields.problem_line(name, fields.problem))
        return _entry_of(kb, entry_id, name, fields), _own_created(fields)

    # -- the one write transaction --------------------------------------------

    def _put_row(self, conn: Any, entry: Entry, data: bytes, st: os.stat_result, event: str | None, *,
                 created_stated: bool = True, link_batch: list[Any] | None = None) -> int:
        """Upsert the entries row (FTS follows by trigger), its passages, links and queue row, and an event
        (unless None: the caller appends its own); return the rowid. An existing row keeps its created unless
        created_stated (the file says when it was created). With link_batch, the entry's links are added to it
        for the caller to index (links.index_entries) before its transaction ends."""
        rowid = conn.execute(
            """INSERT INTO entries (kb, id, title, body, type, tags, meta, created, updated, path,
                                    file_hash, file_mtime_ns, file_size)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (kb, id) DO UPDATE SET title = excluded.title, body = excluded.body,
                 type = excluded.type, tags = excluded.tags, meta = excluded.meta,
                 created = CASE WHEN ? THEN excluded.created ELSE entries.created END, updated = excluded.updated, path = excluded.path,
                 file_hash = excluded.file_hash, file_mtime_ns = excluded.file_mtime_ns,
                 file_size = excluded.file_size
               RETURNING rowid""",
            (entry.kb, entry.id, entry.title, entry.body, entry.type,
             json.dumps(entry.tags, ensure_ascii=False), json.dumps(entry.meta, ensure_ascii=False),
             entry.created, entry.updated, entry.path, files.content_hash(data), st.st_mtime_ns, st.st_size,
             # A file that does not say when it was created is dated by its stat, which every save moves
             # (Linux has no birth time): the first date seen stays.
             created_stated),
        ).fetchone()[0]
        passages.write(conn, rowid, entry.body)
        written = (rowid, entry.id, file_links(data, entry.body, entry.id), aliases_of(entry.meta))
        if link_batch is None:
            links.index_entries(conn, entry.kb, [written])
        else:
            link_batch.append(written)
        now = time.time()
        self.hooks.queue_entry(conn, rowid, entry.kb, entry.title, entry.body, now=now)
        if event is not None:
            events.append(conn, event, kb=entry.kb, entry_id=entry.id, now=now)
        return rowid

    def _put_and_plan(self, conn: Any, entry: Entry, data: bytes, st: os.stat_result, event: str,
                      embed: bool) -> tuple[int, bool]:
        """_put_row, then (still in the transaction, while the file flushes) set the entry's embedding status
        and decide whether this process must embed it; return (rowid, embed here)."""
        # Releasing a savepoint makes FTS5 write out its pending terms now, while the file flushes, rather
        # than inside COMMIT after it.
        conn.execute("SAVEPOINT put_row")
        rowid = self._put_row(conn, entry, data, st, event)
        conn.execute("RELEASE put_row")
        entry.embedding_status, entry.embedding_error = queue.states(conn, [rowid]).get(rowid, (None, None))
        embed_here = embed and entry.embedding_status == "pending" and self.hooks.must_embed_here(conn)
        return rowid, embed_here

    def _finish(self, entry: Entry, rowid: int, embed: bool, embed_here: bool) -> Entry:
        """After the commit: hand the entry to the embedding pipeline; return it as indexed."""
        if embed and self.hooks.after_write([rowid], embed_here):
            return self.get_entry(entry.kb, entry.id)  # embedded just now: its status moved on
        return entry

    def _render(self, entry: Entry) -> bytes:
        return files.render_markdown(_frontmatter(entry), entry.body).encode("utf-8")

    @contextmanager
    def _file_errors(self, kb: str) -> Iterator[None]:
        """Turn an OSError from the KB's files into a PyriteError saying what happened and what to do."""
        try:
            yield
        except OSError as exc:
            raise file_error(exc, kb, Path(self.get_kb(kb).path)) from None

    def _check_size(self, body: str) -> str:
        """body, if its UTF-8 form fits the body limit every front end shares (setting max_body_bytes)."""
        limit = self.settings.max_body_bytes
        if len(body) * 4 > limit and len(body.encode("utf-8")) > limit:
            raise ValidationError(f"the body is over {limit} bytes (setting max_body_bytes, env PYRITE_MAX_BODY)")
        return body

    def _folder(self, kb: str) -> Path:
        """The KB's folder, read now (inside a write's transaction: as that sees it) and remembered."""
        try:
            folder = self._folders[kb] = Path(self.get_kb(kb).path)
        except NotFoundError:
            self._folders.pop(kb, None)
            raise
        return folder

    def _delete_rows(self, conn: Any, kb: str, entry_ids: Sequence[str]) -> None:
        now = time.time()
        for entry_id in entry_ids:
            row = conn.execute("SELECT rowid FROM entries WHERE kb = ? AND id = ?", (kb, entry_id)).fetchone()
            if row is None:
                continue
            passages.delete(conn, [row[0]])
            links.forget_entry(conn, row[0])
            self.hooks.forget(conn, [row[0]])
            conn.execute("DELETE FROM entries WHERE rowid = ?", (row[0],))
            events.append(conn, "entry_deleted", kb=kb, entry_id=entry_id, now=now)
