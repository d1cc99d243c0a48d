"""The benchmark commands (benchmarks/): every entry point starts, the teacher bench scores raw answers
through the project's own parser, and the reports end with the prose kept in docs/."""

from __future__ import annotations

import importlib
import json

import duckdb
import polars as pl
import pytest

BENCHMARKS = ("teacher", "student", "quality", "scale", "teacher_prefix", "teacher_gpu", "teacher_then_now")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_command_answers_help(name, capsys):
    """`python -m benchmarks.<name> --help`, as the Makefile's bench-* targets run them."""
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_teacher_bench_scores_answers_through_the_task_parser(tmp_path):
    """Raw answers go through sql/labeling/answer_matches.sql: a clear answer is a label, the rest discards."""
    from benchmarks.teacher import parse, score
    from llambert.tasks import load_task
    from llambert.teacher.base import Answer

    task = load_task("imdb_sentiment")
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(4)], "text": ["t"] * 4, "gold": [1, 0, 1, 0]})
    answers = [Answer("Positive."), Answer("negative"), Answer("positive or negative"), Answer("")]
    con = duckdb.connect(str(tmp_path / "bench.duckdb"))
    con.execute("CREATE SCHEMA labeling")
    parsed = parse(con, task, docs, answers)
    assert parsed.sort("doc_id")["label"].to_list() == [1, 0, None, None]
    got = score(parsed)
    assert got["n"] == 4 and got["accuracy"] == 0.5 and got["discard_rate"] == 0.5 and got["share_positive"] == 0.25


def test_reports_end_with_the_prose_kept_in_docs(tmp_path):
    """The teacher report's Notes and the student report's design notes are docs/bench_*_notes.md, as written."""
    from benchmarks import student, teacher
    from llambert.reporting import markdown_table

    con = teacher.open_bench(tmp_path / "teacher.duckdb")
    md = tmp_path / "teacher.md"
    teacher.report(con, md)
    assert md.read_text().endswith("## Notes\n\n" + teacher.NOTES.read_text())

    speed = pl.DataFrame(
        schema={
            "what": pl.Utf8,
            "seconds": pl.Float64,
            "docs_per_s": pl.Float64,
            "accuracy_pct": pl.Float64,
            "docs_per_cpu_s": pl.Float64,
            "details": pl.Utf8,
        }
    )
    curve = pl.DataFrame(
        schema={"label_source": pl.Utf8, "n_labels": pl.Int64, "test_accuracy_pct": pl.Float64, "config": pl.Utf8}
    )
    text = student.render_markdown(speed, curve, markdown_table)
    assert text.endswith("\n" + student.DESIGN_NOTES.read_text())
    assert "benchmarks/student.py" in text and "llambert/bench" not in text


def test_quality_plot_keeps_the_docs_figures_and_never_passes_random_labels_off_as_uncertainty(tmp_path, monkeypatch):
    """docs/bench_quality.png: earlier sessions' figures come from the doc's IMDb table; a random-sample row stands
    in for an uncertainty line only below the budgets where uncertainty sampling ran; a collapsed point is drawn."""
    from benchmarks import quality_students as q

    doc = tmp_path / "bench_quality.md"
    doc.write_text(
        "# x\n\n## imdb\n\n| LLM labels | strategy | test acc. | f1 |\n|---|---|---|---|\n"
        "| 250 | default (= ensemble) | 81.65% | 81.56% |\n| 250 | paper | 50.00% | 33.33% |\n"
        "| 500 | linear | 82.70% | 82.67% |\n| 500 | uncertainty:default (= encoder) | 87.45% | 87.45% |\n"
        "\n## short\n\n| 300 | linear | 63.40% | 63.32% |\n"
    )
    monkeypatch.setattr(q, "DOC", doc)
    monkeypatch.setattr(q, "PLOT", tmp_path / "plot.png")
    rows = q.doc_rows("imdb").with_columns(pl.col("acc").round(4))
    assert rows.rows() == [
        (250, "default", 0.8165),
        (250, "paper", 0.5),
        (500, "linear", 0.827),
        (500, "uncertainty:default", 0.8745),
    ]
    assert q.doc_rows("short").with_columns(pl.col("acc").round(4)).rows() == [(300, "linear", 0.634)]

    import matplotlib.axes

    drawn, real_plot = {}, matplotlib.axes.Axes.plot

    def spy(self, xs, ys, *a, **kw):
        if "label" in kw:
            drawn[kw["label"]] = list(zip(xs, ys))
        return real_plot(self, xs, ys, *a, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    q._plot(rows.with_columns(corpus=pl.lit("imdb")))
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    label = dict((s, lab) for s, lab, _ in q.PLOT_SERIES)
    assert drawn[label["default"]] == [(250, pytest.approx(81.65)), (500, pytest.approx(87.45))]
    assert drawn[label["linear"]] == [(500, pytest.approx(82.7))]
    assert label["uncertainty:linear"] not in drawn  # the random floor at 500 is not the uncertainty floor
    assert drawn[label["paper"]] == [(250, q.FLOOR_Y)]  # 50%: on the axis, annotated


def test_teacher_slice_keeps_the_test_slices_class_shares_in_its_order():
    from benchmarks.quality import teacher_slice

    test = pl.DataFrame({"doc_key": [f"d{i}" for i in range(10)], "gold": [0, 1, 0, 0, 0, 0, 1, 0, 0, 0]})
    assert teacher_slice(test, 5)["doc_key"].to_list() == ["d0", "d1", "d2", "d3", "d4"]  # 20% positive: 1 of 5
    balanced = pl.DataFrame({"doc_key": [f"d{i}" for i in range(8)], "gold": [1, 1, 1, 0, 1, 0, 0, 0]})
    assert teacher_slice(balanced, 4)["doc_key"].to_list() == ["d0", "d1", "d3", "d5"]


def test_quality_teacher_stage_answers_the_test_slice_once_and_scores_it(tmp_path, tiny_models, imdb_dir, monkeypatch):
    """`python -m benchmarks.quality teacher`: the teacher alone on a balanced prefix of the IMDb test slice, its
    answers in the shared cache under corpus imdb-test (exported), a second run asks nothing."""
    from benchmarks import quality, quality_data

    monkeypatch.setenv("LLAMBERT_DATA_DIR", str(imdb_dir))
    monkeypatch.setenv("LLAMBERT_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.setattr(quality_data, "DB", tmp_path / "quality.duckdb")
    monkeypatch.setattr(quality_data, "ANSWERS", tmp_path / "answers.parquet")
    tiny = str(tiny_models["teacher"])
    argv = ["teacher", "--teacher", tiny, "--teacher-n", "4", "--teacher-corpora", "imdb"]
    quality.main(argv)
    answers = pl.read_parquet(tmp_path / "answers.parquet")
    assert answers.height == 4 and answers["corpus"].unique().to_list() == ["imdb-test"]
    assert answers["doc_key"].str.starts_with("test:").all()
    sub = quality.teacher_slice(quality_data.load_corpus("imdb").test, 4)
    assert sorted(answers["doc_key"].to_list()) == sorted(sub["doc_key"].to_list()) and sub["gold"].sum() == 2
    quality.main(argv)  # cached: nothing new is asked
    again = pl.read_parquet(tmp_path / "answers.parquet")
    assert again.height == 4 and again["answered_at"].to_list() == answers["answered_at"].to_list()
    con = quality_data.connect()
    out = quality.teacher_on_test(con, quality_data.Teacher(tiny, con), 4, ["imdb"]).row(0, named=True)
    probs = [json.loads(x) for x in answers.sort("doc_key")["label_probs"].to_list()]
    gold = dict(zip(sub["doc_key"].to_list(), sub["gold"].to_list()))
    right = sum(
        int(p["positive"] > p["negative"]) == gold[k] for p, k in zip(probs, answers.sort("doc_key")["doc_key"])
    )
    assert out["answered"] == 4 and out["accuracy"] == right / 4 and out["prompts_per_s"] > 0


def test_teacher_then_now_runs_each_arm_from_its_own_code_and_resumes(tmp_path, tiny_models, imdb_dir, monkeypatch):
    """`python -m benchmarks.teacher_then_now`: the 'then' arm imports the llambert exported from the named commit
    (not this checkout's), every arm answers every review once (a rerun asks nothing), and the report compares
    the arms on the same reviews."""
    from benchmarks import teacher_then_now as tn

    monkeypatch.setenv("LLAMBERT_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.setattr(tn, "BENCH_VAR", tmp_path)
    db, md = tmp_path / "teacher.duckdb", tmp_path / "then_now.md"
    tiny = str(tiny_models["teacher"])
    argv = ["--model", tiny, "--then", "HEAD", "--n", "4", "--chunk", "2", "--arms", "then:generate", "now:choice"]
    argv += ["--db", str(db), "--md", str(md), "--data-dir", str(imdb_dir)]
    out = tn.main(argv)
    exported = list(tmp_path.glob("then-*/llambert/teacher/__init__.py"))
    assert len(exported) == 1  # the 'then' code is a copy of the commit, outside this checkout
    assert out["arm"].to_list() == ["then:generate", "now:choice"] and out["n"].to_list() == [4, 4]
    assert out["x_cpu"][0] == 1.0 and out["prompts_per_cpu_s"].min() > 0
    con = duckdb.connect(str(db))
    first = con.execute("SELECT arm, doc_id, measured_at FROM bench.teacher_then_now ORDER BY ALL").fetchall()
    con.close()
    assert len(first) == 8
    tn.main(argv)  # resumed: nothing is asked again
    con = duckdb.connect(str(db))
    assert con.execute("SELECT arm, doc_id, measured_at FROM bench.teacher_then_now ORDER BY ALL").fetchall() == first
    choice = con.execute("SELECT label_probs, raw_text FROM bench.teacher_then_now WHERE arm = 'now:choice'").fetchall()
    assert all(p is not None and raw in json.loads(p) for p, raw in choice)
    assert "| then:generate |" in md.read_text() and "+0.0 pt" in md.read_text()
