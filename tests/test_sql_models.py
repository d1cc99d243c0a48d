"""The SQL models on a real DuckDB: the paper's parser, the stable sample, corpus dedup."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from llambert.tasks import load_task
from llambert.warehouse import ensure_schemas, run_model, write_task_labels


@pytest.fixture
def con():
    c = duckdb.connect(":memory:")
    ensure_schemas(c)
    yield c
    c.close()


def _parse(con, task_name: str, answers: list[str | None]) -> list[tuple]:
    write_task_labels(con, load_task(task_name))
    frame = pl.DataFrame(
        {"doc_id": [f"d{i}" for i in range(len(answers))], "raw_text": answers},
        schema={"doc_id": pl.Utf8, "raw_text": pl.Utf8},
    )
    con.register("answers_in", frame)
    con.execute(
        "CREATE OR REPLACE TABLE labeling.llm_responses AS SELECT doc_id, raw_text, "
        "NULL::MAP(VARCHAR, DOUBLE) AS label_probs FROM answers_in"
    )
    run_model(con, "labeling.answer_matches")
    return con.execute("SELECT raw_text, label, discard_reason FROM labeling.answer_matches ORDER BY doc_id").fetchall()


def test_paper_parser_on_imdb_answers(con):
    rows = _parse(
        con,
        "imdb_sentiment",
        [
            "positive",
            " Negative.",
            "POSITIVE!",
            "The movie review is positive",
            "positive/negative",
            "I cannot tell",
            "",
            None,
            "posi tive",
            "'negative'",
        ],
    )
    got = [(label, reason) for _, label, reason in rows]
    assert got == [
        (1, None),
        (0, None),
        (1, None),
        (1, None),
        (None, "several_labels"),
        (None, "no_label_word"),
        (None, "empty_answer"),
        (None, "no_answer"),
        (1, None),
        (0, None),
    ]


def test_word_match_for_yes_no(con):
    rows = _parse(con, "umls_related", ["Yes", "no.", "I don't know", "yes, not no", "nothing"])
    assert [(label, reason) for _, label, reason in rows] == [
        (1, None),
        (0, None),
        (None, "no_label_word"),
        (None, "several_labels"),
        (None, "no_label_word"),
    ]


def _stage(con, rows):
    frame = pl.DataFrame(
        rows,
        orient="row",
        schema={
            "source": pl.Utf8,
            "source_file": pl.Utf8,
            "source_row": pl.Int64,
            "source_id": pl.Utf8,
            "split": pl.Utf8,
            "text": pl.Utf8,
            "gold_label": pl.Int64,
        },
    )
    con.register("staged_rows", frame)


def test_corpus_stores_a_text_once_and_prefers_the_eval_split(con):
    rows = [
        ("s", "f", 0, "1", "train", "same text", 1),
        ("s", "f", 1, "2", "test", "same text", 1),
        ("s", "f", 2, "3", "unsup", "other", None),
        ("s", "f", 3, "4", "train", "conflict", 0),
        ("s", "f", 4, "5", "train", "conflict", 1),
    ]
    _stage(con, rows)
    con.execute("SET VARIABLE batch = 'b1'; SET VARIABLE eval_split = 'test'")
    run_model(con, "raw.occurrences")
    run_model(con, "raw.corpus")
    got = {
        r[0]: r[1:]
        for r in con.execute("SELECT text, split, n_copies, gold_label, gold_conflict FROM raw.corpus").fetchall()
    }
    assert got == {
        "same text": ("test", 2, 1, False),
        "other": ("unsup", 1, None, False),
        "conflict": ("train", 2, None, True),
    }
    assert con.execute("SELECT count(*) FROM raw.occurrences").fetchone()[0] == 5
    # Re-running the batch replaces its rows; another batch with a known text adds no document.
    run_model(con, "raw.occurrences")
    run_model(con, "raw.corpus")
    assert con.execute("SELECT count(*) FROM raw.corpus").fetchone()[0] == 3
    con.execute("SET VARIABLE batch = 'b2'")
    _stage(con, [("s", "g", 0, "9", "new", "other", None)])
    run_model(con, "raw.occurrences")
    run_model(con, "raw.corpus")
    assert con.execute("SELECT count(*) FROM raw.corpus").fetchone()[0] == 3
    assert con.execute("SELECT count(*) FROM raw.occurrences WHERE batch = 'b2'").fetchone()[0] == 1


def test_sample_is_seeded_stable_and_grows_by_extension(con):
    texts = [f"review number {i}" for i in range(300)]
    rows = [
        ("s", "f", i, str(i), "test" if i < 50 else ("train" if i < 200 else "unsup"), t, i % 2 if i < 200 else None)
        for i, t in enumerate(texts)
    ]
    _stage(con, rows)
    con.execute("SET VARIABLE batch = 'b'; SET VARIABLE eval_split = 'test'")
    run_model(con, "raw.occurrences")
    run_model(con, "raw.corpus")

    def sample(size, seed=0):
        run_model(
            con, "labeling.pool", {"pool_splits": ["train", "unsup"], "exclude_splits": ["test"], "sample_seed": seed}
        )
        run_model(con, "labeling.sample", {"sample_size": size})
        return [r[0] for r in con.execute("SELECT doc_id FROM labeling.sample ORDER BY sample_rank").fetchall()]

    small, big = sample(20), sample(60)
    assert big[:20] == small and len(set(big)) == 60
    assert sample(20) == small
    assert sample(20, seed=1) != small
    test_ids = {r[0] for r in con.execute("SELECT doc_id FROM raw.occurrences WHERE split = 'test'").fetchall()}
    assert not test_ids & set(sample(250))
    assert len(sample(1000)) == 250  # the whole pool, never more


def test_report_gives_the_teachers_recall_per_gold_class(con):
    """A teacher that leans one way: accuracy alone (0.8) hides that it calls a third of the gold
    negatives positive; evaluation.report's recall rows, and the run summary, show it."""
    from llambert.reporting import recall_text, summary_lines, teacher_recall

    write_task_labels(con, load_task("imdb_sentiment"))  # 0 negative, 1 positive
    # (teacher label, gold label): 6 gold negatives, 2 of them called positive;
    # 4 gold positives, all right; 2 sampled documents without gold count nowhere.
    pairs = [(0, 0)] * 4 + [(1, 0)] * 2 + [(1, 1)] * 4 + [(0, None), (1, None)]
    frame = pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(len(pairs))],
            "label": [p for p, _ in pairs],
            "gold_label": [g for _, g in pairs],
        },
        schema={"doc_id": pl.Utf8, "label": pl.Int64, "gold_label": pl.Int64},
    )
    con.register("teacher_in", frame)
    con.execute("CREATE TABLE labeling.parsed_labels AS SELECT doc_id, label, gold_label FROM teacher_in")
    con.execute("CREATE TABLE labeling.llm_responses AS SELECT doc_id FROM teacher_in")
    con.execute("CREATE TABLE labeling.discarded AS SELECT doc_id FROM teacher_in WHERE false")
    con.execute("CREATE TABLE students.champion (checkpoint_id VARCHAR)")
    run_model(con, "evaluation.report", {"eval_split": "test"})
    got = con.execute(
        "SELECT metric, value, n FROM evaluation.report WHERE subject = 'teacher' "
        "AND metric <> 'discard_rate' ORDER BY metric"
    ).fetchall()
    assert got == [
        ("accuracy_vs_gold", pytest.approx(0.8), 10),
        ("macro_f1_vs_gold", pytest.approx((2 * 4 / (2 * 4 + 0 + 2) + 2 * 4 / (2 * 4 + 2 + 0)) / 2), 10),
        ("recall_vs_gold_negative", pytest.approx(4 / 6), 6),
        ("recall_vs_gold_positive", pytest.approx(1.0), 4),
    ]
    report = con.execute("SELECT * FROM evaluation.report ORDER BY subject, metric").pl()
    assert recall_text(teacher_recall(report)) == "negative: 66.7% (of 6), positive: 100.0% (of 4)"
    assert "teacher recall per gold class   negative: 66.7% (of 6), positive: 100.0% (of 4)" in summary_lines(
        report, "w.duckdb", []
    )
    # A class the probe holds no gold of is reported with n = 0 and no value, not dropped.
    con.execute("DELETE FROM labeling.parsed_labels WHERE gold_label = 1")
    run_model(con, "evaluation.report", {"eval_split": "test"})
    assert con.execute(
        "SELECT value, n FROM evaluation.report WHERE metric = 'recall_vs_gold_positive'"
    ).fetchone() == (None, 0)


def test_no_python_writes_a_warehouse_table_with_sql_of_its_own():
    """Writes go through the model files (run_model): a table's SQL is in sql/<schema>/<table>.sql only."""
    import re
    from pathlib import Path

    write = re.compile(
        r"\b(INSERT\s+(OR\s+\w+\s+)?INTO|DELETE\s+FROM|UPDATE|ALTER\s+TABLE|"
        r"CREATE\s+(OR\s+REPLACE\s+)?(TABLE|VIEW|MACRO)(\s+IF\s+NOT\s+EXISTS)?)\s+"
        r"(raw|labeling|students|predictions|evaluation|ops|views)\.",
        re.I,
    )
    root = Path(__file__).resolve().parents[1] / "llambert"
    # predictions_store: under predictions.storage parquet, predictions.labels is a view over a folder that a
    # setting names (and the table it replaces is dropped), so that one view is made in Python.
    # estimate.py builds a scratch copy of two tables in memory (a dry run, never the warehouse); cli/sql.py's
    # help shows the user a write of their own.
    allowed = {
        ("predictions_store.py", "CREATE OR REPLACE VIEW predictions."),
        ("estimate.py", "CREATE TABLE labeling."),
        ("estimate.py", "CREATE TABLE raw."),
        ("sql.py", "DELETE FROM labeling."),
    }
    found = [
        (p.relative_to(root.parent), m.group(0))
        for p in sorted(root.rglob("*.py"))
        if "bench" not in p.parts
        for m in write.finditer(p.read_text())
        if (p.name, m.group(0)) not in allowed
    ]
    assert found == [], found
