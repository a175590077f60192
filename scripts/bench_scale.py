#!/usr/bin/env python3
"""Scale benchmarks of pyrite on a realistic generated KB (scripts/corpus.py) of N entries, per N.

For each size N (default 1,000, 10,000 and 100,000):

a. generate N entries into a KB folder (not timed in the build rate) and register the KB;
   a second, small KB ("other", 1% of N, at least 200 entries) shares the index so the KB
   filter of searches has something to exclude;
b. ``pyrite index build --kb bench --no-embed`` in a subprocess: wall time, files/s, and the peak
   RSS of that process (its VmHWM, written at exit by a tiny launcher that runs the CLI: see LAUNCHER
   for why ru_maxrss cannot be used);
c. ``pyrite index sync --kb bench --no-embed`` with nothing changed (wall seconds, median of runs);
d. ``pyrite worker --until-empty`` fills the vectors: its RSS sampled every 0.5 s from /proc (0.2 s
   when fewer than 5,000 items are queued), reported at 10%, 50% and 90% of the drain (by
   ``embed_queue`` counts read in a separate read-only SQLite connection) and at its peak; items/s
   over the whole run (which includes any index training after the drain) and over the 10%-90%
   stretch. RSS is split into anonymous memory (RssAnon: what the worker holds) and mapped file pages
   (RssFile: SQLite's memory map of index.db, the OS page cache, reclaimable); "flat" is about the
   former. With the hash embedder, ~30 MB of the worker's anonymous memory is the embedder's cache of word
   directions (~20,000 words), full well before 10% of a 100,000-entry drain;
e. in-process search latency: ``Pyrite(settings).search.search(q, kb=..., mode=m, limit=10)`` for
   keyword, semantic and hybrid over generated queries (10 warm-up queries first), median and p99;
   semantic and keyword with kb=None (all KBs) too. A mode that has spent --mode-budget seconds
   skips its remaining queries (the notes say so);
f. recall@10 of semantic search against an exact cosine search computed here, independently of
   pyrite's vector storage: every entry's embed_text(title, body) is chunked and embedded with the
   same embedder; an entry's score is its best chunk's cosine; numpy gives the exact top 10. A pyrite
   hit counts as correct when its exact score is >= the exact 10th best score - 1e-6 (ties at rank
   10). Recall is given for kb=bench (the KB filter) and kb=None. The exact numpy search time per
   query (matrix product over all chunk vectors of the KB, best chunk per entry, top 10) is the
   reference beside pyrite's semantic latency.
g. the write-ahead log: its largest size while the worker runs (stat of index.db-wal) and its size
   after. The queue probe's connection is still open when the worker exits, as a server's or another
   client's would be, so the WAL outlives the worker and the searches of (e) run with it. When it is
   larger than --wal-recheck-mb, it is checkpointed (closing the last connection, then
   wal_checkpoint(TRUNCATE)) and semantic and keyword search are timed again.

Each search is interrupted after --query-timeout seconds (counted at the cap).

Default embedder: the fast deterministic provider ``hash`` with model ``dense-384`` (each word a fixed
random 384-d direction, so vectors look dense like a real model's). ``--real-model`` switches to the
local MiniLM provider (use small sizes: 1,000-2,000); its figures are pessimistic, since the corpus'
made-up words are ~3 word pieces each, so most chunks fill the model's 256-token window. Every home (PYRITE_HOME) lives in a temporary
folder that is removed at the end. The machine's file cache is warm for the build (the files were
just written).

    .venv/bin/python scripts/bench_scale.py --sizes 1000,10000 --json /tmp/scale.json
    .venv/bin/python scripts/bench_scale.py                                   # 1k, 10k and 100k
    .venv/bin/python scripts/bench_scale.py --sizes 1000 --real-model --queries 100
    .venv/bin/python scripts/bench_scale.py --sizes 100000 --batch-size 100 --queries 200
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import benchlib
from benchlib import log, md_table, percentile, summary_ms, write_json
from corpus import generate, queries, write_corpus

benchlib.use_repo()
from pyrite.core import Pyrite  # noqa: E402
from pyrite.embedders import create_embedder  # noqa: E402
from pyrite.models import embed_text  # noqa: E402

KB = "bench"
OTHER = "other"
MODES = ("keyword", "semantic", "hybrid")


# --------------------------------------------------------------------------------------
# subprocesses: wall time, exit status, own peak RSS, and samples of /proc while they run
# --------------------------------------------------------------------------------------


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile of a live process, in kB ({} once it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except (OSError, ValueError):
        return {}
    return out


# The CLI run through a tiny launcher that writes its own VmHWM (peak RSS of its address space) at exit.
# Neither RUSAGE_CHILDREN nor wait4's ru_maxrss will do: Linux keeps the high-water mark of the address
# space a process had before exec, and a child forked (or vforked) from this benchmark starts with this
# process's RSS, so those figures are at least the benchmark's own size (checked: /bin/true spawned by a
# Python holding 480 MB reports ru_maxrss 484 MB). VmHWM in /proc belongs to the exec'd image alone.
LAUNCHER = """
import atexit, os, sys
def _hwm():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    with open(os.environ["BENCH_HWM_FILE"], "w") as out:
                        out.write(line.split()[1])
    except OSError:
        pass
atexit.register(_hwm)
sys.argv = ["pyrite", *sys.argv[1:]]
from pyrite.cli import main
main()
"""


def run_measured(args: Sequence[str], env: dict[str, str], *, interval: float = 0.1, timeout: float = 3600.0,
                 probe: Any = None) -> dict[str, Any]:
    """Run the pyrite CLI; return wall seconds, stdout, stderr tail, peak RSS and /proc samples.

    The peak RSS is the child's VmHWM written by LAUNCHER at exit (else the last VmHWM sampled). A thread
    samples /proc/PID/status (and `probe`, if given) every `interval` seconds. Raises with the child's
    stderr if it exits non-zero.
    """
    argv = [sys.executable, "-c", LAUNCHER, *args]
    hwm_file = Path(tempfile.mkstemp(prefix="pyrite-bench-hwm-")[1])
    env = dict(env, BENCH_HWM_FILE=str(hwm_file))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        samples: list[dict[str, Any]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                st = proc_status_kb(proc.pid)
                if st:
                    row: dict[str, Any] = {"t": round(time.perf_counter() - t0, 3), "rss_kb": st.get("VmRSS"),
                                           "hwm_kb": st.get("VmHWM"), "anon_kb": st.get("RssAnon"),
                                           "file_kb": st.get("RssFile")}
                    if probe is not None:
                        try:
                            row.update(probe())
                        except sqlite3.Error as exc:  # a busy moment: skip this sample's counts
                            row["probe_error"] = str(exc)
                    samples.append(row)
                if stop.wait(interval):
                    break

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        killer = threading.Timer(timeout, lambda: proc.kill())
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
        if probe is not None and hasattr(probe, "close"):
            probe.close()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    try:
        own_hwm_kb = int(hwm_file.read_text().strip() or 0)
    except (OSError, ValueError):
        own_hwm_kb = 0
    hwm_file.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pyrite {' '.join(args)} exited {proc.returncode} after {seconds:.1f}s:\n"
                           f"{stderr[-3000:]}")
    hwm = [s["hwm_kb"] for s in samples if s.get("hwm_kb")]
    sampled = max(hwm) if hwm else 0
    return {"seconds": seconds, "stdout": stdout, "stderr_tail": stderr[-2000:],
            "peak_rss_mb": round(max(own_hwm_kb, sampled) / 1024, 1),
            "peak_from": "VmHWM at exit" if own_hwm_kb else "VmHWM sampled",
            "sampled_hwm_mb": round(sampled / 1024, 1) if hwm else None,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "samples": samples}


class QueueProbe:
    """Reads embed_queue counts per status through its own read-only connection, and the WAL's size.

    Each read is one short statement (no transaction is held between samples). close() must be called
    when the worker exits: an open connection keeps SQLite from removing the WAL at the worker's close.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.wal = Path(str(db_path) + "-wal")
        self.conn: sqlite3.Connection | None = None

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            out["wal_mb"] = round(self.wal.stat().st_size / 2**20, 1)
        except OSError:
            out["wal_mb"] = 0.0
        if self.conn is None:
            self.conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5,
                                        check_same_thread=False)
        out["counts"] = dict(self.conn.execute("SELECT status, count(*) FROM embed_queue GROUP BY status").fetchall())
        return out

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def vector_index_state(db_path: Path) -> dict[str, Any]:
    """Best effort, read only: the vector index's layout tables as they stand (they may change)."""
    out: dict[str, Any] = {}
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            out["vec_tables"] = sorted(t for t in tables if t.startswith("vec_") and "_" not in t[4:])
            if "vec_index" in tables:
                cur = conn.execute("SELECT * FROM vec_index")
                cols = [d[0] for d in cur.description]
                out["vec_index"] = [{k: v for k, v in zip(cols, row) if k not in ("token", "prev_token")}
                                    for row in cur.fetchall()]
            cols = [r[1] for r in conn.execute("PRAGMA table_info(chunks)")]
            if "gen" in cols:
                out["chunks_per_gen"] = dict(conn.execute("SELECT gen, count(*) FROM chunks GROUP BY gen").fetchall())
            out["chunks"] = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    except sqlite3.Error as exc:
        out["error"] = str(exc)
    return out


def db_sizes_mb(db_path: Path) -> tuple[float, float]:
    """Sizes of index.db and of its write-ahead log, MB."""
    wal = Path(str(db_path) + "-wal")
    size = db_path.stat().st_size if db_path.exists() else 0
    return round(size / 2**20, 1), round((wal.stat().st_size if wal.exists() else 0) / 2**20, 1)


def status_counts(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM embed_queue GROUP BY status").fetchall())


# --------------------------------------------------------------------------------------
# the steps
# --------------------------------------------------------------------------------------


def worker_figures(run: dict[str, Any], total: int, done_before: int) -> dict[str, Any]:
    """RSS at 10/50/90% of the drain, peak, and drain rates from the worker's samples."""
    rows = []
    for s in run["samples"]:
        counts = s.get("counts")
        if counts is None or not s.get("rss_kb"):
            continue
        finished = sum(counts.get(k, 0) for k in ("done", "failed", "skipped")) - done_before
        rows.append((s["t"], finished, s["rss_kb"] / 1024, (s.get("anon_kb") or 0) / 1024, (s.get("file_kb") or 0) / 1024))
    out: dict[str, Any] = {"samples": len(rows)}
    points = {}
    for frac in (0.1, 0.5, 0.9):
        hit = next((r for r in rows if r[1] >= frac * total), None)
        points[frac] = hit
        out[f"rss_at_{int(frac * 100)}pct_mb"] = round(hit[2], 1) if hit else None
        # RSS = anonymous memory (the heap: what the worker holds) + file pages it has mapped (SQLite's
        # memory map of index.db: the OS page cache, shared and reclaimable). Flat means flat anonymous memory.
        out[f"anon_at_{int(frac * 100)}pct_mb"] = round(hit[3], 1) if hit else None
        out[f"file_at_{int(frac * 100)}pct_mb"] = round(hit[4], 1) if hit else None
    out["anon_max_sampled_mb"] = round(max(r[3] for r in rows), 1) if rows else None
    wal = [s["wal_mb"] for s in run["samples"] if "wal_mb" in s]
    out["wal_max_mb"] = max(wal) if wal else None
    out["rss_first_sample_mb"] = round(rows[0][2], 1) if rows else None
    out["rss_max_sampled_mb"] = round(max(r[2] for r in rows), 1) if rows else None
    step = max(1, len(rows) // 40)
    out["timeline_t_finished_rss_anon_file_mb"] = [[round(r[0], 1), r[1], round(r[2], 1), round(r[3], 1), round(r[4], 1)]
                                                   for r in rows[::step]]
    p10, p90 = points[0.1], points[0.9]
    if p10 and p90 and p90[0] > p10[0]:
        out["items_per_s_10_90"] = round((p90[1] - p10[1]) / (p90[0] - p10[0]), 1)
    else:
        out["items_per_s_10_90"] = None
    if out["rss_at_10pct_mb"] and out["rss_at_90pct_mb"]:
        out["rss_growth_10_to_90_mb"] = round(out["rss_at_90pct_mb"] - out["rss_at_10pct_mb"], 1)
    if out["anon_at_10pct_mb"] and out["anon_at_90pct_mb"]:
        out["anon_growth_10_to_90_mb"] = round(out["anon_at_90pct_mb"] - out["anon_at_10pct_mb"], 1)
    return out


def exact_index(settings: Any, kbs: list[tuple[str, int, int]]) -> dict[str, Any]:
    """Chunk vectors of every entry, embedded here: (kb, n, seed) per KB, in that order.

    Returns the matrix (float32, unit rows), each chunk's entry, the first chunk of each entry, and the
    entries' (kb, id) keys; entries of a KB are contiguous.
    """
    embedder = create_embedder(settings)
    embedder.load()
    keys: list[tuple[str, str]] = []
    starts: list[int] = []
    parts: list[np.ndarray] = []
    pending: list[str] = []
    n_chunks = 0
    batch = 512 if settings.embed_provider == "hash" else 64
    kb_ranges: dict[str, tuple[int, int]] = {}
    t0 = time.perf_counter()

    def flush() -> None:
        if pending:
            parts.append(np.asarray(embedder.embed(list(pending)), dtype=np.float32))
            pending.clear()

    for kb, n, seed in kbs:
        first = len(keys)
        for i, entry in enumerate(generate(n, seed)):
            chunks = embedder.chunk(embed_text(entry["title"], entry["body"]))
            keys.append((kb, entry["id"]))
            starts.append(n_chunks)
            n_chunks += len(chunks)
            pending.extend(chunks)
            if len(pending) >= batch:
                flush()
            if (i + 1) % 20000 == 0:
                log(f"  exact vectors: {kb} {i + 1:,}/{n:,} entries, {n_chunks:,} chunks")
        kb_ranges[kb] = (first, len(keys))
    flush()
    matrix = np.concatenate(parts) if parts else np.zeros((0, embedder.dimension or 1), np.float32)
    parts.clear()
    assert matrix.shape[0] == n_chunks, (matrix.shape, n_chunks)
    return {"matrix": matrix, "starts": np.asarray(starts, dtype=np.int64), "keys": keys,
            "index": {k: i for i, k in enumerate(keys)}, "kb_ranges": kb_ranges, "embedder": embedder,
            "seconds": time.perf_counter() - t0}


def exact_scores(ex: dict[str, Any], qvec: np.ndarray, kb: str | None) -> np.ndarray:
    """Best-chunk cosine of every entry of kb (all entries for None), in entry order of that range."""
    starts = ex["starts"]
    if kb is None:
        lo, hi = 0, len(ex["keys"])
    else:
        lo, hi = ex["kb_ranges"][kb]
    c_lo = int(starts[lo])
    c_hi = int(starts[hi]) if hi < len(starts) else ex["matrix"].shape[0]
    chunk_scores = ex["matrix"][c_lo:c_hi] @ qvec
    return np.maximum.reduceat(chunk_scores, starts[lo:hi] - c_lo)


def top10(scores: np.ndarray, k: int = 10) -> np.ndarray:
    if len(scores) <= k:
        return np.argsort(-scores)
    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part])]


class QueryTimeout(Exception):
    pass


def search_capped(core: Pyrite, q: str, kb: str | None, mode: str, timeout: float) -> dict[str, Any]:
    """core.search.search, interrupted (sqlite3 interrupt()) after `timeout` seconds: QueryTimeout then."""
    conn = core.db.conn  # this thread's connection: the one the search runs on
    timer = threading.Timer(timeout, conn.interrupt)
    timer.start()
    t0 = time.perf_counter()
    try:
        return core.search.search(q, kb=kb, mode=mode, limit=10)
    except Exception as exc:
        if time.perf_counter() - t0 >= timeout:
            raise QueryTimeout(f"interrupted after {timeout:g}s ({type(exc).__name__}: {exc})") from None
        raise
    finally:
        timer.cancel()


def bench_search(core: Pyrite, qs: list[str], ex: dict[str, Any] | None, args: argparse.Namespace,
                 runs: list[tuple[str, str | None]] | None = None) -> dict[str, Any]:
    """Latency per mode (kb=bench) and semantic over all KBs; recall@10 against the exact search (if ex)."""
    runs = runs or [(m, KB) for m in MODES] + [("semantic", None), ("keyword", None)]
    t_warm = time.perf_counter()
    for q in qs[:10]:  # warm-up
        for mode, kb in runs:
            try:
                search_capped(core, q, kb, mode, args.query_timeout)
            except Exception as exc:  # counted in the measured loop below
                log(f"  warm-up {mode} kb={kb} {q!r}: {str(exc)[:200]}")
    log(f"  warm-up: {time.perf_counter() - t_warm:.1f}s for 10 queries x {len(runs)} runs")
    times: dict[str, list[float]] = {f"{m}:{kb or 'all'}": [] for m, kb in runs}
    counts: dict[str, list[int]] = {k: [] for k in times}
    fallbacks: dict[str, int] = {k: 0 for k in times}
    errors: dict[str, list[str]] = {k: [] for k in times}
    wrong_kb = 0
    spent: dict[str, float] = {k: 0.0 for k in times}
    skipped: dict[str, int] = {k: 0 for k in times}
    timeouts: dict[str, int] = {k: 0 for k in times}
    got: dict[str, list[list[dict[str, Any]] | None]] = {k: [] for k in ("semantic:bench", "semantic:all") if k in times}
    for i, q in enumerate(qs):
        if i and i % 50 == 0:
            log(f"  {i}/{len(qs)} queries; seconds spent per run: "
                + ", ".join(f"{k} {v:.0f}" for k, v in spent.items()))
        order = runs[i % len(runs):] + runs[:i % len(runs)]  # rotate: no mode always runs first
        for mode, kb in order:
            name = f"{mode}:{kb or 'all'}"
            if spent[name] > args.mode_budget and len(times[name]) >= 10:
                skipped[name] += 1  # this mode has used its time budget: its figures rest on fewer queries
                if name in got:
                    got[name].append(None)
                continue
            t0 = time.perf_counter()
            try:
                res = search_capped(core, q, kb, mode, args.query_timeout)
            except QueryTimeout:
                # Counted at the cap, so percentiles are lower bounds when timeouts occur.
                times[name].append(time.perf_counter() - t0)
                spent[name] += times[name][-1]
                timeouts[name] += 1
                if name in got:
                    got[name].append(None)  # left out of the recall
                continue
            except Exception as exc:  # report, keep going: pyrite may be changing underneath
                errors[name].append(f"{type(exc).__name__}: {exc}")
                if name in got:
                    got[name].append([])
                continue
            times[name].append(time.perf_counter() - t0)
            spent[name] += times[name][-1]
            counts[name].append(len(res["results"]))
            if res["mode"] != mode:
                fallbacks[name] += 1
            if kb is not None:
                wrong_kb += sum(1 for r in res["results"] if r["kb"] != kb)
            if name in got:
                got[name].append(res["results"] if res["mode"] == mode else [])
    out: dict[str, Any] = {}
    for name in times:
        s = summary_ms(times[name]) if times[name] else {}
        s["mean_results"] = round(statistics.fmean(counts[name]), 2) if counts[name] else 0
        s["fell_back_to_keyword"] = fallbacks[name]
        s["errors"] = len(errors[name])
        s["queries_skipped_over_budget"] = skipped[name]
        s["timeouts"] = timeouts[name]
        if errors[name]:
            s["first_error"] = errors[name][0][:500]
        out[name] = s
    out["results_from_other_kbs_with_kb_filter"] = wrong_kb
    if ex is None:
        return out

    # Exact search: recall@10 of pyrite's semantic results, and the numpy time per query.
    embedder = ex["embedder"]
    exact_ms: list[float] = []
    for name, kb in (("semantic:bench", KB), ("semantic:all", None)):
        if name not in got:
            continue
        recalls, strict, score_err = [], [], []
        lo = 0 if kb is None else ex["kb_ranges"][kb][0]
        for q, results in zip(qs, got[name]):
            if results is None:  # not run (time budget) or timed out
                continue
            qvec = np.asarray(embedder.embed([q])[0], dtype=np.float32)
            t0 = time.perf_counter()
            scores = exact_scores(ex, qvec, kb)
            best = top10(scores)
            if kb == KB:
                exact_ms.append((time.perf_counter() - t0) * 1000)
            tenth = float(scores[best[-1]]) if len(best) else float("-inf")
            best_keys = {ex["keys"][lo + int(j)] for j in best}
            ok = exact = 0
            for r in results[:10]:
                idx = ex["index"].get((r["kb"], r["id"]))
                if idx is None or not (0 <= idx - lo < len(scores)):
                    continue  # not an entry of this range: wrong
                s = float(scores[idx - lo])
                score_err.append(abs(s - float(r["score"])))
                if s >= tenth - 1e-6:
                    ok += 1
                if (r["kb"], r["id"]) in best_keys:
                    exact += 1
            k = min(10, len(best))
            recalls.append(ok / k if k else 1.0)
            strict.append(exact / k if k else 1.0)
        out[name]["recall_at_10"] = round(statistics.fmean(recalls), 4) if recalls else None
        out[name]["recall_at_10_strict_ids"] = round(statistics.fmean(strict), 4) if strict else None
        out[name]["min_recall_at_10"] = round(min(recalls), 2) if recalls else None
        out[name]["max_abs_score_diff_vs_exact"] = round(max(score_err), 5) if score_err else None
    out["exact_numpy"] = {"median_ms": round(statistics.median(exact_ms), 3),
                          "p99_ms": round(percentile(exact_ms, 99), 3), "chunks": int(ex["matrix"].shape[0])}
    return out


def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    with benchlib.scratch(f"pyrite-bench-scale-{n}-", args.tmp, keep=args.keep) as tmp:
        return _bench_size(n, args, tmp) | {"total_s": round(time.perf_counter() - started, 1)}


def _bench_size(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    home, folder, other_folder = tmp / "home", tmp / "kb", tmp / "other"
    provider, model = ("local", "all-MiniLM-L6-v2") if args.real_model else ("hash", "dense-384")
    settings = benchlib.settings(home, embed_provider=provider, embed_model=model, embed_batch_size=args.batch_size)
    env = benchlib.child_env(home, PYRITE_EMBED_PROVIDER=provider, PYRITE_EMBED_MODEL=model,
                    PYRITE_EMBED_BATCH_SIZE=str(args.batch_size))
    n_other = max(200, n // 100)
    result: dict[str, Any] = {"n": n, "n_other_kb": n_other, "provider": provider, "model": model,
                              "batch_size": args.batch_size, "seed": args.seed}

    # a. the corpus, and the KB registered while its folder is empty (so nothing is indexed yet)
    core = Pyrite(settings)
    core.kbs.create_kb(KB, folder, create=True)
    core.close()
    log(f"N={n:,}: writing the corpus into {folder} ...")
    result["corpus"] = write_corpus(n, folder, args.seed)
    c = result["corpus"]
    log(f"  {n:,} files, {c['words']:,} words (median {c['median_words']}, p95 {c['p95_words']}, "
        f"{c['long_entries_400_plus']} of 400+), generated in {c['generate_s']}s + files written in "
        f"{c['write_files_s']}s")

    # b. index build in a subprocess
    log("  pyrite index build --no-embed ...")
    run = run_measured(["index", "build", "--kb", KB, "--no-embed", "--format", "json"], env,
                       interval=0.2, timeout=args.timeout)
    info = json.loads(run["stdout"])
    rep = info["reports"][0]
    if rep["added"] != n or rep["errors"]:
        raise RuntimeError(f"build indexed {rep['added']} of {n} files; errors: {rep['errors'][:5]}")
    result["build"] = {"wall_s": round(run["seconds"], 3), "cli_reported_s": info["seconds"],
                       "files_per_s": round(n / run["seconds"], 1), "peak_rss_mb": run["peak_rss_mb"],
                       "sampled_vmhwm_mb": run["sampled_hwm_mb"], "cpu_s": run["cpu_s"]}
    log(f"  build: {run['seconds']:.2f}s ({n / run['seconds']:,.0f} files/s), peak RSS {run['peak_rss_mb']} MB")

    # c. sync with nothing changed
    sync_s: list[float] = []
    for _ in range(args.sync_repeat):
        run = run_measured(["index", "sync", "--kb", KB, "--no-embed", "--format", "json"], env,
                           interval=0.2, timeout=args.timeout)
        rep = json.loads(run["stdout"])["reports"][0]
        if rep["unchanged"] != n or rep["added"] or rep["updated"] or rep["removed"]:
            raise RuntimeError(f"sync of an unchanged KB reported {rep}")
        sync_s.append(run["seconds"])
    result["sync"] = {"median_s": round(statistics.median(sync_s), 3), "runs_s": [round(s, 3) for s in sync_s],
                      "peak_rss_mb": run["peak_rss_mb"]}
    log(f"  sync (unchanged): {', '.join(f'{s:.2f}s' for s in sync_s)}")

    # the second KB, indexed in process (not measured)
    write_corpus(n_other, other_folder, args.seed + 1)
    core = Pyrite(settings)
    core.kbs.create_kb(OTHER, other_folder)
    core.kbs.build(OTHER)
    core.close()

    # d. the worker fills the vectors
    counts = status_counts(settings.db_path)
    total = counts.get("pending", 0)
    done_before = sum(counts.get(k, 0) for k in ("done", "failed", "skipped"))
    log(f"  pyrite worker --until-empty over {total:,} queued entries (batch size {args.batch_size}) ...")
    # Every 0.5 s; 0.2 s for small queues, which drain in a few seconds.
    run = run_measured(["worker", "--until-empty"], env, interval=0.5 if total > 5000 else 0.2, timeout=args.timeout,
                       probe=QueueProbe(settings.db_path))
    after = status_counts(settings.db_path)
    wf = worker_figures(run, total, done_before)
    result["worker"] = {"items": total, "wall_s": round(run["seconds"], 2),
                        "items_per_s": round(total / run["seconds"], 1), "peak_rss_mb": run["peak_rss_mb"],
                        "cpu_s": run["cpu_s"], "counts_after": after, **wf}
    if after.get("pending") or after.get("processing") or after.get("failed"):
        log(f"  WARNING: queue after the worker: {after}; worker stderr:\n{run['stderr_tail']}")
    result["vector_index"] = vector_index_state(settings.db_path)
    log(f"  vector index after the worker: {json.dumps(result['vector_index'], default=str)[:600]}")
    result["index_db_mb"], result["wal_mb_after_worker"] = db_sizes_mb(settings.db_path)
    log(f"  worker: {run['seconds']:.1f}s ({total / run['seconds']:,.0f} items/s), RSS 10/50/90% "
        f"{wf['rss_at_10pct_mb']}/{wf['rss_at_50pct_mb']}/{wf['rss_at_90pct_mb']} MB (anonymous "
        f"{wf['anon_at_10pct_mb']}/{wf['anon_at_50pct_mb']}/{wf['anon_at_90pct_mb']} MB), peak {run['peak_rss_mb']} MB")

    # f (first half). the exact vectors, embedded here from the generated texts
    log("  exact vectors for the reference search ...")
    ex = exact_index(settings, [(KB, n, args.seed), (OTHER, n_other, args.seed + 1)])
    result["exact_vectors"] = {"chunks": int(ex["matrix"].shape[0]), "seconds": round(ex["seconds"], 1),
                               "matrix_mb": round(ex["matrix"].nbytes / 2**20, 1)}
    log(f"  {ex['matrix'].shape[0]:,} chunks embedded in {ex['seconds']:.1f}s")

    # e + f. search latency and recall
    qs = list(queries(args.queries, args.seed, n_entries=n))
    log(f"  searching {len(qs)} queries x (keyword, semantic, hybrid, semantic all KBs) ...")
    core = Pyrite(settings)
    try:
        result["search"] = bench_search(core, qs, ex, args)
    finally:
        result["wal_mb_after_search"] = db_sizes_mb(settings.db_path)[1]
        t0 = time.perf_counter()
        core.close()  # the last connection: SQLite checkpoints the WAL into index.db and removes it here
        close_s = time.perf_counter() - t0

    # The same searches once the WAL is folded back into index.db, when the worker left a big one.
    if result["wal_mb_after_worker"] > args.wal_recheck_mb:
        log(f"  WAL of {result['wal_mb_after_worker']} MB after the worker: checkpoint, search again ...")
        t0 = time.perf_counter()
        conn = sqlite3.connect(settings.db_path, timeout=60)
        try:
            ck = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
        result["wal_checkpoint"] = {"seconds": round(close_s + time.perf_counter() - t0, 2),
                                    "close_s": round(close_s, 2), "result": list(ck),
                                    "wal_mb_after": db_sizes_mb(settings.db_path)[1]}
        core = Pyrite(settings)
        try:
            result["search_after_checkpoint"] = bench_search(core, qs[:100], None, args,
                                                             runs=[("semantic", KB), ("keyword", KB)])
        finally:
            core.close()
    s = result["search"]
    log(f"  semantic median {s['semantic:bench'].get('median_ms')} ms, recall@10 "
        f"{s['semantic:bench']['recall_at_10']}, exact numpy {s['exact_numpy']['median_ms']} ms")
    return result


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def table_rows(r: dict[str, Any]) -> list[list[Any]]:
    b, w, s = r["build"], r["worker"], r["search"]

    def ms(name: str, key: str) -> Any:
        v = s[name].get(key)
        return "error" if v is None else v

    rows = [
        ["build files/s (subprocess wall)", b["files_per_s"]],
        ["build peak RSS MB", b["peak_rss_mb"]],
        ["sync unchanged s (median)", r["sync"]["median_s"]],
        [f"worker items/s (whole run; batch {r['batch_size']})", w["items_per_s"]],
        ["worker items/s (10%-90% of the drain)", w["items_per_s_10_90"] or "-"],
        ["worker RSS MB at 10% / 50% / 90% / peak",
         f"{w['rss_at_10pct_mb']} / {w['rss_at_50pct_mb']} / {w['rss_at_90pct_mb']} / {w['peak_rss_mb']}"],
        ["of which anonymous (heap) MB at 10% / 50% / 90% / largest sampled",
         f"{w.get('anon_at_10pct_mb')} / {w.get('anon_at_50pct_mb')} / {w.get('anon_at_90pct_mb')} / "
         f"{w.get('anon_max_sampled_mb')}"],
        ["of which mapped file pages (index.db) MB at 10% / 50% / 90%",
         f"{w.get('file_at_10pct_mb')} / {w.get('file_at_50pct_mb')} / {w.get('file_at_90pct_mb')}"],
    ]
    for mode in MODES:
        rows.append([f"{mode} ms median / p99", f"{ms(mode + ':bench', 'median_ms')} / {ms(mode + ':bench', 'p99_ms')}"])
    rows += [
        ["semantic all KBs ms median / p99", f"{ms('semantic:all', 'median_ms')} / {ms('semantic:all', 'p99_ms')}"],
        ["keyword all KBs ms median / p99", f"{ms('keyword:all', 'median_ms')} / {ms('keyword:all', 'p99_ms')}"],
        ["recall@10 semantic (kb filter / all KBs)",
         f"{s['semantic:bench']['recall_at_10']} / {s['semantic:all']['recall_at_10']}"],
        ["exact numpy ms median / p99", f"{s['exact_numpy']['median_ms']} / {s['exact_numpy']['p99_ms']}"],
        ["index.db MB / WAL MB: largest while the worker ran / after it",
         f"{r['index_db_mb']} / {w.get('wal_max_mb')} / {r['wal_mb_after_worker']}"],
    ]
    after = r.get("search_after_checkpoint")
    if after:
        sa, ka = after["semantic:bench"], after["keyword:bench"]
        rows.append(["semantic / keyword ms median after a WAL checkpoint",
                     f"{sa.get('median_ms', 'error')} / {ka.get('median_ms', 'error')} "
                     f"(checkpoint {r['wal_checkpoint']['seconds']} s)"])
    else:
        rows.append(["semantic / keyword ms median after a WAL checkpoint", "- (WAL small)"])
    return rows


def notes(r: dict[str, Any]) -> list[str]:
    out = []
    s = r["search"]
    for name, v in s.items():
        if isinstance(v, dict) and v.get("errors"):
            out.append(f"{name}: {v['errors']} errors, first: {v.get('first_error')}")
        if isinstance(v, dict) and v.get("queries_skipped_over_budget"):
            out.append(f"{name}: ran {v['n']} queries only (the other {v['queries_skipped_over_budget']} "
                       f"skipped: over the --mode-budget of search time)")
        if isinstance(v, dict) and v.get("timeouts"):
            out.append(f"{name}: {v['timeouts']} searches interrupted at --query-timeout (counted at the cap, "
                       f"so its percentiles are lower bounds)")
        if isinstance(v, dict) and v.get("fell_back_to_keyword"):
            out.append(f"{name}: {v['fell_back_to_keyword']} searches fell back to keyword")
        if isinstance(v, dict) and "mean_results" in v and v["mean_results"] < 10 and not name.startswith("keyword"):
            out.append(f"{name}: only {v['mean_results']} results per query on average (limit 10)")
    if s.get("results_from_other_kbs_with_kb_filter"):
        out.append(f"{s['results_from_other_kbs_with_kb_filter']} results of other KBs came back with kb={KB}")
    after = r["worker"]["counts_after"]
    if after.get("pending") or after.get("processing") or after.get("failed"):
        out.append(f"queue after the worker: {after}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000", help="comma-separated KB sizes (default 1000,10000,100000)")
    ap.add_argument("--queries", type=int, default=200, help="search queries per size (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    ap.add_argument("--real-model", action="store_true",
                    help="embed with the local MiniLM model instead of hash/dense-384 (use sizes of 1000-2000)")
    ap.add_argument("--batch-size", type=int, default=100, help="PYRITE_EMBED_BATCH_SIZE of the worker (default 100)")
    ap.add_argument("--sync-repeat", type=int, default=3, help="unchanged syncs per size (default 3)")
    ap.add_argument("--mode-budget", type=float, default=60.0,
                    help="seconds of search time per mode and size after which that mode's remaining queries "
                         "are skipped (at least 10 always run; default 60)")
    ap.add_argument("--query-timeout", type=float, default=30.0,
                    help="seconds after which one search is interrupted and counted as a timeout (default 30)")
    ap.add_argument("--wal-recheck-mb", type=float, default=64.0,
                    help="when the worker leaves a WAL larger than this (MB), checkpoint it and time semantic and "
                         "keyword search again (default 64)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="longest run of one subprocess, s (default 3600)")
    ap.add_argument("--tmp", default=None, help="parent folder of the temporary homes (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders (their paths are logged)")
    ap.add_argument("--json", default=None, help="write the results as JSON to this path")
    args = ap.parse_args(argv)
    sizes = benchlib.int_list(args.sizes)

    info = benchlib.machine_info()
    results = []
    started = time.perf_counter()
    for n in sizes:
        results.append(bench_size(n, args))
        log(f"N={n:,} done in {results[-1]['total_s']}s")
        # What is done so far, in case a later size fails.
        write_json(args.json, {"benchmark": "bench_scale", "machine": info, "args": vars(args), "partial": True,
                               "sizes": results}, announce=False)
    total = time.perf_counter() - started

    targets = {}
    for r in results:
        if r["n"] >= 100_000:
            targets[f"build_2000_files_per_s_at_{r['n']}"] = r["build"]["files_per_s"] >= 2000
            targets[f"build_peak_under_500mb_at_{r['n']}"] = r["build"]["peak_rss_mb"] < 500
            targets[f"sync_under_5s_at_{r['n']}"] = r["sync"]["median_s"] < 5
    write_json(args.json, {"benchmark": "bench_scale", "machine": info, "args": vars(args),
                           "seconds": round(total, 1), "sizes": results, "targets": targets})

    provider = results[0]["provider"] + ":" + results[0]["model"] if results else ""
    print(f"# pyrite at scale ({info['date']}, {info['cores']} cores, {info['cpu']}; embedder {provider})\n")
    for r in results:
        c = r["corpus"]
        print(f"## N = {r['n']:,} entries (+ {r['n_other_kb']:,} in a second KB); run {r['total_s']:.0f}s\n")
        print(f"corpus: {c['words']:,} words, median {c['median_words']} / p95 {c['p95_words']} words per entry, "
              f"{c['long_entries_400_plus']:,} entries of 400+ words; {r['exact_vectors']['chunks']:,} chunks "
              f"(both KBs); {args.queries} queries\n")
        print(md_table(["measure", "value"], table_rows(r)))
        vi = r.get("vector_index", {})
        if vi.get("vec_index"):
            print("\nvector index at search time: " + "; ".join(
                ", ".join(f"{k} {v}" for k, v in row.items()) for row in vi["vec_index"]))
        for line in notes(r):
            print(f"\n- note: {line}")
        print()
    if len(results) > 1:
        print("## all sizes\n")
        per_size = [table_rows(r) for r in results]
        print(md_table(["measure"] + [f"{r['n']:,}" for r in results],
                       [[row[0]] + [rows[i][1] for rows in per_size] for i, row in enumerate(per_size[0])]))
    if targets:
        print("\ntargets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    print(f"\n(total {total:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
