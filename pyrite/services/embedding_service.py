"""Turns claimed queue items into checked, stored vectors; shared by the worker, the sync fallback and the CLI."""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from pyrite.config import Settings
from pyrite.embedders import Embedder, create_embedder
from pyrite.errors import ConfigError, EmbeddingError
from pyrite.models import embed_text
from pyrite.secrets import redact
from pyrite.services.vector_index import VectorIndex
from pyrite.storage import events, files, queue, vectors, workers
from pyrite.storage.db import Database
from pyrite.storage.queue import Claim

log = logging.getLogger("pyrite.embedding")


@dataclass
class BatchResult:
    """What one processed batch came to."""

    claimed: int = 0
    done: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    discarded: int = 0
    released: int = 0
    paused_for: float = 0.0
    errors: list[str] = field(default_factory=list)
    # The next batch, claimed in the transaction that recorded this one (process(then_claim=...)); not summed.
    next_claims: list[Claim] = field(default_factory=list)

    def add(self, other: "BatchResult") -> None:
        for name in ("claimed", "done", "retried", "failed", "skipped", "discarded", "released"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.paused_for = max(self.paused_for, other.paused_for)
        self.errors.extend(other.errors)


@dataclass
class _Work:
    item: Claim
    entry_id: str
    chunks: list[str]


def new_owner(kind: str) -> str:
    """A unique lease owner / worker id."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


class EmbeddingService:
    """Owns the embedder of this process and every transition of the embed queue."""

    def __init__(self, db: Database, settings: Settings, embedder: Embedder | None = None,
                 rng: random.Random | None = None, reload: Callable[[], Settings] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.reload = reload
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        # Serializes calls into embedders that are not thread-safe (the local model's tokenizer).
        self._model_lock = threading.Lock()
        self._rng = rng or random.Random()
        # Set by an in-process worker: a thread-safe callable that wakes it.
        self.wake: Callable[[], None] | None = None
        self.index = VectorIndex(db, lambda: self.settings.vector_index_min)

    # -- configuration -----------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when entries get embedded: a provider is set and sqlite-vec works."""
        return self.settings.embed_provider != "none" and self.db.vec_available

    @property
    def model_id(self) -> str:
        return self.settings.model_id

    def why_disabled(self) -> str | None:
        """A message saying why embedding is off and how to turn it on; None if on."""
        if self.settings.embed_provider == "none":
            return "embedding is off (provider 'none'); set PYRITE_EMBED_PROVIDER=local to turn it on"
        return self.db.vec_problem

    @property
    def embedder(self) -> Embedder:
        """This process's embedder, created on first use."""
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = create_embedder(self.settings)
            return self._embedder

    def refresh_settings(self) -> bool:
        """Re-read the settings (after a misconfiguration); True if the embedding ones changed."""
        if self.reload is None:
            return False
        try:
            fresh = self.reload()
        except Exception as exc:  # a broken config.yaml: keep the old settings, say why
            log.error("cannot re-read settings: %s", exc)
            return False
        keys = ("embed_provider", "embed_model", "embed_url", "embed_api_key", "embed_dimensions", "embed_timeout")
        if all(getattr(fresh, k) == getattr(self.settings, k) for k in keys):
            return False
        with self._embedder_lock:
            old, self._embedder = self._embedder, None
            self.settings = fresh
        if old is not None:
            old.close()
        log.info("embedding settings changed; now using %s", fresh.model_id)
        return True

    def redact(self, message: str) -> str:
        """message with this process's secrets masked; every error is recorded or logged through it."""
        return redact(message, [self.settings.embed_api_key, self.settings.api_token])

    def loaded(self) -> bool:
        """True once the embedder exists in this process (the model is loaded)."""
        return self._embedder is not None and (self._embedder.dimension is not None)

    # -- the write path hook ------------------------------------------------------

    def must_embed_here(self, conn: Any) -> bool:
        """Inside a write's transaction: True if no worker, in this process or any other, will embed it."""
        return self.enabled and self.wake is None and not workers.live(conn, now=time.time())

    def after_write(self, rowids: Sequence[int], embed_here: bool) -> bool:
        """After a committed write: wake the in-process worker, or embed now (embed_here); True if it embedded."""
        if not rowids or not self.enabled:
            return False
        if self.wake is not None:
            self.wake()
            return False
        if not embed_here:
            return False
        try:
            self.embed_rowids(rowids)
        except Exception as exc:
            # The write stands; the entry stays pending with the error, shown by status and the CLI.
            log.warning("could not embed now: %s", self.redact(str(exc)))
        return True

    def live_workers(self, now: float | None = None) -> list[dict[str, Any]]:
        """Workers, in any process, whose heartbeat is fresh."""
        return workers.live(self.db.conn, now=time.time() if now is None else now)

    def embed_rowids(self, rowids: Sequence[int], now: float | None = None) -> BatchResult:
        """Embed these entries now, in this thread (the synchronous fallback)."""
        owner = new_owner("sync")
        total = BatchResult()
        ids = list(rowids)
        for start in range(0, len(ids), self.settings.embed_batch_size):
            t = time.time() if now is None else now
            with self.db.write() as conn:
                items = self._claim(conn, owner, now=t, rowids=ids[start:start + self.settings.embed_batch_size])
            total.add(self.process(items, now=now))
        return total

    # -- processing -----------------------------------------------------------------

    def claim(self, owner: str, *, now: float | None = None, kb: str | None = None) -> list[Claim]:
        """Claim the next due batch for owner, in a short transaction of its own."""
        with self.db.write() as conn:
            return self._claim(conn, owner, now=time.time() if now is None else now, kb=kb)

    def _claim(self, conn: Any, owner: str, *, now: float, kb: str | None = None,
               rowids: Sequence[int] | None = None) -> list[Claim]:
        """queue.claim with this service's batch size, lease and attempt limit, in the caller's transaction."""
        s = self.settings
        return queue.claim(conn, owner, limit=s.embed_batch_size, lease=s.embed_lease, now=now, kb=kb,
                           rowids=rowids, max_attempts=s.embed_max_attempts)

    def process(self, items: list[Claim], *, now: float | None = None,
                then_claim: tuple[str, str | None] | None = None) -> BatchResult:
        """Embed claimed items and record each outcome; the only path from a claim to done or failed.

        then_claim=(owner, kb): the transaction that records the outcomes also claims the next batch
        for owner (in result.next_claims), sparing a worker one transaction per batch.
        """
        result = BatchResult(claimed=len(items))
        if not items:
            return result
        try:
            return self._process(items, result, now, then_claim)
        except EmbeddingError:
            raise
        except Exception as exc:  # a bug or a database error: count the attempt, never strand the batch
            log.error("embedding batch failed unexpectedly: %s", self.redact("".join(traceback.format_exception(exc))))
            error = EmbeddingError(f"{type(exc).__name__}: {exc}")
            by_rowid = {i.entry_rowid: i for i in items}
            ids = dict(self.db.query(
                f"SELECT rowid, id FROM entries WHERE rowid IN ({','.join('?' * len(items))})", list(by_rowid)))
            self._record([(_Work(i, ids.get(i.entry_rowid, ""), []), error) for i in items], result, now)
            return result

    def _process(self, items: list[Claim], result: BatchResult, now: float | None,
                 then_claim: tuple[str, str | None] | None = None) -> BatchResult:
        try:
            work, gone, broken = self._load(items)
        except ConfigError as exc:  # e.g. the model cannot be loaded: never burn attempts on it
            with self.db.write() as conn:
                result.released += queue.release(conn, items, now=self._now(now), error=self.redact(str(exc)))
            raise EmbeddingError(self.redact(str(exc)), misconfigured=True) from exc
        result.discarded += len(gone)
        blank = [w for w in work if not w.chunks]
        work = [w for w in work if w.chunks]
        if blank:
            with self.db.write() as conn:
                for w in blank:
                    result.skipped += queue.skip(conn, w.item, now=self._now(now))
        outcomes: list[tuple[_Work, np.ndarray | EmbeddingError]] = list(broken)
        try:
            self._embed_group(work, outcomes)
        except EmbeddingError as exc:
            # A provider-wide problem (misconfigured, rate limited): hand the batch back untouched.
            self._record(broken, result, now)
            return self._release_all(work, exc, result, now)
        self._record(outcomes, result, now, then_claim)
        return result

    def _now(self, now: float | None) -> float:
        return time.time() if now is None else now

    def _load(self, items: list[Claim]) -> tuple[list[_Work], list[Claim], list[tuple[_Work, EmbeddingError]]]:
        """Read and chunk the claimed entries' texts.

        Returns the work, the items whose entry is gone or whose text moved on
        (dropped), and the items whose text could not be chunked (failed alone).
        """
        by_rowid = {i.entry_rowid: i for i in items}
        rows = self.db.query(
            f"SELECT rowid, id, title, body FROM entries WHERE rowid IN ({','.join('?' * len(items))})",
            list(by_rowid))
        work: list[_Work] = []
        broken: list[tuple[_Work, EmbeddingError]] = []
        found: set[int] = set()
        for rowid, entry_id, title, body in rows:
            item = by_rowid[rowid]
            text = embed_text(title, body)
            if files.content_hash(text.encode("utf-8")) != item.content_hash:
                continue  # superseded by a newer write, whose own queue row is already pending
            found.add(rowid)
            try:
                chunks = self._chunk(text) if text else []
            except (ConfigError, EmbeddingError):
                raise
            except Exception as exc:  # this text breaks the chunker: fail this item only
                broken.append((_Work(item, entry_id, []),
                               EmbeddingError(f"cannot chunk the text: {type(exc).__name__}: {exc}")))
                continue
            work.append(_Work(item, entry_id, chunks))
        gone = [i for i in items if i.entry_rowid not in found]
        return work, gone, broken

    def _embed_group(self, group: list[_Work], out: list[tuple[_Work, np.ndarray | EmbeddingError]]) -> None:
        """Embed a group's chunks; on an input-bound error, bisect so good items still succeed."""
        if not group:
            return
        texts = [c for w in group for c in w.chunks]
        try:
            vecs = self._embed_texts(texts)
        except EmbeddingError as exc:
            if exc.misconfigured or exc.retry_after is not None:
                raise
            if exc.per_input and len(group) > 1:
                mid = len(group) // 2
                self._embed_group(group[:mid], out)
                self._embed_group(group[mid:], out)
                return
            # An outage (5xx, timeout) or the one bad input: each item records the error and backs off.
            out.extend((w, exc) for w in group)
            return
        pos = 0
        for w in group:
            n = len(w.chunks)
            out.append((w, vecs[pos:pos + n]))
            pos += n

    def _chunk(self, text: str) -> list[str]:
        embedder = self.embedder
        if embedder.concurrent_safe:
            return embedder.chunk(text)
        with self._model_lock:
            return embedder.chunk(text)

    def dimension(self) -> int | None:
        """The configured model's dimension: the embedder's own, else that of its vectors in the index."""
        dim = self.embedder.dimension
        if dim is None and self.db.vec_available:
            dim = vectors.model_dimension(self.db.conn, self.model_id)
        return dim

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        embedder = self.embedder
        dim = self.dimension()
        parts = []
        for start in range(0, len(texts), embedder.max_batch):
            piece = texts[start:start + embedder.max_batch]
            try:
                if embedder.concurrent_safe:
                    raw = embedder.embed(piece)
                else:
                    with self._model_lock:
                        raw = embedder.embed(piece)
            except EmbeddingError:
                raise
            except ConfigError as exc:
                raise EmbeddingError(str(exc), misconfigured=True) from exc
            except Exception as exc:  # an embedder bug must fail items, never kill the worker
                raise EmbeddingError(f"{type(exc).__name__}: {exc}", per_input=True) from exc
            parts.append(vectors.check_vectors(raw, count=len(piece), dim=dim))
            dim = int(parts[-1].shape[1])  # one call, one dimension
        arr = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if embedder.dimension is None:
            embedder.dimension = int(arr.shape[1])
        return arr

    def _record(self, outcomes: list[tuple[_Work, np.ndarray | EmbeddingError]], result: BatchResult,
                now: float | None, then_claim: tuple[str, str | None] | None = None) -> None:
        """Write every outcome of a batch in one short transaction (claiming the next batch too, if asked)."""
        model = self.model_id
        s = self.settings
        with self.db.write() as conn:
            t = self._now(now)
            outcomes = self._same_dimension(conn, outcomes)
            ok = [(w, o) for w, o in outcomes if isinstance(o, np.ndarray)]
            for dim in {int(o.shape[1]) for _, o in ok}:
                vectors.ensure_table(conn, dim)  # once per batch, not per item
            # Completion is guarded per item (still ours, text unchanged); a superseded result is dropped.
            completed = queue.complete_many(conn, [w.item for w, _ in ok], model=model, now=t)
            kept = [(w, o) for w, o in ok if w.item.entry_rowid in completed]
            vectors.replace_many(conn, model, [(w.item.entry_rowid, w.item.kb, o) for w, o in kept])
            events.append_many(conn, "embed_complete", [(w.item.kb, w.entry_id) for w, _ in kept], model=model, now=t)
            result.done += len(kept)
            result.discarded += len(ok) - len(kept)
            for w, outcome in outcomes:
                if isinstance(outcome, np.ndarray):
                    continue
                message = self.redact(str(outcome))
                attempts_allowed = s.embed_max_attempts if outcome.retryable else w.item.attempts
                retry_at = t + queue.backoff(w.item.attempts, base=s.embed_retry_base, cap=s.embed_retry_max,
                                             rng=self._rng)
                status = queue.fail(conn, w.item, message, max_attempts=attempts_allowed,
                                    retry_at=retry_at, now=t)
                if status == "failed":
                    events.append(conn, "embed_failed", kb=w.item.kb, entry_id=w.entry_id, model=model,
                                  error=message, now=t)
                    result.failed += 1
                    result.errors.append(f"{w.item.kb}/{w.entry_id}: {message}")
                elif status == "pending":
                    result.retried += 1
                else:
                    result.discarded += 1
            if then_claim is not None:
                owner, kb = then_claim
                result.next_claims = self._claim(conn, owner, now=t, kb=kb)

    def _same_dimension(self, conn: Any, outcomes: list[tuple[_Work, np.ndarray | EmbeddingError]]
                        ) -> list[tuple[_Work, np.ndarray | EmbeddingError]]:
        """Outcomes whose vectors differ from the model's dimension in the index turned into errors.

        Checked again inside the recording transaction: another batch or process may have stored the
        model's first vectors, at another dimension, since this batch was embedded.
        """
        dim = vectors.model_dimension(conn, self.model_id)
        out: list[tuple[_Work, np.ndarray | EmbeddingError]] = []
        for w, o in outcomes:
            if isinstance(o, np.ndarray):
                try:
                    vectors.check_vectors(o, count=len(o), dim=dim)
                except EmbeddingError as exc:
                    o = exc
                else:
                    dim = int(o.shape[1])
            out.append((w, o))
        return out

    def _release_all(self, work: list[_Work], exc: EmbeddingError, result: BatchResult,
                     now: float | None) -> BatchResult:
        t = self._now(now)
        exc.args = (self.redact(str(exc)),)
        pause = exc.retry_after if exc.retry_after is not None else 0.0
        with self.db.write() as conn:
            result.released += queue.release(conn, [w.item for w in work], now=t, run_after=t + pause,
                                             error=str(exc))
        result.paused_for = pause
        result.errors.append(str(exc))
        if exc.misconfigured:
            raise exc
        return result

    def release(self, items: Sequence[Claim], *, now: float | None = None) -> int:
        """Give items back untouched (their attempt returned), e.g. on shutdown."""
        with self.db.write() as conn:
            return queue.release(conn, items, now=self._now(now))

    def release_owner(self, owner: str, *, now: float | None = None) -> int:
        """Give back everything owner still holds."""
        t = self._now(now)
        with self.db.write() as conn:
            rows = conn.execute(
                "SELECT entry_rowid, kb, content_hash, attempts FROM embed_queue "
                "WHERE status = 'processing' AND lease_owner = ?", (owner,)).fetchall()
            return queue.release(conn, [Claim(r[0], r[1], r[2], r[3], owner) for r in rows], now=t)

    # -- queue maintenance -------------------------------------------------------------

    def enqueue_missing(self, kb: str | None = None, *, now: float | None = None) -> int:
        """Queue entries that have no queue row (indexed while embedding was off); return how many."""
        if not self.enabled:
            return 0
        t = self._now(now)
        sql = ("SELECT e.rowid, e.kb, e.title, e.body FROM entries e LEFT JOIN embed_queue q "
               "ON q.entry_rowid = e.rowid WHERE q.entry_rowid IS NULL")
        params: tuple[Any, ...] = ()
        if kb is not None:
            sql += " AND e.kb = ?"
            params = (kb,)
        count = 0
        while True:
            rows = self.db.query(sql + " LIMIT 500", params)
            if not rows:
                return count
            with self.db.write() as conn:
                for rowid, entry_kb, title, body in rows:
                    text = embed_text(title, body)
                    queue.upsert(conn, rowid, entry_kb, files.content_hash(text.encode("utf-8")),
                                 blank=not text, model=self.model_id, now=t)
                    count += 1

    def requeue(self, *, kb: str | None = None, statuses: Sequence[str] = ("failed",),
                only_missing: bool = False, limit: int | None = None, now: float | None = None) -> int:
        """Put entries back to pending: the given statuses, or (only_missing) those without current vectors.

        Entries indexed while embedding was off get their queue row either way.
        """
        t = self._now(now)
        count = self.enqueue_missing(kb, now=t)
        with self.db.write() as conn:
            if only_missing:
                count += queue.requeue_missing(conn, model=self.model_id, now=t, kb=kb, limit=limit)
            else:
                count += queue.requeue(conn, now=t, kb=kb, statuses=statuses, limit=limit)
        return count

    def wait_for(self, kb: str | None = None, *, timeout: float) -> int:
        """Wait up to timeout seconds until kb has nothing pending (embedding here if no worker runs); return what is left."""
        if not self.enabled:
            return 0
        deadline = time.monotonic() + timeout
        owner = new_owner("wait")
        while True:
            left = self.outstanding(kb)
            if left == 0 or time.monotonic() >= deadline:
                return left
            if self.wake is None and not self.live_workers():
                items = self.claim(owner, kb=kb)
                if items:
                    self.process(items)
                    continue
            time.sleep(0.05)

    def outstanding(self, kb: str | None = None) -> int:
        """Items pending or processing."""
        return queue.outstanding(self.db.conn, kb)

    def status(self, kb: str | None = None, *, now: float | None = None) -> dict[str, Any]:
        """Counts per status, oldest pending age, live workers, throughput, last error, model."""
        t = self._now(now)
        conn = self.db.conn
        sql = "SELECT min(queued_at) FROM embed_queue WHERE status = 'pending'"
        oldest = conn.execute(sql + (" AND kb = ?" if kb else ""), (kb,) if kb else ()).fetchone()[0]
        counts = queue.counts(conn, kb)
        error, error_at = self._last_error(conn, kb)
        success_at = events.last_completion(conn)
        recovered = error is not None and success_at is not None and error_at is not None and error_at < success_at
        if recovered and not counts.get("failed"):
            error = error_at = None  # the provider works again and nothing is left failed: nothing to show
        paused = conn.execute(
            "SELECT error FROM embed_queue WHERE status = 'pending' AND error IS NOT NULL AND attempts = 0 "
            "ORDER BY updated_at DESC LIMIT 1").fetchone()
        live = workers.live(conn, now=t)
        paused_worker = next((w for w in live if w["paused_for_s"] and w["error"]), None)
        other_models = vectors.models(conn, kb, other_than=self.model_id) if self.db.vec_available else {}
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
            "provider_error": paused_worker["error"] if paused_worker else (paused[0] if paused else None),
            "model": self.model_id or None,
            "stale_models": other_models,
            "index": [i for i in self.index.status() if kb is None or i["kb"] == kb],
            "enabled": self.enabled,
            "disabled_reason": self.why_disabled(),
        }

    def _last_error(self, conn: Any, kb: str | None) -> tuple[str | None, float | None]:
        """The newest embedding error (failure event, else failed row) and when it happened."""
        last = events.last_error(conn)
        if last and last["error"]:
            return last["error"], last["time"]
        row = conn.execute(
            "SELECT error, updated_at FROM embed_queue WHERE status = 'failed'" + (" AND kb = ?" if kb else "")
            + " ORDER BY updated_at DESC LIMIT 1", (kb,) if kb else ()).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def failed(self, kb: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
        """Failed entries with their error and attempts, newest first."""
        sql = ("SELECT e.kb, e.id, e.title, q.error, q.attempts, q.updated_at FROM embed_queue q "
               "JOIN entries e ON e.rowid = q.entry_rowid WHERE q.status = 'failed'")
        params: list[Any] = []
        if kb is not None:
            sql += " AND q.kb = ?"
            params.append(kb)
        sql += " ORDER BY q.updated_at DESC LIMIT ?"
        params.append(int(limit))
        return [{"kb": r[0], "id": r[1], "title": r[2], "error": r[3], "attempts": r[4], "failed_at": r[5]}
                for r in self.db.query(sql, params)]

    def embed_query(self, text: str) -> np.ndarray:
        """The query's vector in the configured model's space; EmbeddingError (redacted) if the provider fails."""
        try:
            return self._embed_texts([text])[0]
        except EmbeddingError as exc:
            exc.args = (self.redact(str(exc)),)
            raise
