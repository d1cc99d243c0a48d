"""What the machine was doing while a benchmark ran: wall-clock figures mean little without it."""

from __future__ import annotations

import os
from pathlib import Path


def conditions() -> dict:
    """What the machine was doing: CPU model, cores, load average (a shared machine skews wall time)."""
    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)}
