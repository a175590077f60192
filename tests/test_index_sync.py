"""`index build` and `index sync`: hand-written markdown files become index rows and queue rows."""

from __future__ import annotations

import os
import pathlib
from pathlib import Path
from typing import Any

import pytest

from pyrite.core import Pyrite


def folder_of(core: Pyrite, kb: str = "notes") -> Path:
    return Path(core.kbs.get_kb(kb).path)


def rows(core: Pyrite, kb: str = "notes") -> dict[str, Any]:
    return {r["id"]: r for r in core.db.query(
        "SELECT id, title, body, type, tags, meta, file_hash, file_mtime_ns, file_size, path FROM entries "
        "WHERE kb = ?",
        (kb,))}


def queue_rows(core: Pyrite, kb: str = "notes") -> dict[str, str]:
    return {r[0]: r[1] for r in core.db.query(
        "SELECT e.id, q.status FROM embed_queue q JOIN entries e ON e.rowid = q.entry_rowid WHERE q.kb = ?", (kb,))}


def write(folder: Path, name: str, text: str, *, mtime_ns: int | None = None) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


@pytest.fixture
def read_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the name of every file read through Path.read_bytes."""
    calls: list[str] = []
    original = pathlib.Path.read_bytes

    def counting(self: Path) -> bytes:
        calls.append(self.name)
        return original(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", counting)
    return calls


# -- build ----------------------------------------------------------------------------------------


def test_build_indexes_hand_written_files(core: Pyrite) -> None:
    folder = folder_of(core)
    write(folder, "with-front.md", "---\ntitle: With frontmatter\ntags: [a, b]\ntype: howto\nsource: web\n---\n\n"
                                   "Body with frontmatter.\n")
    write(folder, "heading-only.md", "# Title from heading\n\nBody without frontmatter.\n")
    write(folder, "plain-file.md", "no heading, no frontmatter\n")
    write(folder, "front-no-title.md", "---\ntags: x, y\n---\n\n# Heading wins\n\ntext\n")
    write(folder, "empty.md", "")
    write(folder, "日本語.md", "# 日本語のタイトル\n\n本文\n")
    (folder / "notes.txt").write_text("not markdown")
    (folder / ".hidden.md").write_text("# hidden")
    (folder / "sub").mkdir()
    write(folder / "sub", "nested.md", "# nested files are entries too (issue 13)\n")

    report = core.kbs.build("notes")
    assert report.errors == []
    assert report.added == 7 and report.updated == 0 and report.removed == 0
    r = rows(core)
    assert set(r) == {"with-front", "heading-only", "plain-file", "front-no-title", "empty", "日本語", "sub/nested"}
    assert r["sub/nested"]["path"] == "sub/nested.md"
    assert r["with-front"]["title"] == "With frontmatter"
    assert r["with-front"]["body"] == "Body with frontmatter.\n"
    assert r["with-front"]["type"] == "howto"
    assert r["with-front"]["tags"] == '["a", "b"]'
    assert r["with-front"]["meta"] == '{"source": "web"}'
    assert r["heading-only"]["title"] == "Title from heading"
    assert r["heading-only"]["body"] == "# Title from heading\n\nBody without frontmatter.\n"
    assert r["plain-file"]["title"] == "plain-file"
    assert r["front-no-title"]["title"] == "Heading wins"
    assert r["front-no-title"]["tags"] == '["x", "y"]'
    assert r["empty"]["title"] == "empty" and r["empty"]["body"] == ""
    assert r["日本語"]["title"] == "日本語のタイトル"
    entry = core.kbs.get_entry("notes", "with-front")
    assert entry.meta == {"source": "web"} and entry.tags == ["a", "b"]
    # searchable by keyword right after the build
    hits = core.search.search("frontmatter", mode="keyword", kb="notes")["results"]
    assert {h["id"] for h in hits} == {"with-front", "heading-only", "plain-file"}


def test_build_reports_and_skips_bad_files(core: Pyrite) -> None:
    folder = folder_of(core)
    write(folder, "good.md", "# Good\n")
    write(folder, "bad name.md", "# space in the name\n")
    write(folder, "-dash-first.md", "# dash\n")
    write(folder, "a..b.md", "# dots\n")
    write(folder, "bad-yaml.md", "---\ntitle: [unclosed\n---\n\nbody\n")
    write(folder, "list-front.md", "---\n- not\n- a mapping\n---\n")
    (folder / "latin1.md").write_bytes("---\ntitle: caf\xe9\n---\n".encode("latin-1"))
    (folder / "\udcff.md".encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")).write_bytes(b"# x")

    report = core.kbs.build("notes")
    # Since issue 13 ids are file names as people write them (spaces, a leading dash and '..' inside a name
    # are fine), and frontmatter that is not valid YAML is indexed by its body; only the undecodable name
    # and the file that is not UTF-8 are skipped.
    assert report.added == 6
    assert set(rows(core)) == {"good", "bad name", "-dash-first", "a..b", "bad-yaml", "list-front"}
    # Skipped files are errors; files indexed despite a problem are warnings, counted apart.
    assert len(report.errors) == 2 and len(report.warnings) == 2
    assert "'\\udcff.md'" in report.errors[0] or "'\\udcff.md'" in report.errors[1]
    assert any(e.startswith("latin1.md: skipped, it is not UTF-8 text") for e in report.errors)
    assert all("skipped" in e for e in report.errors)
    assert sorted(w.split(":")[0] for w in report.warnings) == ["bad-yaml.md", "list-front.md"]
    assert all("indexed by its body" in w for w in report.warnings)
    assert any("YAML" in w for w in report.warnings if w.startswith("bad-yaml.md"))
    # a second build reports them again and adds nothing
    again = core.kbs.build("notes")
    assert (len(again.errors), len(again.warnings), again.unchanged, again.added) == (2, 2, 6, 0)


def test_build_writes_queue_rows(core: Pyrite) -> None:
    folder = folder_of(core)
    for i in range(25):
        write(folder, f"n{i}.md", f"# Note {i}\n\nword{i}\n")
    report = core.kbs.build("notes")
    assert report.added == 25 and report.queued == 25
    q = queue_rows(core)
    assert set(q) == {f"n{i}" for i in range(25)}
    assert set(q.values()) == {"pending"}
    assert core.embedding.outstanding("notes") == 25
    # embedding them empties the queue and creates vectors
    assert core.embedding.wait_for("notes", timeout=30) == 0
    assert set(queue_rows(core).values()) == {"done"}
    assert core.db.query("SELECT count(DISTINCT entry_rowid) FROM chunks")[0][0] == 25
    # an unchanged rebuild queues nothing new
    again = core.kbs.build("notes")
    assert again.added == 0 and again.unchanged == 25 and again.queued == 0
    assert set(queue_rows(core).values()) == {"done"}


def test_build_force_rewrites_rows(core: Pyrite) -> None:
    write(folder_of(core), "a.md", "# A\n")
    core.kbs.build("notes")
    report = core.kbs.build("notes", force=True)
    assert report.updated == 1 and report.added == 0


def test_kb_with_existing_files_is_indexed_by_build(core: Pyrite, tmp_path: Path) -> None:
    existing = tmp_path / "vault"
    existing.mkdir()
    write(existing, "one.md", "# One\n")
    write(existing, "two.md", "---\ntitle: Two\n---\n")
    core.kbs.create_kb("vault", existing)
    assert core.kbs.build("vault").added == 2
    assert [e.title for e in sorted(core.kbs.list_entries("vault"), key=lambda e: e.id)] == ["One", "Two"]
    assert (existing / "one.md").read_text() == "# One\n"  # files are never rewritten by a build


# -- sync -----------------------------------------------------------------------------------------


def test_sync_picks_up_added_edited_and_removed_files(core: Pyrite) -> None:
    folder = folder_of(core)
    write(folder, "keep.md", "# Keep\n\nsame\n")
    edited = write(folder, "edit.md", "# Edit\n\nold text\n")
    write(folder, "remove.md", "# Remove\n\nbye\n")
    assert core.kbs.build("notes").added == 3
    assert core.embedding.wait_for("notes", timeout=30) == 0
    removed_rowid = core.db.query("SELECT rowid FROM entries WHERE id = 'remove'")[0][0]

    write(folder, "new.md", "---\ntitle: Brand new\n---\n\nfresh words\n")
    edited.write_text("# Edited title\n\nnew text that is longer\n", encoding="utf-8")
    bump_mtime(edited)
    (folder / "remove.md").unlink()

    report = core.kbs.sync("notes")
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 1)
    assert report.errors == []
    r = rows(core)
    assert set(r) == {"keep", "edit", "new"}
    assert r["edit"]["title"] == "Edited title"
    assert r["edit"]["body"] == "# Edited title\n\nnew text that is longer\n"
    assert r["new"]["title"] == "Brand new"
    # queue: the new and the edited entry wait for embedding, the removed one left no trace
    q = queue_rows(core)
    assert q == {"keep": "done", "edit": "pending", "new": "pending"}
    assert core.db.query("SELECT count(*) FROM embed_queue WHERE entry_rowid = ?", (removed_rowid,))[0][0] == 0
    assert core.db.query("SELECT count(*) FROM chunks WHERE entry_rowid = ?", (removed_rowid,))[0][0] == 0
    assert core.search.search("bye", mode="keyword")["results"] == []
    assert [h["id"] for h in core.search.search("longer", mode="keyword")["results"]] == ["edit"]
    # nothing left to do
    again = core.kbs.sync("notes")
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 3)


def test_sync_detects_same_size_edit(core: Pyrite) -> None:
    path = write(folder_of(core), "same.md", "# Title\n\nalpha\n")
    core.kbs.build("notes")
    path.write_text("# Title\n\nomega\n", encoding="utf-8")  # same size
    bump_mtime(path)
    report = core.kbs.sync("notes")
    assert report.updated == 1
    assert rows(core)["same"]["body"] == "# Title\n\nomega\n"


def test_sync_touch_without_change_is_unchanged(core: Pyrite) -> None:
    path = write(folder_of(core), "t.md", "# T\n")
    core.kbs.build("notes")
    assert core.embedding.wait_for("notes", timeout=30) == 0
    bump_mtime(path)
    report = core.kbs.sync("notes")
    assert (report.updated, report.unchanged, report.queued) == (0, 1, 0)
    assert queue_rows(core) == {"t": "done"}
    # the new mtime is remembered: the next sync does not read the file again
    assert rows(core)["t"]["file_mtime_ns"] == path.stat().st_mtime_ns


def test_sync_reads_only_changed_files(core: Pyrite, read_counter: list[str]) -> None:
    folder = folder_of(core)
    for i in range(20):
        write(folder, f"f{i}.md", f"# F{i}\n\nbody {i}\n")
    core.kbs.build("notes")
    assert len(read_counter) == 20  # build reads everything

    read_counter.clear()
    report = core.kbs.sync("notes")
    assert read_counter == []
    assert report.unchanged == 20

    changed = folder / "f7.md"
    changed.write_text("# F7\n\nchanged body, different size\n", encoding="utf-8")
    bump_mtime(changed)
    write(folder, "added.md", "# Added\n")
    read_counter.clear()
    report = core.kbs.sync("notes")
    assert sorted(read_counter) == ["added.md", "f7.md"]
    assert (report.added, report.updated, report.unchanged) == (1, 1, 19)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read files with mode 000")
def test_sync_does_not_open_unchanged_unreadable_file(core: Pyrite) -> None:
    path = write(folder_of(core), "secret.md", "# Secret\n")
    core.kbs.build("notes")
    st = path.stat()
    path.chmod(0)
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        report = core.kbs.sync("notes")
        assert report.errors == [] and report.unchanged == 1
    finally:
        path.chmod(0o644)


def test_sync_reports_a_file_that_became_invalid(core: Pyrite) -> None:
    path = write(folder_of(core), "ok.md", "---\ntitle: Fine\n---\n\nbody\n")
    core.kbs.build("notes")
    path.write_text("---\ntitle: [broken\n---\n\nbody\n", encoding="utf-8")
    bump_mtime(path)
    report = core.kbs.sync("notes")
    assert report.errors == [] and len(report.warnings) == 1
    assert report.warnings[0].startswith("ok.md: line 2: the frontmatter is not valid YAML")
    # Issue 13: indexed by its body (title from the file name) rather than skipped
    assert rows(core)["ok"]["title"] == "ok" and rows(core)["ok"]["body"] == "body\n"


def test_entry_created_by_pyrite_is_unchanged_for_sync(core: Pyrite, read_counter: list[str]) -> None:
    core.kbs.create_entry("notes", "Made by pyrite", "body")
    read_counter.clear()
    report = core.kbs.sync("notes")
    assert report.unchanged == 1 and report.added == 0 and report.updated == 0
    assert read_counter == []


def test_sync_after_pyrite_delete_and_outside_delete(core: Pyrite) -> None:
    a = core.kbs.create_entry("notes", "Alpha", "a")
    b = core.kbs.create_entry("notes", "Beta", "b")
    core.kbs.delete_entry("notes", a.id)
    (folder_of(core) / b.path).unlink()
    report = core.kbs.sync("notes")
    assert report.removed == 1
    assert rows(core) == {}
    assert core.db.query("SELECT count(*) FROM embed_queue")[0][0] == 0
    assert core.db.query("SELECT count(*) FROM chunks")[0][0] == 0


def test_sync_in_batches(core: Pyrite) -> None:
    folder = folder_of(core)
    for i in range(23):
        write(folder, f"b{i}.md", f"# B{i}\n")
    report = core.kbs.sync("notes", batch=5)
    assert report.added == 23 and report.queued == 23
    for i in range(12):
        (folder / f"b{i}.md").unlink()
    report = core.kbs.sync("notes", batch=5)
    assert report.removed == 12
    assert len(rows(core)) == 11
