"""`llambert sql` without --write cannot write anything: not the warehouse, not a file, not another
database, not an extension, not a setting (issue 13, defect 3).

Every query runs through the real CLI as a subprocess, on a real DuckDB warehouse ingested from
the small IMDb corpus.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from llambert import pipeline
from llambert.config import PROJECT_ROOT, load_settings
from llambert.warehouse import open_warehouse

REFUSED = "llambert sql: PermissionError: query refused: `llambert sql` is read-only"


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, small_corpus) -> Path:
    root = tmp_path_factory.mktemp("sql_lockdown")
    settings = load_settings(overrides={"home": str(root / "home"), "data_dir": str(small_corpus)})
    with open_warehouse(settings.warehouse_path) as con:
        pipeline.ingest_batch(con, settings)
    return settings.warehouse_path


def sql(warehouse: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    """`llambert sql --warehouse W ...` with HOME (DuckDB's extension and secret folders) in tmp."""
    return subprocess.run(
        [sys.executable, "-m", "llambert.cli", "sql", "--warehouse", str(warehouse), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(home)},
    )


def assert_refused(r: subprocess.CompletedProcess) -> None:
    assert r.returncode != 0, r.stdout
    first = r.stderr.splitlines()[0]
    assert first.startswith(REFUSED), r.stderr
    assert "add --write if you really mean to write" in first
    assert "Traceback" not in r.stderr


def corpus_rows(path: Path) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM raw.corpus").fetchone()[0]
    finally:
        con.close()


def test_copy_to_a_file_is_refused(warehouse, tmp_path):
    out = tmp_path / "out.csv"
    r = sql(warehouse, tmp_path, f"COPY (SELECT * FROM raw.corpus) TO '{out}'")
    assert_refused(r)
    assert not out.exists()
    export = tmp_path / "export"
    assert_refused(sql(warehouse, tmp_path, f"EXPORT DATABASE '{export}'"))
    assert not export.exists()


def test_attach_another_warehouse_and_delete_is_refused(warehouse, tmp_path):
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE SCHEMA raw; CREATE TABLE raw.corpus AS SELECT range AS id FROM range(5)")
    con.close()
    r = sql(warehouse, tmp_path, f"ATTACH '{other}' AS o (READ_WRITE); DELETE FROM o.raw.corpus")
    assert_refused(r)
    assert corpus_rows(other) == 5
    assert corpus_rows(warehouse) == 160


def test_install_and_load_of_extensions_are_refused_before_any_download(warehouse, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    for q in ("INSTALL httpfs", "FORCE INSTALL httpfs FROM core", "LOAD httpfs"):
        assert_refused(sql(warehouse, home, q))
    assert not (home / ".duckdb").exists()  # no ~/.duckdb/extensions: nothing was fetched or written


def test_changing_settings_is_refused(warehouse, tmp_path):
    for q in (
        "SET threads = 1",
        "PRAGMA threads = 1",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "SET lock_configuration = false",
    ):
        assert_refused(sql(warehouse, tmp_path, q))


def test_reading_other_files_is_refused(warehouse, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n1,2\n")
    assert_refused(sql(warehouse, tmp_path, f"SELECT * FROM read_csv('{secret}')"))


def test_writing_the_warehouse_is_refused(warehouse, tmp_path):
    assert_refused(sql(warehouse, tmp_path, "DELETE FROM raw.corpus"))
    assert corpus_rows(warehouse) == 160


def test_ordinary_read_only_queries_still_work(warehouse, tmp_path):
    r = sql(
        warehouse, tmp_path, "--format", "json", "SELECT split, count(*) AS n FROM raw.corpus GROUP BY 1 ORDER BY 1"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [
        {"split": "test", "n": 40},
        {"split": "train", "n": 60},
        {"split": "unsup", "n": 60},
    ]
    r = sql(warehouse, tmp_path, "--format", "json", "SELECT stage, rows_total FROM views.stage_costs")
    assert r.returncode == 0, r.stderr
    assert {"stage": "ingest", "rows_total": 160} in json.loads(r.stdout)
    r = sql(warehouse, tmp_path, "SHOW ALL TABLES")
    assert r.returncode == 0 and "corpus" in r.stdout, r.stderr


def test_write_still_allows_everything(warehouse, tmp_path):
    out = tmp_path / "out.csv"
    r = sql(warehouse, tmp_path, "--write", f"COPY (SELECT 1 AS x) TO '{out}'")
    assert r.returncode == 0, r.stderr
    assert out.read_text().split() == ["x", "1"]
