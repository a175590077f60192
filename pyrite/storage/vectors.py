"""Chunk vectors in sqlite-vec: one vec0 table per dimension, each vector tagged with its KB and model."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pyrite.errors import EmbeddingError

KNN_MAX = 4096  # sqlite-vec's largest k


def table_name(dim: int) -> str:
    """The vec0 table holding vectors of this dimension."""
    return f"vec_f{int(dim)}"


def ensure_table(conn: Any, dim: int) -> str:
    """Create the vec0 table for `dim` if missing (cosine distance, KB partition, model metadata)."""
    name = table_name(dim)
    conn.execute(
        f"""CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING vec0(
            id INTEGER PRIMARY KEY,
            kb TEXT PARTITION KEY,
            model TEXT,
            embedding float[{int(dim)}] distance_metric=cosine,
            +entry_rowid INTEGER
        )"""
    )
    return name


def check_vectors(vectors: Any, *, count: int, dim: int | None = None) -> np.ndarray:
    """Return vectors as a C-contiguous float32 (count, dim) array, or raise if the shape or values are wrong."""
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(f"embedder returned non-numeric vectors: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] != count:
        raise EmbeddingError(f"embedder returned {arr.shape[0] if arr.ndim else 0} vectors for {count} inputs")
    if arr.shape[1] < 1 or (dim is not None and arr.shape[1] != dim):
        raise EmbeddingError(f"embedder returned vectors of dimension {arr.shape[1]}, expected {dim}")
    if not np.isfinite(arr).all():
        raise EmbeddingError("embedder returned NaN or infinite values", per_input=True)
    if (np.abs(arr).sum(axis=1) == 0).any():
        raise EmbeddingError("embedder returned an all-zero vector", per_input=True)
    return np.ascontiguousarray(arr)


def existing_tables(conn: Any) -> list[int]:
    """Dimensions that have a vec0 table."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'vec_f[0-9]*'")
    dims = []
    for (name,) in rows:
        suffix = name[len("vec_f"):]
        if suffix.isdigit():
            dims.append(int(suffix))
    return dims


def delete_entries(conn: Any, entry_rowids: Sequence[int]) -> None:
    """Remove every chunk and vector of these entries."""
    for rowid in entry_rowids:
        chunks = conn.execute("SELECT id, dim FROM chunks WHERE entry_rowid = ?", (rowid,)).fetchall()
        for chunk_id, dim in chunks:
            conn.execute(f"DELETE FROM {table_name(dim)} WHERE id = ?", (chunk_id,))
        if chunks:
            conn.execute("DELETE FROM chunks WHERE entry_rowid = ?", (rowid,))


def replace(conn: Any, entry_rowid: int, kb: str, model: str, vectors: np.ndarray, *, ensure: bool = True) -> int:
    """Make `vectors` (one per chunk, already checked) the entry's only vectors; return how many.

    ensure=False skips creating the table, for callers that did it once for a whole batch.
    """
    delete_entries(conn, [entry_rowid])
    dim = int(vectors.shape[1])
    name = ensure_table(conn, dim) if ensure else table_name(dim)
    for seq, vec in enumerate(vectors):
        cur = conn.execute(
            "INSERT INTO chunks (entry_rowid, seq, model, dim) VALUES (?, ?, ?, ?)",
            (entry_rowid, seq, model, dim),
        )
        conn.execute(
            f"INSERT INTO {name} (id, kb, model, embedding, entry_rowid) VALUES (?, ?, ?, ?, ?)",
            (cur.lastrowid, kb, model, vec.astype(np.float32).tobytes(), entry_rowid),
        )
    return len(vectors)


def knn(conn: Any, query: np.ndarray, *, model: str, limit: int, kb: str | None = None) -> list[tuple[int, float]]:
    """The `limit` nearest entries as (entry_rowid, cosine distance of their best chunk), nearest first."""
    dim = int(query.shape[-1])
    if dim not in existing_tables(conn):
        return []
    blob = np.asarray(query, dtype=np.float32).reshape(-1).tobytes()
    where = "embedding MATCH ? AND k = ? AND model = ?"
    base_params: list[Any] = [blob, 0, model]
    if kb is not None:
        where += " AND kb = ?"
        base_params.append(kb)
    k = min(KNN_MAX, max(limit * 4, 16))
    while True:
        params = list(base_params)
        params[1] = k
        rows = conn.execute(
            f"SELECT entry_rowid, distance FROM {table_name(dim)} WHERE {where} ORDER BY distance", params
        ).fetchall()
        best: dict[int, float] = {}
        for entry_rowid, distance in rows:
            if entry_rowid not in best:
                best[entry_rowid] = float(distance)
        # Many chunks of one entry can crowd out others: widen k until `limit` entries or the end.
        if len(best) >= limit or len(rows) < k or k >= KNN_MAX:
            break
        k = min(KNN_MAX, k * 4)
    return sorted(best.items(), key=lambda item: item[1])[:limit]


def models(conn: Any, kb: str | None = None) -> dict[str, int]:
    """Entries with vectors, per model."""
    sql = "SELECT c.model, count(DISTINCT c.entry_rowid) FROM chunks c"
    if kb is None:
        rows = conn.execute(sql + " GROUP BY c.model")
    else:
        rows = conn.execute(sql + " JOIN entries e ON e.rowid = c.entry_rowid WHERE e.kb = ? GROUP BY c.model", (kb,))
    return {model: n for model, n in rows}
