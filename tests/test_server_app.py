"""The REST + WebSocket app in-process, through Starlette's TestClient (entered, so the lifespan and its
embedding worker run). The hash embedder keeps it fast; a controllable subclass of it makes the
timing-dependent cases (read-your-writes, failures) deterministic."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import anyio
import numpy as np
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.embedders.hashing import HashEmbedder
from pyrite.models import EMBED_STATUSES
from pyrite.server.app import ROUTES, create_app

HASH_MODEL = "hash:hash-384"
LOOPBACK = "http://127.0.0.1"  # the Host the server answers without configuration
WS = "ws://127.0.0.1"  # TestClient.websocket_connect joins relative URLs onto ws://testserver


# -- helpers ---------------------------------------------------------------------------------------


class ControlledEmbedder(HashEmbedder):
    """The hash embedder, plus: fail texts holding a poison word, and sleep on entry texts (not queries)."""

    def __init__(self) -> None:
        super().__init__()
        self.poison: set[str] = set()
        self.entry_delay = 0.0

    def embed(self, texts: list[str]) -> np.ndarray:
        for text in texts:
            for word in self.poison:
                if word in text:
                    raise RuntimeError(f"poisoned text ({word})")
        # Entry texts are "title\n\nbody"; a search query has no blank line.
        if self.entry_delay and any("\n\n" in t for t in texts):
            time.sleep(self.entry_delay)
        return super().embed(texts)


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll check() until it returns something truthy; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what or check}; last value: {last!r}")


def assert_error(response: Any, *statuses: int) -> str:
    """The response has one of statuses and a JSON body {"error": "<non-empty message>"}; return the message."""
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"].strip(), body
    assert "Traceback" not in body["error"]
    return body["error"]


def ws_receive(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Receive one JSON event, failing (instead of hanging) after timeout seconds."""

    async def receive() -> Any:
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()

    try:
        message = ws.portal.call(receive)
    except TimeoutError:
        pytest.fail(f"no WebSocket message within {timeout}s")
    ws._raise_on_close(message)
    return json.loads(message["text"])


def ws_collect(ws: Any, want: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0) -> list[dict[str, Any]]:
    """Receive events until want(events) holds."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not want(events):
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"WebSocket events so far do not satisfy the test: {events}")
        events.append(ws_receive(ws, timeout=left))
    return events


def entry_status(client: TestClient, kb: str, entry_id: str) -> str | None:
    r = client.get(f"/api/entries/{kb}/{entry_id}")
    assert r.status_code == 200, r.text
    return r.json()["embedding_status"]


def wait_done(client: TestClient, kb: str, entry_id: str, timeout: float = 10.0) -> None:
    wait_until(lambda: entry_status(client, kb, entry_id) == "done", timeout, what=f"{kb}/{entry_id} done")


def new_entry(client: TestClient, title: str, body: str = "", kb: str = "notes", **extra: Any) -> dict[str, Any]:
    r = client.post("/api/entries", json={"kb": kb, "title": title, "body": body, **extra})
    assert r.status_code == 201, r.text
    return r.json()


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def client(pyrite_home: Path) -> Iterator[TestClient]:
    """The app with its worker, lifespan running, and a KB 'notes'."""
    with TestClient(create_app(load_settings(), worker=True), base_url=LOOPBACK) as c:
        assert c.post("/api/kbs", json={"name": "notes"}).status_code == 201
        yield c


@contextlib.contextmanager
def serving(embedder: HashEmbedder) -> Iterator[TestClient]:
    """The app with its worker over this embedder, lifespan running, and a KB 'notes'."""
    settings = load_settings()
    core = Pyrite(settings, embedder=embedder)
    try:
        with TestClient(create_app(settings, worker=True, core=core), base_url=LOOPBACK) as c:
            assert c.post("/api/kbs", json={"name": "notes"}).status_code == 201
            yield c
    finally:
        core.close()


@pytest.fixture
def controlled(pyrite_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, ControlledEmbedder]]:
    """The app with its worker over a ControlledEmbedder; one attempt per item, so a failure is final."""
    monkeypatch.setenv("PYRITE_EMBED_MAX_ATTEMPTS", "1")
    embedder = ControlledEmbedder()
    with serving(embedder) as c:
        yield c, embedder


# -- health and KBs ----------------------------------------------------------------------------------


def test_health_reports_running_worker_and_model(client: TestClient) -> None:
    def running() -> dict[str, Any] | None:
        body = client.get("/api/health").json()
        return body if body["worker"]["running"] else None

    body = wait_until(running, what="the worker to report running")
    assert body["status"] == "ok"
    assert isinstance(body["version"], str) and body["version"]
    assert body["worker"]["id"]
    assert body["worker"]["last_error"] is None
    assert body["model"]["id"] == HASH_MODEL
    assert body["model"]["loaded"] is True
    assert body["semantic_search"] is True


def test_health_without_worker(pyrite_home: Path) -> None:
    with TestClient(create_app(load_settings(), worker=False), base_url=LOOPBACK) as c:
        body = c.get("/api/health").json()
    assert body["worker"]["running"] is False
    assert body["worker"]["id"] is None
    assert body["model"]["id"] == HASH_MODEL


def test_kb_create_list_and_conflict(client: TestClient, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    r = client.post("/api/kbs", json={"name": "work_2", "path": str(folder), "create": True})
    assert r.status_code == 201, r.text
    kb = r.json()
    assert kb["name"] == "work_2" and Path(kb["path"]) == folder.resolve() and folder.is_dir()
    new_entry(client, "One entry")
    kbs = client.get("/api/kbs").json()["kbs"]
    assert [k["name"] for k in kbs] == ["notes", "work_2"]
    assert {k["name"]: k["entries"] for k in kbs} == {"notes": 1, "work_2": 0}
    assert "exists" in assert_error(client.post("/api/kbs", json={"name": "notes"}), 409)
    # The same folder cannot belong to two KBs.
    assert_error(client.post("/api/kbs", json={"name": "other", "path": str(folder)}), 409)


def test_kb_bad_names_are_400(client: TestClient) -> None:
    for name in ["", "a/b", "..", "a.b", "with space", "x" * 65, "é", "a\x00b", "-" * 65, "CON/x", "a\\b"]:
        r = client.post("/api/kbs", json={"name": name})
        assert r.status_code == 400, (name, r.status_code, r.text)
        assert_error(r, 400)
    assert [k["name"] for k in client.get("/api/kbs").json()["kbs"]] == ["notes"]


def test_kb_bad_paths_are_400(client: TestClient, tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert_error(client.post("/api/kbs", json={"name": "f", "path": str(a_file)}), 400)
    assert_error(client.post("/api/kbs", json={"name": "g", "path": ""}), 400)
    assert_error(client.post("/api/kbs", json={"name": "h", "path": "a\x00b"}), 400)


# -- entries -----------------------------------------------------------------------------------------


def test_create_answers_201_at_once_then_embeds(client: TestClient) -> None:
    entry = new_entry(client, "Kubernetes pods", "Pods are the smallest deployable units", tags=["k8s"], type="concept")
    assert entry["id"] == "kubernetes-pods"
    assert entry["kb"] == "notes" and entry["title"] == "Kubernetes pods" and entry["tags"] == ["k8s"]
    assert entry["type"] == "concept" and entry["body"] == "Pods are the smallest deployable units"
    assert entry["embedding_status"] in ("pending", "processing", "done")
    wait_done(client, "notes", "kubernetes-pods")
    # A second entry with the same title gets a suffixed id, never overwrites the first.
    assert new_entry(client, "Kubernetes pods")["id"] == "kubernetes-pods-2"


def test_get_patch_delete_entry(client: TestClient, pyrite_home: Path) -> None:
    new_entry(client, "Draft note", "first body", tags=["a"], meta={"source": "web"})
    got = client.get("/api/entries/notes/draft-note")
    assert got.status_code == 200
    assert got.json()["body"] == "first body" and got.json()["meta"] == {"source": "web"}

    r = client.patch("/api/entries/notes/draft-note", json={"body": "second body", "tags": ["b", "c"]})
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["id"] == "draft-note" and patched["title"] == "Draft note"
    assert patched["body"] == "second body" and patched["tags"] == ["b", "c"]
    assert patched["meta"] == {"source": "web"}
    wait_done(client, "notes", "draft-note")
    assert client.get("/api/search", params={"q": "second", "mode": "keyword"}).json()["results"][0]["id"] == "draft-note"
    md = pyrite_home / "kbs" / "notes" / "draft-note.md"
    assert "second body" in md.read_text()

    r = client.delete("/api/entries/notes/draft-note")
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": {"kb": "notes", "id": "draft-note"}}
    assert not md.exists()
    assert_error(client.get("/api/entries/notes/draft-note"), 404)
    assert_error(client.delete("/api/entries/notes/draft-note"), 404)
    assert client.get("/api/search", params={"q": "second", "mode": "keyword"}).json()["results"] == []


def test_list_entries_newest_first_within_one_second(client: TestClient) -> None:
    # Created within the same second: "newest first" must still hold (their ids sort the other way).
    for name in ("a", "b", "c"):
        new_entry(client, f"Entry {name}", f"body {name}")
    entries = client.get("/api/entries", params={"kb": "notes"}).json()["entries"]
    assert [e["id"] for e in entries] == ["entry-c", "entry-b", "entry-a"]


def test_list_entries(client: TestClient) -> None:
    for name in ("a", "b", "c"):
        new_entry(client, f"Entry {name}", f"body {name}")
    r = client.get("/api/entries", params={"kb": "notes"})
    assert r.status_code == 200
    entries = r.json()["entries"]
    assert sorted(e["id"] for e in entries) == ["entry-a", "entry-b", "entry-c"]
    assert [e["updated"] for e in entries] == sorted((e["updated"] for e in entries), reverse=True)
    assert all("body" not in e for e in entries)
    page = client.get("/api/entries", params={"kb": "notes", "limit": 1, "offset": 1}).json()["entries"]
    assert [e["id"] for e in page] == [entries[1]["id"]]
    assert_error(client.get("/api/entries"), 422)
    assert_error(client.get("/api/entries", params={"kb": "notes", "limit": 0}), 422)
    assert_error(client.get("/api/entries", params={"kb": "notes", "limit": "ten"}), 422)
    assert_error(client.get("/api/entries", params={"kb": "notes", "offset": -1}), 422)
    assert_error(client.get("/api/entries", params={"kb": "nope"}), 404)


# -- search --------------------------------------------------------------------------------------------


@pytest.fixture
def searchable(client: TestClient) -> TestClient:
    new_entry(client, "Kubernetes pods", "Pods are the smallest deployable units of computing")
    new_entry(client, "Sourdough bread", "Flour water salt and a starter; bake in a hot oven")
    new_entry(client, "Tax return", "File the yearly declaration before the deadline")
    for entry_id in ("kubernetes-pods", "sourdough-bread", "tax-return"):
        wait_done(client, "notes", entry_id)
    return client


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_search_modes(searchable: TestClient, mode: str) -> None:
    r = searchable.get("/api/search", params={"q": "sourdough starter oven", "mode": mode, "kb": "notes"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == mode
    assert body["pending"] == 0
    assert body["results"], body
    top = body["results"][0]
    assert top["id"] == "sourdough-bread" and top["kb"] == "notes" and top["title"] == "Sourdough bread"
    assert isinstance(top["score"], (int, float))
    assert "embedding_status" not in top  # only shown for entries not embedded yet


def test_search_default_mode_and_limit(searchable: TestClient) -> None:
    body = searchable.get("/api/search", params={"q": "the"}).json()
    assert body["mode"] == "hybrid"
    body = searchable.get("/api/search", params={"q": "pods bread tax", "mode": "semantic", "limit": 2}).json()
    assert len(body["results"]) == 2


def test_search_with_wait_finds_a_just_written_entry_semantically(
        controlled: tuple[TestClient, ControlledEmbedder]) -> None:
    client, embedder = controlled
    embedder.entry_delay = 1.0  # the worker takes 1 s per entry batch; queries stay instant
    new_entry(client, "Volcano eruption", "Magma lava ash plume crater")
    quick = client.get("/api/search", params={"q": "magma lava crater", "mode": "semantic"}).json()
    assert quick["pending"] >= 1  # control: without wait the entry is not embedded yet
    assert "volcano-eruption" not in [h["id"] for h in quick["results"]]

    new_entry(client, "Glacier retreat", "Ice melt moraine fjord")
    r = client.get("/api/search", params={"q": "ice melt moraine", "mode": "semantic", "wait": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pending"] == 0, body
    assert body["results"][0]["id"] == "glacier-retreat", body


HOSTILE_QUERIES = [
    '"', '""', "'", "AND", "OR NOT", "NEAR(a b)", "a*", "*", "title:x", "-x", "^x", "(", ")", "{a}", "[x]",
    "a AND (b OR", "\\", "%", "_", "'; DROP TABLE entries; --", "🔥🔥", "مرحبا", "ﷺ", "\u200b", "a" * 5000,
    "x " * 200, "NEAR/3", "col:*", '"unterminated', "...", "\t\n", "a" * 10_001, "\x00", "a\x00b", " ",
    "\ufffd", "\U0010ffff", "e\u0301", "ＡＮＤ", "a\u2028b",
]


def test_hostile_search_strings_never_crash(searchable: TestClient) -> None:
    problems = []
    for query in HOSTILE_QUERIES:
        for mode in ("keyword", "semantic", "hybrid"):
            r = searchable.get("/api/search", params={"q": query, "mode": mode})
            if r.status_code == 200 and isinstance(r.json().get("results"), list):
                continue
            if r.status_code == 400 and set(r.json()) == {"error"}:
                continue
            problems.append((query[:40], mode, r.status_code, r.text[:200]))
    assert not problems, problems
    # Entries are still intact afterwards.
    assert searchable.get("/api/search", params={"q": "sourdough", "mode": "keyword"}).json()["results"]


def test_search_bad_parameters(client: TestClient) -> None:
    assert_error(client.get("/api/search"), 422)
    assert_error(client.get("/api/search", params={"q": ""}), 400)
    assert_error(client.get("/api/search", params={"q": "x", "mode": "fuzzy"}), 422)
    assert_error(client.get("/api/search", params={"q": "x", "limit": "abc"}), 422)
    assert_error(client.get("/api/search", params={"q": "x", "limit": 0}), 422)
    assert_error(client.get("/api/search", params={"q": "x", "limit": 10**6}), 422)
    assert_error(client.get("/api/search", params={"q": "x", "wait": -1}), 422)
    assert_error(client.get("/api/search", params={"q": "x", "wait": "nan"}), 422)
    assert_error(client.get("/api/search", params={"q": "x", "wait": "soon"}), 422)
    assert_error(client.get("/api/search", params={"q": "x", "kb": "nope"}), 404)
    assert_error(client.get("/api/search", params={"q": "x", "kb": "../etc"}), 400)


# -- the embedding queue ----------------------------------------------------------------------------------


def test_embed_status_keys(client: TestClient) -> None:
    new_entry(client, "Status entry", "some text")
    new_entry(client, "Blank body")  # title only: still embedded
    wait_done(client, "notes", "status-entry")
    r = client.get("/api/index/embed-status")
    assert r.status_code == 200
    status = r.json()
    for key in ("counts", "oldest_pending_age_s", "workers", "last_error", "model"):
        assert key in status, (key, status)
    assert set(status["counts"]) == set(EMBED_STATUSES) == {"pending", "processing", "done", "failed", "skipped"}
    assert all(isinstance(n, int) for n in status["counts"].values())
    wait_until(lambda: client.get("/api/index/embed-status").json()["counts"]["done"] == 2, what="2 done")
    status = client.get("/api/index/embed-status").json()
    assert status["oldest_pending_age_s"] is None
    assert status["model"] == HASH_MODEL
    assert status["last_error"] is None
    worker_id = client.get("/api/health").json()["worker"]["id"]
    assert worker_id in [w["id"] for w in status["workers"]]
    per_kb = client.get("/api/index/embed-status", params={"kb": "notes"}).json()
    assert per_kb["counts"]["done"] == 2
    assert_error(client.get("/api/index/embed-status", params={"kb": "nope"}), 404)
    assert_error(client.get("/api/index/embed-status", params={"kb": "a/b"}), 400)


def test_failed_listing_and_requeue(controlled: tuple[TestClient, ControlledEmbedder]) -> None:
    client, embedder = controlled
    embedder.poison = {"POISON"}
    new_entry(client, "Bad apple", "POISON inside")
    new_entry(client, "Good apple", "fine text")
    wait_until(lambda: entry_status(client, "notes", "bad-apple") == "failed", what="the poisoned entry to fail")
    wait_done(client, "notes", "good-apple")

    failed = client.get("/api/index/embed/failed").json()["failed"]
    assert [(f["kb"], f["id"], f["title"]) for f in failed] == [("notes", "bad-apple", "Bad apple")]
    assert "poisoned" in failed[0]["error"] and failed[0]["attempts"] == 1 and failed[0]["failed_at"]
    assert client.get("/api/index/embed/failed", params={"kb": "notes", "limit": 1}).json()["failed"]
    status = client.get("/api/index/embed-status").json()
    assert status["counts"]["failed"] == 1
    assert "poisoned" in (status["last_error"] or "")
    entry = client.get("/api/entries/notes/bad-apple").json()
    assert entry["embedding_status"] == "failed" and "poisoned" in entry["embedding_error"]

    # Fix the cause, requeue: failed -> pending -> done; the done one is left alone.
    embedder.poison = set()
    r = client.post("/api/index/embed/requeue", json={})
    assert r.status_code == 200, r.text
    assert r.json() == {"queued": 1}
    wait_done(client, "notes", "bad-apple")
    assert client.get("/api/index/embed/failed").json()["failed"] == []
    assert client.post("/api/index/embed/requeue", json={"status": "failed"}).json() == {"queued": 0}


def test_requeue_done_and_only_missing(client: TestClient) -> None:
    new_entry(client, "Alpha", "first")
    new_entry(client, "Beta", "second")
    wait_done(client, "notes", "alpha")
    wait_done(client, "notes", "beta")
    assert client.post("/api/index/embed/requeue", json={"only_missing": True}).json() == {"queued": 0}

    # Pretend alpha's vectors were made by an older model: only_missing queues exactly that one.
    core: Pyrite = client.app.state.core  # type: ignore[attr-defined]
    with core.db.write() as conn:
        conn.execute("UPDATE embed_queue SET model = 'hash:old-model' WHERE entry_rowid = "
                     "(SELECT rowid FROM entries WHERE kb = 'notes' AND id = 'alpha')")
    r = client.post("/api/index/embed/requeue", json={"kb": "notes", "only_missing": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"queued": 1}
    wait_done(client, "notes", "alpha")
    model = core.db.query("SELECT q.model FROM embed_queue q JOIN entries e ON e.rowid = q.entry_rowid "
                          "WHERE e.id = 'alpha'")[0][0]
    assert model == HASH_MODEL

    r = client.post("/api/index/embed/requeue", json={"status": ["done"], "limit": 1})
    assert r.json() == {"queued": 1}
    wait_until(lambda: client.get("/api/index/embed-status").json()["counts"]["done"] == 2, what="2 done")


def test_requeue_bad_input(client: TestClient) -> None:
    assert_error(client.post("/api/index/embed/requeue", json={"status": "pending"}), 422)
    assert_error(client.post("/api/index/embed/requeue", json={"status": ["failed", "bogus"]}), 422)
    assert_error(client.post("/api/index/embed/requeue", json={"limit": 0}), 422)
    assert_error(client.post("/api/index/embed/requeue", json={"limit": "5"}), 422)
    assert_error(client.post("/api/index/embed/requeue", json={"limit": True}), 422)
    assert_error(client.post("/api/index/embed/requeue", json={"only_missing": 1}), 422)
    assert_error(client.post("/api/index/embed/requeue", json={"everything": True}), 422)
    assert_error(client.post("/api/index/embed/requeue", json={"kb": "nope"}), 404)
    assert_error(client.post("/api/index/embed/requeue", json={"kb": "../x"}), 400)
    assert_error(client.get("/api/index/embed/failed", params={"kb": "nope"}), 404)
    assert_error(client.get("/api/index/embed/failed", params={"limit": "x"}), 422)


@pytest.mark.parametrize("limit", [2**31, 2**62, 2**63, 10**30])
def test_requeue_huge_limit_is_not_a_server_error(client: TestClient, limit: int) -> None:
    r = client.post("/api/index/embed/requeue", json={"limit": limit})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert_error(r, 422)


# -- error handling --------------------------------------------------------------------------------------


MALFORMED = [b"{not json", b"{\"kb\": ", b"\xff\xfe\x00", b"[1, 2]", b"\"a string\"", b"42", b"null",
             b"{'single': 'quotes'}", b"{\"a\": 1,}", b"\xef\xbb\xbf{}x"]


@pytest.mark.parametrize("path", ["/api/entries", "/api/kbs", "/api/index/embed/requeue"])
def test_malformed_json_is_400(client: TestClient, path: str) -> None:
    for raw in MALFORMED:
        r = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, (raw, r.status_code, r.text)
        assert_error(r, 400)


def test_malformed_json_on_patch_is_400(client: TestClient) -> None:
    new_entry(client, "Patch me")
    assert_error(client.patch("/api/entries/notes/patch-me", content=b"{oops",
                              headers={"content-type": "application/json"}), 400)


WRONG_TYPES = [
    {"kb": "notes", "title": 5},
    {"kb": "notes", "title": None},
    {"kb": "notes"},
    {"title": "no kb"},
    {"kb": 7, "title": "x"},
    {"kb": "notes", "title": "x", "body": 12},
    {"kb": "notes", "title": "x", "body": ["a"]},
    {"kb": "notes", "title": "x", "tags": "one"},
    {"kb": "notes", "title": "x", "tags": [1, 2]},
    {"kb": "notes", "title": "x", "tags": [["nested"]]},
    {"kb": "notes", "title": "x", "meta": ["not", "a", "map"]},
    {"kb": "notes", "title": "x", "type": True},
    {"kb": "notes", "title": True},
]


def test_wrong_types_are_422(client: TestClient) -> None:
    for body in WRONG_TYPES:
        r = client.post("/api/entries", json=body)
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert_error(r, 422)
    assert client.get("/api/entries", params={"kb": "notes"}).json()["entries"] == []


def test_unknown_fields_are_422(client: TestClient) -> None:
    message = assert_error(client.post("/api/entries", json={"kb": "notes", "title": "x", "colour": "red"}), 422)
    assert "colour" in message
    assert_error(client.post("/api/kbs", json={"name": "x", "owner": "me"}), 422)
    new_entry(client, "Has fields")
    assert_error(client.patch("/api/entries/notes/has-fields", json={"id": "renamed"}), 422)
    assert_error(client.patch("/api/entries/notes/has-fields", json={"kb": "other"}), 422)
    assert_error(client.patch("/api/entries/notes/has-fields", json={"title": 3}), 422)


INVALID_VALUES = [
    {"kb": "notes", "title": "   "},
    {"kb": "notes", "title": "two\nlines"},
    {"kb": "notes", "title": "x" * 501},
    {"kb": "notes", "title": "x", "body": "nul\x00byte"},
    {"kb": "notes", "title": "x", "tags": [""]},
    {"kb": "notes", "title": "x", "type": "../evil"},
    {"kb": "notes", "title": "x", "meta": {"id": "override"}},
    {"kb": "notes", "title": "x", "meta": {"": 1}},
    {"kb": "../notes", "title": "x"},
]


def test_invalid_values_are_400(client: TestClient) -> None:
    for body in INVALID_VALUES:
        r = client.post("/api/entries", json=body)
        assert r.status_code == 400, (body, r.status_code, r.text)
        assert_error(r, 400)
    assert client.get("/api/entries", params={"kb": "notes"}).json()["entries"] == []


@pytest.mark.parametrize("raw", [
    b'{"kb": "notes", "title": "not a number", "meta": {"x": NaN}}',
    b'{"kb": "notes", "title": "infinite", "meta": {"x": Infinity}}',
    b'{"kb": "notes", "title": "overflow", "meta": {"x": 1e400}}',
])
def test_non_finite_numbers_are_refused_not_a_500(client: TestClient, raw: bytes) -> None:
    """JSON has no NaN/Infinity; Python's json module accepts them, and the answer cannot encode them."""
    r = client.post("/api/entries", content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), (r.status_code, r.text)
    assert_error(r, 400, 422)
    # A refused write must leave nothing behind.
    assert client.get("/api/entries", params={"kb": "notes"}).json()["entries"] == []


@pytest.mark.parametrize("raw", [
    b'{"kb": "notes", "title": "\\ud800"}',
    b'{"kb": "notes", "title": "ok", "body": "lone \\udfff surrogate"}',
    b'{"kb": "notes", "title": "ok", "tags": ["\\ud83d"]}',
    b'{"kb": "notes", "title": "ok", "meta": {"\\ud800": 1}}',
])
def test_lone_surrogates_are_refused_not_a_500(client: TestClient, raw: bytes) -> None:
    """A JSON string escape may name a lone UTF-16 surrogate, which no UTF-8 file can hold."""
    r = client.post("/api/entries", content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400, 422)


def test_deeply_nested_json_is_refused_not_a_500(client: TestClient) -> None:
    nested = b'{"kb": "notes", "title": "deep", "meta": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"
    assert_error(client.post("/api/entries", content=nested, headers={"content-type": "application/json"}), 400, 422)
    assert_error(client.post("/api/kbs", content=b"[" * 100_000, headers={"content-type": "application/json"}), 400)


def test_unknown_kb_and_entry_are_404(client: TestClient) -> None:
    assert "nope" in assert_error(client.post("/api/entries", json={"kb": "nope", "title": "x"}), 404)
    assert_error(client.get("/api/entries/nope/x"), 404)
    assert_error(client.patch("/api/entries/nope/x", json={"title": "y"}), 404)
    assert_error(client.delete("/api/entries/nope/x"), 404)
    assert_error(client.get("/api/entries/notes/missing"), 404)
    assert_error(client.patch("/api/entries/notes/missing", json={"title": "y"}), 404)
    assert_error(client.delete("/api/entries/notes/missing"), 404)
    assert_error(client.get("/api/no/such/route"), 404)


BAD_IDS = ["..", "%2e%2e", "%2E%2E", "a%2Fb", "%2e%2e%2Fsecret", "..%2F..%2Fetc%2Fpasswd", "%00", "a%00b",
           "%2e%2e/x", "a/../../b", "%ff", "%", "a%20b", "x" * 129, ".hidden", "trailing.", "a%5Cb", "%252e%252e",
           "secret%2F..%2F..%2Fsecret", "%2e%2e%5c%2e%2e"]


def test_invalid_entry_ids_are_4xx_never_5xx(client: TestClient, pyrite_home: Path) -> None:
    new_entry(client, "Secret", "do not leak")
    problems = []
    for entry_id in BAD_IDS:
        for method in ("GET", "PATCH", "DELETE"):
            r = client.request(method, f"/api/entries/notes/{entry_id}",
                               json={"body": "pwned"} if method == "PATCH" else None)
            # The client folds /notes/.. into /api/entries: that route answers, but never with an entry.
            allowed = (400, 404, 405, 422) if entry_id == ".." else (400, 404)
            if r.status_code not in allowed or set(r.json()) != {"error"}:
                problems.append((method, entry_id, r.status_code, r.text[:200]))
    assert not problems, problems
    # Nothing was changed or deleted, and nothing was written outside the KB folder.
    assert client.get("/api/entries/notes/secret").json()["body"] == "do not leak"
    assert sorted(p.name for p in (pyrite_home / "kbs" / "notes").iterdir()) == ["secret.md"]
    assert sorted(p.name for p in pyrite_home.iterdir() if not p.name.startswith("index.db")) == ["kbs"]


def test_invalid_kb_in_path_is_400(client: TestClient) -> None:
    for kb in ["%2e%2e", "a%00", "%00", "x" * 65, "a.b", "a%20b", "%2e"]:
        for method in ("GET", "PATCH", "DELETE"):
            r = client.request(method, f"/api/entries/{kb}/some-id", json={} if method == "PATCH" else None)
            assert r.status_code == 400, (method, kb, r.status_code, r.text)
            assert_error(r, 400)


def test_body_over_limit_is_413(pyrite_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRITE_MAX_BODY", "1000")
    with TestClient(create_app(load_settings()), base_url=LOOPBACK) as client:
        assert client.post("/api/kbs", json={"name": "notes"}).status_code == 201
        big = {"kb": "notes", "title": "big", "body": "x" * 2000}
        assert "1000" in assert_error(client.post("/api/entries", json=big), 413)
        new_entry(client, "Small", "y" * 100)
        assert_error(client.patch("/api/entries/notes/small", json={"body": "z" * 5000}), 413)

        # Without a Content-Length (chunked), the limit is enforced while streaming.
        def chunks() -> Iterator[bytes]:
            yield b'{"kb": "notes", "title": "streamed", "body": "'
            for _ in range(50):
                yield b"x" * 100
            yield b'"}'

        r = client.post("/api/entries", content=chunks(), headers={"content-type": "application/json"})
        assert_error(r, 413)
        # A lying Content-Length is refused, not a crash.
        assert_error(client.post("/api/entries", content=b"{}", headers={"content-length": "abc",
                                                                           "content-type": "application/json"}), 400)
        ids = [e["id"] for e in client.get("/api/entries", params={"kb": "notes"}).json()["entries"]]
        assert ids == ["small"]
        assert client.get("/api/entries/notes/small").json()["body"] == "y" * 100


# -- OpenAPI -----------------------------------------------------------------------------------------------


def test_openapi_lists_exactly_the_routes(client: TestClient) -> None:
    r = client.get("/api/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for route in ROUTES:
        if isinstance(route, Route):
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
            served |= {(path, m) for m in (route.methods or ()) if m != "HEAD"}
    assert documented == served
    # Every documented path parameter is declared, and every operation documents its error body.
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, method)
            assert op["responses"], (path, method)


# -- access ------------------------------------------------------------------------------------------------


def test_token_required_when_set(pyrite_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRITE_API_TOKEN", "s3cret-token")
    with TestClient(create_app(load_settings()), base_url=LOOPBACK) as client:
        for method, path, body in [("GET", "/api/health", None), ("GET", "/api/kbs", None),
                                   ("POST", "/api/kbs", {"name": "notes"}), ("GET", "/api/openapi.json", None),
                                   ("GET", "/api/search?q=x", None), ("GET", "/api/index/embed-status", None)]:
            r = client.request(method, path, json=body)
            assert_error(r, 401)
            assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
            for wrong in ("Bearer nope", "Bearer s3cret-toke", "Bearer s3cret-token-x", "Basic s3cret-token",
                          "s3cret-token", "Bearer", ""):
                assert_error(client.request(method, path, json=body, headers={"Authorization": wrong}), 401)
        assert client.get("/api/kbs").status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert client.get("/api/health", headers=good).status_code == 200
        assert client.post("/api/kbs", json={"name": "notes"}, headers=good).status_code == 201
        assert [k["name"] for k in client.get("/api/kbs", headers=good).json()["kbs"]] == ["notes"]

        with pytest.raises(WebSocketDisconnect) as refused:
            with client.websocket_connect(f"{WS}/ws") as ws:
                ws_receive(ws, timeout=2)
        assert refused.value.code == 4401
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect(f"{WS}/ws", headers={"Authorization": "Bearer wrong"}) as ws:
                ws_receive(ws, timeout=2)
        with client.websocket_connect(f"{WS}/ws", headers=good) as ws:
            assert client.post("/api/entries", json={"kb": "notes", "title": "Authed"}, headers=good).status_code == 201
            assert ws_receive(ws)["type"] == "entry_created"


def test_no_token_needed_when_unset(client: TestClient) -> None:
    assert client.get("/api/kbs").status_code == 200
    assert client.get("/api/kbs", headers={"Authorization": "Bearer anything"}).status_code == 200


# -- WebSocket --------------------------------------------------------------------------------------------


def test_websocket_pushes_created_and_embed_complete(client: TestClient) -> None:
    new_entry(client, "Before connecting")
    wait_done(client, "notes", "before-connecting")
    # Let the server's event tail see those events, so they count as "before connecting".
    hub = client.app.state.hub  # type: ignore[attr-defined]
    wait_until(lambda: hub.last_id >= 2, what="the event tail to catch up")
    with client.websocket_connect(f"{WS}/ws") as ws:
        new_entry(client, "After connecting", "live event")
        events = ws_collect(ws, lambda ev: any(e["type"] == "embed_complete" for e in ev))
    # Only events after connecting (no since): nothing about the first entry.
    assert {e["entry_id"] for e in events} == {"after-connecting"}, events
    types = [e["type"] for e in events]
    assert types[:1] == ["entry_created"] and types[-1] == "embed_complete"
    done = events[-1]
    assert done["kb"] == "notes" and done["model"] == HASH_MODEL and done["error"] is None
    assert set(done) >= {"id", "type", "kb", "entry_id", "model", "error", "time"}
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_websocket_pushes_update_delete_and_failure(controlled: tuple[TestClient, ControlledEmbedder]) -> None:
    client, embedder = controlled
    embedder.poison = {"POISON"}
    with client.websocket_connect(f"{WS}/ws") as ws:
        new_entry(client, "Doomed", "fine at first")
        ws_collect(ws, lambda ev: any(e["type"] == "embed_complete" for e in ev))
        assert client.patch("/api/entries/notes/doomed", json={"body": "now POISON"}).status_code == 200
        events = ws_collect(ws, lambda ev: any(e["type"] == "embed_failed" for e in ev))
        assert events[0]["type"] == "entry_updated"
        failed = events[-1]
        assert failed["entry_id"] == "doomed" and "poisoned" in failed["error"]
        assert client.delete("/api/entries/notes/doomed").status_code == 200
        deleted = ws_receive(ws)
        assert (deleted["type"], deleted["entry_id"]) == ("entry_deleted", "doomed")


def test_websocket_since_replays_in_order(pyrite_home: Path) -> None:
    with TestClient(create_app(load_settings(), worker=False), base_url=LOOPBACK) as client:
        client.post("/api/kbs", json={"name": "notes"})
        for title in ("First", "Second", "Third"):
            assert new_entry(client, title)["embedding_status"] == "done"
        with client.websocket_connect(f"{WS}/ws?since=0") as ws:
            events = [ws_receive(ws) for _ in range(6)]
            assert [(e["type"], e["entry_id"]) for e in events] == [
                ("entry_created", "first"), ("embed_complete", "first"),
                ("entry_created", "second"), ("embed_complete", "second"),
                ("entry_created", "third"), ("embed_complete", "third"),
            ]
            ids = [e["id"] for e in events]
            assert ids == sorted(ids) and len(set(ids)) == 6
            # Then it streams: a new write arrives after the replay, with a larger id.
            new_entry(client, "Fourth")
            live = ws_receive(ws)
            assert (live["type"], live["entry_id"]) == ("entry_created", "fourth") and live["id"] > ids[-1]
        # Resuming from an id replays only what came after it.
        with client.websocket_connect(f"{WS}/ws?since={ids[3]}") as ws:
            resumed = [ws_receive(ws) for _ in range(4)]
        assert [e["id"] for e in resumed] == ids[4:] + [live["id"], live["id"] + 1]
        assert [e["entry_id"] for e in resumed] == ["third", "third", "fourth", "fourth"]


def test_websocket_bad_since_is_refused(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect(f"{WS}/ws?since=abc") as ws:
            ws_receive(ws, timeout=2)
    assert refused.value.code == 1008


class SlowToLoad(HashEmbedder):
    """The hash embedder behind a model load that waits for the test's go."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.embedded = 0

    def load(self) -> None:
        assert self.go.wait(30), "the test never let the model load"

    def embed(self, texts: list[str]) -> np.ndarray:
        self.embedded += len(texts)
        return super().embed(texts)


def test_writes_while_the_model_loads_only_queue(pyrite_home: Path) -> None:
    embedder = SlowToLoad()
    try:
        with serving(embedder) as client:
            started = time.monotonic()
            entry = new_entry(client, "Early", "written while the server's model still loads")
            assert time.monotonic() - started < 5
            assert entry["embedding_status"] == "pending" and embedder.embedded == 0
            embedder.go.set()
            wait_done(client, "notes", "early")
    finally:
        embedder.go.set()  # never leave the worker's load waiting


# -- without a worker ---------------------------------------------------------------------------------------


def test_without_worker_post_embeds_synchronously(pyrite_home: Path) -> None:
    with TestClient(create_app(load_settings(), worker=False), base_url=LOOPBACK) as client:
        assert client.post("/api/kbs", json={"name": "notes"}).status_code == 201
        entry = new_entry(client, "Synchronous", "embedded before the answer")
        assert entry["embedding_status"] == "done"
        r = client.patch("/api/entries/notes/synchronous", json={"body": "changed text"})
        assert r.json()["embedding_status"] == "done"
        hits = client.get("/api/search", params={"q": "changed text", "mode": "semantic"}).json()
        assert hits["pending"] == 0 and hits["results"][0]["id"] == "synchronous"
        status = client.get("/api/index/embed-status").json()
        assert status["counts"]["done"] == 1 and status["workers"] == []
