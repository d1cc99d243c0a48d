"""Where predictions.labels keeps its rows: a DuckDB table, or a Parquet dataset with a view over it.

``predictions.storage: table`` (default) is one table with one writer. ``parquet`` keeps the rows as
files under ``<home>/predictions/batch=<batch>/<checkpoint>-<part>.parquet`` and makes
``predictions.labels`` a view over them, so whoever labels documents (this process, or many Ray workers)
adds files and never waits on the warehouse's one writer. Every file is written under a temporary name
and renamed into place, so a reader or a crash sees a file completely or not at all. Everything that
reads ``predictions.labels`` (contracts, views, the report, `llambert sql`) works on both.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import duckdb
import polars as pl

from llambert.config import ConfigError, Settings
from llambert.warehouse import run_model, set_variables, transaction

COLUMNS = ("doc_id", "batch", "checkpoint_id", "label", "probability")
SCHEMA_FILE = "_schema.parquet"  # zero rows: the view has its columns (and types) before any prediction


def safe(name: str) -> str:
    """A batch or checkpoint id as a file-name part (readable, and distinct names stay distinct)."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if clean == name:
        return name
    import hashlib

    return f"{clean}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def kind(con: duckdb.DuckDBPyConnection) -> str | None:
    """'table', 'view' or None: what predictions.labels is in this warehouse now."""
    row = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = 'predictions' AND table_name = 'labels'"
    ).fetchone()
    return None if row is None else ("view" if row[0] == "VIEW" else "table")


def prepare(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Make predictions.labels what ``predictions.storage`` says (after the DDL has run).

    table -> parquet moves the table's rows into the dataset (one file per batch and checkpoint) and
    replaces the table by the view; parquet -> table is refused with what to do, since the dataset may
    be bigger than one machine's table.
    """
    now = kind(con)
    if settings.predictions.storage == "table":
        if now == "view":
            raise ConfigError(
                f"setting 'predictions.storage' is 'table', but this warehouse keeps predictions.labels as Parquet "
                f"under {settings.predictions_dir} (it was run with storage: parquet). Set predictions.storage: "
                "parquet again, or start a new home."
            )
        return
    root = settings.predictions_dir
    root.mkdir(parents=True, exist_ok=True)
    if not (root / SCHEMA_FILE).exists():
        _atomic_copy(
            con,
            "SELECT * FROM (SELECT ''::VARCHAR AS doc_id, ''::VARCHAR AS batch, ''::VARCHAR AS "
            "checkpoint_id, 0::BIGINT AS label, 0::DOUBLE AS probability, current_timestamp::TIMESTAMP AS "
            "predicted_at) WHERE false",
            root / SCHEMA_FILE,
        )
    if now == "table":
        with transaction(con):
            for batch, cid in con.execute(
                "SELECT DISTINCT batch, checkpoint_id FROM predictions.labels ORDER BY 1, 2"
            ).fetchall():
                _atomic_copy(
                    con,
                    "SELECT * FROM predictions.labels WHERE batch = $batch AND checkpoint_id = $cid",
                    part_path(settings, batch, cid, "migrated"),
                    {"batch": batch, "cid": cid},
                )
            con.execute("DROP TABLE predictions.labels")
    glob = str(root / "**" / "*.parquet").replace("'", "''")
    view = (
        f"CREATE OR REPLACE VIEW predictions.labels AS SELECT {', '.join(COLUMNS)}, predicted_at "
        f"FROM read_parquet('{glob}', union_by_name = true)"
    )
    if (
        now != "view"
        or con.execute("SELECT sql FROM duckdb_views() WHERE schema_name = 'predictions' AND view_name = 'labels'")
        .fetchone()[0]
        .rstrip(";")
        != view
    ):
        con.execute(view)


def part_path(settings: Settings, batch: str, checkpoint_id: str, part: str) -> Path:
    return settings.predictions_dir / f"batch={safe(batch)}" / f"{safe(checkpoint_id)}-{safe(part)}.parquet"


def _atomic_copy(con: duckdb.DuckDBPyConnection, query: str, dest: Path, params: dict | None = None) -> None:
    """COPY a query's rows to ``dest`` under a temporary name, then rename: all or nothing."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    target = str(tmp).replace("'", "''")
    con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet)", params or {})
    os.replace(tmp, dest)


def write_frame(con: duckdb.DuckDBPyConnection, settings: Settings, frame: pl.DataFrame, part: str) -> int:
    """Store one chunk of predictions (doc_id, batch, checkpoint_id, label, probability) of one batch and checkpoint.

    table: ``sql/predictions/labels.sql`` (INSERT OR REPLACE by name, one row per document and checkpoint).
    parquet: one new file, named by ``part`` (a re-run of the same part replaces it).
    """
    if frame.is_empty():
        return 0
    if settings.predictions.storage == "table":
        run_model(con, "predictions.labels", frames={"staged_predictions": frame.select(COLUMNS)})
        return frame.height
    con.register("staged_predictions", frame.select(COLUMNS))
    try:
        batch, cid = frame["batch"][0], frame["checkpoint_id"][0]
        _atomic_copy(
            con,
            "SELECT *, current_timestamp::TIMESTAMP AS predicted_at FROM staged_predictions "
            "QUALIFY row_number() OVER (PARTITION BY doc_id ORDER BY probability DESC) = 1",
            part_path(settings, batch, cid, part),
        )
    finally:
        con.unregister("staged_predictions")
    return frame.height


def load_staged(
    con: duckdb.DuckDBPyConnection, settings: Settings, files_glob: str, batch: str, checkpoint_id: str, part: str
) -> int:
    """The loader: a Ray job's staged Parquet output into predictions.labels, exactly once per document.

    table: one transaction (a kill -9 mid-insert rolls back; the re-run inserts again). parquet: one
    rewrite of the staged rows into the dataset (deduplicated) and a rename, with no warehouse write.
    """
    set_variables(con, {"staged_glob": files_glob})
    staged = (
        "SELECT doc_id, batch, checkpoint_id, label, probability FROM read_parquet(getvariable('staged_glob')) "
        "QUALIFY row_number() OVER (PARTITION BY doc_id ORDER BY probability DESC) = 1"
    )
    n = con.execute(f"SELECT count(*) FROM ({staged})").fetchone()[0]
    if settings.predictions.storage == "table":
        con.execute(f"CREATE OR REPLACE TEMP VIEW staged_predictions AS {staged}")
        try:
            run_model(con, "predictions.labels")
        finally:
            con.execute("DROP VIEW IF EXISTS staged_predictions")
    else:
        _atomic_copy(
            con,
            f"SELECT *, current_timestamp::TIMESTAMP AS predicted_at FROM ({staged})",
            part_path(settings, batch, checkpoint_id, part),
        )
    return n


def delete(con: duckdb.DuckDBPyConnection, settings: Settings, batch: str, checkpoint_id: str) -> None:
    """Forget one batch's predictions by one checkpoint (``predict --replace``)."""
    if settings.predictions.storage == "table":
        run_model(con, "predictions.labels", {"batch": batch, "checkpoint_id": checkpoint_id}, section="delete")
        return
    folder = settings.predictions_dir / f"batch={safe(batch)}"
    for f in folder.glob(f"{safe(checkpoint_id)}-*.parquet"):
        f.unlink()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
