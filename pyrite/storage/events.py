"""The events table: an append-only log with monotonic ids that front ends tail."""

from __future__ import annotations

from typing import Any

EVENT_TYPES = ("entry_created", "entry_updated", "entry_deleted", "entry_moved", "embed_complete", "embed_failed")
RETENTION_S = 7 * 24 * 3600.0


def append(conn: Any, type: str, *, kb: str | None, entry_id: str | None, now: float,
           model: str | None = None, error: str | None = None, old_id: str | None = None) -> int:
    """Append one event inside the caller's transaction (old_id: a move's former id); return its id."""
    cur = conn.execute(
        "INSERT INTO events (type, kb, entry_id, model, error, created, old_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (type, kb, entry_id, model, error, now, old_id),
    )
    return int(cur.lastrowid)


def append_many(conn: Any, type: str, rows: list[tuple[str, str]], *, now: float, model: str | None = None) -> None:
    """Append one event per (kb, entry_id) inside the caller's transaction, in order."""
    conn.executemany(
        "INSERT INTO events (type, kb, entry_id, model, error, created) VALUES (?, ?, ?, ?, NULL, ?)",
        [(type, kb, entry_id, model, now) for kb, entry_id in rows],
    )


def append_for_entries(conn: Any, type: str, rows: list[tuple[int, str, str | None]], *, now: float) -> None:
    """Append one event per (entry rowid, kb, error) inside the caller's transaction, naming each entry by its id."""
    conn.executemany(
        "INSERT INTO events (type, kb, entry_id, model, error, created) "
        "SELECT ?, ?, id, NULL, ?, ? FROM entries WHERE rowid = ?",
        [(type, kb, error, now, rowid) for rowid, kb, error in rows],
    )


def since(conn: Any, after_id: int, *, limit: int = 500) -> list[dict[str, Any]]:
    """Events with id > after_id, oldest first, as JSON-ready dicts (a move's also with old_id)."""
    rows = conn.execute(
        "SELECT id, type, kb, entry_id, model, error, created, old_id FROM events WHERE id > ? ORDER BY id LIMIT ?",
        (after_id, limit),
    ).fetchall()
    out = []
    for r in rows:
        event = {"id": r[0], "type": r[1], "kb": r[2], "entry_id": r[3], "model": r[4], "error": r[5], "time": r[6]}
        if r[7] is not None:
            event["old_id"] = r[7]
        out.append(event)
    return out


def last_id(conn: Any) -> int:
    """The newest event id, 0 when there is none."""
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])


def prune(conn: Any, *, now: float, retention: float = RETENTION_S) -> int:
    """Delete events older than retention seconds (the newest is always kept); return how many."""
    cur = conn.execute(
        "DELETE FROM events WHERE created < ? AND id < (SELECT max(id) FROM events)", (now - retention,)
    )
    return cur.rowcount


def completions_since(conn: Any, t: float) -> int:
    """embed_complete events newer than time t (for throughput)."""
    return int(conn.execute(
        "SELECT count(*) FROM events WHERE type = 'embed_complete' AND created >= ?", (t,)
    ).fetchone()[0])


def last_error(conn: Any) -> dict[str, Any] | None:
    """The newest embed_failed event, or None."""
    row = conn.execute(
        "SELECT id, kb, entry_id, error, created FROM events WHERE type = 'embed_failed' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return {"id": row[0], "kb": row[1], "entry_id": row[2], "error": row[3], "time": row[4]}


def last_completion(conn: Any) -> float | None:
    """When the newest embed_complete event happened, or None."""
    row = conn.execute("SELECT created FROM events WHERE type = 'embed_complete' ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else float(row[0])
