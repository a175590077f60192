#!/usr/bin/env python3
"""Issue 13's scale figures: a nested vault shaped like a real one against the flat slug KB of before.

For a size N (default 100,000):

a. the flat KB: scripts/corpus.py's N entries as top-level slug files written as pyrite writes them (what
   the 2,930 files/s of docs/benchmarks.md measured);
b. the vault: the same N texts in a three-level folder tree (areas / topics / months) whose names hold
   spaces and several scripts, each file named after its title as people write it, 40% with block-list
   frontmatter, 40% with Obsidian-style flow lists and a date, 20% without frontmatter (a `# heading`
   instead); bodies end with 1-3 wiki links `[[...]]` to other notes;
c. ``pyrite index build --kb K --no-embed`` of each in a subprocess (wall seconds, files/s), then
   ``pyrite index sync --kb K --no-embed`` with nothing changed (median of 3, wall seconds, process start
   included);
d. create latency, in process (Pyrite(...).kbs.create_entry(..., folder=F, embed=False)) in a vault KB of
   --small (100) and of --large (10,000) entries, median and p90 of --creates writes each.

Embedding is the hash provider with --no-embed, as bench_scale.py: queue rows are written, no vectors.
Every home lives in a temporary folder removed at the end.

    .venv/bin/python scripts/bench_vault.py                       # N = 100,000 (about 4 minutes)
    .venv/bin/python scripts/bench_vault.py --size 2000 --large 2000 --creates 50 --json /tmp/vault.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import benchlib
import corpus
from benchlib import log, percentile, run_cli

benchlib.use_repo()
from pyrite.names import title_file_name, with_suffix  # noqa: E402

AREAS = ["Projects", "Área de trabajo", "Заметки", "日記", "Reading list", "Ideas & drafts", "Μαθήματα",
         "Recherche", "Work notes", "मेरे नोट्स"]
TOPICS = ["Alpha", "Beta team", "Café", "Δέλτα", "Ёлка", "東京", "Q&A", "Tom's", "2024 plans", "Misc"]
MONTHS = ["01 January", "02 February", "03 March", "04 April", "05 May", "06 June", "07 July", "08 August",
          "09 September", "10 October"]


def folder_of(i: int) -> str:
    """Entry i's folder: three levels, some entries one or two levels up (as in real vaults)."""
    a, t, m = AREAS[i % 10], TOPICS[(i // 10) % 10], MONTHS[(i // 100) % 10]
    depth = (i // 3) % 10
    if depth == 0:
        return a
    if depth == 1:
        return f"{a}/{t}"
    return f"{a}/{t}/{m}"


def write_vault(n: int, out: Path, seed: int = 0) -> dict[str, Any]:
    """Write n notes as a nested vault under out; return counts."""
    rng = random.Random(seed)
    used: set[str] = set()
    titles: list[str] = []
    t0 = time.perf_counter()
    shapes = {"block": 0, "flow": 0, "none": 0}
    for i, entry in enumerate(corpus.generate(n, seed)):
        folder = folder_of(i)
        base = f"{folder}/{title_file_name(entry['title'])}"
        entry_id, k = base, 1
        while entry_id.casefold() in used:
            k += 1
            entry_id = with_suffix(base, k)
        used.add(entry_id.casefold())
        links = "".join(f" [[{rng.choice(titles)}]]" for _ in range(rng.randint(1, 3))) if titles else ""
        titles.append(entry["title"])
        body = entry["body"] + (f"\n\nSee also:{links}\n" if links else "\n")
        roll = i % 5
        if roll < 2:
            shapes["block"] += 1
            tags = ":\n" + "".join(f"- {t}\n" for t in entry["tags"]) if entry["tags"] else ": []\n"
            text = f"---\ntitle: {entry['title']}\ntags{tags}---\n\n{body}"
        elif roll < 4:
            shapes["flow"] += 1
            text = (f"---\ntags: [{', '.join(entry['tags'])}]\ncreated: 2024-{1 + i % 12:02d}-{1 + i % 28:02d}\n"
                    f"aliases: []\n---\n\n# {entry['title']}\n\n{body}")
        else:
            shapes["none"] += 1
            text = f"# {entry['title']}\n\n{body}"
        path = out / f"{entry_id}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return {"files": n, "folders": len({folder_of(i) for i in range(n)}), "shapes": shapes,
            "write_s": round(time.perf_counter() - t0, 1)}


def cli(env: dict[str, str], *args: str) -> tuple[float, dict[str, Any]]:
    """Run the CLI with --format json; return (wall seconds, its JSON output)."""
    wall, out = run_cli([*args, "--format", "json"], env)
    return wall, json.loads(out)


def build_and_sync(home: Path, kb: str, folder: Path, n: int, names: str) -> dict[str, Any]:
    # Registered without indexing (the core, not `kb create`, which would build at once), then built by the CLI.
    core = benchlib.open_core(home, embed_provider="hash")
    core.kbs.create_kb(kb, str(folder), names=names)
    core.close()
    env = benchlib.child_env(home, PYRITE_EMBED_PROVIDER="hash")
    wall, report = cli(env, "index", "build", "--kb", kb, "--no-embed")
    index = report["reports"][0]
    if index["added"] != n or index["errors"]:
        raise SystemExit(f"build of {kb} indexed {index['added']} of {n} files: {index['errors'][:5]}")
    syncs = [cli(env, "index", "sync", "--kb", kb, "--no-embed")[0] for _ in range(3)]
    return {"build_s": round(wall, 2), "files_per_s": round(n / wall), "sync_nothing_changed_s":
            round(statistics.median(syncs), 2), "sync_runs_s": [round(s, 2) for s in syncs]}


def create_latency(home: Path, sizes: list[int], creates: int, tmp: Path) -> dict[str, Any]:
    """Median and p90 create latency (ms) in vault KBs of the given sizes, folders chosen at random."""
    out: dict[str, Any] = {}
    core = benchlib.open_core(home, embed_provider="hash")
    try:
        for size in sizes:
            kb = f"lat{size}"
            folder = tmp / kb
            write_vault(size, folder, seed=1)
            core.kbs.create_kb(kb, str(folder), names="title")
            core.kbs.build(kb)
        core.db.checkpoint()  # the builds' WAL is not what a write in a settled KB pays for
        rng = random.Random(0)
        for i in range(10):  # warm-up
            for size in sizes:
                core.kbs.create_entry(f"lat{size}", f"Warm up {i}", "body", folder=folder_of(rng.randrange(size)),
                                      embed=False)
        times: dict[int, list[float]] = {size: [] for size in sizes}
        for i in range(creates):
            for size in sizes:  # interleaved, so noise from the machine falls on both alike
                t0 = time.perf_counter()
                core.kbs.create_entry(f"lat{size}", f"New note {i} ünïcode", f"body of note {i}",
                                      folder=folder_of(rng.randrange(size)), embed=False)
                times[size].append((time.perf_counter() - t0) * 1000)
        for size in sizes:
            out[str(size)] = {"median_ms": round(statistics.median(times[size]), 3),
                              "p90_ms": round(percentile(times[size], 90), 3), "creates": creates}
    finally:
        core.close()
    small, large = (out[str(s)]["median_ms"] for s in sizes)
    out["ratio_large_to_small"] = round(large / small, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=100_000, help="files of the build and sync runs")
    ap.add_argument("--small", type=int, default=100, help="entries of the small KB of the create timing")
    ap.add_argument("--large", type=int, default=10_000, help="entries of the large KB of the create timing")
    ap.add_argument("--creates", type=int, default=200, help="timed creates per KB")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    with benchlib.scratch("pyrite-bench-vault-") as tmp:
        home = tmp / "home"
        results: dict[str, Any] = {"size": args.size}
        flat, vault = tmp / "flat", tmp / "vault"
        t0 = time.perf_counter()
        corpus.write_corpus(args.size, flat, check=0)
        results["flat_write_s"] = round(time.perf_counter() - t0, 1)
        results["vault_files"] = write_vault(args.size, vault)
        log(f"wrote {args.size} flat and {args.size} nested files")
        results["flat_slug"] = build_and_sync(home, "flat", flat, args.size, "slug")
        log(f"flat: {results['flat_slug']}")
        results["nested_vault"] = build_and_sync(home, "vault", vault, args.size, "title")
        log(f"vault: {results['nested_vault']}")
        results["create_latency"] = create_latency(tmp / "home2", [args.small, args.large], args.creates, tmp)
    print(json.dumps(results, indent=2))
    benchlib.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
