"""Links and moves on real files: the links table kept by every write path, `pyrite move` through the CLI,
moves found by `index sync`, the REST route and the MCP tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from starlette.testclient import TestClient

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.models import Entry
from pyrite.server.app import create_app
from tests.conftest import pyrite_cmd

ROOT = Path(__file__).resolve().parent.parent

HUB = (
    "---\n"
    "title: Hub\n"
    "custom: {keep: [1, true, null]}   # a comment\n"
    "---\n"
    "\n"
    "Links: [[Target]], [[target|the alias]], [[Target#Heading]], [[Target^blk]], ![[Target]],\n"
    "[md](Target.md) and [angle](<Target.md#Part>) and [[Other]] and [[Nick name]].\n"
    "`[[Target]]` in code stays, and so does:\n"
    "```\n[[Target]]\n```\n"
    "[[Missing note]] and [[later-note]].\n"
)
TARGET = "---\ntitle: Target note\naliases: [Nick name]\n---\n\n# Target note\n\nThe target's text.\n"
OTHER = "---\ntitle: Other\n---\n\nOther links [[Target|x]] once.\n"


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYRITE_HOME=str(home), PYRITE_EMBED_PROVIDER="hash")
    return subprocess.run(pyrite_cmd(*args), env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture
def vault(tmp_path: Path, pyrite_home: Path) -> Path:
    folder = tmp_path / "vault"
    folder.mkdir()
    (folder / "hub.md").write_bytes(HUB.encode())
    (folder / "Target.md").write_bytes(TARGET.encode())
    (folder / "other.md").write_bytes(OTHER.replace("\n", "\r\n").encode())  # an editor's CRLF file
    (folder / "pic.png").write_bytes(b"\x89PNG")
    core = Pyrite(load_settings())
    try:
        core.kbs.create_kb("v", folder)
        core.kbs.build("v")
    finally:
        core.close()
    assert run(pyrite_home, "index", "embed", "--kb", "v").returncode == 0
    return folder


@pytest.fixture
def vcore(vault: Path) -> Any:
    core = Pyrite(load_settings())
    yield core
    core.close()


def ids(items: list[dict[str, Any]], key: str = "id") -> list[Any]:
    return [x[key] for x in items]


def vector_state(core: Pyrite, entry_id: str) -> tuple[Any, ...]:
    rowid = core.db.query("SELECT rowid FROM entries WHERE kb = 'v' AND id = ?", (entry_id,))[0][0]
    chunks = [tuple(r) for r in core.db.query("SELECT id, seq, model, vector FROM chunks WHERE entry_rowid = ? "
                                              "ORDER BY id", (rowid,))]
    q = tuple(core.db.query("SELECT status, content_hash, attempts, queued_at, updated_at FROM embed_queue "
                            "WHERE entry_rowid = ?", (rowid,))[0])
    return rowid, chunks, q


def test_every_link_form_resolves_and_code_is_ignored(vcore: Pyrite) -> None:
    info = vcore.kbs.entry_links("v", "hub")
    assert ids(info["outgoing"]) == ["Target"] * 7 + ["other", "Target"]
    assert [x["kind"] for x in info["outgoing"][:7]] == ["wiki", "wiki", "wiki", "wiki", "embed", "md", "md"]
    assert info["outgoing"][1]["alias"] == "the alias" and info["outgoing"][2]["fragment"] == "#Heading"
    assert info["outgoing"][3]["fragment"] == "^blk" and info["outgoing"][6]["fragment"] == "#Part"
    assert info["outgoing"][8]["target"] == "Nick name"  # by alias
    assert ids(info["unresolved"], "target") == ["Missing note", "later-note"]
    assert info["unresolved"][0]["line"] == 12  # file lines, frontmatter counted
    back = vcore.kbs.entry_links("v", "Target")["backlinks"]
    assert sorted(set(ids(back, "source"))) == ["hub", "other"]


def test_created_later_resolves_deleted_unresolves(vcore: Pyrite) -> None:
    created = vcore.kbs.create_entry("v", "Later note", "new")
    assert created.id == "later-note"
    assert "later-note" in ids(vcore.kbs.entry_links("v", "hub")["outgoing"])
    assert ids(vcore.kbs.entry_links("v", "later-note")["backlinks"], "source") == ["hub"]
    vcore.kbs.delete_entry("v", "later-note")
    assert "later-note" in ids(vcore.kbs.entry_links("v", "hub")["unresolved"], "target")
    # An update that drops the alias unresolves the link that used it; sync of an edited file re-parses it.
    vcore.kbs.update_entry("v", "Target", meta={"aliases": None})
    assert "Nick name" in ids(vcore.kbs.entry_links("v", "hub")["unresolved"], "target")
    hub = Path(vcore.kbs.get_kb("v").path) / "hub.md"
    hub.write_text(HUB.replace("[[Missing note]]", "plain"), encoding="utf-8")
    os.utime(hub, ns=(1, 10**18))
    vcore.kbs.sync("v")
    assert "Missing note" not in ids(vcore.kbs.entry_links("v", "hub")["unresolved"], "target")


def test_folder_ids_ambiguity_shortest_path_then_next_after_delete(core: Pyrite, tmp_path: Path) -> None:
    # Ids with folders come from another part of issue 13; the links layer takes them as they are.
    def put(entry_id: str, body: str = "", meta: dict[str, Any] | None = None) -> None:
        entry = Entry(kb="notes", id=entry_id, title=entry_id, body=body, meta=meta or {}, path=entry_id + ".md")
        with core.db.write() as conn:
            core.kbs._put_row(conn, entry, body.encode(), os.stat(tmp_path), "entry_created")

    put("Src", "[[Note]] [[Sub/Note]] [[B/Note]] [[Nope/Note]] [[AKA]]")
    put("A/Deep/Sub/Note")
    put("B/Note", meta={"aliases": ["aka"]})
    put("C/note")  # same length as B/Note: alphabetical order decides
    info = core.kbs.entry_links("notes", "Src")
    assert ids(info["outgoing"]) == ["B/Note", "A/Deep/Sub/Note", "B/Note", "B/Note"]
    assert ids(info["unresolved"], "target") == ["Nope/Note"]
    with core.db.write() as conn:
        core.kbs._delete_rows(conn, "notes", ["B/Note"])
    info = core.kbs.entry_links("notes", "Src")
    assert ids(info["outgoing"]) == ["C/note", "A/Deep/Sub/Note"]
    assert ids(info["unresolved"], "target") == ["B/Note", "Nope/Note", "AKA"]


def test_move_through_the_cli_rewrites_links_and_keeps_vectors(vault: Path, pyrite_home: Path) -> None:
    core = Pyrite(load_settings())
    before = vector_state(core, "Target")
    other_before = (vault / "other.md").read_bytes()
    core.close()
    result = run(pyrite_home, "move", "Target", "Renamed", "--kb", "v", "--format", "json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["old_id"] == "Target" and out["entry"]["id"] == "Renamed" and sorted(out["rewritten"]) == ["hub", "other"]
    assert not (vault / "Target.md").exists() and (vault / "Renamed.md").read_bytes() == TARGET.encode()
    expected = (HUB.replace("[[Target", "[[Renamed").replace("[[target|", "[[Renamed|")
                .replace("(Target.md)", "(Renamed.md)").replace("(<Target.md#", "(<Renamed.md#")
                .replace("`[[Renamed]]`", "`[[Target]]`").replace("```\n[[Renamed]]", "```\n[[Target]]"))
    assert (vault / "hub.md").read_bytes() == expected.encode()  # only the link bytes changed
    assert (vault / "other.md").read_bytes() == other_before.replace(b"[[Target|x]]", b"[[Renamed|x]]")
    core = Pyrite(load_settings())
    try:
        after = vector_state(core, "Renamed")
        assert after == before  # same rowid, same chunks and vectors, queue row untouched
        assert ids(core.kbs.entry_links("v", "Renamed")["backlinks"], "source").count("hub") == 8  # the alias link too
        event = core.db.query("SELECT entry_id, old_id FROM events WHERE type = 'entry_moved'")
        assert [tuple(r) for r in event] == [("Renamed", "Target")]
        assert core.kbs.get_entry("v", "hub").embedding_status == "done"  # its text changed: embedded again
    finally:
        core.close()


SRC = (
    "---\ntitle: Source   # kept\n---\n\n"
    "[up](../../hub.md) [sib](<Sibling note.md#Part>) [enc](Sibling%20note.md) [self](src.md#Top)\n"
    "[[./Sibling note|sib]] [[Target]] [root](/other.md) [web](https://example.com/a.md) [out](../../../x.md)\n"
)


def test_move_to_another_folder_rebases_the_files_own_relative_links(vault: Path, vcore: Pyrite) -> None:
    deep = vault / "Notes" / "Deep"
    deep.mkdir(parents=True)
    (deep / "src.md").write_bytes(SRC.encode())
    (deep / "Sibling note.md").write_text("# Sibling\n")
    vcore.kbs.sync("v")
    assert ids(vcore.kbs.entry_links("v", "Notes/Deep/src")["unresolved"], "target") == ["../../../x.md"]
    result = vcore.kbs.move_entry("v", "Notes/Deep/src", "Elsewhere/src2")
    assert result.rewritten == ["Elsewhere/src2"]
    expected = (SRC.replace("(../../hub.md)", "(../hub.md)")
                .replace("(<Sibling note.md#Part>)", "(<../Notes/Deep/Sibling note.md#Part>)")
                .replace("(Sibling%20note.md)", "(../Notes/Deep/Sibling%20note.md)")
                .replace("(src.md#Top)", "(src2.md#Top)")
                .replace("[[./Sibling note|", "[[../Notes/Deep/Sibling note|"))
    assert (vault / "Elsewhere" / "src2.md").read_bytes() == expected.encode()  # only those link bytes
    assert not (deep / "src.md").exists()
    info = vcore.kbs.entry_links("v", "Elsewhere/src2")
    assert ids(info["unresolved"], "target") == ["../../../x.md"]  # still outside the KB, still as written
    assert sorted(ids(info["outgoing"])) == ["Elsewhere/src2", "Notes/Deep/Sibling note", "Notes/Deep/Sibling note",
                                             "Notes/Deep/Sibling note", "Target", "hub", "other"]
    assert vcore.kbs.get_entry("v", "Elsewhere/src2").embedding_status in ("pending", "done")
    report = vcore.kbs.sync("v")  # the index holds the rewritten file as it is on disk
    assert (report.added, report.updated, report.removed) == (0, 0, 0)


def test_move_within_its_folder_leaves_its_relative_links(vault: Path, vcore: Pyrite) -> None:
    (vault / "Notes").mkdir()
    data = "---\ntitle: A\n---\n[up](../hub.md) [[./Target]] [[Target]]\n".encode()  # title: not the name
    (vault / "Notes" / "a.md").write_bytes(data)
    vcore.kbs.sync("v")
    assert vcore.embedding.wait_for("v", timeout=60) == 0
    before = vector_state(vcore, "Notes/a")
    result = vcore.kbs.move_entry("v", "Notes/a", "Notes/b")
    assert result.rewritten == [] and (vault / "Notes" / "b.md").read_bytes() == data
    assert vector_state(vcore, "Notes/b") == before  # nothing changed in its text: vectors and queue row kept



def test_move_rewrites_the_files_links_to_itself_by_name_and_by_path(vault: Path, vcore: Pyrite) -> None:
    (vault / "A").mkdir()
    data = "See [[Note one]], [[note one#Top|me]], [[A/Note one]] and [[Target]].\n"
    (vault / "A" / "Note one.md").write_text(data)
    vcore.kbs.sync("v")
    assert ids(vcore.kbs.entry_links("v", "A/Note one")["outgoing"]).count("A/Note one") == 3
    result = vcore.kbs.move_entry("v", "A/Note one", "B/Renamed")
    assert result.rewritten == ["B/Renamed"]
    assert (vault / "B" / "Renamed.md").read_text() == (
        "See [[Renamed]], [[Renamed#Top|me]], [[B/Renamed]] and [[Target]].\n")
    info = vcore.kbs.entry_links("v", "B/Renamed")
    assert info["unresolved"] == [] and ids(info["outgoing"]).count("B/Renamed") == 3

def test_move_refuses_to_overwrite_and_bad_input(vault: Path, pyrite_home: Path) -> None:
    (vault / "taken.md.bak").write_text("x")
    (vault / ".taken.md").write_text("hidden")
    os.symlink(vault / "hub.md", vault / "linked.md.lnk")
    (vault / "free.md").write_text("not indexed yet")
    before = {p.name: p.read_bytes() for p in vault.iterdir() if p.is_file()}
    for args, words in [(("Target", "free"), "exists already"), (("Target", "hub"), "has an entry"),
                        (("nope", "x"), "no entry"), (("Target", "../x"), "invalid entry id"),
                        (("Target", "Target"), "already")]:
        result = run(pyrite_home, "move", *args, "--kb", "v")
        assert result.returncode == 1 and words in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert {p.name: p.read_bytes() for p in vault.iterdir() if p.is_file()} == before


def test_moved_outside_then_sync_keeps_vectors(vault: Path, pyrite_home: Path) -> None:
    core = Pyrite(load_settings())
    before = vector_state(core, "Target")
    core.close()
    os.rename(vault / "Target.md", vault / "Elsewhere.md")
    result = run(pyrite_home, "index", "sync", "--kb", "v", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["reports"][0]
    assert (report["moved"], report["added"], report["removed"]) == (1, 0, 0)
    core = Pyrite(load_settings())
    try:
        assert vector_state(core, "Elsewhere") == before
        assert "Target" in ids(core.kbs.entry_links("v", "hub")["unresolved"], "target")  # the editor's job
        assert ids(core.kbs.entry_links("v", "hub")["outgoing"]) == ["other", "Elsewhere"]  # via its alias
    finally:
        core.close()


def test_cli_links_backlinks_get_and_index_check(vault: Path, pyrite_home: Path) -> None:
    out = json.loads(run(pyrite_home, "links", "hub", "--kb", "v", "--format", "json").stdout)
    assert set(out) == {"outgoing", "unresolved"} and len(out["outgoing"]) == 9
    back = json.loads(run(pyrite_home, "backlinks", "Target", "--kb", "v", "--format", "json").stdout)
    assert sorted(set(ids(back["backlinks"], "source"))) == ["hub", "other"]
    text = run(pyrite_home, "get", "hub", "--kb", "v").stdout
    assert "link: Target#Heading -> Target" in text and "Missing note (unresolved)" in text
    got = json.loads(run(pyrite_home, "get", "Target", "--kb", "v", "--format", "json").stdout)
    assert got["id"] == "Target" and len(got["links"]["backlinks"]) == 9
    check = run(pyrite_home, "index", "check", "--kb", "v")
    assert check.returncode == 0
    assert check.stdout.splitlines() == ["v/hub.md:12: unresolved link Missing note",
                                         "v/hub.md:12: unresolved link later-note"]
    bad = run(pyrite_home, "links", "nope", "--kb", "v")
    assert bad.returncode == 1 and "no entry 'nope'" in bad.stderr


def test_rest_links_and_move(vault: Path) -> None:
    with TestClient(create_app(load_settings(), worker=False), base_url="http://127.0.0.1") as client:
        r = client.get("/api/links/v/hub")
        assert r.status_code == 200 and set(r.json()) == {"outgoing", "backlinks", "unresolved"}
        assert ids(r.json()["unresolved"], "target") == ["Missing note", "later-note"]
        assert client.get("/api/links/v/nope").status_code == 404
        assert client.post("/api/move/v/Target", json={"to": "hub"}).status_code == 409
        assert client.post("/api/move/v/Target", json={"to": 3}).status_code == 422
        r = client.post("/api/move/v/Target", json={"to": "Moved"})
        assert r.status_code == 200, r.text
        assert r.json()["entry"]["id"] == "Moved" and sorted(r.json()["rewritten"]) == ["hub", "other"]
        assert client.get("/api/entries/v/Moved").status_code == 200
        assert len(client.get("/api/links/v/Moved").json()["backlinks"]) == 9


def test_mcp_get_has_links_and_move(vault: Path, pyrite_home: Path) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "pyrite", "mcp"], cwd=ROOT,
                                   env={"PYRITE_HOME": str(pyrite_home), "PYRITE_EMBED_PROVIDER": "hash"})

    async def main() -> Any:
        with anyio.fail_after(60):
            async with Client(params, read_timeout_seconds=30) as client:
                got = await client.call_tool("kb_get", {"kb": "v", "id": "hub"})
                moved = await client.call_tool("kb_move", {"kb": "v", "id": "Target", "to": "Via-mcp"})
                bad = await client.call_tool("kb_move", {"kb": "v", "id": "Target", "to": "x"})
                return got, moved, bad

    got, moved, bad = anyio.run(main)
    assert ids(got.structured_content["links"]["outgoing"])[:2] == ["Target", "Target"]
    assert moved.structured_content["entry"]["id"] == "Via-mcp"
    assert bad.is_error and "no entry 'Target'" in bad.content[0].text
    assert "[[Via-mcp|the alias]]" in (vault / "hub.md").read_text()
