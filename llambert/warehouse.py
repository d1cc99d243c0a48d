"""The DuckDB warehouse: connections, schemas, and running the dbt-style SQL models in sql/.

A model file is plain DuckDB SQL named after the table it builds (``sql/labeling/sample.sql``
builds ``labeling.sample``). Parameters reach SQL as DuckDB variables (``getvariable('seed')``),
so the files run unchanged in the duckdb CLI after a ``SET VARIABLE``.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb

from llambert.config import PROJECT_ROOT

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
        print(f"[llambert] the warehouse is locked by {holder} (a reader holding it open blocks the "
              f"pipeline's commits); waiting up to {wait_s:.0f} s", file=sys.stderr, flush=True)

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


def sessions(db: "duckdb.DuckDBPyConnection | Warehouse") -> Callable[[], contextlib.AbstractContextManager]:
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
