"""What the benchmarks under scripts/ share: a clean pyrite (settings, homes, CLI subprocesses), timing,
statistics, markdown tables and the machine's description.

Importing this module changes nothing: no environment variable, no sys.path entry, no output. A script
calls ``use_repo()`` before it imports pyrite, and gives every pyrite it starts its settings explicitly
(``settings``/``open_core`` in process, ``child_env`` for subprocesses), never the caller's ``PYRITE_*``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

if TYPE_CHECKING:
    from pyrite.config import Settings
    from pyrite.core import Pyrite
    from pyrite.embedders.base import Embedder

ROOT = Path(__file__).resolve().parent.parent
_STARTED = time.perf_counter()


def use_repo() -> None:
    """Put this checkout first on sys.path, so `pyrite` and `tests` are its own, not an installed copy."""
    if sys.path[:1] != [str(ROOT)]:
        sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    """A progress line on stderr, with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# a pyrite that reads nothing from the caller's environment
# --------------------------------------------------------------------------------------


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment less every PYRITE_* variable, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYRITE_")}
    env.update(variables)
    return env


def child_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of a pyrite subprocess: clean_env with PYRITE_HOME and the given PYRITE_* settings."""
    return clean_env(PYRITE_HOME=str(home), **settings)


def settings(home: Path, **flags: Any) -> Settings:
    """pyrite's settings of `home` from these flags and the defaults alone (PYRITE_* of the caller hidden)."""
    # Imported here: benchlib is imported before use_repo() has put this checkout's pyrite on sys.path.
    from pyrite.config import load_settings

    hidden = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("PYRITE_")]}
    try:
        return load_settings(home, **flags)
    finally:
        os.environ.update(hidden)


def open_core(home: Path, *, embedder: Embedder | None = None, autocheckpoint: bool = True, **flags: Any) -> Pyrite:
    """A Pyrite over `home` with settings(home, **flags)."""
    from pyrite.core import Pyrite  # see settings()

    return Pyrite(settings(home, **flags), embedder=embedder, autocheckpoint=autocheckpoint)


@contextmanager
def scratch(prefix: str, parent: str | Path | None = None, *, keep: bool = False) -> Iterator[Path]:
    """A temporary folder for homes and files, removed at the end unless `keep` (then its path is logged)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield tmp
    finally:
        if keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def pyrite_argv(*args: str) -> list[str]:
    """argv of the pyrite CLI of this checkout (the console script beside this Python, else -m pyrite)."""
    script = Path(sys.executable).parent / "pyrite"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "pyrite", *args]


def run_cli(args: Sequence[str], env: dict[str, str]) -> tuple[float, str]:
    """Run the CLI; return (wall seconds, stdout); raise with its stderr if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(pyrite_argv(*args), env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"pyrite {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds, proc.stdout


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# --------------------------------------------------------------------------------------
# timing and statistics
# --------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of fn()."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


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


def int_list(text: str) -> list[int]:
    """'1,10,32' -> [1, 10, 32] (underscores allowed: 100_000)."""
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


# --------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------


def number_cell(v: Any) -> str:
    """A table cell: floats under 10 with 3 decimals, others with 1."""
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cell: Callable[[Any], str] = number_cell) -> str:
    """A GitHub markdown table."""
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


def write_json(path: str | Path | None, data: Any, *, announce: bool = True) -> None:
    """Write data as indented JSON to path (its folder made), if a path is given; say so on stdout."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        if announce:
            print(f"\nJSON written to {path}")
