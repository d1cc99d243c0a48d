"""The DuckDB warehouse: connections, schemas, and running the dbt-style SQL models in sql/.

A model file is plain DuckDB SQL named after the table it writes (``sql/labeling/sample.sql``
writes ``labeling.sample``); every table of the warehouse has one, and no Python writes a table
with SQL of its own. Parameters reach SQL as DuckDB variables (``getvariable('seed')``), so the
files run unchanged in the duckdb CLI after a ``SET VARIABLE``; rows made in Python reach it as
staged frames (``frames=`` of :func:`run_model`, read as ``FROM staged_<name>``).

The statements at the top of a file are the model. A line ``-- @<name>`` starts a named section
below them: ``-- @ddl`` holds a durable table's CREATE TABLE (run by :func:`ensure_schemas` on every
write connection), other sections hold the table's other writes (``run_model(..., section=...)``).
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl

from llambert.config import PROJECT_ROOT

if TYPE_CHECKING:
    from llambert.tasks import Task

SQL_DIR = PROJECT_ROOT / "sql"
SCHEMAS = ("raw", "labeling", "students", "predictions", "evaluation", "ops")


class WarehouseLocked(duckdb.IOException):
    """Another process held DuckDB's file lock for longer than we were willing to wait."""


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


def lock_holder(error: BaseException | str) -> str:
    """Who holds the warehouse, from DuckDB's lock error: 'PID 123 (python3.11 -m dagster api execute_step ...)'."""
    m = _LOCK_HOLDER.search(str(error))
    if not m:
        return "another process"
    pid, exe = m.group(2), m.group(1)
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    cmd = cmd or exe
    return f"PID {pid} ({cmd[:120] + ('...' if len(cmd) > 120 else '')})"


def connect(
    path: str | Path,
    read_only: bool = False,
    retries: int = 60,
    wait_s: float | None = None,
    on_wait: Callable[[str, float], None] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting while another process holds DuckDB's file lock.

    DuckDB lets one process write a file, or many read it, never both. The long pipeline loops
    (teacher labeling, corpus labeling) hold the write lock only while they commit, so a reader
    usually gets in within a second; other steps hold it until they end. ``wait_s`` bounds the wait
    (default ``retries`` x 0.5 s); ``on_wait(holder, wait_s)`` is called when the first attempt finds
    the lock held (``holder`` names the process). When the wait is spent, :class:`WarehouseLocked`
    says who holds the lock.
    """
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise FileNotFoundError(f"no warehouse at {path}: run `make run` (or `llambert run`) first")
    wait_s = retries * 0.5 if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise
            if time.monotonic() >= deadline:
                raise WarehouseLocked(
                    f"the warehouse {path} is locked by {lock_holder(e)} and stayed locked for {wait_s:.0f} s. "
                    "A pipeline step is writing: teacher and corpus labeling let readers in between their commits, "
                    "other steps (ingest, training, contracts) hold the lock until they end. Try again when the step "
                    f"is done, or wait longer. ({e})"
                ) from None
            if on_wait is not None and not told:
                on_wait(lock_holder(e), wait_s)
                told = True
            time.sleep(0.1)


class Warehouse:
    """The warehouse by its path, for long loops that must not hold the file lock between commits.

    ``session()`` opens a write connection, yields it and closes it (DuckDB checkpoints on close), so
    while the loop computes (the teacher thinks, the student predicts) no connection is open and
    readers (`llambert sql`, `llambert status`, another step) can get in. Everything a session commits
    is durable when it ends: a kill -9 between sessions loses nothing committed.
    """

    def __init__(self, path: str | Path, wait_s: float = 600.0) -> None:
        self.path = Path(path)
        self.wait_s = wait_s

    def _told(self, holder: str, wait_s: float) -> None:
        print(
            f"[llambert] the warehouse is locked by {holder} (a reader holding it open blocks the "
            f"pipeline's commits); waiting up to {wait_s:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    @contextlib.contextmanager
    def session(self, prepare: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short write connection; ``prepare`` also makes sure every schema, table and view exists."""
        con = connect(self.path, wait_s=self.wait_s, on_wait=self._told)
        try:
            if prepare:
                ensure_schemas(con)
                create_views(con)
            yield con
        finally:
            con.close()


def sessions(db: duckdb.DuckDBPyConnection | Warehouse) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of connections: short sessions on a :class:`Warehouse`, or the one open connection given
    (tests and callers that hold a connection anyway: then nothing is closed in between)."""
    if isinstance(db, Warehouse):
        return db.session
    return lambda prepare=False: contextlib.nullcontext(db)


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
    """Every schema, and every durable table (the ``-- @ddl`` section of its model file)."""
    for schema in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    ddl = [sections["ddl"] for name in table_models() if "ddl" in (sections := model_sections(name))]
    with transaction(con):
        con.execute("\n".join(ddl))


def model_path(name: str) -> Path:
    """``labeling.sample`` -> sql/labeling/sample.sql."""
    p = SQL_DIR.joinpath(*name.split(".")).with_suffix(".sql")
    if not p.exists():
        raise FileNotFoundError(f"no SQL model {name} (expected {p})")
    return p


def table_models() -> list[str]:
    """Every table model, ``schema.table``, from the files of sql/<schema>/ (views are in sql/views/)."""
    return sorted(f"{p.parent.name}.{p.stem}" for p in SQL_DIR.glob("*/*.sql") if p.parent.name != "views")


_SECTION = re.compile(r"^-- @(\w+)\b[^\n]*$", re.M)


def model_sections(name: str) -> dict[str, str]:
    """A model file's parts: ``""`` the model (the statements above the first ``-- @<name>`` line), then
    each named section."""
    parts = _SECTION.split(model_path(name).read_text())
    return {"": parts[0], **{parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}}


def model_sql(name: str, section: str = "") -> str:
    """The SQL of one model, or of one named section of its file."""
    sections = model_sections(name)
    if section not in sections:
        raise KeyError(f"sql model {name} has no section '-- @{section}' (it has {sorted(k for k in sections if k)})")
    return sections[section]


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
    con: duckdb.DuckDBPyConnection,
    name: str,
    variables: Mapping[str, Any] | None = None,
    *,
    section: str = "",
    frames: Mapping[str, Any] | None = None,
    atomic: bool = True,
) -> None:
    """Run every statement of one SQL model (or of one ``section`` of its file) inside a transaction.

    ``frames`` are staged inputs (polars frames, Arrow tables) registered under their names while the
    model runs. ``atomic=False`` runs inside the caller's open transaction instead of opening one.
    """
    if variables:
        set_variables(con, variables)
    sql = model_sql(name, section)
    registered = []
    try:
        for key, frame in (frames or {}).items():
            con.register(key, frame)
            registered.append(key)
        if atomic:
            with transaction(con):
                con.execute(sql)
        else:
            con.execute(sql)
    finally:
        for key in registered:
            con.unregister(key)


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


# -- Storage helpers every step shares (models: sql/ops/stage_runs.sql, sql/labeling/task_labels.sql) ------
def record_stage(
    con: duckdb.DuckDBPyConnection,
    stage: str,
    partition: str | None,
    rows: int,
    seconds: float,
    details: dict | None = None,
    run_id: str | None = None,
) -> None:
    """One row of ops.stage_runs: a stage's rows and seconds, with its figures as JSON."""
    frame = pl.DataFrame(
        [
            {
                "stage": stage,
                "partition": partition,
                "rows": rows,
                "seconds": seconds,
                "details": json.dumps(details or {}, default=str),
                "run_id": run_id,
            }
        ],
        schema={
            "stage": pl.Utf8,
            "partition": pl.Utf8,
            "rows": pl.Int64,
            "seconds": pl.Float64,
            "details": pl.Utf8,
            "run_id": pl.Utf8,
        },
    )
    run_model(con, "ops.stage_runs", frames={"staged_stage_runs": frame}, atomic=False)


def write_task_labels(con: duckdb.DuckDBPyConnection, task: Task) -> None:
    """labeling.task_labels from the task file: every label word, and how answers are matched."""
    rows = [
        {"label_id": lab.id, "name": lab.name, "word": w, "match": task.match} for lab in task.labels for w in lab.words
    ]
    frame = pl.DataFrame(rows, schema={"label_id": pl.Int64, "name": pl.Utf8, "word": pl.Utf8, "match": pl.Utf8})
    run_model(con, "labeling.task_labels", frames={"staged_task_labels": frame}, atomic=False)
