"""Remote embedding providers (OpenAI-compatible, Gemini) against a real HTTP server on 127.0.0.1.

Nothing here mocks httpx: every fault is injected by tests/fake_provider.py and
travels the real path, EmbeddingWorker.run_once -> EmbeddingService.process ->
the provider's HTTP client -> the queue. Where time matters the worker is
driven with chosen clocks (run_once(now=...)); the few tests about pauses and
concurrency in real time use process_queue.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.embedders import create_embedder
from pyrite.models import embed_text
from pyrite.worker import MISCONFIGURED_PAUSE_S, EmbeddingWorker
from tests.fake_provider import FakeProvider, fake_provider  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-pyrite-7f3a9c2e41b84d06a5e1c9b2d7f08e6a"
GOOD_KEY = "sk-pyrite-good-0c1d2e3f4a5b6c7d8e9f0a1b2c3d"
LATER = 1000.0  # past any backoff of attempt 1 or 2 (base 10 s, doubling, jittered)


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def make_core(monkeypatch: pytest.MonkeyPatch, fake_provider: FakeProvider) -> Iterator[Callable[..., Pyrite]]:
    """make_core(provider, home=None, flags={}, **env) -> a Pyrite on the fake server with a KB 'notes'.

    env keys are PYRITE_EMBED_* names without the prefix (batch_size=5 -> PYRITE_EMBED_BATCH_SIZE=5).
    """
    cores: list[Pyrite] = []

    def make(provider: str = "openai", home: Path | None = None, flags: dict[str, Any] | None = None,
             **env: Any) -> Pyrite:
        monkeypatch.setenv("PYRITE_EMBED_PROVIDER", provider)
        monkeypatch.setenv("PYRITE_EMBED_URL", fake_provider.url if provider == "openai" else fake_provider.gemini_url)
        monkeypatch.setenv("PYRITE_EMBED_API_KEY", KEY)
        for name, value in env.items():
            monkeypatch.setenv("PYRITE_EMBED_" + name.upper(), str(value))
        core = Pyrite(load_settings(home, **(flags or {})))
        core.kbs.create_kb("notes")
        cores.append(core)
        return core

    yield make
    for core in cores:
        core.close()


def add(core: Pyrite, n: int, *, body: Callable[[int], str] = lambda i: f"body of note {i}",
        prefix: str = "Note") -> list[str]:
    """Create n entries without embedding them (they wait in the queue); return their ids."""
    return [core.kbs.create_entry("notes", f"{prefix} {i}", body(i), embed=False).id for i in range(n)]


def q(core: Pyrite, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in core.db.query(sql, params)]


def queue_rows(core: Pyrite) -> dict[str, dict[str, Any]]:
    rows = core.db.query(
        "SELECT e.id, q.status, q.attempts, q.error, q.run_after FROM embed_queue q "
        "JOIN entries e ON e.rowid = q.entry_rowid")
    return {r[0]: {"status": r[1], "attempts": r[2], "error": r[3], "run_after": r[4]} for r in rows}


def statuses(core: Pyrite) -> dict[str, str]:
    return {k: v["status"] for k, v in queue_rows(core).items()}


def chunk_count(core: Pyrite, entry_id: str | None = None) -> int:
    if entry_id is None:
        return core.db.query("SELECT count(*) FROM chunks")[0][0]
    return core.db.query("SELECT count(*) FROM chunks c JOIN entries e ON e.rowid = c.entry_rowid WHERE e.id = ?",
                         (entry_id,))[0][0]


def entry_text(core: Pyrite, entry_id: str) -> str:
    entry = core.kbs.get_entry("notes", entry_id)
    return embed_text(entry.title, entry.body)


def event_rows(core: Pyrite) -> list[tuple[Any, ...]]:
    return q(core, "SELECT type, kb, entry_id, model, error FROM events ORDER BY id")


def run_rounds(worker: EmbeddingWorker, start: float, rounds: int, step: float = LATER) -> float:
    """run_once at start, start+step, ...; return the next clock."""
    t = start
    for _ in range(rounds):
        worker.run_once(now=t)
        t += step
    return t


def drain(core: Pyrite, *, timeout: float = 60.0) -> float:
    """Run a worker (process_queue, until_empty) over core's queue; return the seconds it took."""
    worker = EmbeddingWorker(core.embedding, until_empty=True, poll_interval=0.05)
    started = time.perf_counter()
    asyncio.run(asyncio.wait_for(worker.process_queue(), timeout))
    return time.perf_counter() - started


# -- request shapes, dimensions, splitting, chunking ---------------------------------------------


def test_openai_request_shape_and_vectors_stored_in_order(make_core, fake_provider: FakeProvider) -> None:
    core = make_core("openai", batch_size=5)
    ids = add(core, 5)
    result = EmbeddingWorker(core.embedding).run_once(now=time.time())
    assert result.done == 5
    [req] = fake_provider.requests
    assert req.path == "/v1/embeddings"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.body["model"] == "text-embedding-3-small"
    assert req.body["input"] == [entry_text(core, i) for i in ids]
    assert "dimensions" not in req.body
    # Each entry got its own input's vector (normalized), not a neighbour's.
    for entry_id in ids:
        blob = core.db.query("SELECT v.embedding FROM vec_cells32 v JOIN entries e ON e.rowid = v.entry_rowid "
                             "WHERE e.id = ?", (entry_id,))[0][0]
        stored = np.frombuffer(blob, dtype=np.float32)
        expected = fake_provider.vector(entry_text(core, entry_id))
        assert np.allclose(stored, expected / np.linalg.norm(expected), atol=1e-5)
    assert statuses(core) == {i: "done" for i in ids}


def test_dimension_learned_from_first_answer(make_core, fake_provider: FakeProvider) -> None:
    fake_provider.dimension = 24
    core = make_core("openai")
    add(core, 3)
    assert core.provider.embedder.dimension is None
    EmbeddingWorker(core.embedding).run_once(now=time.time())
    assert core.provider.embedder.dimension == 24
    assert q(core, "SELECT DISTINCT dim FROM chunks") == [(24,)]
    assert all("dimensions" not in r.body for r in fake_provider.requests)
    hits = core.search.search(entry_text(core, "note-1"), mode="semantic")["results"]
    assert hits and hits[0]["id"] == "note-1"


def test_dimension_set_by_config(make_core, fake_provider: FakeProvider) -> None:
    core = make_core("openai", dimensions=16)
    add(core, 2)
    assert core.provider.embedder.dimension == 16
    EmbeddingWorker(core.embedding).run_once(now=time.time())
    assert [r.body["dimensions"] for r in fake_provider.requests] == [16]
    assert q(core, "SELECT DISTINCT dim, model FROM chunks") == [(16, "openai:text-embedding-3-small@16")]


def test_gemini_request_shape(make_core, fake_provider: FakeProvider) -> None:
    core = make_core("gemini", dimensions=12)
    ids = add(core, 3)
    result = EmbeddingWorker(core.embedding).run_once(now=time.time())
    assert result.done == 3
    [req] = fake_provider.requests
    assert req.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert req.headers["x-goog-api-key"] == KEY
    assert "authorization" not in req.headers
    assert "key" not in req.query and KEY not in req.query
    assert req.body["requests"] == [
        {"model": "models/gemini-embedding-001", "outputDimensionality": 12,
         "content": {"parts": [{"text": entry_text(core, i)}]}} for i in ids]
    assert q(core, "SELECT DISTINCT dim, model FROM chunks") == [(12, "gemini:gemini-embedding-001@12")]


@pytest.mark.parametrize("provider, limit", [("openai", 256), ("gemini", 100)])
def test_requests_split_by_provider_max_inputs(make_core, fake_provider: FakeProvider,
                                               provider: str, limit: int) -> None:
    fake_provider.max_inputs = limit
    core = make_core(provider)
    embedder = create_embedder(core.settings)
    texts = [f"text number {i}" for i in range(limit + 44)]
    vectors = embedder.embed(texts)
    assert fake_provider.statuses() == [200, 200]  # never a 400 for too many inputs
    assert fake_provider.sizes() == [limit, 44]
    expected = np.array([fake_provider.vector(t) for t in texts])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-5)  # in input order across requests


def test_requests_split_by_token_budget(make_core, fake_provider: FakeProvider) -> None:
    # 40 entries of ~21,000 characters (one chunk each) claimed as one batch: ~840k characters in all.
    # The server takes at most 750k characters a request (250k tokens at 3 characters a token).
    fake_provider.max_request_chars = 750_000
    core = make_core("openai", batch_size=40)
    words = " ".join(f"w{j:05d}" for j in range(3000))  # 20,999 characters
    ids = add(core, 40, body=lambda i: words)
    result = EmbeddingWorker(core.embedding).run_once(now=time.time())
    assert result.done == 40
    assert set(fake_provider.statuses()) == {200}
    assert len(fake_provider.requests) >= 2
    assert all(sum(map(len, r.inputs)) <= 750_000 for r in fake_provider.requests)
    assert sum(fake_provider.sizes()) == 40
    assert all(chunk_count(core, i) == 1 for i in ids)


@pytest.mark.parametrize("provider, input_tokens", [("openai", 8191), ("gemini", 2048)])
def test_long_text_is_chunked_never_cut(make_core, fake_provider: FakeProvider, provider: str,
                                        input_tokens: int) -> None:
    # The server refuses any input over the model's limit (at 3 characters a token).
    fake_provider.max_input_chars = input_tokens * 3
    core = make_core(provider)
    body = " ".join(f"w{j:06d}" for j in range(12_000))  # 95,999 characters
    [entry_id] = add(core, 1, body=lambda i: body)
    result = EmbeddingWorker(core.embedding).run_once(now=time.time())
    assert result.done == 1, result.errors
    assert set(fake_provider.statuses()) == {200}
    inputs = [t for r in fake_provider.requests for t in r.inputs]
    assert len(inputs) > 1
    assert all(len(t) <= input_tokens * 3 for t in inputs)
    text = entry_text(core, entry_id)
    assert all(t in text for t in inputs)  # each chunk is a piece of the text
    covered = {w for t in inputs for w in t.split()}
    assert covered == set(text.split())  # and together they hold every word
    assert chunk_count(core, entry_id) == len(inputs)


# -- 429 ---------------------------------------------------------------------------------------


def _http_date(offset: float) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


@pytest.mark.parametrize("header, low, high", [
    ("20", 20.0, 20.0),
    ("date+40", 38.0, 40.0),
    ("86400", 300.0, 300.0),          # capped
    ("date+86400", 300.0, 300.0),     # capped
], ids=["seconds", "http-date", "seconds-capped", "date-capped"])
def test_429_honours_retry_after_and_spends_no_attempt(make_core, fake_provider: FakeProvider, header: str,
                                                      low: float, high: float) -> None:
    value = _http_date(float(header[5:])) if header.startswith("date+") else header
    fake_provider.fail_nth = {1: (429, {"Retry-After": value}, "Rate limit reached for requests")}
    core = make_core("openai", batch_size=5)
    add(core, 10)
    worker = EmbeddingWorker(core.embedding)
    t0 = time.time()
    first = worker.run_once(now=t0)
    assert (first.claimed, first.released, first.done, first.failed) == (5, 5, 0, 0)
    assert low <= first.paused_for <= high
    assert worker.paused_until == pytest.approx(t0 + first.paused_for)
    rows = queue_rows(core)
    assert all(r["status"] == "pending" and r["attempts"] == 0 for r in rows.values())
    assert "HTTP 429" in (core.embedding.status()["provider_error"] or "")
    # Paused: nothing is claimed, nothing is sent, until Retry-After has passed.
    assert worker.run_once(now=t0 + low - 1).claimed == 0
    assert fake_provider.count == 1
    resume = t0 + first.paused_for + 0.5
    assert worker.run_once(now=resume).done == 5
    assert worker.run_once(now=resume + 0.1).done == 5
    assert fake_provider.statuses() == [429, 200, 200]
    assert fake_provider.sizes() == [5, 5]  # full batches after the pause
    rows = queue_rows(core)
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in rows.values())
    assert core.embedding.status()["provider_error"] is None


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_429_never_burns_attempts(make_core, fake_provider: FakeProvider, provider: str) -> None:
    limited = (429, {"Retry-After": "1"}, "Too many requests")
    fake_provider.fail_nth = {1: limited, 2: limited, 3: limited, 4: limited}
    core = make_core(provider, max_attempts=1)
    ids = add(core, 3)
    run_rounds(EmbeddingWorker(core.embedding), time.time(), 5, step=2.0)
    assert fake_provider.statuses() == [429, 429, 429, 429, 200]
    rows = queue_rows(core)
    assert {i: (rows[i]["status"], rows[i]["attempts"]) for i in ids} == {i: ("done", 1) for i in ids}


def _starts_in(fake: FakeProvider, lo: float, hi: float) -> list[float]:
    return [round(r.started - lo, 3) for r in fake.requests if lo < r.started < hi]


def test_429_pauses_every_batch_in_flight(make_core, fake_provider: FakeProvider) -> None:
    """Real time, concurrency 4: after a 429 no runner sends anything until the worker's pause ends."""
    fake_provider.delay = 0.05
    fake_provider.fail_nth = {3: (429, {"Retry-After": "1"}, "Rate limit reached")}
    core = make_core("openai", batch_size=2, concurrency=4)
    add(core, 24)
    worker = EmbeddingWorker(core.embedding, until_empty=True, poll_interval=0.05)
    started = time.perf_counter()
    asyncio.run(asyncio.wait_for(worker.process_queue(), 60))
    elapsed = time.perf_counter() - started
    assert set(statuses(core).values()) == {"done"}
    assert fake_provider.statuses().count(429) == 1
    assert fake_provider.statuses().count(200) == 12
    [limited] = [r for r in fake_provider.requests if r.status == 429]
    t, resume = limited.ended, worker.paused_until
    assert resume - t > 0.5  # a pause of about the Retry-After (exactness: see the next test)
    # Requests already on the wire when the 429 came back may finish; nothing new starts until the pause ends.
    assert _starts_in(fake_provider, t + 0.1, resume - 0.01) == []
    later = [r for r in fake_provider.requests if r.started >= resume - 0.01]
    assert later and all(len(r.inputs) == 2 for r in later)  # batching goes on at full size
    assert elapsed >= resume - t


def test_429_pause_counts_from_the_answer_not_the_claim(make_core, fake_provider: FakeProvider) -> None:
    """Retry-After is relative to the answer: a slow 429 (0.5 s) must not shorten the pause to 0.5 s."""
    fake_provider.delay = 0.5
    fake_provider.fail_nth = {1: (429, {"Retry-After": "1"}, "Rate limit reached")}
    core = make_core("openai", batch_size=2, concurrency=1)
    add(core, 6)
    drain(core)
    assert set(statuses(core).values()) == {"done"}
    limited = fake_provider.requests[0]
    assert limited.status == 429
    early = _starts_in(fake_provider, limited.ended + 0.05, limited.ended + 0.95)
    assert early == [], f"requests sent {early} s after a 429 that said Retry-After: 1"


# -- 5xx, connection reset, timeout -----------------------------------------------------------------


@pytest.mark.parametrize("provider, status", [("openai", 500), ("gemini", 503)])
def test_server_error_retries_with_backoff_then_fails(make_core, fake_provider: FakeProvider, provider: str,
                                                      status: int) -> None:
    fake_provider.fail_all = (status, "upstream model server exploded")
    core = make_core(provider)  # max_attempts 3, retry base 10 s
    ids = add(core, 2)
    worker = EmbeddingWorker(core.embedding)
    t0 = time.time()
    assert worker.run_once(now=t0).retried == 2
    rows = queue_rows(core)
    assert all(r["status"] == "pending" and r["attempts"] == 1 for r in rows.values())
    assert all(t0 + 5 <= r["run_after"] <= t0 + 10 for r in rows.values())  # base 10, jittered to [5, 10]
    assert worker.run_once(now=t0 + 4).claimed == 0  # not due yet
    t1 = t0 + 100
    assert worker.run_once(now=t1).retried == 2
    rows = queue_rows(core)
    assert all(r["attempts"] == 2 and t1 + 10 <= r["run_after"] <= t1 + 20 for r in rows.values())
    assert worker.run_once(now=t0 + LATER).failed == 2
    assert fake_provider.count == 3
    rows = queue_rows(core)
    for entry_id in ids:
        assert rows[entry_id]["status"] == "failed" and rows[entry_id]["attempts"] == 3
        assert f"HTTP {status}" in rows[entry_id]["error"]
        assert "upstream model server exploded" in rows[entry_id]["error"]
    failed_events = [e for e in event_rows(core) if e[0] == "embed_failed"]
    assert sorted(e[2] for e in failed_events) == sorted(ids)
    assert all(f"HTTP {status}" in e[4] for e in failed_events)
    assert f"HTTP {status}" in core.embedding.status()["last_error"]
    assert chunk_count(core) == 0


def test_server_error_then_recovery(make_core, fake_provider: FakeProvider) -> None:
    fake_provider.fail_nth = {1: (503, {}, "overloaded")}
    core = make_core("openai")
    ids = add(core, 3)
    run_rounds(EmbeddingWorker(core.embedding), time.time(), 2)
    assert fake_provider.statuses() == [503, 200]
    rows = queue_rows(core)
    assert {i: (rows[i]["status"], rows[i]["attempts"], rows[i]["error"]) for i in ids} == \
        {i: ("done", 2, None) for i in ids}


def test_connection_reset_retries_then_fails(make_core, fake_provider: FakeProvider) -> None:
    fake_provider.reset_all = True
    core = make_core("openai")
    ids = add(core, 2)
    worker = EmbeddingWorker(core.embedding)
    t0 = time.time()
    assert worker.run_once(now=t0).retried == 2
    assert all(t0 + 5 <= r["run_after"] <= t0 + 10 for r in queue_rows(core).values())  # the queue's backoff
    assert worker.run_once(now=t0 + 4).claimed == 0
    run_rounds(worker, t0 + LATER, 2)
    rows = queue_rows(core)
    assert fake_provider.count == 3
    for entry_id in ids:
        assert rows[entry_id]["status"] == "failed" and rows[entry_id]["attempts"] == 3
        assert "connection failed" in rows[entry_id]["error"]
    assert chunk_count(core) == 0


def test_connection_reset_once_then_recovery(make_core, fake_provider: FakeProvider) -> None:
    fake_provider.reset_nth = {1}
    core = make_core("openai")
    ids = add(core, 2)
    run_rounds(EmbeddingWorker(core.embedding), time.time(), 2)
    assert fake_provider.statuses() == [-1, 200]
    assert statuses(core) == {i: "done" for i in ids}


def test_timeout_retries_then_fails(make_core, fake_provider: FakeProvider) -> None:
    fake_provider.hang_all = True
    fake_provider.hang_seconds = 1.5
    core = make_core("openai", timeout=0.3)
    ids = add(core, 2)
    started = time.perf_counter()
    worker = EmbeddingWorker(core.embedding)
    t0 = time.time()
    assert worker.run_once(now=t0).retried == 2
    assert all(t0 + 5 <= r["run_after"] <= t0 + 10 for r in queue_rows(core).values())  # the queue's backoff
    run_rounds(worker, t0 + LATER, 2)
    assert time.perf_counter() - started < 3.0  # the client gave up each time, well before the server answered
    rows = queue_rows(core)
    for entry_id in ids:
        assert rows[entry_id]["status"] == "failed" and rows[entry_id]["attempts"] == 3
        assert "timed out" in rows[entry_id]["error"]
    assert chunk_count(core) == 0


# -- 400 for one input: bisection ---------------------------------------------------------------


@pytest.mark.parametrize("bad", [(4,), (0, 9)], ids=["one-bad", "two-bad"])
def test_bad_input_is_isolated_by_bisection(make_core, fake_provider: FakeProvider, bad: tuple[int, ...]) -> None:
    fake_provider.bad_marker = "POISON"
    core = make_core("openai", batch_size=10)
    ids = add(core, 10, body=lambda i: "contains POISON here" if i in bad else f"a fine text {i}")
    result = EmbeddingWorker(core.embedding).run_once(now=time.time())
    assert (result.done, result.failed, result.retried) == (10 - len(bad), len(bad), 0)
    rows = queue_rows(core)
    for i, entry_id in enumerate(ids):
        if i in bad:
            assert rows[entry_id]["status"] == "failed" and rows[entry_id]["attempts"] == 1
            assert "HTTP 400" in rows[entry_id]["error"]
            assert f"rejected (POISON): 'Note {i}" in rows[entry_id]["error"]  # the provider's own message
            assert chunk_count(core, entry_id) == 0
        else:
            assert rows[entry_id]["status"] == "done"
            assert chunk_count(core, entry_id) == 1
    assert fake_provider.count <= 1 + 2 * len(bad) * math.ceil(math.log2(10))
    assert sorted(e[2] for e in event_rows(core) if e[0] == "embed_failed") == sorted(ids[i] for i in bad)


# -- misconfiguration: bad key, wrong model ----------------------------------------------------------


@pytest.mark.parametrize("auth_status", [401, 403])
def test_bad_key_pauses_without_burning_attempts_and_resumes_when_fixed(
        monkeypatch, caplog, make_core, fake_provider: FakeProvider, auth_status: int) -> None:
    fake_provider.required_key = GOOD_KEY
    fake_provider.auth_status = auth_status
    fake_provider.echo_key = True
    core = make_core("openai")
    core.provider.reload = load_settings
    ids = add(core, 3)
    worker = EmbeddingWorker(core.embedding)
    t0 = time.time()
    with caplog.at_level(logging.DEBUG):
        first = worker.run_once(now=t0)
        assert (first.released, first.failed, first.done) == (3, 0, 0)
        assert worker.paused_until == pytest.approx(t0 + MISCONFIGURED_PAUSE_S)
        status = core.embedding.status()
        assert f"HTTP {auth_status}" in status["provider_error"]
        assert "Incorrect API key provided" in status["provider_error"]
        assert "PYRITE_EMBED_API_KEY" in status["provider_error"]
        assert worker.last_error == status["provider_error"]
        assert worker.run_once(now=t0 + 10).claimed == 0  # paused: nothing sent
        assert fake_provider.count == 1
        # Unfixed, the worker keeps pausing and retrying, and never burns the items' attempts.
        t = run_rounds(worker, t0 + MISCONFIGURED_PAUSE_S + 1, 4, step=MISCONFIGURED_PAUSE_S + 1)
        assert fake_provider.count == 5
        rows = queue_rows(core)
        assert all(r["status"] == "pending" and r["attempts"] == 0 for r in rows.values())
        # The user fixes the key: the worker picks it up when the pause ends.
        monkeypatch.setenv("PYRITE_EMBED_API_KEY", GOOD_KEY)
        assert worker.run_once(now=t).done == 3
    assert fake_provider.requests[-1].headers["authorization"] == f"Bearer {GOOD_KEY}"
    assert statuses(core) == {i: "done" for i in ids}
    assert core.embedding.status()["provider_error"] is None
    assert KEY not in json.dumps(status) and KEY not in caplog.text and KEY not in str(worker.last_error)


@pytest.mark.parametrize("provider, status, message", [
    ("openai", 404, "The model `{model}` does not exist or you do not have access to it."),
    ("openai", 400, "Invalid model name passed in model={model}"),
    ("gemini", 404, "models/{model} is not found for API version v1beta, or is not supported for embedContent."),
], ids=["openai-404", "openai-400", "gemini-404"])
def test_wrong_model_pauses_and_resumes_when_fixed(monkeypatch, make_core, fake_provider: FakeProvider,
                                                   provider: str, status: int, message: str) -> None:
    fake_provider.models = {"good-model"}
    fake_provider.model_status = status
    fake_provider.model_message = message
    core = make_core(provider, model="no-such-model")
    core.provider.reload = load_settings
    ids = add(core, 3)
    worker = EmbeddingWorker(core.embedding)
    t0 = time.time()
    first = worker.run_once(now=t0)
    assert (first.released, first.failed, first.retried) == (3, 0, 0)
    assert worker.paused_until == pytest.approx(t0 + MISCONFIGURED_PAUSE_S)
    provider_error = core.embedding.status()["provider_error"]
    assert f"HTTP {status}" in provider_error and "no-such-model" in provider_error
    assert "PYRITE_EMBED_MODEL" in provider_error
    assert all(r["attempts"] == 0 and r["status"] == "pending" for r in queue_rows(core).values())
    monkeypatch.setenv("PYRITE_EMBED_MODEL", "good-model")
    assert worker.run_once(now=t0 + MISCONFIGURED_PAUSE_S + 1).done == 3
    assert statuses(core) == {i: "done" for i in ids}
    assert q(core, "SELECT DISTINCT model FROM chunks") == [(f"{provider}:good-model",)]


# -- answers that must not be stored --------------------------------------------------------------


def _assert_all_failed(core: Pyrite, ids: list[str], fragment: str) -> None:
    rows = queue_rows(core)
    for entry_id in ids:
        assert rows[entry_id]["status"] == "failed", rows[entry_id]
        assert rows[entry_id]["attempts"] == 3
        assert fragment in rows[entry_id]["error"], rows[entry_id]["error"]
        assert chunk_count(core, entry_id) == 0


def test_wrong_vector_count_rejected(make_core, fake_provider: FakeProvider) -> None:
    fake_provider.drop_one = True
    core = make_core("openai")
    ids = add(core, 3)
    worker = EmbeddingWorker(core.embedding)
    t0 = time.time()
    assert worker.run_once(now=t0).retried == 3
    assert chunk_count(core) == 0
    run_rounds(worker, t0 + LATER, 2)
    _assert_all_failed(core, ids, "2 vectors for 3 inputs")


def test_wrong_dimension_against_config_rejected(make_core, fake_provider: FakeProvider) -> None:
    fake_provider.honour_dimensions = False  # answers 32 whatever was asked
    core = make_core("openai", dimensions=16)
    ids = add(core, 2)
    run_rounds(EmbeddingWorker(core.embedding), time.time(), 3)
    _assert_all_failed(core, ids, "dimension 32, expected 16")


def test_wrong_dimension_against_learned_rejected(make_core, fake_provider: FakeProvider) -> None:
    core = make_core("openai")
    [first] = add(core, 1, prefix="First")
    worker = EmbeddingWorker(core.embedding)
    t0 = time.time()
    assert worker.run_once(now=t0).done == 1
    fake_provider.answer_dimension = 33  # the server changes its mind
    ids = add(core, 2)
    run_rounds(worker, t0 + 1, 3)
    _assert_all_failed(core, ids, "dimension 33, expected 32")
    assert chunk_count(core, first) == 1


@pytest.mark.parametrize("switch", ["nan_all", "inf_all"])
def test_non_finite_vectors_rejected(make_core, fake_provider: FakeProvider, switch: str) -> None:
    setattr(fake_provider, switch, True)
    core = make_core("openai")
    ids = add(core, 3)
    worker = EmbeddingWorker(core.embedding)
    t0 = time.time()
    worker.run_once(now=t0)
    assert chunk_count(core) == 0
    assert all(r["status"] == "pending" and r["attempts"] == 1 for r in queue_rows(core).values())
    run_rounds(worker, t0 + LATER, 2)
    _assert_all_failed(core, ids, "NaN or infinite")


def test_nan_for_one_input_fails_only_that_item(make_core, fake_provider: FakeProvider) -> None:
    fake_provider.nan_marker = "NANME"
    core = make_core("openai", batch_size=6)
    ids = add(core, 6, body=lambda i: "NANME" if i == 2 else f"fine {i}")
    worker = EmbeddingWorker(core.embedding)
    t0 = time.time()
    result = worker.run_once(now=t0)
    assert (result.done, result.retried) == (5, 1)
    run_rounds(worker, t0 + LATER, 2)
    _assert_all_failed(core, [ids[2]], "NaN or infinite")
    assert all(statuses(core)[i] == "done" for k, i in enumerate(ids) if k != 2)


# -- the API key stays secret ---------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_api_key_never_in_errors_events_status_or_logs(caplog, make_core, fake_provider: FakeProvider,
                                                       provider: str) -> None:
    """The server quotes the key it received in every error; pyrite must never repeat it."""
    fake_provider.echo_key = True
    fake_provider.bad_marker = "POISON"
    core = make_core(provider, batch_size=4)
    core.provider.reload = load_settings
    add(core, 4, body=lambda i: "POISON" if i == 1 else f"text {i}")
    worker = EmbeddingWorker(core.embedding)
    t = time.time()
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        fake_provider.required_key = GOOD_KEY  # 401 quoting our key
        seen += worker.run_once(now=t).errors
        fake_provider.required_key = None
        fake_provider.fail_nth = {2: (429, {"Retry-After": "1"}, "slow down"),
                                  3: (500, {}, "boom")}
        for _ in range(5):
            t += LATER
            seen += worker.run_once(now=t).errors
        seen.append(str(worker.last_error))
        seen.append(json.dumps(core.embedding.status()))
        seen.append(json.dumps(core.embedding.failed()))
        seen.append(json.dumps(event_rows(core)))
        seen.append(json.dumps(list(queue_rows(core).values())))
    everything = "\n".join(seen) + caplog.text
    assert fake_provider.statuses()[:3] == [401, 429, 500]
    assert "key sent: ***" in everything  # the server did quote it, and pyrite redacted it
    assert KEY not in everything


def test_api_key_not_leaked_when_the_error_message_is_cut(make_core, fake_provider: FakeProvider) -> None:
    """A long provider message is cut to a few hundred characters: no piece of the key may survive the cut."""
    fake_provider.echo_key = True
    fake_provider.fail_all = (500, "internal error")
    core = make_core("openai")
    add(core, 1)
    t = time.time()
    leaks = []
    # Pad the message so the key straddles each plausible cut (the key follows "internal error (key sent: ").
    for cut in (100, 200, 256, 300, 400, 500, 512, 1000, 1024, 2000):
        pad = cut - len("internal error (key sent: ") - len(KEY) // 2
        fake_provider.message_padding = "x" * max(0, pad)
        core.embedding.requeue(statuses=("failed", "pending"), now=t)
        errors = EmbeddingWorker(core.embedding).run_once(now=t).errors
        t += LATER
        for error in errors + [r["error"] or "" for r in queue_rows(core).values()]:
            pieces = [KEY[i:i + 12] for i in range(len(KEY) - 11)]
            leaks += [p for p in pieces if p in error]
    assert not leaks, f"key fragments in errors: {sorted(set(leaks))[:3]}"


# -- pyrite embedders test ----------------------------------------------------------------------------


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update({k: v for k, v in env.items()})
    return subprocess.run([sys.executable, "-m", "pyrite", *args], capture_output=True, text=True,
                          env=full, cwd=ROOT, timeout=60)


def _remote_env(fake: FakeProvider, provider: str = "openai", **extra: str) -> dict[str, str]:
    env = {"PYRITE_EMBED_PROVIDER": provider,
           "PYRITE_EMBED_URL": fake.url if provider == "openai" else fake.gemini_url,
           "PYRITE_EMBED_API_KEY": KEY}
    env.update(extra)
    return env


def test_cli_embedders_test_ok(fake_provider: FakeProvider) -> None:
    fake_provider.delay = 0.2
    out = _cli("embedders", "test", "--format", "json", **_remote_env(fake_provider))
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["ok"] is True
    assert (info["provider"], info["model"], info["dimension"]) == ("openai", "text-embedding-3-small", 32)
    assert 0.2 <= info["seconds"] < 5
    assert KEY not in out.stdout + out.stderr
    text = _cli("embedders", "test", **_remote_env(fake_provider, "gemini", PYRITE_EMBED_DIMENSIONS="12"))
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("ok: gemini gemini-embedding-001, dimension 12, ")
    assert fake_provider.requests[-1].headers["x-goog-api-key"] == KEY


@pytest.mark.parametrize("fault, expected", [
    ("bad-key", ["HTTP 401", "Incorrect API key provided", "PYRITE_EMBED_API_KEY"]),
    ("bad-model", ["HTTP 404", "does not exist", "PYRITE_EMBED_MODEL"]),
    ("unreachable", ["connection failed"]),
])
def test_cli_embedders_test_reports_the_exact_error(fake_provider: FakeProvider, fault: str,
                                                    expected: list[str]) -> None:
    env = _remote_env(fake_provider)
    fake_provider.echo_key = True
    if fault == "bad-key":
        fake_provider.required_key = GOOD_KEY
    elif fault == "bad-model":
        fake_provider.models = {"good-model"}
    else:
        env["PYRITE_EMBED_URL"] = f"http://127.0.0.1:{_closed_port()}/v1"
    out = _cli("embedders", "test", **env)
    assert out.returncode == 1
    assert out.stderr.startswith("Error: openai text-embedding-3-small: ")
    for fragment in expected:
        assert fragment in out.stderr
    assert KEY not in out.stdout + out.stderr
    as_json = _cli("embedders", "test", "--format", "json", **env)
    assert as_json.returncode == 1
    info = json.loads(as_json.stdout)
    assert info["ok"] is False and all(f in info["error"] for f in expected)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- concurrency ----------------------------------------------------------------------------------------


def test_concurrency_scales_throughput(tmp_path: Path, make_core, fake_provider: FakeProvider) -> None:
    """40 items in batches of 2 against a server taking 100 ms a request: 4 in flight beats 1 by > 2x."""
    fake_provider.delay = 0.1
    seconds = {}
    in_flight = {}
    for concurrency in (1, 4):
        core = make_core("openai", home=tmp_path / f"c{concurrency}",
                         flags={"embed_concurrency": concurrency, "embed_batch_size": 2})
        add(core, 40)
        fake_provider.reset()
        seconds[concurrency] = drain(core)
        in_flight[concurrency] = fake_provider.in_flight_max
        assert set(statuses(core).values()) == {"done"}
        assert fake_provider.sizes() == [2] * 20
    assert in_flight == {1: 1, 4: 4}
    assert seconds[1] >= 2.0
    assert seconds[1] / seconds[4] > 2.0, seconds
