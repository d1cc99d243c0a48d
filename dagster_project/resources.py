"""The project's resources: llambert settings and the DuckDB warehouse they point at."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg
import yaml
from pydantic import Field

from llambert.config import Settings, load_settings


class LlambertResource(dg.ConfigurableResource):
    """Settings from llambert.yaml (or ``config_path``), with optional YAML overrides.

    Every asset reads its settings here, so the UI, the CLI and tests share one validated
    configuration.
    """

    config_path: str | None = Field(None, description="A llambert YAML file; default: LLAMBERT_CONFIG or ./llambert.yaml.")
    overrides_yaml: str = Field("", description="YAML merged over the file, e.g. 'sample: {size: 200}'.")

    def settings(self) -> Settings:
        overrides = yaml.safe_load(self.overrides_yaml) if self.overrides_yaml.strip() else None
        return load_settings(self.config_path, overrides)

    @contextlib.contextmanager
    def warehouse(self, read_only: bool = False) -> Iterator:
        """A connection to the warehouse with every schema and durable table in place."""
        from llambert.warehouse import open_warehouse

        with open_warehouse(self.settings().warehouse_path, read_only=read_only) as con:
            yield con
