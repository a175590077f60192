"""The embed_queue contract: every state change of an entry's embedding, written once.

Each function runs inside the caller's transaction (`Database.write()`); a claim
should be a short transaction of its own, or ride in the one that records a batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from pyrite.models import EMBED_STATUSES
from pyrite.storage import events

# Statuses whose work is already in hand or finished for an unchanged text.
_KEEP_IF_SAME_HASH = ("pending", "processing", "skipped")


@dataclass(frozen=True)
class Claim:
    """One queue row reserved by a worker: what to embed and the guard for completing it."""

    entry_rowid: int
    kb: str
    content_hash: str
    attempts: int
    owner: str


def upsert(conn: Any, entry_rowid: int, kb: str, content_hash: str, *, blank: bool, model: str, now: float) -> str:
    """Record that an entry's text is content_hash; return the resulting status.

    Unchanged text already embedded with `model`, or already in hand, queues
    nothing. A changed text supersedes any pending or in-flight work: the
    lease is dropped, so a late completion of the older text is discarded.
    """
    row = conn.execute(
        "SELECT content_hash, status, model FROM embed_queue WHERE entry_rowid = ?", (entry_rowid,)
    ).fetchone()
    if row is not None and row[0] == content_hash:
        if row[1] in _KEEP_IF_SAME_HASH or (row[1] == "done" and row[2] == model):
            return row[1]
    status = "skipped" if blank else "pending"
    conn.execute(
        """
        INSERT INTO embed_queue (entry_rowid, kb, content_hash, status, attempts, error, model,
                                 queued_at, run_after, lease_owner, lease_expires_at, updated_at)
        VALUES (?, ?, ?, ?, 0, NULL, NULL, ?, ?, NULL, NULL, ?)
        ON CONFLICT (entry_rowid) DO UPDATE SET
            kb = excluded.kb, content_hash = excluded.content_hash, status = excluded.status,
            attempts = 0, error = NULL, model = NULL, queued_at = excluded.queued_at,
            run_after = excluded.run_after, lease_owner = NULL, lease_expires_at = NULL,
            updated_at = excluded.updated_at
        """,
        (entry_rowid, kb, content_hash, status, now, now, now),
    )
    return status


def claim(
    conn: Any,
    owner: str,
    *,
    limit: int,
    lease: float,
    now: float,
    kb: str | None = None,
    rowids: Sequence[int] | None = None,
    max_attempts: int | None = None,
) -> list[Claim]:
    """Reserve up to `limit` due items (pending and due, or processing with an expired lease), in the caller's transaction.

    The attempt is counted here, so an item that kills its worker every time
    still ends as failed: an expired lease on an item out of attempts is
    failed (with an embed_failed event) instead of claimed again. `rowids`
    restricts the claim to those entries. A worker claims its next batch this
    way inside the transaction that records the last one.
    """
    extra = ""
    params: dict[str, Any] = {"owner": owner, "expires": now + lease, "now": now, "limit": limit}
    if kb is not None:
        extra += " AND kb = :kb"
        params["kb"] = kb
    if rowids is not None:
        ids = [int(r) for r in rowids]
        if not ids:
            return []
        extra += f" AND entry_rowid IN ({','.join(str(i) for i in ids)})"
    # Two index-backed halves (the partial indexes on pending and on leases),
    # so a claim costs the same at 100 or 100,000 queued items.
    sql = f"""
        UPDATE embed_queue
        SET status = 'processing', lease_owner = :owner, lease_expires_at = :expires,
            attempts = attempts + 1, updated_at = :now
        WHERE entry_rowid IN (
            SELECT entry_rowid FROM (
                SELECT entry_rowid, queued_at FROM embed_queue
                WHERE status = 'processing' AND lease_expires_at <= :now{extra}
                UNION ALL
                SELECT * FROM (
                    SELECT entry_rowid, queued_at FROM embed_queue
                    WHERE status = 'pending' AND run_after <= :now{extra}
                    ORDER BY queued_at LIMIT :limit)
            ) ORDER BY queued_at LIMIT :limit
        )
        RETURNING entry_rowid, kb, content_hash, attempts
    """
    if max_attempts is not None:
        _fail_crashed(conn, now=now, max_attempts=max_attempts, extra=extra, params=params)
    rows = conn.execute(sql, params).fetchall()
    return [Claim(r[0], r[1], r[2], r[3], owner) for r in rows]


def _fail_crashed(conn: Any, *, now: float, max_attempts: int, extra: str, params: dict[str, Any]) -> None:
    """Fail items whose lease expired on their last attempt: their worker died every time."""
    error = f"the worker stopped or crashed while embedding it, {max_attempts} times"
    rows = conn.execute(
        f"""UPDATE embed_queue SET status = 'failed', error = coalesce(error, :error), lease_owner = NULL,
            lease_expires_at = NULL, updated_at = :now
            WHERE status = 'processing' AND lease_expires_at <= :now AND attempts >= :max_attempts{extra}
            RETURNING entry_rowid, kb, coalesce(error, :error)""",
        {**params, "error": error, "max_attempts": max_attempts},
    ).fetchall()
    events.append_for_entries(conn, "embed_failed", rows, now=now)


_GUARD = "entry_rowid = ? AND status = 'processing' AND lease_owner = ? AND content_hash = ?"


def complete(conn: Any, item: Claim, *, model: str, now: float) -> bool:
    """Mark item done if it is still ours and its text unchanged; False means discard the result."""
    return item.entry_rowid in complete_many(conn, [item], model=model, now=now)


def complete_many(conn: Any, items: Sequence[Claim], *, model: str, now: float) -> set[int]:
    """Mark every item done that is still ours with its text unchanged (one statement); return their rowids."""
    if not items:
        return set()
    # One UPDATE for the batch: per-statement overhead, not the rows, is what a batch of ten pays for.
    values = ",".join("(?, ?, ?)" for _ in items)
    params: list[Any] = []
    for item in items:
        params += [item.entry_rowid, item.owner, item.content_hash]
    params += [model, now]  # placeholders number in text order: the VALUES come first
    rows = conn.execute(
        f"""WITH mine(rowid_, owner_, hash_) AS (VALUES {values})
            UPDATE embed_queue SET status = 'done', model = ?, error = NULL, lease_owner = NULL,
            lease_expires_at = NULL, updated_at = ?
            FROM mine WHERE entry_rowid = mine.rowid_ AND status = 'processing'
            AND lease_owner = mine.owner_ AND content_hash = mine.hash_
            RETURNING entry_rowid""", params).fetchall()
    return {r[0] for r in rows}


def skip(conn: Any, item: Claim, *, now: float) -> bool:
    """Mark item skipped (nothing to embed) if it is still ours."""
    cur = conn.execute(
        f"""UPDATE embed_queue SET status = 'skipped', error = NULL, lease_owner = NULL,
            lease_expires_at = NULL, updated_at = ? WHERE {_GUARD}""",
        (now, item.entry_rowid, item.owner, item.content_hash),
    )
    return cur.rowcount == 1


def backoff(attempts: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the given number of failed attempts: base*2^(n-1), capped, jittered into [d/2, d]."""
    exponent = min(max(attempts, 1) - 1, 62)
    delay = min(cap, base * (2.0 ** exponent))
    return delay * (0.5 + 0.5 * (rng or random).random())


def fail(conn: Any, item: Claim, error: str, *, max_attempts: int, retry_at: float, now: float) -> str | None:
    """Record a failed attempt: pending again at retry_at while attempts remain, else failed.

    Return the new status, or None if the item is no longer ours.
    """
    status = "failed" if item.attempts >= max_attempts else "pending"
    cur = conn.execute(
        f"""UPDATE embed_queue SET status = ?, error = ?, run_after = ?, lease_owner = NULL,
            lease_expires_at = NULL, updated_at = ? WHERE {_GUARD}""",
        (status, error[:2000], retry_at, now, item.entry_rowid, item.owner, item.content_hash),
    )
    return status if cur.rowcount == 1 else None


def release(conn: Any, items: Iterable[Claim], *, now: float, run_after: float | None = None, error: str | None = None) -> int:
    """Give claimed items back untouched: pending again, their attempt returned. Return how many."""
    count = 0
    for item in items:
        cur = conn.execute(
            f"""UPDATE embed_queue SET status = 'pending', attempts = max(attempts - 1, 0),
                lease_owner = NULL, lease_expires_at = NULL, run_after = ?, updated_at = ?,
                error = coalesce(?, error) WHERE {_GUARD}""",
            (run_after if run_after is not None else now, now, error,
             item.entry_rowid, item.owner, item.content_hash),
        )
        count += cur.rowcount
    return count


def renew(conn: Any, owner: str, *, lease: float, now: float) -> int:
    """Extend every lease owner holds; return how many."""
    cur = conn.execute(
        "UPDATE embed_queue SET lease_expires_at = ? WHERE status = 'processing' AND lease_owner = ?",
        (now + lease, owner),
    )
    return cur.rowcount


def delete(conn: Any, entry_rowids: Sequence[int]) -> None:
    """Drop the queue rows of deleted entries."""
    conn.executemany("DELETE FROM embed_queue WHERE entry_rowid = ?", [(r,) for r in entry_rowids])


def delete_kb(conn: Any, kb: str) -> None:
    """Drop every queue row of a removed KB."""
    conn.execute("DELETE FROM embed_queue WHERE kb = ?", (kb,))


def held_by(conn: Any, owner: str) -> list[Claim]:
    """The items owner holds (processing under its lease), as claims it can release."""
    rows = conn.execute("SELECT entry_rowid, kb, content_hash, attempts FROM embed_queue "
                        "WHERE status = 'processing' AND lease_owner = ?", (owner,)).fetchall()
    return [Claim(r[0], r[1], r[2], r[3], owner) for r in rows]


def unqueued(conn: Any, kb: str | None = None, *, limit: int = 500) -> list[tuple[int, str, str, str]]:
    """(rowid, kb, title, body) of up to limit entries with no queue row (indexed while embedding was off)."""
    where, params = _of_kb(kb, "e.kb")
    return conn.execute("SELECT e.rowid, e.kb, e.title, e.body FROM entries e LEFT JOIN embed_queue q "
                        f"ON q.entry_rowid = e.rowid WHERE q.entry_rowid IS NULL{where} LIMIT ?",
                        [*params, int(limit)]).fetchall()


def states(conn: Any, entry_rowids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """rowid -> (status, error) of these entries' queue rows (entries without one are left out)."""
    ids = [int(r) for r in entry_rowids]
    out: dict[int, tuple[str, str | None]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        rows = conn.execute("SELECT entry_rowid, status, error FROM embed_queue WHERE entry_rowid IN "
                            f"({','.join('?' * len(chunk))})", chunk)
        out.update({r[0]: (r[1], r[2]) for r in rows})
    return out


def due(conn: Any, *, now: float, kb: str | None = None) -> float | None:
    """When the next item can be claimed (<= now: at once), or None when nothing is queued (a read, no lock).

    Both halves read a partial index, so an idle worker can ask this often for the price of a read instead
    of a write transaction per poll.
    """
    extra, params = _of_kb(kb)
    when = conn.execute(
        f"SELECT min(t) FROM (SELECT min(run_after) AS t FROM embed_queue WHERE status = 'pending'{extra} "
        f"UNION ALL SELECT min(lease_expires_at) FROM embed_queue WHERE status = 'processing'{extra})",
        params * 2).fetchone()[0]
    return None if when is None else float(when)


def oldest_pending(conn: Any, kb: str | None = None) -> float | None:
    """When the oldest pending item was queued, or None."""
    where, params = _of_kb(kb)
    return conn.execute(f"SELECT min(queued_at) FROM embed_queue WHERE status = 'pending'{where}", params).fetchone()[0]


def provider_error(conn: Any) -> str | None:
    """The error of the newest item handed back untouched (a paused or misconfigured provider), or None."""
    row = conn.execute("SELECT error FROM embed_queue WHERE status = 'pending' AND error IS NOT NULL "
                       "AND attempts = 0 ORDER BY updated_at DESC LIMIT 1").fetchone()
    return row[0] if row else None


def last_failure(conn: Any, kb: str | None = None) -> tuple[str | None, float | None]:
    """(error, when) of the newest failed item, or (None, None)."""
    where, params = _of_kb(kb)
    row = conn.execute(f"SELECT error, updated_at FROM embed_queue WHERE status = 'failed'{where} "
                       "ORDER BY updated_at DESC LIMIT 1", params).fetchone()
    return (row[0], row[1]) if row else (None, None)


def failed_entries(conn: Any, kb: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
    """Failed entries with their error and attempts, newest first."""
    where, params = _of_kb(kb, "q.kb")
    rows = conn.execute("SELECT e.kb, e.id, e.title, q.error, q.attempts, q.updated_at FROM embed_queue q "
                        f"JOIN entries e ON e.rowid = q.entry_rowid WHERE q.status = 'failed'{where} "
                        "ORDER BY q.updated_at DESC LIMIT ?", [*params, int(limit)])
    return [{"kb": r[0], "id": r[1], "title": r[2], "error": r[3], "attempts": r[4], "failed_at": r[5]}
            for r in rows]


def requeue(
    conn: Any,
    *,
    now: float,
    kb: str | None = None,
    statuses: Sequence[str] = ("failed",),
    limit: int | None = None,
) -> int:
    """Set rows of the given statuses back to pending with fresh attempts; return how many."""
    bad = [s for s in statuses if s not in EMBED_STATUSES]
    if bad:
        raise ValueError(f"unknown status {bad[0]!r}")
    return _set_pending(conn, f"status IN ({','.join('?' for _ in statuses)})", list(statuses),
                        now=now, kb=kb, limit=limit)


def requeue_missing(conn: Any, *, model: str, now: float, kb: str | None = None, limit: int | None = None) -> int:
    """Queue entries whose work is done, but not with `model` (their vectors are of another model)."""
    return _set_pending(conn, "status = 'done' AND (model IS NULL OR model != ?)", [model],
                        now=now, kb=kb, limit=limit)


def _set_pending(conn: Any, condition: str, params: list[Any], *, now: float, kb: str | None,
                 limit: int | None) -> int:
    """Reset the rows matching condition (oldest first, at most limit) to pending with fresh attempts."""
    if kb is not None:
        condition += " AND kb = ?"
        params = [*params, kb]
    sub = f"SELECT entry_rowid FROM embed_queue WHERE {condition} ORDER BY queued_at"
    if limit is not None:
        sub += f" LIMIT {int(limit)}"
    cur = conn.execute(
        f"""UPDATE embed_queue SET status = 'pending', attempts = 0, error = NULL, run_after = ?,
            queued_at = ?, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
            WHERE entry_rowid IN ({sub})""",
        [now, now, now, *params],
    )
    return cur.rowcount


def _of_kb(kb: str | None, column: str = "kb") -> tuple[str, list[Any]]:
    """The " AND column = ?" clause and its parameters that keep a statement to one KB (none for all KBs)."""
    return ("", []) if kb is None else (f" AND {column} = ?", [kb])


def counts(conn: Any, kb: str | None = None) -> dict[str, int]:
    """Rows per status (all five statuses, zeros included)."""
    out = {s: 0 for s in EMBED_STATUSES}
    if kb is None:
        rows = conn.execute("SELECT status, count(*) FROM embed_queue GROUP BY status")
    else:
        rows = conn.execute("SELECT status, count(*) FROM embed_queue WHERE kb = ? GROUP BY status", (kb,))
    for status, n in rows:
        out[status] = n
    return out


def outstanding(conn: Any, kb: str | None = None) -> int:
    """Items not yet finished (pending or processing)."""
    # One count per status, so each reads only its partial index, never the whole queue.
    extra, params = _of_kb(kb)
    return conn.execute(
        f"SELECT (SELECT count(*) FROM embed_queue WHERE status = 'pending'{extra}) + "
        f"(SELECT count(*) FROM embed_queue WHERE status = 'processing'{extra})", params * 2).fetchone()[0]
