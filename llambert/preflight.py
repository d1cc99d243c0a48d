"""Preflight: fail before any work starts, naming the setting and what to do.

This sits above :mod:`llambert.config` (it reads the settings and reaches into the task files, the
model registry and the corpus readers), so ``config`` imports nothing of the project.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from llambert.config import ConfigError, Settings
from llambert.corpus.readers import ReaderError, detect_format
from llambert.models import ModelNotAvailable, lookup_offline, offline_requirements
from llambert.tasks import load_task


def check_ready(settings: Settings) -> None:
    """Fail before any work starts: unknown task or model, impossible bounds, missing data.

    Every message names the setting and what to do; nothing here loads a model or reads data.
    """
    try:
        task = load_task(settings.task)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"setting 'task': {e}") from None
    n_labels = len(task.labels)
    if settings.checks.min_minority_share > 1 / n_labels:
        raise ConfigError(
            f"setting 'checks.min_minority_share' = {settings.checks.min_minority_share} is impossible: task "
            f"'{task.name}' has {n_labels} labels, so the rarest has at most {1 / n_labels:.3f} of them. "
            f"Lower it (0 turns the gate off)."
        )
    for role, cfg in (("teacher", settings.teacher), ("student", settings.student)):
        _check_model_name(role, cfg.model, settings.models_dir)
    if settings.teacher.cascade is not None:  # the cascade's small model: the same check as the teacher's
        _check_model_name("teacher.cascade", settings.teacher.cascade.model, settings.models_dir)
    if settings.inference.engine == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "setting 'inference.engine' is 'ray' but Ray is not installed here: "
                "pip install 'llambert[ray]' (make test-ray does), or set inference.engine: local"
            )
    if settings.sources is None and not settings.data_dir.is_dir():
        raise ConfigError(
            f"setting 'data_dir': {settings.data_dir} is not a folder. Set data_dir in llambert.yaml or "
            f"LLAMBERT_DATA_DIR to the folder with train.parquet, test.parquet and unsup.parquet."
        )
    for i, src in enumerate(settings.corpus_sources()):
        path = settings.resolve_source_path(src)
        if not path.exists():
            raise ConfigError(
                f"corpus source '{src.name}': {path} does not exist. Set data_dir in llambert.yaml "
                f"or LLAMBERT_DATA_DIR to the folder that holds it (the IMDb default needs "
                f"train.parquet, test.parquet, unsup.parquet)."
            )
        try:
            detect_format(path, src.format)
        except ReaderError as e:
            raise ConfigError(f"setting 'sources[{i}]' ({src.name}): {e}") from None


def _check_model_name(role: str, name: str, models_dir: Path) -> None:
    """An unknown registry name or a missing local directory is a typo: say so before any work."""
    if lookup_offline(name) is not None or Path(name).expanduser().is_dir():
        return
    try:
        offline_requirements([name])  # raises for a plain name that is no registry entry, path or hub id
    except ModelNotAvailable as e:
        raise ConfigError(
            f"setting '{role}.model': {e}\n(`llambert models` lists them and how to install each)"
        ) from None
    if name.startswith(("/", "./", "../", "~")) or name.endswith("/"):
        raise ConfigError(f"setting '{role}.model': the directory {name} does not exist.")
