"""Long-running commands: `pyrite worker`."""

from __future__ import annotations

import logging

import click

from pyrite.cli.common import emit_json, format_option, get_core
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
    if not core.embedding.enabled:
        raise click.ClickException(core.embedding.why_disabled() or "embedding is off")
    w = EmbeddingWorker(core.embedding, kind="worker", until_empty=until_empty, kb=kb)
    log = logging.getLogger("pyrite.worker")
    log.info("worker %s starting (model %s)", w.id, core.embedding.model_id)
    core.embedding.embedder.load()
    w.on_batch = lambda r: log.info("batch: %d done, %d retried, %d failed", r.done, r.retried, r.failed)
    totals = run_worker(w)
    log.info("worker %s stopped: %d done, %d failed", w.id, totals.done, totals.failed)
    if fmt == "json":
        emit_json({"worker": w.id, "done": totals.done, "failed": totals.failed, "retried": totals.retried})


COMMANDS = [worker]
