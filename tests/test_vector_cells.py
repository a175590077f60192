"""The cell (IVF) vector index: recall against exact search, exact filters, generations, old layouts."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.embedders.hashing import HashEmbedder
from pyrite.models import embed_text
from pyrite.storage import cells, migrations, vectors
from pyrite.storage.db import Database
from pyrite.worker import EmbeddingWorker
from tests.conftest import pyrite_cmd

DENSE = "dense-384"


def corpus(n: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """n texts mixing 1-3 of 40 topics (shared words make real neighbours), and 40 queries."""
    rng = random.Random(seed)
    vocab = [f"w{i:04d}" for i in range(3000)]
    topics = [rng.sample(vocab, 60) for _ in range(40)]
    weights = [1.0 / (i + 1) for i in range(60)]
    texts = []
    for _ in range(n):
        mix = rng.sample(range(40), rng.choice([1, 1, 2, 3]))
        words = [w for t in mix for w in rng.choices(topics[t], weights=weights, k=rng.randint(10, 40))]
        texts.append(" ".join(words))
    queries = [" ".join(w for t in rng.sample(range(40), rng.choice([1, 2]))
                        for w in rng.choices(topics[t], weights=weights, k=3)) for _ in range(40)]
    return texts, queries


def open_core(**overrides: object) -> Pyrite:
    return Pyrite(load_settings(embed_model=DENSE, **overrides))


def fill(core: Pyrite, kb: str, texts: list[str]) -> None:
    if kb not in {k.name for k in core.kbs.list_kbs()}:
        core.kbs.create_kb(kb)
    for i, text in enumerate(texts):
        core.kbs.create_entry(kb, title=f"{kb} {i}", body=text, embed=False)
    worker = EmbeddingWorker(core.embedding)
    while worker.run_once().claimed:
        pass


def exact_top(core: Pyrite, query: str, kb: str | None, k: int = 10) -> dict[str, float]:
    """Every entry's best-chunk cosine to query, by brute force over the stored exact vectors."""
    q = HashEmbedder(DENSE).embed([query])[0]
    sql = "SELECT e.id, e.kb, c.vector FROM chunks c JOIN entries e ON e.rowid = c.entry_rowid"
    rows = core.db.query(sql + (" WHERE e.kb = ?" if kb else ""), (kb,) if kb else ())
    best: dict[str, float] = {}
    for entry_id, entry_kb, blob in rows:
        key = f"{entry_kb}/{entry_id}"
        best[key] = max(best.get(key, -2.0), float(np.frombuffer(blob, dtype=np.float32) @ q))
    return best


def recall_at_10(core: Pyrite, queries: list[str], kb: str | None) -> float:
    hits = []
    for query in queries:
        scores = exact_top(core, query, kb)
        tenth = sorted(scores.values(), reverse=True)[9]
        got = core.search.search(query, kb=kb, mode="semantic", limit=10)["results"]
        assert len(got) == 10
        # A tie at rank 10 makes the exact top 10 ambiguous: any entry scoring as high counts.
        hits.append(np.mean([scores[f"{r['kb']}/{r['id']}"] >= tenth - 1e-6 for r in got]))
    return float(np.mean(hits))


@pytest.fixture
def small_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells of ~40 vectors and a budget of 800 rows, so a corpus of a few thousand gets a real, approximate index."""
    monkeypatch.setattr(cells, "VECTORS_PER_CELL", 40)
    monkeypatch.setattr(cells, "PROBE_ROWS", 800)


def test_untrained_search_is_exact(pyrite_home: Path) -> None:
    core = open_core()
    texts, queries = corpus(600)
    fill(core, "notes", texts)
    assert [i["exact"] for i in core.embedding.index.status()] == [True]
    assert recall_at_10(core, queries, "notes") == 1.0


def test_cell_index_recall_against_exact_search(pyrite_home: Path, small_cells: None) -> None:
    core = open_core(vector_index_min=500)
    texts, queries = corpus(3000)
    fill(core, "notes", texts)
    core.embedding.index.optimize()
    [info] = core.embedding.index.status()
    assert not info["exact"] and info["moving"] == 0
    st = cells.state(core.db.conn, 384, "notes")
    sizes = vectors.cell_sizes(core.db.conn, st)
    assert sizes is not None and sum(sizes.values()) == info["vectors"] * cells.REPLICAS
    probed, complete = cells.probe(core.db.conn, st, np.ones(384) / 384**0.5, sizes=sizes)
    scanned = sum(sizes.get(c, 0) for c in probed)
    assert not complete and scanned < sum(sizes.values()) / 2  # the search really skips most rows
    recall = recall_at_10(core, queries, "notes")
    assert recall >= 0.95


def test_kb_filter_and_limit_stay_exact(pyrite_home: Path, small_cells: None) -> None:
    core = open_core(vector_index_min=500)
    texts, queries = corpus(2000)
    fill(core, "big", texts)
    fill(core, "tiny", texts[:7])
    core.embedding.index.optimize()
    assert {i["kb"]: i["exact"] for i in core.embedding.index.status()} == {"big": False, "tiny": True}
    for query in queries[:10]:
        tiny = core.search.search(query, kb="tiny", mode="semantic", limit=10)["results"]
        assert len(tiny) == 7 and {r["kb"] for r in tiny} == {"tiny"}
        big = core.search.search(query, kb="big", mode="semantic", limit=50)["results"]
        assert len(big) == 50 and {r["kb"] for r in big} == {"big"}
        both = core.search.search(query, mode="semantic", limit=10)["results"]
        best = exact_top(core, query, None)
        tenth = sorted(best.values(), reverse=True)[9]
        assert len(both) == 10
        assert np.mean([best[f"{r['kb']}/{r['id']}"] >= tenth - 1e-6 for r in both]) >= 0.8


def test_retraining_moves_vectors_and_search_finds_them_midway(pyrite_home: Path, small_cells: None) -> None:
    core = open_core(vector_index_min=300)
    texts, _ = corpus(900)
    fill(core, "notes", texts[:400])
    core.embedding.index.optimize()
    first = cells.state(core.db.conn, 384, "notes")
    assert first.gen > 0 and first.prev_gen is None
    fill(core, "notes", texts[400:])  # more than doubles the KB: a new generation is due
    assert core.embedding.index.step(budget_s=0.0, force=True)  # trains, moves nothing yet
    st = cells.state(core.db.conn, 384, "notes")
    assert st.gen > first.gen and st.prev_gen == first.gen
    with core.db.write() as conn:
        assert vectors.move_batch(conn, st, limit=50) == 50
    moving = core.embedding.index.status()[0]["moving"]
    assert 0 < moving < 900
    # Mid-move, every entry is still found by its own text, whichever generation holds it.
    rows = core.db.query("SELECT e.id, e.title, e.body, c.gen FROM entries e JOIN chunks c ON c.entry_rowid = e.rowid")
    gens = {r["gen"] for r in rows}
    assert gens == {first.gen, st.gen}
    for row in random.Random(1).sample(rows, 40):
        got = core.search.search(embed_text(row["title"], row["body"]), kb="notes", mode="semantic", limit=3)
        assert row["id"] in [r["id"] for r in got["results"]]
    # A delete mid-move removes the vectors of either generation.
    victim = next(r for r in rows if r["gen"] == first.gen)
    core.kbs.delete_entry("notes", victim["id"])
    core.embedding.index.optimize()
    assert core.embedding.index.status()[0]["moving"] == 0
    assert cells.state(core.db.conn, 384, "notes").prev_gen is None
    n_chunks = core.db.query("SELECT count(*) FROM chunks")[0][0]
    n_vecs = core.db.query("SELECT count(*) FROM vec_cells384")[0][0]
    assert n_vecs == n_chunks * cells.REPLICAS
    assert not core.db.query("SELECT 1 FROM vec_centroids WHERE gen = ?", (first.gen,))


def test_removing_a_kb_forgets_its_cells(pyrite_home: Path, small_cells: None) -> None:
    core = open_core(vector_index_min=300)
    texts, _ = corpus(400)
    fill(core, "gone", texts)
    core.embedding.index.optimize()
    assert core.db.query("SELECT count(*) FROM vec_centroids")[0][0] > 0
    core.kbs.remove_kb("gone")
    assert core.db.query("SELECT count(*) FROM vec_centroids")[0][0] == 0
    assert core.db.query("SELECT count(*) FROM vec_index")[0][0] == 0
    assert core.db.query("SELECT count(*) FROM vec_cells384")[0][0] == 0


def test_old_layout_is_migrated_with_its_vectors(pyrite_home: Path) -> None:
    """A database from before cells (vectors in vec_f384) keeps its vectors and searches as before."""
    pyrite_home.mkdir(parents=True)
    db = Database(pyrite_home / "index.db", migrate=False)
    with db.write() as conn:
        conn.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
        for name, fn in migrations.MIGRATIONS[:2]:
            fn(conn)
            conn.execute("INSERT INTO migrations VALUES (?, 0)", (name,))
        conn.execute("""CREATE VIRTUAL TABLE vec_f384 USING vec0(id INTEGER PRIMARY KEY, kb TEXT PARTITION KEY,
                        model TEXT, embedding float[384] distance_metric=cosine, +entry_rowid INTEGER)""")
        conn.execute("INSERT INTO kbs VALUES ('notes', ?, '2026-01-01')", (str(pyrite_home / "kbs" / "notes"),))
        emb = HashEmbedder(DENSE)
        for i, text in enumerate(["apples and pears", "engines and gears", "rivers and lakes"]):
            rowid = conn.execute(
                "INSERT INTO entries (kb, id, title, body, created, updated, path, file_hash, file_mtime_ns, "
                "file_size) VALUES ('notes', ?, ?, '', '', '', '', '', 0, 0)", (f"e{i}", text)).lastrowid
            conn.execute("INSERT INTO embed_queue (entry_rowid, kb, content_hash, status, model, queued_at, "
                         "run_after, updated_at) VALUES (?, 'notes', 'h', 'done', 'hash:dense-384', 0, 0, 0)",
                         (rowid,))
            chunk = conn.execute("INSERT INTO chunks (entry_rowid, seq, model, dim) VALUES (?, 0, "
                                 "'hash:dense-384', 384)", (rowid,)).lastrowid
            conn.execute("INSERT INTO vec_f384 VALUES (?, 'notes', 'hash:dense-384', ?, ?)",
                         (chunk, emb.embed([text])[0].tobytes(), rowid))
    db.close()
    core = open_core()
    assert not core.db.query("SELECT 1 FROM sqlite_master WHERE name = 'vec_f384'")
    # No auxiliary ("+") column: sqlite-vec 0.1.9 leaks memory on every insert into such a table.
    [schema] = core.db.query("SELECT sql FROM sqlite_master WHERE name = 'vec_cells384'")[0]
    assert "entry_rowid INTEGER" in schema and "+" not in schema
    assert core.db.query("SELECT count(*) FROM chunks WHERE vector IS NOT NULL AND kb = 'notes'")[0][0] == 3
    got = core.search.search("engines and gears", kb="notes", mode="semantic", limit=3)["results"]
    assert [r["id"] for r in got][0] == "e1" and len(got) == 3


def test_worker_process_trains_the_index(pyrite_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    core = open_core()
    core.kbs.create_kb("notes")
    texts, queries = corpus(700)
    for i, text in enumerate(texts):
        core.kbs.create_entry("notes", title=f"n{i}", body=text, embed=False)
    core.close()
    monkeypatch.setenv("PYRITE_EMBED_MODEL", DENSE)
    monkeypatch.setenv("PYRITE_VECTOR_INDEX_MIN", "200")
    done = subprocess.run(pyrite_cmd("worker", "--until-empty"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    status = subprocess.run(pyrite_cmd("index", "embed", "--status", "--format", "json"),
                            capture_output=True, text=True, timeout=60)
    info = json.loads(status.stdout)
    assert info["counts"]["done"] == 700
    [index] = info["index"]
    assert index["kb"] == "notes" and not index["exact"] and index["moving"] == 0 and index["vectors"] == 700
    core = open_core()
    assert len(core.search.search(queries[0], kb="notes", mode="semantic", limit=10)["results"]) == 10


def test_a_cell_crowded_by_one_long_entry_is_asked_again(pyrite_home: Path) -> None:
    """Cells whose k nearest chunks all belong to one long entry must not hide the next entry."""
    pyrite_home.mkdir(parents=True)
    db = Database(pyrite_home / "index.db")
    eye = np.eye(8, dtype=np.float32)

    def unit(v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v)).astype(np.float32)

    rng = np.random.default_rng(0)
    with db.write() as conn:
        vectors.ensure_table(conn, 8)
        st = cells.start_generation(conn, cells.ensure_state(conn, 8, "kb"), eye[:3].copy(), 0)
        cells.finish_generation(conn, st)
        # Entry 1: 40 chunks right by the query, filed in cells 0 and 1 (as is entry 2, a bit farther);
        # entries 3-7 sit in cell 2 (and 0), farther still.
        long_entry = np.stack([unit(eye[0] + 0.3 * eye[1] + 0.01 * rng.standard_normal(8)) for _ in range(40)])
        vectors.replace(conn, 1, "kb", "m", long_entry)
        vectors.replace(conn, 2, "kb", "m", unit(eye[0] + 0.45 * eye[1])[None, :])
        for rowid in range(3, 8):
            vectors.replace(conn, rowid, "kb", "m", unit(eye[2] + (0.9 + rowid / 100) * eye[0])[None, :])
    query = unit(eye[0] + 0.3 * eye[1])
    got = [rowid for rowid, _ in vectors.knn(db.conn, query, model="m", limit=3, kb="kb")]
    assert got == [1, 2, 7]


def test_probe_takes_nearest_cells_up_to_the_row_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uneven cells: the budget counts rows, not cells; while moving each generation gets its share."""
    monkeypatch.setattr(cells, "PROBE_ROWS", 200)  # the budget: 200 rows ...
    monkeypatch.setattr(cells, "PROBE_CELLS_WORTH", 1)  # ... more than one average cell (at most 174 rows here)
    dim = 4
    cents = np.eye(dim, dtype=np.float32)
    st = cells.State(dim, "kb", 1, None, dim, 0, "tok-probe-test", "")
    monkeypatch.setitem(cells._CENTROIDS, "tok-probe-test", cents)
    q = np.array([0.9, 0.3, 0.2, 0.1], dtype=np.float32)  # nearest cells in order 0, 1, 2, 3
    base = cells.CELL_BASE
    sizes = {base + 0: 150, base + 1: 40, base + 2: 500, base + 3: 5}
    monkeypatch.setattr(cells, "PROBE_MIN", 1)
    probed, complete = cells.probe(None, st, q, sizes=sizes)
    assert probed == [base + 0, base + 1, base + 2] and not complete  # 150 + 40 < 200 <= 690
    monkeypatch.setattr(cells, "PROBE_MIN", 2)
    assert cells.probe(None, st, q, sizes={base + 0: 900, base + 1: 1, base + 2: 1, base + 3: 1})[0] == \
        [base + 0, base + 1]  # a huge nearest cell still comes with PROBE_MIN - 1 more
    assert cells.probe(None, st, q, sizes=sizes, widen=4)[1]  # 800 rows: every cell
    # Unknown sizes: a fixed number of cells (here all 4, fewer than PROBE_BLIND).
    assert cells.probe(None, st, q, sizes=None) == ([base + c for c in range(4)], True)
    # Moving from generation 1 to 2: generation 2 holds 3/4 of the rows, so 3/4 of the budget.
    st2 = cells.State(dim, "kb", 2, 1, dim, 0, "tok-probe-test-2", "tok-probe-test")
    monkeypatch.setitem(cells._CENTROIDS, "tok-probe-test-2", cents)
    b2 = 2 * cells.CELL_BASE
    moving = {base + c: 25 for c in range(4)} | {b2 + c: 75 for c in range(4)}
    probed, _ = cells.probe(None, st2, q, sizes=moving)
    assert probed == [b2 + 0, b2 + 1, base + 0, base + 1]  # 150 of 150 new rows; 50 of 50 old ones


def test_kmeans_scores_in_blocks_like_all_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    sample = rng.standard_normal((1000, 16)).astype(np.float32)
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    whole = cells.train(sample, 20)
    assert np.array_equal(cells.nearest_cells(sample, whole), np.argmax(sample @ whole.T, axis=1))
    monkeypatch.setattr(cells, "TRAIN_BLOCK", 7)  # blocks that do not divide the sample
    assert np.array_equal(cells.train(sample, 20), whole)
    assert np.allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
