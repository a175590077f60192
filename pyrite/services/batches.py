"""A claimed batch of the embed queue turned into checked, stored vectors: the only path from a claim to an outcome."""

from __future__ import annotations

import logging
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from pyrite.config import Settings
from pyrite.errors import ConfigError, EmbeddingError
from pyrite.models import embed_text, text_hash
from pyrite.services.provider import Provider, check_vectors
from pyrite.storage import events, queue, vectors
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


def claim_batch(conn: Any, settings: Settings, owner: str, *, now: float, kb: str | None = None,
                rowids: Sequence[int] | None = None) -> list[Claim]:
    """queue.claim with the settings' batch size, lease and attempt limit, in the caller's transaction."""
    return queue.claim(conn, owner, limit=settings.embed_batch_size, lease=settings.embed_lease, now=now, kb=kb,
                       rowids=rowids, max_attempts=settings.embed_max_attempts)


@dataclass
class _Work:
    item: Claim
    entry_id: str
    chunks: list[str]


_Outcome = tuple[_Work, "np.ndarray | EmbeddingError"]


class BatchProcessor:
    """Embeds claimed items (bisecting around a bad input) and records each outcome in one transaction."""

    def __init__(self, db: Database, provider: Provider, rng: random.Random | None = None) -> None:
        self.db = db
        self.provider = provider
        self._rng = rng or random.Random()

    def process(self, items: list[Claim], *, now: float | None = None,
                then_claim: tuple[str, str | None] | None = None) -> BatchResult:
        """Embed claimed items and record each outcome; the only path from a claim to done or failed.

        then_claim=(owner, kb): the transaction that records the outcomes also claims the next batch
        for owner (in result.next_claims), sparing a worker one transaction per batch.
        EmbeddingError(misconfigured) is raised after the items were handed back untouched.
        """
        result = BatchResult(claimed=len(items))
        if not items:
            return result
        try:
            return self._process(items, result, now, then_claim)
        except EmbeddingError:
            raise
        except Exception as exc:  # a bug or a database error: count the attempt, never strand the batch
            log.error("embedding batch failed unexpectedly: %s",
                      self.provider.redact("".join(traceback.format_exception(exc))))
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
                result.released += queue.release(conn, items, now=_now(now), error=self.provider.redact(str(exc)))
            raise EmbeddingError(self.provider.redact(str(exc)), misconfigured=True) from exc
        result.discarded += len(gone)
        blank = [w for w in work if not w.chunks]
        work = [w for w in work if w.chunks]
        if blank:
            with self.db.write() as conn:
                for w in blank:
                    result.skipped += queue.skip(conn, w.item, now=_now(now))
        outcomes: list[_Outcome] = list(broken)
        try:
            self._embed_group(work, outcomes)
        except EmbeddingError as exc:
            # A provider-wide problem (misconfigured, rate limited): hand the batch back untouched.
            self._record(broken, result, now)
            return self._release_all(work, exc, result, now)
        self._record(outcomes, result, now, then_claim)
        return result

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
            if text_hash(title, body) != item.content_hash:
                continue  # superseded by a newer write, whose own queue row is already pending
            found.add(rowid)
            text = embed_text(title, body)
            try:
                chunks = self.provider.chunk(text) if text else []
            except (ConfigError, EmbeddingError):
                raise
            except Exception as exc:  # this text breaks the chunker: fail this item only
                broken.append((_Work(item, entry_id, []),
                               EmbeddingError(f"cannot chunk the text: {type(exc).__name__}: {exc}")))
                continue
            work.append(_Work(item, entry_id, chunks))
        gone = [i for i in items if i.entry_rowid not in found]
        return work, gone, broken

    def _embed_group(self, group: list[_Work], out: list[_Outcome]) -> None:
        """Embed a group's chunks; on an input-bound error, bisect so good items still succeed."""
        if not group:
            return
        texts = [c for w in group for c in w.chunks]
        try:
            vecs = self.provider.embed(texts)
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

    def _record(self, outcomes: list[_Outcome], result: BatchResult, now: float | None,
                then_claim: tuple[str, str | None] | None = None) -> None:
        """Write every outcome of a batch in one short transaction (claiming the next batch too, if asked)."""
        model = self.provider.model_id
        s = self.provider.settings
        with self.db.write() as conn:
            t = _now(now)
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
                message = self.provider.redact(str(outcome))
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
                result.next_claims = claim_batch(conn, s, owner, now=t, kb=kb)

    def _same_dimension(self, conn: Any, outcomes: list[_Outcome]) -> list[_Outcome]:
        """Outcomes whose vectors differ from the model's dimension in the index turned into errors.

        Checked again inside the recording transaction: another batch or process may have stored the
        model's first vectors, at another dimension, since this batch was embedded.
        """
        dim = vectors.model_dimension(conn, self.provider.model_id)
        out: list[_Outcome] = []
        for w, o in outcomes:
            if isinstance(o, np.ndarray):
                try:
                    check_vectors(o, count=len(o), dim=dim)
                except EmbeddingError as exc:
                    o = exc
                else:
                    dim = int(o.shape[1])
            out.append((w, o))
        return out

    def _release_all(self, work: list[_Work], exc: EmbeddingError, result: BatchResult,
                     now: float | None) -> BatchResult:
        t = _now(now)
        exc.args = (self.provider.redact(str(exc)),)
        pause = exc.retry_after if exc.retry_after is not None else 0.0
        with self.db.write() as conn:
            result.released += queue.release(conn, [w.item for w in work], now=t, run_after=t + pause,
                                             error=str(exc))
        result.paused_for = pause
        result.errors.append(str(exc))
        if exc.misconfigured:
            raise exc
        return result


def _now(now: float | None) -> float:
    return time.time() if now is None else now
