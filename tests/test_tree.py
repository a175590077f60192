"""Issue 13 points 1, 2, 3, 7: a KB is a folder tree, ids are paths, new files are named as people name them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.errors import ConflictError, ValidationError
from pyrite.server.app import create_app
from pyrite.services.kb_service import KBService
from pyrite.storage import migrations
from pyrite.storage.db import Database
from pyrite.storage.tree import Walk, walk
from tests.conftest import pyrite_cmd
from tests.vault import make_vault

LOOPBACK = "http://127.0.0.1"


@pytest.fixture
def title_home(pyrite_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with the real default: new KBs name files after titles."""
    monkeypatch.delenv("PYRITE_KB_NAMES")
    return pyrite_home


@pytest.fixture
def vault_core(title_home: Path, tmp_path: Path) -> Iterator[tuple[Pyrite, Path, dict[str, Any]]]:
    """A core with KB 'vault' registered on the fixture vault (not yet indexed)."""
    root = tmp_path / "vault"
    info = make_vault(root)
    core = Pyrite(load_settings())
    core.kbs.create_kb("vault", str(root))
    yield core, root, info
    core.close()


def ids(core: Pyrite, kb: str = "vault") -> dict[str, str]:
    return {r[0]: r[1] for r in core.db.query("SELECT id, path FROM entries WHERE kb = ?", (kb,))}


# -- 1. the folder tree ----------------------------------------------------------------------------


def test_build_indexes_every_note_of_the_vault_and_nothing_else(vault_core: Any) -> None:
    core, root, info = vault_core
    report = core.kbs.build("vault")
    found = ids(core)
    assert found == info["entries"]
    assert report.added == len(info["entries"])
    for rel in info["skipped"]:
        assert rel[:-3] not in found
    # Only the unreadable file and the broken YAML are reported: no word about attachments or hidden folders.
    joined = "\n".join(report.errors + report.warnings)
    assert len(report.errors) == 1 and len(report.warnings) == 1, (report.errors, report.warnings)
    assert report.errors[0].startswith("Windows/Latin-1 note.md: skipped")
    assert report.warnings[0].startswith("Broken YAML.md: line 2")
    for rel in info["attachments"] + [".obsidian", "node_modules", ".trash"]:
        assert rel not in joined
    crlf = core.kbs.get_entry("vault", info["crlf"])
    assert crlf.title == "Written on Windows" and crlf.tags == ["crlf"]
    assert core.kbs.get_entry("vault", info["bom"]).title == "Starts with a BOM"
    assert core.kbs.get_entry("vault", "Plugins/Core plugins").title == "Core plugins"
    assert core.kbs.get_entry("vault", "Русский/Заметка").title == "Заметка"  # the file name, not the path
    a, b = (core.kbs.get_entry("vault", i) for i in info["ambiguous"])
    assert a.path == "Projects/Ideas.md" and b.path == "Archive/Ideas.md"
    hits = core.search.search("東京タワー", mode="keyword", kb="vault")["results"]
    assert [(h["id"], h["path"]) for h in hits] == [("日本語/東京タワー", "日本語/東京タワー.md")]
    # A sync right after finds nothing to do.
    again = core.kbs.sync("vault")
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, len(info["entries"]))


def test_ignore_files_nest_and_negate(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    (root / "drafts" / "deep").mkdir(parents=True)
    (root / ".gitignore").write_text("drafts/*.md\n/top-only.md\n")
    (root / "drafts" / ".gitignore").write_text("!keep.md\n")
    for rel in ["drafts/a.md", "drafts/keep.md", "drafts/deep/b.md", "top-only.md", "x/top-only.md"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("# x\n")
    assert sorted(f.id for f in walk(root)) == ["drafts/deep/b", "drafts/keep", "x/top-only"]


def test_symlinks_never_lead_out_or_loop(tmp_path: Path) -> None:
    root, outside = tmp_path / "kb", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.md").write_text("# secret\n")
    (root / "real" / "note.md").write_text("# note\n")
    os.symlink(root, root / "real" / "loop")  # a folder link back up: never entered
    os.symlink(outside, root / "out")  # a folder link out of the KB
    os.symlink(outside / "secret.md", root / "leak.md")  # a file link out of the KB
    os.symlink(root / "real" / "note.md", root / "alias.md")  # a file link inside: an entry
    os.symlink(root / "nowhere.md", root / "dangling.md")
    os.symlink(root / "real", root / "folder-link.md")  # a folder that looks like a note
    report = Walk()
    found = {f.id: f.path for f in walk(root, report)}
    assert found == {"alias": "alias.md", "real/note": "real/note.md"}
    assert report.problems == []


def test_a_folder_named_like_a_note_is_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    (root / "x.md").mkdir(parents=True)
    (root / "x.md" / "inner.md").write_text("# inner\n")
    (root / "x.md" / "pic.png").write_bytes(b"\x89PNG")
    assert [f.id for f in walk(root)] == ["x.md/inner"]


def test_names_that_cannot_be_ids_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    (root / "trailing dot.").mkdir(parents=True)
    (root / "trailing dot." / "n.md").write_text("x")
    (root / "ends with space .md").write_text("x")
    (root / "ok.md").write_text("x")
    report = Walk()
    assert [f.id for f in walk(root, report)] == ["ok"]
    assert len(report.problems) == 2 and all("skipped" in p for p in report.problems)


def test_ids_differing_only_in_case_are_both_indexed(core: Pyrite) -> None:
    folder = Path(core.kbs.get_kb("notes").path)
    (folder / "Readme.md").write_text("# upper\n")
    try:
        (folder / "readme.md").write_text("# lower\n")
    except OSError:
        pytest.skip("case-insensitive file system")
    if len(os.listdir(folder)) < 2:
        pytest.skip("case-insensitive file system")
    core.kbs.build("notes")
    assert core.kbs.get_entry("notes", "Readme").title == "upper"
    assert core.kbs.get_entry("notes", "readme").title == "lower"


def test_a_file_deleted_between_scan_and_read_is_skipped_quietly(core: Pyrite, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    folder = Path(core.kbs.get_kb("notes").path)
    (folder / "stays.md").write_text("# stays\n")
    (folder / "known.md").write_text("# known\n")
    core.kbs.build("notes")
    (folder / "known.md").write_text("# known, edited\n")
    (folder / "new.md").write_text("# new\n")
    real = KBService._parse_files

    def delete_first(self: KBService, kb: str, root: Path, todo: Any, known: Any) -> Any:
        for _entry_id, rel, _st in todo:
            if rel != "stays.md":
                (root / rel).unlink()  # as an editor or `git checkout` would, between the walk and the read
        return real(self, kb, root, todo, known)

    monkeypatch.setattr(KBService, "_parse_files", delete_first)
    report = core.kbs.build("notes")
    assert report.errors == []
    assert set(ids(core, "notes")) == {"stays"} and report.removed == 1


# -- 2. ids are paths, through every front end --------------------------------------------------------


AWKWARD = ["Plugins/Core plugins", "Q&A #1", "what? why", "50% off", "🎉 party/Ünïcödé 東京", "a+b=c", "tab's"]


def test_rest_takes_path_ids_percent_encoded(title_home: Path, tmp_path: Path) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    for entry_id in AWKWARD:
        (root / f"{entry_id}.md").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{entry_id}.md").write_text(f"# {entry_id}\n\nbody\n", encoding="utf-8")
    with TestClient(create_app(load_settings(), worker=False), base_url=LOOPBACK) as client:
        made = client.post("/api/kbs", json={"name": "vault", "path": str(root)})
        assert made.status_code == 201 and made.json()["names"] == "title"
        client.app.state.core.kbs.build("vault")
        for entry_id in AWKWARD:
            url = f"/api/entries/vault/{quote(entry_id, safe='')}"  # '/' as %2F, ' ' %20, '#' %23, '?' %3F
            got = client.get(url)
            assert got.status_code == 200, (entry_id, got.text)
            assert got.json()["id"] == entry_id and got.json()["path"] == f"{entry_id}.md"
            assert client.get(f"/api/entries/vault/{quote(entry_id, safe='/')}").json()["id"] == entry_id
            patched = client.patch(url, json={"tags": ["t"]})
            assert patched.status_code == 200 and patched.json()["tags"] == ["t"]
        listed = client.get("/api/entries", params={"kb": "vault"}).json()["entries"]
        assert {e["id"]: e["path"] for e in listed} == {i: f"{i}.md" for i in AWKWARD}
        assert client.get("/api/entries/vault/..%2Fetc").status_code == 400
        assert client.get("/api/entries/vault/a%2F%2Fb").status_code == 400
        gone = client.delete(f"/api/entries/vault/{quote('Plugins/Core plugins', safe='')}")
        assert gone.status_code == 200 and not (root / "Plugins" / "Core plugins.md").exists()
        events = client.app.state.core.db.query("SELECT entry_id, type FROM events WHERE type = 'entry_deleted'")
        assert [tuple(e) for e in events] == [("Plugins/Core plugins", "entry_deleted")]


def test_rest_create_with_folder_and_names(title_home: Path) -> None:
    with TestClient(create_app(load_settings(), worker=False), base_url=LOOPBACK) as client:
        assert client.post("/api/kbs", json={"name": "t"}).status_code == 201
        assert client.post("/api/kbs", json={"name": "s", "names": "slug"}).json()["names"] == "slug"
        bad = client.post("/api/kbs", json={"name": "x", "names": "camel"})
        assert bad.status_code == 400 and "names must be one of title, slug" in bad.json()["error"]
        made = client.post("/api/entries", json={"kb": "t", "title": "Core plugins", "folder": "Plugins/Built in"})
        assert made.status_code == 201 and made.json()["id"] == "Plugins/Built in/Core plugins"
        slug = client.post("/api/entries", json={"kb": "s", "title": "Core plugins", "folder": "Plugins"})
        assert slug.json()["id"] == "Plugins/core-plugins"
        for folder, status, needle in [("../out", 400, "'..'"), ("/abs", 201, ""), (".hidden", 400, "hidden"),
                                       ("plugins", 409, "differs only in case"), ("a\\b", 400, "separator")]:
            r = client.post("/api/entries", json={"kb": "t", "title": "N", "folder": folder})
            assert r.status_code == status, (folder, r.text)
            assert needle in r.text
        kb = Path(client.get("/api/kbs").json()["kbs"][1]["path"])
        assert (kb / "abs" / "N.md").is_file()  # leading and trailing '/' only mark the KB's top


def test_cli_create_folder_and_get_path_id(title_home: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYRITE_KB_NAMES"}
    root = tmp_path / "vault"
    make_vault(root)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(pyrite_cmd(*args), env=env, capture_output=True, text=True, timeout=60)

    made = cli("kb", "create", "vault", "--path", str(root), "--format", "json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["names"] == "title"
    index = json.loads(made.stdout)["index"]
    problems = index["errors"] + index["warnings"]
    assert (len(index["errors"]), len(index["warnings"])) == (1, 1) and not any("screenshot.png" in p or ".obsidian" in p for p in problems)
    created = cli("create", "--kb", "vault", "--title", "Daily: 2024/05/01?", "--folder", "Journal/May",
                  "--format", "json")
    assert created.returncode == 0, created.stderr
    data = json.loads(created.stdout)
    assert data["id"] == "Journal/May/Daily 2024 05 01" and (root / "Journal/May/Daily 2024 05 01.md").is_file()
    got = cli("get", "Plugins/Core plugins", "--kb", "vault", "--format", "json")
    assert got.returncode == 0 and json.loads(got.stdout)["path"] == "Plugins/Core plugins.md"
    bad = cli("create", "--kb", "vault", "--title", "x", "--folder", "../escape")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: invalid folder") and "Traceback" not in bad.stderr
    slug = cli("kb", "create", "slugs", "--names", "slug", "--format", "json")
    assert json.loads(slug.stdout)["names"] == "slug"
    listed = cli("kb", "list")
    assert "title names" in listed.stdout and "slug names" in listed.stdout


# -- 3. creating: names from titles ----------------------------------------------------------------


@pytest.fixture
def tcore(title_home: Path) -> Iterator[Pyrite]:
    core = Pyrite(load_settings())
    core.kbs.create_kb("notes")
    yield core
    core.close()


def test_title_names_are_as_written_and_suffixed_case_insensitively(tcore: Pyrite) -> None:
    kbs = tcore.kbs
    folder = Path(kbs.get_kb("notes").path)
    assert kbs.get_kb("notes").names == "title"
    first = kbs.create_entry("notes", "Core plugins")
    assert first.id == "Core plugins" and (folder / "Core plugins.md").is_file()
    assert kbs.create_entry("notes", "Core plugins").id == "Core plugins-2"
    assert kbs.create_entry("notes", "core PLUGINS").id == "core PLUGINS-3"  # case twins count as taken
    (folder / "Untracked.md").write_text("a file not indexed yet")
    assert kbs.create_entry("notes", "Untracked").id == "Untracked-2"  # never overwritten
    assert kbs.create_entry("notes", "Été").id == "Été"
    assert kbs.create_entry("notes", "ÉTÉ").id == "ÉTÉ-2"  # beyond ASCII: found in the folder
    assert kbs.create_entry("notes", 'a/b: "c" <d> | e?').id == "a b c d e"
    assert kbs.create_entry("notes", "...").id == "Untitled"
    made = kbs.create_entry("notes", "Deep note", folder="One/Two/Three")
    assert made.id == "One/Two/Three/Deep note" and made.path == "One/Two/Three/Deep note.md"
    assert kbs.get_entry("notes", "One/Two/Three/Deep note").title == "Deep note"
    with pytest.raises(ConflictError, match="'one' differs only in case from the existing folder 'One'"):
        kbs.create_entry("notes", "x", folder="one/Two")
    (folder / "afile").write_text("not a folder")
    with pytest.raises(ValidationError, match="not a folder of the KB"):
        kbs.create_entry("notes", "x", folder="afile")
    os.symlink(folder / "One", folder / "linked")
    with pytest.raises(ValidationError, match="symlink"):
        kbs.create_entry("notes", "x", folder="linked")
    for bad in ["..", "a/../b", ".obsidian", "a\x00b"]:
        with pytest.raises(ValidationError, match="invalid folder"):
            kbs.create_entry("notes", "x", folder=bad)
    # What was created is what a sync finds: nothing to add, nothing to drop.
    report = kbs.sync("notes")
    assert (report.added, report.removed) == (1, 0)  # only Untracked.md, written by hand above


def test_slug_names_stay_for_kbs_that_ask(tcore: Pyrite) -> None:
    tcore.kbs.create_kb("slugs", names="slug")
    assert tcore.kbs.create_entry("slugs", "Core plugins", folder="Plugins").id == "Plugins/core-plugins"
    assert tcore.kbs.create_entry("slugs", "CORE plugins", folder="Plugins").id == "Plugins/core-plugins-2"
    with pytest.raises(ValidationError, match="names must be one of"):
        tcore.kbs.create_kb("bad", names="Title")


# -- migration: KBs made by the previous schema keep slug names and their ids --------------------------


def test_migration_keeps_old_kbs_on_slug_names(title_home: Path, tmp_path: Path) -> None:
    db_path = title_home / "index.db"
    title_home.mkdir(parents=True)
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "kubernetes-pods.md").write_text("---\nid: kubernetes-pods\ntitle: Kubernetes pods\n---\n\nbody\n")
    # The previous schema: every migration before this issue's, as the last release applied them.
    previous = [(n, fn) for n, fn in migrations.MIGRATIONS if not n.startswith("m0xx_tree")]
    old = Database(db_path, migrate=False)
    with old.write() as conn:
        conn.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
        for name, fn in previous:
            fn(conn)
            conn.execute("INSERT INTO migrations VALUES (?, 0)", (name,))
        conn.execute("INSERT INTO kbs (name, path, created) VALUES ('old', ?, '2024-01-01T00:00:00Z')", (str(folder),))
    old.close()
    core = Pyrite(load_settings())
    try:
        core.kbs.build("old")
        assert core.kbs.get_kb("old").names == "slug"
        assert core.kbs.get_entry("old", "kubernetes-pods").title == "Kubernetes pods"
        assert core.kbs.create_entry("old", "Kubernetes Pods").id == "kubernetes-pods-2"
        core.kbs.create_kb("new")
        assert core.kbs.get_kb("new").names == "title"
    finally:
        core.close()
    raw = sqlite3.connect(db_path)
    plan = " ".join(str(r) for r in raw.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM entries WHERE kb = 'old' AND id = 'X' COLLATE NOCASE"))
    raw.close()
    assert "entries_id_nocase" in plan


@pytest.mark.slow
def test_mcp_creates_in_a_folder_and_reads_path_ids(title_home: Path) -> None:
    from tests.test_mcp import error_text, run_session, structured

    core = Pyrite(load_settings())
    core.kbs.create_kb("notes")
    core.close()

    async def body(client: Any) -> dict[str, Any]:
        made = structured(await client.call_tool("kb_create", {"kb": "notes", "title": "Core plugins",
                                                                "folder": "Plugins/Built in"}))
        got = structured(await client.call_tool("kb_get", {"kb": "notes", "id": "Plugins/Built in/Core plugins"}))
        bad = error_text(await client.call_tool("kb_create", {"kb": "notes", "title": "x", "folder": "../out"}))
        hits = structured(await client.call_tool("kb_search", {"kb": "notes", "query": "core", "mode": "keyword"}))
        return {"made": made, "got": got, "bad": bad, "hits": hits}

    out = run_session(title_home, body)
    assert out["made"]["id"] == "Plugins/Built in/Core plugins" and out["made"]["path"] == "Plugins/Built in/Core plugins.md"
    assert out["got"]["title"] == "Core plugins"
    assert "invalid folder" in out["bad"] and "'..'" in out["bad"]
    assert [(h["id"], h["path"]) for h in out["hits"]["results"]] == [
        ("Plugins/Built in/Core plugins", "Plugins/Built in/Core plugins.md")]
