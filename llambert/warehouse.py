"""The DuckDB warehouse: connections, schemas, and running the dbt-style SQL models in sql/.

A model file is plain DuckDB SQL named after the table it builds (``sql/labeling/sample.sql``
builds ``labeling.sample``). Parameters reach SQL as DuckDB variables (``getvariable('seed')``),
so the files run unchanged in the duckdb CLI after a ``SET VARIABLE``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb

from llambert.config import PROJECT_ROOT

SQL_DIR = PROJECT_ROOT / "sql"
SCHEMAS = ("raw", "labeling", "students", "predictions", "evaluation", "ops")


def connect(path: str | Path, read_only: bool = False, retries: int = 60) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting while another process holds DuckDB's single-writer lock."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise FileNotFoundError(f"no warehouse at {path}: run `make run` (or `llambert run`) first")
    for attempt in range(retries):
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or attempt == retries - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def open_warehouse(path: str | Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(path, read_only=read_only)
    try:
        if not read_only:
            ensure_schemas(con)
            create_views(con)
        yield con
    finally:
        con.close()


def ensure_schemas(con: duckdb.DuckDBPyConnection) -> None:
    for schema in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    run_model(con, "ddl")


def model_path(name: str) -> Path:
    """``labeling.sample`` -> sql/labeling/sample.sql; ``ddl`` -> sql/ddl.sql."""
    p = SQL_DIR.joinpath(*name.split(".")).with_suffix(".sql")
    if not p.exists():
        raise FileNotFoundError(f"no SQL model {name} (expected {p})")
    return p


def set_variables(con: duckdb.DuckDBPyConnection, variables: Mapping[str, Any]) -> None:
    for key, value in variables.items():
        con.execute(f"SET VARIABLE {key} = ?", [value])


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: a crash or an error inside leaves the warehouse as it was."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def run_model(
    con: duckdb.DuckDBPyConnection, name: str, variables: Mapping[str, Any] | None = None
) -> None:
    """Run every statement of one SQL model inside a transaction."""
    if variables:
        set_variables(con, variables)
    sql = model_path(name).read_text()
    with transaction(con):
        con.execute(sql)


def create_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """(Re)create the saved views in sql/views/ (schema ``views``); returns the names created.

    A view whose tables do not exist yet (a fresh warehouse before the first run) is skipped:
    every later write connection tries again, so the views appear as soon as their tables do.
    """
    import hashlib

    con.execute("CREATE SCHEMA IF NOT EXISTS views")
    # Each view carries its file's hash as a comment: an unchanged view is not written again, so
    # opening the warehouse usually writes nothing.
    current = dict(con.execute("SELECT view_name, comment FROM duckdb_views() WHERE schema_name = 'views'").fetchall())
    names, changed = [], False
    for p in sorted((SQL_DIR / "views").glob("*.sql")):
        sql = p.read_text()
        stamp = f"sql/views/{p.name} sha256:{hashlib.sha256(sql.encode()).hexdigest()[:16]}"
        if current.get(p.stem) != stamp:
            try:
                con.execute(sql)
            except duckdb.CatalogException:
                continue
            con.execute(f"COMMENT ON VIEW views.{p.stem} IS '{stamp}'")
            changed = True
        names.append(p.stem)
    if changed:
        # Flush at once: DuckDB 1.5.6 cannot replay a WAL that holds these views, so a process
        # killed before its next checkpoint would leave a warehouse that does not open.
        try:
            con.execute("CHECKPOINT")
        except duckdb.Error:  # another transaction of this process is open: its commit flushes later
            pass
    return names


def table_exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    schema, table = qualified.split(".")
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def count(con: duckdb.DuckDBPyConnection, qualified: str, where: str = "") -> int:
    return int(con.execute(f"SELECT count(*) FROM {qualified} {('WHERE ' + where) if where else ''}").fetchone()[0])
