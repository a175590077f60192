"""How the embedding pipeline stands: queue counts, workers, throughput and the error worth showing (reads only)."""

from __future__ import annotations

import time
from typing import Any

from pyrite.services.provider import Provider
from pyrite.services.vector_index import VectorIndex
from pyrite.storage import events, queue, vectors, workers
from pyrite.storage.db import Database


def status(db: Database, provider: Provider, index: VectorIndex, kb: str | None = None, *,
           now: float | None = None) -> dict[str, Any]:
    """Counts per status, oldest pending age, live workers, throughput, last error, model."""
    t = time.time() if now is None else now
    conn = db.conn
    oldest = queue.oldest_pending(conn, kb)
    counts = queue.counts(conn, kb)
    error, error_at = last_error(db, kb)
    success_at = events.last_completion(conn)
    recovered = error is not None and success_at is not None and error_at is not None and error_at < success_at
    if recovered and not counts.get("failed"):
        error = error_at = None  # the provider works again and nothing is left failed: nothing to show
    live = workers.live(conn, now=t)
    paused_worker = next((w for w in live if w["paused_for_s"] and w["error"]), None)
    model = provider.model_id
    return {
        "kb": kb,
        "counts": counts,
        "oldest_pending_age_s": None if oldest is None else round(max(0.0, t - oldest), 1),
        "workers": live,
        "throughput_per_min": events.completions_since(conn, t - 60.0),
        "last_error": error,
        "last_error_at": error_at,
        # True when embeddings succeeded after last_error (it explains the entries still failed).
        "last_error_before_success": bool(error) and recovered,
        "last_success_at": success_at,
        "provider_error": paused_worker["error"] if paused_worker else queue.provider_error(conn),
        "model": model or None,
        "stale_models": vectors.models(conn, kb, other_than=model) if db.vec_available else {},
        "index": [i for i in index.status() if kb is None or i["kb"] == kb],
        "enabled": provider.enabled,
        "disabled_reason": provider.why_disabled(),
    }


def last_error(db: Database, kb: str | None = None) -> tuple[str | None, float | None]:
    """The newest embedding error (failure event, else failed row) and when it happened."""
    last = events.last_error(db.conn)
    if last and last["error"]:
        return last["error"], last["time"]
    return queue.last_failure(db.conn, kb)
