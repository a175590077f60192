"""The MCP server (stdio): kb_* tools for AI agents, each a thin call into the core, and an embedding worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Callable

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from pyrite import __version__
from pyrite.config import Settings
from pyrite.core import Pyrite
from pyrite.errors import PyriteError
from pyrite.worker import EmbeddingWorker

log = logging.getLogger("pyrite.mcp")
WORKER_STOP_S = 15.0  # the worker's grace (10 s) for the batch in hand, and a margin

INSTRUCTIONS = (
    "pyrite is the user's local knowledge base: markdown notes grouped in KBs. Call kb_list first to see the "
    "KBs, kb_search to find notes (hybrid search by words and meaning), kb_get to read one, and kb_create / "
    "kb_update / kb_delete to change them. Writes are saved as markdown files the user can read."
)
READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)
WRITE = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False)
DESTRUCTIVE = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=False)


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a core call in a thread; PyriteError becomes an MCP tool error with its message."""
    try:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
    except PyriteError as exc:
        raise ToolError(str(exc)) from None


@contextlib.asynccontextmanager
async def embedding_worker(core: Pyrite) -> AsyncIterator[EmbeddingWorker | None]:
    """Run an EmbeddingWorker on this event loop while the block runs, so writes only queue and return at once.

    The model loads on the worker's first batch, not at startup; on exit the batch in hand finishes or is
    released, and anything still pending stays queued for the next worker (any process).
    """
    if not core.provider.enabled:
        yield None
        return
    worker = EmbeddingWorker(core.embedding, kind="mcp")
    worker.attach()  # from now on a write only queues, even before the loop below has started
    task = asyncio.create_task(worker.process_queue(), name="pyrite-mcp-worker")
    try:
        yield worker
    finally:
        worker.request_stop()
        try:
            await asyncio.wait_for(task, timeout=WORKER_STOP_S)
        except (asyncio.TimeoutError, Exception):
            log.warning("embedding worker did not stop in time; its leases will expire")


def build_server(core: Pyrite, *, read_only: bool = False, worker: bool = True) -> MCPServer:
    """An MCPServer exposing the kb_* tools over core (only the read tools when read_only), with an
    embedding worker while it runs (unless worker=False)."""

    @contextlib.asynccontextmanager
    async def lifespan(server: MCPServer) -> AsyncIterator[dict[str, Any]]:
        if not worker:
            yield {}
            return
        async with embedding_worker(core):
            yield {}

    server: MCPServer = MCPServer(name="pyrite", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan)

    @server.tool(annotations=READ_ONLY)
    async def kb_list() -> dict[str, Any]:
        """List the knowledge bases: name, folder and number of entries."""
        kbs = await _call(core.kbs.list_kbs)
        return {"kbs": [k.to_dict() for k in kbs]}

    @server.tool(annotations=READ_ONLY)
    async def kb_search(query: str, kb: str | None = None, mode: str | None = None, limit: int = 10,
                        wait: float | None = None) -> dict[str, Any]:
        """Search entries. mode: 'hybrid' (default when embeddings exist: words and meaning), 'keyword'
        (exact words) or 'semantic' (meaning). kb limits to one KB. wait (seconds, max 300) first waits
        for entries you just wrote to be embedded. Returns results with id, kb, title, score, snippet."""
        return await _call(core.search.search, query, kb=kb, mode=mode, limit=limit, wait=wait)

    @server.tool(annotations=READ_ONLY)
    async def kb_get(kb: str, id: str) -> dict[str, Any]:
        """Read one entry in full: title, body (markdown), type, tags, dates, embedding status, and its links:
        outgoing (resolved to an entry id), backlinks (entries linking here) and unresolved. id is the entry's
        path inside the KB without '.md', with '/' between folders (e.g. 'Plugins/Core plugins')."""
        entry = await _call(core.kbs.get_entry, kb, id)
        return {**entry.to_dict(), "links": await _call(core.kbs.entry_links, kb, id)}

    @server.tool(annotations=READ_ONLY)
    async def kb_embed_status(kb: str | None = None) -> dict[str, Any]:
        """Embedding queue status: counts per status, oldest pending age, live workers, last error, model."""
        if kb is not None:
            await _call(core.kbs.get_kb, kb)
        return await _call(core.embedding.status, kb)

    if read_only:
        return server

    @server.tool(annotations=WRITE)
    async def kb_create(kb: str, title: str, body: str = "", tags: list[str] | None = None,
                        type: str = "note", folder: str = "") -> dict[str, Any]:
        """Create an entry in a KB, in folder (a path inside the KB such as 'Projects/2024'; made if missing).
        The file is named after the title ('My Note' -> 'My Note.md', or 'my-note.md' in a KB set to slug
        names; '-2' if taken) and its id is its path without '.md' ('Projects/2024/My Note'); the body is
        markdown. Returns the entry with its id and path."""
        entry = await _call(core.kbs.create_entry, kb, title, body, tags=tags or [], type=type, folder=folder)
        return entry.to_dict()

    @server.tool(annotations=WRITE)
    async def kb_update(kb: str, id: str, title: str | None = None, body: str | None = None,
                        tags: list[str] | None = None) -> dict[str, Any]:
        """Update an entry: only the fields given change (tags replaces the whole list); the id stays."""
        entry = await _call(core.kbs.update_entry, kb, id, title=title, body=body, tags=tags)
        return entry.to_dict()

    @server.tool(annotations=WRITE)
    async def kb_move(kb: str, id: str, to: str) -> dict[str, Any]:
        """Rename an entry to the id `to` (its file too, never overwriting one) and rewrite every link to it in
        other notes; its embedding is kept. Returns the entry and the ids of the notes whose links changed."""
        result = await _call(core.kbs.move_entry, kb, id, to)
        return result.to_dict()

    @server.tool(annotations=DESTRUCTIVE)
    async def kb_delete(kb: str, id: str) -> dict[str, Any]:
        """Delete an entry and its markdown file. This cannot be undone (unless the KB is in git)."""
        await _call(core.kbs.delete_entry, kb, id)
        return {"deleted": {"kb": kb, "id": id}}

    return server


def run_stdio(settings: Settings, *, read_only: bool = False) -> None:
    """Serve the tools on stdin/stdout until the client closes the stream."""
    core = Pyrite(settings)
    try:
        build_server(core, read_only=read_only).run("stdio")
    finally:
        core.close()
