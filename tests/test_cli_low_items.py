"""Issue 12, low items: foreground embed stops on a misconfigured provider and exits non-zero on failures,
--force with --retry-failed is refused, an update with no change writes nothing, titles keep their inner
whitespace, a taken port is reported before "serving", counts are pluralised, provider none's status."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.storage import events
from pyrite.storage.files import parse_markdown
from tests.conftest import pyrite_cmd
from tests.fake_provider import FakeProvider, fake_provider  # noqa: F401 - the fixture
from tests.test_errors_surface import cli, user_error

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def notes(pyrite_home: Path) -> Path:
    assert cli("kb", "create", "notes").returncode == 0
    return pyrite_home / "kbs" / "notes"


def remote_env(fake: FakeProvider, **extra: str) -> dict[str, str]:
    return {"PYRITE_EMBED_PROVIDER": "openai", "PYRITE_EMBED_URL": fake.url, "PYRITE_EMBED_API_KEY": "sk-wrong",
            **extra}


def test_foreground_embed_stops_at_a_misconfigured_provider(notes: Path, fake_provider: FakeProvider) -> None:
    fake_provider.required_key = "sk-right"
    env = remote_env(fake_provider)
    assert cli("create", "--kb", "notes", "--title", "One", "--no-embed", env=env).returncode == 0
    try:
        result = cli("index", "embed", env=env, timeout=40)
    except subprocess.TimeoutExpired:
        pytest.fail("`pyrite index embed` kept pausing on a misconfigured provider instead of stopping")
    stderr = user_error(result, "misconfigured", "401", "pyrite embedders test")
    assert "pausing" not in stderr


def test_foreground_embed_exits_1_with_the_count_when_entries_fail(notes: Path, fake_provider: FakeProvider) -> None:
    fake_provider.bad_marker = "POISON"
    env = remote_env(fake_provider, PYRITE_EMBED_API_KEY="sk-any", PYRITE_EMBED_MAX_ATTEMPTS="1")
    for title in ("Good one", "POISON pill"):
        assert cli("create", "--kb", "notes", "--title", title, "--no-embed", env=env).returncode == 0
    result = cli("index", "embed", env=env)
    user_error(result, "1 entry failed to embed", "--retry-failed")
    assert "Embedded 1 entry in" in result.stderr


def test_force_with_retry_failed_is_a_usage_error(notes: Path) -> None:
    result = cli("index", "embed", "--force", "--retry-failed")
    assert result.returncode == 2 and "--force" in result.stderr and "--retry-failed" in result.stderr, result.stderr


def test_update_with_no_change_writes_nothing(pyrite_home: Path) -> None:
    core = Pyrite(load_settings())
    try:
        core.kbs.create_kb("notes")
        entry = core.kbs.create_entry("notes", "Same", "body", tags=["a"], meta={"k": "v"})
        path = pyrite_home / "kbs" / "notes" / "same.md"
        data, mtime = path.read_bytes(), path.stat().st_mtime_ns
        last = events.last_id(core.db.conn)
        again = core.kbs.update_entry("notes", "same", title="Same", body="body", tags=["a"], type="note",
                                      meta={"k": "v"})
        assert cli("update", "same", "--kb", "notes", "--body", "body", "--tag", "a").returncode == 0
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime
        assert events.last_id(core.db.conn) == last
        assert again.updated == entry.updated and again.body == "body"
        # A real change still writes.
        assert core.kbs.update_entry("notes", "same", body="new").body == "new"
        assert path.read_bytes() != data and events.last_id(core.db.conn) > last
    finally:
        core.close()


@pytest.mark.parametrize("title", ["Two  spaces", "a\ttab", "no\u00a0break space", "  padded  "])
def test_title_whitespace_survives_later_updates(pyrite_home: Path, title: str) -> None:
    core = Pyrite(load_settings())
    try:
        core.kbs.create_kb("notes")
        entry = core.kbs.create_entry("notes", title, "body")
        updated = core.kbs.update_entry("notes", entry.id, tags=["later"])
        front, _ = parse_markdown((pyrite_home / "kbs" / "notes" / entry.path).read_text())
        assert updated.title == entry.title == title.strip() == front["title"]
        assert core.kbs.get_entry("notes", entry.id).title == title.strip()
    finally:
        core.close()


def test_a_taken_port_is_reported_before_serving(pyrite_home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(pyrite_cmd("serve", "--port", str(port)), capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL, cwd=ROOT, env=dict(os.environ))
    user_error(result, f"port {port} on 127.0.0.1 is already in use", "--port")
    assert "serving" not in result.stderr


def test_counts_are_pluralised(notes: Path) -> None:
    assert cli("create", "--kb", "notes", "--title", "Only", "--no-embed").returncode == 0
    listed = cli("kb", "list")
    assert "\t1 entry\t" in listed.stdout, listed.stdout
    embedded = cli("index", "embed")
    assert embedded.returncode == 0 and "Embedding 1 entry with" in embedded.stderr, embedded.stderr
    assert "Embedded 1 entry in" in embedded.stderr and "1 entries" not in embedded.stderr


def test_status_with_provider_none_says_embedding_is_off(notes: Path) -> None:
    assert cli("create", "--kb", "notes", "--title", "Embedded", "--body", "b").returncode == 0
    result = cli("--embed-provider", "none", "index", "embed", "--status")
    assert result.returncode == 0, result.stderr
    assert "embedding is off" in result.stdout and "PYRITE_EMBED_PROVIDER=local" in result.stdout
    assert "--force" not in result.stdout and "embed synchronously" not in result.stdout, result.stdout
