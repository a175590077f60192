"""EmbeddingWorker: threads that each claim a batch from the embed queue and embed it, until told to stop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from typing import Any, Callable

from pyrite.errors import EmbeddingError
from pyrite.services.batches import BatchResult
from pyrite.services.embedding_service import EmbeddingService, new_owner
from pyrite.storage.queue import Claim

__all__ = ["BatchResult", "EmbeddingWorker"]  # BatchResult: what process_queue and on_batch hand back

log = logging.getLogger("pyrite.worker")
# An idle runner looks at the queue after POLL_INTERVAL_S, then twice as long each time it finds nothing, up
# to IDLE_MAX_S: how late a write of another process can be noticed. A write in this process wakes it at once,
# and an item due later (a retry) is looked at when it is due.
POLL_INTERVAL_S = 0.25
IDLE_MAX_S = 2.0
MISCONFIGURED_PAUSE_S = 30.0
MAINTENANCE_EVERY_S = 30.0
UNREGISTER_WAIT_S = 5.0  # after the grace period, how long a stop still waits for a late batch and the cleanup


class EmbeddingWorker:
    """Works the embed queue: `run_once` does one batch; `process_queue` loops until stopped."""

    def __init__(self, service: EmbeddingService, *, kind: str = "worker", until_empty: bool = False,
                 poll_interval: float = POLL_INTERVAL_S, grace: float = 10.0, kb: str | None = None,
                 claim_ahead: bool = False) -> None:
        self.service = service
        self.kind = kind
        self.id = new_owner(kind)
        self.until_empty = until_empty
        self.poll_interval = poll_interval
        self.grace = grace
        self.kb = kb
        # Claim the next batch in the transaction that records this one (process_queue turns it on):
        # one write transaction per batch instead of two. Bare run_once calls leave nothing claimed.
        self.claim_ahead = claim_ahead
        self._ahead: list[list[Claim]] = []
        self._ahead_lock = threading.Lock()
        self._claiming = threading.Lock()
        self.paused_until = 0.0
        self._misconfigured = False
        self.last_error: str | None = None
        self.totals = BatchResult()
        self.running = False
        # The one stop signal: request_stop, a drained queue (until_empty) or a misconfigured foreground run.
        self._stop = threading.Event()
        self._drained = False  # the stop came from an empty queue (until_empty): settle the index first
        # Wake-ups from this process's writes: a counter, so one that comes mid-batch is not slept through.
        self._woken = 0
        self._wake = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_batch: Callable[[BatchResult], None] | None = None  # called on the event loop
        # A foreground run stops at a misconfigured provider (nobody fixes it while it waits) instead of pausing.
        self.stop_on_misconfigured = False
        self.misconfigured: str | None = None  # the error that paused or stopped it

    # -- one step -----------------------------------------------------------------

    def run_once(self, now: float | None = None) -> BatchResult:
        """Claim one due batch and process it; returns what happened (claimed == 0 when idle)."""
        t = time.time() if now is None else now
        # The check and the claim are one step for this worker's runners: a pause set meanwhile is seen.
        with self._claiming:
            if t < self.paused_until or self._stop.is_set():
                return BatchResult()
            if self._misconfigured:
                # The user may have fixed the key or model meanwhile: pick up the current settings.
                self._misconfigured = False
                self.service.provider.refresh_settings()
            items = self._take_ahead() or self.service.claim(self.id, now=t, kb=self.kb)
        then = (self.id, self.kb) if self.claim_ahead and not self._stop.is_set() else None
        try:
            result = self.service.batches.process(items, now=now, then_claim=then)
        except EmbeddingError as exc:  # provider misconfigured: items were handed back untouched
            with self._claiming:
                self._misconfigured = True
                self.paused_until = t + MISCONFIGURED_PAUSE_S
                self._release_ahead(now)
                # Another runner may have claimed what this batch handed back, before the pause: give it back.
                self.service.release_owner(self.id, now=now)
            self.last_error = self.misconfigured = self.service.provider.redact(str(exc))
            if self.stop_on_misconfigured:
                self.request_stop()
            else:
                log.error("embedding provider misconfigured, pausing %.0fs: %s", MISCONFIGURED_PAUSE_S,
                          self.last_error)
            return BatchResult(claimed=len(items), released=len(items), paused_for=MISCONFIGURED_PAUSE_S,
                               errors=[self.last_error])
        if result.next_claims:
            with self._ahead_lock:
                self._ahead.append(result.next_claims)
        if result.paused_for:
            # Count the pause from the answer (now), not from the claim: the request took time.
            self.paused_until = (time.time() if now is None else t) + result.paused_for
            self._release_ahead(now)  # another worker may take them meanwhile
        if result.errors:
            self.last_error = self.service.provider.redact(result.errors[-1])
        elif result.done:
            self.last_error = None  # the provider works again: an old error would mislead
        self.totals.add(result)
        # The worker keeps the WAL short, between its own batches (the writers of a server are spared that cost).
        self.service.db.checkpoint_if_due()
        # Index upkeep in the gaps: a little after each batch, more when the queue is idle.
        self.service.index.step(budget_s=0.05 if items else 0.2)
        return result

    def _take_ahead(self) -> list[Claim]:
        with self._ahead_lock:
            return self._ahead.pop(0) if self._ahead else []

    def _release_ahead(self, now: float | None) -> None:
        """Give back the batches claimed ahead (their attempt returned), e.g. when the provider pauses us."""
        with self._ahead_lock:
            held, self._ahead = [i for batch in self._ahead for i in batch], []
        if held:
            self.service.release(held, now=now)

    # -- the loop ----------------------------------------------------------------------

    def attach(self) -> None:
        """From now on this process's writes only queue and wake this worker, even while it still starts."""
        self.service.attach_worker(self.notify)

    def notify(self) -> None:
        """Wake the idle runners now (thread-safe): a write in this process queued work."""
        with self._wake:
            self._woken += 1
            self._wake.notify_all()

    def request_stop(self) -> None:
        """Stop claiming; the batch in hand finishes within the grace period or is released (thread-safe)."""
        self._drained = False
        self._stop.set()
        self.notify()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def process_queue(self) -> BatchResult:
        """Work the queue until request_stop (or, with until_empty, until nothing is pending).

        `settings.concurrency` runner threads each loop over run_once (remote providers overlap their
        network waits), next to one heartbeat thread; this coroutine only starts them and waits.
        """
        self._loop = asyncio.get_running_loop()
        self.claim_ahead = True  # what is claimed ahead is released with the rest on stop (_unregister)
        await asyncio.to_thread(self._db_call, self._register)
        self.attach()
        self.running = True
        threads = [threading.Thread(target=self._runner, name=f"pyrite-{self.id}-{i}", daemon=True)
                   for i in range(max(1, self.service.provider.settings.concurrency))]
        beat = threading.Thread(target=self._heartbeat, name=f"pyrite-hb-{self.id}", daemon=True)
        for thread in (*threads, beat):
            thread.start()
        try:
            await asyncio.to_thread(self._stop.wait)
            if not await self._join(threads, self.grace):
                # Hand the batches back with their attempt; late completions are discarded by the lease guard.
                released = await asyncio.to_thread(self._db_call, lambda: self.service.release_owner(self.id))
                log.warning("released %d item(s) still in hand after %.0fs grace", released, self.grace)
                # A little longer for the late batch to end, so what it claimed ahead is released below.
                await self._join(threads, UNREGISTER_WAIT_S)
            if self._drained:
                await asyncio.to_thread(self._db_call, self._settle_index)
        finally:
            self._stop.set()
            self.running = False
            self.service.detach_worker(self.notify)
            try:
                await asyncio.wait_for(asyncio.to_thread(self._db_call, self._unregister), timeout=UNREGISTER_WAIT_S)
            except (asyncio.TimeoutError, Exception):  # the leases will expire on their own
                log.warning("worker %s could not unregister cleanly", self.id)
            # The heartbeat's connection must be closed by the heartbeat before anyone closes the database.
            await asyncio.to_thread(beat.join, self.grace)
        return self.totals

    @staticmethod
    async def _join(threads: list[threading.Thread], timeout: float) -> bool:
        """Wait up to timeout seconds for the threads to end; True if they all did."""
        deadline = time.monotonic() + timeout
        for thread in threads:
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    def _runner(self) -> None:
        """One runner thread: run_once until stopped, sleeping longer each time it finds nothing to do."""
        idle = self.poll_interval
        try:
            while not self._stop.is_set():
                woken = self._woken
                try:
                    wait = self._step()
                except Exception as exc:  # a bug or a broken database: log it, back off, keep serving
                    self.last_error = self.service.provider.redact(f"{type(exc).__name__}: {exc}")
                    log.error("embedding batch failed: %s",
                              self.service.provider.redact("".join(traceback.format_exception(exc))))
                    wait = idle
                if wait is None:  # a batch was done: look again at once
                    idle = self.poll_interval
                elif self._sleep(min(wait, idle), woken):
                    idle = self.poll_interval  # a write of this process: the next idle look is soon again
                elif wait >= idle:
                    idle = min(2 * idle, IDLE_MAX_S)
        finally:
            self._release_ahead(None)  # claimed ahead by a batch that ended after the stop
            self.service.db.close_thread()

    def _step(self) -> float | None:
        """One runner step: a batch (None: look again at once), or the seconds until there may be one."""
        now = time.time()
        if now < self.paused_until:
            return self.paused_until - now
        result = self.run_once()
        if result.claimed:
            if self.on_batch is not None and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self.on_batch, result)
            return None
        if self.until_empty and self.service.outstanding(self.kb) == 0:
            self._drained = True
            self._stop.set()
            self.notify()  # the other runners' sleep ends at once
            return 0.0
        due = self.service.next_due(self.kb)
        return IDLE_MAX_S if due is None else max(0.0, due - time.time())

    def _sleep(self, seconds: float, woken: int) -> bool:
        """Wait up to seconds, or until a wake-up after `woken` or a stop; True if woken by a write."""
        with self._wake:
            self._wake.wait_for(lambda: self._woken != woken or self._stop.is_set(), timeout=max(0.0, seconds))
            return self._woken != woken

    def _db_call(self, fn: Callable[[], Any]) -> Any:
        """fn() on this (pool) thread, whose database connection is closed after it."""
        try:
            return fn()
        finally:
            self.service.db.close_thread()

    # -- bookkeeping (runs on a runner, pool or heartbeat thread) -------------------------------

    def _register(self) -> None:
        self.service.register_worker(self.id, kind=self.kind)

    def _unregister(self) -> None:
        with self._ahead_lock:
            self._ahead.clear()  # released just below, with anything else this worker holds
        self.service.unregister_worker(self.id)

    def _settle_index(self) -> None:
        # Leave the vector index current (trained, nothing mid-move) before exiting, unless told to stop.
        while self._drained and self.service.index.step(budget_s=0.5, force=True):
            pass

    def _heartbeat(self) -> None:
        db = self.service.db
        interval = max(0.2, min(5.0, self.service.provider.settings.embed_lease / 4))
        next_maintenance = time.time() + MAINTENANCE_EVERY_S
        try:
            while not self._stop.wait(interval):
                now = time.time()
                try:
                    paused = self.paused_until if self.paused_until > now else None
                    self.service.heartbeat(self.id, error=self.last_error if paused else None, paused_until=paused,
                                           now=now)
                    # This process's commits skip the automatic checkpoint (see Database); do it here.
                    db.checkpoint()
                    if now >= next_maintenance:
                        next_maintenance = now + MAINTENANCE_EVERY_S
                        self.service.prune(now=now)
                except Exception:  # a busy or broken database must not kill the heartbeat
                    log.exception("heartbeat failed")
        finally:
            db.close_thread()
