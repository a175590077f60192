#!/usr/bin/env python3
"""Keyword search cost against entry size: one 10 KB entry and one 10 MB entry, side by side.

Both entries are generated text (scripts/corpus.py) written as real markdown files into two KBs and indexed
with `KBService.build`; each holds a rare word three times (at 10%, 50% and 90% of its body). The same
keyword search runs against each KB in alternating rounds; medians and the ratio 10 MB / 10 KB are printed
for the rare word and for the corpus' most common word. `--old` also times what search cost before
passages (snippet() over the whole body, plus reading the body), for the rare word.

    .venv/bin/python scripts/bench_search_cost.py                  # ~1 minute
    .venv/bin/python scripts/bench_search_cost.py --rounds 200 --old --json /tmp/search-cost.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import benchlib
import corpus
from benchlib import log, md_table, percentile, timed

benchlib.use_repo()
from pyrite.core import Pyrite  # noqa: E402

RARE = "zyxomorph"


def body_of(chars: int, seed: int) -> str:
    """About `chars` characters of generated paragraphs, with RARE at 10%, 50% and 90%."""
    parts: list[str] = []
    size = 0
    for entry in corpus.generate(10**7, seed=seed):
        parts.append(entry["body"])
        size += len(entry["body"]) + 2
        if size >= chars:
            break
    text = "\n\n".join(parts)[:chars]
    for at in (0.9, 0.5, 0.1):
        cut = text.rfind(" ", 0, int(len(text) * at)) + 1
        text = f"{text[:cut]}{RARE} {text[cut:]}"
    return text


def write_kb(core: Pyrite, home: Path, name: str, body: str) -> None:
    folder = home / "kbs-src" / name
    folder.mkdir(parents=True)
    (folder / "big.md").write_text(f"---\ntitle: Long notebook\n---\n{body}", encoding="utf-8")
    core.kbs.create_kb(name, folder)
    seconds, _ = timed(lambda: core.kbs.build(name))
    log(f"built KB {name} ({len(body):,} characters) in {seconds:.2f} s")


def cpu_timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall s, this thread's CPU s) of fn(): CPU time is what other tenants of the machine do not inflate."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def side_by_side(core: Pyrite, query: str, rounds: int) -> dict[str, Any]:
    """Median and p90 ms of the same keyword search in KB small and KB big, alternating round by round."""
    times: dict[str, list[tuple[float, float]]] = {"small": [], "big": []}
    for kb in times:  # warm-up
        core.search.search(query, kb=kb, mode="keyword")
    for i in range(rounds):
        order = ("small", "big") if i % 2 == 0 else ("big", "small")
        for kb in order:
            times[kb].append(cpu_timed(lambda: core.search.search(query, kb=kb, mode="keyword")))
    out: dict[str, Any] = {"query": query}
    for kb, values in times.items():
        wall = [v[0] * 1000 for v in values]
        out[kb] = {"median_ms": round(statistics.median(wall), 3), "p90_ms": round(percentile(wall, 90), 3),
                   "cpu_median_ms": round(statistics.median(v[1] * 1000 for v in values), 3)}
    out["ratio"] = round(out["big"]["median_ms"] / out["small"]["median_ms"], 2)
    out["cpu_ratio"] = round(out["big"]["cpu_median_ms"] / out["small"]["cpu_median_ms"], 2)
    return out


def old_style(core: Pyrite, query: str, kb: str, rounds: int) -> float:
    """Median ms of the work search did before passages for this entry: snippet() over it and its whole body."""
    sql = ("SELECT e.body, snippet(entries_fts, -1, '**', '**', '…', 16) FROM entries_fts "
           "CROSS JOIN entries e ON e.rowid = entries_fts.rowid WHERE entries_fts MATCH ? AND e.kb = ?")
    return statistics.median(timed(lambda: core.db.query(sql, (f'"{query}"', kb)))[0] * 1000 for _ in range(rounds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000, help="characters of the small entry")
    parser.add_argument("--big", type=int, default=10_000_000, help="characters of the big entry")
    parser.add_argument("--rounds", type=int, default=100, help="searches per side and query")
    parser.add_argument("--old", action="store_true", help="also time the pre-passages snippet (rare word)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    with benchlib.scratch("pyrite-bench-search-") as tmp:
        core = benchlib.open_core(tmp / "home", embed_provider="none")
        write_kb(core, tmp, "small", body_of(args.small, seed=1))
        write_kb(core, tmp, "big", body_of(args.big, seed=2))
        common = corpus.COMMON_WORDS[0]
        results = [side_by_side(core, RARE, args.rounds), side_by_side(core, common, args.rounds)]
        figures: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                   "load_average": os.getloadavg()[0], "python": platform.python_version(),
                                   "sizes": {"small": args.small, "big": args.big}, "rounds": args.rounds,
                                   "searches": results}
        print(f"\nload average {figures['load_average']:.1f}; {args.rounds} rounds per query\n")
        print(md_table(["query", "10 KB median / p90 ms", "10 MB median / p90 ms", "ratio",
                        "CPU median ms 10 KB / 10 MB", "CPU ratio"],
                       [[f"`{r['query']}`", f"{r['small']['median_ms']} / {r['small']['p90_ms']}",
                         f"{r['big']['median_ms']} / {r['big']['p90_ms']}", f"**{r['ratio']}x**",
                         f"{r['small']['cpu_median_ms']} / {r['big']['cpu_median_ms']}", f"{r['cpu_ratio']}x"]
                        for r in results]))
        if args.old:
            figures["old_style_ms"] = {kb: round(old_style(core, RARE, kb, 5), 2) for kb in ("small", "big")}
            print(f"\nbefore passages, snippet() + body of the entry alone, `{RARE}`: "
                  f"10 KB {figures['old_style_ms']['small']} ms, 10 MB {figures['old_style_ms']['big']} ms")
        core.close()
    benchlib.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
