"""EventHub: tails the events table (written by any process) and fans events out to WebSocket clients."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from pyrite.storage import events
from pyrite.storage.db import Database

log = logging.getLogger("pyrite.server")
TAIL_INTERVAL_S = 0.05
CLIENT_BUFFER = 1000  # events a client may lag behind before it is dropped (it can resume with ?since=)


class EventHub:
    """One tail loop per server; each client gets a bounded queue so a slow one never blocks the rest."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.last_id = 0
        self._clients: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()

    async def start(self) -> None:
        self.last_id = await run_in_threadpool(lambda: events.last_id(self.db.conn))
        self._task = asyncio.create_task(self._tail(), name="pyrite-event-tail")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for q in list(self._clients):
            self._close(q)

    async def _since(self, after: int) -> list[dict[str, Any]]:
        # self.db.conn inside the thread: each thread reads on its own connection. Taken on the event loop,
        # it would open a connection there and share it between threads, which Database.close can then
        # close under a running statement.
        return await run_in_threadpool(lambda: events.since(self.db.conn, after))

    def poke(self) -> None:
        """Look for new events now instead of at the next tick (call on the event loop)."""
        self._poke.set()

    async def _tail(self) -> None:
        while True:
            try:
                new = await self._since(self.last_id)
            except Exception:  # a busy database must not end the stream
                log.exception("event tail failed")
                new = []
            for event in new:
                self.last_id = event["id"]
                for q in list(self._clients):
                    try:
                        q.put_nowait(event)
                    except asyncio.QueueFull:
                        self._close(q)
            if len(new) < 500:
                try:
                    await asyncio.wait_for(self._poke.wait(), timeout=TAIL_INTERVAL_S)
                except asyncio.TimeoutError:
                    pass
                self._poke.clear()

    def _close(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._clients.discard(q)
        try:
            q.put_nowait(None)
        except asyncio.QueueFull:
            # Make room for the end marker: the client is dropped and resumes with ?since=.
            while not q.empty():
                q.get_nowait()
            q.put_nowait(None)

    async def serve(self, ws: WebSocket, since: int | None) -> None:
        """Replay events after `since`, then stream live ones until the client leaves or lags too far."""
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=CLIENT_BUFFER)
        self._clients.add(q)  # subscribe before replaying so nothing falls between the two
        sent = since if since is not None else self.last_id
        try:
            if since is not None:
                while True:
                    backlog = await self._since(sent)
                    for event in backlog:
                        await ws.send_json(event)
                        sent = event["id"]
                    if len(backlog) < 500:
                        break
            receiver = asyncio.create_task(self._drain_client(ws))
            try:
                while True:
                    getter = asyncio.create_task(q.get())
                    done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                    if receiver in done:
                        getter.cancel()
                        return
                    event = getter.result()
                    if event is None:
                        await ws.close(code=1013, reason="client too slow; reconnect with ?since=<last id>")
                        return
                    if event["id"] <= sent:
                        continue
                    await ws.send_json(event)
                    sent = event["id"]
            finally:
                receiver.cancel()
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            self._clients.discard(q)

    @staticmethod
    async def _drain_client(ws: WebSocket) -> None:
        """Read (and ignore) what the client sends, to notice when it goes away."""
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
        except (WebSocketDisconnect, RuntimeError):
            return
