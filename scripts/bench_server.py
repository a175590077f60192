#!/usr/bin/env python3
"""Benchmarks of the pyrite REST + WebSocket server (`pyrite serve`), with the local model.

Everything runs against real `pyrite serve` subprocesses on 127.0.0.1 (free
ports, temporary PYRITE_HOMEs, stopped with SIGTERM), driven by httpx and
websockets clients in this process. The machine is assumed shared and noisy,
so the figures that matter are ratios of things measured side by side.

Three servers run at once, each on its own home whose KB is pre-filled with
--entries generated markdown files, indexed by `pyrite kb create` with
embedding off (so the prefill embeds nothing and the measured writes are the
only ones embedded):

  W  the worker server: PYRITE_EMBED_PROVIDER=local, embedding worker running
  N  the same with --no-worker: each write embeds synchronously in the request
  O  embedding off (PYRITE_EMBED_PROVIDER=none): the floor of the write path

1. POST /api/entries latency (median, p99), one write at a time, W N O in a
   shuffled order each round. After each write to W the benchmark waits for
   its embed_complete event, so no model is running while another server is
   timed. Ratios: N/W (what the worker saves a writer) and W/O (what is left
   of the model in a worker write: should be ~1).
2. Writes per second with --clients concurrent httpx.AsyncClient clients,
   --seconds per server in rounds W N O O N W of --seconds/2 each. For W also
   the embeddings committed during the load, the backlog left, and the time
   to drain it (before the next round starts), so "embedded writes/s" is
   comparable with N. Then one client on O, to show how the bare write path
   scales with concurrency.
3. Event delay on W: one WebSocket client on /ws; entries POSTed one at a
   time (random 0-100 ms gap); for each, the time from the POST's 201 (the
   commit happened before it) to the arrival of its entry_created event and
   of its embed_complete event, with the server-clock split of the latter
   (commit -> embedded by the worker, embedded -> delivered).

    .venv/bin/python scripts/bench_server.py --entries 500 --requests 50 --seconds 10  # quick
    .venv/bin/python scripts/bench_server.py --json /tmp/bench-server.json             # full
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

import benchlib
from benchlib import log, run_cli, summary_ms
from corpus import Prose, write_kb_files

KB = "bench"
READY_TIMEOUT_S = 180.0


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def cell(v: Any) -> str:
    """This report's table cells: floats with 2 decimals under 100, none above."""
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return benchlib.md_table(headers, rows, cell=cell)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------
# servers and event listeners
# --------------------------------------------------------------------------------------


class Server:
    """One `pyrite serve` subprocess on its own home and a free loopback port."""

    def __init__(self, name: str, home: Path, *, worker: bool, log_level: str, provider: str = "local") -> None:
        self.name = name
        self.home = home
        self.worker = worker
        self.provider = provider
        self.log_level = log_level
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home.parent / f"{name}.log"
        self.started_s = 0.0
        self.stop_info: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        self.port = free_port()
        argv = benchlib.pyrite_argv("serve", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", self.log_level)
        if not self.worker:
            argv.append("--no-worker")
        env = benchlib.child_env(self.home, PYRITE_EMBED_PROVIDER=self.provider)
        self._log = open(self.log_path, "wb")
        self._t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    async def wait_ready(self, *, model: bool) -> dict[str, Any]:
        """Poll /api/health until it answers (and, with model=True, the worker runs with its model loaded)."""
        deadline = time.perf_counter() + READY_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            while time.perf_counter() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} server exited {self.proc.returncode}: {self.tail_log()}")
                try:
                    health = (await client.get("/api/health")).json()
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
                    continue
                if not model or (health["worker"]["running"] and health["model"]["loaded"]):
                    self.started_s = time.perf_counter() - self._t0
                    return health
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} server not ready after {READY_TIMEOUT_S}s: {self.tail_log()}")

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait; report the exit code and how long shutting down took."""
        if self.proc is None:
            return self.stop_info
        t0 = time.perf_counter()
        code = benchlib.stop_process(self.proc, timeout=40)
        self.stop_info = {"exit_code": code, "stop_s": round(time.perf_counter() - t0, 3)}
        self.proc = None
        self._log.close()
        return self.stop_info

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the server process has used so far."""
        if self.proc is None:
            return 0.0
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tail_log(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class Seen:
    arrived: float   # perf_counter at arrival
    wall: float      # time.time() at arrival
    event: dict[str, Any]


@dataclass
class Events:
    """One /ws client: records each event's arrival; lets callers await (type, entry_id)."""

    url: str
    seen: dict[tuple[str, str], Seen] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    disconnects: list[Any] = field(default_factory=list)
    last_id: int | None = None
    _waiters: dict[tuple[str, str], asyncio.Future[Seen]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), timeout=30)

    async def _run(self) -> None:
        while True:
            url = self.url if self.last_id is None else f"{self.url}?since={self.last_id}"
            try:
                async with ws_connect(url, max_size=None, max_queue=None, ping_interval=None) as ws:
                    self._connected.set()
                    async for raw in ws:
                        arrived, wall = time.perf_counter(), time.time()
                        event = json.loads(raw)
                        self.last_id = event["id"]
                        self.counts[event["type"]] = self.counts.get(event["type"], 0) + 1
                        key = (event["type"], event["entry_id"])
                        seen = Seen(arrived, wall, event)
                        self.seen.setdefault(key, seen)
                        fut = self._waiters.pop(key, None)
                        if fut is not None and not fut.done():
                            fut.set_result(seen)
            except ConnectionClosed as exc:  # e.g. 1013, too slow: resume with ?since=
                self.disconnects.append(getattr(exc.rcvd, "code", None))
            except OSError as exc:
                self.disconnects.append(str(exc))
                await asyncio.sleep(0.2)

    async def wait(self, type_: str, entry_id: str, timeout: float) -> Seen:
        key = (type_, entry_id)
        if key in self.seen:
            return self.seen[key]
        fut = self._waiters.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._waiters[key] = fut
        return await asyncio.wait_for(asyncio.shield(fut), timeout=timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass


class Writer:
    """Generates entry payloads with unique titles."""

    def __init__(self, seed: int, body_bytes: int) -> None:
        self.words = Prose(seed=seed, english=False)
        self.body_bytes = body_bytes
        self.n = 0

    def payload(self, tag: str) -> dict[str, Any]:
        self.n += 1
        return {"kb": KB, "title": self.words.title(f"{tag} {self.n}"), "body": self.words.text(self.body_bytes),
                "tags": ["bench", tag]}


async def post_entry(client: httpx.AsyncClient, payload: dict[str, Any]) -> tuple[float, float, dict[str, Any]]:
    """POST one entry; return (seconds, perf_counter at the response, the entry)."""
    t0 = time.perf_counter()
    resp = await client.post("/api/entries", json=payload)
    t1 = time.perf_counter()
    if resp.status_code != 201:
        raise RuntimeError(f"POST /api/entries -> {resp.status_code}: {resp.text[:500]}")
    return t1 - t0, t1, resp.json()


async def embed_status(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/api/index/embed-status", params={"kb": KB})).json()


async def wait_drained(client: httpx.AsyncClient, timeout: float) -> float:
    """Seconds until the KB has nothing pending or processing."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        counts = (await embed_status(client))["counts"]
        if counts.get("pending", 0) + counts.get("processing", 0) == 0:
            return time.perf_counter() - t0
        await asyncio.sleep(0.1)
    raise RuntimeError(f"queue not drained after {timeout}s")


# --------------------------------------------------------------------------------------
# 0. homes
# --------------------------------------------------------------------------------------


def prefill_home(tmp: Path, name: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """A home with KB `bench` of args.entries generated files, indexed by the CLI with embedding off."""
    home, folder = tmp / name, tmp / f"{name}-files"
    t0 = time.perf_counter()
    write_kb_files(folder, args.entries, Prose(seed=seed, english=False), body_bytes=args.body_bytes)
    gen_s = time.perf_counter() - t0
    env = benchlib.child_env(home, PYRITE_EMBED_PROVIDER=args.prefill_provider)
    create_s, out = run_cli(["kb", "create", KB, "--path", str(folder), "--format", "json"], env)
    info = json.loads(out)
    entries = info["index"]["added"]
    embed_s = 0.0
    if args.prefill_provider == "hash":  # give the vector table its realistic size, cheaply
        embed_s, _ = run_cli(["index", "embed", "--kb", KB, "--format", "json"], env)
    return {"home": home, "files_s": round(gen_s, 2), "index_s": round(create_s, 2),
            "embed_s": round(embed_s, 2), "entries": entries}


# --------------------------------------------------------------------------------------
# 1. write latency: worker, --no-worker, embedding off
# --------------------------------------------------------------------------------------

NAMES = {"worker": "worker", "no_worker": "--no-worker", "off": "embedding off"}


async def bench_latency(servers: dict[str, Server], ev_w: Events, args: argparse.Namespace) -> dict[str, Any]:
    writer = Writer(seed=21, body_bytes=args.body_bytes)
    rng = random.Random(5)
    lat: dict[str, list[float]] = {k: [] for k in servers}
    to_embedded: list[float] = []
    statuses: dict[str, dict[str, int]] = {k: {} for k in servers}
    clients = {k: httpx.AsyncClient(base_url=srv.url, timeout=httpx.Timeout(120.0)) for k, srv in servers.items()}
    cpu0: dict[str, float] = {}
    try:
        async def one(which: str, record: bool) -> None:
            seconds, t_resp, entry = await post_entry(clients[which], writer.payload("lat"))
            if which == "worker":  # let its model finish before anything else is timed
                done = await ev_w.wait("embed_complete", entry["id"], timeout=300)
                if record:
                    to_embedded.append(done.arrived - t_resp + seconds)
            if record:
                lat[which].append(seconds)
                s = entry.get("embedding_status") or "none"
                statuses[which][s] = statuses[which].get(s, 0) + 1

        for _ in range(args.warmup):  # the --no-worker server loads its model on its first write
            for which in servers:
                await one(which, False)
        cpu0 = {k: srv.cpu_s() for k, srv in servers.items()}
        for i in range(args.requests):
            order = list(servers)
            rng.shuffle(order)
            for which in order:
                await one(which, True)
            if (i + 1) % max(1, args.requests // 5) == 0:
                log(f"  latency: {i + 1}/{args.requests} rounds")
    finally:
        for c in clients.values():
            await c.aclose()
    out: dict[str, Any] = {"requests_each": args.requests, "warmup_each": args.warmup,
                           "body_bytes": args.body_bytes}
    for k in servers:
        out[k] = summary_ms(lat[k])
    # Server CPU per timed write (for W it includes the background embedding, which finished before the next write).
    out["server_cpu_ms_per_write"] = {k: round((srv.cpu_s() - cpu0[k]) * 1000 / max(1, args.requests), 1)
                                      for k, srv in servers.items()}
    out["worker_post_to_embed_complete"] = summary_ms(to_embedded)
    out["response_embedding_status"] = statuses
    w, n, z = out["worker"], out["no_worker"], out["off"]
    out["median_ratio_no_worker_over_worker"] = ratio(n["median_ms"], w["median_ms"])
    out["p99_ratio_no_worker_over_worker"] = ratio(n["p99_ms"], w["p99_ms"])
    out["median_ratio_worker_over_off"] = ratio(w["median_ms"], z["median_ms"])
    out["p99_ratio_worker_over_off"] = ratio(w["p99_ms"], z["p99_ms"])
    out["median_ratio_worker_embedded_over_no_worker"] = ratio(out["worker_post_to_embed_complete"]["median_ms"],
                                                               n["median_ms"])
    return out


# --------------------------------------------------------------------------------------
# 2. throughput with concurrent clients
# --------------------------------------------------------------------------------------


async def load_round(key: str, srv: Server, ev: Events | None, seconds: float, clients_n: int,
                     writer: Writer) -> dict[str, Any]:
    """clients_n clients POST entries back to back for `seconds`; in-flight writes finish after the deadline."""
    lat: list[float] = []
    errors: list[str] = []
    started = asyncio.Event()
    stop_at = 0.0

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=srv.url, timeout=httpx.Timeout(300.0)) as client:
            await client.get("/api/health")  # open the connection before the clock starts
            await started.wait()
            while time.perf_counter() < stop_at:
                try:
                    s, _, _ = await post_entry(client, writer.payload("rps"))
                except Exception as exc:  # counted, not fatal
                    errors.append(str(exc)[:200])
                    continue
                lat.append(s)

    tasks = [asyncio.create_task(client_loop()) for _ in range(clients_n)]
    await asyncio.sleep(0.3)
    cpu0, me0 = srv.cpu_s(), time.process_time()
    wall0 = time.time()
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    started.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    wall1 = time.time()
    cpu_load, me = srv.cpu_s() - cpu0, time.process_time() - me0
    out: dict[str, Any] = {"server": key, "clients": clients_n, "seconds": round(elapsed, 2), "writes": len(lat),
                           "errors": len(errors), "error_samples": errors[:3],
                           "writes_per_s": round(len(lat) / elapsed, 2), "latency": summary_ms(lat),
                           "server_cpu_s_load": round(cpu_load, 2), "server_cpu_s": round(cpu_load, 2),
                           "client_cpu_s": round(me, 2)}
    if ev is not None:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
            counts = (await embed_status(client))["counts"]
            backlog = counts.get("pending", 0) + counts.get("processing", 0)
            drain_s = await wait_drained(client, timeout=max(900.0, 60 * seconds))
        # Embeddings the worker committed during the load window (server clock on the events).
        during = sum(1 for s in ev.seen.values() if s.event["type"] == "embed_complete"
                     and wall0 <= s.event["time"] <= wall1)
        out.update({"embedded_during_load": during, "embeds_per_s_during_load": round(during / elapsed, 2),
                    "backlog_at_end": backlog, "drain_s": round(drain_s, 2),
                    "embeds_per_s_draining": round(backlog / drain_s, 2) if drain_s > 0 and backlog else None,
                    "server_cpu_s": round(srv.cpu_s() - cpu0, 2)})
    return out


async def bench_throughput(servers: dict[str, Server], ev_w: Events, args: argparse.Namespace) -> dict[str, Any]:
    writer = Writer(seed=31, body_bytes=args.body_bytes)
    half = args.seconds / 2
    rounds = []
    order = ["worker", "no_worker", "off", "off", "no_worker", "worker"]
    for key in order:
        log(f"  throughput: {args.clients} clients on {NAMES[key]} for {half:g}s")
        ev = ev_w if key == "worker" else None
        rounds.append(await load_round(key, servers[key], ev, half, args.clients, writer))
        log(f"    {rounds[-1]['writes_per_s']} writes/s" + (
            f", backlog {rounds[-1]['backlog_at_end']} drained in {rounds[-1]['drain_s']}s" if ev else ""))
    # One client against the server with embedding off: how far 10 clients scale the bare write path.
    log(f"  throughput: 1 client on {NAMES['off']} for {half:g}s")
    single = await load_round("off", servers["off"], None, half, 1, writer)

    def agg(name: str) -> dict[str, Any]:
        rs = [r for r in rounds if r["server"] == name]
        secs = sum(r["seconds"] for r in rs)
        writes = sum(r["writes"] for r in rs)
        a: dict[str, Any] = {"writes": writes, "seconds": round(secs, 2), "writes_per_s": round(writes / secs, 2),
                             "errors": sum(r["errors"] for r in rs),
                             "median_latency_ms": round(statistics.median(r["latency"]["median_ms"] for r in rs), 2),
                             "p99_latency_ms": max(r["latency"]["p99_ms"] for r in rs),
                             "server_cpu_share_during_load": round(sum(r["server_cpu_s_load"] for r in rs) / secs, 2),
                             "client_cpu_share_during_load": round(sum(r["client_cpu_s"] for r in rs) / secs, 2),
                             "server_cpu_ms_per_write": round(sum(r["server_cpu_s"] for r in rs) * 1000 / max(1, writes),
                                                              1)}
        if name == "worker":
            during = sum(r["embedded_during_load"] for r in rs)
            backlog = sum(r["backlog_at_end"] for r in rs)
            drain = sum(r["drain_s"] for r in rs)
            a.update({"embeds_per_s_during_load": round(during / secs, 2),
                      "backlog_at_end": backlog, "drain_s": round(drain, 2),
                      "embeds_per_s_draining": round(backlog / drain, 2) if drain else None,
                      "writes_until_all_embedded_per_s": round(writes / (secs + drain), 2)})
        return a

    res: dict[str, Any] = {"clients": args.clients, "seconds_each": args.seconds, "order": order, "rounds": rounds}
    for key in servers:
        res[key] = agg(key)
    res["off_one_client"] = single
    w, n, z = res["worker"], res["no_worker"], res["off"]
    res["writes_per_s_ratio_worker_over_no_worker"] = ratio(w["writes_per_s"], n["writes_per_s"])
    res["writes_per_s_ratio_worker_over_off"] = ratio(w["writes_per_s"], z["writes_per_s"])
    res["embedded_per_s_ratio_worker_over_no_worker"] = ratio(w["writes_until_all_embedded_per_s"], n["writes_per_s"])
    res["off_writes_per_s_ratio_clients_over_one"] = ratio(z["writes_per_s"], single["writes_per_s"])
    return res


# --------------------------------------------------------------------------------------
# 3. event delay
# --------------------------------------------------------------------------------------


async def bench_events(srv_w: Server, args: argparse.Namespace) -> dict[str, Any]:
    writer = Writer(seed=41, body_bytes=args.body_bytes)
    rng = random.Random(9)
    ev = Events(srv_w.ws_url)
    await ev.start()
    created: list[float] = []
    embedded: list[float] = []
    created_from_send: list[float] = []
    commit_to_embedded: list[float] = []   # server clock: entry_created.time -> embed_complete.time
    embedded_to_arrival: list[float] = []  # embed_complete.time -> arrival here (same machine clock)
    created_to_arrival: list[float] = []
    before_response = 0
    try:
        async with httpx.AsyncClient(base_url=srv_w.url, timeout=httpx.Timeout(120.0)) as client:
            for i in range(args.warmup + args.requests):
                await asyncio.sleep(rng.uniform(0.0, 0.1))  # no phase lock with the server's 50 ms tail tick
                seconds, t_resp, entry = await post_entry(client, writer.payload("ev"))
                c = await ev.wait("entry_created", entry["id"], timeout=60)
                e = await ev.wait("embed_complete", entry["id"], timeout=300)
                if i < args.warmup:
                    continue
                created.append(c.arrived - t_resp)
                created_from_send.append(c.arrived - (t_resp - seconds))
                embedded.append(e.arrived - t_resp)
                before_response += c.arrived < t_resp
                commit_to_embedded.append(e.event["time"] - c.event["time"])
                embedded_to_arrival.append(e.wall - e.event["time"])
                created_to_arrival.append(c.wall - c.event["time"])
                if (i + 1 - args.warmup) % max(1, args.requests // 5) == 0:
                    log(f"  events: {i + 1 - args.warmup}/{args.requests} writes")
    finally:
        await ev.close()
    return {
        "requests": args.requests,
        "response_to_entry_created": summary_ms(created),
        "send_to_entry_created": summary_ms(created_from_send),
        "response_to_embed_complete": summary_ms(embedded),
        "server_commit_to_embedded": summary_ms(commit_to_embedded),
        "entry_created_commit_to_arrival": summary_ms(created_to_arrival),
        "embed_complete_commit_to_arrival": summary_ms(embedded_to_arrival),
        "entry_created_before_response": before_response,
        "ws_disconnects": ev.disconnects,
    }


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


async def run(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    log(f"prefilling three homes with {args.entries} entries each (provider {args.prefill_provider}) ...")
    pre = {"worker": prefill_home(tmp, "home-worker", args, seed=1),
           "no_worker": prefill_home(tmp, "home-noworker", args, seed=2),
           "off": prefill_home(tmp, "home-off", args, seed=3)}
    for k, p in pre.items():
        log(f"  {NAMES[k]}: {p['files_s']}s writing files, {p['index_s']}s indexing, {p['embed_s']}s embedding")
    servers = {"worker": Server("worker", pre["worker"]["home"], worker=True, log_level=args.log_level),
               "no_worker": Server("no_worker", pre["no_worker"]["home"], worker=False, log_level=args.log_level),
               "off": Server("off", pre["off"]["home"], worker=True, log_level=args.log_level, provider="none")}
    srv_w = servers["worker"]
    result: dict[str, Any] = {"prefill": {k: {kk: (str(v) if isinstance(v, Path) else v) for kk, v in p.items()}
                                          for k, p in pre.items()}}
    ev_w: Events | None = None
    try:
        for srv in servers.values():
            srv.start()
        health = {k: await srv.wait_ready(model=(k == "worker")) for k, srv in servers.items()}
        log("servers up: " + ", ".join(f"{NAMES[k]} on :{s.port} ({s.started_s:.1f}s)" for k, s in servers.items()))
        result["startup_s"] = {k: round(s.started_s, 2) for k, s in servers.items()}
        result["health"] = health
        for k, srv in servers.items():
            async with httpx.AsyncClient(base_url=srv.url) as c:
                kbs = (await c.get("/api/kbs")).json()["kbs"]
            if kbs[0]["entries"] != args.entries:
                raise RuntimeError(f"{k}: prefill indexed {kbs[0]['entries']} entries, expected {args.entries}")
        ev_w = Events(srv_w.ws_url)
        await ev_w.start()

        log(f"1. POST latency, {args.requests} writes per server, shuffled round by round ...")
        result["latency"] = await bench_latency(servers, ev_w, args)
        log(f"2. throughput, {args.clients} clients ...")
        result["throughput"] = await bench_throughput(servers, ev_w, args)
        await ev_w.close()
        ev_w = None
        result["stop"] = {k: servers[k].stop() for k in ("no_worker", "off")}
        log(f"3. event delay, {args.requests} writes one at a time ...")
        result["events"] = await bench_events(srv_w, args)
        async with httpx.AsyncClient(base_url=srv_w.url) as c:
            st = await embed_status(c)
            result["final_status_worker"] = {"counts": st["counts"], "last_error": st["last_error"]}
    finally:
        if ev_w is not None:
            await ev_w.close()
        stops = result.setdefault("stop", {})
        for k, srv in servers.items():
            if srv.proc is not None:
                stops[k] = srv.stop()
        for k, srv in servers.items():
            text = srv.tail_log(10 ** 6)
            bad = [ln for ln in text.splitlines() if " ERROR " in ln or "Traceback" in ln]
            result.setdefault("server_log_errors", {})[k] = bad[:10]
    return result


def report(data: dict[str, Any], args: argparse.Namespace) -> str:
    info, lat, thr, ev = data["machine"], data["latency"], data["throughput"], data["events"]
    pe = lat["worker_post_to_embed_complete"]

    cpu = lat["server_cpu_ms_per_write"]

    def lrow(label: str, s: dict[str, Any], key: str | None = None) -> list[Any]:
        return [label, s["median_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"], cpu[key] if key else ""]

    tw, tn, tz, t1 = thr["worker"], thr["no_worker"], thr["off"], thr["off_one_client"]
    lines = [
        f"# pyrite server benchmarks ({info['date']}, {info['cores']} cores, {info['cpu']})", "",
        f"Each KB pre-filled with {args.entries} entries (prefill provider {args.prefill_provider}); every body "
        f"~{args.body_bytes} B; model local:all-MiniLM-L6-v2 on CPU; servers at --log-level {args.log_level}. "
        f"Total {data['seconds']:.0f} s.", "",
        f"## 1. POST /api/entries latency, one write at a time ({lat['requests_each']} per server, order "
        "shuffled each round)", "",
        md_table(["server", "median ms", "p90 ms", "p99 ms", "max ms", "server CPU ms/write"], [
            lrow("worker (201 before embedding)", lat["worker"], "worker"),
            lrow("--no-worker (embeds in the request)", lat["no_worker"], "no_worker"),
            lrow("embedding off (provider none; floor)", lat["off"], "off"),
            lrow("worker: POST sent -> its embed_complete arrives", pe),
            ["**no-worker / worker**", lat["median_ratio_no_worker_over_worker"], "",
             lat["p99_ratio_no_worker_over_worker"], "", ""],
            ["**worker / embedding off**", lat["median_ratio_worker_over_off"], "",
             lat["p99_ratio_worker_over_off"], "", ""],
            ["**worker: embedded / no-worker**", lat["median_ratio_worker_embedded_over_no_worker"], "", "", "", ""],
        ]), "",
        "server CPU ms/write: CPU time of the server process over the timed writes (the worker's includes its "
        "background embedding) divided by the writes.", "",
        f"## 2. {thr['clients']} concurrent clients creating entries ({thr['seconds_each']:g} s per server in "
        f"rounds {' '.join({'worker': 'W', 'no_worker': 'N', 'off': 'O'}[k] for k in thr['order'])})", "",
        md_table(["server", "writes/s", "median ms", "p99 ms", "embeds/s during load", "backlog at end",
                  "drain s", "embeds/s draining", "embedded writes/s", "server CPU ms/write", "server CPU share",
                  "client CPU share"], [
            ["worker", tw["writes_per_s"], tw["median_latency_ms"], tw["p99_latency_ms"],
             tw["embeds_per_s_during_load"], tw["backlog_at_end"], tw["drain_s"],
             tw["embeds_per_s_draining"] or "", tw["writes_until_all_embedded_per_s"], tw["server_cpu_ms_per_write"],
             tw["server_cpu_share_during_load"], tw["client_cpu_share_during_load"]],
            ["--no-worker", tn["writes_per_s"], tn["median_latency_ms"], tn["p99_latency_ms"],
             "= writes/s", 0, 0, "", tn["writes_per_s"], tn["server_cpu_ms_per_write"],
             tn["server_cpu_share_during_load"], tn["client_cpu_share_during_load"]],
            ["embedding off", tz["writes_per_s"], tz["median_latency_ms"], tz["p99_latency_ms"], "", "", "", "", "",
             tz["server_cpu_ms_per_write"], tz["server_cpu_share_during_load"], tz["client_cpu_share_during_load"]],
            ["embedding off, 1 client", t1["writes_per_s"], t1["latency"]["median_ms"], t1["latency"]["p99_ms"],
             "", "", "", "", "", round(t1["server_cpu_s"] * 1000 / max(1, t1["writes"]), 1),
             round(t1["server_cpu_s"] / t1["seconds"], 2), round(t1["client_cpu_s"] / t1["seconds"], 2)],
            ["**worker / no-worker**", thr["writes_per_s_ratio_worker_over_no_worker"], "", "", "", "", "", "",
             thr["embedded_per_s_ratio_worker_over_no_worker"],
             ratio(tw["server_cpu_ms_per_write"], tn["server_cpu_ms_per_write"]), "", ""],
            ["**worker / embedding off**", thr["writes_per_s_ratio_worker_over_off"], "", "", "", "", "", "", "",
             "", "", ""],
            [f"**embedding off, {thr['clients']} clients / 1**", thr["off_writes_per_s_ratio_clients_over_one"],
             "", "", "", "", "", "", "", "", "", ""],
        ]), "",
        "embedded writes/s: writes / (load time + time to drain the backlog they left). server CPU ms/write: "
        "the server process's CPU time over the round (for the worker, until its backlog is drained) / writes. "
        "CPU share: CPU seconds per second of load (2.0 = both cores), server and this load generator.", "",
        f"## 3. Event delay on /ws, worker server ({ev['requests']} writes one at a time)", "",
        md_table(["interval", "median ms", "p90 ms", "p99 ms"], [
            [label, ev[key]["median_ms"], ev[key]["p90_ms"], ev[key]["p99_ms"]] for label, key in [
                ("201 response -> entry_created arrives", "response_to_entry_created"),
                ("201 response -> embed_complete arrives", "response_to_embed_complete"),
                ("server: entry committed -> embedding committed", "server_commit_to_embedded"),
                ("entry_created committed -> arrives", "entry_created_commit_to_arrival"),
                ("embed_complete committed -> arrives", "embed_complete_commit_to_arrival"),
            ]]),
        "", f"entry_created arrived before the 201 for {ev['entry_created_before_response']} of "
            f"{ev['requests']} writes (those count as negative delays).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000, help="entries pre-filled in each KB (default 10000)")
    ap.add_argument("--requests", type=int, default=300,
                    help="timed writes per server in part 1, and writes in part 3 (default 300)")
    ap.add_argument("--clients", type=int, default=10, help="concurrent clients in part 2 (default 10)")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="seconds of load per server in part 2, in two rounds of half (default 20)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed writes per server first (default 5)")
    ap.add_argument("--body-bytes", type=int, default=1000,
                    help="approximate body size of pre-filled and written entries (default 1000)")
    ap.add_argument("--prefill-provider", choices=("none", "hash"), default="none",
                    help="provider while pre-filling: none (no vectors) or hash (model-free vectors) (default none)")
    ap.add_argument("--log-level", default="warning", choices=("warning", "info"),
                    help="the servers' --log-level (info logs every request) (default warning)")
    ap.add_argument("--tmp", default=None, help="parent folder of the temporary homes (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (server logs, homes)")
    ap.add_argument("--json", default=None, help="write the results as JSON to this path")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    with benchlib.scratch("pyrite-bench-server-", args.tmp, keep=args.keep) as tmp:
        result = asyncio.run(run(tmp, args))
    lat, thr, ev = result["latency"], result["throughput"], result["events"]
    stops = result.get("stop", {})
    targets = {
        "worker_post_median_within_1.5x_of_embedding_off": lat["median_ratio_worker_over_off"] <= 1.5,
        "worker_post_p99_within_2x_of_embedding_off": lat["p99_ratio_worker_over_off"] <= 2.0,
        "no_worker_over_worker_median_at_least_5x": lat["median_ratio_no_worker_over_worker"] >= 5.0,
        "worker_writes_per_s_at_least_half_of_embedding_off": thr["writes_per_s_ratio_worker_over_off"] >= 0.5,
        "worker_embedded_writes_per_s_at_least_no_worker":
            thr["embedded_per_s_ratio_worker_over_no_worker"] >= 1.0,
        # The server pokes its event tail after each write (91a39f4): no waiting for the 50 ms poll.
        "entry_created_median_under_20ms": ev["response_to_entry_created"]["median_ms"] < 20.0,
        "embed_complete_delivery_median_under_50ms": ev["embed_complete_commit_to_arrival"]["median_ms"] < 50.0,
        "exit_status_0_after_sigterm": bool(stops) and all(s.get("exit_code") == 0 for s in stops.values()),
    }
    data = {"benchmark": "bench_server", "machine": benchlib.machine_info(), "args": vars(args),
            "seconds": round(time.perf_counter() - started, 1), **result, "targets": targets}
    print(report(data, args))
    print("\n## Targets\n")
    for name, ok in targets.items():
        print(f"- {'PASS' if ok else 'FAIL'} {name}")
    print("\nservers stopped with SIGTERM: " + ", ".join(
        f"{NAMES[k]} exit {s.get('exit_code')} in {s.get('stop_s')}s" for k, s in stops.items()))
    if any(result["server_log_errors"].values()):
        print(f"server log errors: {result['server_log_errors']}")
    benchlib.write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
