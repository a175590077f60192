"""Keys never leak: every surface is searched for the API key after each kind of provider fault.

The app runs in-process (Starlette TestClient, lifespan and worker running) on real SQLite, against
the fake provider on 127.0.0.1; the CLI runs as a subprocess. Surfaces: embed status, /api/health,
the failed list, each entry, WebSocket events, search notes, logs / stderr, and the raw bytes of
index.db and its -wal file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from starlette.testclient import TestClient

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.errors import ConfigError
from pyrite.secrets import redact
from pyrite.server.app import create_app
from pyrite.worker import EmbeddingWorker
from tests.fake_provider import FakeProvider, fake_provider  # noqa: F401  (the fixture)
from tests.test_server_app import wait_until, ws_receive

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-pyrite-secret-5b1e8f0c9a7d4e2f6a3b8c1d0e9f7a6b"
NON_ASCII_KEY = "sk-pyrite-sécret-5b1e8f0c9a7d4e2f6a3b8c1d0e9f"
TOKEN = "tok-pyrite-4c2b9e7a1f3d5e8b0a6c"


def fragments(secret: str, size: int = 12) -> list[str]:
    """Every run of `size` ASCII characters of the secret: any one of them in a surface is a leak."""
    return [secret[i:i + size] for i in range(len(secret) - size + 1) if secret[i:i + size].isascii()]


def leaks(text: str, secret: str) -> list[str]:
    return [f for f in fragments(secret) if f in text]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- settings: keys are checked when they load ------------------------------------------------------


@pytest.mark.parametrize("env", ["PYRITE_EMBED_API_KEY", "PYRITE_API_TOKEN"])
@pytest.mark.parametrize("raw", [KEY + "\r\n", KEY + "\n", "  " + KEY + "\t"], ids=["crlf", "lf", "spaces"])
def test_surrounding_whitespace_is_trimmed(monkeypatch: pytest.MonkeyPatch, env: str, raw: str) -> None:
    monkeypatch.setenv(env, raw)
    settings = load_settings()
    assert (settings.embed_api_key if env == "PYRITE_EMBED_API_KEY" else settings.api_token) == KEY


@pytest.mark.parametrize("env, key", [("PYRITE_EMBED_API_KEY", "embed_api_key"), ("PYRITE_API_TOKEN", "api_token")])
@pytest.mark.parametrize("bad", [NON_ASCII_KEY, KEY[:20] + " " + KEY[20:], KEY[:20] + "\r" + KEY[20:],
                                 KEY[:20] + "\x07" + KEY[20:]], ids=["non-ascii", "inner-space", "inner-cr", "bell"])
def test_bad_secret_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch, env: str, key: str,
                                                  bad: str) -> None:
    monkeypatch.setenv(env, bad)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"invalid {key} from {env}" in message and "value not shown" in message
    assert not leaks(message, bad)


def test_bad_secret_in_config_file_is_refused(pyrite_home: Path) -> None:
    pyrite_home.mkdir(parents=True)
    (pyrite_home / "config.yaml").write_text(f"embed_api_key: '{NON_ASCII_KEY}'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid embed_api_key from config.yaml: contains a non-ASCII") as caught:
        load_settings()
    assert not leaks(str(caught.value), NON_ASCII_KEY)


def test_cli_refuses_a_non_ascii_key_with_a_message_not_a_traceback(fake_provider: FakeProvider) -> None:
    env = dict(os.environ, PYRITE_EMBED_PROVIDER="openai", PYRITE_EMBED_URL=fake_provider.url,
               PYRITE_EMBED_API_KEY=NON_ASCII_KEY)
    for args in (["embedders", "test"], ["index", "embed"], ["search", "anything"]):
        out = subprocess.run([sys.executable, "-m", "pyrite", *args], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=60)
        assert out.returncode == 1, (args, out.stderr)
        assert out.stderr.startswith("Error: invalid embed_api_key from PYRITE_EMBED_API_KEY: "), out.stderr
        assert "Traceback" not in out.stderr
        assert not leaks(out.stdout + out.stderr, NON_ASCII_KEY)
    assert fake_provider.count == 0


def test_redaction_covers_the_key_in_its_forms() -> None:
    from urllib.parse import quote

    forms = [KEY, KEY + "\r", f"b'Bearer {KEY}\\r'", quote(KEY + "\r\n", safe=""), f"?key={KEY}&alt=json",
             repr(NON_ASCII_KEY), str(NON_ASCII_KEY.encode("utf-8")), NON_ASCII_KEY]
    for form in forms:
        masked = redact(f"provider said: {form} (end)", [KEY, NON_ASCII_KEY])
        assert not leaks(masked, KEY) and not leaks(masked, NON_ASCII_KEY), masked
        assert "***" in masked and masked.startswith("provider said: ") and masked.endswith(" (end)")
    # Credentials the redaction was not told about, in the shapes messages quote them.
    for text in ["Authorization: Bearer abcdefgh12345678", "x-goog-api-key: AIzaSyD0123456789",
                 "GET /v1/x?key=AIzaSyD0123456789"]:
        assert "***" in redact(text) and "12345678" not in redact(text)
    assert redact("Bearer token required; key=value") == "Bearer token required; key=value"


# -- every surface, after every fault --------------------------------------------------------------------


FAULTS = ["401-echo", "500-echo", "proxy-echoes-header", "refused", "timeout", "crlf-key-setting",
          "crlf-key-raw", "non-ascii-key-raw"]


def _arrange(fault: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> tuple[str | None, bool]:
    """Set the fake and the environment up for fault; return (a key to hold past the settings, whether it pauses)."""
    monkeypatch.setenv("PYRITE_EMBED_PROVIDER", "openai")
    monkeypatch.setenv("PYRITE_EMBED_URL", fake.url)
    monkeypatch.setenv("PYRITE_EMBED_API_KEY", KEY)
    monkeypatch.setenv("PYRITE_API_TOKEN", TOKEN)
    monkeypatch.setenv("PYRITE_EMBED_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("PYRITE_EMBED_RETRY_BASE", "0.05")
    monkeypatch.setenv("PYRITE_EMBED_RETRY_MAX", "0.1")
    fake.echo_key = True
    if fault == "401-echo":
        fake.required_key = "sk-the-right-one-0000000000"
        return None, True
    if fault == "500-echo":
        fake.fail_all = (500, "upstream exploded")
    elif fault == "proxy-echoes-header":
        fake.echo_auth_answer = True
    elif fault == "refused":
        monkeypatch.setenv("PYRITE_EMBED_URL", f"http://127.0.0.1:{_closed_port()}/v1")
    elif fault == "timeout":
        monkeypatch.setenv("PYRITE_EMBED_TIMEOUT", "0.3")
        fake.hang_all, fake.hang_seconds = True, 1.0
    elif fault == "crlf-key-setting":  # read from a CRLF file: trimmed, so it works; a 500 then quotes it
        monkeypatch.setenv("PYRITE_EMBED_API_KEY", KEY + "\r\n")
        fake.required_key = KEY
        fake.fail_all = (500, "upstream exploded")
    elif fault == "crlf-key-raw":  # a key that bypassed the settings check (a library caller)
        return KEY + "\r\n", True
    elif fault == "non-ascii-key-raw":
        return NON_ASCII_KEY, True
    return None, False


@pytest.fixture
def app_for(monkeypatch: pytest.MonkeyPatch, fake_provider: FakeProvider) -> Iterator[Callable[[str], Any]]:
    opened: list[Any] = []

    def open_app(fault: str) -> tuple[TestClient, Pyrite, str, bool]:
        raw_key, pauses = _arrange(fault, fake_provider, monkeypatch)
        settings = load_settings()
        if raw_key is not None:
            settings = dataclasses.replace(settings, embed_api_key=raw_key)
        key = NON_ASCII_KEY if fault == "non-ascii-key-raw" else KEY
        core = Pyrite(settings)
        client = TestClient(create_app(settings, worker=True, core=core), base_url="http://127.0.0.1",
                            headers={"Authorization": f"Bearer {TOKEN}"})
        client.__enter__()
        opened.append((client, core))
        return client, core, key, pauses

    yield open_app
    for client, core in opened:
        client.__exit__(None, None, None)
        core.close()


def _gather(client: TestClient, core: Pyrite, ids: list[str]) -> list[str]:
    """The text of every surface a user, a program or a log can see."""
    seen = [client.get("/api/health").text, client.get("/api/index/embed-status").text,
            client.get("/api/index/embed/failed").text]
    seen += [client.get(f"/api/entries/notes/{i}").text for i in ids]
    seen.append(client.get("/api/search", params={"q": "note", "mode": "semantic"}).text)
    seen.append(client.get("/api/search", params={"q": "note", "mode": "hybrid"}).text)
    seen.append(json.dumps(core.embedding.status()))
    total = core.db.query("SELECT count(*) FROM events")[0][0]
    # a relative URL would get Host testserver, which the server refuses
    with client.websocket_connect("ws://127.0.0.1/ws?since=0") as ws:
        seen += [json.dumps(ws_receive(ws)) for _ in range(total)]
    return seen


@pytest.mark.parametrize("fault", FAULTS)
def test_the_key_is_on_no_surface_after_a_fault(caplog: pytest.LogCaptureFixture, app_for: Callable[[str], Any],
                                                fake_provider: FakeProvider, fault: str) -> None:
    with caplog.at_level(logging.DEBUG):
        client, core, key, pauses = app_for(fault)
        assert client.post("/api/kbs", json={"name": "notes"}).status_code == 201
        ids = [client.post("/api/entries", json={"kb": "notes", "title": f"Note {i}", "body": "a note"}).json()["id"]
               for i in range(2)]
        worker = client.app.state.worker
        if pauses:  # misconfigured: the worker pauses, the entries keep their attempts
            wait_until(lambda: worker.last_error, timeout=20, what="the worker pauses")
            rows = core.db.query("SELECT status, attempts, error FROM embed_queue")
            assert all(r[0] == "pending" and r[1] == 0 for r in rows) and any(r[2] for r in rows), \
                [tuple(r) for r in rows]
            assert "PYRITE_EMBED_API_KEY" in worker.last_error
        else:  # the entries end failed with the (redacted) reason
            wait_until(lambda: all(client.get(f"/api/entries/notes/{i}").json()["embedding_status"] == "failed"
                                   for i in ids), timeout=30, what="entries failed")
        seen = _gather(client, core, ids)
    everything = "\n".join(seen) + caplog.text
    db_bytes = b"".join(p.read_bytes() for p in core.settings.home.glob("index.db*"))
    assert not leaks(everything, key), f"{fault}: key in {[s for s in seen if leaks(s, key)][:1] or 'the logs'}"
    assert not leaks(everything, TOKEN)
    assert not [f for f in fragments(key) if f.encode("utf-8") in db_bytes], f"{fault}: key in index.db"
    assert TOKEN.encode() not in db_bytes
    assert worker.last_error or core.embedding.status()["last_error"]  # the fault did happen and is shown
    if fault in ("401-echo", "500-echo", "proxy-echoes-header", "crlf-key-setting"):
        assert "***" in everything  # the provider did quote the key, and pyrite masked it
    if fault.endswith("-raw"):  # a key HTTP cannot carry is a misconfiguration, found before sending
        assert fake_provider.count == 0
        assert "cannot carry the API key" in worker.last_error


def test_cli_stderr_and_search_notes_hold_no_key(fake_provider: FakeProvider, pyrite_home: Path) -> None:
    fake_provider.echo_key = True
    fake_provider.required_key = "sk-the-right-one-0000000000"
    env = dict(os.environ, PYRITE_EMBED_PROVIDER="openai", PYRITE_EMBED_URL=fake_provider.url,
               PYRITE_EMBED_API_KEY=KEY + "\r\n")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pyrite", *args], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=60)

    outs = [cli("kb", "create", "notes"), cli("create", "--kb", "notes", "--title", "A note", "--body", "text"),
            cli("search", "note", "--mode", "semantic", "--format", "json"), cli("index", "embed", "--status"),
            cli("embedders", "test")]
    text = "\n".join(o.stdout + o.stderr for o in outs)
    assert "Traceback" not in text
    assert "HTTP 401" in text and "key sent: ***" in text
    assert not leaks(text, KEY)
    assert fake_provider.requests[0].headers["authorization"] == f"Bearer {KEY}"  # sent trimmed


def test_embedders_test_names_the_provider_once(fake_provider: FakeProvider) -> None:
    fake_provider.required_key = "sk-the-right-one-0000000000"
    env = dict(os.environ, PYRITE_EMBED_PROVIDER="openai", PYRITE_EMBED_URL=fake_provider.url,
               PYRITE_EMBED_API_KEY=KEY)
    out = subprocess.run([sys.executable, "-m", "pyrite", "embedders", "test"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("Error: openai text-embedding-3-small: HTTP 401"), out.stderr
    assert out.stderr.count("openai text-embedding-3-small") == 1, out.stderr


# -- last error clears once the provider recovers ---------------------------------------------------------


def test_last_error_clears_after_recovery(monkeypatch: pytest.MonkeyPatch, fake_provider: FakeProvider) -> None:
    monkeypatch.setenv("PYRITE_EMBED_PROVIDER", "openai")
    monkeypatch.setenv("PYRITE_EMBED_URL", fake_provider.url)
    monkeypatch.setenv("PYRITE_EMBED_MAX_ATTEMPTS", "1")
    core = Pyrite(load_settings())
    try:
        core.kbs.create_kb("notes")
        worker = EmbeddingWorker(core.embedding)
        fake_provider.fail_all = (500, "upstream exploded")
        first = core.kbs.create_entry("notes", "First", "one", embed=False).id
        t = time.time()
        worker.run_once(now=t)
        status = core.embedding.status()
        assert "HTTP 500" in status["last_error"] and "HTTP 500" in worker.last_error
        assert status["last_error_before_success"] is False
        # The provider recovers: new entries embed; the one failed entry still explains itself, marked as old.
        fake_provider.fail_all = None
        core.kbs.create_entry("notes", "Second", "two", embed=False)
        worker.run_once(now=t + 1)
        assert worker.last_error is None  # /api/health worker.last_error
        status = core.embedding.status()
        assert status["counts"]["failed"] == 1
        assert status["last_error_before_success"] is True
        assert status["last_error_at"] < status["last_success_at"]
        text = _status_text(core)
        assert "last error (" in text and ", before the last success at " in text and "HTTP 500" in text
        # Retried and done: nothing is failed any more, so no error is shown at all.
        core.embedding.requeue(statuses=("failed",))
        worker.run_once(now=t + 2)
        assert core.embedding.status()["counts"]["failed"] == 0
        assert core.embedding.status()["last_error"] is None
        assert "last error" not in _status_text(core)
        assert first
    finally:
        core.close()


def _status_text(core: Pyrite) -> str:
    out = subprocess.run([sys.executable, "-m", "pyrite", "index", "embed", "--status"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60, env=dict(os.environ, PYRITE_HOME=str(core.settings.home)))
    assert out.returncode == 0, out.stderr
    return out.stdout
