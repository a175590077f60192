"""A search's cost is bounded whatever the entry sizes: passages of long bodies, the time budget (503 with
Retry-After on the server, a message in the CLI), a bounded query for the model, one-line snippets."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from starlette.testclient import TestClient

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.embedders.hashing import HashEmbedder
from pyrite.errors import BusyError
from pyrite.server.app import create_app
from pyrite.services.search_service import EMBED_QUERY_MAX
from pyrite.storage import migrations, passages
from pyrite.storage.db import Database
from tests.conftest import pyrite_cmd
from tests.test_mcp import error_text, run_session  # the MCP SDK client over a real `pyrite mcp`

WORD = "zyxomorph"  # a word found only deep inside the big entries


def filler(chars: int, seed: int = 1) -> str:
    """Text of about `chars` characters where 'alpha' is a third of the words (the worst case for snippet())."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta"]
    out: list[str] = []
    size = 0
    while size < chars:
        line = " ".join(rng.choice(words) if rng.random() < 0.5 else "alpha" for _ in range(12))
        out.append(line + ("\n\n" if rng.random() < 0.1 else "\n"))
        size += len(out[-1])
    return "".join(out)


def deep_body(chars: int) -> str:
    """A long body with WORD once, at about 80% of its length, in a recognisable sentence."""
    cut = int(chars * 0.8)
    return filler(cut) + f"the {WORD} sleeps under the old bridge\n" + filler(chars - cut, seed=2)


def passage_rows(db: Database, entry_rowid: int) -> int:
    base = passages.first_rowid(entry_rowid)
    return db.query("SELECT count(*) FROM passages WHERE rowid BETWEEN ? AND ?",
                    (base, base + passages.MAX_PASSAGES - 1))[0][0]


def rowid_of(core: Pyrite, entry_id: str) -> int:
    return core.db.query("SELECT rowid FROM entries WHERE kb = 'notes' AND id = ?", (entry_id,))[0][0]


# -- passages --------------------------------------------------------------------------------------


def test_split_bounds_passages_on_whitespace() -> None:
    body = filler(100_000)
    pieces = passages.split(body)
    assert "".join(pieces) == body
    assert all(len(p) <= passages.PASSAGE_CHARS for p in pieces)
    assert all(p[-1].isspace() for p in pieces[:-1])  # cut after whitespace, never inside a word
    assert passages.split("short body " * 100) == []
    huge = passages.split("x " * (passages.MAX_PASSAGES * passages.PASSAGE_CHARS))
    assert len(huge) <= passages.MAX_PASSAGES


@pytest.mark.timeout(120)
def test_word_deep_inside_a_multi_mb_entry_is_found_fast_with_its_snippet(core: Pyrite) -> None:
    body = deep_body(1_000_000)
    core.kbs.create_entry("notes", "Big notebook", body, embed=False)
    core.kbs.create_entry("notes", "Small note", f"alpha and the {WORD} once", embed=False)
    started = time.perf_counter()
    answer = core.search.search(f"alpha {WORD}", kb="notes", mode="keyword")
    elapsed = time.perf_counter() - started
    # Before passages, snippet() over this body took minutes (its 100,000 'alpha's scored pairwise).
    assert elapsed < 2.0, elapsed
    snippets = {r["id"]: r["snippet"] for r in answer["results"]}
    assert set(snippets) == {"big-notebook", "small-note"}
    assert f"the **{WORD}**" in snippets["big-notebook"]
    assert snippets["big-notebook"].startswith("…") and snippets["big-notebook"].endswith("…")
    alone = core.search.search(WORD, kb="notes", mode="keyword")["results"]
    assert f"the **{WORD}** sleeps under" in {r["id"]: r["snippet"] for r in alone}["big-notebook"]
    assert core.kbs.get_entry("notes", "big-notebook").body == body  # only search reads passages


@pytest.mark.timeout(120)
def test_hybrid_and_semantic_results_of_a_big_entry_are_bounded(core: Pyrite) -> None:
    body = deep_body(1_000_000)
    core.kbs.create_entry("notes", "Big notebook", body)
    for mode in ("hybrid", "semantic"):
        started = time.perf_counter()
        answer = core.search.search(f"alpha {WORD}", mode=mode)
        assert time.perf_counter() - started < 2.0, mode
        result = answer["results"][0]
        assert result["id"] == "big-notebook"
        if mode == "hybrid":
            assert f"**{WORD}**" in result["snippet"]
        else:  # no keyword hit: a preview of the start, read from the first passage
            assert result["snippet"].startswith(" ".join(body[:40].split()))
            assert len(result["snippet"]) <= 161


def test_updates_deletes_sync_and_kb_removal_leave_no_stale_passages(core: Pyrite) -> None:
    core.kbs.create_entry("notes", "Big notebook", deep_body(50_000), embed=False)
    rowid = rowid_of(core, "big-notebook")
    assert passage_rows(core.db, rowid) == len(passages.split(core.kbs.get_entry("notes", "big-notebook").body))
    core.kbs.update_entry("notes", "big-notebook", body=filler(30_000, seed=5), embed=False)
    assert core.search.search(WORD, mode="keyword")["results"] == []
    assert core.db.query("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH ?", (WORD,))[0][0] == 0
    assert passage_rows(core.db, rowid) == len(passages.split(filler(30_000, seed=5)))
    core.kbs.update_entry("notes", "big-notebook", body="now short", embed=False)
    assert passage_rows(core.db, rowid) == 0
    # An edit outside pyrite, then sync: the new body's passages replace nothing stale.
    path = Path(core.kbs.get_kb("notes").path) / "big-notebook.md"
    path.write_text(path.read_text().replace("now short", deep_body(20_000)))
    core.kbs.sync("notes")
    assert passage_rows(core.db, rowid) > 0
    assert [r["id"] for r in core.search.search(WORD, mode="keyword")["results"]] == ["big-notebook"]
    core.kbs.delete_entry("notes", "big-notebook")
    assert core.db.query("SELECT count(*) FROM passages")[0][0] == 0
    core.kbs.create_entry("notes", "Another big one", deep_body(20_000), embed=False)
    path.write_text(f"---\ntitle: Edited elsewhere\n---\n{deep_body(20_000)}")
    core.kbs.sync("notes")
    assert core.db.query("SELECT count(*) FROM passages")[0][0] > 0
    core.kbs.remove_kb("notes")
    assert core.db.query("SELECT count(*) FROM passages")[0][0] == 0
    assert core.db.query("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH ?", (WORD,))[0][0] == 0


def test_migration_backfills_passages_of_an_existing_database(pyrite_home: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    names = [name for name, _ in migrations.MIGRATIONS]
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:names.index("m007_passages")])
        old = Database(pyrite_home / "index.db")  # the schema before passages
    body = deep_body(200_000)
    with old.write() as conn:
        conn.execute("INSERT INTO kbs (name, path, created) VALUES ('notes', ?, '2026-01-01T00:00:00Z')",
                     (str(pyrite_home / "kbs" / "notes"),))
        for entry_id, text in (("big", body), ("small", f"a short {WORD} note")):
            conn.execute("INSERT INTO entries (kb, id, title, body, created, updated, path, file_hash, "
                         "file_mtime_ns, file_size) VALUES ('notes', ?, ?, ?, '', '', ?, '', 0, 0)",
                         (entry_id, entry_id.title(), text, f"{entry_id}.md"))
    old.close()
    core = Pyrite(load_settings())
    try:
        big = rowid_of(core, "big")
        assert passage_rows(core.db, big) == len(passages.split(body))
        assert passage_rows(core.db, rowid_of(core, "small")) == 0
        snippets = {r["id"]: r["snippet"] for r in core.search.search(WORD, mode="keyword")["results"]}
        assert f"**{WORD}**" in snippets["big"] and "sleeps" in snippets["big"]
    finally:
        core.close()


# -- snippets --------------------------------------------------------------------------------------


def test_snippets_and_previews_are_one_line(core: Pyrite, pyrite_home: Path) -> None:
    core.kbs.create_entry("notes", "Lines", "first line\nthe zebra\n\n\tgrazes\r\nhere\n\nend")
    core.kbs.create_entry("notes", "Long lines", "zebra\n\n" + filler(20_000))
    for mode in ("keyword", "hybrid", "semantic"):
        results = core.search.search("zebra", mode=mode)["results"]
        assert results, mode
        for r in results:
            assert "\n" not in r["snippet"] and "\r" not in r["snippet"] and "\t" not in r["snippet"], (mode, r)
    snippet = core.search.search("zebra grazes", mode="keyword")["results"][0]["snippet"]
    assert snippet == "first line the **zebra** **grazes** here end"
    out = subprocess.run(pyrite_cmd("search", "zebra", "--mode", "keyword"), capture_output=True, text=True,
                         env=os.environ)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 4, out.stdout  # a title line and a snippet line per result


# -- the time budget -------------------------------------------------------------------------------


def test_deadline_interrupts_a_long_statement(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.db")
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    started = time.monotonic()
    with pytest.raises(BusyError, match="too slow"):
        with db.deadline(time.monotonic() + 0.2, "too slow"):
            db.query(endless)
    assert time.monotonic() - started < 2.0
    assert db.query("SELECT 1")[0][0] == 1  # the handler is gone: later statements run
    db.close()


def test_search_over_budget_is_busy_error_in_core_and_cli(core: Pyrite, pyrite_home: Path) -> None:
    core.kbs.create_entry("notes", "Zebra", "a zebra")
    with pytest.raises(BusyError, match="search_timeout"):
        core.search.search("zebra", budget=1e-9)
    out = subprocess.run(pyrite_cmd("search", "zebra"), capture_output=True, text=True,
                         env={**os.environ, "PYRITE_SEARCH_TIMEOUT": "0.000000001"})
    assert out.returncode == 1
    assert out.stderr.startswith("Error: the search ran out of its time budget"), out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture
def tiny_budget_client(pyrite_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("PYRITE_SEARCH_TIMEOUT", "0.3")
    with TestClient(create_app(load_settings(), worker=False), base_url="http://127.0.0.1") as c:
        assert c.post("/api/kbs", json={"name": "notes"}).status_code == 201
        assert c.post("/api/entries", json={"kb": "notes", "title": "Zebra", "body": "a zebra"}).status_code == 201
        yield c


def _assert_busy(response: object) -> str:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    return body["error"]


def test_server_search_over_budget_answers_503_with_retry_after(pyrite_home: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRITE_SEARCH_TIMEOUT", "0.000000001")
    with TestClient(create_app(load_settings(), worker=False), base_url="http://127.0.0.1") as c:
        assert c.post("/api/kbs", json={"name": "notes"}).status_code == 201
        assert c.post("/api/entries", json={"kb": "notes", "title": "Zebra", "body": "a zebra"}).status_code == 201
        assert "time budget" in _assert_busy(c.get("/api/search", params={"q": "zebra"}))


def test_search_waiting_for_a_slot_past_its_budget_answers_503(tiny_budget_client: TestClient) -> None:
    c = tiny_budget_client
    assert c.get("/api/search", params={"q": "zebra"}).status_code == 200

    def hold_every_slot() -> None:
        slots = c.app.state.search_slots
        for n in range(int(slots.total_tokens)):
            slots.acquire_on_behalf_of_nowait(f"holder-{n}")

    c.portal.call(_in_loop, hold_every_slot)
    started = time.monotonic()
    assert "busy with other searches" in _assert_busy(c.get("/api/search", params={"q": "zebra"}))
    assert 0.25 < time.monotonic() - started < 3.0
    assert c.get("/api/kbs").status_code == 200  # other routes keep their own threads


async def _in_loop(fn: object) -> None:
    fn()  # type: ignore[operator]


# -- semantic queries ------------------------------------------------------------------------------


class RecordingEmbedder(HashEmbedder):
    """The hash embedder, keeping every text it was asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return super().embed(texts)


def test_semantic_query_reaching_the_model_is_bounded(pyrite_home: Path) -> None:
    embedder = RecordingEmbedder()
    core = Pyrite(load_settings(), embedder=embedder)
    try:
        core.kbs.create_kb("notes")
        core.kbs.create_entry("notes", "Zebra", "a zebra")
        embedder.texts.clear()
        core.search.search("zebra " * 1500, mode="semantic")
        assert embedder.texts and max(len(t) for t in embedder.texts) <= EMBED_QUERY_MAX
    finally:
        core.close()


@pytest.mark.slow
def test_mcp_search_over_budget_is_a_tool_error_with_the_reason(pyrite_home: Path) -> None:
    core = Pyrite(load_settings())
    core.kbs.create_kb("notes")
    core.kbs.create_entry("notes", "Zebra", "a zebra")
    core.close()
    (pyrite_home / "config.yaml").write_text("search_timeout: 0.000000001\n")

    async def body(client: object) -> object:
        return await client.call_tool("kb_search", {"query": "zebra"})  # type: ignore[attr-defined]

    assert "time budget" in error_text(run_session(pyrite_home, body))
