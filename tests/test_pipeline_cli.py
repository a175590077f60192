"""Issue points the other suites leave implicit: settings precedence, provider none, --no-embed and a
foreground embed, a model change with --force, --status --watch, event pruning, a second signal, and search
results that say which entries are not embedded yet."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pyrite.cli import cli
from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.storage import events
from pyrite.storage.db import Database
from tests.conftest import pyrite_cmd
from tests.fake_provider import FakeProvider, fake_provider  # noqa: F401  (the fixture)


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def statuses(home: Path) -> dict[str, str]:
    db = Database(home / "index.db", migrate=False)
    try:
        return dict(db.query("SELECT e.id, q.status FROM entries e JOIN embed_queue q ON q.entry_rowid = e.rowid"))
    finally:
        db.close()


def test_settings_come_from_flag_then_env_then_config_then_default(pyrite_home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pyrite_home.mkdir(parents=True)
    (pyrite_home / "config.yaml").write_text("embed_batch_size: 7\nembed_max_attempts: 5\nembed_lease: 30\n")
    monkeypatch.setenv("PYRITE_EMBED_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("PYRITE_EMBED_LEASE", "20")
    s = load_settings(embed_lease=15.0)
    assert s.embed_lease == 15.0  # flag over env and file
    assert s.embed_max_attempts == 4  # env over file
    assert s.embed_batch_size == 7  # file over default
    assert s.embed_retry_base == 10 and s.embed_retry_max == 300  # defaults


def test_provider_none_queues_nothing_and_keyword_search_works(pyrite_home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRITE_EMBED_PROVIDER", "none")
    cli_json("kb", "create", "notes")
    entry = cli_json("create", "--kb", "notes", "--title", "Tide pools", "--body", "anemones and crabs")
    assert entry["embedding_status"] is None
    assert statuses(pyrite_home) == {}
    found = cli_json("search", "anemones", "--kb", "notes")
    assert [r["id"] for r in found["results"]] == ["tide-pools"]
    semantic = cli_json("search", "anemones", "--kb", "notes", "--mode", "semantic")
    assert any("unavailable" in note for note in semantic["notes"]), semantic
    status = cli_json("index", "embed", "--status")
    assert status["counts"] == {"pending": 0, "processing": 0, "done": 0, "failed": 0, "skipped": 0}


def test_no_embed_everywhere_only_queues_then_index_embed_does_it(pyrite_home: Path) -> None:
    cli_json("kb", "create", "notes")
    cli_json("create", "--kb", "notes", "--title", "One", "--body", "first", "--no-embed")
    cli_json("create", "--kb", "notes", "--title", "Two", "--body", "second", "--no-embed")
    cli_json("update", "one", "--kb", "notes", "--body", "first, edited", "--no-embed")
    folder = pyrite_home / "kbs" / "notes"
    (folder / "three.md").write_text("---\ntitle: Three\n---\n\nwritten in an editor\n")
    assert cli_json("index", "sync", "--kb", "notes", "--no-embed")["embedding"] is None
    (folder / "four.md").write_text("---\ntitle: Four\n---\n\nalso by hand\n")
    assert cli_json("index", "build", "--kb", "notes", "--no-embed")["embedding"] is None
    assert statuses(pyrite_home) == dict.fromkeys(["one", "two", "three", "four"], "pending")
    out = cli_json("index", "embed", "--kb", "notes")
    assert (out["done"], out["failed"], out["left"]) == (4, 0, 0)
    assert set(statuses(pyrite_home).values()) == {"done"}


def test_a_model_change_is_reported_and_force_re_embeds(pyrite_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_json("kb", "create", "notes")
    for i in range(3):
        cli_json("create", "--kb", "notes", "--title", f"Note {i}", "--body", f"harbour seals {i}")
    monkeypatch.setenv("PYRITE_EMBED_MODEL", "hash-other")
    before = cli_json("search", "harbour seals", "--kb", "notes", "--mode", "semantic")
    assert any("another model" in note for note in before["notes"]), before
    assert cli_json("index", "embed", "--status")["stale_models"]
    out = cli_json("index", "embed", "--force")
    assert (out["queued"], out["done"]) == (3, 3)
    after = cli_json("search", "harbour seals", "--kb", "notes", "--mode", "semantic")
    assert not any("another model" in note for note in after["notes"]), after
    assert len(after["results"]) == 3
    assert not cli_json("index", "embed", "--status")["stale_models"]


def test_status_watch_refreshes_until_interrupted(pyrite_home: Path, tmp_path: Path) -> None:
    subprocess.run(pyrite_cmd("kb", "create", "notes"), check=True, capture_output=True)
    proc = subprocess.Popen(pyrite_cmd("index", "embed", "--status", "--watch", "--format", "json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(4.0)  # start-up, then a refresh every second
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    reports = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert len(reports) >= 2, out
    for report in reports:
        assert {"counts", "oldest_pending_age_s", "workers", "last_error", "model"} <= set(report)
    assert b"Traceback" not in err


def test_events_are_pruned_by_age_keeping_the_newest(core: Pyrite) -> None:
    t = time.time()
    with core.db.write() as conn:
        conn.execute("DELETE FROM events")
        for age_days in (30, 20, 10, 1):
            events.append(conn, "embed_complete", kb="notes", entry_id=f"e{age_days}", model="m",
                          now=t - age_days * 86400)
    with core.db.write() as conn:
        removed = events.prune(conn, now=t, retention=7 * 86400)
    assert removed == 3
    assert [e["entry_id"] for e in events.since(core.db.conn, 0)] == ["e1"]
    with core.db.write() as conn:  # the newest stays even when old: ids keep growing after a restart
        assert events.prune(conn, now=t + 365 * 86400, retention=7 * 86400) == 0


def test_a_second_signal_exits_at_once(pyrite_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       fake_provider: FakeProvider) -> None:
    monkeypatch.setenv("PYRITE_EMBED_PROVIDER", "openai")
    monkeypatch.setenv("PYRITE_EMBED_URL", fake_provider.url)
    monkeypatch.setenv("PYRITE_EMBED_API_KEY", "k")
    monkeypatch.setenv("PYRITE_EMBED_TIMEOUT", "60")
    core = Pyrite(load_settings())
    core.kbs.create_kb("notes")
    for i in range(5):
        core.kbs.create_entry("notes", f"Slow {i}", "the provider takes its time", embed=False)
    core.close()
    fake_provider.delay = 8.0  # longer than it takes to send both signals, shorter than the 10 s grace
    err = open(tmp_path / "worker.err", "wb")
    worker = subprocess.Popen(pyrite_cmd("worker"), stdout=subprocess.DEVNULL, stderr=err)
    err.close()
    try:
        deadline = time.monotonic() + 60
        while not fake_provider.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake_provider.requests, (tmp_path / "worker.err").read_text()
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert worker.poll() is None  # the first signal waits for the batch in hand
        sent = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        rc = worker.wait(10)
        assert time.monotonic() - sent < 3
    finally:
        if worker.poll() is None:
            worker.kill()
    log = (tmp_path / "worker.err").read_text()
    assert rc == 1 and "Exiting now" in log and "Traceback" not in log, log[-2000:]
    # The items in hand keep their lease and become claimable once it expires; nothing was lost.
    assert set(statuses(pyrite_home).values()) == {"processing"}


def test_search_marks_entries_not_yet_embedded_and_counts_them(pyrite_home: Path) -> None:
    cli_json("kb", "create", "notes")
    cli_json("create", "--kb", "notes", "--title", "Kelp forests", "--body", "otters and urchins", "--no-embed")
    first = cli_json("search", "otters", "--kb", "notes")
    assert first["mode"] == "keyword"  # the default: hybrid only once vectors exist
    assert first["pending"] == 1 and first["results"][0]["embedding_status"] == "pending"
    cli_json("create", "--kb", "notes", "--title", "Sea otters", "--body", "they float on their backs")
    hybrid = cli_json("search", "otters", "--kb", "notes")
    assert hybrid["mode"] == "hybrid" and hybrid["pending"] == 1
    assert any("not embedded yet" in note for note in hybrid["notes"]), hybrid
    by_id = {r["id"]: r for r in hybrid["results"]}
    assert by_id["kelp-forests"]["embedding_status"] == "pending" and "embedding_status" not in by_id["sea-otters"]
    cli_json("index", "embed", "--kb", "notes")
    after = cli_json("search", "otters", "--kb", "notes")
    assert after["pending"] == 0 and all("embedding_status" not in r for r in after["results"])
