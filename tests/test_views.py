"""The saved views in sql/views/: created with the warehouse, and they answer what they claim.

One warehouse is built with the tiny models through the library's steps (no Dagster: that is
tests/test_end_to_end.py's job); each view is then checked against the tables it summarises.
"""

from __future__ import annotations

import duckdb
import pytest

from llambert import pipeline
from llambert.config import load_settings
from llambert.warehouse import SQL_DIR, create_views, open_warehouse
from tests.conftest import tiny_settings_dict

VIEWS = sorted(p.stem for p in (SQL_DIR / "views").glob("*.sql"))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, small_corpus, tiny_models):
    home = tmp_path_factory.mktemp("views") / "home"
    settings = load_settings(overrides=tiny_settings_dict(home, small_corpus, tiny_models))
    with open_warehouse(settings.warehouse_path) as con:
        # A fresh warehouse: the views whose tables do not exist yet are skipped, not errors.
        early = set(create_views(con))
        assert "stage_costs" in early and "teacher_student_disagreements" not in early
        pipeline.ingest_batch(con, settings)
        pipeline.build_sample(con, settings)
        pipeline.label_sample(con, settings)
        pipeline.parse_labels(con, settings)
        pipeline.train_checkpoint(con, settings)
        pipeline.predict_batch(con, settings)
        # A rejected input row and a discarded answer, so those views have something to count.
        con.execute(
            "INSERT INTO raw.rejected (batch, source, text, reason) VALUES ('initial', 'imdb', '', 'empty_text')"
        )
        con.execute("UPDATE labeling.llm_responses SET raw_text = 'no idea' WHERE sample_rank = 1")
        pipeline.parse_labels(con, settings)
    # A new write connection creates every view (what the Dagster assets open).
    with open_warehouse(settings.warehouse_path):
        pass
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    yield con
    con.close()


def test_every_view_is_created_with_the_warehouse(warehouse):
    have = {
        r[0] for r in warehouse.execute("SELECT view_name FROM duckdb_views() WHERE schema_name = 'views'").fetchall()
    }
    assert have == set(VIEWS)
    for v in VIEWS:
        warehouse.execute(f"FROM views.{v}").fetchall()  # every one runs


def test_disagreements_are_exactly_where_teacher_and_student_differ(warehouse):
    expected = warehouse.execute(
        "SELECT count(*) FROM labeling.parsed_labels t JOIN predictions.labels p ON p.doc_id = t.doc_id "
        "AND p.checkpoint_id = (SELECT checkpoint_id FROM students.champion) WHERE p.label <> t.label"
    ).fetchone()[0]
    rows = warehouse.execute(
        "SELECT teacher_label, student_label, student_probability FROM views.teacher_student_disagreements"
    ).fetchall()
    assert len(rows) == expected
    assert all(t != s for t, s, _ in rows)
    probs = [p for _, _, p in rows]
    assert probs == sorted(probs, reverse=True)


def test_least_confident_first_and_one_row_per_document(warehouse):
    probs = [r[0] for r in warehouse.execute("SELECT probability FROM views.least_confident_predictions").fetchall()]
    assert probs == sorted(probs)
    assert len(probs) == warehouse.execute("SELECT count(*) FROM raw.corpus").fetchone()[0]


def test_discard_reasons_cover_ingest_and_teacher(warehouse):
    rows = {
        (s, r): (n, share)
        for s, r, n, share in warehouse.execute(
            "SELECT stage, reason, rows, share_of_stage FROM views.discard_reasons"
        ).fetchall()
    }
    assert rows[("ingest", "empty_text")][0] == 1
    teacher = {r: v for (s, r), v in rows.items() if s == "teacher_answer"}
    assert (
        sum(n for n, _ in teacher.values())
        == warehouse.execute("SELECT count(*) FROM labeling.discarded").fetchone()[0]
        >= 1
    )
    assert teacher["no_label_word"][1] == pytest.approx(teacher["no_label_word"][0] / 40, abs=1e-4)


def test_label_balance_by_batch_adds_up(warehouse):
    rows = warehouse.execute("SELECT batch, label, documents, share FROM views.label_balance_by_batch").fetchall()
    assert {r[0] for r in rows} == {"initial"}
    assert sum(r[2] for r in rows) == 160
    assert sum(r[3] for r in rows) == pytest.approx(1.0, abs=1e-3)
    assert {r[1] for r in rows} <= {"negative", "positive"}


def test_stage_costs_one_row_per_stage_with_teacher_tokens(warehouse):
    rows = {
        r[0]: r[1:]
        for r in warehouse.execute(
            "SELECT stage, runs, rows_total, seconds_total, prompt_tokens FROM views.stage_costs"
        ).fetchall()
    }
    assert list(rows) == ["ingest", "sample", "teacher", "parse", "train", "predict"]
    assert rows["parse"][0] == 2  # parsed twice above
    assert rows["teacher"][3] == warehouse.execute("SELECT sum(prompt_tokens) FROM labeling.llm_runs").fetchone()[0] > 0
    assert all(secs >= 0 for _, _, secs, _ in rows.values())


def test_confusion_matrix_matches_the_report_counts(warehouse):
    cells = warehouse.execute(
        "SELECT who, gold_label, predicted_label, documents FROM views.confusion_matrix"
    ).fetchall()
    student = sum(n for w, *_, n in cells if w == "student")
    teacher = sum(n for w, *_, n in cells if w == "teacher")
    assert (
        student
        == warehouse.execute(
            "SELECT count(*) FROM raw.occurrences WHERE split = 'test' AND gold_label IS NOT NULL"
        ).fetchone()[0]
        == 40
    )
    assert (
        teacher
        == warehouse.execute("SELECT count(*) FROM labeling.parsed_labels WHERE gold_label IS NOT NULL").fetchone()[0]
    )
    correct = sum(n for w, g, p, n in cells if w == "student" and g == p)
    acc = warehouse.execute(
        "SELECT avg((p.label = o.gold_label)::INT) FROM raw.occurrences o JOIN predictions.labels p USING (doc_id) "
        "WHERE o.split = 'test' AND p.checkpoint_id = (SELECT checkpoint_id FROM students.champion)"
    ).fetchone()[0]
    assert correct / student == pytest.approx(acc)
