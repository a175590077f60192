"""Every script under scripts/ runs at a tiny size, so no benchmark can break unseen.

Each runs in a subprocess as docs/benchmarks.md runs it (`python scripts/NAME.py ... --json FILE`), with
this test's PYRITE_* variables in its environment (the scripts must ignore them); the test checks the
exit status and the JSON keys and values the docs quote. The ones that load the real local model are slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
COVERED = {"benchlib", "corpus", "bench_core", "bench_embedding", "bench_idle_worker", "bench_remote",
           "bench_scale", "bench_search_cost", "bench_server", "bench_vault", "bench_vector_layouts"}


def run_script(name: str, tmp_path: Path, *args: str, timeout: float = 300) -> Any:
    """Run scripts/NAME.py with args and --json; its JSON output."""
    out = tmp_path / f"{name}.json"
    done = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return json.loads(out.read_text())


def test_every_script_is_covered_here() -> None:
    assert {p.stem for p in SCRIPTS.glob("*.py")} == COVERED


def test_importing_the_shared_modules_changes_nothing() -> None:
    code = (
        "import io, os, sys, contextlib\n"
        f"sys.path.insert(0, {str(SCRIPTS)!r})\n"
        "env, path, out = dict(os.environ), list(sys.path), io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):\n"
        "    import benchlib, corpus\n"
        "assert dict(os.environ) == env and sys.path == path and out.getvalue() == '', out.getvalue()\n"
        "import bench_core\n"  # a script: it puts the repo root on sys.path, and nothing else
        "assert dict(os.environ) == env and os.environ['PYRITE_EMBED_PROVIDER'] == 'bogus'\n"
        f"assert sys.path == [{str(ROOT)!r}] + path\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYRITE_EMBED_PROVIDER="bogus"))
    assert done.returncode == 0, done.stderr[-3000:]


def test_corpus(tmp_path: Path) -> None:
    stats = run_script("corpus", tmp_path, "--n", "30", "--out", str(tmp_path / "kb"))
    assert stats["entries"] == 30 and stats["words"] > 30 * 10 and len(list((tmp_path / "kb").glob("*.md"))) == 30


def test_bench_core(tmp_path: Path) -> None:
    data = run_script("bench_core", tmp_path, "--files", "40", "--small", "10", "--creates", "5", "--warmup", "1",
                      "--repeat", "1", "--sync-repeat", "1")
    assert {"benchmark", "machine", "args", "seconds", "create_entry", "index", "targets"} <= set(data)
    create, build = data["create_entry"], data["index"]
    assert create["entries_small"] == 10 and create["entries_big"] == 40
    assert create["small"]["n"] == create["big"]["n"] == 5 and create["median_ratio_big_over_small"] > 0
    assert build["files"] == 40 and build["build"]["in_process_files_per_s"] > 0 and build["build"]["cli_files_per_s"] > 0
    assert build["sync"]["cli_s"] > 0 and build["sync"]["in_process_s"] > 0
    assert set(data["targets"]) == {"create_median_ratio_within_1.5x", "create_median_under_2ms_small",
                                    "create_median_under_2ms_big"}


def test_bench_embedding_queue(tmp_path: Path) -> None:
    data = run_script("bench_embedding", tmp_path, "--only", "queue", "--queue-n", "40", "--queue-batch-sizes", "10",
                      "--rounds", "2", "--body-words", "20")
    queue = data["queue"]
    assert queue["n"] == 40 and queue["claim_ahead"] is True
    assert queue["by_batch"]["10"]["items_per_s"] > 0 and queue["by_batch"]["10"]["items_per_cpu_s"] > 0
    assert "no-op queue > 5000 items/s at batch 10" in data["targets"]


@pytest.mark.slow
def test_bench_embedding_with_the_local_model(tmp_path: Path) -> None:
    data = run_script("bench_embedding", tmp_path, "--only", "latency,throughput,searchable,threads",
                      "--body-words", "20", "--writes", "3", "--busy-writes", "2", "--warmup", "1", "--n", "16",
                      "--batch-sizes", "4", "--rounds", "2", "--searchable-writes", "2", "--pause", "0.1",
                      "--threads-n", "4", "--threads-rounds", "1", timeout=600)
    lat = data["latency"]
    assert lat["queued"]["n"] == lat["sync"]["n"] == 3
    assert lat["status_after_write"] == {"queued": ["pending"], "sync": ["done"]}
    assert lat["sync_over_queued_median"] > 0 and lat["busy_worker"]["busy"]["n"] == 2
    thr = data["throughput"]["by_batch"]["4"]
    assert thr["worker_per_s"] > 0 and thr["plain_per_s"] > 0 and thr["chunks_stored"] >= 16
    assert data["searchable"]["writes"] == 2 and data["searchable"]["searchable_s"]["median"] > 0
    assert set(data["threads"]["texts_per_s"]) == {"default", "OMP_WAIT_POLICY=PASSIVE", "torch.set_num_threads(1)"}
    assert all(data[s]["section_seconds"] > 0 for s in ("latency", "throughput", "searchable", "threads"))


def test_bench_idle_worker(tmp_path: Path) -> None:
    runs = run_script("bench_idle_worker", tmp_path, "--seconds", "0.3", "--drain", "30")
    assert [r["concurrency"] for r in runs] == [1, 4]
    for r in runs:
        assert r["seconds"] > 0 and r["write_tx"] >= 0 and r["write_tx_per_s"] >= 0 and r["cpu_percent"] >= 0
        assert r["drain_entries"] == 30 and r["drain_s"] > 0


def test_bench_remote_against_a_local_fake_provider(tmp_path: Path) -> None:
    data = run_script("bench_remote", tmp_path, "--items", "40", "--concurrency", "1,4", "--batch", "10",
                      "--delay", "0.01", "--rate-limit-every", "3", "--retry-after", "0.2")
    assert [(r["batch"], r["concurrency"]) for r in data["throughput"]] == [(10, 1), (10, 4)]
    assert all(r["items"] == 40 and r["items_per_s"] > 0 and r["requests"] >= 4 for r in data["throughput"])
    rl = data["rate_limit"]
    assert rl["limited"]["rate_limited"] > 0 and rl["plain"]["requests"] >= 4 and rl["ratio"] > 0
    assert data["server"] == {"delay_s": 0.01, "dimension": 256} and data["machine"]["cores"] > 0


def test_bench_scale(tmp_path: Path) -> None:
    data = run_script("bench_scale", tmp_path, "--sizes", "100", "--queries", "12", "--sync-repeat", "1")
    (size,) = data["sizes"]
    assert size["n"] == 100 and size["n_other_kb"] == 200 and size["provider"] == "hash"
    assert size["build"]["files_per_s"] > 0 and size["build"]["peak_rss_mb"] > 0 and size["sync"]["median_s"] > 0
    assert size["worker"]["items"] == 300 and size["worker"]["counts_after"].get("pending", 0) == 0
    search = size["search"]
    for name in ("keyword:bench", "semantic:bench", "hybrid:bench", "semantic:all", "keyword:all"):
        assert search[name]["n"] == 12 and search[name]["errors"] == 0 and search[name]["median_ms"] > 0
    assert 0.9 <= search["semantic:bench"]["recall_at_10"] <= 1 and search["exact_numpy"]["median_ms"] > 0
    assert data["targets"] == {}


def test_bench_search_cost(tmp_path: Path) -> None:
    data = run_script("bench_search_cost", tmp_path, "--small", "2000", "--big", "50000", "--rounds", "5", "--old")
    assert [s["query"] for s in data["searches"]] == ["zyxomorph", "the"]
    for s in data["searches"]:
        assert s["small"]["median_ms"] > 0 and s["big"]["p90_ms"] > 0 and s["ratio"] > 0 and s["cpu_ratio"] > 0
    assert set(data["old_style_ms"]) == {"small", "big"} and data["sizes"] == {"small": 2000, "big": 50000}


@pytest.mark.slow
def test_bench_server(tmp_path: Path) -> None:
    data = run_script("bench_server", tmp_path, "--entries", "20", "--requests", "3", "--seconds", "2",
                      "--warmup", "1", "--clients", "2", timeout=600)
    lat, thr, ev = data["latency"], data["throughput"], data["events"]
    assert all(lat[k]["n"] == 3 and lat[k]["median_ms"] > 0 for k in ("worker", "no_worker", "off"))
    assert lat["median_ratio_no_worker_over_worker"] > 0
    assert all(thr[k]["writes_per_s"] > 0 for k in ("worker", "no_worker", "off", "off_one_client"))
    assert ev["requests"] == 3 and ev["response_to_embed_complete"]["n"] == 3
    assert data["targets"]["exit_status_0_after_sigterm"] is True
    assert data["server_log_errors"] == {"worker": [], "no_worker": [], "off": []}


def test_bench_vault(tmp_path: Path) -> None:
    figures = run_script("bench_vault", tmp_path, "--size", "60", "--small", "20", "--large", "40", "--creates", "5")
    assert figures["vault_files"]["folders"] > 10 and figures["vault_files"]["shapes"]["none"] == 12
    for kind in ("flat_slug", "nested_vault"):
        assert figures[kind]["files_per_s"] > 0 and figures[kind]["sync_nothing_changed_s"] > 0
    assert figures["create_latency"]["ratio_large_to_small"] > 0


def test_bench_vector_layouts(tmp_path: Path) -> None:
    data = run_script("bench_vector_layouts", tmp_path, "--n", "1000", "--queries", "5", "--warmup", "1",
                      "--workers", "2")
    rows = data["results"]
    assert len(rows) == 15 and all(r["queries"] == 5 and r["median_ms"] > 0 for r in rows)
    assert all(0 <= r["recall_at_10"] <= 1 for r in rows) and rows[0]["recall_at_10"] == 1.0
    assert [b["layout"] for b in data["builds"]] == ["float vec0", "int8 vec0", "bit vec0 + aux float", "IVF 1 copy",
                                                     "IVF 2 copies"]
    assert data["config"]["n"] == 1000 and data["versions"]["sqlite_vec"]
