#!/usr/bin/env python3
"""Core benchmarks of pyrite with embedding off (provider none).

Measures, in one run and side by side (the figures that matter are ratios):

1. ``KBService.create_entry`` latency in a KB of ~100 entries and in one of
   ~10,000 entries, interleaved write by write (median, p99, ratio 10k/100).
2. ``index build`` of N generated ~2 KB markdown files: ``KBService.build``
   in this process and the CLI ``pyrite index build --kb X --no-embed`` in a
   subprocess, each on a fresh index (files per second).
3. ``index sync`` with nothing changed over those files (seconds), in process
   and through the CLI, next to a bare CLI start (``pyrite kb list``).

Every home (PYRITE_HOME) lives in a temporary folder that is removed at the end.

    .venv/bin/python scripts/bench_core.py                        # full sizes
    .venv/bin/python scripts/bench_core.py --files 1000 --creates 100 --json /tmp/core.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import benchlib
from benchlib import machine_info, md_table, run_cli, summary_ms, timed, write_json
from corpus import Prose, write_kb_files

benchlib.use_repo()
from pyrite.core import Pyrite  # noqa: E402

KB = "bench"


# --------------------------------------------------------------------------------------
# the benchmarks
# --------------------------------------------------------------------------------------


def open_core(home: Path) -> Pyrite:
    return benchlib.open_core(home, embed_provider="none")


def bench_build_and_sync(tmp: Path, args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Generate the files, build fresh indexes in process and by CLI (alternating), then sync unchanged."""
    folder = tmp / "files"
    benchlib.log(f"generating {args.files} markdown files of ~{args.file_bytes} bytes ...")
    t_gen, _ = timed(lambda: write_kb_files(folder, args.files, Prose(seed=1), body_bytes=args.file_bytes))
    sizes = [e.stat().st_size for e in os.scandir(folder)]
    benchlib.log(f"  {len(sizes)} files, mean {statistics.fmean(sizes):.0f} B, in {t_gen:.1f}s")

    env_none = {"PYRITE_EMBED_PROVIDER": "none"}
    t_start, _ = run_cli(["kb", "list"], benchlib.child_env(tmp / "home-start", **env_none))  # warm the CLI's imports
    py_build: list[float] = []
    cli_build: list[float] = []
    cli_reported: list[float] = []
    main_home = None
    for rep in range(args.repeat):
        order = ["py", "cli"] if rep % 2 == 0 else ["cli", "py"]
        for kind in order:
            home = tmp / f"home-{kind}-{rep}"
            core = open_core(home)
            core.kbs.create_kb(KB, folder)
            if kind == "py":
                seconds, report = timed(lambda: core.kbs.build(KB))
                assert report.added == args.files and not report.errors, report.to_dict()
                py_build.append(seconds)
                benchlib.log(f"  build in process   #{rep + 1}: {seconds:.2f}s")
                if main_home is None:
                    main_home = home
                core.close()
            else:
                core.close()
                seconds, out = run_cli(["index", "build", "--kb", KB, "--no-embed", "--format", "json"],
                                       benchlib.child_env(home, **env_none))
                info = json.loads(out)
                assert info["reports"][0]["added"] == args.files, info
                cli_build.append(seconds)
                cli_reported.append(float(info["seconds"]))
                benchlib.log(f"  build by CLI       #{rep + 1}: {seconds:.2f}s (CLI says {info['seconds']}s)")
                shutil.rmtree(home, ignore_errors=True)
    assert main_home is not None

    # A second build over an index that is already up to date (reads and hashes every file).
    core = open_core(main_home)
    rebuild_s, report = timed(lambda: core.kbs.build(KB))
    assert report.unchanged == args.files, report.to_dict()

    # Sync with nothing changed: in process (several times) and by CLI, next to a bare CLI start.
    sync_py: list[float] = []
    for _ in range(args.sync_repeat):
        seconds, report = timed(lambda: core.kbs.sync(KB))
        assert report.unchanged == args.files and not (report.added or report.updated or report.removed)
        sync_py.append(seconds)
    core.close()
    env_main = benchlib.child_env(main_home, **env_none)
    sync_cli: list[float] = []
    start_cli: list[float] = []
    for _ in range(args.sync_repeat):
        start_cli.append(run_cli(["kb", "list"], env_main)[0])
        seconds, out = run_cli(["index", "sync", "--kb", KB, "--no-embed", "--format", "json"], env_main)
        assert json.loads(out)["reports"][0]["unchanged"] == args.files
        sync_cli.append(seconds)

    result = {
        "files": args.files,
        "mean_file_bytes": round(statistics.fmean(sizes)),
        "build": {
            "in_process_s": [round(s, 3) for s in py_build],
            "cli_s": [round(s, 3) for s in cli_build],
            "cli_reported_index_s": cli_reported,
            "in_process_files_per_s": round(args.files / statistics.median(py_build), 1),
            "cli_files_per_s": round(args.files / statistics.median(cli_build), 1),
            "cli_over_in_process": round(statistics.median(cli_build) / statistics.median(py_build), 3),
            "rebuild_unchanged_s": round(rebuild_s, 3),
            "rebuild_unchanged_files_per_s": round(args.files / rebuild_s, 1),
        },
        "sync": {
            "in_process_s": round(statistics.median(sync_py), 4),
            "in_process_all_s": [round(s, 4) for s in sync_py],
            "cli_s": round(statistics.median(sync_cli), 4),
            "cli_start_kb_list_s": round(statistics.median(start_cli), 4),
            "cli_first_start_s": round(t_start, 3),
            "sync_over_build": round(statistics.median(sync_py) / statistics.median(py_build), 4),
        },
    }
    return result, main_home


def bench_create(tmp: Path, big_home: Path, args: argparse.Namespace) -> dict[str, Any]:
    """create_entry latency in a ~100-entry KB and in the big KB, interleaved write by write."""
    small_home = tmp / "home-small"
    write_kb_files(tmp / "files-small", args.small, Prose(seed=2), body_bytes=args.file_bytes)
    small = open_core(small_home)
    small.kbs.create_kb(KB, tmp / "files-small")
    small.kbs.build(KB)
    big = open_core(big_home)
    sizes = {"small": small.kbs.list_kbs()[0].entries, "big": big.kbs.list_kbs()[0].entries}
    cores = {"small": small, "big": big}
    words = Prose(seed=3)
    rng = random.Random(11)
    samples: dict[str, list[float]] = {"small": [], "big": []}
    cpu: dict[str, list[float]] = {"small": [], "big": []}

    def one(which: str, i: int, record: bool) -> None:
        core = cores[which]
        title, body = f"Bench create {which} {i} " + " ".join(words.words(3)), words.text(args.create_bytes)
        c0, t0 = time.process_time(), time.perf_counter()
        entry = core.kbs.create_entry(KB, title, body, tags=["bench"])
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        if record:
            samples[which].append(seconds)
            cpu[which].append(cpu_s)
        if not args.keep_created:  # hold the KB at its size: the next write sees the same count
            core.kbs.delete_entry(KB, entry.id)

    for i in range(args.warmup):
        one("small", -1 - i, False)
        one("big", -1 - i, False)
    for i in range(args.creates):
        pair = ["small", "big"]
        rng.shuffle(pair)
        for which in pair:
            one(which, i, True)
    end_sizes = {"small": small.kbs.list_kbs()[0].entries, "big": big.kbs.list_kbs()[0].entries}
    small.close()
    big.close()
    s, b = summary_ms(samples["small"]), summary_ms(samples["big"])
    # CPU time of this process per create: what the code costs, without fsync waits or other tenants' load.
    s["cpu_median_ms"] = round(statistics.median(cpu["small"]) * 1000, 4)
    b["cpu_median_ms"] = round(statistics.median(cpu["big"]) * 1000, 4)
    return {
        "entries_small": sizes["small"], "entries_big": sizes["big"], "entries_after": end_sizes,
        "create_body_bytes": args.create_bytes, "held_size": not args.keep_created,
        "small": s, "big": b,
        "median_ratio_big_over_small": round(b["median_ms"] / s["median_ms"], 3),
        "p99_ratio_big_over_small": round(b["p99_ms"] / s["p99_ms"], 3),
        "cpu_median_ratio_big_over_small": round(b["cpu_median_ms"] / s["cpu_median_ms"], 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000, help="markdown files to build and sync (default 10000)")
    ap.add_argument("--file-bytes", type=int, default=2000, help="approximate body size of each file (default 2000)")
    ap.add_argument("--small", type=int, default=100, help="entries in the small KB (default 100)")
    ap.add_argument("--creates", type=int, default=500, help="timed create_entry calls per KB (default 500)")
    ap.add_argument("--create-bytes", type=int, default=2000, help="body size of each created entry (default 2000)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed creates per KB first (default 20)")
    ap.add_argument("--keep-created", action="store_true",
                    help="keep created entries (the KBs grow) instead of deleting each after timing it")
    ap.add_argument("--repeat", type=int, default=2, help="fresh builds of each kind, alternating (default 2)")
    ap.add_argument("--sync-repeat", type=int, default=5, help="unchanged syncs of each kind (default 5)")
    ap.add_argument("--tmp", default=None, help="parent folder of the temporary homes (default: system temp)")
    ap.add_argument("--json", default=None, help="write the results as JSON to this path")
    args = ap.parse_args(argv)

    info = machine_info()
    started = time.perf_counter()
    with benchlib.scratch("pyrite-bench-core-", args.tmp) as tmp:
        build, big_home = bench_build_and_sync(tmp, args)
        benchlib.log("measuring create_entry ...")
        create = bench_create(tmp, big_home, args)
    total = time.perf_counter() - started

    targets = {
        "create_median_ratio_within_1.5x": create["median_ratio_big_over_small"] <= 1.5,
        "create_median_under_2ms_small": create["small"]["median_ms"] < 2.0,
        "create_median_under_2ms_big": create["big"]["median_ms"] < 2.0,
    }
    data = {"benchmark": "bench_core", "machine": info, "args": vars(args), "seconds": round(total, 1),
            "create_entry": create, "index": build, "targets": targets}

    print(f"# pyrite core benchmarks ({info['date']}, {info['cores']} cores, {info['cpu']})\n")
    print(f"## create_entry latency ({args.creates} interleaved creates per KB, ~{args.create_bytes} B bodies, "
          f"provider none)\n")
    rows = []
    for which, label in (("small", f"{create['entries_small']:,} entries"), ("big", f"{create['entries_big']:,} entries")):
        s = create[which]
        rows.append([label, s["median_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"], s["cpu_median_ms"]])
    print(md_table(["KB size", "median ms", "p90 ms", "p99 ms", "max ms", "CPU median ms"], rows))
    print(f"\nmedian ratio big/small: **{create['median_ratio_big_over_small']:.2f}x** (target <= 1.5x); "
          f"p99 ratio {create['p99_ratio_big_over_small']:.2f}x; CPU-time median ratio "
          f"{create['cpu_median_ratio_big_over_small']:.2f}x")
    b, sy = build["build"], build["sync"]
    print(f"\n## index build of {build['files']:,} files (mean {build['mean_file_bytes']} B)\n")
    print(md_table(["how", "seconds (median)", "files/s", "runs (s)"], [
        ["KBService.build, fresh index", statistics.median(b["in_process_s"]), b["in_process_files_per_s"],
         ", ".join(f"{s:.2f}" for s in b["in_process_s"])],
        ["`pyrite index build --no-embed` (subprocess), fresh index", statistics.median(b["cli_s"]),
         b["cli_files_per_s"], ", ".join(f"{s:.2f}" for s in b["cli_s"])],
        ["KBService.build again, nothing changed", b["rebuild_unchanged_s"], b["rebuild_unchanged_files_per_s"], ""],
    ]))
    print(f"\nCLI / in-process: {b['cli_over_in_process']:.2f}x")
    print(f"\n## index sync, nothing changed ({build['files']:,} files)\n")
    print(md_table(["how", "seconds (median)"], [
        ["KBService.sync", sy["in_process_s"]],
        ["`pyrite index sync --no-embed` (subprocess)", sy["cli_s"]],
        ["`pyrite kb list` (subprocess start, for scale)", sy["cli_start_kb_list_s"]],
    ]))
    print(f"\nsync / build (in process): {sy['sync_over_build']:.3f}")
    print("\ntargets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    print(f"\n(total {total:.0f}s)")
    write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
