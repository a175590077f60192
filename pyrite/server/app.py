"""The Starlette app: routes, error mapping in one table, and a lifespan that runs the embedding worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from pyrite.config import Settings
from pyrite.core import Pyrite
from pyrite.errors import (BusyError, ConfigError, ConflictError, EmbeddingError, NotFoundError, PyriteError,
                           StorageError, ValidationError)
from pyrite.server import routes
from pyrite.server.hub import EventHub
from pyrite.server.inputs import InputError, MediaTypeError
from pyrite.server.middleware import BodyLimit, HostCheck, SameOrigin, TokenAuth
from pyrite.server.openapi import openapi_document
from pyrite.worker import EmbeddingWorker

log = logging.getLogger("pyrite.server")
SHUTDOWN_GRACE_S = 10.0

# Which status each pyrite error becomes; a class not named here answers as its nearest named base.
ERROR_STATUS: dict[type[PyriteError], int] = {
    MediaTypeError: 415,
    InputError: 422,
    ValidationError: 400,
    NotFoundError: 404,
    ConflictError: 409,
    StorageError: 409,  # the KB's folder refuses the write (read-only, full): its state, not the request
    EmbeddingError: 502,
    BusyError: 503,
    ConfigError: 503,
    PyriteError: 400,
}


def error_status(exc: PyriteError) -> int:
    """The HTTP status of a pyrite error: that of its class, else of its nearest base in ERROR_STATUS."""
    return next(ERROR_STATUS[cls] for cls in type(exc).__mro__ if cls in ERROR_STATUS)


async def pyrite_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PyriteError)  # registered for PyriteError only
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, BusyError) else None
    return JSONResponse({"error": str(exc)}, status_code=error_status(exc), headers=headers)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HTTPException):
        return await server_error(request, exc)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal error; see the server log"}, status_code=500)


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document(token=request.app.state.token_required))


Endpoint = Callable[[Request], Awaitable[Response]]


def resource(path: str, **handlers: Endpoint) -> Route:
    """One Route for a path with a handler per method, so a 405 (and OPTIONS) lists every method served there."""
    by_method = {method.upper(): handler for method, handler in handlers.items()}
    if "GET" in by_method:
        by_method.setdefault("HEAD", by_method["GET"])

    async def dispatch(request: Request) -> Response:
        return await by_method[request.method](request)

    dispatch.__name__ = "_".join(h.__name__ for h in handlers.values())
    return Route(path, dispatch, methods=list(by_method))


ROUTES = [
    resource("/api/health", get=routes.health),
    resource("/api/kbs", get=routes.list_kbs, post=routes.create_kb),
    resource("/api/entries", get=routes.list_entries, post=routes.create_entry),
    # Not under /api/entries/{kb}/{id}/...: ids are paths, so "Projects/links" is an entry id there.
    resource("/api/links/{kb}/{entry_id:path}", get=routes.entry_links),
    resource("/api/move/{kb}/{entry_id:path}", post=routes.move_entry),
    resource("/api/entries/{kb}/{entry_id:path}", get=routes.get_entry, patch=routes.update_entry,
             delete=routes.delete_entry),
    resource("/api/search", get=routes.search),
    resource("/api/index/embed-status", get=routes.embed_status),
    resource("/api/index/embed/requeue", post=routes.requeue),
    resource("/api/index/embed/failed", get=routes.failed),
    resource("/api/openapi.json", get=openapi),
    WebSocketRoute("/ws", routes.websocket),
]


def create_app(settings: Settings, *, worker: bool = True, core: Pyrite | None = None,
               reload: Callable[[], Settings] | None = None) -> Starlette:
    """The pyrite server app; its lifespan opens the core and (unless worker=False) runs one EmbeddingWorker."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = core is None
        app.state.core = core or await run_in_threadpool(lambda: Pyrite(settings, reload=reload))
        app.state.worker = None
        app.state.hub = EventHub(app.state.core.db)
        await app.state.hub.start()
        task: asyncio.Task[Any] | None = None
        embedding = app.state.core.embedding
        if worker and app.state.core.provider.enabled:
            w = EmbeddingWorker(embedding, kind="server")
            w.on_batch = lambda result: app.state.hub.poke()
            app.state.worker = w
            task = asyncio.create_task(_run_worker(w), name="pyrite-worker")
        elif worker:
            log.warning("no embedding worker: %s", app.state.core.provider.why_disabled())
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
                   Middleware(BodyLimit, max_bytes=settings.max_body_bytes)]
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={PyriteError: pyrite_error, HTTPException: http_error, Exception: server_error},
    )
    app.state.token_required = settings.api_token is not None
    return app


async def _run_worker(worker: EmbeddingWorker) -> None:
    # Load the model in the background so the server answers at once; the worker waits for it. Writes
    # meanwhile only queue (the worker takes them once it runs) instead of each loading the model itself.
    worker.attach()
    try:
        await asyncio.to_thread(worker.service.provider.embedder.load)
    except Exception as exc:
        worker.last_error = f"cannot load the embedding model: {exc}"
        log.error("%s", worker.last_error)
    await worker.process_queue()
