"""What a web page the user opens can do to the server on 127.0.0.1: nothing. A real `pyrite serve` process,
real httpx and websockets clients sending what browsers send (Origin, Fetch Metadata, form and text bodies,
a rebinding Host), and the KB folder rules behind POST /api/kbs and `pyrite kb create`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import websockets

from tests.conftest import pyrite_cmd
from tests.test_server_process import Server

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One hash-embedder server for the module, with a KB 'notes' and one configured host and origin."""
    root = tmp_path_factory.mktemp("security")
    env = {"PYRITE_EMBED_PROVIDER": "hash", "PYRITE_ALLOWED_HOSTS": "notes.internal",
           "PYRITE_ALLOWED_ORIGINS": "app://obsidian.md"}
    env.update({k: "" for k in os.environ if k.startswith("PYRITE_") and k not in env})
    srv = Server(root / "home", root / "serve.log", env=env)
    try:
        srv.wait_healthy(30)
        r = httpx.post(f"{srv.url}/api/kbs", json={"name": "notes"})
        assert r.status_code == 201, r.text
        yield srv
        assert srv.terminate() == 0, srv.log()[-2000:]
    finally:
        srv.kill()


def error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    return r.json()["error"]


def entry_ids(server: Server) -> list[str]:
    return [e["id"] for e in httpx.get(f"{server.url}/api/entries", params={"kb": "notes"}).json()["entries"]]


# -- bodies web pages can send without asking -------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_non_json_bodies_are_415_and_write_nothing(server: Server, tmp_path: Path, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"kb": "notes", "title": "planted"})
    before = entry_ids(server)
    assert "application/json" in error(httpx.post(f"{server.url}/api/entries", content=body, headers=headers), 415)
    assert entry_ids(server) == before
    target = tmp_path / "planted-folder" / "deep"
    r = httpx.post(f"{server.url}/api/kbs", headers=headers,
                   content=json.dumps({"name": "x", "path": str(target), "create": True}))
    error(r, 415)
    assert not target.parent.exists()
    r = httpx.post(f"{server.url}/api/index/embed/requeue", headers=headers, content=b"")
    error(r, 415)
    r = httpx.patch(f"{server.url}/api/entries/notes/anything", headers=headers, content=b"{}")
    error(r, 415)


def test_json_with_charset_is_accepted(server: Server) -> None:
    r = httpx.post(f"{server.url}/api/entries", content=json.dumps({"kb": "notes", "title": "Charset note"}),
                   headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201, r.text


# -- other web pages ---------------------------------------------------------------------------------------


def test_foreign_origin_is_403_for_every_method(server: Server) -> None:
    evil = {"Origin": EVIL}
    before = entry_ids(server)
    assert "evil.example" in error(httpx.post(f"{server.url}/api/entries", headers=evil,
                                              json={"kb": "notes", "title": "planted"}), 403)
    error(httpx.get(f"{server.url}/api/kbs", headers=evil), 403)
    error(httpx.get(f"{server.url}/api/search", params={"q": "x"}, headers=evil), 403)
    error(httpx.delete(f"{server.url}/api/entries/notes/x", headers=evil), 403)
    error(httpx.options(f"{server.url}/api/entries", headers=evil | {"Access-Control-Request-Method": "POST"}), 403)
    # sandboxed frames and file:// pages send "null"; another port of localhost is another origin too
    error(httpx.get(f"{server.url}/api/kbs", headers={"Origin": "null"}), 403)
    error(httpx.get(f"{server.url}/api/kbs", headers={"Origin": f"http://127.0.0.1:{server.port + 1}"}), 403)
    assert entry_ids(server) == before


def test_own_and_configured_origins_are_served(server: Server) -> None:
    own = {"Origin": server.url}
    r = httpx.post(f"{server.url}/api/entries", headers=own, json={"kb": "notes", "title": "From the page"})
    assert r.status_code == 201, r.text
    obsidian = {"Origin": "app://obsidian.md"}
    r = httpx.get(f"{server.url}/api/kbs", headers=obsidian)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "app://obsidian.md"
    preflight = httpx.options(f"{server.url}/api/entries", headers=obsidian | {
        "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200, preflight.text
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_fetch_metadata_without_origin(server: Server) -> None:
    # <img src> and <script src> send no Origin, but browsers mark them cross-site.
    error(httpx.get(f"{server.url}/api/kbs", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}),
          403)
    error(httpx.get(f"{server.url}/api/kbs", headers={"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}), 403)
    # a link the user followed, or the address typed in, is served
    nav = httpx.get(f"{server.url}/api/health", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert nav.status_code == 200
    assert httpx.get(f"{server.url}/api/kbs", headers={"Sec-Fetch-Site": "none"}).status_code == 200
    assert httpx.get(f"{server.url}/api/kbs", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    # a navigation may not write
    r = httpx.post(f"{server.url}/api/entries", json={"kb": "notes", "title": "planted"},
                   headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    error(r, 403)


# -- DNS rebinding -----------------------------------------------------------------------------------------


def test_foreign_host_is_400(server: Server) -> None:
    for host in ["evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example", "localhost.evil.example",
                 "notes.internal.evil.example", "", "[::1"]:
        r = httpx.get(f"{server.url}/api/entries", params={"kb": "notes"}, headers={"Host": host})
        assert "PYRITE_ALLOWED_HOSTS" in error(r, 400), host
    r = httpx.post(f"{server.url}/api/entries", json={"kb": "notes", "title": "rebound"},
                   headers={"Host": f"evil.example:{server.port}"})
    error(r, 400)
    assert "rebound" not in entry_ids(server)


def test_loopback_and_configured_hosts_are_served(server: Server) -> None:
    for host in [f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost", f"[::1]:{server.port}",
                 f"app.localhost:{server.port}", f"notes.internal:{server.port}", "NOTES.INTERNAL"]:
        r = httpx.get(f"{server.url}/api/kbs", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)


# -- the WebSocket -----------------------------------------------------------------------------------------


def _ws(server: Server, *, origin: str | None = None, host: str | None = None) -> Any:
    # A rebinding page's socket goes to 127.0.0.1 under the page's own name: connect there, name the other.
    uri = f"ws://{host or '127.0.0.1'}:{server.port}/ws?since=0"

    async def connect() -> Any:
        try:
            async with websockets.connect(uri, origin=origin, host="127.0.0.1", port=server.port) as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
        except websockets.exceptions.ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else None

    return asyncio.run(connect())


def test_websocket_refuses_foreign_origin_and_host_with_a_reason(server: Server) -> None:
    code, reason = _ws(server, origin=EVIL)
    assert code == 4403 and "evil.example" in reason
    code, reason = _ws(server, host="evil.example")
    assert code == 4400 and "PYRITE_ALLOWED_HOSTS" in reason
    # the server's own page, and clients that are not browsers, get the replay
    assert _ws(server, origin=server.url)["type"] == "entry_created"
    assert _ws(server)["type"] == "entry_created"


# -- which folders may be a KB -----------------------------------------------------------------------------


def test_kb_paths_that_may_not_be_a_kb(server: Server, tmp_path: Path) -> None:
    home = server.log_path.parent / "home"
    other = tmp_path / "vault"
    other.mkdir()
    assert httpx.post(f"{server.url}/api/kbs", json={"name": "vault", "path": str(other)}).status_code == 201
    bad = {
        "/": "holds far more", "/proc/self": "system folder", "/etc": "system folder", "/usr/share": "system folder",
        str(home): "pyrite home", str(home.parent): "pyrite home", str(home / "logs"): "inside the pyrite home",
        "relative/notes": "absolute", "~/notes": "absolute", "/tmp": "holds far more",
        str(Path.home()): "holds far more", str(other / "inner"): "nest", str(tmp_path): "nest",
        str(tmp_path / "missing"): "does not exist",
    }
    status = {"nest": 409, "does not exist": 404}
    for n, (path, why) in enumerate(bad.items()):
        r = httpx.post(f"{server.url}/api/kbs", json={"name": f"bad{n}", "path": path})
        assert why in error(r, status.get(why, 400)), (path, r.text)
    assert not (tmp_path / "missing").exists() and not (other / "inner").exists()
    names = [k["name"] for k in httpx.get(f"{server.url}/api/kbs").json()["kbs"]]
    assert names == ["notes", "vault"]
    made = tmp_path / "made" / "on request"
    r = httpx.post(f"{server.url}/api/kbs", json={"name": "made", "path": str(made), "create": True})
    assert r.status_code == 201 and made.is_dir()
    link = tmp_path / "link-to-etc"
    link.symlink_to("/etc")
    assert "system folder" in error(httpx.post(f"{server.url}/api/kbs", json={"name": "lnk", "path": str(link)}), 400)


def test_cli_kb_create_resolves_relative_paths_and_creates_only_when_asked(pyrite_home: Path, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(pyrite_cmd(*args), cwd=tmp_path, capture_output=True, text=True, timeout=60)

    missing = run("kb", "create", "notes", "--path", "my notes")
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "--create" in missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "my notes").exists()
    made = run("kb", "create", "notes", "--path", "my notes", "--create", "--format", "json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["path"] == str(tmp_path / "my notes")
    refused = run("kb", "create", "root", "--path", "/")
    assert refused.returncode == 1 and "holds far more" in refused.stderr
