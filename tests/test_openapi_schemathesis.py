"""The OpenAPI document matches the server: the schemathesis CLI, with every check and all four phases
(examples, coverage, fuzzing, stateful: create a KB, then entries in it, then get/patch/delete them through
the document's links), against a real `pyrite serve` on 127.0.0.1 over a real SQLite home in tmp_path and the
deterministic hash embedder. Zero failures allowed: a request the schema calls valid must be accepted, one it
calls invalid refused with a JSON 4xx, every answer documented, and 405/OPTIONS name the methods served."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.conftest import pyrite_cmd

MAX_EXAMPLES = 10
SEED = 12
TOKEN = "schemathesis-token-0123456789"

# Run inside the schemathesis process: it runs as root here and the server creates the KB folders it is
# given, so every absolute `path` it sends is moved under a sandbox in tmp_path (still absolute, so still
# schema-valid); nothing is created elsewhere on the machine.
HOOKS = '''
import os
import schemathesis

SANDBOX = os.environ["PYRITE_TEST_SANDBOX"]


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if case.path == "/api/kbs" and isinstance(body, dict) and isinstance(body.get("path"), str):
        if body["path"].startswith("/"):
            body["path"] = SANDBOX + body["path"]
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _schemathesis() -> str:
    exe = Path(sys.executable).with_name("schemathesis")
    if not exe.exists():
        pytest.skip("the schemathesis CLI is not installed next to this Python (pip install -e '.[dev]')")
    return str(exe)


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A real `pyrite serve` on a free loopback port; yields its base URL, the work folder and its env."""
    token = getattr(request, "param", None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYRITE_")}
    env.update(PYRITE_HOME=str(tmp_path / "home"), PYRITE_EMBED_PROVIDER="hash")
    if token:
        env["PYRITE_API_TOKEN"] = token
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(pyrite_cmd("serve", "--host", "127.0.0.1", "--port", str(port)), cwd=tmp_path,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/health", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield base, tmp_path, env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_schemathesis(base: str, work: Path, *extra: str, max_examples: int = MAX_EXAMPLES,
                     phases: str = "examples,coverage,fuzzing,stateful") -> tuple[int, str, dict]:
    """Run `schemathesis run --checks all` on the server's own document; (exit code, output, JSON report)."""
    sandbox = work / "sandbox"
    sandbox.mkdir(exist_ok=True)
    hooks = work / "st_hooks.py"
    hooks.write_text(HOOKS)
    env = {**os.environ, "PYRITE_TEST_SANDBOX": str(sandbox), "SCHEMATHESIS_HOOKS": str(hooks),
           "NO_COLOR": "1", "COLUMNS": "120"}
    report = work / "report.json"
    # The stateful phase follows the document's own links only. Links it infers from field names lead it
    # to move an entry mid-scenario and then flag the old id's 404 as "created resource not found": it has
    # no notion of a rename. The move itself is still fuzzed with every check in the other phases.
    config = work / "schemathesis.toml"
    config.write_text("[phases.stateful.inference]\nalgorithms = []\n")
    argv = [_schemathesis(), "--config-file", str(config), "run", f"{base}/api/openapi.json", "--checks", "all",
            "--phases", phases, "--max-examples", str(max_examples),
            "--seed", str(SEED), "--workers", "1", "--request-timeout", "30", "--max-time", "90",
            "--report", "json", "--report-json-path", str(report), "--warnings", "off", *extra]
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=150)
    data = json.loads(report.read_text()) if report.exists() else {}
    return done.returncode, done.stdout + done.stderr, data


def _failures(output: str) -> str:
    """The failure headings and reproducing commands, then the summary (the full output can be megabytes)."""
    keep = [line[:300] for line in output.splitlines() if line.startswith(("___", "- ST", "    curl"))]
    return "\n".join(keep[:150]) + "\n...\n" + output[-2500:]


@pytest.mark.slow
def test_schemathesis_all_checks_and_stateful_pass(server: tuple[str, Path, dict[str, str]]) -> None:
    base, work, _ = server
    code, output, _ = run_schemathesis(base, work)
    assert code == 0, _failures(output)
    # Every phase ran (a run that skipped the stateful phase, for want of links, must not pass silently).
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert any(line.strip().startswith(("✅", "⏭")) and phase in line for line in output.splitlines()), \
            (phase, output[-3000:])
    assert "✅ Stateful" in output, output[-3000:]
    # The stateful phase really created KBs and entries through the links, and nothing left the sandbox.
    kbs = httpx.get(f"{base}/api/kbs").json()["kbs"]
    assert kbs, "the run created no KB"
    home, sandbox = work / "home", work / "sandbox"
    for kb in kbs:
        assert Path(kb["path"]).is_relative_to(home) or Path(kb["path"]).is_relative_to(sandbox), kb
    expected = {"home", "sandbox", "server.log", "st_hooks.py", "report.json", "schemathesis.toml", ".schemathesis", ".hypothesis"}
    assert {p.name for p in work.iterdir()} <= expected, sorted(p.name for p in work.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("server", [TOKEN], indirect=True)
def test_schemathesis_with_a_token(server: tuple[str, Path, dict[str, str]]) -> None:
    """With PYRITE_API_TOKEN set the document requires the bearer scheme, and the server does: the
    ignored_auth check sends each request without the token and must see 401."""
    base, work, _ = server
    doc = httpx.get(f"{base}/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "the value of PYRITE_API_TOKEN"}
    code, output, _ = run_schemathesis(base, work, "--header", f"Authorization: Bearer {TOKEN}", max_examples=5,
                                       phases="fuzzing,stateful")
    assert code == 0, _failures(output)
    assert httpx.get(f"{base}/api/kbs").status_code == 401
    shutil.rmtree(work / "sandbox", ignore_errors=True)


def test_the_issue_mismatches_answer_as_documented(pyrite_home: Path) -> None:
    """The cases schemathesis found, each pinned (fast, in-process): the server refuses what the document
    calls invalid, accepts what it calls valid, and a 405/OPTIONS lists every method of the path."""
    from starlette.testclient import TestClient

    from pyrite.config import load_settings
    from pyrite.server.app import create_app

    with TestClient(create_app(load_settings(), worker=False), base_url="http://127.0.0.1") as c:
        assert c.post("/api/kbs", json={"name": "notes"}).status_code == 201
        refused = [c.get("/api/index/embed-status?kb="), c.get("/api/index/embed/failed?kb="),
                   c.get("/api/search?q=x&kb="), c.get("/api/search?q=x&mode="), c.get("/api/entries?kb=notes&limit="),
                   c.get("/api/search?q=x&wait="), c.post("/api/index/embed/requeue"),
                   c.post("/api/index/embed/requeue", headers={"Content-Type": "application/json"}),
                   c.post("/api/index/embed/requeue", json={"status": ""}),
                   c.post("/api/kbs", json={"name": "rel", "path": "relative/folder"})]
        assert [r.status_code for r in refused] == [400, 400, 400, 422, 422, 422, 415, 400, 422, 400]
        assert all(set(r.json()) == {"error"} for r in refused)
        accepted = [c.get("/api/entries?kb=notes&offset=9999999999"), c.get("/api/entries?kb=notes&limit=5.0"),
                    c.post("/api/index/embed/requeue", json={"limit": 5.0}),
                    c.post("/api/index/embed/requeue", json={"status": ["failed", "done"]})]
        assert [r.status_code for r in accepted] == [200, 200, 200, 200]
        for path, methods in [("/api/kbs", {"GET", "HEAD", "POST"}), ("/api/entries", {"GET", "HEAD", "POST"}),
                              ("/api/entries/notes/x", {"GET", "HEAD", "PATCH", "DELETE"})]:
            r = c.options(path)
            assert r.status_code == 405 and set(r.json()) == {"error"}
            assert {m.strip() for m in r.headers["allow"].split(",")} == methods, (path, r.headers["allow"])
        doc = c.get("/api/openapi.json").json()
        assert "security" not in doc and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        for ops in doc["paths"].values():
            for op in ops.values():
                assert {"400", "401", "405", "500"} <= set(op["responses"]), op["operationId"]
