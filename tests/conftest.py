"""Shared fixtures: tiny random models (no download), a small IMDb-shaped corpus, settings."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

os.environ.setdefault("LLAMBERT_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llambert.config import PROJECT_ROOT, Settings, load_settings  # noqa: E402

IMDB_DIR = Path(os.environ.get("LLAMBERT_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data" / "imdb"))
# Tests write their own settings files: a user's LLAMBERT_* overrides must not leak into them.
for _var in [v for v in os.environ if v.startswith("LLAMBERT_") and v != "LLAMBERT_NO_PROGRESS"]:
    os.environ.pop(_var)


@pytest.fixture(scope="session")
def imdb_dir() -> Path:
    if not (IMDB_DIR / "train.parquet").exists():
        pytest.skip(f"IMDb parquet files not found in {IMDB_DIR} (set LLAMBERT_DATA_DIR)")
    return IMDB_DIR


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny chat teacher taught to answer in the IMDb task's format, and a tiny BERT student."""
    from llambert.tasks import load_task
    from llambert.teacher.prompts import build_messages
    from tests.tiny import build_tiny_student, build_tiny_teacher

    root = tmp_path_factory.mktemp("tiny_models")
    task = load_task("imdb_sentiment")
    texts = [
        "a wonderful film, loved it",
        "great acting and a great plot",
        "boring and awful",
        "terrible, I hated it",
        "good movie",
        "bad movie",
        "the best film this year",
        "the worst film ever made",
    ]
    teach = [(build_messages(task, t), "positive" if i % 2 == 0 else "negative") for i, t in enumerate(texts)]
    return {
        "teacher": build_tiny_teacher(root / "teacher", teach=teach),
        "student": build_tiny_student(root / "student"),
    }


@pytest.fixture(scope="session")
def small_corpus(imdb_dir, tmp_path_factory) -> Path:
    """60 train, 40 test, 60 unsup IMDb reviews, cut to 400 characters to keep tests fast."""
    out = tmp_path_factory.mktemp("small_imdb")
    for split, n in (("train", 60), ("test", 40), ("unsup", 60)):
        frame = pl.read_parquet(imdb_dir / f"{split}.parquet").sample(n, seed=7)
        frame.with_columns(pl.col("text").str.slice(0, 400)).write_parquet(out / f"{split}.parquet")
    return out


def tiny_settings_dict(home: Path, data_dir: Path, tiny_models: dict[str, Path], **over) -> dict:
    d = {
        "home": str(home),
        # the home's own model cache: tests never write to the shared one (~/.cache/llambert/models)
        "model_cache": str(home / "models"),
        "data_dir": str(data_dir),
        "sample": {"size": 40},
        # generate: the tiny random teacher writes gibberish, which these tests parse and discard (choice, the
        # default, never discards on this backend); tests of choice mode set it themselves.
        "teacher": {
            "model": str(tiny_models["teacher"]),
            "batch_size": 8,
            "max_prompt_tokens": 256,
            "mode": "generate",
        },
        # min_train_steps 0: the tiny suite trains the epochs it asks for (the small-set rule has its own test)
        "student": {
            "model": str(tiny_models["student"]),
            "epochs": 2,
            "max_length": 64,
            "infer_max_length": 64,
            "batch_size": 8,
            "min_train_steps": 0,
            # self-distillation trains a second encoder: its own test (test_student_family.py) turns it on
            "self_distill": 0,
        },
        # The tiny random teacher answers almost one label: the quality gates (collapse, agreement) have their
        # own violation cases (tests/test_contracts.py) and a real-model test (tests/test_real_models.py).
        "checks": {
            "min_minority_share": 0.0,
            "max_discard_rate": 1.0,
            "collapse_ratio": 0.0,
            "min_student_teacher_agreement": 0.0,
        },
    }
    for k, v in over.items():
        d[k] = (d.get(k, {}) | v) if isinstance(v, dict) else v
    return d


@pytest.fixture
def tiny_settings(tmp_path, small_corpus, tiny_models) -> Settings:
    return load_settings(overrides=tiny_settings_dict(tmp_path / "home", small_corpus, tiny_models))


def train_through(con, settings) -> None:
    """Every pipeline step up to a champion student: ingest, sample, teacher, parse, train (no corpus labels)."""
    from llambert import pipeline

    pipeline.ingest_batch(con, settings)
    pipeline.build_sample(con, settings)
    pipeline.label_sample(con, settings)
    pipeline.parse_labels(con, settings)
    pipeline.train_checkpoint(con, settings)
