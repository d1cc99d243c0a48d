"""What every benchmark shares: where figures and reports go, the IMDb folder, a log line, the machine's state."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from llambert.config import PROJECT_ROOT

BENCH_VAR = PROJECT_ROOT / "var" / "bench"  # figures (DuckDB files), caches and checkpoints of the benchmarks
DOCS = PROJECT_ROOT / "docs"  # the generated reports and the prose they include


def imdb_dir() -> Path:
    """The IMDb parquet folder: LLAMBERT_DATA_DIR, else the shared data folder beside the project."""
    return Path(os.environ.get("LLAMBERT_DATA_DIR") or PROJECT_ROOT.parent / "shared" / "data" / "imdb")


def logger(name: str) -> Callable[[str], None]:
    """A log function for one benchmark: ``[name HH:MM:SS] message`` on stderr (stdout stays for results)."""

    def log(msg: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


def connect_bench(path: Path, ddl: str = ""):
    """A benchmark's own DuckDB file (not the warehouse), with schema ``bench`` and the tables of ``ddl``."""
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA IF NOT EXISTS bench")
    if ddl:
        con.execute(ddl)
    return con


def conditions() -> dict:
    """What the machine was doing: CPU model, cores, load average (a shared machine skews wall time)."""
    cpu = "?"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)}
