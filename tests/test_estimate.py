"""`llambert estimate` (issue 16, part 3) with the tiny models: measures, caches, projects."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import polars as pl
import pytest
import yaml

from llambert.config import PROJECT_ROOT
from llambert.estimate import estimate, fit_latency, format_estimate, stratified_by_length
from tests.conftest import tiny_settings_dict


def test_stratified_sample_spans_the_lengths_and_the_fit_is_linear():
    pool = pl.DataFrame({"doc_id": [f"d{i}" for i in range(100)], "text": ["x" * (i + 1) for i in range(100)]})
    picked = stratified_by_length(pool, 10, seed=3)
    lens = sorted(len(t) for t in picked["text"])
    assert len(lens) == 10 and [(l - 1) // 10 for l in lens] == list(range(10))  # one per length decile
    assert stratified_by_length(pool.head(5), 10).height == 5
    a, b = fit_latency([100, 200, 400], [1.5, 2.0, 3.0])
    assert a == pytest.approx(1.0) and b == pytest.approx(0.005)
    assert fit_latency([100, 200], [2.0, 1.0]) == (0.0, pytest.approx(3.0 / 300))  # a negative slope: proportional


def test_estimate_measures_the_tiny_teacher_and_student_and_caches_the_answers(tmp_path, small_corpus, tiny_models):
    from llambert.config import load_settings

    settings = load_settings(
        overrides=tiny_settings_dict(
            tmp_path / "home", small_corpus, tiny_models, sample={"size": 30}, student={"kind": "encoder"}
        )
    )
    first = estimate(settings, n=6)
    assert (
        first["corpus_docs"] == 160 and first["pool_docs"] == 120 and first["corpus_from"].startswith("the configured")
    )
    assert first["measured"] == 6 and first["asked_now"] == 6 and first["from_cache"] == 0
    proj = first["projection"]
    assert set(proj["teacher_seconds"]) == {15, 30, 60}
    assert proj["teacher_seconds"][60] == pytest.approx(2 * proj["teacher_seconds"][30])
    assert proj["teacher_seconds"][30] == pytest.approx(30 * first["teacher"]["seconds_per_prompt"])
    assert proj["teacher_seconds"][30] > 0
    assert proj["train_examples"] == 27 and proj["train_seconds"] > 0 and proj["corpus_seconds"] > 0
    assert first["student"]["infer_docs_per_s"] > 0 and first["student"]["train_examples_per_s"] > 0
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM labeling.llm_cache").fetchone()[0] == 6
        assert con.execute("SELECT status, prompts FROM labeling.llm_runs").fetchall() == [("done", 6)]
    text = "\n".join(format_estimate(first))
    assert "teacher, 30 prompts" in text and "<- sample.size" in text and "assumptions:" in text
    again = estimate(settings, n=6)  # nothing is paid twice: the latencies come from the cache
    assert again["asked_now"] == 0 and again["from_cache"] == 6
    assert again["teacher"]["fit_b"] == pytest.approx(first["teacher"]["fit_b"])


def test_the_estimate_command_prints_the_projection(tmp_path, small_corpus, tiny_models):
    cfg = tmp_path / "llambert.yaml"
    cfg.write_text(
        yaml.safe_dump(tiny_settings_dict(tmp_path / "home", small_corpus, tiny_models, student={"kind": "linear"}))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMBERT_TEST")} | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "llambert.cli",
            "--config",
            str(cfg),
            "estimate",
            "-n",
            "4",
            "--set",
            "sample.size=100",
            "--json",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["sample_size"] == 100 and out["measured"] == 4 and out["student"] == {"kind": "linear"}
    assert set(out["projection"]["teacher_seconds"]) == {"50", "100", "200"}
