"""The project's own Dagster instance folder (persistent runs, dynamic partitions, no telemetry)."""

from __future__ import annotations

import os
from pathlib import Path

DAGSTER_YAML = """\
telemetry:
  enabled: false
# No "Join the Dagster community" dialog: it pops up on a timer over whatever the user clicks.
nux:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
    # DuckDB has one writing process per file: runs tagged as warehouse writers queue instead
    # of failing on the lock (see README, "Labeling new reviews").
    tag_concurrency_limits:
      - key: llambert/warehouse
        value: write
        limit: 1
"""


def ensure_dagster_home(home: Path) -> Path:
    """Create ``home`` with a dagster.yaml and point DAGSTER_HOME at it (unless already set).

    Made absolute first: Dagster refuses a relative DAGSTER_HOME, and ``--set home=var/x`` is relative."""
    home = Path(os.environ.get("DAGSTER_HOME") or home).absolute()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
