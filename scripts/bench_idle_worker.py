#!/usr/bin/env python3
"""What an idle EmbeddingWorker costs: write transactions per second and CPU, at concurrency 1 and 4.

A worker with nothing to do runs in this process as the server runs it (``process_queue``) over a KB
whose entries are all embedded, for ``--seconds`` each. Write transactions are counted at
``Database.write`` (every ``BEGIN IMMEDIATE`` in pyrite goes through it: claims, heartbeats,
maintenance); CPU is this process's user+system time over the window, against the wall time.

Beside it, what the loop itself costs when busy: the seconds a worker (``until_empty``) takes to drain
``--drain`` queued entries with the hash embedder, whose embedding is nearly free.

    .venv/bin/python scripts/bench_idle_worker.py --seconds 20 --json /tmp/idle.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import benchlib

benchlib.use_repo()
from pyrite.storage.db import Database  # noqa: E402
from pyrite.worker import EmbeddingWorker  # noqa: E402


class WriteCounter:
    """Counts Database.write transactions process-wide while installed."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._real = Database.write

    @contextmanager
    def install(self) -> Iterator[None]:
        real, counter = self._real, self

        @contextmanager
        def counted(db: Database) -> Iterator[Any]:
            with counter._lock:
                counter.count += 1
            with real(db) as conn:
                yield conn

        Database.write = counted  # type: ignore[method-assign]
        try:
            yield
        finally:
            Database.write = real  # type: ignore[method-assign]


def measure(home: Path, concurrency: int, seconds: float) -> dict[str, float]:
    """Run an idle worker for `seconds`; its write transactions a second and CPU share of one core."""
    core = benchlib.open_core(home, embed_provider="hash", embed_concurrency=concurrency, kb_names="slug",
                              autocheckpoint=False)
    if not core.kbs.list_kbs():
        core.kbs.create_kb("idle")
        for i in range(20):
            core.kbs.create_entry("idle", title=f"note {i}", body=f"body {i}")
    worker = EmbeddingWorker(core.embedding, kind="server")
    counter = WriteCounter()

    async def run() -> dict[str, float]:
        task = asyncio.create_task(worker.process_queue())
        await asyncio.sleep(2.0)  # started, the queue drained: from here on it is idle
        with counter.install():
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds)
            cpu, wall, writes = time.process_time() - cpu0, time.perf_counter() - wall0, counter.count
        worker.request_stop()
        await task
        return {"concurrency": concurrency, "seconds": round(wall, 2), "write_tx": writes,
                "write_tx_per_s": round(writes / wall, 2), "cpu_s": round(cpu, 3),
                "cpu_percent": round(100 * cpu / wall, 2)}

    try:
        return asyncio.run(run())
    finally:
        core.close()


def drain(home: Path, concurrency: int, entries: int) -> float:
    """Seconds an until_empty worker takes to embed `entries` queued entries with the hash embedder."""
    core = benchlib.open_core(home, embed_provider="hash", embed_concurrency=concurrency, kb_names="slug")
    try:
        core.kbs.create_kb("drain")
        for i in range(entries):
            core.kbs.create_entry("drain", title=f"note {i}", body=f"body {i} " * 30, embed=False)
        worker = EmbeddingWorker(core.embedding, kind="bench", until_empty=True)
        started = time.perf_counter()
        done = asyncio.run(worker.process_queue()).done
        assert done == entries, (done, entries)
        return round(time.perf_counter() - started, 3)
    finally:
        core.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--drain", type=int, default=3000, help="entries drained to time the busy loop")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with benchlib.scratch("pyrite-idle-") as tmp:
        for concurrency in (1, 4):
            results.append(measure(tmp / f"home{concurrency}", concurrency, args.seconds))
            results[-1]["drain_entries"] = args.drain
            results[-1]["drain_s"] = drain(tmp / f"drain{concurrency}", concurrency, args.drain)
            print(json.dumps(results[-1]))
    benchlib.write_json(args.json, results, announce=False)


if __name__ == "__main__":
    main()
