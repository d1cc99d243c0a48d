"""Benchmark plumbing: the teacher bench's review draw and the student bench's resume check."""

from pathlib import Path

import polars as pl

from benchmarks.common import conditions
from benchmarks.teacher import reviews


def _test_split(tmp_path: Path, n_pos: int, n_neg: int) -> Path:
    pl.DataFrame(
        {
            "id": list(range(n_pos + n_neg)),
            "text": [f"review {i}" for i in range(n_pos + n_neg)],
            "label": [1] * n_pos + [0] * n_neg,
        }
    ).write_parquet(tmp_path / "test.parquet")
    return tmp_path


def test_draw_is_balanced_in_every_prefix_even_from_a_skewed_split(tmp_path):
    d = _test_split(tmp_path, n_pos=90, n_neg=30)
    docs = reviews(d, 40)
    assert docs.height == 40 and docs["doc_id"].n_unique() == 40
    for k in (2, 10, 24, 40):
        assert docs.head(k)["gold"].sum() == k // 2, k


def test_a_smaller_n_is_a_prefix_of_a_larger_one(tmp_path):
    d = _test_split(tmp_path, n_pos=60, n_neg=60)
    assert reviews(d, 12)["doc_id"].to_list() == reviews(d, 50)["doc_id"].head(12).to_list()
    assert reviews(d, 12, seed=1)["doc_id"].to_list() != reviews(d, 12)["doc_id"].to_list()


def test_conditions_name_the_machine(monkeypatch):
    """The CPU model from /proc/cpuinfo, the core count and the 1-minute load rounded to 2 places."""
    import importlib

    machine = importlib.import_module(conditions.__module__)
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 7)
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (1.23456, 9.0, 9.0))
    c = conditions()
    assert (c["cores"], c["load_1m"]) == (7, 1.23)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        assert c["cpu"] == (names[0] if names else "?")

    class NoProc(type(Path())):
        def read_text(self, *args, **kwargs):
            raise OSError("no /proc here")

    monkeypatch.setattr(machine, "Path", NoProc)
    assert conditions()["cpu"] == "?"  # a machine without /proc/cpuinfo is still described


def test_learning_curve_resume_finds_points_already_measured(tmp_path):
    """The curve stage skips points it has; this query failed once the table held rows."""
    import json

    from benchmarks.student import curve_point_measured, open_bench

    con = open_bench(tmp_path / "results.duckdb")
    assert not curve_point_measured(con, "gold", 250, "epochs=2")
    con.execute(
        "INSERT INTO bench.learning_curve (run_id, label_source, n_labels, details) VALUES ('r', 'gold', 250, ?)",
        [json.dumps({"config": "epochs=2"})],
    )
    assert curve_point_measured(con, "gold", 250, "epochs=2")
    assert not curve_point_measured(con, "gold", 250, "epochs=3")
    assert not curve_point_measured(con, "llm", 250, "epochs=2")


def test_onnx_runtime_trial_matches_the_torch_path(tmp_path, tiny_models):
    """The bench's ONNX Runtime trial (export, BERT fusion, int8) computes the same model as ours."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from benchmarks.student import OrtPredictor
    from llambert.student.predict import StudentPredictor

    ckpt = tmp_path / "ckpt"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(tiny_models["student"], num_labels=2).save_pretrained(ckpt)
    AutoTokenizer.from_pretrained(tiny_models["student"]).save_pretrained(ckpt)
    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "plot", "actor", "boring", "great", "x", "y", "z"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for _ in range(24)]

    ref = StudentPredictor(str(ckpt), max_length=32, batch_size=4, bf16=False)
    ref_labels, ref_probs = ref.predict(texts)
    ort_pred = OrtPredictor(str(ckpt), 32, 4, tmp_path / "onnx", threads=1)
    labels, probs = ort_pred.predict(texts)
    assert labels == ref_labels and np.allclose(probs, ref_probs, atol=1e-4)
    ort_pred.optimize()
    assert ort_pred.fused.get("Attention") == 2, ort_pred.fused  # both layers' attention fused
    labels, probs = ort_pred.predict(texts)
    assert labels == ref_labels and np.allclose(probs, ref_probs, atol=1e-4)
    ort_pred.quantize(per_channel=True, matmul_only=True)
    labels, probs = ort_pred.predict(texts)
    assert np.allclose(probs, ref_probs, atol=0.05)
