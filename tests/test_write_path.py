"""The entry write path: what a write returns, file permissions, races, and failures after the file moved."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Iterator

import pytest

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.errors import NotFoundError
from pyrite.storage import files
from pyrite.storage.db import IntegrityError


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[Any]:
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def test_create_returns_the_entry_as_indexed(core: Pyrite) -> None:
    entry = core.kbs.create_entry("notes", "Returned", "body", tags=["a", "b"],
                                  meta={"pair": (1, 2), "nested": {"k": [True, None]}, "n": 3})
    assert entry == core.kbs.get_entry("notes", entry.id)
    assert entry.meta["pair"] == [1, 2]  # as stored: JSON has no tuples
    assert entry.embedding_status == "done"  # no worker anywhere: embedded before returning


def test_queued_create_and_update_return_the_entry_as_indexed(core: Pyrite) -> None:
    entry = core.kbs.create_entry("notes", "Queued", "body", embed=False)
    assert entry.embedding_status == "pending"
    assert entry == core.kbs.get_entry("notes", entry.id)
    updated = core.kbs.update_entry("notes", entry.id, body="new body", meta={"x": (1,)}, embed=False)
    assert updated == core.kbs.get_entry("notes", entry.id)
    assert updated.body == "new body" and updated.meta == {"x": [1]}


def test_unchanged_update_returns_the_kept_status_and_error(core: Pyrite) -> None:
    entry = core.kbs.create_entry("notes", "Kept", "body", embed=False)
    with core.db.write() as conn:
        conn.execute("UPDATE embed_queue SET error = 'timeout, retrying' WHERE status = 'pending'")
    same = core.kbs.update_entry("notes", entry.id, tags=["t"], embed=False)  # the embedded text is the same
    assert (same.embedding_status, same.embedding_error) == ("pending", "timeout, retrying")
    assert same == core.kbs.get_entry("notes", entry.id)


def test_new_files_follow_the_umask_and_updates_keep_permissions(core: Pyrite, umask: Any) -> None:
    folder = Path(core.kbs.get_kb("notes").path)
    entry = core.kbs.create_entry("notes", "Readable", "body")
    path = folder / entry.path
    assert mode_of(path) == 0o644
    path.chmod(0o640)
    core.kbs.update_entry("notes", entry.id, body="changed")
    assert mode_of(path) == 0o640
    umask(0o077)
    assert mode_of(folder / core.kbs.create_entry("notes", "Private", "body").path) == 0o600


def test_a_name_taken_between_check_and_link_gets_the_next_one(core: Pyrite, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = Path(core.kbs.get_kb("notes").path)
    real = files._link_exclusive
    taken: list[Path] = []

    def intruder_first(tmp: str, path: Path) -> None:
        if not taken:  # another program creates the very name pyrite just found free
            path.write_text("not pyrite's\n")
            taken.append(path)
        real(tmp, path)

    monkeypatch.setattr(files, "_link_exclusive", intruder_first)
    entry = core.kbs.create_entry("notes", "Contested", "mine")
    assert taken == [folder / "contested.md"]
    assert (folder / "contested.md").read_text() == "not pyrite's\n"
    assert entry.id == "contested-2" and "mine" in (folder / "contested-2.md").read_text()
    assert names(folder) == ["contested-2.md", "contested.md"]  # no temp file left behind
    assert [e.id for e in core.kbs.list_entries("notes")] == ["contested-2"]
    taken.clear()  # once more: the race now takes "contested-3", and the next name is "contested-4"
    assert core.kbs.create_entry("notes", "Contested", "again").id == "contested-4"
    assert taken == [folder / "contested-3.md"]


def _fail_commits(core: Pyrite) -> None:
    """Make this thread's next COMMIT fail: a deferred foreign key broken by every entries write."""
    conn = core.db.conn
    conn.executescript(
        "CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TEMP TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
        "CREATE TEMP TRIGGER break_insert AFTER INSERT ON main.entries BEGIN INSERT INTO child VALUES (42); END;"
        "CREATE TEMP TRIGGER break_update AFTER UPDATE ON main.entries BEGIN INSERT INTO child VALUES (42); END;")


def test_a_failed_commit_after_the_link_removes_the_new_file(core: Pyrite) -> None:
    folder = Path(core.kbs.get_kb("notes").path)
    _fail_commits(core)
    with pytest.raises(IntegrityError):
        core.kbs.create_entry("notes", "Doomed", "never indexed")
    assert names(folder) == []
    assert core.db.query("SELECT count(*) FROM entries")[0][0] == 0
    core.db.conn.execute("DROP TRIGGER break_insert")
    assert core.kbs.create_entry("notes", "Fine", "the connection is usable again").id == "fine"


def test_a_failed_commit_after_the_rename_restores_the_old_file(core: Pyrite) -> None:
    folder = Path(core.kbs.get_kb("notes").path)
    entry = core.kbs.create_entry("notes", "Stable", "old body")
    before = (folder / entry.path).read_bytes()
    _fail_commits(core)
    with pytest.raises(IntegrityError):
        core.kbs.update_entry("notes", entry.id, body="new body")
    assert (folder / entry.path).read_bytes() == before
    assert names(folder) == [entry.path]
    assert core.kbs.get_entry("notes", entry.id).body == "old body"


def test_a_kb_moved_by_another_process_is_written_where_it_now_is(core: Pyrite, pyrite_home: Path,
                                                                  tmp_path: Path) -> None:
    old_folder = Path(core.kbs.get_kb("notes").path)
    core.kbs.create_entry("notes", "First", "remembers the folder")
    other = Pyrite(load_settings())  # another process's view of the same home
    try:
        other.kbs.remove_kb("notes")
        other.kbs.create_kb("notes", tmp_path / "moved", create=True)
    finally:
        other.close()
    entry = core.kbs.create_entry("notes", "Second", "goes to the new folder")
    assert names(tmp_path / "moved") == [entry.path]
    assert names(old_folder) == ["first.md"]


def test_a_kb_removed_by_another_process_is_not_found_and_leaves_nothing(core: Pyrite) -> None:
    folder = Path(core.kbs.get_kb("notes").path)
    core.kbs.create_entry("notes", "First", "remembers the folder")
    other = Pyrite(load_settings())
    try:
        other.kbs.remove_kb("notes")
    finally:
        other.close()
    with pytest.raises(NotFoundError):
        core.kbs.create_entry("notes", "Orphan", "no KB any more")
    assert names(folder) == ["first.md"]
