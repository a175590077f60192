"""The workers table: one heartbeat row per live embedding worker, in any process."""

from __future__ import annotations

import os
import socket
from typing import Any

# A worker whose heartbeat is older than this is taken for dead.
STALE_AFTER_S = 15.0


def register(conn: Any, worker_id: str, *, kind: str, model: str, now: float) -> None:
    """Insert or refresh this worker's row."""
    conn.execute(
        """INSERT INTO workers (id, pid, host, kind, started, heartbeat, model) VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat""",
        (worker_id, os.getpid(), socket.gethostname(), kind, now, now, model),
    )


def beat(conn: Any, worker_id: str, *, now: float, error: str | None = None,
         paused_until: float | None = None) -> None:
    """Record that the worker is alive, and why it is paused if it is."""
    conn.execute("UPDATE workers SET heartbeat = ?, error = ?, paused_until = ? WHERE id = ?",
                 (now, error, paused_until, worker_id))


def unregister(conn: Any, worker_id: str) -> None:
    """Remove the worker's row (it stopped cleanly)."""
    conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))


def live(conn: Any, *, now: float, stale_after: float = STALE_AFTER_S) -> list[dict[str, Any]]:
    """Workers with a fresh heartbeat, oldest first."""
    rows = conn.execute(
        "SELECT id, pid, host, kind, started, heartbeat, model, error, paused_until FROM workers "
        "WHERE heartbeat >= ? ORDER BY started",
        (now - stale_after,),
    ).fetchall()
    here = socket.gethostname()
    return [
        {"id": r[0], "pid": r[1], "host": r[2], "kind": r[3], "started": r[4],
         "heartbeat_age_s": round(now - r[5], 1), "model": r[6],
         "paused_for_s": round(r[8] - now, 1) if r[8] and r[8] > now else 0.0, "error": r[7]}
        for r in rows
        # A fresh heartbeat from a process of this machine that no longer exists (kill -9) is no proof of life.
        if r[2] != here or _pid_alive(r[1])
    ]


def _pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def prune(conn: Any, *, now: float, stale_after: float = STALE_AFTER_S) -> int:
    """Forget workers dead for a long while (ten times the stale threshold)."""
    return conn.execute("DELETE FROM workers WHERE heartbeat < ?", (now - 10 * stale_after,)).rowcount
