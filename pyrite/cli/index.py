"""`pyrite index build|sync|embed`: bring the index and the vectors in line with the files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import click

from pyrite.cli.common import PyriteGroup, emit_json, format_option, get_core, plural, warn
from pyrite.cli.running import Progress, run_worker
from pyrite.config import SETTINGS
from pyrite.worker import EmbeddingWorker


@click.group(cls=PyriteGroup)
def index() -> None:
    """Build, sync and embed the search index."""


def _kb_names(core: Any, kb: str | None) -> list[str]:
    if kb is not None:
        return [core.kbs.get_kb(kb).name]
    return [k.name for k in core.kbs.list_kbs()]


def _reindex(ctx: click.Context, kb: str | None, no_embed: bool, fmt: str, how: str, force: bool = False) -> None:
    core = get_core(ctx)
    reports = []
    started = time.perf_counter()
    for name in _kb_names(core, kb):
        report = core.kbs.build(name, force=force) if how == "build" else core.kbs.sync(name)
        reports.append(report)
        for problem in report.errors + report.warnings:
            warn(f"warning: {name}: {problem}")
    seconds = time.perf_counter() - started
    embedded = None
    if not no_embed and core.provider.enabled and any(r.queued for r in reports):
        embedded = _embed_or_hand_over(core, kb, fmt)
    if fmt == "json":
        emit_json({"reports": [r.to_dict() for r in reports], "seconds": round(seconds, 3),
                   "embedding": embedded})
        return
    for r in reports:
        click.echo(f"{r.kb}: {r.added} added, {r.updated} updated, {r.removed} removed, "
                   f"{r.unchanged} unchanged in {seconds:.2f}s" + (f", {len(r.errors)} skipped" if r.errors else "")
                   + (f", {len(r.warnings)} with warnings" if r.warnings else ""))


def _embed_or_hand_over(core: Any, kb: str | None, fmt: str) -> dict[str, Any]:
    """Embed the queued work here, unless a live worker will."""
    live = core.embedding.live_workers()
    if live:
        if fmt != "json":
            click.echo(f"Embeddings queued for the running worker ({live[0]['kind']} pid {live[0]['pid']}).")
        return {"handed_to": live[0]["id"]}
    return _foreground(core, kb, fmt)


def _foreground(core: Any, kb: str | None, fmt: str) -> dict[str, Any]:
    total = core.embedding.outstanding(kb)
    if total == 0:
        return {"done": 0, "failed": 0}
    if fmt != "json":
        click.echo(f"Embedding {plural(total, 'entry')} with {core.provider.model_id}...", err=True)
    worker = EmbeddingWorker(core.embedding, kind="cli", until_empty=True, kb=kb)
    worker.stop_on_misconfigured = True
    progress = Progress(total, enabled=fmt != "json")
    worker.on_batch = progress.update
    core.provider.embedder.load()
    totals = run_worker(worker)
    progress.finish()
    if worker.misconfigured:
        raise click.ClickException(f"embedding stopped, the provider is misconfigured: {worker.misconfigured}; "
                                   "fix the settings (check them with `pyrite embedders test`) and run it again")
    summary = {"done": totals.done, "failed": totals.failed, "retried": totals.retried,
               "seconds": round(progress.elapsed, 2), "left": core.embedding.outstanding(kb)}
    if fmt != "json":
        click.echo(f"Embedded {plural(totals.done, 'entry')} in {progress.elapsed:.1f}s"
                   + (f", {totals.failed} failed (see `pyrite index embed --status`)" if totals.failed else "")
                   + (f", {summary['left']} left (interrupted)" if summary["left"] else ""), err=True)
    return summary


@index.command()
@click.option("--kb", default=None, help="Only this KB (default: all).")
@click.option("--force", is_flag=True, help="Rewrite every index row, even for unchanged files.")
@click.option("--no-embed", is_flag=True, help="Only queue embeddings; do not embed in this process.")
@format_option
@click.pass_context
def build(ctx: click.Context, kb: str | None, force: bool, no_embed: bool, fmt: str) -> None:
    """Read every markdown file of the KB(s) and index it; embeddings follow."""
    _reindex(ctx, kb, no_embed, fmt, "build", force=force)


@index.command()
@click.option("--kb", default=None, help="Only this KB (default: all).")
@click.option("--no-embed", is_flag=True, help="Only queue embeddings; do not embed in this process.")
@format_option
@click.pass_context
def sync(ctx: click.Context, kb: str | None, no_embed: bool, fmt: str) -> None:
    """Index files added, edited or removed outside pyrite (reads only files that changed)."""
    _reindex(ctx, kb, no_embed, fmt, "sync")


@index.command()
@click.option("--kb", default=None, help="Only this KB (default: all).")
@click.option("--force", is_flag=True, help="Re-embed every entry (after a model change).")
@click.option("--background", is_flag=True, help="Queue the work for a worker (starting one if none runs) and return.")
@click.option("--status", "show_status", is_flag=True, help="Show the queue: counts, oldest pending, workers, errors.")
@click.option("--watch", is_flag=True, help="With --status: refresh every second until Ctrl-C.")
@click.option("--retry-failed", is_flag=True, help="Queue failed entries again, then embed them.")
@format_option
@click.pass_context
def embed(ctx: click.Context, kb: str | None, force: bool, background: bool, show_status: bool, watch: bool,
          retry_failed: bool, fmt: str) -> None:
    """Embed pending entries now, in the foreground with a progress bar (or see --background, --status)."""
    if show_status and (force or background or retry_failed):
        raise click.UsageError("--status cannot be combined with --force, --background or --retry-failed")
    if force and retry_failed:
        raise click.UsageError("--force re-embeds everything, failed entries included: give --force or "
                               "--retry-failed, not both")
    if watch and not show_status:
        raise click.UsageError("--watch goes with --status")
    core = get_core(ctx)
    if kb is not None:
        core.kbs.get_kb(kb)
    if show_status:
        _status(core, kb, fmt, watch)
        return
    core.provider.require()
    queued = core.embedding.requeue(kb=kb, statuses=("done", "failed")) if force else \
        core.embedding.requeue(kb=kb, only_missing=True)
    if retry_failed:
        queued += core.embedding.requeue(kb=kb, statuses=("failed",))
    if background:
        _background(ctx, core, kb, queued, fmt)
        return
    result = _embed_or_hand_over(core, kb, fmt)
    if fmt == "json":
        emit_json({"queued": queued, **result})
    if result.get("failed"):
        raise click.ClickException(f"{plural(result['failed'], 'entry')} failed to embed; see "
                                   "`pyrite index embed --status`, then retry with `pyrite index embed --retry-failed`")


def _background(ctx: click.Context, core: Any, kb: str | None, queued: int, fmt: str) -> None:
    live = core.embedding.live_workers()
    outstanding = core.embedding.outstanding(kb)
    info: dict[str, Any] = {"queued": queued, "outstanding": outstanding}
    if live:
        info["worker"] = live[0]
    elif outstanding:
        log_dir = core.settings.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / "worker.log"
        env = dict(os.environ, PYRITE_HOME=str(core.settings.home))
        flags = ctx.find_root().obj["flags"]
        for setting in SETTINGS:  # the child resolves the same settings as this process
            if flags.get(setting.key) is not None:
                env[setting.env] = str(flags[setting.key])
        args = [sys.executable, "-m", "pyrite", "worker", "--until-empty"] + (["--kb", kb] if kb else [])
        with open(log_path, "ab") as log:
            child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        info["started_worker_pid"] = child.pid
        info["log"] = str(log_path)
    if fmt == "json":
        emit_json(info)
    elif live:
        click.echo(f"{plural(outstanding, 'entry')} pending; the running worker (pid {live[0]['pid']}) embeds them.")
    elif outstanding:
        click.echo(f"{plural(outstanding, 'entry')} pending; started a background worker (pid {info['started_worker_pid']}, "
                   f"log {info['log']}). Follow it with `pyrite index embed --status --watch`.")
    else:
        click.echo("Nothing to embed.")


def _status(core: Any, kb: str | None, fmt: str, watch: bool) -> None:
    try:
        while True:
            info = core.embedding.status(kb)
            if fmt == "json":
                emit_json(info, line=watch)  # --watch: one report a line, for a program to follow
            else:
                if watch:
                    click.clear()
                _print_status(info)
            if not watch:
                return
            time.sleep(1.0)
    except KeyboardInterrupt:
        return


def _print_status(info: dict[str, Any]) -> None:
    if info["disabled_reason"]:
        click.echo(f"EMBEDDING OFF: {info['disabled_reason']}")
    if info["provider_error"]:
        click.echo(f"PROVIDER ERROR: {info['provider_error']}")
    c = info["counts"]
    click.echo(f"model: {info['model'] or '-'}" + (f"  (kb {info['kb']})" if info["kb"] else ""))
    click.echo("  ".join(f"{k}: {v}" for k, v in c.items()))
    age = info["oldest_pending_age_s"]
    click.echo(f"oldest pending: {'-' if age is None else f'{age:.0f}s'}   "
               f"throughput: {info['throughput_per_min']}/min")
    if info["workers"]:
        for w in info["workers"]:
            click.echo(f"worker: {w['kind']} pid {w['pid']} on {w['host']}, heartbeat {w['heartbeat_age_s']}s ago")
    else:
        click.echo("workers: none" + (" (writes from the CLI embed synchronously)" if info["enabled"] else ""))
    if info["stale_models"] and info["enabled"]:
        click.echo(f"vectors of other models: {info['stale_models']} (run `pyrite index embed --force`)")
    elif info["stale_models"]:
        click.echo(f"stored vectors: {info['stale_models']} (unused while embedding is off)")
    if info["last_error"]:
        when = _clock(info["last_error_at"])
        if info["last_error_before_success"]:
            when += f", before the last success at {_clock(info['last_success_at'])}"
        click.echo(f"last error ({when}): {info['last_error']}")


def _clock(t: float | None) -> str:
    return "time unknown" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
