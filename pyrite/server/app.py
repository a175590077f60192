"""The Starlette app: routes, error mapping in one table, and a lifespan that runs the embedding worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from pyrite.config import Settings
from pyrite.core import Pyrite
from pyrite.errors import ConfigError, ConflictError, EmbeddingError, NotFoundError, PyriteError, ValidationError
from pyrite.server import routes
from pyrite.server.hub import EventHub
from pyrite.server.inputs import InputError
from pyrite.server.middleware import BodyLimit, HostCheck, JSONOnly, SameOrigin, TokenAuth
from pyrite.server.openapi import openapi_document
from pyrite.worker import EmbeddingWorker

log = logging.getLogger("pyrite.server")
SHUTDOWN_GRACE_S = 10.0

# Which status each pyrite error becomes; the most specific class wins.
ERROR_STATUS: list[tuple[type[PyriteError], int]] = [
    (InputError, 422),
    (ValidationError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    (EmbeddingError, 502),
    (ConfigError, 503),
    (PyriteError, 400),
]


async def pyrite_error(request: Request, exc: Exception) -> JSONResponse:
    status = next(code for cls, code in ERROR_STATUS if isinstance(exc, cls))
    return JSONResponse({"error": str(exc)}, status_code=status)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HTTPException):
        return await server_error(request, exc)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal error; see the server log"}, status_code=500)


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document())


ROUTES = [
    Route("/api/health", routes.health, methods=["GET"]),
    Route("/api/kbs", routes.list_kbs, methods=["GET"]),
    Route("/api/kbs", routes.create_kb, methods=["POST"]),
    Route("/api/entries", routes.list_entries, methods=["GET"]),
    Route("/api/entries", routes.create_entry, methods=["POST"]),
    # Before the entry routes, whose {entry_id:path} would take "ID/links" as an id.
    Route("/api/entries/{kb}/{entry_id:path}/links", routes.entry_links, methods=["GET"]),
    Route("/api/entries/{kb}/{entry_id:path}/move", routes.move_entry, methods=["POST"]),
    Route("/api/entries/{kb}/{entry_id:path}", routes.get_entry, methods=["GET"]),
    Route("/api/entries/{kb}/{entry_id:path}", routes.update_entry, methods=["PATCH"]),
    Route("/api/entries/{kb}/{entry_id:path}", routes.delete_entry, methods=["DELETE"]),
    Route("/api/search", routes.search, methods=["GET"]),
    Route("/api/index/embed-status", routes.embed_status, methods=["GET"]),
    Route("/api/index/embed/requeue", routes.requeue, methods=["POST"]),
    Route("/api/index/embed/failed", routes.failed, methods=["GET"]),
    Route("/api/openapi.json", openapi, methods=["GET"]),
    WebSocketRoute("/ws", routes.websocket),
]


def create_app(settings: Settings, *, worker: bool = True, core: Pyrite | None = None,
               reload: Callable[[], Settings] | None = None) -> Starlette:
    """The pyrite server app; its lifespan opens the core and (unless worker=False) runs one EmbeddingWorker."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # With a worker in this process, it checkpoints the WAL instead of a request's commit.
        owned = core is None
        app.state.core = core or await run_in_threadpool(
            lambda: Pyrite(settings, autocheckpoint=not (worker and settings.embed_provider != "none"),
                           reload=reload))
        app.state.worker = None
        app.state.hub = EventHub(app.state.core.db)
        await app.state.hub.start()
        task: asyncio.Task[Any] | None = None
        embedding = app.state.core.embedding
        if worker and embedding.enabled:
            w = EmbeddingWorker(embedding, kind="server")
            w.on_batch = lambda result: app.state.hub.poke()
            app.state.worker = w
            task = asyncio.create_task(_run_worker(w), name="pyrite-worker")
        elif worker:
            log.warning("no embedding worker: %s", embedding.why_disabled())
        try:
            yield
        finally:
            if task is not None:
                app.state.worker.request_stop()
                try:
                    await asyncio.wait_for(task, timeout=SHUTDOWN_GRACE_S + 5)
                except (asyncio.TimeoutError, Exception):
                    log.warning("embedding worker did not stop in time; its leases will expire")
            await app.state.hub.stop()
            if owned:
                await run_in_threadpool(app.state.core.close)

    # Outermost first: who may ask at all (host, web page), then who they are, then what they send.
    middleware = [Middleware(HostCheck, allowed_hosts=settings.allowed_hosts),
                  Middleware(SameOrigin, allowed_origins=settings.allowed_origins)]
    if settings.allowed_origins:  # their pages need CORS answers, preflights included, before the token check
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.allowed_origins),
                                     allow_methods=["GET", "POST", "PATCH", "DELETE"],
                                     allow_headers=["Authorization", "Content-Type"]))
    middleware += [Middleware(TokenAuth, token=settings.api_token),
                   Middleware(JSONOnly),
                   Middleware(BodyLimit, max_bytes=settings.max_body_bytes)]
    return Starlette(
        routes=ROUTES,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={PyriteError: pyrite_error, HTTPException: http_error, Exception: server_error},
    )


async def _run_worker(worker: EmbeddingWorker) -> None:
    # Load the model in the background so the server answers at once; the worker waits for it. Writes
    # meanwhile only queue (the worker takes them once it runs) instead of each loading the model itself.
    worker.attach()
    try:
        await asyncio.to_thread(worker.service.embedder.load)
    except Exception as exc:
        worker.last_error = f"cannot load the embedding model: {exc}"
        log.error("%s", worker.last_error)
    await worker.process_queue()
