"""KBService through the core: real markdown files on disk plus the SQLite index."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.errors import ConflictError, NotFoundError, PyriteError, ValidationError
from pyrite.storage.files import parse_markdown

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
# Issue 13: no `id` key any more, the file's path is the id.
CORE_KEYS = ["title", "type", "tags", "created", "updated"]


def folder_of(core: Pyrite, kb: str = "notes") -> Path:
    return Path(core.kbs.get_kb(kb).path)


def read_file(core: Pyrite, entry_id: str, kb: str = "notes") -> tuple[dict[str, Any], str]:
    data = (folder_of(core, kb) / f"{entry_id}.md").read_bytes()
    return parse_markdown(data.decode("utf-8"))


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def rowid_of(core: Pyrite, entry_id: str, kb: str = "notes") -> int:
    return core.db.query("SELECT rowid FROM entries WHERE kb = ? AND id = ?", (kb, entry_id))[0][0]


def count(core: Pyrite, sql: str, params: tuple[Any, ...] = ()) -> int:
    return core.db.query(sql, params)[0][0]


# -- create / get / list ------------------------------------------------------------------------------


def test_create_writes_markdown_file_with_frontmatter(core: Pyrite) -> None:
    entry = core.kbs.create_entry("notes", "Kubernetes pods", "Pods are *small*.\n",
                                  tags=["k8s", "infra"], type="howto")
    assert entry.id == "kubernetes-pods"
    path = folder_of(core) / "kubernetes-pods.md"
    assert path.is_file()
    assert entry.path == "kubernetes-pods.md"
    front, body = read_file(core, entry.id)
    assert list(front) == CORE_KEYS
    assert "id" not in front
    assert front["title"] == "Kubernetes pods"
    assert front["type"] == "howto"
    assert front["tags"] == ["k8s", "infra"]
    assert ISO_Z.match(front["created"]) and ISO_Z.match(front["updated"])
    assert front["created"] == entry.created and front["updated"] == entry.updated
    assert body == "Pods are *small*.\n"
    # the raw file really starts with a YAML frontmatter block
    assert path.read_text(encoding="utf-8").startswith("---\ntitle: Kubernetes pods\n")


def test_create_then_get_and_list(core: Pyrite) -> None:
    a = core.kbs.create_entry("notes", "First", "one")
    b = core.kbs.create_entry("notes", "Second", "two", tags=["x"])
    got = core.kbs.get_entry("notes", b.id)
    assert (got.id, got.kb, got.title, got.body, got.tags, got.type) == ("second", "notes", "Second", "two", ["x"], "note")
    assert got.embedding_status == "done"
    ids = {e.id for e in core.kbs.list_entries("notes")}
    assert ids == {a.id, b.id}
    assert len(core.kbs.list_entries("notes", limit=1)) == 1
    assert [k.entries for k in core.kbs.list_kbs() if k.name == "notes"] == [2]


def test_create_strips_title_and_dedupes_tags(core: Pyrite) -> None:
    e = core.kbs.create_entry("notes", "  Padded  ", "", tags=[" a ", "a", "b"])
    assert e.title == "Padded"
    assert e.tags == ["a", "b"]


def test_get_unknown(core: Pyrite) -> None:
    with pytest.raises(NotFoundError):
        core.kbs.get_entry("notes", "nope")
    with pytest.raises(NotFoundError):
        core.kbs.get_entry("nokb", "nope")
    with pytest.raises(ValidationError):
        core.kbs.get_entry("notes", "../etc/passwd")
    with pytest.raises(ValidationError):
        core.kbs.get_entry("../x", "a")


# -- frontmatter keys survive --------------------------------------------------------------------------


def test_meta_survives_updates_verbatim(core: Pyrite) -> None:
    meta = {"source": "https://example.com/a?b=c", "rating": 5, "ratio": 0.25, "draft": False,
            "nested": {"a": [1, "two", None]}, "when": "2024-01-02", "empty": None}
    e = core.kbs.create_entry("notes", "With meta", "body", meta=meta)
    front, _ = read_file(core, e.id)
    assert {k: front[k] for k in meta} == meta
    assert e.meta == meta
    core.kbs.update_entry("notes", e.id, body="new body")
    core.kbs.update_entry("notes", e.id, title="Renamed", tags=["t"])
    front, body = read_file(core, e.id)
    assert body == "new body"
    assert {k: front[k] for k in meta} == meta
    assert core.kbs.get_entry("notes", e.id).meta == meta


def test_meta_update_merges_and_none_drops(core: Pyrite) -> None:
    e = core.kbs.create_entry("notes", "Merge", "b", meta={"keep": 1, "drop": 2})
    core.kbs.update_entry("notes", e.id, meta={"drop": None, "add": "x"})
    front, _ = read_file(core, e.id)
    assert front["keep"] == 1 and front["add"] == "x" and "drop" not in front
    assert core.kbs.get_entry("notes", e.id).meta == {"keep": 1, "add": "x"}


def test_hand_added_frontmatter_keys_survive_update(core: Pyrite) -> None:
    e = core.kbs.create_entry("notes", "Hand edited", "original body")
    path = folder_of(core) / f"{e.id}.md"
    text = path.read_text(encoding="utf-8")
    extra = ("due: 2024-05-01\n"
             "at: 2024-05-01T10:00:00Z\n"
             "priority: high\n"
             "score: 7\n"
             "aliases:\n  - hand\n  - edit\n"
             "links: {home: 'https://x.org', n: 2}\n"
             "note: \"quoted: with colon\"\n")
    text = text.replace("\n---\n", "\n" + extra + "---\n", 1)
    path.write_text(text, encoding="utf-8")
    expected = {"due": "2024-05-01", "at": "2024-05-01T10:00:00Z", "priority": "high", "score": 7,
                "aliases": ["hand", "edit"], "links": {"home": "https://x.org", "n": 2},
                "note": "quoted: with colon"}
    assert {k: parse_markdown(text)[0][k] for k in expected} == expected  # the edit itself is valid

    core.kbs.update_entry("notes", e.id, title="Hand edited, renamed")
    front, body = read_file(core, e.id)
    assert {k: front[k] for k in expected} == expected
    assert front["title"] == "Hand edited, renamed"
    assert body == "original body"
    assert core.kbs.get_entry("notes", e.id).meta == expected

    core.kbs.update_entry("notes", e.id, body="second update")
    front, _ = read_file(core, e.id)
    assert {k: front[k] for k in expected} == expected


def test_update_starts_from_the_file_on_disk(core: Pyrite) -> None:
    e = core.kbs.create_entry("notes", "Outside edit", "from pyrite", tags=["old"])
    path = folder_of(core) / f"{e.id}.md"
    front, _ = parse_markdown(path.read_text(encoding="utf-8"))
    front["tags"] = ["edited", "by-hand"]
    front["type"] = "journal"
    path.write_text("---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\nbody edited in vim\n",
                    encoding="utf-8")
    # no sync: the index still has the old tags, but update must start from the file
    updated = core.kbs.update_entry("notes", e.id, title="Outside edit v2")
    front, body = read_file(core, e.id)
    assert front["tags"] == ["edited", "by-hand"]
    assert front["type"] == "journal"
    assert front["title"] == "Outside edit v2"
    assert body == "body edited in vim\n"
    assert front["created"] == e.created
    assert updated.tags == ["edited", "by-hand"] and updated.type == "journal"
    assert updated.body == "body edited in vim\n"
    assert core.search.search("vim", mode="keyword", kb="notes")["results"][0]["id"] == e.id


def test_update_keeps_id_when_title_changes(core: Pyrite) -> None:
    e = core.kbs.create_entry("notes", "Old title", "body")
    before = listing(folder_of(core))
    u = core.kbs.update_entry("notes", e.id, title="A completely new title")
    assert u.id == e.id == "old-title"
    assert u.title == "A completely new title"
    assert listing(folder_of(core)) == before == ["old-title.md"]
    front, _ = read_file(core, e.id)
    assert "id" not in front and front["title"] == "A completely new title"
    assert front["created"] == e.created
    with pytest.raises(NotFoundError):
        core.kbs.get_entry("notes", "a-completely-new-title")


def test_update_fields(core: Pyrite) -> None:
    e = core.kbs.create_entry("notes", "Fields", "b", tags=["a"], type="note")
    u = core.kbs.update_entry("notes", e.id, body="", tags=[], type="todo")
    assert (u.body, u.tags, u.type) == ("", [], "todo")
    front, body = read_file(core, e.id)
    assert (body, front["tags"], front["type"]) == ("", [], "todo")


def test_update_unknown_entry(core: Pyrite) -> None:
    with pytest.raises(NotFoundError):
        core.kbs.update_entry("notes", "missing", title="x")


# -- clashes ------------------------------------------------------------------------------------------


def test_clashing_titles_get_suffixes_and_never_overwrite(core: Pyrite) -> None:
    ids = [core.kbs.create_entry("notes", "Same title", f"body {i}").id for i in range(4)]
    assert ids == ["same-title", "same-title-2", "same-title-3", "same-title-4"]
    for i, entry_id in enumerate(ids):
        front, body = read_file(core, entry_id)
        assert body == f"body {i}"
        assert "id" not in front
    assert listing(folder_of(core)) == sorted(f"{i}.md" for i in ids)
    assert count(core, "SELECT count(*) FROM entries WHERE kb = 'notes'") == 4


def test_clash_with_a_file_not_in_the_index(core: Pyrite) -> None:
    folder = folder_of(core)
    precious = "---\ntitle: Mine\n---\n\nwritten by hand, not indexed\n"
    (folder / "my-note.md").write_text(precious, encoding="utf-8")
    (folder / "my-note-2.md").write_text("plain, not indexed either", encoding="utf-8")
    e = core.kbs.create_entry("notes", "My note", "from pyrite")
    assert e.id == "my-note-3"
    assert (folder / "my-note.md").read_text(encoding="utf-8") == precious
    assert (folder / "my-note-2.md").read_text(encoding="utf-8") == "plain, not indexed either"
    assert read_file(core, "my-note-3")[1] == "from pyrite"
    assert listing(folder) == ["my-note-2.md", "my-note-3.md", "my-note.md"]


# -- any script ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("title, body", [
    ("東京タワーの夜景", "夜の東京タワーはとても美しい。\n改行も。"),
    ("नमस्ते दुनिया", "यह एक परीक्षण है।"),
    ("مرحبا بالعالم", "هذا اختبار"),
    ("Привет, мир", "Тест тела\r\nс CRLF"),
    ("Emoji 🎉 party", "🚀🔥✨ body\n"),
    ("Ünïcödé Straße", "naïve café — “quotes” ‘single’ …"),
    ("🎉🎉", "only emoji in the title"),
])
def test_utf8_round_trip_any_script(core: Pyrite, title: str, body: str) -> None:
    e = core.kbs.create_entry("notes", title, body, tags=["日本", "टैग"], meta={"source": "源"})
    raw = (folder_of(core) / e.path).read_bytes()
    raw.decode("utf-8")  # strictly UTF-8 on disk
    front, on_disk = parse_markdown(raw.decode("utf-8"))
    assert front["title"] == title
    assert front["tags"] == ["日本", "टैग"]
    assert front["source"] == "源"
    assert on_disk == body
    got = core.kbs.get_entry("notes", e.id)
    assert (got.title, got.body, got.tags, got.meta) == (title, body, ["日本", "टैग"], {"source": "源"})
    # and the file, re-read by a forced rebuild, says the same
    core.kbs.build("notes", force=True)
    again = core.kbs.get_entry("notes", e.id)
    assert (again.title, again.body, again.tags, again.meta) == (title, body, ["日本", "टैग"], {"source": "源"})


@pytest.mark.parametrize("title", ["東京タワーの夜景と東京湾の眺め" * 8, "नमस्ते दुनिया " * 12, "\U00020000" * 90],
                         ids=["japanese", "hindi", "cjk-ext-b"])
def test_long_titles_in_any_script_can_be_created(core: Pyrite, title: str) -> None:
    """A long title in a script of multi-byte characters must still give a usable file name."""
    title = title[:300].strip()
    e = core.kbs.create_entry("notes", title, "body")
    assert (folder_of(core) / e.path).is_file()
    assert core.kbs.get_entry("notes", e.id).title == title
    core.kbs.update_entry("notes", e.id, body="updated")
    core.kbs.delete_entry("notes", e.id)
    assert listing(folder_of(core)) == []


def test_title_with_unicode_line_separator_chars_survives_the_file(core: Pyrite) -> None:
    """U+0085 (NEXT LINE) is not refused in titles; the file must then keep it like the index does."""
    title = "before\x85after"
    e = core.kbs.create_entry("notes", title, "body")
    front, _ = read_file(core, e.id)
    assert front["title"] == core.kbs.get_entry("notes", e.id).title == title


# -- delete -------------------------------------------------------------------------------------------


def test_delete_removes_file_row_queue_and_vectors(core: Pyrite) -> None:
    keep = core.kbs.create_entry("notes", "Keep me", "other words")
    e = core.kbs.create_entry("notes", "Delete me", "some words to embed")
    assert e.embedding_status == "done"
    rowid = rowid_of(core, e.id)
    assert count(core, "SELECT count(*) FROM embed_queue WHERE entry_rowid = ?", (rowid,)) == 1
    assert count(core, "SELECT count(*) FROM chunks WHERE entry_rowid = ?", (rowid,)) >= 1
    assert count(core, "SELECT count(*) FROM vec_cells384 WHERE entry_rowid = ?", (rowid,)) >= 1

    core.kbs.delete_entry("notes", e.id)

    assert listing(folder_of(core)) == ["keep-me.md"]  # no file, no '.deleting' leftover
    assert count(core, "SELECT count(*) FROM entries WHERE rowid = ?", (rowid,)) == 0
    assert count(core, "SELECT count(*) FROM embed_queue WHERE entry_rowid = ?", (rowid,)) == 0
    assert count(core, "SELECT count(*) FROM chunks WHERE entry_rowid = ?", (rowid,)) == 0
    assert count(core, "SELECT count(*) FROM vec_cells384 WHERE entry_rowid = ?", (rowid,)) == 0
    assert core.search.search("embed", mode="keyword")["results"] == []
    assert [r["id"] for r in core.search.search("words", mode="semantic")["results"]] == ["keep-me"]
    with pytest.raises(NotFoundError):
        core.kbs.get_entry("notes", e.id)
    # the other entry is untouched
    assert core.kbs.get_entry("notes", keep.id).embedding_status == "done"
    with pytest.raises(NotFoundError):
        core.kbs.delete_entry("notes", e.id)


def test_delete_when_file_already_gone(core: Pyrite) -> None:
    e = core.kbs.create_entry("notes", "Gone", "x")
    (folder_of(core) / e.path).unlink()
    core.kbs.delete_entry("notes", e.id)
    assert count(core, "SELECT count(*) FROM entries") == 0


# -- KBs ----------------------------------------------------------------------------------------------


def test_kb_remove_keeps_files(core: Pyrite) -> None:
    a = core.kbs.create_entry("notes", "Alpha", "alpha body")
    b = core.kbs.create_entry("notes", "Beta", "beta body")
    folder = folder_of(core)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    rowids = [rowid_of(core, a.id), rowid_of(core, b.id)]

    removed = core.kbs.remove_kb("notes")
    assert removed.name == "notes"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert count(core, "SELECT count(*) FROM kbs WHERE name = 'notes'") == 0
    assert count(core, "SELECT count(*) FROM entries WHERE kb = 'notes'") == 0
    assert count(core, "SELECT count(*) FROM embed_queue WHERE kb = 'notes'") == 0
    marks = ",".join("?" * len(rowids))
    assert count(core, f"SELECT count(*) FROM chunks WHERE entry_rowid IN ({marks})", tuple(rowids)) == 0
    assert count(core, f"SELECT count(*) FROM vec_cells384 WHERE entry_rowid IN ({marks})", tuple(rowids)) == 0
    with pytest.raises(NotFoundError):
        core.kbs.get_kb("notes")
    # registering the folder again brings the entries back from the files
    core.kbs.create_kb("notes", folder)
    report = core.kbs.build("notes")
    assert report.added == 2 and report.errors == []
    assert core.kbs.get_entry("notes", "beta").body == "beta body"


def test_create_kb_default_and_custom_folder(core: Pyrite, tmp_path: Path) -> None:
    assert folder_of(core) == core.settings.kbs_dir / "notes"
    custom = tmp_path / "my" / "kb folder"
    kb = core.kbs.create_kb("custom", custom, create=True)
    assert Path(kb.path) == custom.resolve() and custom.is_dir()
    names = [k.name for k in core.kbs.list_kbs()]
    assert names == ["custom", "notes"]


def test_create_kb_twice_is_a_conflict(core: Pyrite, tmp_path: Path) -> None:
    with pytest.raises(ConflictError):
        core.kbs.create_kb("notes")
    other = tmp_path / "other"
    with pytest.raises(ConflictError):
        core.kbs.create_kb("another", folder_of(core))
    with pytest.raises(ConflictError):
        core.kbs.create_kb("notes", other)
    assert not other.exists()


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("name", ["", "..", ".", "../evil", "a/b", "/abs", "a\\b", "a\x00b", "k" * 65,
                                  "white space", "café", "/tmp/pyrite-evil-kb"])
def test_create_kb_refuses_bad_names_and_creates_nothing(core: Pyrite, tmp_path: Path, name: str) -> None:
    home = core.settings.home
    before_home = _tree(home)
    before_tmp = sorted(p.name for p in tmp_path.iterdir())
    kbs_before = core.db.query("SELECT name, path FROM kbs")
    with pytest.raises(ValidationError):
        core.kbs.create_kb(name)
    with pytest.raises(ValidationError):
        core.kbs.create_kb(name, tmp_path / "explicit-folder")
    assert _tree(home) == before_home
    assert sorted(p.name for p in tmp_path.iterdir()) == before_tmp
    assert not Path("/tmp/pyrite-evil-kb").exists()
    assert [tuple(r) for r in core.db.query("SELECT name, path FROM kbs")] == [tuple(r) for r in kbs_before]


def test_create_kb_on_a_file_is_refused(core: Pyrite, tmp_path: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    with pytest.raises(ValidationError):
        core.kbs.create_kb("onfile", f)
    assert count(core, "SELECT count(*) FROM kbs WHERE name = 'onfile'") == 0


# -- validation ---------------------------------------------------------------------------------------


def _nothing_written(core: Pyrite) -> None:
    assert listing(folder_of(core)) == []
    assert count(core, "SELECT count(*) FROM entries") == 0
    assert count(core, "SELECT count(*) FROM embed_queue") == 0


@pytest.mark.parametrize("title", ["", "   ", "\n", "two\nlines", "cr\rhere", "nul\x00", "x" * 501])
def test_bad_titles_are_validation_errors(core: Pyrite, title: str) -> None:
    with pytest.raises(ValidationError):
        core.kbs.create_entry("notes", title, "body")
    _nothing_written(core)


@pytest.mark.parametrize("tags", ["python", "a,b", 5, None, {"a": 1}, [1], [""], ["ok", None], ["two\nlines"]])
def test_non_list_or_bad_tags_are_validation_errors(core: Pyrite, tags: Any) -> None:
    with pytest.raises(ValidationError):
        core.kbs.create_entry("notes", "Tagged", "body", tags=tags)
    _nothing_written(core)


@pytest.mark.parametrize("tags", ["python", 5])
def test_update_with_non_list_tags_is_a_validation_error(core: Pyrite, tags: Any) -> None:
    e = core.kbs.create_entry("notes", "Tagged", "body", tags=["keep"])
    with pytest.raises(ValidationError):
        core.kbs.update_entry("notes", e.id, tags=tags)
    assert read_file(core, e.id)[0]["tags"] == ["keep"]


@pytest.mark.parametrize("key", ["id", "title", "type", "tags", "created", "updated", ""])
def test_reserved_meta_keys_are_validation_errors(core: Pyrite, key: str) -> None:
    with pytest.raises(ValidationError):
        core.kbs.create_entry("notes", "Meta", "body", meta={key: "x"})
    _nothing_written(core)
    e = core.kbs.create_entry("notes", "Meta", "body")
    with pytest.raises(ValidationError):
        core.kbs.update_entry("notes", e.id, meta={key: "x"})
    assert read_file(core, e.id)[0]["title"] == "Meta"


@pytest.mark.parametrize("kwargs", [
    {"meta": "not a mapping"},
    {"meta": {"obj": object()}},
    {"type": "bad type"},
    {"type": "../x"},
    {"type": ""},
])
def test_other_validation_errors(core: Pyrite, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        core.kbs.create_entry("notes", "Other", "body", **kwargs)
    _nothing_written(core)


@pytest.mark.parametrize("body", [None, 5, "nul\x00inside"])
def test_bad_body(core: Pyrite, body: Any) -> None:
    with pytest.raises(ValidationError):
        core.kbs.create_entry("notes", "Body", body)
    _nothing_written(core)


def test_create_in_unknown_kb(core: Pyrite) -> None:
    with pytest.raises(NotFoundError):
        core.kbs.create_entry("missing", "T", "b")
    with pytest.raises(PyriteError):
        core.kbs.create_entry("../notes", "T", "b")


# -- a write does not scan other rows -----------------------------------------------------------------


def _fill(core: Pyrite, n: int) -> None:
    folder = folder_of(core)
    for i in range(n):
        (folder / f"e{i}.md").write_text(f"---\ntitle: Entry {i}\ntags: [t{i % 5}]\n---\n\nword{i} common {i % 7}\n",
                                         encoding="utf-8")
    assert core.kbs.build("notes").added == n
    assert core.embedding.wait_for("notes", timeout=60) == 0


def _trace_create(core: Pyrite, title: str) -> tuple[list[str], int]:
    statements: list[str] = []
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    conn = core.db.conn
    conn.set_trace_callback(statements.append)
    conn.set_progress_handler(step, 1)
    try:
        core.kbs.create_entry("notes", title, "a body of a few words", tags=["x"])
    finally:
        conn.set_trace_callback(None)
        conn.set_progress_handler(None, 0)
    return statements, steps[0]


def _top_level(statements: list[str]) -> list[str]:
    # statements that pyrite runs itself (nested ones from triggers and virtual tables start with '--')
    return [s for s in statements if not s.lstrip().startswith("--")]


def test_a_write_does_not_scan_other_rows(core: Pyrite, tmp_path: Path) -> None:
    """The statements (and the SQLite VM work) of one create_entry are the same for 10 and 1,000 entries."""
    big = Pyrite(load_settings(tmp_path / "big-home"))
    try:
        big.kbs.create_kb("notes")
        _fill(core, 10)
        _fill(big, 1000)
        small_runs = [_trace_create(core, f"Probe entry {i}") for i in range(5)]
        big_runs = [_trace_create(big, f"Probe entry {i}") for i in range(5)]
        for (small, _), (large, _) in zip(small_runs, big_runs):
            assert len(_top_level(small)) == len(_top_level(large)), (_top_level(small), _top_level(large))
        # the virtual machine does about the same work for 10 and 1,000 entries (median of 5 writes)
        small_steps = sorted(n for _, n in small_runs)[2]
        big_steps = sorted(n for _, n in big_runs)[2]
        assert big_steps <= small_steps * 1.5 + 100, (small_steps, big_steps)
        # and no statement of the write reads a whole table
        scans = []
        for sql in _top_level(big_runs[-1][0]):
            if not re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)", sql, re.I):
                continue
            for row in big.db.query("EXPLAIN QUERY PLAN " + sql):
                detail = row[3]
                if re.match(r"SCAN (entries|embed_queue|chunks|events|e|q)\b", detail):
                    scans.append((detail, sql[:80]))
        assert scans == []
    finally:
        big.close()
