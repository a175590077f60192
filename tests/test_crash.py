"""Real processes: a killed worker loses nothing, SIGTERM is graceful, two workers never share an item,
and `index embed --background` / `--status` work end to end."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.models import EMBED_STATUSES, embed_text
from pyrite.storage.db import Database
from tests.conftest import pyrite_cmd

pytestmark = pytest.mark.slow

WORDS = ("river mountain forest ocean desert valley glacier canyon island meadow harbor volcano "
         "prairie lagoon tundra marsh cliff delta plateau reef").split()


def prose(n: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


class Watcher:
    """Reads the test home's index from the test process while other processes write it."""

    def __init__(self, home: Path) -> None:
        self.db = Database(home / "index.db", migrate=False)

    def q(self, sql: str, params: Any = ()) -> list[Any]:
        return self.db.query(sql, params)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in EMBED_STATUSES}
        out.update({r[0]: r[1] for r in self.q("SELECT status, count(*) FROM embed_queue GROUP BY status")})
        return out

    def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; queue: {self.counts()}")

    def assert_one_set_of_chunks_each(self) -> None:
        """Each entry's chunks are seq 0..n-1 exactly once, and vectors match chunks one to one."""
        bad = self.q("SELECT entry_rowid, count(*), count(DISTINCT seq), max(seq) FROM chunks GROUP BY entry_rowid "
                     "HAVING count(*) != count(DISTINCT seq) OR max(seq) != count(*) - 1")
        assert bad == [], [tuple(r) for r in bad]
        assert self.q("SELECT count(*) FROM chunks")[0][0] == self.q("SELECT count(*) FROM vec_cells384")[0][0]
        orphans = self.q("SELECT count(*) FROM vec_cells384 WHERE id NOT IN (SELECT id * 2 FROM chunks)")[0][0]
        assert orphans == 0

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at the end are killed (by their own pid)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def start(procs: list[subprocess.Popen[bytes]], args: list[str], log_dir: Path, name: str) -> subprocess.Popen[bytes]:
    out = open(log_dir / f"{name}.out", "wb")
    err = open(log_dir / f"{name}.err", "wb")
    p = subprocess.Popen(pyrite_cmd(*args), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    out.close()
    err.close()
    procs.append(p)
    return p


def read(log_dir: Path, name: str) -> str:
    return (log_dir / name).read_text(errors="replace")


def make_core() -> Pyrite:
    core = Pyrite(load_settings())
    core.kbs.create_kb("notes")
    return core


def test_kill_9_then_a_new_worker_finishes_everything_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pyrite_home: Path,
        procs: list[subprocess.Popen[bytes]]) -> None:
    monkeypatch.setenv("PYRITE_EMBED_PROVIDER", "local")
    monkeypatch.setenv("PYRITE_EMBED_LEASE", "2")
    rng = random.Random(7)
    core = make_core()
    texts: dict[str, str] = {}
    for i in range(150):
        body = prose(300 if i % 25 == 0 else 8, rng)  # every 25th is long: several chunks
        e = core.kbs.create_entry("notes", f"Place {i}", body, embed=False)
        texts[e.id] = e.embed_text()
    core.close()
    w = Watcher(pyrite_home)
    try:
        assert w.counts()["pending"] == 150
        first = start(procs, ["worker"], tmp_path, "first")
        w.until(lambda: (w.counts()["done"] >= 10 and w.counts()["processing"] > 0) or first.poll() is not None,
                120, "first worker to embed some and hold a batch")
        assert first.poll() is None, read(tmp_path, "first.err")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = w.counts()
        stuck = {r[0] for r in w.q("SELECT entry_rowid FROM embed_queue WHERE status = 'processing'")}
        assert at_kill["done"] < 150, "the first worker finished before it could be killed"
        assert stuck, f"no batch was in hand at the kill: {at_kill}"

        second = subprocess.run(pyrite_cmd("worker", "--until-empty"), capture_output=True, timeout=150)
        assert second.returncode == 0, second.stderr.decode(errors="replace")[-3000:]

        final = w.counts()
        assert final == {"pending": 0, "processing": 0, "done": 150, "failed": 0, "skipped": 0}, final
        w.assert_one_set_of_chunks_each()
        # One embed_complete per entry: nothing was completed twice.
        per_entry = w.q("SELECT entry_id, count(*) FROM events WHERE type = 'embed_complete' GROUP BY entry_id")
        assert len(per_entry) == 150 and all(r[1] == 1 for r in per_entry)
        # The items the dead worker held were claimed once more (its attempt counted), the rest once.
        for rowid, attempts in w.q("SELECT entry_rowid, attempts FROM embed_queue"):
            assert attempts == (2 if rowid in stuck else 1), (rowid, attempts, rowid in stuck)
        # Each entry holds exactly the chunks a fresh embed of its text gives.
        from pyrite.embedders.local import LocalEmbedder

        fresh = LocalEmbedder()
        stored = {r[0]: r[1] for r in w.q(
            "SELECT e.id, count(c.id) FROM entries e LEFT JOIN chunks c ON c.entry_rowid = e.rowid GROUP BY e.id")}
        expected = {entry_id: len(fresh.chunk(text)) for entry_id, text in texts.items()}
        assert stored == expected
        assert max(expected.values()) > 1
        assert b"database is locked" not in second.stderr
    finally:
        w.close()


def test_sigterm_mid_batch_exits_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pyrite_home: Path,
                                         procs: list[subprocess.Popen[bytes]]) -> None:
    monkeypatch.setenv("PYRITE_EMBED_PROVIDER", "local")
    rng = random.Random(8)
    core = make_core()
    for i in range(50):
        core.kbs.create_entry("notes", f"Trip {i}", prose(150, rng), embed=False)
    core.close()
    w = Watcher(pyrite_home)
    try:
        worker = start(procs, ["worker"], tmp_path, "worker")
        w.until(lambda: (w.counts()["done"] >= 10 and w.counts()["processing"] > 0) or worker.poll() is not None,
                120, "a batch in hand")
        assert worker.poll() is None, read(tmp_path, "worker.err")
        in_hand = {r[0] for r in w.q("SELECT entry_rowid FROM embed_queue WHERE status = 'processing'")}
        sent = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        rc = worker.wait(30)
        assert rc == 0, read(tmp_path, "worker.err")[-3000:]
        assert time.monotonic() - sent < 15  # within the grace period (10 s) and then some
        counts = w.counts()
        assert counts["processing"] == 0 and counts["failed"] == 0, counts
        assert counts["pending"] > 0, "the worker drained the queue instead of stopping"
        # The batch in hand was finished, not dropped; nothing else spent an attempt. The one batch seen
        # processing is either the one being embedded (finished: done) or, when the signal came in the
        # moment between batches, the next one claimed ahead in the last batch's commit (given back whole).
        statuses = dict(w.q("SELECT entry_rowid, status FROM embed_queue"))
        outcome = {statuses[r] for r in in_hand}
        assert outcome in ({"done"}, {"pending"}), outcome
        assert w.q("SELECT count(*) FROM embed_queue WHERE status = 'pending' AND attempts != 0")[0][0] == 0
        assert w.q("SELECT count(*) FROM workers")[0][0] == 0
        w.assert_one_set_of_chunks_each()
        assert "Traceback" not in read(tmp_path, "worker.err")
    finally:
        w.close()


def test_two_workers_and_a_writer_share_the_queue(tmp_path: Path, pyrite_home: Path,
                                                  procs: list[subprocess.Popen[bytes]]) -> None:
    make_core().close()  # hash provider (conftest)
    w = Watcher(pyrite_home)
    try:
        workers = [start(procs, ["worker", "--format", "json"], tmp_path, f"w{i}") for i in range(2)]
        w.until(lambda: w.q("SELECT count(*) FROM workers")[0][0] == 2
                or any(p.poll() is not None for p in workers), 60, "two registered workers")
        assert all(p.poll() is None for p in workers)
        writer_code = textwrap.dedent("""
            from pyrite.config import load_settings
            from pyrite.core import Pyrite
            p = Pyrite(load_settings())
            statuses = set()
            for i in range(500):
                e = p.kbs.create_entry("notes", f"Entry {i}", f"body number {i} about subject {i % 23}")
                statuses.add(e.embedding_status)
            p.close()
            print(sorted(statuses))
        """)
        writer = subprocess.run([sys.executable, "-c", writer_code], capture_output=True, timeout=120)
        assert writer.returncode == 0, writer.stderr.decode(errors="replace")[-3000:]
        # A live worker elsewhere: the writer never embedded (some may already be done by a worker).
        assert "pending" in writer.stdout.decode()
        w.until(lambda: w.counts()["done"] == 500, 60, "all 500 done")
        for p in workers:
            p.send_signal(signal.SIGTERM)
        for p in workers:
            assert p.wait(30) == 0
        totals = [json.loads(read(tmp_path, f"w{i}.out")) for i in range(2)]
        assert sum(t["done"] for t in totals) == 500
        assert all(t["done"] > 0 for t in totals), totals  # both took part
        assert all(t["failed"] == 0 for t in totals)
        for name in ("w0.err", "w1.err"):
            text = read(tmp_path, name)
            assert "database is locked" not in text and "Traceback" not in text, text[-3000:]
        assert b"database is locked" not in writer.stderr
        assert w.counts() == {"pending": 0, "processing": 0, "done": 500, "failed": 0, "skipped": 0}
        # No item was completed under two leases: one embed_complete per entry, one set of chunks.
        per_entry = w.q("SELECT entry_id, count(*) FROM events WHERE type = 'embed_complete' GROUP BY entry_id")
        assert len(per_entry) == 500 and {r[1] for r in per_entry} == {1}
        assert w.q("SELECT count(*) FROM events WHERE type = 'embed_failed'")[0][0] == 0
        assert w.q("SELECT max(attempts) FROM embed_queue")[0][0] == 1
        assert w.q("SELECT count(*) FROM chunks")[0][0] == 500
        w.assert_one_set_of_chunks_each()
    finally:
        w.close()


def _gone(pid: int) -> bool:
    """True once pid has exited (a zombie waiting for a reaper counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


STATUS_KEYS = {"counts", "oldest_pending_age_s", "workers", "last_error", "model"}


def status_json() -> dict[str, Any]:
    out = subprocess.run(pyrite_cmd("index", "embed", "--status", "--format", "json"),
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return json.loads(out.stdout)


def test_background_embed_starts_a_worker_that_drains_and_exits(pyrite_home: Path) -> None:
    core = make_core()
    for i in range(40):
        core.kbs.create_entry("notes", f"Queued {i}", f"waiting for a worker {i}", embed=False)
    core.close()

    before = status_json()
    assert STATUS_KEYS <= set(before)
    assert set(before["counts"]) == set(EMBED_STATUSES)
    assert before["counts"]["pending"] == 40
    assert isinstance(before["oldest_pending_age_s"], (int, float)) and before["oldest_pending_age_s"] >= 0
    assert before["workers"] == [] and before["last_error"] is None and before["model"] == "hash:hash-384"

    started = time.monotonic()
    out = subprocess.run(pyrite_cmd("index", "embed", "--background", "--format", "json"),
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    info = json.loads(out.stdout)
    pid = info["started_worker_pid"]
    assert info["outstanding"] == 40 and Path(info["log"]).exists()
    assert pid != os.getpid()

    deadline = time.monotonic() + 60
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid), "the background worker did not exit once the queue was empty"
    assert time.monotonic() - started < 60

    after = status_json()
    assert STATUS_KEYS <= set(after)
    assert after["counts"] == {"pending": 0, "processing": 0, "done": 40, "failed": 0, "skipped": 0}
    assert after["oldest_pending_age_s"] is None
    assert after["workers"] == []  # it unregistered on the way out
    assert after["last_error"] is None and after["model"] == "hash:hash-384"
    log = Path(info["log"]).read_text()
    assert "stopped: 40 done" in log and "Traceback" not in log, log[-3000:]

    # Nothing left: --background says so and starts nobody.
    again = subprocess.run(pyrite_cmd("index", "embed", "--background", "--format", "json"),
                           capture_output=True, timeout=60)
    assert again.returncode == 0
    assert "started_worker_pid" not in json.loads(again.stdout)


def test_status_reports_failures_and_live_workers(pyrite_home: Path, tmp_path: Path,
                                                  procs: list[subprocess.Popen[bytes]]) -> None:
    core = make_core()
    entry = core.kbs.create_entry("notes", "Broken", "will fail", embed=False)
    with core.db.write() as conn:
        conn.execute("UPDATE embed_queue SET status = 'failed', attempts = 3, error = 'provider said 500'")
    core.close()
    info = status_json()
    assert info["counts"]["failed"] == 1
    assert info["last_error"] == "provider said 500"
    worker = start(procs, ["worker"], tmp_path, "w")
    w = Watcher(pyrite_home)
    try:
        w.until(lambda: w.q("SELECT count(*) FROM workers")[0][0] == 1 or worker.poll() is not None, 60, "a worker")
        live = status_json()["workers"]
        assert [x["pid"] for x in live] == [worker.pid]
        # --retry-failed hands the entry to the live worker, which embeds it.
        out = subprocess.run(pyrite_cmd("index", "embed", "--retry-failed", "--format", "json"),
                             capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        w.until(lambda: w.counts()["done"] == 1, 30, "the retried entry to be embedded")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert status_json()["workers"] == []
    finally:
        w.close()
    assert entry.id == "broken"


def test_write_right_after_a_worker_was_killed_embeds_synchronously(
        pyrite_home: Path, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """DESIGN, sync fallback: "A write from a process with no live worker anywhere embeds
    synchronously, so the CLI and MCP never leave an entry unsearchable." A worker killed
    with -9 leaves its heartbeat row behind; it must not count as live."""
    core = make_core()
    try:
        worker = start(procs, ["worker"], tmp_path, "w")
        w = Watcher(pyrite_home)
        try:
            w.until(lambda: w.q("SELECT count(*) FROM workers")[0][0] == 1 or worker.poll() is not None, 60,
                    "a registered worker")
        finally:
            w.close()
        assert [x["pid"] for x in core.embedding.live_workers()] == [worker.pid]
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        entry = core.kbs.create_entry("notes", "After the crash", "nobody else will embed this")
        assert entry.embedding_status == "done", (
            f"the write only queued (status {entry.embedding_status!r}) because the dead worker "
            f"still looks live: {core.embedding.live_workers()}")
    finally:
        core.close()
