"""Running pyrite: `pyrite worker`, `pyrite serve`, `pyrite mcp`, `pyrite embedders test`."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
import time
from typing import Iterator

import click

from pyrite.cli.common import PyriteGroup, emit_json, format_option, get_core, get_settings, settings_loader
from pyrite.cli.running import run_worker
from pyrite.worker import EmbeddingWorker


@click.command()
@click.option("--until-empty", is_flag=True, help="Exit once nothing is pending (default: run until stopped).")
@click.option("--kb", default=None, help="Only work this KB's items.")
@format_option
@click.pass_context
def worker(ctx: click.Context, until_empty: bool, kb: str | None, fmt: str) -> None:
    """Run an embedding worker in the foreground (for a process manager); SIGTERM stops it cleanly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    core = get_core(ctx)
    if kb is not None:
        core.kbs.get_kb(kb)
    core.provider.require()
    w = EmbeddingWorker(core.embedding, kind="worker", until_empty=until_empty, kb=kb)
    log = logging.getLogger("pyrite.worker")
    log.info("worker %s starting (model %s)", w.id, core.provider.model_id)
    core.provider.embedder.load()
    w.on_batch = lambda r: log.info("batch: %d done, %d retried, %d failed", r.done, r.retried, r.failed)
    totals = run_worker(w)
    log.info("worker %s stopped: %d done, %d failed", w.id, totals.done, totals.failed)
    if fmt == "json":
        emit_json({"worker": w.id, "done": totals.done, "failed": totals.failed, "retried": totals.retried})



def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _served_hosts(host: str, configured: tuple[str, ...]) -> tuple[str, ...]:
    """The Host names to answer: the configured ones, plus the address served on unless it is a wildcard."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        if not configured:
            click.echo(f"note: on {host or 'all addresses'} only loopback names are answered; set "
                       "PYRITE_ALLOWED_HOSTS to the names clients use (e.g. myhost.lan)", err=True)
        return configured
    name = f"[{host.strip('[]')}]" if ":" in host else host
    return (*configured, name.lower())


def check_port(host: str, port: int) -> None:
    """ClickException unless host:port can be listened on now (bound and released at once, as uvicorn binds)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise click.ClickException(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} on {host} is already in use (another pyrite serve, or another program); "
                    f"choose another with --port, e.g. `pyrite serve --port {port + 1 if port < 65535 else 8001}`"
                ) from None
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but a clean shutdown on SIGTERM exits 0 instead of re-raising the signal."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    return Server


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--no-worker", is_flag=True, help="Run no embedding worker (writes then embed synchronously).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="Server log level.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, no_worker: bool, log_level: str) -> None:
    """Serve the REST + WebSocket API, with an embedding worker, until SIGINT/SIGTERM."""
    settings = get_settings(ctx)
    if not is_loopback(host) and not settings.api_token:
        raise click.ClickException(
            f"refusing to listen on {host} without a token: set PYRITE_API_TOKEN (clients then send "
            "'Authorization: Bearer <token>'), or serve on 127.0.0.1")
    settings = settings.with_overrides(allowed_hosts=_served_hosts(host, settings.allowed_hosts))
    import uvicorn

    from pyrite.server.app import SHUTDOWN_GRACE_S, create_app

    _Server = _server_class()

    logging.basicConfig(level=getattr(logging, log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings, worker=not no_worker, reload=settings_loader(ctx))
    check_port(host, port)
    click.echo(f"pyrite serving {settings.home} on http://{host}:{port} "
               f"({'no worker' if no_worker else 'with embedding worker'})", err=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    _Server(config).run()


@click.command()
@click.option("--read-only", is_flag=True, help="Expose only the read tools (list, search, get, status).")
@click.pass_context
def mcp(ctx: click.Context, read_only: bool) -> None:
    """Serve the kb_* tools to an AI agent over stdio (MCP); starts no worker."""
    from pyrite.mcp_server import run_stdio

    run_stdio(get_settings(ctx), read_only=read_only)



@click.group(cls=PyriteGroup)
def embedders() -> None:
    """Check the configured embedding provider."""


@embedders.command("test")
@format_option
@click.pass_context
def embedders_test(ctx: click.Context, fmt: str) -> None:
    """Send one tiny request with the current settings; show provider, model, dimension and latency."""
    from pyrite.embedders import create_embedder
    from pyrite.errors import EmbeddingError

    settings = get_settings(ctx)
    info: dict[str, object] = {"provider": settings.embed_provider, "model": settings.model,
                               "url": settings.embed_url}
    started = time.perf_counter()
    try:
        embedder = create_embedder(settings)
        vectors = embedder.embed(["pyrite embedding check"])
    except EmbeddingError as exc:
        info.update(ok=False, error=str(exc), seconds=round(time.perf_counter() - started, 3))
    else:
        info.update(ok=True, dimension=int(vectors.shape[1]), seconds=round(time.perf_counter() - started, 3),
                    url=getattr(embedder, "url", None))
    if fmt == "json":
        emit_json(info)
    elif info["ok"]:
        click.echo(f"ok: {info['provider']} {info['model']}, dimension {info['dimension']}, "
                   f"{info['seconds']:.3f}s" + (f" ({info['url']})" if info.get("url") else ""))
    else:
        click.echo(f"Error: {info['error']}", err=True)  # the error already names provider and model
    if not info["ok"]:
        ctx.exit(1)


COMMANDS = [worker, serve, mcp, embedders]
