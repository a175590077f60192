"""REST handlers: parse the request, call the core in a thread, answer JSON. No logic of their own."""

from __future__ import annotations

from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from pyrite import __version__
from pyrite.core import Pyrite
from pyrite.names import check_entry_id, check_kb_name
from pyrite.server.inputs import InputError, json_object, query_float, query_int
from pyrite.services.search_service import LIMIT_MAX, MODES

ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "kb": (str,), "title": (str,), "body": (str, type(None)), "tags": (list, type(None)),
    "type": (str, type(None)), "meta": (dict, type(None)),
}
PATCH_FIELDS: dict[str, tuple[type, ...]] = {
    "title": (str, type(None)), "body": (str, type(None)), "tags": (list, type(None)),
    "type": (str, type(None)), "meta": (dict, type(None)),
}


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
        "model": {"id": core.embedding.model_id or None, "loaded": core.embedding.loaded()},
        "semantic_search": core.embedding.enabled,
        "note": core.embedding.why_disabled(),
    })


async def list_kbs(request: Request) -> JSONResponse:
    kbs = await _call(request, _core(request).kbs.list_kbs)
    return JSONResponse({"kbs": [k.to_dict() for k in kbs]})


async def create_kb(request: Request) -> JSONResponse:
    data = await json_object(request, {"name": (str,), "path": (str, type(None)), "create": (bool, type(None))},
                             required=("name",))
    kb = await _call(request, _core(request).kbs.create_kb, data["name"], data.get("path"),
                     create=bool(data.get("create")))
    return JSONResponse(kb.to_dict(), status_code=201)


async def list_entries(request: Request) -> JSONResponse:
    kb = request.query_params.get("kb")
    if not kb:
        raise InputError("query parameter 'kb' is required")
    limit = query_int(request, "limit", 100, low=1, high=10_000)
    offset = query_int(request, "offset", 0, low=0, high=10**9) or 0
    entries = await _call(request, _core(request).kbs.list_entries, kb, limit=limit, offset=offset)
    return JSONResponse({"entries": [e.to_dict(with_body=False) for e in entries]})


async def create_entry(request: Request) -> JSONResponse:
    data = await json_object(request, ENTRY_FIELDS, required=("kb", "title"))
    entry = await _write(
        request, _core(request).kbs.create_entry, data["kb"], data["title"], data.get("body") or "",
        tags=data.get("tags") or [], type=data.get("type") or "note", meta=data.get("meta"))
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
    params = request.query_params
    query = params.get("q")
    if query is None:
        raise InputError("query parameter 'q' is required")
    mode = params.get("mode") or None
    if mode is not None and mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}")
    limit = query_int(request, "limit", 10, low=1, high=LIMIT_MAX) or 10
    wait = query_float(request, "wait", low=0, high=300)
    answer = await _call(request, _core(request).search.search, query, kb=params.get("kb") or None, mode=mode,
                         limit=limit, wait=wait)
    return JSONResponse(answer)


async def embed_status(request: Request) -> JSONResponse:
    kb = request.query_params.get("kb") or None
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
    status = data.get("status") or ["failed"]
    statuses = [status] if isinstance(status, str) else status
    bad = [s for s in statuses if s not in ("failed", "done", "skipped")]
    if bad:
        raise InputError(f"status must be failed, done or skipped, not {bad[0]!r}")
    limit = data.get("limit")
    if limit is not None and not 1 <= limit <= 10**9:
        raise InputError("limit must be from 1 to 1000000000")
    queued = await _call(request, core.embedding.requeue, kb=kb, statuses=statuses,
                         only_missing=bool(data.get("only_missing")), limit=limit)
    worker = request.app.state.worker
    if worker is not None and queued:
        worker.notify()
    return JSONResponse({"queued": queued})


async def failed(request: Request) -> JSONResponse:
    kb = request.query_params.get("kb") or None
    if kb is not None:
        await _call(request, _core(request).kbs.get_kb, kb)
    limit = query_int(request, "limit", 100, low=1, high=10_000) or 100
    items = await _call(request, _core(request).embedding.failed, kb, limit=limit)
    return JSONResponse({"failed": items})


async def websocket(ws: WebSocket) -> None:
    raw = ws.query_params.get("since")
    since: int | None = None
    if raw not in (None, ""):
        try:
            since = max(0, int(raw))
        except ValueError:
            await ws.close(code=1008, reason="since must be an integer event id")
            return
    await ws.accept()
    await ws.app.state.hub.serve(ws, since)

