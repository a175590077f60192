"""A tiny run of scripts/bench_vault.py, so the benchmark of issue 13 cannot break unseen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_vault_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "vault.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_vault.py"), "--size", "60", "--small", "20",
                           "--large", "40", "--creates", "5", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["vault_files"]["folders"] > 10 and figures["vault_files"]["shapes"]["none"] == 12
    for kind in ("flat_slug", "nested_vault"):
        assert figures[kind]["files_per_s"] > 0 and figures[kind]["sync_nothing_changed_s"] > 0
    assert figures["create_latency"]["ratio_large_to_small"] > 0
