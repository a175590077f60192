"""A real `pyrite serve` flooded with keyword searches over a multi-MB entry stays responsive and exits on
SIGTERM within its grace period (each search used to hold a thread for minutes)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.server.app import SHUTDOWN_GRACE_S
from tests.test_search_cost import WORD, deep_body
from tests.test_server_process import Server

pytestmark = pytest.mark.slow
CLIENTS = 48  # more than the server's 40 threads
FLOOD_MAX_S = 60.0


def _flood(url: str, stop: threading.Event, statuses: list[int]) -> None:
    """Search again and again until stop is set, the server is gone or FLOOD_MAX_S pass."""
    end = time.monotonic() + FLOOD_MAX_S
    with httpx.Client(timeout=FLOOD_MAX_S) as client:
        while not stop.is_set() and time.monotonic() < end:
            try:
                r = client.get(f"{url}/api/search", params={"q": "alpha", "kb": "notes", "mode": "keyword"})
            except httpx.HTTPError:
                if stop.is_set():
                    return
                time.sleep(0.05)
                continue
            statuses.append(r.status_code)


@pytest.mark.timeout(300)
def test_flood_of_big_entry_searches_keeps_server_responsive_and_sigterm_exits_in_grace(
        pyrite_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRITE_EMBED_PROVIDER", "none")
    core = Pyrite(load_settings())
    core.kbs.create_kb("notes")
    core.kbs.create_entry("notes", "Big notebook", deep_body(3_000_000))
    core.kbs.create_entry("notes", "Small note", f"alpha and the {WORD}")
    core.close()
    server = Server(pyrite_home, tmp_path / "serve.log", "--no-worker", env={"PYRITE_EMBED_PROVIDER": "none"})
    stop = threading.Event()
    statuses: list[int] = []
    clients = [threading.Thread(target=_flood, args=(server.url, stop, statuses), daemon=True)
               for _ in range(CLIENTS)]
    try:
        server.wait_healthy(30)
        for t in clients:
            t.start()
        time.sleep(2.0)  # every client has a search in flight or queued
        slowest = 0.0
        for _ in range(5):
            started = time.monotonic()
            r = httpx.get(f"{server.url}/api/kbs", timeout=30)
            slowest = max(slowest, time.monotonic() - started)
            assert r.status_code == 200
            time.sleep(0.2)
        assert slowest < 2.0, f"GET /api/kbs took {slowest:.1f}s during the flood"
        assert statuses and set(statuses) <= {200, 503}, sorted(set(statuses))
        assert 200 in statuses
        server.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            code = server.proc.wait(timeout=SHUTDOWN_GRACE_S + 20)
        except Exception:
            pytest.fail(f"no exit within {SHUTDOWN_GRACE_S + 20}s of SIGTERM during the flood")
        took = time.monotonic() - started
        assert took < SHUTDOWN_GRACE_S, f"exit took {took:.1f}s, grace is {SHUTDOWN_GRACE_S}s"
        assert code == 0, server.log()[-2000:]
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        stop.set()
        server.kill()
        for t in clients:
            t.join(timeout=FLOOD_MAX_S)
