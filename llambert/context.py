"""One run's validated inputs: the settings, the task they name, and connections to the warehouse they point at.

Built once (``Run.load`` reads llambert.yaml, the environment and overrides; ``Run.of`` takes settings already
validated) and handed to every step of a run, so nothing re-reads the configuration or the task YAML midway.
Dagster's resource (``dagster_project/resources.py``) builds one per run; ``python -m dagster_project.run``
passes the one it validated itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb

from llambert.config import Settings, load_settings
from llambert.tasks import Task, load_task
from llambert.warehouse import Warehouse, open_warehouse


@dataclass(frozen=True)
class Run:
    """Settings + task + a connection factory, validated once."""

    settings: Settings
    task: Task

    @classmethod
    def of(cls, settings: Settings) -> Run:
        """The run for settings already validated (the task YAML is read here, once)."""
        return cls(settings, load_task(settings.task))

    @classmethod
    def load(cls, config_path: str | None = None, overrides: dict | None = None) -> Run:
        """Read and validate llambert.yaml (or ``config_path``) + environment + ``overrides``."""
        return cls.of(load_settings(config_path, overrides or None))

    @contextlib.contextmanager
    def warehouse(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the warehouse with every schema and durable table in place."""
        with open_warehouse(self.settings.warehouse_path, read_only=read_only) as con:
            yield con

    def sessions(self) -> Warehouse:
        """Short write sessions (no connection held while a model works), for the long steps."""
        return Warehouse(self.settings.warehouse_path)
