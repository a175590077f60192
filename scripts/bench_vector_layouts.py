#!/usr/bin/env python3
"""Vector layouts in sqlite-vec, side by side: the comparison behind docs/search.md ("Why not the alternatives").

On N dense 384-d unit vectors and Q query vectors, one run measures the per-query latency (median and
p99, after a few warm-up queries) and recall@10 of:

1. exact float KNN in one vec0 table (cosine), with mmap off (SQLite's default) and with
   ``pragma mmap_size=1073741824`` (pyrite's setting);
2. numpy: one matrix-vector product over all vectors held in memory, top 10 by argpartition;
3. an int8 vec0 table (cosine) scanned with k=10;
4. a bit[384] vec0 table of sign bits: KNN with k=10, 100 and 800 (latency; recall is that of the
   hamming top 10 for k=10, and for k=100/800 the best a float rescore of those candidates could reach,
   the rescore not timed); and the "distance < T" trick: T is chosen from an in-memory sample of 4096
   codes so that about R rows pass, the rows' float vectors come from a ``+vector`` auxiliary column and
   numpy rescores them (R = 800 and 1600, all timed);
5. IVF through a vec0 partition key ``cell`` (the layout of pyrite/storage/cells.py): spherical k-means,
   256 cells trained on a 20,000-vector sample, chunk_size=128, mmap on; one copy of each vector (its
   nearest cell) probed at 16/32/48 cells, and two copies (its two nearest cells) probed at 8/16/24 cells.
   Each probed cell is one KNN query with k=10; results are merged and deduplicated by entry.

Data: the entries and queries of scripts/corpus.py (200 topics in 20 fields over 20,000 made-up words;
an entry is its title and body, a query 2-6 topic words or a phrase of a title), embedded with pyrite's
dense hash embedder ``HashEmbedder("dense-384")`` in worker processes; the vectors are the same for a
given --n and --seed whatever the number of workers. Ground truth is exact cosine
by numpy; a method's hit is correct when its exact score is >= the exact 10th best score - 1e-6.

Every layout is a fresh SQLite file opened through ``pyrite.storage.db.Database`` (which loads sqlite-vec
and applies pyrite's pragmas, mmap 1 GiB among them), in a temporary folder removed at the end. Every
vec0 table carries pyrite's ``kb`` partition key and ``model`` metadata column, and every query filters
on both, as pyrite's own queries must (the filters cost the bit-threshold query ~30% at 100k);
``--bare-tables`` drops them. The machine's load average is printed at the start and end: on a shared
machine compare ratios, not ms. With 100 queries a recall@10 figure is good to about +-0.01 (use
--queries 500 to separate close layouts).

    .venv/bin/python scripts/bench_vector_layouts.py --n 20000                  # quick check, < 2 min
    .venv/bin/python scripts/bench_vector_layouts.py --json /tmp/layouts.json   # 100,000 vectors, 100 queries
    .venv/bin/python scripts/bench_vector_layouts.py --n 100000 --queries 200 --workers 2 --seed 1
    .venv/bin/python scripts/bench_vector_layouts.py --n 20000 --bare-tables            # no kb/model columns
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import benchlib
import corpus
from benchlib import log, md_table, percentile

benchlib.use_repo()
from pyrite.embedders.hashing import HashEmbedder  # noqa: E402
from pyrite.storage import cells  # noqa: E402
from pyrite.storage.db import Database  # noqa: E402

DIM = 384
MODEL = "dense-384"
KB = "bench"
K = 10
MMAP_BYTES = 1 << 30
KNN_MAX = 4096            # sqlite-vec's largest k
BLOCK = 1000              # entries per embedding task
THRESHOLD_SAMPLE = 4096   # codes in memory to pick the hamming threshold from
IVF_CELLS = 256
IVF_SAMPLE = 20_000
IVF_CHUNK = 128
POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


_WORKER: dict[str, Any] = {}


def _init_worker(seed: int) -> None:
    _WORKER["model"] = corpus.model(seed)
    _WORKER["embedder"] = HashEmbedder(MODEL)


def _embed_block(task: tuple[int, int]) -> tuple[int, np.ndarray]:
    """The vectors of corpus entries block*BLOCK ... (+count): each entry's title and body."""
    block, count = task
    entries = (_WORKER["model"].entry(i) for i in range(block * BLOCK, block * BLOCK + count))
    return block, _WORKER["embedder"].embed([f"{e['title']}\n\n{e['body']}" for e in entries])


def make_vectors(n: int, seed: int, workers: int, cache: Path) -> np.ndarray:
    """N entry vectors, float32 (n, 384), unit rows; generated in `workers` processes, cached as .npy in `cache`."""
    path = cache / f"vectors_{n}_{seed}.npy"
    if not path.exists():
        tasks = [(b, min(BLOCK, n - b * BLOCK)) for b in range((n + BLOCK - 1) // BLOCK)]
        out = np.empty((n, DIM), dtype=np.float32)
        if workers > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(seed,)) as pool:
                for block, vecs in pool.imap_unordered(_embed_block, tasks):
                    out[block * BLOCK:block * BLOCK + len(vecs)] = vecs
        else:
            _init_worker(seed)
            for task in tasks:
                block, vecs = _embed_block(task)
                out[block * BLOCK:block * BLOCK + len(vecs)] = vecs
        np.save(path, out)
    return np.load(path)


# --------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------


class Truth:
    """Exact cosine scores of every query against every vector, and each query's 10th best score."""

    def __init__(self, vectors: np.ndarray, queries: np.ndarray) -> None:
        self.scores = queries @ vectors.T
        tenth = -np.partition(-self.scores, K - 1, axis=1)[:, K - 1]
        self.threshold = tenth - 1e-6

    def recall(self, qi: int, ids: Sequence[int]) -> float:
        """Fraction of K whose exact score reaches the exact 10th best (ties at rank 10 count)."""
        ids = list(ids)[:K]
        if not ids:
            return 0.0
        return float(np.sum(self.scores[qi, ids] >= self.threshold[qi])) / K

    def rescored(self, qi: int, candidates: Sequence[int]) -> list[int]:
        """The best K of the candidates by exact score: what a float rescore of them would return."""
        cand = np.asarray(list(candidates), dtype=np.int64)
        if len(cand) == 0:
            return []
        order = np.argsort(-self.scores[qi, cand])[:K]
        return cand[order].tolist()


def measure(name: str, search: Callable[[np.ndarray], Any], queries: np.ndarray, truth: Truth, *, warmup: np.ndarray,
            ids_of: Callable[[int, Any], Sequence[int]] | None = None, extra: Callable[[Any], float] | None = None,
            notes: str = "") -> dict[str, Any]:
    """Time `search` per query (the warm-up queries first, untimed); recall@10 from what ids_of makes of its result."""
    for q in warmup:
        search(q)
    lat, rec, extras = [], [], []
    for qi, q in enumerate(queries):
        t0 = time.perf_counter()
        result = search(q)
        lat.append(time.perf_counter() - t0)
        if ids_of is not None:
            rec.append(truth.recall(qi, ids_of(qi, result)))
        if extra is not None:
            extras.append(extra(result))
    ms = [x * 1000 for x in lat]
    row = {
        "approach": name,
        "median_ms": round(statistics.median(ms), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "recall_at_10": round(statistics.fmean(rec), 4) if rec else None,
        "queries": len(ms),
        "notes": notes,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if extras:
        row["extra_mean"] = round(statistics.fmean(extras), 1)
    log(f"{name}: median {row['median_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, recall {row['recall_at_10']}")
    return row


def open_db(path: Path) -> tuple[Database, Any]:
    db = Database(path)
    return db, db.conn


def finish_build(db: Database, conn: Any, path: Path, name: str, started: float, builds: list[dict[str, Any]],
                 **info: Any) -> None:
    """Fold the WAL into the file and record the build time and size of one layout."""
    conn.execute("pragma wal_checkpoint(TRUNCATE)")
    seconds = time.perf_counter() - started
    size = path.stat().st_size / 1e6
    builds.append({"layout": name, "build_s": round(seconds, 1), "size_mb": round(size, 1), **info})
    log(f"built {name}: {seconds:.1f} s, {size:.1f} MB")


def drop_db(db: Database, path: Path) -> None:
    db.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def insert_rows(db: Database, sql: str, rows: Any) -> None:
    with db.write() as conn:
        conn.executemany(sql, rows)


class Cols:
    """The filter columns every vec0 table carries: pyrite's `kb` partition key and `model` metadata column,
    filtered on in every query (as pyrite must), or none with --bare-tables."""

    def __init__(self, bare: bool) -> None:
        self.bare = bare
        self.decl = "" if bare else "kb TEXT PARTITION KEY, model TEXT, "
        self.names = "" if bare else "kb, model, "
        self.marks = "" if bare else "?, ?, "
        self.where = "" if bare else " AND kb = ? AND model = ?"
        self.values: tuple[str, ...] = () if bare else (KB, MODEL)


# --------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------


def bench_float(tmp: Path, V: np.ndarray, Q: np.ndarray, truth: Truth, warmup: np.ndarray, builds: list,
                cols: Cols) -> list[dict]:
    path = tmp / "float.db"
    db, conn = open_db(path)
    started = time.perf_counter()
    conn.execute(f"CREATE VIRTUAL TABLE f USING vec0(id INTEGER PRIMARY KEY, {cols.decl}"
                 f"embedding float[{DIM}] distance_metric=cosine)")
    insert_rows(db, f"INSERT INTO f(id, {cols.names}embedding) VALUES (?, {cols.marks}?)",
                ((i + 1, *cols.values, V[i].tobytes()) for i in range(len(V))))
    finish_build(db, conn, path, "float vec0", started, builds)
    sql = f"SELECT id, distance FROM f WHERE embedding MATCH ? AND k = ?{cols.where}"

    def search(q: np.ndarray) -> list:
        return conn.execute(sql, (q.tobytes(), K, *cols.values)).fetchall()

    ids = lambda qi, rows: [r[0] - 1 for r in rows]  # noqa: E731
    out = []
    conn.execute("pragma mmap_size = 0")
    out.append(measure("exact float KNN, one vec0 table, mmap off", search, Q, truth, warmup=warmup, ids_of=ids,
                       notes="SQLite default pragmas (mmap_size=0, 2 MB page cache)"))
    conn.execute(f"pragma mmap_size = {MMAP_BYTES}")
    out.append(measure("exact float KNN, one vec0 table, mmap 1 GiB", search, Q, truth, warmup=warmup, ids_of=ids,
                       notes="pragma mmap_size=1073741824 (pyrite's setting)"))
    drop_db(db, path)
    return out


def bench_numpy(V: np.ndarray, Q: np.ndarray, truth: Truth, warmup: np.ndarray) -> list[dict]:
    def search(q: np.ndarray) -> np.ndarray:
        scores = V @ q
        top = np.argpartition(-scores, K - 1)[:K]
        return top[np.argsort(-scores[top])]

    mb = V.nbytes / 1e6
    return [measure("numpy matrix product over all vectors", search, Q, truth, warmup=warmup,
                    ids_of=lambda qi, r: r.tolist(), notes=f"holds the whole float32 matrix in memory ({mb:.0f} MB)")]


def bench_int8(tmp: Path, V: np.ndarray, Q: np.ndarray, truth: Truth, warmup: np.ndarray, builds: list,
               cols: Cols) -> list[dict]:
    path = tmp / "int8.db"
    db, conn = open_db(path)
    scale = 127.0 / float(np.abs(V).max())
    quant = lambda x: np.clip(np.round(x * scale), -127, 127).astype(np.int8)  # noqa: E731
    V8 = quant(V)
    started = time.perf_counter()
    conn.execute(f"CREATE VIRTUAL TABLE i8 USING vec0(id INTEGER PRIMARY KEY, {cols.decl}"
                 f"embedding int8[{DIM}] distance_metric=cosine)")
    insert_rows(db, f"INSERT INTO i8(id, {cols.names}embedding) VALUES (?, {cols.marks}vec_int8(?))",
                ((i + 1, *cols.values, V8[i].tobytes()) for i in range(len(V))))
    finish_build(db, conn, path, "int8 vec0", started, builds)
    conn.execute(f"pragma mmap_size = {MMAP_BYTES}")
    sql = f"SELECT id, distance FROM i8 WHERE embedding MATCH vec_int8(?) AND k = ?{cols.where}"

    def search(q: np.ndarray) -> list:
        return conn.execute(sql, (quant(q).tobytes(), K, *cols.values)).fetchall()

    out = [measure("int8 vec0 scan, k=10", search, Q, truth, warmup=warmup,
                   ids_of=lambda qi, rows: [r[0] - 1 for r in rows],
                   notes=f"one global scale 127/max|x| = {scale:.0f}; no rescore; mmap 1 GiB")]
    drop_db(db, path)
    return out


def bench_bit(tmp: Path, V: np.ndarray, Q: np.ndarray, truth: Truth, warmup: np.ndarray, builds: list,
              cols: Cols, seed: int) -> list[dict]:
    path = tmp / "bit.db"
    db, conn = open_db(path)
    n = len(V)
    B = np.packbits(V > 0, axis=1)
    started = time.perf_counter()
    conn.execute(f"CREATE VIRTUAL TABLE b USING vec0(id INTEGER PRIMARY KEY, {cols.decl}embedding bit[{DIM}], "
                 "+vector BLOB)")
    insert_rows(db, f"INSERT INTO b(id, {cols.names}embedding, vector) VALUES (?, {cols.marks}vec_bit(?), ?)",
                ((i + 1, *cols.values, B[i].tobytes(), V[i].tobytes()) for i in range(n)))
    finish_build(db, conn, path, "bit vec0 + aux float", started, builds)
    conn.execute(f"pragma mmap_size = {MMAP_BYTES}")
    out = []

    knn_sql = f"SELECT id, distance FROM b WHERE embedding MATCH vec_bit(?) AND k = ?{cols.where}"
    for k in (10, 100, 800):
        if k > n:
            continue

        def knn(q: np.ndarray, k: int = k) -> list:
            return conn.execute(knn_sql, (np.packbits(q > 0).tobytes(), k, *cols.values)).fetchall()

        if k == K:
            ids = lambda qi, rows: [r[0] - 1 for r in rows]  # noqa: E731
            note = "hamming top 10, no rescore"
        else:
            ids = lambda qi, rows: truth.rescored(qi, [r[0] - 1 for r in rows])  # noqa: E731
            note = (f"KNN only; recall = best a float rescore of the {k} candidates could reach (rescore not "
                    f"timed)")
        out.append(measure(f"bit[384] sign-bit KNN, k={k}", knn, Q, truth, warmup=warmup, ids_of=ids, notes=note))

    rng = np.random.default_rng(seed + 1)
    sample = B[rng.choice(n, min(n, THRESHOLD_SAMPLE), replace=False)]
    thr_sql = f"SELECT id, vector FROM b WHERE embedding MATCH vec_bit(?) AND k = ? AND distance < ?{cols.where}"
    for want in (800, 1600):
        def thresholded(q: np.ndarray, want: int = want) -> tuple[list[int], int]:
            qb = np.packbits(q > 0)
            hamming = np.sort(POPCOUNT[np.bitwise_xor(sample, qb)].sum(axis=1, dtype=np.int32))
            limit = float(hamming[min(len(hamming) - 1, int(want / n * len(hamming)))]) + 0.5
            rows = conn.execute(thr_sql, (qb.tobytes(), KNN_MAX, limit, *cols.values)).fetchall()
            if not rows:
                return [], 0
            M = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), DIM)
            scores = M @ q
            top = np.argsort(-scores)[:K]
            return [rows[i][0] - 1 for i in top], len(rows)

        row = measure(f"bit[384] distance < T (~{want} rows) + aux float rescore", thresholded, Q, truth,
                      warmup=warmup, ids_of=lambda qi, r: r[0], extra=lambda r: r[1])
        row["notes"] = (f"T from {len(sample)} in-memory codes; k={KNN_MAX}; {row['extra_mean']:.0f} candidates on "
                        f"average, float vectors from a +vector aux column, numpy rescore (all timed)")
        out.append(row)
    drop_db(db, path)
    return out


def bench_ivf(tmp: Path, V: np.ndarray, Q: np.ndarray, truth: Truth, warmup: np.ndarray, builds: list,
              cols: Cols, seed: int) -> list[dict]:
    n = len(V)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    sample = V[rng.choice(n, min(n, IVF_SAMPLE), replace=False)]
    C = cells.train(sample, IVF_CELLS, seed=seed)  # pyrite's own k-means
    nearest = np.concatenate([np.argsort(-(V[i:i + 10_000] @ C.T), axis=1)[:, :2] for i in range(0, n, 10_000)])
    train_s = time.perf_counter() - t0
    log(f"k-means: {len(C)} cells from {len(sample)} vectors in {train_s:.1f} s")
    out = []
    for copies, probes in ((1, (16, 32, 48)), (2, (8, 16, 24))):
        path = tmp / f"ivf{copies}.db"
        db, conn = open_db(path)
        conn.execute(f"pragma mmap_size = {MMAP_BYTES}")
        started = time.perf_counter()
        # pyrite's table (pyrite/storage/vectors.py), or without kb and model with --bare-tables.
        conn.execute(f"""CREATE VIRTUAL TABLE v USING vec0(
            id INTEGER PRIMARY KEY,
            {"" if cols.bare else "kb TEXT PARTITION KEY,"}
            cell INTEGER PARTITION KEY,
            {"" if cols.bare else "model TEXT,"}
            embedding float[{DIM}] distance_metric=cosine,
            +entry_rowid INTEGER,
            chunk_size={IVF_CHUNK}
        )""")
        insert_rows(db, f"INSERT INTO v (id, {cols.names}cell, embedding, entry_rowid) VALUES (?, {cols.marks}?, ?, ?)",
                    ((i * copies + c + 1, *cols.values, int(nearest[i, c]), V[i].tobytes(), i + 1)
                     for i in range(n) for c in range(copies)))
        sizes = np.bincount(nearest[:, :copies].ravel(), minlength=len(C))
        finish_build(db, conn, path, f"IVF {copies} cop{'y' if copies == 1 else 'ies'}", started, builds,
                     train_s=round(train_s, 1), cell_min=int(sizes.min()), cell_max=int(sizes.max()))
        sql = f"SELECT entry_rowid, distance FROM v WHERE embedding MATCH ? AND k = ? AND cell = ?{cols.where}"
        for nprobe in probes:
            if nprobe > len(C):
                continue

            def search(q: np.ndarray, nprobe: int = nprobe) -> list[int]:
                blob = q.tobytes()
                best: dict[int, float] = {}
                for cell in np.argsort(-(C @ q))[:nprobe]:
                    for entry, dist in conn.execute(sql, (blob, K, int(cell), *cols.values)).fetchall():
                        if dist < best.get(entry, 3.0):
                            best[entry] = dist
                return [e - 1 for e, _ in sorted(best.items(), key=lambda item: item[1])[:K]]

            scanned = [int(sizes[np.argsort(-(C @ q))[:nprobe]].sum()) for q in Q]
            share = statistics.fmean(scanned) / n * 100
            label = "1 copy (nearest cell)" if copies == 1 else "2 copies (two nearest cells)"
            out.append(measure(f"IVF, {label}, {nprobe} of {len(C)} cells", search, Q, truth, warmup=warmup,
                               ids_of=lambda qi, r: r,
                               notes=f"scans {statistics.fmean(scanned):,.0f} rows ({share:.1f}% of N) on average; "
                                     f"k=10 per cell; chunk_size={IVF_CHUNK}; mmap 1 GiB"))
        drop_db(db, path)
    return out


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="vectors (default 100000)")
    parser.add_argument("--queries", type=int, default=100, help="timed queries (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed queries before each method (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="data and k-means seed (default 0)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes that embed the texts (default: all cores)")
    parser.add_argument("--bare-tables", action="store_true",
                        help="vec0 tables without pyrite's kb partition key and model column (and no filter on them)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.n < 1000 or args.queries < 1:
        parser.error("--n must be at least 1000 and --queries at least 1")

    wall = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    log(f"load average at start: {load_start}")
    timings: dict[str, float] = {}
    builds: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    with benchlib.scratch("pyrite-bench-layouts-") as tmp:
        t0 = time.perf_counter()
        V = make_vectors(args.n, args.seed, max(1, args.workers), tmp)
        embedder = HashEmbedder(MODEL)
        Q = np.ascontiguousarray(embedder.embed(list(corpus.queries(args.queries + args.warmup, args.seed,
                                                                    n_entries=args.n))))
        # Warm-up queries are other query texts, so no timed query has been run before.
        warm, Q = Q[:args.warmup], Q[args.warmup:]
        timings["vectors_s"] = round(time.perf_counter() - t0, 1)
        log(f"{len(V):,} vectors and {len(Q)} queries in {timings['vectors_s']} s ({args.workers} workers)")
        t0 = time.perf_counter()
        truth = Truth(V, Q)
        timings["ground_truth_s"] = round(time.perf_counter() - t0, 1)

        def run(fn: Callable[..., list[dict]], *extra: Any, **kw: Any) -> None:
            started = time.perf_counter()
            rows.extend(fn(*extra, **kw))
            timings[fn.__name__ + "_s"] = round(time.perf_counter() - started, 1)

        run(bench_numpy, V, Q, truth, warm)
        cols = Cols(args.bare_tables)
        run(bench_float, tmp, V, Q, truth, warm, builds, cols)
        run(bench_int8, tmp, V, Q, truth, warm, builds, cols)
        run(bench_bit, tmp, V, Q, truth, warm, builds, cols, seed=args.seed)
        run(bench_ivf, tmp, V, Q, truth, warm, builds, cols, seed=args.seed)
    load_end = [round(x, 2) for x in os.getloadavg()]
    timings["total_s"] = round(time.perf_counter() - wall, 1)

    probe = Database(":memory:", migrate=False).conn
    versions = {"sqlite": probe.execute("select sqlite_version()").fetchone()[0],
                "sqlite_vec": probe.execute("select vec_version()").fetchone()[0],
                "numpy": np.__version__, "python": platform.python_version()}

    tables = ("bare vec0 tables" if args.bare_tables
              else "every vec0 table has a kb partition key and a model column, filtered on")
    print(f"\n## Vector layouts: {args.n:,} dense {DIM}-d vectors, {args.queries} queries "
          f"(+{args.warmup} warm-up per method)\n\n{tables}\n")
    print(f"load average (1, 5, 15 min) at start {load_start}, at end {load_end}; {os.cpu_count()} cores; "
          f"sqlite {versions['sqlite']}, sqlite-vec {versions['sqlite_vec']}, numpy {versions['numpy']}\n")
    print(md_table(["approach", "median ms", "p99 ms", "recall@10", "notes"],
                   [[r["approach"], f"{r['median_ms']:.2f}", f"{r['p99_ms']:.2f}",
                     "-" if r["recall_at_10"] is None else f"{r['recall_at_10']:.3f}", r["notes"]] for r in rows]))
    print()
    print(md_table(["layout", "build s", "size MB"], [[b["layout"], f"{b['build_s']:.1f}", f"{b['size_mb']:.1f}"]
                                                       for b in builds]))
    print(f"\nvectors {timings['vectors_s']} s, ground truth {timings['ground_truth_s']} s, "
          f"total {timings['total_s']} s")

    benchlib.write_json(args.json, {
        "config": {"n": args.n, "queries": args.queries, "warmup": args.warmup, "seed": args.seed,
                   "workers": args.workers, "bare_tables": args.bare_tables, "dim": DIM, "model": MODEL, "k": K,
                   "ivf_cells": IVF_CELLS, "ivf_sample": IVF_SAMPLE, "ivf_chunk_size": IVF_CHUNK},
        "machine": {"date": benchlib.machine_info()["date"], "cores": os.cpu_count(),
                    "platform": platform.platform(), "load_avg_start": load_start, "load_avg_end": load_end},
        "versions": versions,
        "timings": timings,
        "builds": builds,
        "results": rows,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
