"""The LlamBERT steps as plain functions over a DuckDB connection.

Dagster assets (``assets/``) and the CLI call these; nothing here imports Dagster. Each step
returns a small dict of figures that the caller shows (asset metadata, CLI summary) and
records the stage's rows and seconds in ``ops.stage_runs``.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from llambert.config import CorpusSource, Settings
from llambert.corpus.readers import CORPUS_SCHEMA, REJECTED_SCHEMA, read_source
from llambert.tasks import Task, load_task
from llambert.warehouse import count, run_model

INITIAL_BATCH = "initial"


def record_stage(con: duckdb.DuckDBPyConnection, stage: str, partition: str | None, rows: int, seconds: float,
                 details: dict | None = None, run_id: str | None = None) -> None:
    con.execute(
        "INSERT INTO ops.stage_runs (stage, partition, rows, seconds, details, run_id) VALUES (?, ?, ?, ?, ?, ?)",
        [stage, partition, rows, seconds, json.dumps(details or {}, default=str), run_id],
    )


def write_task_labels(con: duckdb.DuckDBPyConnection, task: Task) -> None:
    rows = [{"label_id": l.id, "name": l.name, "word": w, "match": task.match} for l in task.labels for w in l.words]
    frame = pl.DataFrame(rows, schema={"label_id": pl.Int64, "name": pl.Utf8, "word": pl.Utf8, "match": pl.Utf8})
    con.register("staged_task_labels", frame)
    con.execute("CREATE OR REPLACE TABLE labeling.task_labels AS SELECT * FROM staged_task_labels")
    con.unregister("staged_task_labels")


# -- 1. raw.corpus ----------------------------------------------------------------------------
def batch_sources(settings: Settings, batch: str) -> list[tuple[CorpusSource, Path]]:
    """Which files make up a batch: the configured corpus for the initial batch, else an inbox file."""
    if batch == INITIAL_BATCH:
        return [(s, settings.resolve_source_path(s)) for s in settings.corpus_sources()]
    from llambert.inbox import inbox_source  # new batches arrive through the inbox

    return [inbox_source(settings, batch)]


def ingest_batch(con: duckdb.DuckDBPyConnection, settings: Settings, batch: str = INITIAL_BATCH) -> dict:
    """Read a batch's sources into raw.occurrences / raw.corpus / raw.rejected (replacing the batch)."""
    t0 = time.perf_counter()
    task = load_task(settings.task)
    names = {l.name: l.id for l in task.labels}
    rows, rejected = [], []
    for source, path in batch_sources(settings, batch):
        result = read_source(source, path, names)
        rows.append(result.rows)
        rejected.append(result.rejected)
    staged = pl.concat(rows) if rows else pl.DataFrame(schema=CORPUS_SCHEMA)
    staged_rej = pl.concat(rejected) if rejected else pl.DataFrame(schema=REJECTED_SCHEMA)
    con.register("staged_rows", staged)
    con.register("staged_rejected", staged_rej)
    try:
        variables = {"batch": batch, "eval_split": settings.eval_split}
        con.execute("BEGIN TRANSACTION")
        try:
            from llambert.warehouse import model_path, set_variables

            set_variables(con, variables)
            for model in ("raw.occurrences", "raw.corpus", "raw.rejected"):
                con.execute(model_path(model).read_text())
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    finally:
        con.unregister("staged_rows")
        con.unregister("staged_rejected")
    stats = {
        "batch": batch,
        "input_rows": staged.height + staged_rej.height,
        "accepted_rows": staged.height,
        "rejected_rows": staged_rej.height,
        "documents": count(con, "raw.corpus", f"batch = '{batch}'"),
        "duplicate_rows": staged.height - staged["text"].n_unique() if staged.height else 0,
        "already_known": con.execute(
            "SELECT count(DISTINCT doc_id) FROM raw.occurrences o WHERE batch = ? AND doc_id IN "
            "(SELECT doc_id FROM raw.corpus WHERE batch <> ?)", [batch, batch]).fetchone()[0],
    }
    record_stage(con, "ingest", batch, stats["documents"], time.perf_counter() - t0, stats)
    return stats


# -- 2. labeling.sample -----------------------------------------------------------------------
def build_sample(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict:
    t0 = time.perf_counter()
    s = settings.sample
    run_model(
        con,
        "labeling.sample",
        {
            "pool_splits": s.pool_splits,
            "exclude_splits": s.exclude_splits,
            "sample_seed": s.seed,
            "sample_size": s.size,
        },
    )
    n = count(con, "labeling.sample")
    by_split = dict(con.execute("SELECT split, count(*) FROM labeling.sample GROUP BY 1 ORDER BY 1").fetchall())
    if n == 0:
        raise ValueError(
            f"the sample is empty: no document of raw.corpus is in a pool split {s.pool_splits} "
            f"(and in no excluded split {s.exclude_splits}). Check sample.pool_splits in llambert.yaml."
        )
    stats = {"rows": n, "requested": s.size, "by_split": by_split}
    record_stage(con, "sample", None, n, time.perf_counter() - t0, stats)
    return stats


# -- 3. labeling.llm_responses ----------------------------------------------------------------
def teacher_variables(backend, task: Task) -> dict:
    return {
        "model_identity": backend.model_identity,
        "prompt_version": task.version,
        "decoding": backend.decoding.key(),
    }


def label_sample(con: duckdb.DuckDBPyConnection, settings: Settings, backend=None) -> dict:
    """Ask the teacher about every sampled document that has no cached answer yet."""
    from llambert.teacher import make_teacher
    from llambert.teacher.runner import label_documents

    t0 = time.perf_counter()
    task = load_task(settings.task)
    docs = con.execute(
        "SELECT s.doc_id, c.text FROM labeling.sample s JOIN raw.corpus c USING (doc_id) ORDER BY s.sample_rank"
    ).pl()
    own = backend is None
    backend = backend or make_teacher(settings, task)
    load_s = time.perf_counter() - t0
    try:
        run = label_documents(
            con, backend, docs, task.version, batch_size=settings.teacher.batch_size,
            commit_every=settings.teacher.commit_every,
        )
        run_model(con, "labeling.llm_responses", teacher_variables(backend, task))
    finally:
        if own:
            backend.close()
    stats = {
        "rows": count(con, "labeling.llm_responses"),
        "model": backend.model_identity,
        "backend": backend.name,
        "mode": backend.decoding.mode,
        "asked": run.prompts,
        "from_cache": run.cached,
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "label_seconds": round(run.seconds, 2),
        "model_load_seconds": round(load_s, 2),
        "prompts_per_s": round(run.prompts_per_s, 3) if run.prompts_per_s else None,
        "run_id": run.run_id,
    }
    record_stage(con, "teacher", None, run.prompts, time.perf_counter() - t0, stats, run.run_id)
    return stats


# -- 4. labeling.parsed_labels / labeling.discarded -------------------------------------------
def parse_labels(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict:
    t0 = time.perf_counter()
    task = load_task(settings.task)
    write_task_labels(con, task)
    run_model(con, "labeling.answer_matches")
    run_model(con, "labeling.parsed_labels")
    run_model(con, "labeling.discarded")
    parsed, discarded = count(con, "labeling.parsed_labels"), count(con, "labeling.discarded")
    total = parsed + discarded
    balance = dict(con.execute("SELECT label_name, count(*) FROM labeling.parsed_labels GROUP BY 1 ORDER BY 1").fetchall())
    reasons = dict(con.execute("SELECT reason, count(*) FROM labeling.discarded GROUP BY 1 ORDER BY 1").fetchall())
    stats = {
        "parsed": parsed,
        "discarded": discarded,
        "discard_rate": discarded / total if total else 0.0,
        "label_counts": balance,
        "discard_reasons": reasons,
    }
    record_stage(con, "parse", None, total, time.perf_counter() - t0, stats)
    return stats


def label_balance(con: duckdb.DuckDBPyConnection, task: Task) -> dict[str, int]:
    counts = dict(con.execute("SELECT label_name, count(*) FROM labeling.parsed_labels GROUP BY 1").fetchall())
    return {name: int(counts.get(name, 0)) for name in task.label_names}


# -- 5. students.checkpoints ------------------------------------------------------------------
def training_phases(con: duckdb.DuckDBPyConnection, settings: Settings):
    """The labeled examples for the configured recipe (see the paper's four set-ups)."""
    from llambert.student.train import Phase

    recipe = settings.student.recipe
    llm = con.execute(
        "SELECT c.text, p.label FROM labeling.parsed_labels p JOIN raw.corpus c USING (doc_id) ORDER BY p.sample_rank"
    ).fetchall()
    # Per-batch audit labels (llambert/audit.py) join the LLM pool; a text that is also in the
    # sample keeps its sample label. Empty until an audit has run (audit.enabled).
    llm += con.execute(
        "SELECT c.text, a.label FROM labeling.audit_labels a JOIN raw.corpus c USING (doc_id) WHERE a.label IS NOT NULL "
        "AND a.doc_id NOT IN (SELECT doc_id FROM labeling.parsed_labels) ORDER BY a.batch, a.doc_id"
    ).fetchall()
    gold = con.execute(
        "SELECT c.text, c.gold_label FROM raw.corpus c WHERE c.split = 'train' AND c.gold_label IS NOT NULL "
        "AND NOT c.gold_conflict ORDER BY md5(c.doc_id)"
    ).fetchall()
    llm_phase = Phase("llm", [t for t, _ in llm], [y for _, y in llm])
    gold_phase = Phase("gold", [t for t, _ in gold], [y for _, y in gold])
    if recipe == "baseline":
        return [gold_phase], "gold"
    if recipe in ("llambert", "llambert_extra"):
        return [llm_phase], "llm"
    return [llm_phase, gold_phase], "llm+gold"


def train_checkpoint(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict:
    from llambert.models import resolve_model
    from llambert.student.train import train_student

    t0 = time.perf_counter()
    task = load_task(settings.task)
    cfg = settings.student
    phases, label_source = training_phases(con, settings)
    base = resolve_model(cfg.model, settings.models_dir, role="student")
    checkpoint_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    out = settings.checkpoints_dir / checkpoint_id
    result = train_student(
        str(base.path), task.label_names, task.label_ids, phases, cfg, out,
        model_card={"title": f"llambert student for {task.name}", "task": task.name, "base model": base.identity,
                    "recipe": cfg.recipe, "label source": label_source, "checkpoint": checkpoint_id},
        threads=settings.threads,
    )
    m = result.metrics
    con.execute(
        "INSERT INTO students.checkpoints (checkpoint_id, task, base_model, recipe, label_source, n_train, n_val, "
        "training_config, metrics, val_accuracy, val_f1, path, train_seconds) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [checkpoint_id, task.name, base.identity, cfg.recipe, label_source, result.n_train, result.n_val,
         json.dumps(cfg.model_dump()), json.dumps(m | {"train_examples_per_s": result.train_examples_per_s}),
         m.get("val_accuracy"), m.get("val_f1"), str(out), result.seconds],
    )
    log = pl.DataFrame(
        [{"checkpoint_id": checkpoint_id, "epoch": r["epoch"], "train_loss": r["train_loss"],
          "val_loss": r.get("val_loss"), "val_accuracy": r.get("val_accuracy"), "val_f1": r.get("val_f1"),
          "seconds": r["seconds"]} for r in result.history]
    )
    con.register("staged_log", log)
    con.execute("INSERT INTO students.training_log SELECT * FROM staged_log")
    con.unregister("staged_log")
    champion = choose_champion(con, settings)
    stats = {
        "checkpoint_id": checkpoint_id, "path": str(out), "n_train": result.n_train, "n_val": result.n_val,
        "best_epoch": result.best_epoch, **{k: v for k, v in m.items() if k != "best_epoch"},
        "train_examples_per_s": round(result.train_examples_per_s, 2), "history": result.history,
        "champion": champion["checkpoint_id"], "is_champion": champion["checkpoint_id"] == checkpoint_id,
    }
    record_stage(con, "train", None, result.n_train, time.perf_counter() - t0,
                 {k: v for k, v in stats.items() if k != "history"})
    return stats


def choose_champion(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict:
    run_model(con, "students.champion", {"champion_metric": settings.student.champion_metric,
                                          "task": load_task(settings.task).name})
    row = con.execute("SELECT checkpoint_id, path, reason FROM students.champion").fetchone()
    if row is None:
        raise LookupError("no student checkpoint for this task yet: materialize students.checkpoints first")
    return {"checkpoint_id": row[0], "path": row[1], "reason": row[2]}


# -- 6. predictions.labels --------------------------------------------------------------------
def predict_batch(con: duckdb.DuckDBPyConnection, settings: Settings, batch: str = INITIAL_BATCH,
                  replace: bool = False) -> dict:
    """Label every document of a batch that has no prediction from the champion yet."""
    from llambert.progress import progress
    from llambert.student.predict import StudentPredictor

    t0 = time.perf_counter()
    champ = choose_champion(con, settings)
    cid = champ["checkpoint_id"]
    if replace:
        con.execute("DELETE FROM predictions.labels WHERE batch = ? AND checkpoint_id = ?", [batch, cid])
    pending = con.execute(
        "SELECT count(*) FROM raw.corpus c WHERE c.batch = ? AND NOT EXISTS "
        "(SELECT 1 FROM predictions.labels p WHERE p.doc_id = c.doc_id AND p.checkpoint_id = ?)", [batch, cid]
    ).fetchone()[0]
    cfg = settings.student
    done = 0
    if pending:
        predictor = StudentPredictor(champ["path"], cfg.infer_max_length, cfg.infer_batch_size, cfg.truncation,
                                     bf16=cfg.bf16, threads=settings.threads)
        # A pending-id snapshot, so chunks are stable while we insert.
        con.execute(
            "CREATE OR REPLACE TEMP TABLE pending_docs AS SELECT doc_id FROM raw.corpus c WHERE c.batch = ? AND NOT EXISTS "
            "(SELECT 1 FROM predictions.labels p WHERE p.doc_id = c.doc_id AND p.checkpoint_id = ?) ORDER BY doc_id",
            [batch, cid],
        )
        with progress(pending, f"student labels batch {batch}", "doc") as bar:
            for offset in range(0, pending, cfg.chunk_rows):
                chunk = con.execute(
                    "SELECT p.doc_id, c.text FROM (SELECT doc_id FROM pending_docs ORDER BY doc_id LIMIT ? OFFSET ?) p "
                    "JOIN raw.corpus c USING (doc_id)", [cfg.chunk_rows, offset]
                ).pl()
                out = predictor.predict_frame(chunk).with_columns(batch=pl.lit(batch), checkpoint_id=pl.lit(cid))
                con.register("staged_predictions", out)
                con.execute(
                    "INSERT OR REPLACE INTO predictions.labels (doc_id, batch, checkpoint_id, label, probability) "
                    "SELECT doc_id, batch, checkpoint_id, label, probability FROM staged_predictions"
                )
                con.unregister("staged_predictions")
                done += out.height
                bar.update(out.height)
        con.execute("DROP TABLE IF EXISTS pending_docs")
    seconds = time.perf_counter() - t0
    total = con.execute("SELECT count(*) FROM predictions.labels WHERE batch = ? AND checkpoint_id = ?", [batch, cid]).fetchone()[0]
    stats = {"batch": batch, "checkpoint_id": cid, "predicted_now": done, "rows": total,
             "docs_per_s": round(done / seconds, 2) if done else None}
    record_stage(con, "predict", batch, done, seconds, stats)
    return stats


# -- 7. evaluation.report ---------------------------------------------------------------------
def build_report(con: duckdb.DuckDBPyConnection, settings: Settings) -> pl.DataFrame:
    choose_champion(con, settings)
    write_task_labels(con, load_task(settings.task))
    run_model(con, "evaluation.report", {"eval_split": settings.eval_split})
    return con.execute("SELECT * FROM evaluation.report ORDER BY subject, metric").pl()


def report_value(report: pl.DataFrame, subject: str, metric: str):
    row = report.filter((pl.col("subject") == subject) & (pl.col("metric") == metric))
    return row["value"][0] if row.height else None
