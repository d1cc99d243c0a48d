"""`llambert sql`: run SQL on the warehouse and print an aligned table, CSV or JSON.

Read-only by default, and locked down: the warehouse is opened read-only (so a typo cannot drop
a table, and it can run beside a pipeline that is writing), DuckDB's external access is off (no
``COPY ... TO``, ``EXPORT``, ``ATTACH`` of another database, ``INSTALL``/``LOAD`` of extensions,
or reading files) and the configuration is then locked (no ``SET``/``PRAGMA``/``RESET`` of a
setting). ``--write`` opens it for writing, with none of these limits.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import decimal
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

EXAMPLES = """\
examples:
  llambert sql "SELECT label, count(*) FROM predictions.labels GROUP BY label"
  llambert sql "FROM views.stage_costs"
  llambert sql "FROM views.least_confident_predictions LIMIT 20" --format csv > review.csv
  llambert sql -f my_query.sql --format json
  llambert sql --write "DELETE FROM labeling.llm_cache WHERE raw_text IS NULL"

saved views (schema views): teacher_student_disagreements, least_confident_predictions,
discard_reasons, label_balance_by_batch, stage_costs, confusion_matrix.
`llambert sql "SHOW ALL TABLES"` lists every table and view.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sql",
        help="run SQL on the warehouse (read-only unless --write) and print a table, CSV or JSON",
        description="Run SQL on the DuckDB warehouse. Read-only unless --write is given.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("query", nargs="?", help="the SQL to run ('-' reads it from standard input)")
    p.add_argument("-f", "--file", type=Path, help="read the SQL from this file instead")
    p.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="table: aligned columns for people (default); csv or json: for other programs",
    )
    p.add_argument(
        "--write",
        action="store_true",
        help="open the warehouse for writing (default: read-only and locked down: writes, COPY TO, "
        "ATTACH, INSTALL/LOAD, file reads and SET/PRAGMA are refused)",
    )
    p.add_argument(
        "--max-rows",
        type=int,
        default=100,
        metavar="N",
        help="table format: show at most N rows (default 100; 0 = all). CSV/JSON print every row",
    )
    p.add_argument(
        "--max-width",
        type=int,
        default=60,
        metavar="CHARS",
        help="table format: cut cells longer than this (default 60)",
    )
    p.add_argument("--warehouse", type=Path, help="a DuckDB file (default: the configured warehouse)")
    add_wait_argument(p)
    p.set_defaults(func=_sql)


def add_wait_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="S",
        help="while a pipeline step holds the warehouse's write lock, retry for up to S seconds "
        "(default 60). Teacher and corpus labeling let readers in between commits within a "
        "second or two; ingest, training and the contracts hold the lock until they end",
    )


def waiting_message(command: str) -> Callable[[str, float], None]:
    """What a reader prints once when it finds the warehouse locked: who holds it and how long we retry."""

    def tell(holder: str, wait_s: float) -> None:
        print(
            f"llambert {command}: the pipeline is writing (the warehouse is locked by {holder}); "
            f"retrying for up to {wait_s:.0f} s (--wait S to change)",
            file=sys.stderr,
            flush=True,
        )

    return tell


def _read_query(args: argparse.Namespace) -> str:
    if args.file and args.query:
        raise ValueError("give the SQL either as an argument or with --file, not both")
    if args.file:
        return args.file.read_text()
    if args.query == "-" or (args.query is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    if not args.query:
        raise ValueError('no SQL given: llambert sql "SELECT ..." (or -f FILE, or - for standard input)')
    return args.query


def _sql(args: argparse.Namespace) -> int:
    query = _read_query(args)
    if args.warehouse:
        path = args.warehouse
    else:
        from llambert.config import load_settings

        path = load_settings(args.config).warehouse_path
    columns, rows = run_sql(path, query, write=args.write, wait_s=args.wait, on_wait=waiting_message("sql"))
    if columns is None:
        print("ok", file=sys.stderr)
        return 0
    if args.format == "csv":
        write_csv(columns, rows, sys.stdout)
    elif args.format == "json":
        write_json(columns, rows, sys.stdout)
    else:
        print(format_table(columns, rows, args.max_rows, args.max_width))
    return 0


def run_sql(
    path: Path,
    query: str,
    write: bool = False,
    wait_s: float = 60.0,
    on_wait: Callable[[str, float], None] | None = None,
) -> tuple[list[str] | None, list[tuple]]:
    """Run ``query`` (one or more statements); the result of the last one that returns rows.

    While another process holds the write lock, retries for up to ``wait_s`` seconds (``on_wait`` is
    told once who holds it); then :class:`llambert.warehouse.WarehouseLocked` says who and what to do.
    """
    import duckdb

    from llambert.warehouse import connect, create_views, ensure_schemas

    con = connect(path, read_only=not write, wait_s=wait_s, on_wait=on_wait)
    try:
        if write:
            ensure_schemas(con)
            create_views(con)
        else:
            lock_down(con)
            _refuse_file_writes(con, query)
        try:
            rel = con.sql(query)
            if rel is None:
                return None, []
            return list(rel.columns), rel.fetchall()
        except (duckdb.PermissionException, duckdb.InvalidInputException) as e:
            if write or not _refused(e):
                raise
            raise PermissionError(
                "query refused: `llambert sql` is read-only (no writes, files, ATTACH, extensions or settings); "
                f"add --write if you really mean to write ({e})"
            ) from None
    finally:
        con.close()


def lock_down(con: Any) -> None:
    """Make a read-only connection unable to write anything, anywhere.

    A read-only warehouse alone still lets SQL write files (``COPY ... TO``), attach another
    database read-write and change it, install extensions over the network, or change settings.
    ``enable_external_access=false`` shuts off every file, network and extension access beyond the
    open warehouse; ``lock_configuration=true`` (set last) stops SQL from turning it back on. The one
    exception: the Parquet dataset of predictions.labels (``predictions.storage: parquet``) stays
    readable, and COPY/EXPORT statements are refused by :func:`_refuse_file_writes`.
    """
    dirs = parquet_dirs(con)
    if dirs:
        con.execute("SET allowed_directories = ?", [dirs])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def parquet_dirs(con: Any) -> list[str]:
    """Folders the warehouse's views read Parquet from (predictions.labels under storage: parquet)."""
    import re

    dirs = []
    for (sql,) in con.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall():
        for glob in re.findall(r"read_parquet\('((?:[^']|'')+)'", sql or ""):
            root = glob.replace("''", "'").split("*", 1)[0]
            dirs.append(root if root.endswith("/") else root.rsplit("/", 1)[0] + "/")
    return sorted(set(dirs))


def _refuse_file_writes(con: Any, query: str) -> None:
    """A read-only connection that may read a Parquet dataset may not write into it: no COPY or EXPORT."""
    import duckdb

    try:
        kinds = {st.type for st in con.extract_statements(query)}
    except duckdb.Error:
        return  # a syntax error: DuckDB's own message says more when the query runs
    if kinds & {duckdb.StatementType.COPY, duckdb.StatementType.EXPORT}:
        raise PermissionError(
            "query refused: `llambert sql` is read-only (no writes, files, ATTACH, extensions or "
            "settings): COPY and EXPORT write files; add --write if you really mean to write"
        )


def _refused(e: Exception) -> bool:
    """Whether DuckDB refused ``e`` because of the lock-down (not an ordinary mistake in the SQL)."""
    import duckdb

    if isinstance(e, duckdb.PermissionException):
        return True
    msg = str(e).lower()
    return "read-only" in msg or "configuration has been locked" in msg


def _plain(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (dt.date, dt.datetime, dt.time, dt.timedelta)):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def write_json(columns: Sequence[str], rows: Sequence[tuple], out: TextIO) -> None:
    json.dump([{c: _plain(v) for c, v in zip(columns, row)} for row in rows], out, default=str, ensure_ascii=False)
    out.write("\n")


def write_csv(columns: Sequence[str], rows: Sequence[tuple], out: TextIO) -> None:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow(["" if v is None else (json.dumps(_plain(v)) if isinstance(v, (dict, list)) else v) for v in row])


def _cell(v: Any, width: int) -> str:
    if v is None:
        s = "NULL"
    elif isinstance(v, float):
        s = f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 1e15 else f"{v:g}"
    else:
        s = str(v)
    s = s.replace("\n", " ").replace("\t", " ")
    return s if len(s) <= width else s[: width - 1] + "…"


def format_table(columns: Sequence[str], rows: Sequence[tuple], max_rows: int = 100, max_width: int = 60) -> str:
    """Aligned columns, numbers right-aligned, long cells cut; says how many rows were left out."""
    shown = rows if max_rows <= 0 else rows[:max_rows]
    cells = [[_cell(v, max_width) for v in row] for row in shown]
    numeric = [
        all(
            isinstance(row[i], (int, float, decimal.Decimal)) and not isinstance(row[i], bool)
            for row in shown
            if row[i] is not None
        )
        and any(row[i] is not None for row in shown)
        for i in range(len(columns))
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    n = len(rows)
    tail = f"({n} row{'s' if n != 1 else ''}"
    if len(shown) < n:
        tail += f", first {len(shown)} shown; --max-rows 0 shows all"
    out.append(tail + ")")
    return "\n".join(out)
