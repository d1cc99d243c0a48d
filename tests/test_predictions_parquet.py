"""predictions.storage: parquet (issue 15): the same rows as the table, contracts and views on the view over
the files, `llambert sql` may read the dataset but not write into it, a table's rows move into the
dataset when the setting changes, and going back is refused with what to do."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pytest

from llambert.config import PROJECT_ROOT, ConfigError, load_settings
from tests.conftest import tiny_settings_dict, train_through


def _run_to_predictions(settings):
    from llambert import pipeline
    from llambert.warehouse import open_warehouse

    with open_warehouse(settings.warehouse_path) as con:
        train_through(con, settings)
        pipeline.predict_batch(con, settings)
        return con.execute(
            "SELECT doc_id, checkpoint_id, label, probability FROM predictions.labels ORDER BY doc_id"
        ).fetchall()


def test_parquet_storage_holds_the_same_rows_and_passes_the_same_contracts(tmp_path, small_corpus, tiny_models):
    from llambert import contracts, pipeline
    from llambert.warehouse import open_warehouse

    base = tiny_settings_dict(
        tmp_path / "table", small_corpus, tiny_models, student={"kind": "linear", "chunk_rows": 64}
    )
    table = load_settings(overrides=base)
    parquet = load_settings(overrides=base | {"home": str(tmp_path / "parquet"), "predictions": {"storage": "parquet"}})
    rows_table, rows_parquet = _run_to_predictions(table), _run_to_predictions(parquet)
    assert len(rows_table) == 160
    # the same documents, labels and probabilities (checkpoint ids differ: they carry a timestamp)
    assert [(r[0], r[2], round(r[3], 9)) for r in rows_parquet] == [(r[0], r[2], round(r[3], 9)) for r in rows_table]
    files = sorted(p.name for p in parquet.predictions_dir.rglob("*.parquet"))
    assert len(files) == 1 + 3 and files[-1] == "_schema.parquet"  # 160 docs in chunks of 64, and the schema file
    with open_warehouse(parquet.warehouse_path) as con:
        assert (
            con.execute(
                "SELECT table_type FROM information_schema.tables WHERE table_schema = 'predictions' "
                "AND table_name = 'labels'"
            ).fetchone()[0]
            == "VIEW"
        )
        verdicts = {r.contract: r.passed for r in contracts.evaluate(con, parquet, "predictions.labels", "initial")}
        assert verdicts and all(verdicts.values()), verdicts
        assert con.execute("SELECT count(*) FROM views.least_confident_predictions").fetchone()[0] > 0
        # a re-run finds nothing pending; --replace forgets the batch's files and labels again
        assert pipeline.predict_batch(con, parquet)["predicted_now"] == 0
        assert pipeline.predict_batch(con, parquet, replace=True)["predicted_now"] == 160
        assert con.execute("SELECT count(*), count(DISTINCT doc_id) FROM predictions.labels").fetchone() == (160, 160)
    with open_warehouse(table.warehouse_path) as con:
        verdicts_table = {r.contract: r.passed for r in contracts.evaluate(con, table, "predictions.labels", "initial")}
    assert verdicts == verdicts_table

    # `llambert sql`, read-only: the view reads the dataset; writing into it (or anywhere) is refused.
    env_cmd = [
        sys.executable,
        "-m",
        "llambert.cli",
        "sql",
        "--warehouse",
        str(parquet.warehouse_path),
        "--format",
        "json",
    ]
    out = subprocess.run(
        env_cmd + ["SELECT count(*) AS n FROM predictions.labels"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["n"] == 160
    target = parquet.predictions_dir / "batch=initial" / "evil.parquet"
    out = subprocess.run(
        env_cmd + [f"COPY (SELECT * FROM predictions.labels) TO '{target}'"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "read-only" in out.stderr and not target.exists()
    out = subprocess.run(
        env_cmd + ["SELECT count(*) FROM read_csv('/etc/passwd')"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0


def test_switching_a_table_warehouse_to_parquet_moves_its_rows_and_back_is_refused(tmp_path, small_corpus, tiny_models):
    from llambert import predictions_store

    base = tiny_settings_dict(tmp_path / "home", small_corpus, tiny_models, student={"kind": "linear"})
    table = load_settings(overrides=base)
    rows = _run_to_predictions(table)
    parquet = load_settings(overrides=base | {"predictions": {"storage": "parquet"}})
    with duckdb.connect(str(table.warehouse_path)) as con:
        predictions_store.prepare(con, parquet)
        assert predictions_store.kind(con) == "view"
        assert (
            con.execute(
                "SELECT doc_id, checkpoint_id, label, probability FROM predictions.labels ORDER BY doc_id"
            ).fetchall()
            == rows
        )
        predictions_store.prepare(con, parquet)  # idempotent
        with pytest.raises(ConfigError, match="predictions.storage"):
            predictions_store.prepare(con, table)
    assert len(list(parquet.predictions_dir.rglob("*-migrated.parquet"))) == 1
