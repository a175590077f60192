"""`pyrite mcp` over stdio, driven by the MCP SDK's own client (a real subprocess, hash embedder)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.storage import workers

pytestmark = pytest.mark.slow
READ_TOOLS = {"kb_list", "kb_search", "kb_get", "kb_embed_status"}
ALL_TOOLS = READ_TOOLS | {"kb_create", "kb_update", "kb_delete", "kb_move"}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(pyrite_home: Path) -> Path:
    """A home with a KB 'notes' made beforehand through the core."""
    core = Pyrite(load_settings())
    try:
        core.kbs.create_kb("notes")
    finally:
        core.close()
    return pyrite_home


def run_session(home: Path, body: Callable[[Client], Awaitable[Any]], *args: str, timeout: float = 60) -> Any:
    """Start `pyrite mcp ARGS` on home, open a client session, run body(client), return its result."""
    env = {"PYRITE_HOME": str(home), "PYRITE_EMBED_PROVIDER": "hash"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "pyrite", "mcp", *args], env=env, cwd=ROOT)

    async def main() -> Any:
        with anyio.fail_after(timeout):
            with open(home.parent / "mcp-stderr.log", "a") as errlog:
                async with Client(params, read_timeout_seconds=30) as client:
                    return await body(client)

    return anyio.run(main)


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


def error_text(result: Any) -> str:
    assert result.is_error, f"expected a tool error, got {result}"
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert text.strip()
    assert "Traceback" not in text
    return text


def test_tools_are_listed_with_schemas_descriptions_and_hints(home: Path) -> None:
    async def body(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {t.name: t for t in run_session(home, body)}
    assert set(tools) == ALL_TOOLS
    for name, tool in tools.items():
        assert tool.description and len(tool.description) > 20, name
        assert tool.input_schema["type"] == "object", name
        assert isinstance(tool.input_schema.get("properties"), dict), name
        assert tool.annotations is not None, name
        assert tool.annotations.read_only_hint is (name in READ_TOOLS), name
    assert tools["kb_delete"].annotations.destructive_hint is True
    assert tools["kb_create"].annotations.destructive_hint is False
    assert set(tools["kb_search"].input_schema["required"]) == {"query"}
    assert set(tools["kb_get"].input_schema["required"]) == {"kb", "id"}
    assert set(tools["kb_create"].input_schema["required"]) >= {"kb", "title"}
    assert set(tools["kb_search"].input_schema["properties"]) >= {"query", "kb", "mode", "limit", "wait"}


def test_create_search_get_update_delete(home: Path) -> None:
    async def body(client: Client) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["list"] = structured(await client.call_tool("kb_list", {}))
        out["create"] = structured(await client.call_tool("kb_create", {
            "kb": "notes", "title": "Raft consensus", "body": "Leader election and log replication.",
            "tags": ["distributed"]}))
        out["search"] = structured(await client.call_tool("kb_search", {"query": "leader election", "kb": "notes",
                                                                        "wait": 5}))
        out["semantic"] = structured(await client.call_tool("kb_search", {"query": "log replication",
                                                                          "mode": "semantic", "wait": 5}))
        out["get"] = structured(await client.call_tool("kb_get", {"kb": "notes", "id": "raft-consensus"}))
        out["update"] = structured(await client.call_tool("kb_update", {
            "kb": "notes", "id": "raft-consensus", "body": "Terms, votes and heartbeats.", "tags": ["x", "y"]}))
        out["search2"] = structured(await client.call_tool("kb_search", {"query": "heartbeats", "mode": "keyword"}))
        out["status"] = structured(await client.call_tool("kb_embed_status", {"kb": "notes"}))
        out["delete"] = structured(await client.call_tool("kb_delete", {"kb": "notes", "id": "raft-consensus"}))
        out["after"] = await client.call_tool("kb_get", {"kb": "notes", "id": "raft-consensus"})
        out["search3"] = structured(await client.call_tool("kb_search", {"query": "heartbeats", "mode": "keyword"}))
        return out

    out = run_session(home, body)
    assert [k["name"] for k in out["list"]["kbs"]] == ["notes"]
    created = out["create"]
    assert created["id"] == "raft-consensus" and created["kb"] == "notes" and created["tags"] == ["distributed"]
    # The write only queued: the MCP process's own worker embeds it after the answer.
    assert created["embedding_status"] in ("pending", "processing", "done")
    assert [r["id"] for r in out["search"]["results"]] == ["raft-consensus"]
    assert out["search"]["mode"] == "hybrid"
    assert out["semantic"]["results"][0]["id"] == "raft-consensus" and out["semantic"]["pending"] == 0
    assert out["get"]["body"] == "Leader election and log replication."
    assert out["get"]["title"] == "Raft consensus"
    assert out["update"]["body"] == "Terms, votes and heartbeats." and out["update"]["tags"] == ["x", "y"]
    assert out["update"]["title"] == "Raft consensus" and out["update"]["embedding_status"] in ("pending", "processing", "done")
    assert [r["id"] for r in out["search2"]["results"]] == ["raft-consensus"]
    assert out["status"]["counts"]["done"] == 1 and out["status"]["model"] == "hash:hash-384"
    assert out["delete"] == {"deleted": {"kb": "notes", "id": "raft-consensus"}}
    assert "raft-consensus" in error_text(out["after"])
    assert out["search3"]["results"] == []
    assert not (home / "kbs" / "notes" / "raft-consensus.md").exists()


def test_errors_are_tool_errors_and_the_server_keeps_serving(home: Path) -> None:
    calls = [
        ("kb_get", {"kb": "nope", "id": "x"}, "nope"),
        ("kb_create", {"kb": "nope", "title": "t"}, "nope"),
        ("kb_search", {"query": "x", "kb": "nope"}, "nope"),
        ("kb_embed_status", {"kb": "nope"}, "nope"),
        ("kb_get", {"kb": "notes", "id": "../x"}, "../x"),
        ("kb_update", {"kb": "notes", "id": "../x", "body": "b"}, "../x"),
        ("kb_delete", {"kb": "notes", "id": "../x"}, "../x"),
        ("kb_delete", {"kb": "notes", "id": "..%2Fx"}, "invalid entry id"),
        ("kb_get", {"kb": "../notes", "id": "x"}, "KB name"),
        ("kb_get", {"kb": "notes", "id": "missing"}, "missing"),
        ("kb_search", {"query": ""}, "empty"),
        ("kb_search", {"query": "   "}, "empty"),
        ("kb_search", {"query": "x", "mode": "fuzzy"}, "mode"),
        ("kb_search", {"query": "x", "limit": 0}, "limit"),
        ("kb_search", {"query": "a\x00b"}, "NUL"),
        ("kb_create", {"kb": "notes", "title": ""}, "title"),
        ("kb_create", {"kb": "notes", "title": "x", "type": "../t"}, "type"),
        ("kb_create", {"kb": "notes", "title": 5}, "title"),
        ("kb_get", {"kb": "notes"}, "id"),
    ]

    async def body(client: Client) -> Any:
        results = [await client.call_tool(name, args) for name, args, _ in calls]
        still = structured(await client.call_tool("kb_create", {"kb": "notes", "title": "Still alive"}))
        listing = structured(await client.call_tool("kb_list", {}))
        return results, still, listing

    results, still, listing = run_session(home, body)
    for (name, args, expected), result in zip(calls, results):
        text = error_text(result)
        assert expected.lower() in text.lower(), (name, args, text)
    assert still["id"] == "still-alive"
    assert listing["kbs"][0]["entries"] == 1
    assert sorted(p.name for p in (home / "kbs" / "notes").iterdir()) == ["still-alive.md"]


def test_hostile_strings_do_not_break_the_server(home: Path) -> None:
    queries = ['"', "NEAR(", "a*", "title:x", "'; DROP TABLE entries; --", "🔥", "\u202e", "x" * 20_000]

    async def body(client: Client) -> Any:
        results = [await client.call_tool("kb_search", {"query": q}) for q in queries]
        alive = structured(await client.call_tool("kb_list", {}))
        return results, alive

    results, alive = run_session(home, body)
    for query, result in zip(queries, results):
        if result.is_error:
            error_text(result)
        else:
            assert isinstance(structured(result)["results"], list), query
    assert alive["kbs"][0]["name"] == "notes"


def test_read_only_lists_only_read_tools(home: Path) -> None:
    async def body(client: Client) -> Any:
        tools = {t.name for t in (await client.list_tools()).tools}
        listed = structured(await client.call_tool("kb_list", {}))
        try:
            write = await client.call_tool("kb_create", {"kb": "notes", "title": "Sneaky"})
        except Exception as exc:  # an unknown tool may also come back as a protocol error
            write = exc
        return tools, listed, write

    tools, listed, write = run_session(home, body, "--read-only")
    assert tools == READ_TOOLS
    assert [k["name"] for k in listed["kbs"]] == ["notes"]
    if not isinstance(write, Exception):
        assert "kb_create" in error_text(write)
    assert list((home / "kbs" / "notes").iterdir()) == []


def test_write_is_queued_when_a_worker_is_alive(home: Path) -> None:
    """With a live worker elsewhere (its heartbeat row), an MCP write is only queued, and ends up embedded."""
    core = Pyrite(load_settings())
    try:
        with core.db.write() as conn:
            workers.register(conn, "worker-elsewhere", kind="worker", model="hash:hash-384", now=time.time() + 60)

        async def body(client: Client) -> Any:
            return structured(await client.call_tool("kb_create", {"kb": "notes", "title": "Queued note"}))

        created = run_session(home, body)
        assert created["embedding_status"] == "pending"
        counts = core.embedding.status()["counts"]
        assert counts["pending"] + counts["done"] == 1  # the MCP process's worker may have embedded it
    finally:
        core.close()


def raw_exchange(home: Path, *messages: dict[str, Any], patience: dict[Any, float] | None = None
                 ) -> tuple[dict[Any, dict[str, Any]], str, int]:
    """Talk JSON-RPC lines to `pyrite mcp` (each request waits for its answer), then close stdin;
    return {id: response}, stderr and the exit code. Every stdout line must be JSON-RPC.

    A request whose id is in `patience` may go unanswered for that many seconds; any other must be
    answered within 30 s."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    env = {**os.environ, "PYRITE_HOME": str(home), "PYRITE_EMBED_PROVIDER": "hash"}
    proc = subprocess.Popen([sys.executable, "-m", "pyrite", "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    responses: dict[Any, dict[str, Any]] = {}
    try:
        for message in (init, initialized, *messages):
            assert proc.stdin is not None
            # ensure_ascii keeps a lone surrogate as the escape "\\ud800", as a client may send it.
            proc.stdin.write(json.dumps(message, ensure_ascii=True) + "\n")
            proc.stdin.flush()
            if "id" not in message:
                continue
            wait = (patience or {}).get(message["id"])
            deadline = time.monotonic() + (wait or 30)
            while message["id"] not in responses:
                try:
                    line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    if wait is not None:
                        break
                    pytest.fail(f"no answer to {message} within 30 s")
                if line is None:
                    break  # the server exited
                if line.strip():
                    answer = json.loads(line)
                    assert answer.get("jsonrpc") == "2.0", line
                    if "id" in answer:
                        responses[answer["id"]] = answer
            if message["id"] not in responses and wait is None:
                break
        assert proc.stdin is not None
        proc.stdin.close()
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    return responses, proc.stderr.read(), code


def test_raw_protocol_stdout_is_clean_and_exit_is_0(home: Path) -> None:
    responses, stderr, code = raw_exchange(
        home, {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "kb_list", "arguments": {}}})
    assert responses[0]["result"]["serverInfo"]["name"] == "pyrite", stderr[-2000:]
    assert responses[1]["result"]["isError"] is False
    assert code == 0, stderr[-2000:]


def test_lone_surrogate_does_not_crash_or_write(home: Path) -> None:
    """A JSON string may escape a lone UTF-16 surrogate, which no UTF-8 file can hold. The MCP SDK's
    JSON parser rejects such a message before pyrite sees it (and sends no answer at all, see the report);
    what pyrite must guarantee is that the server lives on and nothing is written."""
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "kb_create", "arguments": {"kb": "notes", "title": "bad \ud800 title"}}}
    after = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
             "params": {"name": "kb_create", "arguments": {"kb": "notes", "title": "Good title"}}}
    responses, stderr, code = raw_exchange(home, call, after, patience={2: 5.0})
    if 2 in responses:  # if answered, it is refused: a JSON-RPC error or a tool error
        bad = responses[2]
        assert "error" in bad or bad["result"]["isError"] is True, bad
    assert responses[3]["result"]["isError"] is False, responses[3]
    assert sorted(p.name for p in (home / "kbs" / "notes").iterdir()) == ["good-title.md"]
    assert code == 0, stderr[-2000:]
