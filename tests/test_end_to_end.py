"""Every asset materialized through a real Dagster instance into a real DuckDB file."""

from __future__ import annotations

import duckdb
import yaml

from tests.conftest import tiny_settings_dict

TABLES = [
    "raw.corpus",
    "raw.occurrences",
    "labeling.sample",
    "labeling.llm_responses",
    "labeling.parsed_labels",
    "students.checkpoints",
    "students.champion",
    "predictions.labels",
    "evaluation.report",
]


def assert_every_table_has_its_model(con) -> None:
    """One hop from a table to the file that makes it: sql/<schema>/<table>.sql (views: sql/views/<name>.sql)."""
    from llambert.warehouse import SQL_DIR

    tables = con.execute(
        "SELECT table_schema, table_name, table_type FROM information_schema.tables "
        "WHERE table_catalog = current_database() ORDER BY ALL"
    ).fetchall()
    assert len(tables) > 20, tables
    missing = []
    for schema, name, kind in tables:
        path = SQL_DIR / schema / f"{name}.sql"
        if not path.exists() or f"{schema}.{name}" not in path.read_text():
            missing.append(f"{schema}.{name} ({kind}): sql/{schema}/{name}.sql")
    assert not missing, "tables without a model file that writes them: " + ", ".join(missing)


def assert_every_table_is_an_asset(con) -> None:
    """Every table the run wrote (not a view) is an asset key of the definitions, so the UI shows who writes it."""
    from dagster_project.definitions import build_definitions

    keys = {k.to_user_string() for k in build_definitions().resolve_asset_graph().get_all_asset_keys()}
    tables = con.execute(
        "SELECT table_schema || '/' || table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_type = 'BASE TABLE' ORDER BY ALL"
    ).fetchall()
    assert len(tables) > 20, tables
    missing = [t for (t,) in tables if t not in keys]
    assert not missing, "tables the run writes that are no asset: " + ", ".join(missing)


def _config(tmp_path, small_corpus, tiny_models, **over):
    cfg = tmp_path / "llambert.yaml"
    cfg.write_text(yaml.safe_dump(tiny_settings_dict(tmp_path / "home", small_corpus, tiny_models, **over)))
    return cfg


def test_pipeline_materializes_every_table(tmp_path, small_corpus, tiny_models, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    from dagster_project.run import run_pipeline

    cfg = _config(tmp_path, small_corpus, tiny_models)
    assert run_pipeline(str(cfg)) == 0
    out = capsys.readouterr().out
    assert "student accuracy on test split" in out

    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    for table in TABLES:
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table
    assert con.execute("SELECT count(*) FROM raw.rejected").fetchone()[0] == 0  # the table exists, nothing bad here
    n_docs = con.execute("SELECT count(*) FROM raw.corpus").fetchone()[0]
    assert n_docs == 160
    # Every document has exactly one prediction from the champion.
    assert (
        con.execute(
            "SELECT count(DISTINCT doc_id) FROM predictions.labels WHERE checkpoint_id = (SELECT checkpoint_id FROM students.champion)"
        ).fetchone()[0]
        == n_docs
    )
    # Never test: no sampled document occurs in the test split.
    assert (
        con.execute(
            "SELECT count(*) FROM labeling.sample WHERE doc_id IN (SELECT doc_id FROM raw.occurrences WHERE split = 'test')"
        ).fetchone()[0]
        == 0
    )
    parsed, discarded, responses = con.execute(
        "SELECT (SELECT count(*) FROM labeling.parsed_labels), (SELECT count(*) FROM labeling.discarded), "
        "(SELECT count(*) FROM labeling.llm_responses)"
    ).fetchone()
    assert parsed + discarded == responses == 40
    report = dict(con.execute("SELECT subject || '.' || metric, value FROM evaluation.report").fetchall())
    assert 0.0 <= report["student.accuracy_vs_gold"] <= 1.0
    assert report["corpus.documents_labeled"] == n_docs
    # The projection is completed with the student's measured docs/s once predictions ran.
    assert report["projection.llm_only_hours"] > 0 and report["projection.llambert_hours"] > 0
    assert (
        report["projection.llm_only_over_llambert"]
        == report["projection.llm_only_hours"] / report["projection.llambert_hours"]
    )
    assert_every_table_has_its_model(con)
    assert_every_table_is_an_asset(con)
    con.close()
    assert "whole corpus, LLM alone" in out

    # A second run pays for nothing again: every answer comes from the cache.
    assert run_pipeline(str(cfg)) == 0
    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    last = con.execute("SELECT prompts, cached FROM labeling.llm_runs ORDER BY finished_at DESC LIMIT 1").fetchone()
    assert last == (0, 40)
    assert con.execute("SELECT count(*) FROM labeling.llm_cache").fetchone()[0] == 40
    con.close()


def test_blocking_check_stops_training(tmp_path, small_corpus, tiny_models, monkeypatch, capsys):
    """An impossible discard-rate bound fails the check, and no student is trained on bad labels."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    from dagster_project.run import run_pipeline

    cfg = _config(
        tmp_path,
        small_corpus,
        tiny_models,
        checks={"min_minority_share": 0.5, "max_discard_rate": 0.0},
        teacher={"model": str(tiny_models["teacher"]), "max_new_tokens": 1},
    )
    assert run_pipeline(str(cfg)) == 1
    err = capsys.readouterr().err
    assert "label_balance" in err
    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM students.checkpoints").fetchone()[0] == 0
    con.close()
