"""EmbeddingWorker: claims batches from the embed queue and embeds them, off the event loop."""

from __future__ import annotations

import asyncio
import logging
import queue as thread_queue
import threading
import time
import traceback
from typing import Any, Callable

from pyrite.errors import EmbeddingError
from pyrite.services.embedding_service import BatchResult, EmbeddingService, new_owner
from pyrite.storage import events, queue, workers
from pyrite.storage.queue import Claim

log = logging.getLogger("pyrite.worker")
POLL_INTERVAL_S = 0.25  # how soon writes from other processes are noticed (an idle claim costs ~0.1 ms)
MISCONFIGURED_PAUSE_S = 30.0
MAINTENANCE_EVERY_S = 30.0


class _Runner:
    """One daemon thread that runs blocking calls for the event loop (model and SQLite work).

    A daemon thread, unlike asyncio's default executor, never holds up process
    exit: after a forced stop the leases simply expire.
    """

    def __init__(self, name: str) -> None:
        self._jobs: thread_queue.Queue[Any] = thread_queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, loop, future = job
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((fn, loop, future))
        return future

    def close(self) -> None:
        self._jobs.put(None)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


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
        self.paused_until = 0.0
        self._misconfigured = False
        self.last_error: str | None = None
        self.totals = BatchResult()
        self.running = False
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self.on_batch: Callable[[BatchResult], None] | None = None
        # A foreground run stops at a misconfigured provider (nobody fixes it while it waits) instead of pausing.
        self.stop_on_misconfigured = False
        self.misconfigured: str | None = None  # the error that paused or stopped it

    # -- one step -----------------------------------------------------------------

    def run_once(self, now: float | None = None) -> BatchResult:
        """Claim one due batch and process it; returns what happened (claimed == 0 when idle)."""
        t = time.time() if now is None else now
        if t < self.paused_until or self._stop.is_set():
            return BatchResult()
        if self._misconfigured:
            # The user may have fixed the key or model meanwhile: pick up the current settings.
            self._misconfigured = False
            self.service.refresh_settings()
        items = self._take_ahead() or self.service.claim(self.id, now=t, kb=self.kb)
        then = (self.id, self.kb) if self.claim_ahead and not self._stop.is_set() else None
        try:
            result = self.service.process(items, now=now, then_claim=then)
        except EmbeddingError as exc:  # provider misconfigured: items were handed back untouched
            self.last_error = self.service.redact(str(exc))
            self._misconfigured = True
            self.paused_until = t + MISCONFIGURED_PAUSE_S
            self._release_ahead(now)
            self.misconfigured = self.last_error
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
            self.last_error = self.service.redact(result.errors[-1])
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
        self.service.wake = self.notify

    def notify(self) -> None:
        """Wake the loop now (thread-safe): a write in this process queued work."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    def request_stop(self) -> None:
        """Stop claiming; the batch in hand finishes within the grace period or is released (thread-safe)."""
        self._stop.set()
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            loop.call_soon_threadsafe(stopped.set)
        self.notify()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def process_queue(self) -> BatchResult:
        """Work the queue until request_stop (or, with until_empty, until nothing is pending).

        Up to `settings.concurrency` batches are in flight at once, each its own
        claim on its own thread (remote providers overlap their network waits).
        """
        self._loop = asyncio.get_running_loop()
        self.claim_ahead = True  # what is claimed ahead is released with the rest on stop (_unregister)
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        if self._stop.is_set():
            self._stopped.set()
        runners = [_Runner(f"pyrite-{self.id}-{i}") for i in range(max(1, self.service.settings.concurrency))]
        free = list(runners)
        inflight: dict[asyncio.Future[Any], _Runner] = {}
        beat = threading.Thread(target=self._heartbeat, name=f"pyrite-hb-{self.id}", daemon=True)
        await runners[0].submit(self._register)
        self.attach()
        self.running = True
        beat.start()
        stop_wait = asyncio.ensure_future(self._wait_stop())
        idle = False
        try:
            while not self._stop.is_set():
                if self._wake.is_set():  # a write in this process: look again at once
                    self._wake.clear()
                    idle = False
                while free and not idle and time.time() >= self.paused_until:
                    runner = free.pop()
                    inflight[runner.submit(self.run_once)] = runner
                if not inflight:
                    if self.until_empty and await runners[0].submit(self._queue_empty):
                        await runners[0].submit(self._settle_index)
                        break
                    pause = max(0.0, self.paused_until - time.time())
                    await self._sleep(max(pause, self.poll_interval) if pause else self.poll_interval)
                    idle = False
                    continue
                done, _ = await asyncio.wait({*inflight, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    if future is stop_wait:
                        continue
                    free.append(inflight.pop(future))
                    try:
                        result = future.result()
                    except Exception as exc:  # a bug or a broken database: log it, back off, keep serving
                        self.last_error = self.service.redact(f"{type(exc).__name__}: {exc}")
                        log.error("embedding batch failed: %s",
                                  self.service.redact("".join(traceback.format_exception(exc))))
                        idle = True
                        continue
                    if result.claimed == 0:
                        idle = True
                    elif self.on_batch is not None:
                        self.on_batch(result)
            if inflight:
                await self._finish_or_release(list(inflight))
        finally:
            stop_wait.cancel()
            self.running = False
            self.service.wake = None
            self._stop.set()
            try:
                await asyncio.wait_for(runners[0].submit(self._unregister), timeout=5.0)
            except (asyncio.TimeoutError, Exception):  # the leases will expire on their own
                log.warning("worker %s could not unregister cleanly", self.id)
            for runner in runners:
                runner.close()
            # The heartbeat's connection must be closed by the heartbeat before anyone closes the database.
            await asyncio.to_thread(beat.join, self.grace)
        return self.totals

    async def _wait_stop(self) -> None:
        stopped = self._stopped or asyncio.Event()
        await stopped.wait()

    async def _sleep(self, seconds: float) -> None:
        wake = self._wake or asyncio.Event()
        try:
            await asyncio.wait_for(wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _finish_or_release(self, batches: list[asyncio.Future[Any]]) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*batches, return_exceptions=True), timeout=self.grace)
        except asyncio.TimeoutError:
            # Hand the batches back with their attempt; late completions are discarded by the lease guard.
            released = await asyncio.to_thread(self._release_in_new_thread)
            log.warning("released %d item(s) still in hand after %.0fs grace", released, self.grace)

    def _release_in_new_thread(self) -> int:
        released = self.service.release_owner(self.id)
        self.service.db.close_thread()
        return released

    # -- bookkeeping (runs on the runner or heartbeat thread) -------------------------------

    def _register(self) -> None:
        with self.service.db.write() as conn:
            workers.register(conn, self.id, kind=self.kind, model=self.service.model_id, now=time.time())

    def _unregister(self) -> None:
        # Unregister first, then look once more: a writer that saw us alive has already committed.
        with self.service.db.write() as conn:
            workers.unregister(conn, self.id)
        with self._ahead_lock:
            self._ahead.clear()  # released just below, with anything else this worker holds
        self.service.release_owner(self.id)

    def _settle_index(self) -> None:
        # Leave the vector index current (trained, nothing mid-move) before exiting, unless told to stop.
        while not self._stop.is_set() and self.service.index.step(budget_s=0.5, force=True):
            pass

    def _queue_empty(self) -> bool:
        return self.service.outstanding(self.kb) == 0

    def _heartbeat(self) -> None:
        db = self.service.db
        interval = max(0.2, min(5.0, self.service.settings.embed_lease / 4))
        next_maintenance = time.time() + MAINTENANCE_EVERY_S
        try:
            while not self._stop.wait(interval):
                now = time.time()
                try:
                    with db.write() as conn:
                        paused = self.paused_until if self.paused_until > now else None
                        workers.beat(conn, self.id, now=now, error=self.last_error if paused else None,
                                     paused_until=paused)
                        queue.renew(conn, self.id, lease=self.service.settings.embed_lease, now=now)
                    # This process's commits skip the automatic checkpoint (see Database); do it here.
                    db.checkpoint()
                    if now >= next_maintenance:
                        next_maintenance = now + MAINTENANCE_EVERY_S
                        with db.write() as conn:
                            events.prune(conn, now=now)
                            workers.prune(conn, now=now)
                except Exception:  # a busy or broken database must not kill the heartbeat
                    log.exception("heartbeat failed")
        finally:
            db.close_thread()
