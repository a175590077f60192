"""Two processes writing to the same KB at once: no lost entries, no clobbered files, no lock errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyrite.config import load_settings
from pyrite.core import Pyrite

N = 200

WRITER = r"""
import os, sys, time
from pathlib import Path
from pyrite.config import load_settings
from pyrite.core import Pyrite

name, go, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
core = Pyrite(load_settings())
core.kbs.get_kb("notes")
print("ready", flush=True)
deadline = time.monotonic() + 30
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("never got the start signal")
    time.sleep(0.005)
ids = []
for i in range(n):
    # every other title is the same in both writers: the two race for the same file names
    title = f"Shared entry {i}" if i % 2 == 0 else f"Writer {name} entry {i}"
    entry = core.kbs.create_entry("notes", title, f"written by {name}, number {i}", tags=[name])
    assert entry.embedding_status == "done", entry.embedding_status
    ids.append(entry.id)
core.close()
print("ids", len(ids), len(set(ids)), flush=True)
"""


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYRITE_")}
    env.update(PYRITE_HOME=str(home), PYRITE_EMBED_PROVIDER="hash")
    cwd = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = cwd + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_two_writers(home: Path, go: Path) -> list[tuple[int, str, str]]:
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, name, str(go), str(N)], env=_env(home),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("alpha", "beta")
    ]
    try:
        for p in procs:  # both have opened the database before either starts writing
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", (line, p.stderr.read() if p.stderr else "")
        go.touch()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            outs.append((p.returncode, out, err))
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_two_processes_create_200_entries_each(pyrite_home: Path, tmp_path: Path) -> None:
    setup = Pyrite(load_settings())
    folder = Path(setup.kbs.create_kb("notes").path)
    setup.close()

    started = time.perf_counter()
    outs = _run_two_writers(pyrite_home, tmp_path / "go")
    elapsed = time.perf_counter() - started

    for code, out, err in outs:
        assert "database is locked" not in err.lower()
        assert "Traceback" not in err, err[-3000:]
        assert code == 0, err[-3000:]
        assert f"ids {N} {N}" in out

    core = Pyrite(load_settings())
    try:
        rows = core.db.query("SELECT id, path, tags, body FROM entries WHERE kb = 'notes'")
        assert len(rows) == 2 * N
        assert len({r["id"] for r in rows}) == 2 * N
        files = sorted(p.name for p in folder.iterdir())
        assert len(files) == 2 * N
        assert files == sorted(r["path"] for r in rows)  # no temp files, no '.deleting', nothing unindexed
        # every file holds the body its row says: no write clobbered another
        for r in rows:
            text = (folder / r["path"]).read_text(encoding="utf-8")
            assert text.endswith("\n\n" + r["body"]), r["id"]
        shared = [r["id"] for r in rows if r["id"].startswith("shared-entry-")]
        assert len(shared) == N  # 100 titles written by both: 200 distinct ids (x and x-2)
        per_writer = {"alpha": 0, "beta": 0}
        for r in rows:
            per_writer[r["tags"].strip('[]"')] += 1
        assert per_writer == {"alpha": N, "beta": N}
        counts = core.embedding.status("notes")["counts"]
        assert counts["done"] == 2 * N and counts["pending"] == 0 and counts["processing"] == 0
        assert core.db.query("SELECT count(DISTINCT entry_rowid) FROM chunks")[0][0] == 2 * N
        created_events = core.db.query("SELECT count(*) FROM events WHERE type = 'entry_created'")[0][0]
        assert created_events == 2 * N
        # a sync afterwards finds nothing to fix
        report = core.kbs.sync("notes")
        assert (report.added, report.updated, report.removed, report.errors) == (0, 0, 0, [])
    finally:
        core.close()
    assert elapsed < 60
