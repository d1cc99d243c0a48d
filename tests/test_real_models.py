"""The real small models end to end: Qwen2.5-Coder-0.5B-Instruct labels ~50 IMDb reviews and
all-MiniLM-L6-v2 learns from its labels. Run with `make test-real` (installs the models)."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
import yaml

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def real_corpus(imdb_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_imdb")
    for split, n in (("train", 50), ("test", 100), ("unsup", 0)):
        frame = pl.read_parquet(imdb_dir / f"{split}.parquet").sample(n, seed=11)
        frame.write_parquet(out / f"{split}.parquet")
    return out


def test_real_teacher_and_student_end_to_end(tmp_path, real_corpus, monkeypatch, capsys):
    from llambert.models import ModelNotAvailable, is_installed

    for name in ("qwen2.5-coder-0.5b-instruct", "all-minilm-l6-v2"):
        if not is_installed(name):
            pytest.fail(f"{name} is not installed: run `make test-real`, which installs it")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    from dagster_project.run import run_pipeline
    from llambert.config import PROJECT_ROOT

    cfg = tmp_path / "llambert.yaml"
    cfg.write_text(yaml.safe_dump({
        "home": str(tmp_path / "home"),
        "data_dir": str(real_corpus),
        "sample": {"size": 50, "pool_splits": ["train"]},
        "teacher": {"model": "qwen2.5-coder-0.5b-instruct", "batch_size": 8, "max_prompt_tokens": 512},
        "student": {"model": "all-minilm-l6-v2", "epochs": 2, "max_length": 128, "infer_max_length": 128},
        "checks": {"min_minority_share": 0.2, "max_discard_rate": 0.1},
    }))
    # Reuse the project's model cache so the GGUF is assembled and converted once per machine.
    monkeypatch.setattr("llambert.config.Settings.models_dir", property(lambda self: PROJECT_ROOT / "var" / "models"))
    assert run_pipeline(str(cfg)) == 0, capsys.readouterr().err[-3000:]
    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    report = dict(con.execute("SELECT subject || '.' || metric, value FROM evaluation.report").fetchall())
    # The paper's parser understands the real model's answers...
    assert report["teacher.discard_rate"] <= 0.1
    # ...and a real 0.5B teacher is far better than chance on IMDb (about 82% on 400 reviews here).
    assert report["teacher.accuracy_vs_gold"] >= 0.65, report
    answers = {r[0] for r in con.execute("SELECT DISTINCT lower(trim(raw_text)) FROM labeling.llm_responses").fetchall()}
    assert answers & {"positive", "negative"}
    assert con.execute("SELECT count(*) FROM predictions.labels").fetchone()[0] == con.execute(
        "SELECT count(*) FROM raw.corpus").fetchone()[0] == 150
    identity = con.execute("SELECT DISTINCT model_identity FROM labeling.llm_responses").fetchall()
    assert len(identity) == 1 and identity[0][0].startswith("qwen2.5-coder-0.5b-instruct@")
    con.close()
