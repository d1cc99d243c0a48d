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
    from llambert.models import is_installed

    for name in ("qwen2.5-coder-0.5b-instruct", "all-minilm-l6-v2"):
        if not is_installed(name):
            pytest.fail(f"{name} is not installed: run `make test-real`, which installs it")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    from dagster_project.run import run_pipeline
    from llambert.config import PROJECT_ROOT

    cfg = tmp_path / "llambert.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "home": str(tmp_path / "home"),
                "data_dir": str(real_corpus),
                "sample": {"size": 50, "pool_splits": ["train"]},
                "teacher": {"model": "qwen2.5-coder-0.5b-instruct", "batch_size": 8, "max_prompt_tokens": 512},
                "student": {"model": "all-minilm-l6-v2", "epochs": 2, "max_length": 128, "infer_max_length": 128},
                "checks": {"min_minority_share": 0.2, "max_discard_rate": 0.1},
            }
        )
    )
    # Reuse the project's model cache so the GGUF is assembled and converted once per machine.
    monkeypatch.setattr("llambert.config.Settings.models_dir", property(lambda self: PROJECT_ROOT / "var" / "models"))
    assert run_pipeline(str(cfg)) == 0, capsys.readouterr().err[-3000:]
    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    report = dict(con.execute("SELECT subject || '.' || metric, value FROM evaluation.report").fetchall())
    # The paper's parser understands the real model's answers...
    assert report["teacher.discard_rate"] <= 0.1
    # ...and a real 0.5B teacher is far better than chance on IMDb (about 82% on 400 reviews here).
    assert report["teacher.accuracy_vs_gold"] >= 0.65, report
    answers = {
        r[0] for r in con.execute("SELECT DISTINCT lower(trim(raw_text)) FROM labeling.llm_responses").fetchall()
    }
    assert answers & {"positive", "negative"}
    assert (
        con.execute("SELECT count(*) FROM predictions.labels").fetchone()[0]
        == con.execute("SELECT count(*) FROM raw.corpus").fetchone()[0]
        == 150
    )
    identity = con.execute("SELECT DISTINCT model_identity FROM labeling.llm_responses").fetchall()
    assert len(identity) == 1 and identity[0][0].startswith("qwen2.5-coder-0.5b-instruct@")
    con.close()


def _short(text: str) -> str:
    import re

    parts = re.split(r"(?<=[.!?])\s+", re.sub(r"<br\s*/?>", " ", text).strip())
    return " ".join(parts[-2:])  # a review's last sentences: short, and where its verdict usually is


def test_real_student_on_a_small_skewed_set_does_not_collapse(imdb_dir, tmp_path, monkeypatch):
    """The students issue's collapse case, with the real MiniLM: ~275 short texts, 20% positive (the
    paper's UMLS shape). The champion must predict both classes and beat the majority class on held-out
    gold (macro-F1 and balanced accuracy; plain accuracy rewards the majority class on a skewed set)."""
    from llambert import pipeline
    from llambert.config import PROJECT_ROOT, load_settings
    from llambert.metrics import classification_metrics
    from llambert.models import is_installed
    from llambert.warehouse import open_warehouse

    if not is_installed("all-minilm-l6-v2"):
        pytest.fail("all-minilm-l6-v2 is not installed: run `make test-real`, which installs it")
    data = tmp_path / "skewed"
    data.mkdir()
    for split, n_pos, n_neg in (("train", 75, 300), ("test", 60, 240)):
        frame = pl.read_parquet(imdb_dir / f"{split}.parquet").with_columns(
            pl.col("text").map_elements(_short, return_dtype=pl.Utf8)
        )
        frame = frame.filter(pl.col("text").str.len_chars() >= 20)
        pl.concat(
            [
                frame.filter(pl.col("label") == 1).sample(n_pos, seed=5),
                frame.filter(pl.col("label") == 0).sample(n_neg, seed=5),
            ]
        ).write_parquet(data / f"{split}.parquet")
    pl.DataFrame(
        {"id": [], "text": [], "label": []}, schema={"id": pl.Int64, "text": pl.Utf8, "label": pl.Int64}
    ).write_parquet(data / "unsup.parquet")
    settings = load_settings(
        overrides={
            "home": str(tmp_path / "home"),
            "data_dir": str(data),
            "sample": {"size": 4, "pool_splits": ["train"]},
            "teacher": {"model": "qwen2.5-coder-0.5b-instruct", "max_prompt_tokens": 256},
            "student": {"model": "all-minilm-l6-v2", "recipe": "baseline", "probe_size": 100},
            "checks": {"min_minority_share": 0.1},
        }
    )
    monkeypatch.setattr("llambert.config.Settings.models_dir", property(lambda self: PROJECT_ROOT / "var" / "models"))
    with open_warehouse(settings.warehouse_path) as con:
        pipeline.ingest_batch(con, settings)
        pipeline.build_sample(con, settings)  # a few teacher answers make the labeling tables; the baseline
        pipeline.label_sample(con, settings)  # recipe then trains on the gold labels only
        pipeline.parse_labels(con, settings)
        stats = pipeline.train_checkpoint(con, settings)
        # The default family, self-distillation included (the real MiniLM learns from its ensemble's labels too).
        kinds = {c["kind"] for c in stats["candidates"]}
        assert kinds == {"linear", "encoder", "ensemble", "distilled", "distilled_linear", "distilled_ensemble"}, kinds
        assert con.execute("SELECT count(*) FROM students.distill_labels").fetchone()[0] > 0
        assert stats["champion"], stats["champion_reason"]
        pipeline.predict_batch(con, settings)
        rows = con.execute(
            "SELECT c.gold_label, p.label FROM predictions.labels p JOIN raw.corpus c USING (doc_id) "
            "WHERE c.split = 'test' AND p.checkpoint_id = (SELECT checkpoint_id FROM students.champion)"
        ).fetchall()
        verdicts = con.execute("SELECT kind, verdict, score FROM students.candidates").fetchall()
    gold, pred = [r[0] for r in rows], [r[1] for r in rows]
    m = classification_metrics(gold, pred, [0, 1])
    majority = classification_metrics(gold, [0] * len(gold), [0, 1])
    recall = [m["confusion"][i][i] / max(1, sum(m["confusion"][i])) for i in (0, 1)]
    assert set(pred) == {0, 1}, verdicts
    assert m["macro_f1"] >= majority["macro_f1"] + 0.15, (m["macro_f1"], majority["macro_f1"], verdicts)
    assert sum(recall) / 2 >= 0.6, (recall, verdicts)
