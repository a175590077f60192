#!/usr/bin/env python3
"""Throughput of the embedding worker against a remote (OpenAI-compatible) provider.

The provider is tests/fake_provider.py on 127.0.0.1, answering every request in
a fixed time (default 100 ms) whatever its size, so the figures show what the
worker does with the network wait, not what a model costs.

1. Items per second draining a fresh queue of N entries (default 1,000) with
   EmbeddingWorker.process_queue(until_empty) at concurrency 1, 2, 4, 8 and
   batch size 10 and 50.
2. The drain time of the same N entries (batch 10, concurrency 4) when the
   server answers every 5th request with 429 and `Retry-After: 1`, against the
   same drain without rate limits, and their ratio.

Every run starts from a copy of one home whose N entries are all pending
(PYRITE_HOME lives in a temporary folder that is removed at the end). The
worker runs as `pyrite worker` would (default poll interval); one warm-up
request opens the process's shared HTTP client before any timing.

    .venv/bin/python scripts/bench_remote.py
    .venv/bin/python scripts/bench_remote.py --items 200 --json /tmp/remote.json
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import benchlib
from benchlib import log, machine_info, md_table
from corpus import Prose

benchlib.use_repo()
from pyrite.config import Settings  # noqa: E402
from pyrite.embedders import create_embedder  # noqa: E402
from pyrite.worker import EmbeddingWorker  # noqa: E402
from tests.fake_provider import FakeProvider  # noqa: E402

KB = "bench"
KEY = "sk-bench-not-a-real-key"


def make_template(home: Path, items: int, remote: dict[str, Any]) -> None:
    """A home with `items` entries of ~60 words, all pending in the embed queue."""
    core = benchlib.open_core(home, **remote)
    core.kbs.create_kb(KB)
    prose = Prose(seed=71)
    for i in range(items):
        core.kbs.create_entry(KB, f"Bench note {i}", f"{prose.text_words(60)} (note {i})", embed=False)
    pending = core.embedding.outstanding()
    core.close()
    if pending != items:
        raise SystemExit(f"template has {pending} pending items, expected {items}")


def warm_up(settings: Settings) -> None:
    """Open the process's shared HTTP client once (~0.5 s, TLS context included), outside every timing."""
    create_embedder(settings).embed(["warm up"])


def drain(template: Path, work: Path, remote: dict[str, Any], *, batch: int, concurrency: int) -> dict[str, Any]:
    """Copy the template home, drain its queue with one worker; seconds and outcome."""
    home = work / f"run-b{batch}-c{concurrency}-{time.monotonic_ns()}"
    shutil.copytree(template, home)
    core = benchlib.open_core(home, embed_batch_size=batch, embed_concurrency=concurrency, **remote)
    try:
        items = core.embedding.outstanding()
        worker = EmbeddingWorker(core.embedding, kind="bench", until_empty=True)
        started = time.perf_counter()
        totals = asyncio.run(worker.process_queue())
        seconds = time.perf_counter() - started
        counts = core.embedding.status()["counts"]
    finally:
        core.close()
        shutil.rmtree(home, ignore_errors=True)
    if counts["done"] != items:
        raise SystemExit(f"batch {batch} concurrency {concurrency}: {counts}, expected {items} done")
    return {"items": items, "seconds": round(seconds, 3), "items_per_s": round(items / seconds, 1),
            "done": totals.done, "released": totals.released}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="entries per drain (default 1000)")
    parser.add_argument("--concurrency", default="1,2,4,8", help="comma-separated (default 1,2,4,8)")
    parser.add_argument("--batch", default="10,50", help="comma-separated batch sizes (default 10,50)")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the server takes per request")
    parser.add_argument("--dimension", type=int, default=256, help="vector size the server answers")
    parser.add_argument("--rate-limit-every", type=int, default=5, help="every Nth request gets 429")
    parser.add_argument("--retry-after", default="1", help="Retry-After of those 429s")
    parser.add_argument("--rl-batch", type=int, default=10, help="batch size of the rate-limit drains")
    parser.add_argument("--rl-concurrency", type=int, default=4, help="concurrency of the rate-limit drains")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    concurrencies = benchlib.int_list(args.concurrency)
    batches = benchlib.int_list(args.batch)

    fake = FakeProvider(dimension=args.dimension, delay=args.delay).start()
    remote = {"embed_provider": "openai", "embed_url": fake.url, "embed_api_key": KEY}
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "server": {"delay_s": args.delay, "dimension": args.dimension},
        "items": args.items,
        "throughput": [],
    }
    try:
        with benchlib.scratch("pyrite-bench-remote-") as work:
            template = work / "template"
            t = time.perf_counter()
            make_template(template, args.items, remote)
            log(f"template: {args.items} pending entries in {time.perf_counter() - t:.1f}s")
            warm_up(benchlib.settings(template, **remote))

            for batch in batches:
                for concurrency in concurrencies:
                    fake.reset()
                    run = drain(template, work, remote, batch=batch, concurrency=concurrency)
                    run.update(batch=batch, concurrency=concurrency, requests=fake.count,
                               max_in_flight=fake.in_flight_max)
                    results["throughput"].append(run)
                    log(f"batch {batch:3d} concurrency {concurrency}: {run['seconds']:7.2f}s "
                        f"{run['items_per_s']:8.1f} items/s ({fake.count} requests)")

            rl: dict[str, Any] = {"batch": args.rl_batch, "concurrency": args.rl_concurrency,
                                  "every": args.rate_limit_every, "retry_after": args.retry_after}
            fake.fail_every = None
            fake.reset()
            rl["plain"] = drain(template, work, remote, batch=args.rl_batch, concurrency=args.rl_concurrency)
            rl["plain"]["requests"] = fake.count
            fake.reset()
            fake.fail_every = (args.rate_limit_every, 429, {"Retry-After": args.retry_after}, "Rate limit reached")
            rl["limited"] = drain(template, work, remote, batch=args.rl_batch, concurrency=args.rl_concurrency)
            rl["limited"]["requests"] = fake.count
            rl["limited"]["rate_limited"] = fake.statuses().count(429)
            fake.fail_every = None
            rl["ratio"] = round(rl["limited"]["seconds"] / rl["plain"]["seconds"], 2)
            rl["floor_s"] = rl["limited"]["rate_limited"] * float(args.retry_after)
            results["rate_limit"] = rl
    finally:
        fake.stop()

    print(report(results))
    benchlib.write_json(args.json_path, results)
    return 0


def report(results: dict[str, Any]) -> str:
    """The results as markdown tables."""
    m = results["machine"]
    lines = [f"Remote provider benchmark, {results['date']}, {m['cores']} cores, Python {m['python']}; "
             f"server answers each request in {results['server']['delay_s'] * 1000:.0f} ms, "
             f"{results['server']['dimension']}-d vectors; {results['items']} items per drain.", ""]
    concurrencies = sorted({r["concurrency"] for r in results["throughput"]})
    runs = {(r["batch"], r["concurrency"]): r for r in results["throughput"]}
    lines.append(md_table(["batch"] + [f"concurrency {c}" for c in concurrencies], [
        [b] + [f"{runs[b, c]['items_per_s']:.0f} items/s ({runs[b, c]['seconds']:.2f} s)" for c in concurrencies]
        for b in sorted({b for b, _ in runs})]))
    rl = results.get("rate_limit")
    if rl:
        plain, limited = rl["plain"], rl["limited"]
        lines += ["", f"Drain of {plain['items']} items, batch {rl['batch']}, concurrency {rl['concurrency']}:", "",
                  md_table(["server", "requests", "429s", "seconds", "items/s"], [
                      ["no rate limit", plain["requests"], 0, f"{plain['seconds']:.2f}", f"{plain['items_per_s']:.0f}"],
                      [f"every {rl['every']}th request 429, Retry-After: {rl['retry_after']}", limited["requests"],
                       limited["rate_limited"], f"{limited['seconds']:.2f}", f"{limited['items_per_s']:.0f}"]]),
                  "",
                  f"Ratio rate-limited / plain: **{rl['ratio']:.1f}x** (the 429s alone ask for at least "
                  f"{rl['floor_s']:.0f} s of waiting)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
