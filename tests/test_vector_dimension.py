"""A model's vectors have one dimension in the index: a provider that changes its answer under the same
model name fails the items with a clear error and stores nothing (no second vector table).

Against the real fake provider on 127.0.0.1, in-process workers and a real `pyrite index embed`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.storage import vectors
from pyrite.worker import EmbeddingWorker
from tests.fake_provider import FakeProvider

ROOT = Path(__file__).resolve().parent.parent
LATER = 1000.0  # past any backoff


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(dimension=384) as f:
        yield f


def use(monkeypatch: pytest.MonkeyPatch, fake: FakeProvider) -> None:
    monkeypatch.setenv("PYRITE_EMBED_PROVIDER", "openai")
    monkeypatch.setenv("PYRITE_EMBED_URL", fake.url)
    monkeypatch.setenv("PYRITE_EMBED_API_KEY", "sk-test-dimension-0123456789")


def tables(core: Pyrite) -> list[str]:
    """The vec0 tables in the index, one per dimension."""
    return sorted(vectors.table_name(d) for d in vectors.existing_tables(core.db.conn))


def queue_rows(core: Pyrite) -> dict[str, tuple[Any, ...]]:
    rows = core.db.query("SELECT e.id, q.status, q.attempts, q.error FROM embed_queue q "
                         "JOIN entries e ON e.rowid = q.entry_rowid")
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def seed(monkeypatch: pytest.MonkeyPatch, fake: FakeProvider) -> list[str]:
    """Three entries embedded at 384 dimensions by one process, which then exits."""
    use(monkeypatch, fake)
    core = Pyrite(load_settings())
    try:
        core.kbs.create_kb("notes")
        ids = [core.kbs.create_entry("notes", f"Seed {i}", f"seed text number {i}", embed=False).id for i in range(3)]
        assert EmbeddingWorker(core.embedding).run_once().done == 3
        assert tables(core) == ["vec_cells384"]
        return ids
    finally:
        core.close()


def assert_refused(core: Pyrite, ids: list[str], got: int = 192, want: int = 384) -> None:
    rows = queue_rows(core)
    for entry_id in ids:
        status, attempts, error = rows[entry_id]
        assert status == "failed" and attempts == 3, rows[entry_id]
        assert f"dimension {got}, expected {want}" in error and "PYRITE_EMBED_DIMENSIONS" in error, error
    assert tables(core) == ["vec_cells384"]  # no second table
    assert [r[0] for r in core.db.query("SELECT DISTINCT dim FROM chunks")] == [want]


def test_a_new_process_refuses_another_dimension_under_the_same_model(monkeypatch: pytest.MonkeyPatch,
                                                                      fake: FakeProvider) -> None:
    """The issue: a fresh worker learned the dimension from its first answer and stored 192-d vectors as done."""
    seeded = seed(monkeypatch, fake)
    fake.answer_dimension = 192  # the provider changes its answer under the same model name
    core = Pyrite(load_settings())  # a new process: its embedder knows no dimension yet
    try:
        ids = [core.kbs.create_entry("notes", f"New {i}", f"new text {i}", embed=False).id for i in range(2)]
        worker = EmbeddingWorker(core.embedding)
        t = time.time()
        first = worker.run_once(now=t)
        assert (first.done, first.retried) == (0, 2)  # retried with backoff: the provider may come back
        for k in range(2):
            worker.run_once(now=t + LATER * (k + 1))
        assert_refused(core, ids)
        status = core.embedding.status()
        assert status["counts"]["failed"] == 2 and "expected 384" in status["last_error"]
        # Semantic search while the provider answers 192: a clear note, keyword results, never a 500.
        found = core.search.search("seed text", mode="semantic", kb="notes")
        assert found["mode"] == "keyword"
        assert any("semantic search failed" in n and "dimension 192, expected 384" in n for n in found["notes"])
        # The provider answers 384 again: the 384-d vectors still serve semantic search.
        fake.answer_dimension = None
        found = core.search.search("seed text number 1", mode="semantic", kb="notes")
        assert found["mode"] == "semantic" and found["results"][0]["id"] == seeded[1]
    finally:
        core.close()


def test_index_embed_in_a_new_process_stores_no_second_table(monkeypatch: pytest.MonkeyPatch, pyrite_home: Path,
                                                             fake: FakeProvider) -> None:
    seed(monkeypatch, fake)
    fake.answer_dimension = 192
    env = dict(os.environ, PYRITE_EMBED_MAX_ATTEMPTS="1")
    cmd = [sys.executable, "-m", "pyrite"]
    made = subprocess.run(cmd + ["create", "--kb", "notes", "--title", "Later", "--body", "later text", "--no-embed"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert made.returncode == 0, made.stderr
    out = subprocess.run(cmd + ["index", "embed"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert "Traceback" not in out.stderr
    assert "1 failed" in out.stderr, out.stderr
    core = Pyrite(load_settings())
    try:
        status, _, error = queue_rows(core)["later"]
        assert status == "failed" and "dimension 192, expected 384" in error
        assert tables(core) == ["vec_cells384"]
    finally:
        core.close()


def test_a_deliberate_dimension_change_is_a_new_model(monkeypatch: pytest.MonkeyPatch, fake: FakeProvider) -> None:
    """PYRITE_EMBED_DIMENSIONS names a new vector space (model@N): stored apart, reported as a model change."""
    seed(monkeypatch, fake)
    monkeypatch.setenv("PYRITE_EMBED_DIMENSIONS", "192")
    core = Pyrite(load_settings())
    try:
        assert core.provider.model_id == "openai:text-embedding-3-small@192"
        assert core.embedding.status()["stale_models"] == {"openai:text-embedding-3-small": 3}
        core.embedding.requeue(statuses=("done",))
        assert EmbeddingWorker(core.embedding).run_once().done == 3
        assert sorted(tables(core)) == ["vec_cells192", "vec_cells384"]
        assert fake.requests[-1].dimensions == 192
    finally:
        core.close()


def test_vectors_of_another_dimension_stored_meanwhile_are_caught_when_recording(
        monkeypatch: pytest.MonkeyPatch, fake: FakeProvider) -> None:
    """Two processes start on an empty index; one stores 384-d vectors while the other's 192-d answer is in flight."""
    slow = FakeProvider(dimension=192, delay=1.0).start()
    try:
        use(monkeypatch, slow)
        a = Pyrite(load_settings())
        a.kbs.create_kb("notes")
        use(monkeypatch, fake)
        b = Pyrite(load_settings())
        try:
            late = a.kbs.create_entry("notes", "Late", "late text", embed=False).id
            items = a.embedding.claim("a")
            done: list[Any] = []
            thread = threading.Thread(target=lambda: done.append(a.embedding.batches.process(items)))
            thread.start()
            time.sleep(0.3)  # a's request is at the slow provider
            b.kbs.create_entry("notes", "Quick", "quick text", embed=False)
            assert EmbeddingWorker(b.embedding).run_once().done == 1  # b stores 384-d vectors first
            thread.join(10)
            assert done and (done[0].done, done[0].retried) == (0, 1)
            status, _, error = queue_rows(a)[late]
            assert status == "pending" and "dimension 192, expected 384" in error
            assert tables(a) == ["vec_cells384"]
        finally:
            b.close()
            a.close()
    finally:
        slow.stop()
