"""The embed queue's one owner above storage: every transition of an entry's embedding goes through here."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from typing import Any, Callable, Sequence

from pyrite.models import embed_text, text_hash
from pyrite.services import embed_status
from pyrite.services.batches import BatchProcessor, BatchResult, claim_batch
from pyrite.services.provider import Provider
from pyrite.services.vector_index import VectorIndex
from pyrite.storage import cells, events, queue, vectors, workers
from pyrite.storage.db import Database
from pyrite.storage.queue import Claim

log = logging.getLogger("pyrite.embedding")

__all__ = ["BatchResult", "EmbeddingService", "new_owner"]


def new_owner(kind: str) -> str:
    """A unique lease owner / worker id."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


class EmbeddingService:
    """Queues entries' texts as they are written, hands batches to workers and answers how the queue stands.

    The writes' hooks (KBService calls them inside its transactions), the claims, releases and leases
    of workers, requeues and the wait for a KB to be embedded. What a claimed batch comes to is
    recorded by `batches` (BatchProcessor); the embedder is `provider`'s.
    """

    def __init__(self, db: Database, provider: Provider, rng: random.Random | None = None) -> None:
        self.db = db
        self.provider = provider
        self.batches = BatchProcessor(db, provider, rng)
        self.index = VectorIndex(db, lambda: provider.settings.vector_index_min)
        # The in-process worker that embeds this process's writes (attach_worker), woken after each commit.
        self._wake: Callable[[], None] | None = None
        self._wake_lock = threading.Lock()
        self._checkpointed_by_commits = db.autocheckpoint

    # -- the in-process worker -------------------------------------------------------

    def attach_worker(self, wake: Callable[[], None]) -> None:
        """From now on this process's writes only queue and call wake (thread-safe) instead of embedding here.

        The worker checkpoints the WAL between its batches, so this process's commits stop doing it.
        """
        with self._wake_lock:
            if self._wake is None:
                self._checkpointed_by_commits = self.db.autocheckpoint
            self._wake = wake
            self.db.set_autocheckpoint(False)

    def detach_worker(self, wake: Callable[[], None]) -> None:
        """Undo attach_worker(wake); writes embed here again when no other worker lives."""
        with self._wake_lock:
            if self._wake == wake:  # bound methods are made anew on each access: compare, not identity
                self._wake = None
                self.db.set_autocheckpoint(self._checkpointed_by_commits)

    @property
    def has_worker(self) -> bool:
        """True while a worker of this process is attached."""
        return self._wake is not None

    def register_worker(self, worker_id: str, *, kind: str) -> None:
        """Record a worker as alive (its heartbeat row), so writes of other processes leave their work to it."""
        with self.db.write() as conn:
            workers.register(conn, worker_id, kind=kind, model=self.provider.model_id, now=time.time())

    def heartbeat(self, worker_id: str, *, error: str | None, paused_until: float | None,
                  now: float | None = None) -> None:
        """The worker lives: its heartbeat, and the leases of everything it holds extended, in one transaction."""
        t = _now(now)
        with self.db.write() as conn:
            workers.beat(conn, worker_id, now=t, error=error, paused_until=paused_until)
            queue.renew(conn, worker_id, lease=self.provider.settings.embed_lease, now=t)

    def unregister_worker(self, worker_id: str) -> int:
        """The worker stops: its row goes, then everything it still holds is given back; return how many."""
        # Unregister first, then release: a writer that saw the worker alive has already committed.
        with self.db.write() as conn:
            workers.unregister(conn, worker_id)
        return self.release_owner(worker_id)

    def prune(self, *, now: float | None = None) -> None:
        """Forget old events and long-dead workers (a worker's upkeep, every half minute or so)."""
        t = _now(now)
        with self.db.write() as conn:
            events.prune(conn, now=t)
            workers.prune(conn, now=t)

    def live_workers(self, now: float | None = None) -> list[dict[str, Any]]:
        """Workers, in any process, whose heartbeat is fresh."""
        return workers.live(self.db.conn, now=_now(now))

    # -- the write path's hooks (inside KBService's transactions) --------------------------

    def queue_entry(self, conn: Any, rowid: int, kb: str, title: str, body: str, *, now: float) -> None:
        """The entry's text is now title+body: queue it, unless that text is already embedded or in hand."""
        if not self.provider.enabled:
            return
        status = queue.upsert(conn, rowid, kb, text_hash(title, body), blank=not embed_text(title, body),
                              model=self.provider.model_id, now=now)
        if status == "skipped":
            vectors.delete_entries(conn, [rowid])  # nothing to embed any more: old vectors would mislead

    def forget(self, conn: Any, rowids: Sequence[int]) -> None:
        """Drop the queue rows and vectors of deleted entries."""
        vectors.delete_entries(conn, rowids)
        queue.delete(conn, rowids)

    def forget_kb(self, conn: Any, kb: str) -> None:
        """Drop the queue rows and the cell index of a removed KB."""
        cells.forget_kb(conn, kb)
        queue.delete_kb(conn, kb)

    def must_embed_here(self, conn: Any) -> bool:
        """Inside a write's transaction: True if no worker, in this process or any other, will embed it."""
        return self.provider.enabled and self._wake is None and not workers.live(conn, now=time.time())

    def after_write(self, rowids: Sequence[int], embed_here: bool) -> bool:
        """After a committed write: wake the in-process worker, or embed now (embed_here); True if it embedded."""
        if not rowids or not self.provider.enabled:
            return False
        wake = self._wake
        if wake is not None:
            wake()
            return False
        if not embed_here:
            return False
        try:
            self.embed_rowids(rowids)
        except Exception as exc:
            # The write stands; the entry stays pending with the error, shown by status and the CLI.
            log.warning("could not embed now: %s", self.provider.redact(str(exc)))
        return True

    def embed_rowids(self, rowids: Sequence[int], now: float | None = None) -> BatchResult:
        """Embed these entries now, in this thread (the synchronous fallback)."""
        owner = new_owner("sync")
        total = BatchResult()
        ids = list(rowids)
        size = self.provider.settings.embed_batch_size
        for start in range(0, len(ids), size):
            with self.db.write() as conn:
                items = claim_batch(conn, self.provider.settings, owner, now=_now(now), rowids=ids[start:start + size])
            total.add(self.batches.process(items, now=now))
        return total

    # -- claims ----------------------------------------------------------------------------

    def claim(self, owner: str, *, now: float | None = None, kb: str | None = None) -> list[Claim]:
        """Claim the next due batch for owner; nothing due costs a read, not a write transaction."""
        t = _now(now)
        due = queue.due(self.db.conn, now=t, kb=kb)
        if due is None or due > t:
            return []
        with self.db.write() as conn:
            return claim_batch(conn, self.provider.settings, owner, now=t, kb=kb)

    def next_due(self, kb: str | None = None) -> float | None:
        """When the next item can be claimed (in the past: now), or None when nothing is queued."""
        return queue.due(self.db.conn, now=time.time(), kb=kb)

    def release(self, items: Sequence[Claim], *, now: float | None = None) -> int:
        """Give items back untouched (their attempt returned), e.g. on shutdown."""
        with self.db.write() as conn:
            return queue.release(conn, items, now=_now(now))

    def release_owner(self, owner: str, *, now: float | None = None) -> int:
        """Give back everything owner still holds."""
        with self.db.write() as conn:
            return queue.release(conn, queue.held_by(conn, owner), now=_now(now))

    # -- maintenance and waiting ---------------------------------------------------------

    def enqueue_missing(self, kb: str | None = None, *, now: float | None = None) -> int:
        """Queue entries that have no queue row (indexed while embedding was off); return how many."""
        if not self.provider.enabled:
            return 0
        t = _now(now)
        count = 0
        while True:
            rows = queue.unqueued(self.db.conn, kb, limit=500)
            if not rows:
                return count
            with self.db.write() as conn:
                for rowid, entry_kb, title, body in rows:
                    self.queue_entry(conn, rowid, entry_kb, title, body, now=t)
                    count += 1

    def requeue(self, *, kb: str | None = None, statuses: Sequence[str] = ("failed",),
                only_missing: bool = False, limit: int | None = None, now: float | None = None) -> int:
        """Put entries back to pending: the given statuses, or (only_missing) those without current vectors.

        Entries indexed while embedding was off get their queue row either way.
        """
        t = _now(now)
        count = self.enqueue_missing(kb, now=t)
        with self.db.write() as conn:
            if only_missing:
                count += queue.requeue_missing(conn, model=self.provider.model_id, now=t, kb=kb, limit=limit)
            else:
                count += queue.requeue(conn, now=t, kb=kb, statuses=statuses, limit=limit)
        return count

    def wait_for(self, kb: str | None = None, *, timeout: float) -> int:
        """Wait up to timeout seconds until kb has nothing pending (embedding here if no worker runs); return what is left."""
        if not self.provider.enabled:
            return 0
        deadline = time.monotonic() + timeout
        owner = new_owner("wait")
        while True:
            left = self.outstanding(kb)
            if left == 0 or time.monotonic() >= deadline:
                return left
            if self._wake is None and not self.live_workers():
                items = self.claim(owner, kb=kb)
                if items:
                    self.batches.process(items)
                    continue
            time.sleep(0.05)

    # -- reporting ----------------------------------------------------------------------------

    def outstanding(self, kb: str | None = None) -> int:
        """Items pending or processing."""
        return queue.outstanding(self.db.conn, kb)

    def status(self, kb: str | None = None, *, now: float | None = None) -> dict[str, Any]:
        """Counts per status, oldest pending age, live workers, throughput, last error, model."""
        return embed_status.status(self.db, self.provider, self.index, kb, now=now)

    def failed(self, kb: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
        """Failed entries with their error and attempts, newest first."""
        return queue.failed_entries(self.db.conn, kb, limit=limit)


def _now(now: float | None) -> float:
    return time.time() if now is None else now
