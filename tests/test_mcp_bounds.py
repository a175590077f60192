"""Issue 12 item 6: MCP takes the same inputs as REST, `wait` is a true upper bound, the body limit applies,
and a write returns before its embedding (the MCP process runs a worker). Real `pyrite mcp` subprocesses,
the MCP SDK client, and a slow OpenAI-shaped provider on 127.0.0.1."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from pyrite.config import load_settings
from pyrite.core import Pyrite
from tests.fake_provider import FakeProvider, fake_provider  # noqa: F401 - the fixture
from tests.test_mcp import error_text, raw_exchange, structured

ROOT = Path(__file__).resolve().parent.parent


def session(home: Path, env: dict[str, str], body: Callable[[Client], Awaitable[Any]], timeout: float = 90) -> Any:
    """Run body(client) against `pyrite mcp` on home with env, and return its result."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "pyrite", "mcp"],
                                   env={"PYRITE_HOME": str(home), **env}, cwd=ROOT)

    async def main() -> Any:
        with anyio.fail_after(timeout):
            async with Client(params, read_timeout_seconds=60) as client:
                return await body(client)

    return anyio.run(main)


def make_home(home: Path) -> Path:
    core = Pyrite(load_settings())
    try:
        core.kbs.create_kb("notes")
    finally:
        core.close()
    return home


def test_wait_takes_the_rest_range_only(pyrite_home: Path) -> None:
    make_home(pyrite_home)

    async def body(client: Client) -> Any:
        bad = [await client.call_tool("kb_search", {"query": "x", "wait": w}) for w in (-5, 1e308, 301)]
        good = [structured(await client.call_tool("kb_search", {"query": "x", "wait": w})) for w in (0, 0.5)]
        return bad, good

    bad, good = session(pyrite_home, {"PYRITE_EMBED_PROVIDER": "hash"}, body)
    for result in bad:
        assert "wait must be a number of seconds from 0 to 300" in error_text(result)
    assert all(g["results"] == [] for g in good)


def test_wait_nan_is_answered_with_an_error(pyrite_home: Path) -> None:
    make_home(pyrite_home)
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "kb_search", "arguments": {"query": "x", "wait": float("nan")}}}
    started = time.monotonic()
    responses, stderr, code = raw_exchange(pyrite_home, call, patience={1: 10.0})
    assert 1 in responses, f"no answer to wait=NaN within 10 s; stderr: {stderr[-2000:]}"
    answer = responses[1]
    assert "error" in answer or answer["result"]["isError"] is True, answer
    assert time.monotonic() - started < 30 and code == 0


def test_write_returns_before_the_embedding_and_wait_bounds_the_search(pyrite_home: Path,
                                                                        fake_provider: FakeProvider) -> None:
    make_home(pyrite_home)
    fake_provider.delay = 6.0  # each embedding request takes 6 s
    env = {"PYRITE_EMBED_PROVIDER": "openai", "PYRITE_EMBED_URL": fake_provider.url,
           "PYRITE_EMBED_API_KEY": "sk-test"}

    async def body(client: Client) -> dict[str, Any]:
        out: dict[str, Any] = {}
        await client.call_tool("kb_list", {})
        out["requests_at_start"] = fake_provider.count
        t = time.monotonic()
        out["created"] = structured(await client.call_tool("kb_create", {
            "kb": "notes", "title": "Slow note", "body": "words about a slow provider"}))
        out["create_s"] = time.monotonic() - t
        t = time.monotonic()
        out["early"] = structured(await client.call_tool("kb_search", {"query": "slow", "mode": "keyword", "wait": 1}))
        out["wait_s"] = time.monotonic() - t
        out["late"] = structured(await client.call_tool("kb_search", {"query": "slow", "mode": "keyword", "wait": 60}))
        out["got"] = structured(await client.call_tool("kb_get", {"kb": "notes", "id": "slow-note"}))
        return out

    out = session(pyrite_home, env, body)
    assert out["requests_at_start"] == 0  # nothing is loaded or called before there is work
    assert out["create_s"] < 3.0, out["create_s"]
    assert out["created"]["embedding_status"] in ("pending", "processing")
    assert 0.9 <= out["wait_s"] < 3.0, out["wait_s"]
    assert out["early"]["pending"] == 1 and any("still waiting" in n for n in out["early"]["notes"])
    assert out["late"]["pending"] == 0 and [r["id"] for r in out["late"]["results"]] == ["slow-note"]
    assert out["got"]["embedding_status"] == "done"


def test_body_limit_applies_to_mcp_writes(pyrite_home: Path) -> None:
    make_home(pyrite_home)

    async def body(client: Client) -> Any:
        too_big = await client.call_tool("kb_create", {"kb": "notes", "title": "Big", "body": "é" * 600})
        fits = structured(await client.call_tool("kb_create", {"kb": "notes", "title": "Small", "body": "x" * 1000}))
        grown = await client.call_tool("kb_update", {"kb": "notes", "id": "small", "body": "x" * 1001})
        return too_big, fits, grown

    too_big, fits, grown = session(pyrite_home, {"PYRITE_EMBED_PROVIDER": "hash", "PYRITE_MAX_BODY": "1000"}, body)
    assert "over 1000 bytes" in error_text(too_big)
    assert "over 1000 bytes" in error_text(grown)
    assert fits["id"] == "small"
    folder = pyrite_home / "kbs" / "notes"
    assert [p.name for p in folder.iterdir()] == ["small.md"]
    assert (folder / "small.md").read_text().endswith("x" * 1000 + "")
