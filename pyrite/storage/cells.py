"""The partitioned (IVF) vector index: k-means cells per KB, stored as a vec0 partition key.

A KB's vectors start in one cell (cell 0): search is then exact. Once a KB holds
`min_vectors` chunk vectors of one dimension, a background step trains k-means
centroids; from then on each vector lives in its two nearest cells and a query
scans only the cells nearest to it. Training again (each time the KB doubles)
starts a new generation: vectors move to it in small transactions while queries
probe both generations, so a search never misses a vector that is mid-move.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

# Cell ids of generation g are g * CELL_BASE + c; generation 0 has the one cell 0.
CELL_BASE = 1 << 20
REPLICAS = 2            # nearest cells each vector is stored in, once trained
VECTORS_PER_CELL = 100  # target cell size, which sets the number of cells (finer cells: more recall per row)
MIN_CELLS = 8
MAX_CELLS = 4096
PROBE_ROWS = 8000       # a query scans the nearest cells until they hold this many rows ...
PROBE_CELLS_WORTH = 10  # ... or this many average cells' rows ...
PROBE_FRACTION = 40     # ... or 1/40 of the KB's rows, whichever is most ...
PROBE_MIN = 4           # ... and at least this many cells of the current generation
PROBE_BLIND = 16        # cells scanned (or 1/16 of them) when the cells' sizes are unknown
RETRAIN_GROWTH = 2.0    # train again when a KB has this many times the vectors it was trained on
TRAIN_SAMPLE = 64       # training vectors per cell ...
TRAIN_SAMPLE_MAX = 32768  # ... and at most this many (k-means memory: 48 MB of vectors, 8 MB of scores)
TRAIN_BLOCK = 2048      # sample rows scored against the centroids at once
TRAIN_ITERATIONS = 12
MOVE_BATCH = 64         # chunks moved to a new generation per write transaction


@dataclass(frozen=True)
class State:
    """One KB's index in one dimension: its current generation and the one it is moving from."""

    dim: int
    kb: str
    gen: int
    prev_gen: int | None
    cells: int
    trained_vectors: int
    token: str       # identifies the current generation's centroids (for caching)
    prev_token: str


_CENTROIDS: dict[str, np.ndarray] = {}  # token -> centroids; a generation's centroids never change


_STATE_COLUMNS = "kb, gen, prev_gen, cells, trained_vectors, token, prev_token"


def _state(dim: int, row: Any) -> State:
    return State(dim, row[0], row[1], row[2], row[3], row[4], row[5], row[6] or "")


def state(conn: Any, dim: int, kb: str) -> State | None:
    """The KB's index state in this dimension, or None if it has no vectors yet."""
    row = conn.execute(f"SELECT {_STATE_COLUMNS} FROM vec_index WHERE dim = ? AND kb = ?", (dim, kb)).fetchone()
    return None if row is None else _state(dim, row)


def ensure_state(conn: Any, dim: int, kb: str) -> State:
    """The KB's state, created untrained (one exact cell) on its first vector. Call in a write transaction."""
    found = state(conn, dim, kb)
    if found is not None:
        return found
    conn.execute("INSERT INTO vec_index (dim, kb, gen, prev_gen, cells, trained_vectors, token, prev_token) "
                 "VALUES (?, ?, 0, NULL, 1, 0, '', '')", (dim, kb))
    return State(dim, kb, 0, None, 1, 0, "", "")


def states(conn: Any, dim: int) -> list[State]:
    """Every KB's state in this dimension."""
    rows = conn.execute(f"SELECT {_STATE_COLUMNS} FROM vec_index WHERE dim = ? ORDER BY kb", (dim,)).fetchall()
    return [_state(dim, row) for row in rows]


def centroids(conn: Any, st: State, gen: int) -> np.ndarray | None:
    """The unit centroids of one trained generation (cached per training), or None for generation 0."""
    if gen == 0:
        return None
    key = st.token if gen == st.gen else st.prev_token
    cached = _CENTROIDS.get(key)
    if cached is not None:
        return cached
    rows = conn.execute("SELECT centroid FROM vec_centroids WHERE gen = ? ORDER BY cell", (gen,)).fetchall()
    if not rows:
        return None
    arr = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(len(rows), st.dim)
    if len(_CENTROIDS) > 64:
        _CENTROIDS.clear()
    _CENTROIDS[key] = arr
    return arr


def assign(conn: Any, st: State, vectors: np.ndarray) -> list[list[int]]:
    """The cells each vector goes to under the KB's current generation."""
    cents = centroids(conn, st, st.gen)
    if cents is None:
        return [[0] for _ in range(len(vectors))]
    sims = vectors @ cents.T
    nearest = np.argsort(-sims, axis=1)[:, :REPLICAS]
    base = st.gen * CELL_BASE
    return [[base + int(c) for c in row] for row in nearest]


def probe(conn: Any, st: State, query: np.ndarray, *, widen: int = 1,
          sizes: dict[int, int] | None = None) -> tuple[list[int], bool]:
    """The cells to scan for query (both generations while moving) and whether that is every cell.

    With `sizes` (rows per cell id), cells are taken nearest first until they hold the row budget
    (probe_rows); k-means cells are uneven (at 100,000 entries from 2 to 10,000 rows), so a fixed number
    of cells would scan 3 times more rows near a dense topic than elsewhere. Without sizes, a fixed
    number of cells. `widen` multiplies the budget.
    """
    out: list[int] = []
    complete = True
    total = sum(sizes.values()) if sizes else 0
    budget = probe_rows(total, sum(1 for n in sizes.values() if n) if sizes else 0) * widen
    for gen in (st.gen, st.prev_gen):
        if gen is None:
            continue
        cents = centroids(conn, st, gen)
        if cents is None:
            out.append(0 if gen == 0 else gen * CELL_BASE)
            continue
        base = gen * CELL_BASE
        order = np.argsort(-(cents @ query))
        if sizes is None or total == 0:
            n = max(PROBE_BLIND, math.ceil(len(cents) / PROBE_BLIND)) * widen
        else:
            # Each generation gets the budget in proportion to the rows it holds (while vectors move).
            rows = [sizes.get(base + int(c), 0) for c in order]
            share = budget * sum(rows) / total
            n = min(len(order), max(PROBE_MIN * widen, int(np.searchsorted(np.cumsum(rows), share)) + 1))
        if n < len(cents):
            complete = False
        out.extend(base + int(c) for c in order[:n])
    return out, complete


def probe_rows(total_rows: int, cells: int) -> int:
    """Rows a query scans in a KB whose `cells` non-empty cells hold total_rows (replicas counted)."""
    average = total_rows / cells if cells else VECTORS_PER_CELL * REPLICAS
    return max(PROBE_ROWS, math.ceil(PROBE_CELLS_WORTH * average), math.ceil(total_rows / PROBE_FRACTION))


def cell_count(vectors: int) -> int:
    """How many cells a KB of this many vectors is trained into."""
    return max(MIN_CELLS, min(MAX_CELLS, round(vectors / VECTORS_PER_CELL)))


def vector_count(conn: Any, dim: int, kb: str) -> int:
    """Chunk vectors the KB has in this dimension."""
    return conn.execute("SELECT count(*) FROM chunks WHERE dim = ? AND kb = ?", (dim, kb)).fetchone()[0]


def needs_training(st: State, count: int, min_vectors: int) -> bool:
    """True when the KB has grown enough to (re)train: past min_vectors, and doubled since last time."""
    if st.prev_gen is not None or count < min_vectors:
        return False
    return st.gen == 0 or count >= RETRAIN_GROWTH * st.trained_vectors


def train(sample: np.ndarray, cells: int, *, seed: int = 0) -> np.ndarray:
    """Spherical k-means: `cells` unit centroids (float32) of the unit vectors in sample."""
    rng = np.random.default_rng(seed)
    cells = min(cells, len(sample))
    cents = sample[rng.choice(len(sample), cells, replace=False)].astype(np.float32)
    for _ in range(TRAIN_ITERATIONS):
        nearest = nearest_cells(sample, cents)
        sums = np.zeros_like(cents)
        np.add.at(sums, nearest, sample)
        empty = ~sums.any(axis=1)
        # An empty cell restarts at a random vector, so no centroid is wasted.
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()))]
        cents = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return np.ascontiguousarray(cents, dtype=np.float32)


def nearest_cells(vectors: np.ndarray, cents: np.ndarray) -> np.ndarray:
    """The index of each vector's nearest centroid, scored in blocks (bounded memory)."""
    return np.concatenate([np.argmax(vectors[i:i + TRAIN_BLOCK] @ cents.T, axis=1)
                           for i in range(0, len(vectors), TRAIN_BLOCK)]) if len(vectors) else np.zeros(0, int)


def sample_vectors(conn: Any, dim: int, kb: str, limit: int) -> np.ndarray:
    """Up to `limit` of the KB's chunk vectors, drawn at random."""
    # Ids first, from the (dim, kb, gen) index, then only the drawn rows: `ORDER BY random()` would read
    # every vector of the KB (220 MB at 100,000 entries) through the memory map to keep a few thousand.
    ids = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE dim = ? AND kb = ?", (dim, kb))]
    if len(ids) > limit:
        ids = random.sample(ids, limit)
    out = np.empty((len(ids), dim), dtype=np.float32)  # filled in place: no second copy of the sample
    n = 0
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        for (blob,) in conn.execute(f"SELECT vector FROM chunks WHERE id IN ({','.join('?' * len(part))})", part):
            out[n] = np.frombuffer(blob, dtype=np.float32)
            n += 1
    return out[:n]


def start_generation(conn: Any, st: State, cents: np.ndarray, trained_vectors: int) -> State | None:
    """Store new centroids and make them current; None if the state changed meanwhile. In a write transaction."""
    now = state(conn, st.dim, st.kb)
    if now is None or now.gen != st.gen or now.prev_gen is not None:
        return None
    gen = conn.execute("INSERT INTO vec_generations (dim, kb) VALUES (?, ?)", (st.dim, st.kb)).lastrowid
    conn.executemany("INSERT INTO vec_centroids (gen, cell, centroid) VALUES (?, ?, ?)",
                     [(gen, i, c.tobytes()) for i, c in enumerate(cents)])
    token = os.urandom(8).hex()
    conn.execute("UPDATE vec_index SET gen = ?, prev_gen = ?, cells = ?, trained_vectors = ?, token = ?, "
                 "prev_token = token WHERE dim = ? AND kb = ?",
                 (gen, st.gen, len(cents), trained_vectors, token, st.dim, st.kb))
    return state(conn, st.dim, st.kb)


def finish_generation(conn: Any, st: State) -> None:
    """Forget the previous generation once no vector is left in it. In a write transaction."""
    if st.prev_gen:
        conn.execute("DELETE FROM vec_centroids WHERE gen = ?", (st.prev_gen,))
    conn.execute("UPDATE vec_index SET prev_gen = NULL, prev_token = '' WHERE dim = ? AND kb = ?", (st.dim, st.kb))


def forget_kb(conn: Any, kb: str) -> None:
    """Drop a removed KB's cell index (its vectors go with its entries)."""
    gens = conn.execute("SELECT gen FROM vec_generations WHERE kb = ?", (kb,)).fetchall()
    conn.executemany("DELETE FROM vec_centroids WHERE gen = ?", gens)
    conn.execute("DELETE FROM vec_index WHERE kb = ?", (kb,))
