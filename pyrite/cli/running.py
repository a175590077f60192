"""Running a worker from the CLI: signal handling and a progress line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import click

from pyrite.worker import BatchResult, EmbeddingWorker


def run_worker(worker: EmbeddingWorker) -> BatchResult:
    """Run worker.process_queue() until it ends; first SIGINT/SIGTERM stops gracefully, a second exits now."""

    async def main() -> BatchResult:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                click.echo("Stopping: finishing the batch in hand (signal again to exit now).", err=True)
                worker.request_stop()
            else:
                click.echo("Exiting now; claimed items return to the queue when their lease expires.", err=True)
                os._exit(1)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        return await worker.process_queue()

    return asyncio.run(main())


class Progress:
    """A one-line progress display on stderr: count, rate and ETA."""

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self._last_line = 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def update(self, result: BatchResult) -> None:
        self.done += result.done + result.failed + result.skipped
        self.total = max(self.total, self.done)
        if not self.enabled:
            return
        rate = self.done / self.elapsed if self.elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        status = f"{self.done}/{self.total}  {rate:.1f}/s  ETA {left:.0f}s"
        if self.tty:
            width = 30
            filled = int(width * self.done / self.total) if self.total else width
            bar = "#" * filled + "-" * (width - filled)
            click.echo(f"\r[{bar}] {status} ", nl=False, err=True)
        elif time.perf_counter() - self._last_line >= 5.0 or self.done >= self.total:
            # Not a terminal (a log file, CI): a plain line every few seconds.
            self._last_line = time.perf_counter()
            click.echo(f"embedded {status}", err=True)

    def finish(self) -> None:
        if self.enabled and self.tty:
            click.echo("", err=True)
