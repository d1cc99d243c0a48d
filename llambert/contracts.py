"""Data contracts: what every warehouse table must satisfy, checked after each materialization.

Two engines, chosen per rule so that big tables stay cheap:

* **great_expectations** runs the row-level expectations of ``data_contracts/<table>.json``
  (non-null and unique keys, the label domain, probabilities in [0, 1], ...) on a narrow frame that
  the suite's ``frame`` query pulls from DuckDB (no full texts). A table or partition with more
  than ``checks.max_validated_rows`` rows is validated on a seeded sample of that size, and the
  result says ``sampled``. GE is imported lazily (about 3 s) and validates pandas frames only:
  its SQLAlchemy path over duckdb-engine is broken.
* **sql** runs the schema check (column names and type families, from ``information_schema``),
  key uniqueness over the whole table, and the statistical gates (coverage, label balance and its
  shift, discard rate, teacher-vs-gold accuracy, student-vs-teacher agreement, rows accounted
  for) as aggregates over every row.

Every evaluation returns :class:`ContractResult` objects with examples of the offending rows;
:func:`record` stores them in ``ops.contract_results``. Nothing here imports Dagster:
``assets/checks.py`` turns :data:`CATALOG` into asset checks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import duckdb
import polars as pl

from llambert.config import PROJECT_ROOT, Settings
from llambert.corpus.readers import REJECT_REASONS
from llambert.tasks import Task, load_task
from llambert.warehouse import run_model, set_variables, table_exists

CONTRACTS_DIR = PROJECT_ROOT / "data_contracts"
MAX_EXAMPLES = 10


@dataclass(frozen=True)
class ContractSpec:
    """One contract of one asset: its Dagster check name, and whether a failure stops what follows."""

    name: str
    description: str
    blocking: bool = False
    error: bool = True  # severity when failing and not blocking: ERROR (True) or WARN


def _s(name: str, description: str, blocking: bool = False, error: bool = True) -> ContractSpec:
    return ContractSpec(name, description, blocking, error or blocking)


# The contracts of each asset (the Dagster check names). Static, so the UI lists them before they run.
CATALOG: dict[str, list[ContractSpec]] = {
    "raw.corpus": [
        _s("schema", "raw.corpus has the columns and types later steps read.", blocking=True),
        _s("keys", "doc_id is present, unique, 32 hex digits, and the md5 of the text.", blocking=True),
        _s("values", "Texts are non-empty and NUL-free; source and split are set; n_copies >= 1.", blocking=True),
        _s("label_domain", "Gold labels are null or one of the task's label ids.", blocking=True),
        _s("rows_accounted", "Every input row of the batch is in raw.occurrences or raw.rejected, and every "
           "occurrence points at a document (nothing is lost).", blocking=True),
        _s("rejected_schema", "raw.rejected has its columns.", blocking=True),
        _s("rejected_values", "Every rejected row keeps its file, row and a known reason.", blocking=True),
        _s("rejected_share", "At most checks.max_rejected_share of the batch's input rows were rejected "
           "(the failing rows show what was rejected and why).", error=False),
    ],
    "labeling.sample": [
        _s("schema", "labeling.sample has its columns and types.", blocking=True),
        _s("keys", "doc_id and sample_rank are present and unique.", blocking=True),
        _s("values", "Every sampled document is in raw.corpus and in no excluded split (never test).", blocking=True),
        _s("label_domain", "Gold labels are null or one of the task's label ids.", blocking=True),
    ],
    "labeling.llm_responses": [
        _s("schema", "labeling.llm_responses has its columns and types.", blocking=True),
        _s("keys", "One answer per sampled document.", blocking=True),
        _s("values", "Every answer says which model, prompt version and decoding produced it.", blocking=True),
        _s("probabilities", "Label probabilities (choice mode) are within [0, 1].", blocking=True),
        _s("coverage", "Every sampled document has an answer.", error=False),
    ],
    "labeling.parsed_labels": [
        _s("schema", "labeling.parsed_labels has its columns and types.", blocking=True),
        _s("keys", "doc_id is present and unique.", blocking=True),
        _s("label_domain", "Every label is one of the task's labels (id and name).", blocking=True),
        _s("probabilities", "Probabilities are null or within [0, 1].", blocking=True),
        _s("answers_accounted", "Every LLM answer is either parsed or discarded, never both, never neither.", blocking=True),
        _s("label_balance", "The rarest label's share is at least checks.min_minority_share.", blocking=True),
        _s("balance_shift", "No label's share moved by more than checks.max_balance_shift since the previous run.", blocking=True),
        _s("discard_rate", "At most checks.max_discard_rate of the answers were discarded.", blocking=True),
        _s("teacher_gold_accuracy", "On the gold probe (sampled documents with a gold label) the teacher is right "
           "at least checks.min_teacher_gold_accuracy of the time.", error=False),
    ],
    "labeling.discarded": [
        _s("schema", "labeling.discarded has its columns and types.", blocking=True),
        _s("keys", "doc_id is present and unique.", blocking=True),
        _s("values", "Every discarded answer has a known reason.", blocking=True),
    ],
    "students.checkpoints": [
        _s("schema", "students.checkpoints has its columns and types.", blocking=True),
        _s("keys", "checkpoint_id is present and unique.", blocking=True),
        _s("values", "Sizes are positive; validation metrics are within [0, 1]; base model and path are set.", blocking=True),
        _s("champion", "students.champion names an eligible checkpoint whose folder exists: never a collapsed "
           "student, never one below the linear floor (students.candidates says why each was or was not).", blocking=True),
        _s("student_teacher_agreement", "The newest checkpoint agrees with the teacher on held-out LLM labels at "
           "least checks.min_student_teacher_agreement of the time.", error=False),
    ],
    "predictions.labels": [
        _s("schema", "predictions.labels has its columns and types.", blocking=True),
        _s("keys", "(doc_id, checkpoint_id) is present and unique.", blocking=True),
        _s("label_domain", "Every label is one of the task's label ids.", blocking=True),
        _s("probabilities", "Probabilities are present and within [0, 1].", blocking=True),
        _s("coverage", "Every document of the batch has a prediction from the champion.", blocking=True),
        _s("collapse", "No label's share of the batch's predictions is below checks.collapse_ratio times its "
           "share of the teacher's labels: a student that predicts one class for nearly everything is wrong.",
           blocking=True),
        _s("label_balance", "The rarest label's share of the batch's predictions is at least "
           "checks.min_minority_share.", error=False),
        _s("balance_shift", "No label's share of this batch moved by more than checks.max_balance_shift "
           "against the other batches.", error=False),
        _s("student_teacher_agreement", "On the batch's documents the teacher labeled, the champion agrees with "
           "the teacher at least checks.min_student_teacher_agreement of the time.", blocking=True),
    ],
}
PARTITIONED = {"raw.corpus": "batch", "predictions.labels": "batch"}
# Suites checked under an asset's checks: (suite table, prefix of its contract names).
SUITES: dict[str, list[tuple[str, str]]] = {t: [(t, "")] for t in CATALOG}
SUITES["raw.corpus"].append(("raw.rejected", "rejected_"))


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
@lru_cache(maxsize=None)
def load_suite(table: str) -> dict:
    """data_contracts/<table>.json: a great_expectations suite; its meta holds columns, keys and frame."""
    path = CONTRACTS_DIR / f"{table}.json"
    if not path.exists():
        raise FileNotFoundError(f"no data contract for {table} (expected {path})")
    return json.loads(path.read_text())


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


def check_schema(con: duckdb.DuckDBPyConnection, table: str, prefix: str = "") -> ContractResult:
    """Required columns present with the right type family (extra columns are allowed)."""
    expected: dict[str, str] = load_suite(table)["meta"]["columns"]
    schema, name = table.split(".")
    actual = dict(con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
        [schema, name]).fetchall())
    if not actual:
        return ContractResult(table, prefix + "schema", False, f"{table} does not exist", "sql",
                              failing=pl.DataFrame({"problem": [f"table {table} is missing"]}))
    rows = []
    for col, fam in expected.items():
        got = actual.get(col)
        if got is None:
            rows.append({"column": col, "expected": fam, "actual": "(missing)"})
        elif _type_family(got) != fam:
            rows.append({"column": col, "expected": fam, "actual": f"{got} ({_type_family(got)})"})
    failing = pl.DataFrame(rows, schema={"column": pl.Utf8, "expected": pl.Utf8, "actual": pl.Utf8})
    extra = sorted(set(actual) - set(expected))
    desc = (f"{len(expected)} required columns present with the right types" if not rows else
            f"{len(rows)} of {len(expected)} required columns missing or of the wrong type: "
            + ", ".join(r["column"] for r in rows))
    return ContractResult(table, prefix + "schema", not rows, desc, "sql", rows_checked=len(expected),
                          rows_failing=len(rows), failing=failing, details={"extra_columns": extra})


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


def _frame(con: duckdb.DuckDBPyConnection, suite: dict, partition: str | None, max_rows: int) -> tuple[pl.DataFrame, int, bool]:
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
        out.append({
            "contract": r.expectation_config.meta.get("contract", "values"),
            "rule": r.expectation_config.meta.get("rule", r.expectation_config.type),
            "type": r.expectation_config.type,
            "success": bool(r.success),
            "unexpected_count": int(res.get("unexpected_count") or 0),
            "element_count": int(res.get("element_count") or frame.height),
            "index": list(res.get("unexpected_index_list") or [])[: MAX_EXAMPLES * 5],
            "error": exc,
        })
    return out


def _parameters(settings: Settings, task: Task) -> dict:
    return {
        "label_ids": task.label_ids,
        "label_names": task.label_names,
        "reject_reasons": list(REJECT_REASONS),
    }


def check_expectations(con: duckdb.DuckDBPyConnection, settings: Settings, table: str, partition: str | None = None,
                       prefix: str = "") -> list[ContractResult]:
    """One result per contract group of the suite (keys, values, label_domain, probabilities)."""
    suite = load_suite(table)
    groups = list(dict.fromkeys(e["meta"]["contract"] for e in suite["expectations"]))
    task = load_task(settings.task)
    set_variables(con, {"exclude_splits": settings.sample.exclude_splits})
    try:
        frame, n_rows, sampled = _frame(con, suite, partition, settings.checks.max_validated_rows)
    except duckdb.Error as e:
        return [ContractResult(table, prefix + g, False, f"cannot be evaluated: {str(e).splitlines()[0]}",
                               "great_expectations", partition) for g in groups]
    if frame.height == 0:
        return [ContractResult(table, prefix + g, True, f"no rows in {table}" + (f" for batch {partition}" if partition else ""),
                               "great_expectations", partition, rows_checked=0, rows_failing=0, skipped=True)
                for g in groups]
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
        desc = (f"{len(exps)} expectations met on {frame.height:,} rows" if not bad else
                f"{len(bad)} of {len(exps)} expectations broken ({n_fail:,} failing values): "
                + "; ".join(f"{e['rule']} ({e['unexpected_count']:,})" for e in bad))
        if sampled:
            desc += f" [a seeded sample of {frame.height:,} of {n_rows:,} rows]"
        results.append(ContractResult(
            table, prefix + g, not bad, desc, "great_expectations", partition, rows_checked=frame.height,
            rows_failing=n_fail, sampled=sampled, failing=failing,
            details={"rows_in_table": n_rows, "expectations": [{k: e[k] for k in ("rule", "success", "unexpected_count")} for e in exps]},
        ))
    return results


# -- SQL gates ---------------------------------------------------------------------------------
def _champion(con: duckdb.DuckDBPyConnection) -> str | None:
    if not table_exists(con, "students.champion"):
        return None
    row = con.execute("SELECT checkpoint_id FROM students.champion").fetchone()
    return row[0] if row else None


def _shares(counts: dict[str, int], names: list[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {n: (counts.get(n, 0) / total if total else 0.0) for n in names}


def _balance(table: str, counts: dict[str, int], names: list[str], bound: float, what: str,
             partition: str | None = None) -> ContractResult:
    total = sum(counts.values())
    shares = _shares(counts, names)
    minority = min(names, key=lambda n: shares[n])
    share = shares[minority]
    frame = pl.DataFrame({"label": names, "rows": [counts.get(n, 0) for n in names],
                          "share": [round(shares[n], 4) for n in names]})
    return ContractResult(
        table, "label_balance", total > 0 and share >= bound,
        f"minority label '{minority}' has {share:.1%} of {total:,} {what} (bound {bound:.0%})" if total else f"no {what}",
        "sql", partition, observed=share, bound=bound, rows_checked=total,
        rows_failing=counts.get(minority, 0) if share < bound else 0, failing=frame if share < bound or not total else None,
        details={"counts": {n: counts.get(n, 0) for n in names}, "shares": shares, "minority_label": minority},
    )


def _shift(table: str, now: dict[str, float], before: dict[str, float] | None, bound: float, against: str,
           partition: str | None = None) -> ContractResult:
    if not before:
        return ContractResult(table, "balance_shift", True, f"skipped: nothing to compare with yet ({against})",
                              "sql", partition, bound=bound, skipped=True)
    names = list(dict.fromkeys([*now, *before]))
    shifts = {n: abs(now.get(n, 0.0) - before.get(n, 0.0)) for n in names}
    worst = max(names, key=lambda n: shifts[n])
    ok = shifts[worst] <= bound
    frame = pl.DataFrame({"label": names, "share_before": [round(before.get(n, 0.0), 4) for n in names],
                          "share_now": [round(now.get(n, 0.0), 4) for n in names],
                          "shift": [round(shifts[n], 4) for n in names]})
    return ContractResult(
        table, "balance_shift", ok,
        f"largest shift: '{worst}' moved {shifts[worst]:.1%} against {against} (bound {bound:.0%})",
        "sql", partition, observed=shifts[worst], bound=bound, rows_checked=len(names),
        rows_failing=sum(s > bound for s in shifts.values()), failing=None if ok else frame.filter(pl.col("shift") > bound),
        details={"before": before, "now": now},
    )


def _collapse(con, table: str, counts: dict[str, int], names: list[str], ratio_bound: float, where: str,
              partition: str | None) -> ContractResult:
    """Predicted shares against the teacher's: a label the teacher gives 40% and the student 1% means collapse."""
    if not table_exists(con, "labeling.parsed_labels"):
        return ContractResult(table, "collapse", True, "skipped: no teacher labels to compare with", "sql", partition,
                              bound=ratio_bound, skipped=True)
    ref = _shares(dict(con.execute("SELECT label_name, count(*) FROM labeling.parsed_labels GROUP BY 1").fetchall()), names)
    now = _shares(counts, names)
    if not sum(counts.values()) or not any(ref.values()):
        return ContractResult(table, "collapse", True, f"skipped: no predictions {where} or no teacher labels", "sql",
                              partition, bound=ratio_bound, skipped=True)
    ratios = {n: now[n] / ref[n] for n in names if ref[n] > 0}
    worst = min(ratios, key=ratios.get)
    ok = ratios[worst] >= ratio_bound
    frame = pl.DataFrame({"label": names, "teacher_share": [round(ref[n], 4) for n in names],
                          "predicted_share": [round(now[n], 4) for n in names]})
    return ContractResult(
        table, "collapse", ok,
        f"'{worst}': {now[worst]:.1%} of the predictions {where} vs {ref[worst]:.1%} of the teacher's labels "
        f"(ratio {ratios[worst]:.2f}, bound {ratio_bound})" + ("" if ok else ": the student collapsed; its labels are "
        "wrong. Retrain (more or better-balanced labels, student.class_weight: balanced) or use student.kind: linear"),
        "sql", partition, observed=ratios[worst], bound=ratio_bound, rows_checked=sum(counts.values()),
        rows_failing=0 if ok else counts.get(worst, 0), failing=None if ok else frame,
        details={"teacher_shares": ref, "predicted_shares": now})


def _agreement(table: str, name: str, n: int, agree: int, bound: float, failing: pl.DataFrame | None, what: str,
               partition: str | None = None) -> ContractResult:
    if n == 0:
        return ContractResult(table, name, True, f"skipped: {what} is empty", "sql", partition, bound=bound, skipped=True)
    rate = agree / n
    ok = rate >= bound
    return ContractResult(table, name, ok, f"{rate:.1%} of {n:,} {what} agree (bound {bound:.0%})", "sql", partition,
                          observed=rate, bound=bound, rows_checked=n, rows_failing=n - agree,
                          failing=None if ok else failing)


def _unique_keys(con: duckdb.DuckDBPyConnection, table: str, keys: list[str], partition: str | None, pcol: str | None):
    """Key uniqueness over every row (GE may only have seen a sample)."""
    if not keys:
        return None
    where = f"WHERE {pcol} = ?" if partition is not None and pcol else ""
    cols = ", ".join(keys)
    dup = con.execute(
        f"SELECT {cols}, count(*) AS copies FROM {table} {where} GROUP BY ALL HAVING count(*) > 1 ORDER BY copies DESC LIMIT {MAX_EXAMPLES}",
        [partition] if where else []).pl()
    return dup


def gates_raw_corpus(con, settings: Settings, partition: str | None) -> list[ContractResult]:
    t = "raw.corpus"
    batch_filter, params = ("WHERE batch = ?", [partition]) if partition is not None else ("", [])
    occ = con.execute(f"SELECT count(*) FROM raw.occurrences {batch_filter}", params).fetchone()[0]
    rej = con.execute(f"SELECT count(*) FROM raw.rejected {batch_filter}", params).fetchone()[0]
    orphans = con.execute(
        f"SELECT o.batch, o.source_file, o.source_row, o.doc_id FROM raw.occurrences o "
        f"WHERE {'o.batch = ? AND ' if partition is not None else ''}o.doc_id NOT IN (SELECT doc_id FROM raw.corpus) "
        f"LIMIT {MAX_EXAMPLES}", params).pl()
    stage = con.execute(
        "SELECT details FROM ops.stage_runs WHERE stage = 'ingest' AND partition IS NOT DISTINCT FROM ? "
        "ORDER BY finished_at DESC LIMIT 1", [partition]).fetchone()
    read = json.loads(stage[0]) if stage and stage[0] else {}
    problems = []
    if read:
        if occ != read.get("accepted_rows"):
            problems.append(f"raw.occurrences has {occ:,} rows, the reader accepted {read.get('accepted_rows'):,}")
        if rej != read.get("rejected_rows"):
            problems.append(f"raw.rejected has {rej:,} rows, the reader rejected {read.get('rejected_rows'):,}")
        if read.get("input_rows") is not None and occ + rej != read["input_rows"]:
            problems.append(f"{occ + rej:,} rows stored of {read['input_rows']:,} read")
    if orphans.height:
        problems.append(f"{orphans.height}+ occurrences point at no document of raw.corpus")
    accounted = ContractResult(
        t, "rows_accounted", not problems,
        "; ".join(problems) or f"{occ + rej:,} input rows: {occ:,} accepted, {rej:,} rejected" + ("" if read else " (no ingest record to compare with)"),
        "sql", partition, observed=occ + rej, rows_checked=occ + rej, rows_failing=orphans.height,
        failing=orphans if orphans.height else (pl.DataFrame({"problem": problems}) if problems else None),
        details={"occurrences": occ, "rejected": rej, "ingest_record": read},
    )
    total = occ + rej
    share = rej / total if total else 0.0
    bound = settings.checks.max_rejected_share
    examples = con.execute(
        f"SELECT source_file, source_row, source_id, reason, left(text, 60) AS text_start FROM raw.rejected {batch_filter} "
        f"ORDER BY source_file, source_row LIMIT {MAX_EXAMPLES}", params).pl()
    reasons = dict(con.execute(
        f"SELECT split_part(reason, ':', 1), count(*) FROM raw.rejected {batch_filter} GROUP BY 1 ORDER BY 2 DESC", params).fetchall())
    rejected_share = ContractResult(
        t, "rejected_share", share <= bound,
        f"{rej:,} of {total:,} input rows rejected ({share:.1%}, bound {bound:.0%})"
        + (": " + ", ".join(f"{k} {v:,}" for k, v in reasons.items()) if reasons else ""),
        "sql", partition, observed=share, bound=bound, rows_checked=total, rows_failing=rej,
        failing=examples if rej else None, details={"reasons": reasons},
    )
    return [accounted, rejected_share]


def gates_llm_responses(con, settings: Settings, partition: str | None) -> list[ContractResult]:
    missing = con.execute(
        "SELECT s.sample_rank, s.doc_id, s.split FROM labeling.sample s WHERE s.doc_id NOT IN "
        "(SELECT doc_id FROM labeling.llm_responses) ORDER BY s.sample_rank").pl()
    n = con.execute("SELECT count(*) FROM labeling.sample").fetchone()[0]
    return [ContractResult(
        "labeling.llm_responses", "coverage", missing.height == 0,
        f"{n - missing.height:,} of {n:,} sampled documents have an answer", "sql",
        observed=(n - missing.height) / n if n else 1.0, bound=1.0, rows_checked=n, rows_failing=missing.height,
        failing=missing.head(MAX_EXAMPLES) if missing.height else None)]


def _previous_details(con, table: str, contract: str, partition: str | None) -> dict | None:
    row = con.execute(
        "SELECT details FROM ops.contract_results WHERE table_name = ? AND contract = ? AND NOT skipped "
        "AND partition IS NOT DISTINCT FROM ? ORDER BY checked_at DESC LIMIT 1", [table, contract, partition]).fetchone()
    return json.loads(row[0]) if row and row[0] else None


def gates_parsed_labels(con, settings: Settings, partition: str | None) -> list[ContractResult]:
    t = "labeling.parsed_labels"
    task = load_task(settings.task)
    c = settings.checks
    out = []
    # Every answer is parsed or discarded, exactly once.
    lost = con.execute(
        "SELECT r.doc_id, left(r.raw_text, 60) AS raw_text, "
        "  (r.doc_id IN (SELECT doc_id FROM labeling.parsed_labels)) AS parsed, "
        "  (r.doc_id IN (SELECT doc_id FROM labeling.discarded)) AS discarded "
        "FROM labeling.llm_responses r WHERE parsed = discarded ORDER BY r.sample_rank").pl()
    stray = con.execute(
        "SELECT doc_id, 'parsed_labels' AS found_in FROM labeling.parsed_labels WHERE doc_id NOT IN (SELECT doc_id FROM labeling.llm_responses) "
        "UNION ALL SELECT doc_id, 'discarded' FROM labeling.discarded WHERE doc_id NOT IN (SELECT doc_id FROM labeling.llm_responses)").pl()
    n_resp = con.execute("SELECT count(*) FROM labeling.llm_responses").fetchone()[0]
    bad = lost.height + stray.height
    out.append(ContractResult(
        t, "answers_accounted", bad == 0,
        f"{n_resp:,} answers: each parsed or discarded exactly once" if not bad else
        f"{lost.height:,} answers parsed and discarded both or neither; {stray.height:,} rows without an answer",
        "sql", rows_checked=n_resp, rows_failing=bad,
        failing=pl.concat([lost.with_columns(pl.all().cast(pl.Utf8)), stray], how="diagonal").head(MAX_EXAMPLES) if bad else None))
    counts = dict(con.execute("SELECT label_name, count(*) FROM labeling.parsed_labels GROUP BY 1").fetchall())
    balance = _balance(t, counts, task.label_names, c.min_minority_share, "parsed labels")
    out.append(balance)
    previous = _previous_details(con, t, "label_balance", None)
    out.append(_shift(t, balance.details["shares"] if counts else {}, (previous or {}).get("shares") if counts else None,
                      c.max_balance_shift, "the previous run"))
    parsed = sum(counts.values())
    discarded = con.execute("SELECT count(*) FROM labeling.discarded").fetchone()[0]
    total = parsed + discarded
    rate = discarded / total if total else 1.0
    reasons = dict(con.execute("SELECT reason, count(*) FROM labeling.discarded GROUP BY 1 ORDER BY 2 DESC").fetchall())
    examples = con.execute(
        f"SELECT doc_id, reason, left(raw_text, 60) AS raw_text FROM labeling.discarded ORDER BY sample_rank LIMIT {MAX_EXAMPLES}").pl()
    out.append(ContractResult(
        t, "discard_rate", total > 0 and rate <= c.max_discard_rate,
        f"{discarded:,} of {total:,} answers discarded ({rate:.1%}, bound {c.max_discard_rate:.0%})"
        + (": " + ", ".join(f"{k} {v:,}" for k, v in reasons.items()) if reasons else ""),
        "sql", observed=rate, bound=c.max_discard_rate, rows_checked=total, rows_failing=discarded,
        failing=examples if discarded else None, details={"reasons": reasons}))
    n, agree = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE label = gold_label) FROM labeling.parsed_labels WHERE gold_label IS NOT NULL").fetchone()
    wrong = con.execute(
        f"SELECT doc_id, label_name AS teacher, gold_label, left(raw_text, 60) AS raw_text FROM labeling.parsed_labels "
        f"WHERE gold_label IS NOT NULL AND label <> gold_label ORDER BY sample_rank LIMIT {MAX_EXAMPLES}").pl()
    out.append(_agreement(t, "teacher_gold_accuracy", n, agree, c.min_teacher_gold_accuracy, wrong,
                          "sampled documents with a gold label (the gold probe)"))
    return out


def gates_checkpoints(con, settings: Settings, partition: str | None) -> list[ContractResult]:
    t = "students.checkpoints"
    out = []
    champ = None
    if table_exists(con, "students.champion"):
        champ = con.execute("SELECT checkpoint_id, path FROM students.champion").fetchone()
    ok = champ is not None and Path(champ[1]).is_dir()
    rejected = None
    if champ is None and table_exists(con, "students.candidates"):
        rejected = con.execute("SELECT checkpoint_id, kind, round(score, 4) AS score, round(min_share_ratio, 3) AS "
                               "min_share_ratio, round(floor_score, 4) AS floor_score, verdict FROM students.candidates "
                               "WHERE NOT eligible ORDER BY created_at DESC").pl()
    if ok:
        desc = f"champion {champ[0]} at {champ[1]}"
    elif champ is None and rejected is not None and rejected.height:
        desc = (f"no eligible student: all {rejected.height} candidates collapsed or scored below the linear floor "
                "(see students.candidates). Check the teacher's labels (labeling.parsed_labels), raise sample.size, "
                "or use student.kind: linear")
    elif champ is None:
        desc = "no champion: students.champion is empty or missing"
    else:
        desc = f"champion {champ[0]}: folder {champ[1]} is missing"
    out.append(ContractResult(
        t, "champion", ok, desc, "sql", rows_checked=1, rows_failing=0 if ok else 1,
        failing=None if ok else (rejected if rejected is not None and rejected.height else pl.DataFrame(
            {"checkpoint_id": [champ[0] if champ else None], "path": [champ[1] if champ else None]}))))
    newest = con.execute(
        "SELECT checkpoint_id, label_source, n_val, val_accuracy FROM students.checkpoints ORDER BY created_at DESC LIMIT 1").fetchone()
    bound = settings.checks.min_student_teacher_agreement
    if newest is None or not str(newest[1]).startswith("llm") or not newest[2] or newest[3] is None:
        out.append(ContractResult(t, "student_teacher_agreement", True,
                                  "skipped: the newest checkpoint has no held-out LLM labels", "sql", bound=bound, skipped=True))
    else:
        acc = float(newest[3])
        ok = acc >= bound
        out.append(ContractResult(
            t, "student_teacher_agreement", ok,
            f"checkpoint {newest[0]} agrees with the teacher on {acc:.1%} of {newest[2]:,} held-out LLM labels (bound {bound:.0%})",
            "sql", observed=acc, bound=bound, rows_checked=int(newest[2]), rows_failing=round((1 - acc) * newest[2]),
            failing=None if ok else pl.DataFrame({"checkpoint_id": [newest[0]], "label_source": [newest[1]],
                                                  "n_val": [newest[2]], "val_accuracy": [acc]})))
    return out


def gates_predictions(con, settings: Settings, partition: str | None) -> list[ContractResult]:
    t = "predictions.labels"
    task = load_task(settings.task)
    c = settings.checks
    cid = _champion(con)
    batch_filter, params = ("AND c.batch = ?", [partition]) if partition is not None else ("", [])
    n_docs = con.execute(f"SELECT count(*) FROM raw.corpus c WHERE true {batch_filter}", params).fetchone()[0]
    missing = con.execute(
        f"SELECT c.doc_id, c.batch, c.split, left(c.text, 60) AS text_start FROM raw.corpus c WHERE true {batch_filter} "
        f"AND NOT EXISTS (SELECT 1 FROM predictions.labels p WHERE p.doc_id = c.doc_id AND p.checkpoint_id = ?) "
        f"ORDER BY c.doc_id", [*params, cid]).pl()
    where = f"in batch {partition}" if partition is not None else "in the corpus"
    out = [ContractResult(
        t, "coverage", cid is not None and missing.height == 0,
        (f"no champion yet (students.champion is empty)" if cid is None else
         f"{n_docs - missing.height:,} of {n_docs:,} documents {where} have a prediction from champion {cid}"),
        "sql", partition, observed=(n_docs - missing.height) / n_docs if n_docs else 1.0, bound=1.0,
        rows_checked=n_docs, rows_failing=missing.height, failing=missing.head(MAX_EXAMPLES) if missing.height else None)]
    pfilter, pparams = ("AND batch = ?", [partition]) if partition is not None else ("", [])
    names = {l.id: l.name for l in task.labels}
    raw_counts = dict(con.execute(
        f"SELECT label, count(*) FROM predictions.labels WHERE checkpoint_id = ? {pfilter} GROUP BY 1", [cid, *pparams]).fetchall())
    counts = {names.get(k, str(k)): v for k, v in raw_counts.items()}
    out.append(_collapse(con, t, counts, task.label_names, settings.checks.collapse_ratio, where, partition))
    balance = _balance(t, counts, task.label_names, c.min_minority_share, f"predictions {where}", partition)
    out.append(balance)
    if partition is not None:
        other = dict(con.execute(
            "SELECT label, count(*) FROM predictions.labels WHERE checkpoint_id = ? AND batch <> ? GROUP BY 1", [cid, partition]).fetchall())
        other_counts = {names.get(k, str(k)): v for k, v in other.items()}
        before = _shares(other_counts, task.label_names) if other_counts else None
        out.append(_shift(t, balance.details["shares"], before if counts else None, c.max_balance_shift, "the other batches", partition))
    else:
        out.append(ContractResult(t, "balance_shift", True, "skipped: not partitioned", "sql", skipped=True))
    n, agree = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE p.label = t.label) FROM predictions.labels p "
        f"JOIN labeling.parsed_labels t USING (doc_id) WHERE p.checkpoint_id = ? {pfilter.replace('batch', 'p.batch')}",
        [cid, *pparams]).fetchone() if table_exists(con, "labeling.parsed_labels") else (0, 0)
    disagree = con.execute(
        f"SELECT p.doc_id, t.label_name AS teacher, p.label AS student, round(p.probability, 3) AS probability "
        f"FROM predictions.labels p JOIN labeling.parsed_labels t USING (doc_id) "
        f"WHERE p.checkpoint_id = ? AND p.label <> t.label {pfilter.replace('batch', 'p.batch')} LIMIT {MAX_EXAMPLES}",
        [cid, *pparams]).pl() if n else None
    out.append(_agreement(t, "student_teacher_agreement", n, agree, c.min_student_teacher_agreement, disagree,
                          f"documents {where} that the teacher labeled", partition))
    return out


GATES: dict[str, Callable[..., list[ContractResult]]] = {
    "raw.corpus": gates_raw_corpus,
    "labeling.llm_responses": gates_llm_responses,
    "labeling.parsed_labels": gates_parsed_labels,
    "students.checkpoints": gates_checkpoints,
    "predictions.labels": gates_predictions,
}


# -- the entry points --------------------------------------------------------------------------
def evaluate(con: duckdb.DuckDBPyConnection, settings: Settings, table: str, partition: str | None = None) -> list[ContractResult]:
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
        results += check_expectations(con, settings, suite_table, partition if meta.get("partition_column") else None, prefix)
        dup = _unique_keys(con, suite_table, meta.get("keys", []), partition, meta.get("partition_column"))
        if dup is not None and dup.height:
            keys = next((r for r in results if r.contract == prefix + "keys"), None)
            if keys is not None and keys.passed:  # a sample hid the duplicates: SQL saw every row
                keys.passed = False
                keys.description = f"duplicate keys {meta['keys']} (checked in SQL over every row)"
                keys.failing = dup
                keys.rows_failing = dup.height
    if table in GATES and all(r.passed or not r.contract.endswith("schema") for r in results):
        try:
            results += GATES[table](con, settings, partition)
        except duckdb.Error as e:
            msg = str(e).splitlines()[0]
            results += [ContractResult(table, s.name, False, f"cannot be evaluated: {msg}", "sql", partition)
                        for s in CATALOG[table] if s.name not in {r.contract for r in results}]
    by_name = {r.contract: r for r in results}
    ordered = []
    for spec in CATALOG[table]:
        r = by_name.get(spec.name) or ContractResult(
            table, spec.name, False, "not evaluated: the table or its schema is broken (see the schema check)", "sql", partition)
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
        {"run_id": run_id, "table_name": r.table, "partition": r.partition, "contract": r.contract,
         "passed": r.passed, "skipped": r.skipped, "blocking": r.blocking, "engine": r.engine,
         "observed": r.observed, "bound": r.bound, "rows_checked": r.rows_checked, "rows_failing": r.rows_failing,
         "sampled": r.sampled, "description": r.description, "details": json.dumps(r.details, default=str),
         "failing_examples": (r.failing.head(MAX_EXAMPLES).write_json()
                              if r.failing is not None and r.failing.height else None)}
        for r in results
    ]
    frame = pl.DataFrame(rows, schema=_RESULT_COLUMNS)
    run_model(con, "ops.contract_results", frames={"staged_contract_results": frame}, atomic=False)


# The staged rows of sql/ops/contract_results.sql (details and failing_examples as JSON text).
_RESULT_COLUMNS = {"run_id": pl.Utf8, "table_name": pl.Utf8, "partition": pl.Utf8, "contract": pl.Utf8,
                   "passed": pl.Boolean, "skipped": pl.Boolean, "blocking": pl.Boolean, "engine": pl.Utf8,
                   "observed": pl.Float64, "bound": pl.Float64, "rows_checked": pl.Int64, "rows_failing": pl.Int64,
                   "sampled": pl.Boolean, "description": pl.Utf8, "details": pl.Utf8, "failing_examples": pl.Utf8}


def failures(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> list[tuple[str, str | None, str, str]]:
    """(table, partition, contract, description) of every contract that failed in these Dagster runs."""
    if not run_ids or not table_exists(con, "ops.contract_results"):
        return []
    return con.execute(
        "SELECT table_name, partition, contract, description FROM ops.contract_results "
        "WHERE NOT passed AND list_contains(?, run_id) ORDER BY checked_at", [run_ids]).fetchall()


def evaluate_and_record(con: duckdb.DuckDBPyConnection, settings: Settings, table: str, partition: str | None = None,
                        run_id: str | None = None) -> list[ContractResult]:
    t0 = time.perf_counter()
    results = evaluate(con, settings, table, partition)
    for r in results:
        r.details.setdefault("seconds", round(time.perf_counter() - t0, 3))
    record(con, results, run_id)
    return results
