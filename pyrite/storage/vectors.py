"""Chunk vectors in sqlite-vec: one vec0 table per dimension, each vector tagged with its KB and model."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from pyrite.storage import cells

KNN_MAX = 4096  # sqlite-vec's largest k
SIZES_TTL_S = 30.0  # how long a process trusts its count of rows per cell
CHUNK_SIZE = 128  # vec0 slots per storage chunk: small, so the many cells of a KB waste little space


def table_name(dim: int) -> str:
    """The vec0 table holding vectors of this dimension."""
    return f"vec_cells{int(dim)}"


def ensure_table(conn: Any, dim: int) -> str:
    """Create the vec0 table for `dim` if missing: cosine distance, partitioned by KB and cell, model metadata.

    The model is stored as a small integer (see model_key): sqlite-vec compares a text metadata value
    longer than 12 bytes by looking it up row by row, which made every scanned vector 2-4 times dearer.
    The entry is a metadata column too, not an auxiliary (`+`) one: sqlite-vec 0.1.9 leaks ~140 bytes
    per row inserted into a table with an auxiliary column (a worker grew ~1 KB per entry embedded).
    """
    name = table_name(dim)
    conn.execute(
        f"""CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING vec0(
            id INTEGER PRIMARY KEY,
            kb TEXT PARTITION KEY,
            cell INTEGER PARTITION KEY,
            model_key INTEGER,
            embedding float[{int(dim)}] distance_metric=cosine,
            entry_rowid INTEGER,
            chunk_size={CHUNK_SIZE}
        )"""
    )
    # sqlite-vec finds a partition's storage chunks by scanning its _chunks table, once per cell probed;
    # at 100,000 vectors that scan, not the vectors, was most of a query. An index on the partition
    # columns (kb, cell) makes it a lookup; SQLite keeps it up to date like any index.
    conn.execute(f"CREATE INDEX IF NOT EXISTS {name}_chunks_partition ON {name}_chunks (partition00, partition01)")
    return name


def vec_ids(chunk_id: int, gen: int) -> list[int]:
    """The vec0 rows of one chunk: one per cell it is stored in."""
    return [chunk_id * cells.REPLICAS + r for r in range(1 if gen == 0 else cells.REPLICAS)]


def model_dimension(conn: Any, model: str) -> int | None:
    """The dimension of the vectors stored for `model`, None if it has none (one lookup in chunks_model)."""
    row = conn.execute("SELECT dim FROM chunks WHERE model = ? LIMIT 1", (model,)).fetchone()
    return None if row is None else int(row[0])


def existing_tables(conn: Any) -> list[int]:
    """Dimensions that have a vec0 table."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'vec_cells[0-9]*'")
    dims = []
    for (name,) in rows:
        suffix = name[len("vec_cells"):]
        if suffix.isdigit():
            dims.append(int(suffix))
    return dims


def delete_entries(conn: Any, entry_rowids: Sequence[int]) -> None:
    """Remove every chunk and vector of these entries."""
    for start in range(0, len(entry_rowids), 500):
        part = list(entry_rowids[start:start + 500])
        marks = ",".join("?" * len(part))
        chunks = conn.execute(f"SELECT id, dim, gen FROM chunks WHERE entry_rowid IN ({marks})", part).fetchall()
        for chunk_id, dim, gen in chunks:
            for vec_id in vec_ids(chunk_id, gen):
                conn.execute(f"DELETE FROM {table_name(dim)} WHERE id = ?", (vec_id,))
        if chunks:
            conn.execute(f"DELETE FROM chunks WHERE entry_rowid IN ({marks})", part)


def model_key(conn: Any, model: str, *, create: bool = False) -> int | None:
    """The small integer standing for `model` in vec0 tables; None if it has none (and create is False)."""
    row = conn.execute("SELECT id FROM vec_models WHERE model = ?", (model,)).fetchone()
    if row is not None:
        return int(row[0])
    if not create:
        return None
    return int(conn.execute("INSERT INTO vec_models (model) VALUES (?)", (model,)).lastrowid)


def _insert(conn: Any, name: str, st: cells.State, chunk_ids: list[int], vecs: np.ndarray, kb: str, model: str,
            entry_rowids: list[int]) -> None:
    """Put each chunk's vector into the cells the KB's current generation assigns it."""
    key = model_key(conn, model, create=True)
    placements = cells.assign(conn, st, vecs)
    rows = []
    for chunk_id, vec, placed, entry_rowid in zip(chunk_ids, vecs, placements, entry_rowids):
        blob = vec.tobytes()
        rows.extend((vec_id, kb, cell, key, blob, entry_rowid)
                    for vec_id, cell in zip(vec_ids(chunk_id, st.gen), placed))
    conn.executemany(f"INSERT INTO {name} (id, kb, cell, model_key, embedding, entry_rowid) VALUES (?, ?, ?, ?, ?, ?)",
                     rows)


def _insert_stored(conn: Any, name: str, st: cells.State, rows: Sequence[Any]) -> None:
    """Insert stored chunk rows (id, entry_rowid, model, exact vector) into the KB's current cells."""
    by_model: dict[str, list[Any]] = {}
    for row in rows:
        by_model.setdefault(row[2], []).append(row)
    for model, group in by_model.items():
        vecs = np.frombuffer(b"".join(r[3] for r in group), dtype=np.float32).reshape(len(group), st.dim)
        _insert(conn, name, st, [r[0] for r in group], vecs, st.kb, model, [r[1] for r in group])


def replace(conn: Any, entry_rowid: int, kb: str, model: str, vectors: np.ndarray) -> int:
    """Make `vectors` (one per chunk, already checked) the entry's only vectors; return how many."""
    ensure_table(conn, int(vectors.shape[1]))
    return replace_many(conn, model, [(entry_rowid, kb, vectors)])


def replace_many(conn: Any, model: str, entries: Sequence[tuple[int, str, np.ndarray]]) -> int:
    """For each (entry_rowid, kb, vectors): make those the entry's only vectors. The tables must exist.

    Set-wise, a few statements for the whole batch rather than a few per entry: a worker's batch is mostly this.
    """
    if not entries:
        return 0
    delete_entries(conn, [e[0] for e in entries])
    groups: dict[tuple[int, str], list[tuple[int, np.ndarray]]] = {}
    for entry_rowid, kb, vecs in entries:
        groups.setdefault((int(vecs.shape[1]), kb), []).append((entry_rowid, vecs))
    total = 0
    for (dim, kb), items in groups.items():
        st = cells.ensure_state(conn, dim, kb)
        arr = np.ascontiguousarray(np.concatenate([v for _, v in items]), dtype=np.float32)
        owners = [(entry_rowid, seq) for entry_rowid, vecs in items for seq in range(len(vecs))]
        chunk_ids = _insert_chunks(conn, model, st, owners, arr)
        _insert(conn, table_name(dim), st, chunk_ids, arr, kb, model, [o[0] for o in owners])
        total += len(owners)
    return total


def _insert_chunks(conn: Any, model: str, st: cells.State, owners: list[tuple[int, int]], arr: np.ndarray) -> list[int]:
    """Insert chunk rows for (entry_rowid, seq) pairs with their exact vectors; return their ids, in order."""
    ids: dict[tuple[int, int], int] = {}
    for start in range(0, len(owners), 1000):  # SQLite caps the parameters of one statement
        part = owners[start:start + 1000]
        values = ",".join("(?, ?, ?, ?, ?, ?, ?)" for _ in part)
        params = [v for i, (entry_rowid, seq) in enumerate(part, start)
                  for v in (entry_rowid, seq, model, st.dim, st.kb, st.gen, arr[i].tobytes())]
        for chunk_id, entry_rowid, seq in conn.execute(
                f"INSERT INTO chunks (entry_rowid, seq, model, dim, kb, gen, vector) VALUES {values} "
                "RETURNING id, entry_rowid, seq", params):
            ids[(entry_rowid, seq)] = chunk_id  # RETURNING order is unspecified: map back by key
    return [ids[o] for o in owners]


def move_batch(conn: Any, st: cells.State, limit: int = cells.MOVE_BATCH) -> int:
    """Move up to `limit` chunks of the previous generation into the current one; return how many moved.

    Call in a write transaction; when none are left, the previous generation is forgotten.
    """
    if st.prev_gen is None:
        return 0
    name = table_name(st.dim)
    rows = conn.execute("SELECT id, entry_rowid, model, vector FROM chunks WHERE dim = ? AND kb = ? AND gen = ? "
                        "LIMIT ?", (st.dim, st.kb, st.prev_gen, limit)).fetchall()
    if not rows:
        cells.finish_generation(conn, st)
        return 0
    for chunk_id, *_ in rows:
        for vec_id in vec_ids(chunk_id, st.prev_gen):
            conn.execute(f"DELETE FROM {name} WHERE id = ?", (vec_id,))
    _insert_stored(conn, name, st, rows)
    conn.executemany("UPDATE chunks SET gen = ? WHERE id = ?", [(st.gen, r[0]) for r in rows])
    return len(rows)


def knn(conn: Any, query: np.ndarray, *, model: str, limit: int, kb: str | None = None) -> list[tuple[int, float]]:
    """The `limit` nearest entries as (entry_rowid, cosine distance of their best chunk), nearest first."""
    dim = int(query.shape[-1])
    if dim not in existing_tables(conn):
        return []
    q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(-1))
    # One read transaction: a consistent snapshot even while a worker moves vectors between cells.
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        key = model_key(conn, model)
        found = [cells.state(conn, dim, kb)] if kb is not None else cells.states(conn, dim)
        best: dict[int, float] = {}
        for st in found:
            if st is not None and key is not None:
                best.update(_knn_kb(conn, st, q, model=key, limit=limit))
    finally:
        if own:
            conn.execute("COMMIT")
    return sorted(best.items(), key=lambda item: item[1])[:limit]


def _knn_kb(conn: Any, st: cells.State, q: np.ndarray, *, model: int, limit: int) -> dict[int, float]:
    """One KB's nearest entries: scan its cells nearest to q, more of them until `limit` entries are found.

    Over the cells scanned the answer is exact: a cell whose k nearest chunks are all closer than the
    limit-th entry (many chunks of a few long entries) is asked again with a larger k.
    """
    sql = (f"SELECT entry_rowid, distance FROM {table_name(st.dim)} "
           "WHERE embedding MATCH ? AND k = ? AND kb = ? AND cell = ? AND model_key = ?")
    blob = q.tobytes()
    # A cell's k nearest chunks may belong to fewer than k entries; the crowded-cell pass below asks again.
    k0 = min(KNN_MAX, max(limit, 16))
    sizes = cell_sizes(conn, st) if st.gen else None
    widen = 1
    while True:
        probe, complete = cells.probe(conn, st, q, widen=widen, sizes=sizes)
        best: dict[int, float] = {}
        crowded: dict[int, tuple[int, float]] = {}  # cell -> (k used, distance of its k-th chunk)
        for cell in probe:
            rows = conn.execute(sql, (blob, k0, st.kb, cell, model)).fetchall()
            _merge(best, rows)
            if len(rows) >= k0:
                crowded[cell] = (k0, rows[-1][1])
        while crowded:
            bound = sorted(best.values())[limit - 1] if len(best) >= limit else 2.0
            again = {c: k for c, (k, last) in crowded.items() if last < bound and k < KNN_MAX}
            crowded = {}
            for cell, k in again.items():
                k = min(KNN_MAX, k * 4)
                rows = conn.execute(sql, (blob, k, st.kb, cell, model)).fetchall()
                _merge(best, rows)
                if len(rows) >= k:
                    crowded[cell] = (k, rows[-1][1])
        # Too few entries: the cells scanned hold too few of this KB's or this model's vectors;
        # scan more cells, up to all of them.
        if len(best) >= limit or complete:
            return best
        widen *= 2


_SIZES: dict[tuple[str, str, str], tuple[float, dict[int, int]]] = {}


def cell_sizes(conn: Any, st: cells.State) -> dict[int, int] | None:
    """Rows per cell id of a trained KB (both generations), at most SIZES_TTL_S old; None if unreadable.

    Counted from the validity bitmaps of sqlite-vec's chunks (about 8 ms at 100,000 entries), so deleted
    rows do not count. Only the probe budget uses them: a stale count never hides a vector.
    """
    key = (st.kb, st.token, st.prev_token)
    now = time.monotonic()
    cached = _SIZES.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    try:
        rows = conn.execute(f"SELECT partition01, validity FROM {table_name(st.dim)}_chunks WHERE partition00 = ?",
                            (st.kb,)).fetchall()
    except Exception:  # another sqlite-vec layout: probe a fixed number of cells instead
        return None
    sizes: dict[int, int] = {}
    if rows:
        bits = np.unpackbits(np.frombuffer(b"".join(r[1] for r in rows), dtype=np.uint8).reshape(len(rows), -1),
                             axis=1).sum(axis=1)
        for (cell, _), n in zip(rows, bits.tolist()):
            sizes[cell] = sizes.get(cell, 0) + n
    if len(_SIZES) > 256:
        _SIZES.clear()
    _SIZES[key] = (now + SIZES_TTL_S, sizes)
    return sizes


def _merge(best: dict[int, float], rows: list[Any]) -> None:
    for entry_rowid, distance in rows:
        if distance < best.get(entry_rowid, 2.0):
            best[entry_rowid] = float(distance)


def rebuild_table(conn: Any, dim: int) -> None:
    """Recreate the vec0 table of `dim` from the exact vectors in `chunks`, every KB untrained (one cell).

    For schema changes; the worker trains the cells again. Call in a write transaction.
    """
    conn.execute(f"DROP TABLE IF EXISTS {table_name(dim)}")
    name = ensure_table(conn, dim)
    kbs = [r[0] for r in conn.execute("SELECT DISTINCT kb FROM chunks WHERE dim = ?", (dim,))]
    conn.execute("DELETE FROM vec_centroids WHERE gen IN (SELECT gen FROM vec_index WHERE dim = ?) "
                 "OR gen IN (SELECT prev_gen FROM vec_index WHERE dim = ?)", (dim, dim))
    conn.execute("DELETE FROM vec_index WHERE dim = ?", (dim,))
    conn.execute("UPDATE chunks SET gen = 0 WHERE dim = ?", (dim,))
    for kb in kbs:
        st = cells.ensure_state(conn, dim, kb)
        last = 0
        while True:
            rows = conn.execute("SELECT id, entry_rowid, model, vector FROM chunks WHERE dim = ? AND kb = ? AND id > ? "
                                "ORDER BY id LIMIT 1000", (dim, kb, last)).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            _insert_stored(conn, name, st, rows)


def models(conn: Any, kb: str | None = None, *, other_than: str | None = None) -> dict[str, int]:
    """Entries with vectors, per model (only models other than `other_than`, when given).

    Cheap when nothing is stale: candidate models come from the small vec_models table and each is
    checked through the chunks_model index, never by a scan of chunks (whose rows hold the vectors).
    """
    out: dict[str, int] = {}
    for (model,) in conn.execute("SELECT model FROM vec_models"):
        if model == other_than:
            continue
        if kb is None:
            n = conn.execute("SELECT count(DISTINCT entry_rowid) FROM chunks WHERE model = ?", (model,)).fetchone()[0]
        else:
            n = conn.execute("SELECT count(DISTINCT entry_rowid) FROM chunks WHERE model = ? AND kb = ?",
                             (model, kb)).fetchone()[0]
        if n:
            out[model] = n
    return out
