"""REST handlers: parse the request, call the core in a thread, answer JSON. No logic of their own."""

from __future__ import annotations

import time
from typing import Any, Callable

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from pyrite import __version__
from pyrite.core import Pyrite
from pyrite.errors import BusyError
from pyrite.names import check_entry_id, check_kb_name
from pyrite.server.inputs import (INT64_MAX, LIST_LIMIT_MAX, QUERY_PARAM_MAX, REQUEUE_LIMIT_MAX, REQUEUE_STATUSES,
                                  WAIT_MAX, InputError, json_object, query_choice, query_float,
                                  query_int, query_kb, query_text)
from pyrite.field_rules import SEARCH_LIMIT_MAX, SEARCH_MODES

ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "kb": (str,), "title": (str,), "body": (str, type(None)), "tags": (list, type(None)),
    "type": (str, type(None)), "meta": (dict, type(None)), "folder": (str, type(None)),
}
KB_FIELDS: dict[str, tuple[type, ...]] = {"name": (str,), "path": (str, type(None)), "create": (bool, type(None)),
                                          "names": (str, type(None))}
PATCH_FIELDS: dict[str, tuple[type, ...]] = {
    "title": (str, type(None)), "body": (str, type(None)), "tags": (list, type(None)),
    "type": (str, type(None)), "meta": (dict, type(None)),
}
# Searches run at most this many at once, so a flood of them leaves the other routes' threads free.
SEARCH_SLOTS = 4


def _core(request: Request | WebSocket) -> Pyrite:
    return request.app.state.core


async def _call(request: Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a core call off the event loop (SQLite and the model block)."""
    return await run_in_threadpool(fn, *args, **kwargs)


async def _write(request: Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a core write off the event loop, then push its event to WebSocket clients at once."""
    result = await run_in_threadpool(fn, *args, **kwargs)
    request.app.state.hub.poke()
    return result


def _path_ids(request: Request) -> tuple[str, str]:
    kb = check_kb_name(request.path_params["kb"])
    return kb, check_entry_id(request.path_params["entry_id"])


async def health(request: Request) -> JSONResponse:
    core = _core(request)
    worker = request.app.state.worker
    return JSONResponse({
        "status": "ok",
        "version": __version__,
        "worker": {"running": bool(worker and worker.running), "id": worker.id if worker else None,
                   "last_error": worker.last_error if worker else None},
        "model": {"id": core.provider.model_id or None, "loaded": core.provider.loaded()},
        "semantic_search": core.provider.enabled,
        "note": core.provider.why_disabled(),
    })


async def list_kbs(request: Request) -> JSONResponse:
    kbs = await _call(request, _core(request).kbs.list_kbs)
    return JSONResponse({"kbs": [k.to_dict() for k in kbs]})


async def create_kb(request: Request) -> JSONResponse:
    data = await json_object(request, KB_FIELDS, required=("name",))
    kb = await _call(request, _core(request).kbs.create_kb, data["name"], data.get("path"),
                     create=bool(data.get("create")), names=data.get("names"))
    return JSONResponse(kb.to_dict(), status_code=201)


async def list_entries(request: Request) -> JSONResponse:
    kb = query_kb(request, required=True)
    limit = query_int(request, "limit", 100, low=1, high=LIST_LIMIT_MAX)
    offset = query_int(request, "offset", 0, low=0, high=INT64_MAX) or 0
    entries = await _call(request, _core(request).kbs.list_entries, kb, limit=limit, offset=offset)
    return JSONResponse({"entries": [e.to_dict(with_body=False) for e in entries]})


async def create_entry(request: Request) -> JSONResponse:
    data = await json_object(request, ENTRY_FIELDS, required=("kb", "title"))
    entry = await _write(
        request, _core(request).kbs.create_entry, data["kb"], data["title"], data.get("body") or "",
        tags=data.get("tags") or [], type=data.get("type") or "note", meta=data.get("meta"),
        folder=data.get("folder") or "")
    return JSONResponse(entry.to_dict(), status_code=201)


async def get_entry(request: Request) -> JSONResponse:
    kb, entry_id = _path_ids(request)
    entry = await _call(request, _core(request).kbs.get_entry, kb, entry_id)
    return JSONResponse(entry.to_dict())


async def update_entry(request: Request) -> JSONResponse:
    kb, entry_id = _path_ids(request)
    data = await json_object(request, PATCH_FIELDS)
    entry = await _write(request, _core(request).kbs.update_entry, kb, entry_id, title=data.get("title"),
                        body=data.get("body"), tags=data.get("tags"), type=data.get("type"), meta=data.get("meta"))
    return JSONResponse(entry.to_dict())


async def delete_entry(request: Request) -> JSONResponse:
    kb, entry_id = _path_ids(request)
    await _write(request, _core(request).kbs.delete_entry, kb, entry_id)
    return JSONResponse({"deleted": {"kb": kb, "id": entry_id}})


async def entry_links(request: Request) -> JSONResponse:
    kb, entry_id = _path_ids(request)
    return JSONResponse(await _call(request, _core(request).kbs.entry_links, kb, entry_id))


async def move_entry(request: Request) -> JSONResponse:
    kb, entry_id = _path_ids(request)
    data = await json_object(request, {"to": (str,)}, required=("to",))
    result = await _write(request, _core(request).kbs.move_entry, kb, entry_id, data["to"])
    return JSONResponse(result.to_dict())


async def search(request: Request) -> JSONResponse:
    query = query_text(request, "q", QUERY_PARAM_MAX)
    mode = query_choice(request, "mode", SEARCH_MODES)
    limit = query_int(request, "limit", 10, low=1, high=SEARCH_LIMIT_MAX) or 10
    wait = query_float(request, "wait", low=0, high=WAIT_MAX)
    kb = query_kb(request)
    service = _core(request).search
    # Waiting for embeddings (asked for, up to WAIT_MAX s) holds no search slot.
    notes = await _call(request, service.wait_notes, kb, wait) if wait else []
    answer = await _search_turn(request, service.search, query, kb=kb, mode=mode, limit=limit)
    answer["notes"][:0] = notes
    return JSONResponse(answer)


async def _search_turn(request: Request, fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any
                       ) -> dict[str, Any]:
    """Run a search in one of SEARCH_SLOTS threads within its time budget, the wait for a slot included."""
    state = request.app.state
    if getattr(state, "search_slots", None) is None:
        state.search_slots = anyio.CapacityLimiter(SEARCH_SLOTS)
    seconds = _core(request).search.timeout
    started = time.monotonic()
    try:
        state.search_slots.acquire_nowait()
    except anyio.WouldBlock:
        with anyio.move_on_after(seconds) as scope:
            await state.search_slots.acquire()
        if scope.cancelled_caught:
            raise BusyError(f"the server is busy with other searches: no search slot came free within the "
                            f"search budget of {seconds:g}s (setting search_timeout, env PYRITE_SEARCH_TIMEOUT); "
                            "try again shortly")
    try:
        left = seconds - (time.monotonic() - started)  # at or below 0 the search answers BusyError at once
        return await run_in_threadpool(fn, *args, budget=left, **kwargs)
    finally:
        state.search_slots.release()


async def embed_status(request: Request) -> JSONResponse:
    kb = query_kb(request)
    if kb is not None:
        await _call(request, _core(request).kbs.get_kb, kb)
    return JSONResponse(await _call(request, _core(request).embedding.status, kb))


async def requeue(request: Request) -> JSONResponse:
    data = await json_object(request, {"kb": (str, type(None)), "status": (str, list, type(None)),
                                       "only_missing": (bool, type(None)), "limit": (int, type(None))})
    core = _core(request)
    kb = data.get("kb")
    if kb is not None:
        await _call(request, core.kbs.get_kb, kb)
    status = data.get("status")
    statuses = [status] if isinstance(status, str) else (status or ["failed"])
    bad = [s for s in statuses if s not in REQUEUE_STATUSES]
    if bad:
        raise InputError(f"status must be failed, done or skipped, not {bad[0]!r}")
    limit = data.get("limit")
    if limit is not None and not 1 <= limit <= REQUEUE_LIMIT_MAX:
        raise InputError(f"limit must be from 1 to {REQUEUE_LIMIT_MAX}")
    queued = await _call(request, core.embedding.requeue, kb=kb, statuses=statuses,
                         only_missing=bool(data.get("only_missing")), limit=limit)
    worker = request.app.state.worker
    if worker is not None and queued:
        worker.notify()
    return JSONResponse({"queued": queued})


async def failed(request: Request) -> JSONResponse:
    kb = query_kb(request)
    if kb is not None:
        await _call(request, _core(request).kbs.get_kb, kb)
    limit = query_int(request, "limit", 100, low=1, high=LIST_LIMIT_MAX) or 100
    items = await _call(request, _core(request).embedding.failed, kb, limit=limit)
    return JSONResponse({"failed": items})


SINCE_MAX = 2**63 - 1  # SQLite's largest integer: no event id is above it


def _since(raw: str | None) -> int | None:
    """The ?since= event id (None: live events only); InputError unless an integer from 0 to SINCE_MAX."""
    if raw in (None, ""):
        return None
    try:
        since = int(raw)
    except ValueError:
        raise InputError("since must be an integer event id") from None
    if not 0 <= since <= SINCE_MAX:
        raise InputError(f"since must be an event id from 0 to {SINCE_MAX}")
    return since


async def websocket(ws: WebSocket) -> None:
    # Accept first, then close with the reason: a close before the handshake reaches clients as a bare 403.
    await ws.accept()
    try:
        since = _since(ws.query_params.get("since"))
    except InputError as exc:
        await ws.close(code=1008, reason=str(exc))
        return
    await ws.app.state.hub.serve(ws, since)
