"""Data contracts: the engine that checks what every warehouse table must satisfy, after each materialization.

Each contract is defined in one place, beside its table's suite in ``data_contracts/``:

* ``<table>.json``: the contracts of the asset (name, description, blocking, severity), in the order the UI
  lists them; the required columns, keys and the narrow ``frame`` query; and the great_expectations rules.
* ``<table>.gates.sql``: the statistical gates as SQL. Per gate, a ``-- gate: <name>`` query returns one
  verdict row (passed, description, observed, bound, ...), a ``-- failing: <name>`` query the offending rows.

Two engines, chosen per rule so that big tables stay cheap:

* **great_expectations** runs the row-level expectations of the suite (non-null and unique keys, the label
  domain, probabilities in [0, 1], ...) on the narrow frame. A table or partition with more than
  ``checks.max_validated_rows`` rows is validated on a seeded sample of that size, and the result says
  ``sampled``. GE is imported lazily (about 3 s) and validates pandas frames only: its SQLAlchemy path over
  duckdb-engine is broken.
* **sql** runs the schema check (the required columns, with the type families their SQL model gives them:
  the DDL, or the model's query as DuckDB binds it), key uniqueness over the whole table, and the gates as
  aggregates over every row.

Every evaluation returns :class:`ContractResult` objects with examples of the offending rows;
:func:`record` stores them in ``ops.contract_results``. Nothing here imports Dagster:
``assets/checks.py`` turns :data:`CATALOG` into asset checks.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import duckdb
import polars as pl

from llambert.config import PROJECT_ROOT, Settings
from llambert.corpus.readers import REJECT_REASONS
from llambert.tasks import Task, load_task
from llambert.warehouse import SCHEMAS, SQL_DIR, model_path, run_model, set_variables, table_exists

CONTRACTS_DIR = PROJECT_ROOT / "data_contracts"
MAX_EXAMPLES = 10


@dataclass(frozen=True)
class ContractSpec:
    """One contract of one asset: its Dagster check name, and whether a failure stops what follows."""

    name: str
    description: str
    blocking: bool = False
    error: bool = True  # severity when failing and not blocking: ERROR (True) or WARN


@dataclass
class ContractResult:
    table: str
    contract: str
    passed: bool
    description: str
    engine: str  # "great_expectations" | "sql"
    partition: str | None = None
    blocking: bool = False
    error: bool = True
    observed: float | None = None
    bound: float | None = None
    rows_checked: int | None = None
    rows_failing: int | None = None
    sampled: bool = False
    skipped: bool = False
    failing: pl.DataFrame | None = None
    details: dict = field(default_factory=dict)


# -- suites ------------------------------------------------------------------------------------
@cache
def load_suite(table: str) -> dict:
    """data_contracts/<table>.json: a great_expectations suite; its meta holds columns, keys and frame."""
    path = CONTRACTS_DIR / f"{table}.json"
    if not path.exists():
        raise FileNotFoundError(f"no data contract for {table} (expected {path})")
    return json.loads(path.read_text())


def _catalog() -> dict[str, list[ContractSpec]]:
    """The contracts of each asset, read from the suites that list them (``contracts`` in the JSON)."""
    catalog = {}
    for path in sorted(CONTRACTS_DIR.glob("*.json")):
        suite = load_suite(path.stem)
        if "contracts" in suite:
            catalog[path.stem] = [
                ContractSpec(c["name"], c["description"], c["blocking"], c["blocking"] or c.get("severity") != "warn")
                for c in suite["contracts"]
            ]
    return catalog


# The contracts of each asset (the Dagster check names). Static, so the UI lists them before they run.
CATALOG: dict[str, list[ContractSpec]] = _catalog()
PARTITIONED = {t: meta["partition_column"] for t in CATALOG if "partition_column" in (meta := load_suite(t)["meta"])}
# Suites checked under an asset's checks: (suite table, prefix of its contract names).
SUITES: dict[str, list[tuple[str, str]]] = {
    t: [(t, ""), *load_suite(t)["meta"].get("checked_with", {}).items()] for t in CATALOG
}


def _type_family(duckdb_type: str) -> str:
    t = duckdb_type.upper()
    if t.endswith("[]"):
        return "list"
    if t.startswith("MAP("):
        return "map"
    if t in {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}:
        return "integer"
    if t in {"FLOAT", "DOUBLE", "REAL"} or t.startswith("DECIMAL"):
        return "number"
    if t == "VARCHAR":
        return "text"
    if t.startswith("TIMESTAMP") or t == "DATE":
        return "time"
    return t.lower()


@lru_cache(maxsize=4)
def _ddl_types(fingerprint: str) -> dict[str, dict[str, str]]:
    """Column types of every table the SQL models declare, from an empty in-memory warehouse.

    Runs every CREATE and ALTER statement of sql/ (views aside) until no more succeed: DDL first, then the
    models that build a table from a query over tables made before them. ``fingerprint`` keys the cache to
    the files' contents.
    """
    con = duckdb.connect(":memory:")
    try:
        for schema in SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        pending = []
        for path in sorted(SQL_DIR.rglob("*.sql")):
            if path.parent.name != "views":
                pending += [
                    st.query
                    for st in con.extract_statements(path.read_text())
                    if st.type in (duckdb.StatementType.CREATE, duckdb.StatementType.ALTER)
                ]
        while pending:
            failed = []
            for sql in pending:
                try:
                    con.execute(sql)
                except duckdb.Error:
                    failed.append(sql)
            if len(failed) == len(pending):
                break
            pending = failed
        types: dict[str, dict[str, str]] = {}
        for schema, table, column, data_type in con.execute(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
            "ORDER BY table_schema, table_name, ordinal_position"
        ).fetchall():
            types.setdefault(f"{schema}.{table}", {})[column] = data_type
        return types
    finally:
        con.close()


_CTAS = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.]+)\s+AS\s+(.*)", re.IGNORECASE | re.DOTALL
)


def expected_types(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """The column types ``table``'s SQL model gives it: its DDL or, for a table its model builds from a query
    over tables only the pipeline fills (``CREATE OR REPLACE TABLE ... AS SELECT``), that query's result types
    as DuckDB binds it against this warehouse. Empty when no model in sql/ makes the table."""
    files = sorted(p for p in SQL_DIR.rglob("*.sql") if p.parent.name != "views")
    fingerprint = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()
    types = _ddl_types(fingerprint).get(table)
    if types:
        return dict(types)
    try:
        statements = con.extract_statements(model_path(table).read_text())
    except FileNotFoundError:
        return {}
    for st in statements:
        m = _CTAS.search(st.query)
        if m and m.group(1).lower() == table.lower():
            try:
                return {r[0]: r[1] for r in con.execute(f"DESCRIBE {m.group(2)}").fetchall()}
            except duckdb.Error:
                return {}
    return {}


def check_schema(con: duckdb.DuckDBPyConnection, table: str, prefix: str = "") -> ContractResult:
    """Required columns present with the type family their SQL model gives them (extra columns are allowed)."""
    required: list[str] = load_suite(table)["meta"]["columns"]
    schema, name = table.split(".")
    actual = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()
    )
    if not actual:
        return ContractResult(
            table,
            prefix + "schema",
            False,
            f"{table} does not exist",
            "sql",
            failing=pl.DataFrame({"problem": [f"table {table} is missing"]}),
        )
    model = expected_types(con, table)
    rows = []
    for col in required:
        fam = _type_family(model[col]) if col in model else "(no SQL model gives this column)"
        got = actual.get(col)
        if got is None:
            rows.append({"column": col, "expected": fam, "actual": "(missing)"})
        elif _type_family(got) != fam:
            rows.append({"column": col, "expected": fam, "actual": f"{got} ({_type_family(got)})"})
    failing = pl.DataFrame(rows, schema={"column": pl.Utf8, "expected": pl.Utf8, "actual": pl.Utf8})
    extra = sorted(set(actual) - set(required))
    desc = (
        f"{len(required)} required columns present with the right types"
        if not rows
        else f"{len(rows)} of {len(required)} required columns missing or of the wrong type: "
        + ", ".join(r["column"] for r in rows)
    )
    return ContractResult(
        table,
        prefix + "schema",
        not rows,
        desc,
        "sql",
        rows_checked=len(required),
        rows_failing=len(rows),
        failing=failing,
        details={"extra_columns": extra},
    )


# -- great_expectations ------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _gx_batch_definition():
    """One ephemeral context with a pandas datasource, made once per process (the import is ~3 s)."""
    import logging

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("llambert").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole")


def _frame(
    con: duckdb.DuckDBPyConnection, suite: dict, partition: str | None, max_rows: int
) -> tuple[pl.DataFrame, int, bool]:
    """The suite's frame query (narrow, no full texts), for one partition, sampled beyond max_rows."""
    sql = suite["meta"]["frame"]
    params: list = []
    pcol = suite["meta"].get("partition_column")
    if partition is not None and pcol:
        sql = f"SELECT * FROM ({sql}) WHERE {pcol} = ?"
        params = [partition]
    n = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0]
    sampled = n > max_rows
    if sampled:
        sql = f"SELECT * FROM ({sql}) USING SAMPLE reservoir({int(max_rows)} ROWS) REPEATABLE (42)"
    return con.execute(sql, params).pl(), n, sampled


def run_expectations(frame: pl.DataFrame, suite: dict, parameters: dict) -> list[dict]:
    """Validate ``frame`` against the suite's expectations; one dict per expectation, with failing row positions."""
    import great_expectations as gx

    gx_suite = gx.ExpectationSuite(name=suite["name"], expectations=suite["expectations"])
    batch = _gx_batch_definition().get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    result = batch.validate(gx_suite, result_format={"result_format": "COMPLETE"}, expectation_parameters=parameters)
    out = []
    for r in result.results:
        res = r.result or {}
        exc = (r.exception_info or {}).get("exception_message") if isinstance(r.exception_info, dict) else None
        out.append(
            {
                "contract": r.expectation_config.meta.get("contract", "values"),
                "rule": r.expectation_config.meta.get("rule", r.expectation_config.type),
                "type": r.expectation_config.type,
                "success": bool(r.success),
                "unexpected_count": int(res.get("unexpected_count") or 0),
                "element_count": int(res.get("element_count") or frame.height),
                "index": list(res.get("unexpected_index_list") or [])[: MAX_EXAMPLES * 5],
                "error": exc,
            }
        )
    return out


def _parameters(settings: Settings, task: Task) -> dict:
    return {
        "label_ids": task.label_ids,
        "label_names": task.label_names,
        "reject_reasons": list(REJECT_REASONS),
    }


def check_expectations(
    con: duckdb.DuckDBPyConnection, settings: Settings, table: str, partition: str | None = None, prefix: str = ""
) -> list[ContractResult]:
    """One result per contract group of the suite (keys, values, label_domain, probabilities)."""
    suite = load_suite(table)
    groups = list(dict.fromkeys(e["meta"]["contract"] for e in suite["expectations"]))
    task = load_task(settings.task)
    set_variables(con, {"exclude_splits": settings.sample.exclude_splits})
    try:
        frame, n_rows, sampled = _frame(con, suite, partition, settings.checks.max_validated_rows)
    except duckdb.Error as e:
        return [
            ContractResult(
                table,
                prefix + g,
                False,
                f"cannot be evaluated: {str(e).splitlines()[0]}",
                "great_expectations",
                partition,
            )
            for g in groups
        ]
    if frame.height == 0:
        return [
            ContractResult(
                table,
                prefix + g,
                True,
                f"no rows in {table}" + (f" for batch {partition}" if partition else ""),
                "great_expectations",
                partition,
                rows_checked=0,
                rows_failing=0,
                skipped=True,
            )
            for g in groups
        ]
    per_exp = run_expectations(frame, suite, _parameters(settings, task))
    results = []
    for g in groups:
        exps = [e for e in per_exp if e["contract"] == g]
        bad = [e for e in exps if not e["success"]]
        examples = []
        for e in bad:
            if e["index"]:
                rows = frame[e["index"]].head(MAX_EXAMPLES).with_columns(pl.lit(e["rule"]).alias("broken_rule"))
                examples.append(rows.select("broken_rule", *frame.columns).with_columns(pl.all().cast(pl.Utf8)))
            else:
                examples.append(pl.DataFrame({"broken_rule": [e["rule"] + (f" ({e['error']})" if e["error"] else "")]}))
        failing = pl.concat(examples, how="diagonal").head(MAX_EXAMPLES) if examples else None
        n_fail = sum(e["unexpected_count"] for e in bad)
        desc = (
            f"{len(exps)} expectations met on {frame.height:,} rows"
            if not bad
            else f"{len(bad)} of {len(exps)} expectations broken ({n_fail:,} failing values): "
            + "; ".join(f"{e['rule']} ({e['unexpected_count']:,})" for e in bad)
        )
        if sampled:
            desc += f" [a seeded sample of {frame.height:,} of {n_rows:,} rows]"
        results.append(
            ContractResult(
                table,
                prefix + g,
                not bad,
                desc,
                "great_expectations",
                partition,
                rows_checked=frame.height,
                rows_failing=n_fail,
                sampled=sampled,
                failing=failing,
                details={
                    "rows_in_table": n_rows,
                    "expectations": [{k: e[k] for k in ("rule", "success", "unexpected_count")} for e in exps],
                },
            )
        )
    return results


def _unique_keys(con: duckdb.DuckDBPyConnection, table: str, keys: list[str], partition: str | None, pcol: str | None):
    """Key uniqueness over every row (GE may only have seen a sample)."""
    if not keys:
        return None
    where = f"WHERE {pcol} = ?" if partition is not None and pcol else ""
    cols = ", ".join(keys)
    dup = con.execute(
        f"SELECT {cols}, count(*) AS copies FROM {table} {where} GROUP BY ALL HAVING count(*) > 1 "
        f"ORDER BY copies DESC LIMIT {MAX_EXAMPLES}",
        [partition] if where else [],
    ).pl()
    return dup


# -- SQL gates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateBlock:
    """One query of a ``<table>.gates.sql`` file: ``setup``, a gate's verdict (``gate``) or its ``failing`` rows."""

    kind: str
    name: str
    requires: tuple[str, ...]
    sql: str


_HEADER = re.compile(r"^-- (setup|gate|failing)(?::\s*(\w+))?\s*$")
_REQUIRES = re.compile(r"^-- requires:\s*(.+?)\s*$")


@cache
def load_gates(table: str) -> tuple[GateBlock, ...]:
    """The blocks of data_contracts/<table>.gates.sql, in file order (none when the table has no gates).

    A block starts at a ``-- setup``, ``-- gate: <contract>`` or ``-- failing: <contract>`` line; a
    ``-- requires: schema.table ...`` line right after it names tables the block needs. Where a contract has
    several ``gate`` blocks, the first whose tables exist is run; several ``failing`` blocks: the first of
    those that returns rows. Every ``setup`` block whose tables exist runs first, in order.
    """
    path = CONTRACTS_DIR / f"{table}.gates.sql"
    if not path.exists():
        return ()
    blocks: list[GateBlock] = []
    kind = name = None
    requires: tuple[str, ...] = ()
    lines: list[str] = []

    def close() -> None:
        sql = "\n".join(lines).strip().rstrip(";").strip()
        if kind is not None and sql:
            blocks.append(GateBlock(kind, name or "", requires, sql))

    for line in path.read_text().splitlines():
        header = _HEADER.match(line)
        if header:
            close()
            kind, name, requires, lines = header.group(1), header.group(2), (), []
        elif kind is not None and not lines and _REQUIRES.match(line):
            requires = tuple(_REQUIRES.match(line).group(1).split())
        elif kind is not None:
            lines.append(line)
    close()
    return tuple(blocks)


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


def _prepare_gates(con: duckdb.DuckDBPyConnection, settings: Settings, task: Task, partition: str | None) -> None:
    """What every gate may use: variables (the partition, the task's labels, the checks.* bounds), the
    in_partition(batch) macro and the is_dir(path) function."""
    set_variables(
        con,
        {
            "max_examples": MAX_EXAMPLES,
            "label_ids": task.label_ids,
            "label_names": task.label_names,
            **settings.checks.model_dump(),
        },
    )
    con.execute("SET VARIABLE partition = ?::VARCHAR", [partition])  # typed: NULL alone would be an INTEGER
    con.execute(
        "CREATE OR REPLACE TEMP MACRO in_partition(b) AS "
        "getvariable('partition') IS NULL OR b = getvariable('partition')"
    )
    try:
        con.remove_function("is_dir")
    except (duckdb.Error, ValueError):
        pass
    con.create_function("is_dir", _is_dir, ["VARCHAR"], "BOOLEAN")


def _runnable(con: duckdb.DuckDBPyConnection, block: GateBlock) -> bool:
    return all(table_exists(con, t) for t in block.requires)


def _gate(con: duckdb.DuckDBPyConnection, table: str, name: str, blocks: tuple[GateBlock, ...]) -> ContractResult:
    verdict_sql = next(b.sql for b in blocks if b.kind == "gate" and b.name == name and _runnable(con, b))
    verdict = con.execute(verdict_sql).pl()
    row = verdict.row(0, named=True)

    def number(key: str, kind: type):
        value = row.get(key)
        return None if value is None else kind(value)

    result = ContractResult(
        table,
        name,
        bool(row["passed"]),
        str(row["description"]),
        "sql",
        observed=number("observed", float),
        bound=number("bound", float),
        rows_checked=number("rows_checked", int),
        rows_failing=number("rows_failing", int),
        skipped=bool(row.get("skipped") or False),
        details=json.loads(row["details"]) if row.get("details") else {},
    )
    if not result.passed or row.get("show_rows"):
        con.register("verdict", verdict)
        try:
            for block in blocks:
                if block.kind == "failing" and block.name == name and _runnable(con, block):
                    rows = con.execute(block.sql).pl()
                    if rows.height:
                        result.failing = rows.head(MAX_EXAMPLES)
                        break
        finally:
            con.unregister("verdict")
    return result


def check_gates(
    con: duckdb.DuckDBPyConnection, settings: Settings, table: str, partition: str | None = None
) -> list[ContractResult]:
    """The gates of data_contracts/<table>.gates.sql, one result per gate, in file order."""
    blocks = load_gates(table)
    _prepare_gates(con, settings, load_task(settings.task), partition)
    for block in blocks:
        if block.kind == "setup" and _runnable(con, block):
            con.execute(block.sql)
    names = list(dict.fromkeys(b.name for b in blocks if b.kind == "gate"))
    return [_gate(con, table, name, blocks) for name in names]


# -- the entry points --------------------------------------------------------------------------
def evaluate(
    con: duckdb.DuckDBPyConnection, settings: Settings, table: str, partition: str | None = None
) -> list[ContractResult]:
    """Every contract of ``table`` (one batch of it, for partitioned tables), in :data:`CATALOG` order."""
    if table not in CATALOG:
        raise KeyError(f"no contracts for {table}; tables with contracts: {sorted(CATALOG)}")
    ensure_results_table(con)  # the shift gates compare with earlier results
    results: list[ContractResult] = []
    for suite_table, prefix in SUITES[table]:
        schema = check_schema(con, suite_table, prefix)
        results.append(schema)
        if schema.failing is not None and schema.failing.height and "problem" in schema.failing.columns:
            continue  # the table is missing: its expectations cannot run (reported as failed below)
        meta = load_suite(suite_table)["meta"]
        results += check_expectations(
            con, settings, suite_table, partition if meta.get("partition_column") else None, prefix
        )
        dup = _unique_keys(con, suite_table, meta.get("keys", []), partition, meta.get("partition_column"))
        if dup is not None and dup.height:
            keys = next((r for r in results if r.contract == prefix + "keys"), None)
            if keys is not None and keys.passed:  # a sample hid the duplicates: SQL saw every row
                keys.passed = False
                keys.description = f"duplicate keys {meta['keys']} (checked in SQL over every row)"
                keys.failing = dup
                keys.rows_failing = dup.height
    if load_gates(table) and all(r.passed or not r.contract.endswith("schema") for r in results):
        try:
            results += check_gates(con, settings, table, partition)
        except duckdb.Error as e:
            msg = str(e).splitlines()[0]
            results += [
                ContractResult(table, s.name, False, f"cannot be evaluated: {msg}", "sql", partition)
                for s in CATALOG[table]
                if s.name not in {r.contract for r in results}
            ]
    by_name = {r.contract: r for r in results}
    ordered = []
    for spec in CATALOG[table]:
        r = by_name.get(spec.name) or ContractResult(
            table,
            spec.name,
            False,
            "not evaluated: the table or its schema is broken (see the schema check)",
            "sql",
            partition,
        )
        r.table, r.partition, r.blocking, r.error = table, partition, spec.blocking, spec.error
        ordered.append(r)
    return ordered


def ensure_results_table(con: duckdb.DuckDBPyConnection) -> None:
    if not table_exists(con, "ops.contract_results"):
        con.execute("CREATE SCHEMA IF NOT EXISTS ops")
        run_model(con, "ops.contract_results", section="ddl")


def record(con: duckdb.DuckDBPyConnection, results: list[ContractResult], run_id: str | None = None) -> None:
    """Store results in ops.contract_results (sql/ops/contract_results.sql)."""
    ensure_results_table(con)
    rows = [
        {
            "run_id": run_id,
            "table_name": r.table,
            "partition": r.partition,
            "contract": r.contract,
            "passed": r.passed,
            "skipped": r.skipped,
            "blocking": r.blocking,
            "engine": r.engine,
            "observed": r.observed,
            "bound": r.bound,
            "rows_checked": r.rows_checked,
            "rows_failing": r.rows_failing,
            "sampled": r.sampled,
            "description": r.description,
            "details": json.dumps(r.details, default=str),
            "failing_examples": (
                r.failing.head(MAX_EXAMPLES).write_json() if r.failing is not None and r.failing.height else None
            ),
        }
        for r in results
    ]
    frame = pl.DataFrame(rows, schema=_RESULT_COLUMNS)
    run_model(con, "ops.contract_results", frames={"staged_contract_results": frame}, atomic=False)


# The staged rows of sql/ops/contract_results.sql (details and failing_examples as JSON text).
_RESULT_COLUMNS = {
    "run_id": pl.Utf8,
    "table_name": pl.Utf8,
    "partition": pl.Utf8,
    "contract": pl.Utf8,
    "passed": pl.Boolean,
    "skipped": pl.Boolean,
    "blocking": pl.Boolean,
    "engine": pl.Utf8,
    "observed": pl.Float64,
    "bound": pl.Float64,
    "rows_checked": pl.Int64,
    "rows_failing": pl.Int64,
    "sampled": pl.Boolean,
    "description": pl.Utf8,
    "details": pl.Utf8,
    "failing_examples": pl.Utf8,
}


def failures(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> list[tuple[str, str | None, str, str]]:
    """(table, partition, contract, description) of every contract that failed in these Dagster runs."""
    if not run_ids or not table_exists(con, "ops.contract_results"):
        return []
    return con.execute(
        "SELECT table_name, partition, contract, description FROM ops.contract_results "
        "WHERE NOT passed AND list_contains(?, run_id) ORDER BY checked_at",
        [run_ids],
    ).fetchall()


def evaluate_and_record(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    table: str,
    partition: str | None = None,
    run_id: str | None = None,
) -> list[ContractResult]:
    t0 = time.perf_counter()
    results = evaluate(con, settings, table, partition)
    for r in results:
        r.details.setdefault("seconds", round(time.perf_counter() - t0, 3))
    record(con, results, run_id)
    return results
