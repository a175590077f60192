#!/usr/bin/env python3
"""Embedding pipeline benchmarks of pyrite, each measured side by side in one run.

1. latency    write latency (KBService.create_entry) when a live worker exists, so the
              write only queues, against the same write embedding synchronously with the
              local model (no worker anywhere); interleaved write by write. A second phase
              writes with a busy in-process EmbeddingWorker (the server's set-up).
2. throughput worker throughput (EmbeddingWorker.run_once loop with claim-ahead, as
              process_queue runs it; local model) against plain SentenceTransformer.encode
              of the same texts at the same batch size, in the same process, alternating in
              rounds; per batch size.
3. queue      queue overhead with a no-op embedder (constant unit vectors, instantly):
              items claimed and completed per second, per batch size (run_once loop with
              claim-ahead, as process_queue runs it; --no-claim-ahead for bare run_once).
4. searchable time from a write in this process to the entry being found by
              search(mode='semantic'), with `pyrite worker` running in another process
              (local model, warmed up).
5. threads    a probe, not a target: plain encode in fresh processes with torch's defaults,
              with OMP_WAIT_POLICY=PASSIVE, and with one torch thread, alternating, at
              batch sizes 1 and 32 (pyrite leaves torch's threading at its defaults).

Every home (PYRITE_HOME) lives in a temporary folder that is removed at the end.

    .venv/bin/python scripts/bench_embedding.py --json /tmp/embedding.json
    .venv/bin/python scripts/bench_embedding.py --only queue --queue-n 2000
    .venv/bin/python scripts/bench_embedding.py --n 200 --writes 50 --searchable-writes 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import benchlib
from benchlib import ROOT, log, md_table, percentile, summary_ms
from corpus import Prose, write_kb_files

benchlib.use_repo()
from pyrite.core import Pyrite  # noqa: E402
from pyrite.embedders.base import Embedder  # noqa: E402
from pyrite.models import embed_text  # noqa: E402
from pyrite.storage import workers  # noqa: E402
from pyrite.worker import EmbeddingWorker  # noqa: E402

KB = "bench"
SECTIONS = ("latency", "throughput", "queue", "searchable", "threads")


def open_core(home: Path, provider: str = "local", **kwargs: Any) -> Pyrite:
    return benchlib.open_core(home, embed_provider=provider, **kwargs)


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks of this machine since boot from /proc/stat; None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (ticks[7], sum(ticks)) if len(ticks) == 8 else None


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of CPU time the hypervisor gave to other tenants between two cpu_ticks() readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100.0 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def local_model() -> Any:
    """The process-wide SentenceTransformer pyrite's local embedder uses (the very same object)."""
    from pyrite.embedders.local import load_model

    return load_model("all-MiniLM-L6-v2")


def fill(core: Pyrite, folder: Path, n: int, prose: Prose, *, body_words: int, kb: str = KB,
         prefix: str = "note") -> None:
    """n entries of ~body_words words, written as files and indexed by build (which queues them)."""
    write_kb_files(folder, n, prose, body_words=body_words, prefix=prefix)
    core.kbs.create_kb(kb, folder)
    report = core.kbs.build(kb)
    assert report.added == n and not report.errors, report.to_dict()


def queued_texts(core: Pyrite, kb: str) -> list[str]:
    """The texts the worker will embed, in its claim order."""
    rows = core.db.query(
        "SELECT e.title, e.body FROM embed_queue q JOIN entries e ON e.rowid = q.entry_rowid "
        "WHERE q.kb = ? AND q.status = 'pending' ORDER BY q.queued_at, q.entry_rowid", (kb,))
    return [embed_text(r[0], r[1]) for r in rows]


def drain(worker: EmbeddingWorker, items: int) -> tuple[int, int]:
    """Run the worker's run_once until `items` more are done (or the queue is empty); return (done, batches)."""
    done = batches = 0
    while done < items:
        result = worker.run_once()
        if not result.claimed:
            break
        if result.failed or result.retried:
            raise RuntimeError(f"embedding failed: {result.errors[:3]}")
        done += result.done
        batches += 1
    return done, batches


# --------------------------------------------------------------------------------------
# 1. write latency: queued against synchronous
# --------------------------------------------------------------------------------------


def bench_latency(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    words = Prose(seed=21)
    queued = open_core(tmp / "home-queued")
    sync = open_core(tmp / "home-sync")
    for core in (queued, sync):
        core.kbs.create_kb(KB)
    fake_worker = "bench-heartbeat-only"

    def beat() -> None:  # a fresh heartbeat row: every write in this home sees a live worker and only queues
        with queued.db.write() as conn:
            workers.register(conn, fake_worker, kind="bench", model=queued.provider.model_id, now=time.time())
            workers.beat(conn, fake_worker, now=time.time())

    cores = {"queued": queued, "sync": sync}
    samples: dict[str, list[float]] = {"queued": [], "sync": []}
    status: dict[str, set[str]] = {"queued": set(), "sync": set()}

    def one(which: str, i: int, record: bool, core: Pyrite | None = None) -> None:
        core = core or cores[which]
        if which == "queued":
            beat()
        title, body = f"Latency {which} {i} " + " ".join(words.words(3)), words.text_words(args.body_words)
        t0 = time.perf_counter()
        entry = core.kbs.create_entry(KB, title, body)
        seconds = time.perf_counter() - t0
        if record:
            samples[which].append(seconds)
            status[which].add(str(entry.embedding_status))

    log("latency: loading the model and warming up ...")
    t0 = time.perf_counter()
    local_model()
    load_s = time.perf_counter() - t0
    for i in range(args.warmup):
        one("queued", -1 - i, False)
        one("sync", -1 - i, False)
    rng = random.Random(5)
    log(f"latency: {args.writes} interleaved writes of each kind ...")
    for i in range(args.writes):
        pair = ["queued", "sync"]
        rng.shuffle(pair)
        for which in pair:
            one(which, i, True)
    assert status["queued"] == {"pending"}, status
    assert status["sync"] == {"done"}, status
    q, s = summary_ms(samples["queued"]), summary_ms(samples["sync"])
    out: dict[str, Any] = {
        "body_words": args.body_words, "model_load_s": round(load_s, 2),
        "queued": q, "sync": s, "status_after_write": {k: sorted(v) for k, v in status.items()},
        "sync_over_queued_median": round(s["median_ms"] / q["median_ms"], 1),
        "sync_over_queued_p99": round(s["p99_ms"] / q["p99_ms"], 1),
    }

    # Phase 2: a live in-process worker (process_queue in a thread, as the server runs it) embedding
    # behind the writes, interleaved with heartbeat-only writes under the same CPU load.
    if args.busy_writes:
        log(f"latency: {args.busy_writes} writes with a busy in-process worker ...")
        busy = open_core(tmp / "home-busy")
        busy.kbs.create_kb(KB)
        worker = EmbeddingWorker(busy.embedding, kind="bench")
        thread = threading.Thread(target=lambda: asyncio.run(worker.process_queue()), daemon=True)
        thread.start()
        deadline = time.time() + 30
        while not busy.embedding.has_worker and time.time() < deadline:
            time.sleep(0.01)
        samples["busy"], samples["queued2"] = [], []
        status["busy"] = set()
        busy_cores = {"busy": busy, "queued2": queued}
        for i in range(args.busy_writes):
            pair = ["busy", "queued2"]
            rng.shuffle(pair)
            for which in pair:
                core = busy_cores[which]
                if which == "queued2":
                    beat()
                title, body = f"Busy {which} {i} " + " ".join(words.words(3)), words.text_words(args.body_words)
                t0 = time.perf_counter()
                entry = core.kbs.create_entry(KB, title, body)
                samples[which].append(time.perf_counter() - t0)
                if which == "busy":
                    status["busy"].add(str(entry.embedding_status))
        backlog = busy.embedding.outstanding(KB)
        worker.request_stop()
        thread.join(timeout=60)
        busy.close()
        b, q2 = summary_ms(samples["busy"]), summary_ms(samples["queued2"])
        out["busy_worker"] = {
            "busy": b, "queued_same_phase": q2, "backlog_at_end": backlog,
            "busy_over_queued_median": round(b["median_ms"] / q2["median_ms"], 2),
            "sync_over_busy_median": round(s["median_ms"] / b["median_ms"], 1),
        }
    with queued.db.write() as conn:
        workers.unregister(conn, fake_worker)
    queued.close()
    sync.close()
    return out


# --------------------------------------------------------------------------------------
# 2. worker throughput against plain SentenceTransformer.encode
# --------------------------------------------------------------------------------------


def bench_throughput(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    model = local_model()
    words = Prose(seed=31)
    warm_texts = [words.title(i) + "\n\n" + words.text_words(args.body_words) for i in range(64)]
    out: dict[str, Any] = {"n": args.n, "body_words": args.body_words, "rounds": args.rounds, "by_batch": {}}
    for bs in args.batch_sizes:
        home = tmp / f"home-throughput-{bs}"
        core = open_core(home, embed_batch_size=bs)
        fill(core, tmp / f"files-throughput-{bs}", args.n, Prose(seed=32), body_words=args.body_words)
        fill(core, tmp / f"files-warm-{bs}", max(2 * bs, 8), Prose(seed=33), body_words=args.body_words,
             kb="warm", prefix="warm")
        texts = queued_texts(core, KB)
        assert len(texts) == args.n
        # Warm both paths: the model at this batch size, and the worker's first batches (vec0 table, statements).
        model.encode(warm_texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)
        drain(EmbeddingWorker(core.embedding, kind="bench", kb="warm"), 10**9)
        worker = EmbeddingWorker(core.embedding, kind="bench", kb=KB, claim_ahead=True)  # as process_queue runs
        per_round = [len(part) for part in np.array_split(np.arange(args.n), args.rounds)]
        t_worker = t_plain = 0.0
        rounds_s: dict[str, list[float]] = {"worker": [], "plain": []}
        done_total = batches_total = 0
        pos = 0
        log(f"throughput: batch {bs}, {args.n} entries in {args.rounds} rounds ...")
        for r, count in enumerate(per_round):
            order = ("worker", "plain") if r % 2 == 0 else ("plain", "worker")
            for kind in order:
                if kind == "plain":
                    chunk = texts[pos:pos + count]
                    t0 = time.perf_counter()
                    model.encode(chunk, batch_size=bs, convert_to_numpy=True, normalize_embeddings=False,
                                 show_progress_bar=False)
                    t_plain += time.perf_counter() - t0
                    rounds_s["plain"].append(round(time.perf_counter() - t0, 3))
                else:
                    t0 = time.perf_counter()
                    done, batches = drain(worker, count)
                    t_worker += time.perf_counter() - t0
                    rounds_s["worker"].append(round(time.perf_counter() - t0, 3))
                    done_total += done
                    batches_total += batches
            pos += count
        counts = core.embedding.status(KB)["counts"]
        chunks = core.db.query("SELECT count(*) FROM chunks c JOIN entries e ON e.rowid = c.entry_rowid "
                               "WHERE e.kb = ?", (KB,))[0][0]
        core.close()
        shutil.rmtree(home, ignore_errors=True)
        assert done_total == args.n and counts["done"] == args.n, (done_total, counts)
        worker_rate, plain_rate = args.n / t_worker, args.n / t_plain
        out["by_batch"][str(bs)] = {
            "batch_size": bs, "worker_s": round(t_worker, 3), "plain_s": round(t_plain, 3),
            "worker_per_s": round(worker_rate, 2), "plain_per_s": round(plain_rate, 2),
            "worker_over_plain": round(worker_rate / plain_rate, 3), "batches": batches_total,
            "chunks_stored": chunks, "rounds_s": rounds_s,
            "worker_over_plain_per_round": [round(p / w, 3) for w, p in zip(rounds_s["worker"], rounds_s["plain"])],
        }
        out["by_batch"][str(bs)]["worker_over_plain_round_median"] = round(
            statistics.median(out["by_batch"][str(bs)]["worker_over_plain_per_round"]), 3)
        log(f"  worker {worker_rate:.1f}/s, plain {plain_rate:.1f}/s, ratio {worker_rate / plain_rate:.3f}")
    return out


# --------------------------------------------------------------------------------------
# 3. queue overhead with a no-op embedder
# --------------------------------------------------------------------------------------


class NoopEmbedder(Embedder):
    """Constant unit vectors, returned instantly: what is left is pyrite's own queue and storage cost."""

    provider = "noop"
    model = "noop"
    max_batch = 100_000

    def __init__(self, dimension: int = 384) -> None:
        self.dimension = dimension
        self._unit = np.zeros(dimension, dtype=np.float32)
        self._unit[0] = 1.0

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.tile(self._unit, (len(texts), 1))


def bench_queue(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    homes: dict[int, Pyrite] = {}
    workers_by_bs: dict[int, EmbeddingWorker] = {}
    for bs in args.queue_batch_sizes:
        # provider 'hash' makes embedding enabled with a model id; the no-op embedder replaces it.
        # As `pyrite worker` runs: no automatic checkpoint inside commits; the worker's thread checkpoints
        # between batches (plus one here after every round), inside the timing: its cost is counted.
        core = open_core(tmp / f"home-queue-{bs}", provider="hash", embedder=NoopEmbedder(), embed_batch_size=bs,
                         autocheckpoint=False)
        fill(core, tmp / f"files-queue-{bs}", args.queue_n, Prose(seed=41), body_words=args.body_words)
        fill(core, tmp / f"files-queue-warm-{bs}", 2 * bs, Prose(seed=42), body_words=args.body_words,
             kb="warm", prefix="warm")
        drain(EmbeddingWorker(core.embedding, kind="bench", kb="warm"), 10**9)
        homes[bs] = core
        # claim_ahead, as process_queue (the worker of `pyrite serve` and `pyrite worker`) runs it: each
        # batch's record transaction claims the next batch.
        workers_by_bs[bs] = EmbeddingWorker(core.embedding, kind="bench", kb=KB, claim_ahead=not args.no_claim_ahead)
    total_time = {bs: 0.0 for bs in homes}
    cpu_time = {bs: 0.0 for bs in homes}
    done = {bs: 0 for bs in homes}
    per_round = [len(part) for part in np.array_split(np.arange(args.queue_n), args.rounds)]
    log(f"queue: {args.queue_n} items per batch size {list(homes)} in {args.rounds} rounds ...")
    for r, count in enumerate(per_round):
        order = list(homes) if r % 2 == 0 else list(reversed(list(homes)))
        for bs in order:
            t0, c0 = time.perf_counter(), time.process_time()
            d, _ = drain(workers_by_bs[bs], count)
            homes[bs].db.checkpoint()
            total_time[bs] += time.perf_counter() - t0
            cpu_time[bs] += time.process_time() - c0
            done[bs] += d
    out: dict[str, Any] = {"n": args.queue_n, "body_words": args.body_words, "claim_ahead": not args.no_claim_ahead,
                           "by_batch": {}}
    for bs, core in homes.items():
        counts = core.embedding.status(KB)["counts"]
        assert done[bs] == args.queue_n and counts["done"] == args.queue_n, (bs, done[bs], counts)
        core.close()
        rate = done[bs] / total_time[bs]
        out["by_batch"][str(bs)] = {
            "batch_size": bs, "seconds": round(total_time[bs], 3), "items_per_s": round(rate, 1),
            "us_per_item": round(1e6 / rate, 1),
            # CPU seconds of this process only: less sensitive to other tenants of a shared machine.
            "cpu_s": round(cpu_time[bs], 3), "items_per_cpu_s": round(done[bs] / cpu_time[bs], 1),
        }
        log(f"  batch {bs}: {rate:,.0f} items/s, {done[bs] / cpu_time[bs]:,.0f} items per CPU-second")
    return out


# --------------------------------------------------------------------------------------
# 4. write -> semantically searchable, worker in another process
# --------------------------------------------------------------------------------------


def bench_searchable(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    home = tmp / "home-searchable"
    core = open_core(home)
    core.kbs.create_kb(KB)
    words = Prose(seed=51)
    worker_log = tmp / "worker.log"
    env = benchlib.child_env(home, PYRITE_EMBED_PROVIDER="local")
    log("searchable: starting `pyrite worker` in a subprocess ...")
    t_spawn = time.perf_counter()
    with open(worker_log, "wb") as fh:
        proc = subprocess.Popen(benchlib.pyrite_argv("worker"), env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, cwd=str(ROOT))
    try:
        while not core.embedding.live_workers():
            if proc.poll() is not None or time.perf_counter() - t_spawn > args.worker_start_timeout:
                raise RuntimeError(f"the worker did not start: {worker_log.read_text()[-3000:]}")
            time.sleep(0.05)
        worker_ready_s = time.perf_counter() - t_spawn
        local_model()  # this process embeds the queries

        def one(i: int) -> dict[str, float]:
            title = f"Searchable {i} " + " ".join(words.words(4))
            body = words.text_words(args.body_words)
            t0 = time.perf_counter()
            entry = core.kbs.create_entry(KB, title, body)  # embed=True: the live worker makes it only queue
            t_write = time.perf_counter() - t0
            if entry.embedding_status != "pending":
                raise RuntimeError(f"the write did not only queue: status {entry.embedding_status}")
            rowid = core.db.query("SELECT rowid FROM entries WHERE kb = ? AND id = ?", (KB, entry.id))[0][0]
            query = embed_text(title, body)
            t_done = None
            searches: list[float] = []
            while True:
                now = time.perf_counter() - t0
                if t_done is None:  # cheap poll of the queue row; vectors land in the same transaction
                    row = core.db.query("SELECT status FROM embed_queue WHERE entry_rowid = ?", (rowid,))
                    if row and row[0][0] == "done":
                        t_done = now
                if t_done is not None:
                    s0 = time.perf_counter()
                    hits = core.search.search(query, kb=KB, mode="semantic", limit=5)["results"]
                    searches.append(time.perf_counter() - s0)
                    if any(h["id"] == entry.id for h in hits):
                        return {"searchable_s": time.perf_counter() - t0, "done_seen_s": t_done,
                                "write_s": t_write, "search_s": statistics.median(searches),
                                "searches": len(searches)}
                if now > args.searchable_timeout:
                    raise RuntimeError(f"entry {entry.id} not searchable after {now:.1f}s; "
                                       f"worker log: {worker_log.read_text()[-2000:]}")
                time.sleep(args.poll)

        log("searchable: warming up ...")
        for i in range(2):
            one(-1 - i)
        rng = random.Random(9)
        log(f"searchable: {args.searchable_writes} writes ...")
        results = []
        for i in range(args.searchable_writes):
            # A random pause, so writes land at every phase of the worker's poll.
            time.sleep(rng.uniform(0.0, args.pause))
            results.append(one(i))
            log(f"  #{i + 1}: searchable after {results[-1]['searchable_s']:.3f}s")
    finally:
        benchlib.stop_process(proc)
        core.close()
    searchable = [r["searchable_s"] for r in results]
    done = [r["done_seen_s"] for r in results]
    return {
        "writes": len(results), "body_words": args.body_words, "worker_ready_s": round(worker_ready_s, 2),
        "worker_exit_code": proc.returncode,
        "searchable_s": {"median": round(statistics.median(searchable), 3),
                         "p90": round(percentile(searchable, 90), 3),
                         "min": round(min(searchable), 3), "max": round(max(searchable), 3)},
        "done_seen_s_median": round(statistics.median(done), 3),
        "write_ms_median": round(statistics.median(r["write_s"] for r in results) * 1000, 3),
        "search_call_ms_median": round(statistics.median(r["search_s"] for r in results) * 1000, 1),
        "poll_interval_s": args.poll,
        "searches_per_write_max": max(r["searches"] for r in results),
        "all_searchable_s": [round(x, 3) for x in searchable],
    }


# --------------------------------------------------------------------------------------
# 5. torch threads probe
# --------------------------------------------------------------------------------------


THREAD_VARIANTS = {
    # name: (extra environment, torch threads or None for torch's default)
    "default": ({}, None),
    "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "torch.set_num_threads(1)": ({}, 1),
}


def probe_child(variant: str, n: int, body_words: int) -> None:
    """In a fresh process (OpenMP reads its environment at start): encode n texts at batch 1 and 32; print JSON."""
    import torch

    threads = THREAD_VARIANTS[variant][1]
    if threads:
        torch.set_num_threads(threads)
    model = local_model()
    words = Prose(seed=61)
    texts = [words.title(i) + "\n\n" + words.text_words(body_words) for i in range(n)]
    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    for bs in (1, 32):
        model.encode(texts[:4], batch_size=bs, show_progress_bar=False)
        t0 = time.perf_counter()
        model.encode(texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)
        out[str(bs)] = time.perf_counter() - t0
    print(json.dumps(out))


def bench_threads(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Plain encode in fresh processes: torch's defaults, OpenMP told not to spin, and one thread; alternating."""
    times = {v: {"1": 0.0, "32": 0.0} for v in THREAD_VARIANTS}
    threads: dict[str, int] = {}
    names = list(THREAD_VARIANTS)
    for r in range(args.threads_rounds):
        for variant in (names if r % 2 == 0 else list(reversed(names))):
            env = {k: v for k, v in benchlib.clean_env().items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
            env.update(THREAD_VARIANTS[variant][0])
            proc = subprocess.run([sys.executable, __file__, "--probe-child", variant, "--threads-n",
                                   str(args.threads_n), "--body-words", str(args.body_words)],
                                  env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                raise RuntimeError(f"probe {variant} failed: {proc.stderr[-2000:]}")
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            threads[variant] = got["threads"]
            for bs in ("1", "32"):
                times[variant][bs] += got[bs]
            log(f"threads: round {r + 1}, {variant}: batch 1 {args.threads_n / got['1']:.1f}/s, "
                f"batch 32 {args.threads_n / got['32']:.1f}/s")
    total = args.threads_n * args.threads_rounds
    rates = {v: {bs: round(total / t, 2) for bs, t in ts.items()} for v, ts in times.items()}
    return {"n": args.threads_n, "rounds": args.threads_rounds, "threads": threads, "texts_per_s": rates,
            "over_default": {v: {bs: round(rates[v][bs] / rates["default"][bs], 2) for bs in ("1", "32")}
                             for v in rates}}


# --------------------------------------------------------------------------------------


def report(data: dict[str, Any]) -> list[tuple[str, bool]]:
    """Print the markdown tables; return (target, met) pairs."""
    info = data["machine"]
    targets: list[tuple[str, bool]] = []
    print(f"# pyrite embedding benchmarks ({info['date']}, {info['cores']} cores, {info['cpu']})")
    lat = data.get("latency")
    if lat:
        print(f"\n## write latency, queued vs synchronous (local model, ~{lat['body_words']}-word entries, "
              f"{lat['queued']['n']} interleaved writes each)\n")
        rows = [["queued (live worker heartbeat, write only queues)", lat["queued"]["median_ms"],
                 lat["queued"]["p90_ms"], lat["queued"]["p99_ms"]],
                ["synchronous (no worker: embeds in the write)", lat["sync"]["median_ms"], lat["sync"]["p90_ms"],
                 lat["sync"]["p99_ms"]]]
        bw = lat.get("busy_worker")
        if bw:
            rows.append(["queued, busy in-process worker (phase 2)", bw["busy"]["median_ms"], bw["busy"]["p90_ms"],
                         bw["busy"]["p99_ms"]])
            rows.append(["queued, heartbeat only (phase 2, same load)", bw["queued_same_phase"]["median_ms"],
                         bw["queued_same_phase"]["p90_ms"], bw["queued_same_phase"]["p99_ms"]])
        print(md_table(["write", "median ms", "p90 ms", "p99 ms"], rows))
        print(f"\nsync/queued median: **{lat['sync_over_queued_median']:.1f}x** (target >= 20x); "
              f"p99: {lat['sync_over_queued_p99']:.1f}x")
        if bw:
            print(f"busy-worker/heartbeat-only median (phase 2): {bw['busy_over_queued_median']:.2f}x; "
                  f"sync (phase 1)/busy-worker median: {bw['sync_over_busy_median']:.1f}x")
        targets.append(("queued write median >= 20x lower than synchronous", lat["sync_over_queued_median"] >= 20))
    thr = data.get("throughput")
    if thr:
        print(f"\n## worker throughput vs plain SentenceTransformer.encode ({thr['n']} entries of "
              f"~{thr['body_words']} words, {thr['rounds']} alternating rounds)\n")
        rows = [[b["batch_size"], b["worker_per_s"], b["plain_per_s"], f"**{b['worker_over_plain']:.3f}**",
                 b["worker_over_plain_round_median"],
                 f"{min(b['worker_over_plain_per_round']):.2f} to {max(b['worker_over_plain_per_round']):.2f}"]
                for b in thr["by_batch"].values()]
        print(md_table(["batch size", "worker entries/s", "plain encode texts/s", "worker/plain (totals)",
                        "median of per-round ratios", "per-round range"], rows))
        for b in thr["by_batch"].values():
            targets.append((f"worker/plain >= 0.9 at batch {b['batch_size']}", b["worker_over_plain"] >= 0.9))
    qu = data.get("queue")
    if qu:
        print(f"\n## queue overhead, no-op embedder ({qu['n']} items per batch size)\n")
        rows = [[b["batch_size"], b["items_per_s"], b["us_per_item"], b["items_per_cpu_s"]]
                for b in qu["by_batch"].values()]
        print(f"claim ahead (the next claim in the record transaction): {'yes' if qu['claim_ahead'] else 'no'}\n")
        print(md_table(["batch size", "items claimed+completed /s (wall)", "us per item (wall)",
                        "items per CPU-second"], rows))
        for b in qu["by_batch"].values():
            targets.append((f"no-op queue > 5000 items/s at batch {b['batch_size']}", b["items_per_s"] > 5000))
    se = data.get("searchable")
    if se:
        print(f"\n## write -> semantically searchable, `pyrite worker` in another process "
              f"({se['writes']} writes)\n")
        s = se["searchable_s"]
        print(md_table(["measure", "value"], [
            ["write -> found by semantic search, median s", s["median"]], ["p90 s", s["p90"]],
            ["min s", s["min"]], ["max s", s["max"]],
            ["write -> queue row 'done' (vectors stored), median s", se["done_seen_s_median"]],
            ["write (create_entry, only queues), median ms", se["write_ms_median"]],
            ["one semantic search call, median ms", se["search_call_ms_median"]],
            ["worker start to first heartbeat, s", se["worker_ready_s"]],
        ]))
        targets.append(("searchable median < 1.5 s", s["median"] < 1.5))
    th = data.get("threads")
    if th:
        print(f"\n## probe: torch threading, plain encode in fresh processes ({th['n']} texts, "
              f"{th['rounds']} alternating rounds)\n")
        rows = [[v, th["threads"][v], th["texts_per_s"][v]["1"], th["over_default"][v]["1"],
                 th["texts_per_s"][v]["32"], th["over_default"][v]["32"]] for v in th["texts_per_s"]]
        print(md_table(["variant", "torch threads", "batch 1 texts/s", "vs default", "batch 32 texts/s",
                        "vs default"], rows))
    steal = {name: data[name].get("cpu_steal_percent") for name in SECTIONS if name in data}
    if any(v is not None for v in steal.values()):
        print("\nCPU steal (time the host gave other tenants) per section: "
              + ", ".join(f"{name} {v}%" for name, v in steal.items() if v is not None))
    print("\ntargets:")
    for name, met in targets:
        print(f"- {name}: {'met' if met else 'MISSED'}")
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    ap.add_argument("--body-words", type=int, default=60, help="words per entry body (default 60)")
    ap.add_argument("--writes", type=int, default=200, help="latency: timed writes of each kind (default 200)")
    ap.add_argument("--busy-writes", type=int, default=100,
                    help="latency: writes with a busy in-process worker, 0 to skip (default 100)")
    ap.add_argument("--warmup", type=int, default=5, help="latency: untimed writes of each kind first (default 5)")
    ap.add_argument("--n", type=int, default=1000, help="throughput: entries per batch size (default 1000)")
    ap.add_argument("--batch-sizes", type=benchlib.int_list, default=[1, 10, 32], help="throughput: default 1,10,32")
    ap.add_argument("--rounds", type=int, default=8, help="throughput and queue: alternating rounds (default 8)")
    ap.add_argument("--queue-n", type=int, default=5000, help="queue: items per batch size (default 5000)")
    ap.add_argument("--queue-batch-sizes", type=benchlib.int_list, default=[10, 100], help="queue: default 10,100")
    ap.add_argument("--no-claim-ahead", action="store_true",
                    help="queue: claim each batch in its own transaction (bare run_once) instead of the worker loop's way")
    ap.add_argument("--searchable-writes", type=int, default=20, help="searchable: timed writes (default 20)")
    ap.add_argument("--pause", type=float, default=1.0, help="searchable: random pause up to this between writes, s")
    ap.add_argument("--poll", type=float, default=0.01, help="searchable: pause between search polls, s (default 0.01)")
    ap.add_argument("--searchable-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    ap.add_argument("--worker-start-timeout", type=float, default=180.0, help=argparse.SUPPRESS)
    ap.add_argument("--threads-n", type=int, default=32, help="threads probe: texts per process (default 32)")
    ap.add_argument("--threads-rounds", type=int, default=2, help="threads probe: rounds of the 3 variants (default 2)")
    ap.add_argument("--probe-child", default=None, choices=list(THREAD_VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help="parent folder of the temporary homes (default: system temp)")
    ap.add_argument("--json", default=None, help="write the results as JSON to this path")
    args = ap.parse_args(argv)
    if args.probe_child:
        probe_child(args.probe_child, args.threads_n, args.body_words)
        return 0
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    # Quiet, offline model loading (the local embedder sets the same defaults).
    for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                        ("TRANSFORMERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(name, value)

    data: dict[str, Any] = {"benchmark": "bench_embedding", "machine": benchlib.machine_info(), "args": vars(args)}
    started = time.perf_counter()
    with benchlib.scratch("pyrite-bench-embed-", args.tmp) as tmp:
        for section in SECTIONS:
            if section not in sections:
                continue
            t0, ticks0 = time.perf_counter(), cpu_ticks()
            data[section] = {"latency": bench_latency, "throughput": bench_throughput, "queue": bench_queue,
                             "searchable": bench_searchable, "threads": bench_threads}[section](tmp, args)
            data[section]["section_seconds"] = round(time.perf_counter() - t0, 1)
            # CPU time taken by other tenants of the host during the section: how contended the run was.
            data[section]["cpu_steal_percent"] = steal_percent(ticks0, cpu_ticks())
            benchlib.write_json(args.json, data, announce=False)  # partial results survive a later failure
    data["seconds"] = round(time.perf_counter() - started, 1)
    targets = report(data)
    data["targets"] = {name: met for name, met in targets}
    print(f"\n(total {data['seconds']:.0f}s)")
    benchlib.write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
