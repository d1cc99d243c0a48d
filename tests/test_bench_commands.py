"""The benchmark commands (benchmarks/): every entry point starts, the teacher bench scores raw answers
through the project's own parser, and the reports end with the prose kept in docs/."""

from __future__ import annotations

import importlib

import duckdb
import polars as pl
import pytest

BENCHMARKS = ("teacher", "student", "quality", "scale", "teacher_prefix", "teacher_gpu")


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
