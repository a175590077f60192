"""Issue 12 item 4: a missing, read-only or odd KB folder, a broken or foreign index.db, deep meta and bad
WebSocket `since` values come back as clear errors (CLI message and exit 1, REST JSON 4xx, MCP tool error,
WebSocket close 1008), never a traceback or a changed file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import websockets
from mcp import Client
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.server.app import create_app
from pyrite.field_rules import META_DEPTH_MAX
from tests.conftest import pyrite_cmd
from tests.test_mcp import error_text, run_session
from tests.test_server_app import ws_receive
from tests.test_server_process import Server

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = (),
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, *pyrite_cmd(*args)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def user_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Assert a clean user error (exit 1, `Error: ...`, no traceback) naming each needle; return stderr."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    assert any(line.startswith("Error: ") for line in result.stderr.splitlines()), result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return result.stderr


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def kb_dir(pyrite_home: Path, tmp_path: Path) -> Path:
    """A KB 'notes' in tmp_path/kb with one entry 'first'."""
    core = Pyrite(load_settings())
    try:
        core.kbs.create_kb("notes", tmp_path / "kb", create=True)
        core.kbs.create_entry("notes", "First", "the first note")
    finally:
        core.close()
    return tmp_path / "kb"


# -- the KB folder is gone ---------------------------------------------------------------------------------


def test_writes_into_a_removed_folder_say_so_on_every_front_end(pyrite_home: Path, kb_dir: Path) -> None:
    moved = kb_dir.with_name("elsewhere")
    kb_dir.rename(moved)
    before = tree(moved)

    result = cli("create", "--kb", "notes", "--title", "New note")
    user_error(result, str(kb_dir), "gone", "pyrite kb remove notes")
    user_error(cli("update", "first", "--kb", "notes", "--body", "changed"), "gone")

    with TestClient(create_app(load_settings(), worker=False), base_url="http://127.0.0.1") as client:
        created = client.post("/api/entries", json={"kb": "notes", "title": "Over REST"})
        patched = client.patch("/api/entries/notes/first", json={"body": "changed"})
    for answer in (created, patched):
        assert answer.status_code == 404, answer.text
        assert "gone" in answer.json()["error"] and "pyrite kb remove notes" in answer.json()["error"]

    async def body(client: Client) -> Any:
        return (await client.call_tool("kb_create", {"kb": "notes", "title": "Over MCP"}),
                await client.call_tool("kb_update", {"kb": "notes", "id": "first", "body": "changed"}))

    for result in run_session(pyrite_home, body):
        assert "gone" in error_text(result)
    assert not kb_dir.exists()
    assert tree(moved) == before


def test_update_of_an_entry_whose_file_is_now_a_folder(pyrite_home: Path, kb_dir: Path) -> None:
    (kb_dir / "first.md").unlink()
    (kb_dir / "first.md").mkdir()
    user_error(cli("update", "first", "--kb", "notes", "--body", "x"), "is a folder", "pyrite index sync")
    with TestClient(create_app(load_settings(), worker=False), base_url="http://127.0.0.1") as client:
        answer = client.patch("/api/entries/notes/first", json={"body": "x"})
    assert answer.status_code == 409 and "is a folder" in answer.json()["error"], answer.text
    assert (kb_dir / "first.md").is_dir() and list((kb_dir / "first.md").iterdir()) == []


# -- the KB folder is read-only ---------------------------------------------------------------------------

NOBODY = 65534


def _unprivileged() -> tuple[str, ...]:
    """A command prefix that runs as a user who cannot write a 0555 folder, or skip."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no way to be refused a write to a read-only folder")
    return ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="pyrite-ro-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for p in [path, *path.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(path)


def test_writes_into_a_read_only_folder_are_refused_with_the_reason(shared_dir: Path) -> None:
    prefix = _unprivileged()
    home, folder = shared_dir / "home", shared_dir / "kb"
    env = {"PYRITE_HOME": str(home), "PYRITE_EMBED_PROVIDER": "hash"}
    assert cli("kb", "create", "notes", "--path", str(folder), "--create", env=env).returncode == 0
    assert cli("create", "--kb", "notes", "--title", "First", "--body", "b", env=env).returncode == 0
    if prefix:
        for p in [home, *home.rglob("*"), folder, *folder.rglob("*")]:
            os.chown(p, NOBODY, NOBODY)
    folder.chmod(0o555)
    before = tree(folder)

    user_error(cli("create", "--kb", "notes", "--title", "Second", env=env, prefix=prefix), "not writable", str(folder))
    user_error(cli("update", "first", "--kb", "notes", "--body", "new", env=env, prefix=prefix), "not writable")
    user_error(cli("delete", "first", "--kb", "notes", env=env, prefix=prefix), "not writable")
    assert tree(folder) == before
    listed = cli("list-entries", "--kb", "notes", env=env, prefix=prefix)
    assert listed.returncode == 0 and listed.stdout.startswith("first\t"), listed.stderr


# -- index.db is not a pyrite index -------------------------------------------------------------------------


def _random(path: Path) -> None:
    path.write_bytes(os.urandom(20_000))


def _truncated(path: Path) -> None:
    core = Pyrite(load_settings())
    try:
        core.kbs.create_kb("notes")
        for i in range(200):
            core.kbs.create_entry("notes", f"Note {i}", "some words " * 100)
    finally:
        core.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()


def _newer(path: Path) -> None:
    Pyrite(load_settings()).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO migrations (name, applied) VALUES ('m999_from_the_future', 0)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("make, needle", [
    (_random, "not an SQLite database"),
    (_truncated, "damaged"),
    (_foreign, "another program's tables (users)"),
    (_newer, "newer pyrite"),
])
def test_a_broken_or_foreign_index_is_refused_and_left_untouched(pyrite_home: Path, make: Any, needle: str) -> None:
    pyrite_home.mkdir(parents=True, exist_ok=True)
    db = pyrite_home / "index.db"
    make(db)
    for extra in pyrite_home.glob("index.db-*"):
        extra.unlink()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    recipe = "pyrite kb create NAME --path FOLDER" if make is not _foreign else "--home"
    for args in (("init",), ("kb", "list"), ("search", "x"), ("mcp",)):
        user_error(cli(*args), str(db), needle, recipe, "has not changed it")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in pyrite_home.iterdir() if p.name.startswith("index.db")) == ["index.db"]


# -- meta nested too deeply ------------------------------------------------------------------------------------


def nested(depth: int) -> str:
    """JSON of a meta mapping whose value nests depth levels deep (written out: json.dumps recurses)."""
    return '{"deep": ' + '{"k": ' * (depth - 1) + '"leaf"' + "}" * depth


def send(client: TestClient, method: str, url: str, body: str) -> Any:
    return client.request(method, url, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("depth", [META_DEPTH_MAX + 1, 330, 989])
def test_deep_meta_is_a_400_not_a_500(pyrite_home: Path, depth: int, caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(create_app(load_settings(), worker=False), base_url="http://127.0.0.1") as client:
        assert client.post("/api/kbs", json={"name": "notes"}).status_code == 201
        created = send(client, "POST", "/api/entries", '{"kb": "notes", "title": "Deep", "meta": ' + nested(depth) + "}")
        assert created.status_code == 400 and "nested" in created.json()["error"], created.text
        ok = send(client, "POST", "/api/entries", '{"kb": "notes", "title": "Fine", "meta": ' + nested(META_DEPTH_MAX) + "}")
        assert ok.status_code == 201, ok.text
        patched = send(client, "PATCH", "/api/entries/notes/fine", '{"meta": ' + nested(depth) + "}")
        assert patched.status_code == 400 and "nested" in patched.json()["error"], patched.text
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


# -- WebSocket ?since= ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("since", ["9223372036854775808", "-1", "1e3", "abc"])
def test_ws_since_out_of_range_or_not_an_integer_closes_1008(pyrite_home: Path, since: str) -> None:
    with TestClient(create_app(load_settings(), worker=False), base_url="http://127.0.0.1") as client:
        with pytest.raises(WebSocketDisconnect) as closed:
            with client.websocket_connect(f"ws://127.0.0.1/ws?since={since}") as ws:
                ws_receive(ws, timeout=5)
        assert closed.value.code == 1008 and "since" in closed.value.reason
        with client.websocket_connect("ws://127.0.0.1/ws?since=9223372036854775807") as ws:
            client.post("/api/kbs", json={"name": "notes"})
            client.post("/api/entries", json={"kb": "notes", "title": "Live"})
            with pytest.raises(pytest.fail.Exception, match="no WebSocket message"):  # none is after it
                ws_receive(ws, timeout=1)


def test_ws_bad_since_reaches_a_real_client_as_a_close_reason(pyrite_home: Path, tmp_path: Path) -> None:
    server = Server(pyrite_home, tmp_path / "serve.log", "--no-worker", env={"PYRITE_EMBED_PROVIDER": "hash"})
    try:
        server.wait_healthy(30)
        ws_url = server.url.replace("http", "ws")

        async def talk(since: str) -> websockets.ConnectionClosed:
            async with websockets.connect(f"{ws_url}/ws?since={since}") as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
            return closed.value

        for since in ("abc", "9223372036854775808"):
            closed = asyncio.run(talk(since))
            assert closed.rcvd is not None and closed.rcvd.code == 1008, closed
            assert "since must be" in closed.rcvd.reason
        assert "Traceback" not in server.log()
    finally:
        server.kill()
