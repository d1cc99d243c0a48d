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
from llambert.hardware import resolve_bf16
from llambert.corpus.readers import CORPUS_SCHEMA, REJECTED_SCHEMA, read_source
from llambert.tasks import Task, load_task
from llambert.warehouse import count, model_path, run_model, set_variables, transaction

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
    from llambert.progress import progress

    sources = batch_sources(settings, batch)
    with progress(len(sources), f"ingest batch {batch}", "file") as bar:
        for source, path in sources:
            result = read_source(source, path, names)
            rows.append(result.rows)
            rejected.append(result.rejected)
            bar.set_postfix_str(f"{sum(r.height for r in rows):,} rows", refresh=False)
            bar.update(1)
    staged = pl.concat(rows) if rows else pl.DataFrame(schema=CORPUS_SCHEMA)
    staged_rej = pl.concat(rejected) if rejected else pl.DataFrame(schema=REJECTED_SCHEMA)
    con.register("staged_rows", staged)
    con.register("staged_rejected", staged_rej)
    try:
        variables = {"batch": batch, "eval_split": settings.eval_split}
        with transaction(con):
            set_variables(con, variables)
            for model in ("raw.occurrences", "raw.corpus", "raw.rejected"):
                con.execute(model_path(model).read_text())
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
    from llambert.teacher import make_teacher, with_gold_examples
    from llambert.teacher.runner import label_documents

    t0 = time.perf_counter()
    task = with_gold_examples(con, settings, load_task(settings.task))
    docs = con.execute(
        "SELECT s.doc_id, c.text FROM labeling.sample s JOIN raw.corpus c USING (doc_id) ORDER BY s.sample_rank"
    ).pl()
    own = backend is None
    backend = backend or make_teacher(settings, task)
    load_s = time.perf_counter() - t0
    try:
        run = label_documents(
            con, backend, docs, task.version, batch_size=settings.teacher.resolved_batch_size(),
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
_RECIPE_SOURCE = {"baseline": "gold", "llambert": "llm", "llambert_extra": "llm", "combined": "llm+gold"}
# Settings that change only how a checkpoint is used or compared, never its weights.
_NOT_TRAINING = {"infer_batch_size", "infer_max_length", "chunk_rows", "champion_metric", "probe_size"}


def ensure_gold_probe(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict:
    """Build students.gold_probe once per (seed, size); return its identity and size.

    Kept while the settings are unchanged, so a growing corpus does not move documents
    in or out of it (a checkpoint's probe score stays comparable with the next one's).
    """
    cfg = settings.student
    params = f"seed={cfg.seed};size={cfg.probe_size}"
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'students' AND table_name = 'gold_probe'"
    ).fetchone()[0]
    current = con.execute("SELECT any_value(probe_params), count(*) FROM students.gold_probe").fetchone() if exists else None
    if current is None or current[0] != params or current[1] == 0:
        run_model(con, "students.gold_probe", {"probe_params": params, "probe_seed": cfg.seed, "probe_size": cfg.probe_size})
    n, probe_set = con.execute(
        "SELECT count(*), md5(coalesce(string_agg(doc_id || ':' || gold_label, ',' ORDER BY doc_id), '')) FROM students.gold_probe"
    ).fetchone()
    return {"n": int(n), "probe_set": probe_set if n else None}


def training_phases(con: duckdb.DuckDBPyConnection, settings: Settings):
    """The labeled examples for the configured recipe (the paper's four set-ups), phase by phase.

    Returns (phases, label_source, sizes). The set work is ``sql/students/training_examples.sql``.
    """
    from llambert.student.train import Phase

    recipe = settings.student.recipe
    ensure_gold_probe(con, settings)
    run_model(con, "students.training_examples", {"recipe": recipe})
    rows = con.execute(
        "SELECT e.phase, e.doc_id, e.label, e.origin, e.split, c.text FROM students.training_examples e "
        "JOIN raw.corpus c USING (doc_id) ORDER BY e.phase_order, e.ord"
    ).pl()
    phases = []
    for name in ("llm", "gold"):
        part = rows.filter(pl.col("phase") == name)
        if part.height:
            phases.append(Phase(name, part["text"].to_list(), part["label"].to_list(), part["doc_id"].to_list()))
    sizes = {f"{r['phase']}_{r['origin']}_{r['split']}": r["n"] for r in
             rows.group_by("phase", "origin", "split").len("n").sort("phase", "origin", "split").to_dicts()}
    needed = {"baseline": ["gold"], "llambert": ["llm"], "llambert_extra": ["llm"], "combined": ["llm", "gold"]}[recipe]
    missing = [n for n in needed if n not in {p.name for p in phases}]
    if missing:
        what = {
            "gold": "gold labels in split 'train' of raw.corpus (outside students.gold_probe)",
            "llm": "parsed LLM labels (labeling.parsed_labels)"
            + (" of documents in split 'train' (the paper's llambert recipe; use llambert_extra to train on the "
               "extra pool too)" if recipe == "llambert" else ""),
        }
        raise ValueError(f"student.recipe '{recipe}' needs " + " and ".join(what[m] for m in missing)
                         + ", and there are none. Change student.recipe in llambert.yaml or add the labels.")
    return phases, _RECIPE_SOURCE[recipe], sizes


def training_fingerprint(base_identity: str, task: Task, settings: Settings, phases) -> str:
    """Same base model + training settings + the same (doc_id, label) lists => the same checkpoint."""
    import hashlib

    cfg = {k: v for k, v in settings.student.model_dump().items() if k not in _NOT_TRAINING and k != "model"}
    h = hashlib.sha256()
    h.update(json.dumps({"base": base_identity, "task": task.name, "task_version": task.version,
                         "label_ids": task.label_ids, "config": cfg}, sort_keys=True).encode())
    for p in phases:
        h.update(f"\x1e{p.name}\x1f".encode())
        for d, y in zip(p.doc_ids, p.labels):
            h.update(f"{d}:{y}\x1f".encode())
    return h.hexdigest()


def score_on_probe(con: duckdb.DuckDBPyConnection, settings: Settings, path: str | Path) -> dict | None:
    """Accuracy / macro-F1 of a checkpoint folder on students.gold_probe (None without a probe)."""
    from llambert.metrics import classification_metrics
    from llambert.student.predict import StudentPredictor

    probe = con.execute(
        "SELECT g.doc_id, g.gold_label, c.text FROM students.gold_probe g JOIN raw.corpus c USING (doc_id) ORDER BY g.doc_id"
    ).pl()
    if probe.height == 0:
        return None
    cfg = settings.student
    pred = StudentPredictor(str(path), cfg.infer_max_length, cfg.infer_batch_size, cfg.truncation, bf16=resolve_bf16(cfg.bf16),
                            threads=settings.threads)
    labels, _ = pred.predict(probe["text"].to_list())
    task = load_task(settings.task)
    m = classification_metrics(probe["gold_label"].to_list(), labels, task.label_ids)
    return {"probe_accuracy": m["accuracy"], "probe_f1": m["macro_f1"], "probe_n": probe.height}


def train_checkpoint(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict:
    """Fine-tune the student for the configured recipe, unless this exact training was done before."""
    from llambert.models import resolve_model
    from llambert.student.train import train_student

    t0 = time.perf_counter()
    task = load_task(settings.task)
    cfg = settings.student
    phases, label_source, sizes = training_phases(con, settings)
    probe = ensure_gold_probe(con, settings)
    base = resolve_model(cfg.model, settings.models_dir, role="student")
    fingerprint = training_fingerprint(base.identity, task, settings, phases)
    prior = con.execute(
        "SELECT checkpoint_id, path, n_train, n_val, metrics, probe_set FROM students.checkpoints "
        "WHERE fingerprint = ? ORDER BY created_at DESC", [fingerprint]
    ).fetchall()
    prior = next((r for r in prior if (Path(r[1]) / "config.json").exists()), None)
    if prior is not None:
        checkpoint_id, out = prior[0], Path(prior[1])
        if prior[5] != probe["probe_set"]:  # the probe was rebuilt (other settings): score on the new one
            _store_probe_score(con, checkpoint_id, probe, score_on_probe(con, settings, out))
        champion = choose_champion(con, settings)
        m = json.loads(prior[4])
        stats = {"checkpoint_id": checkpoint_id, "path": str(out), "reused": True, "fingerprint": fingerprint[:16],
                 "n_train": prior[2], "n_val": prior[3], "recipe": cfg.recipe, "label_source": label_source,
                 **{k: v for k, v in m.items() if k.startswith(("val_", "probe_"))},
                 "history": [], "champion": champion["checkpoint_id"],
                 "is_champion": champion["checkpoint_id"] == checkpoint_id, "champion_reason": champion["reason"]}
        record_stage(con, "train", None, 0, time.perf_counter() - t0, {k: v for k, v in stats.items() if k != "history"})
        return stats

    checkpoint_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    out = settings.checkpoints_dir / checkpoint_id
    card = {"title": f"llambert student for {task.name}", "task": task.name, "labels": ", ".join(task.label_names),
            "base model": base.identity, "recipe": cfg.recipe, "label source": label_source,
            "training data": ", ".join(f"{k}: {v}" for k, v in sizes.items()), "checkpoint": checkpoint_id,
            "fingerprint": fingerprint}
    result = train_student(str(base.path), task.label_names, task.label_ids, phases, cfg, out, model_card=card,
                           threads=settings.threads)
    m = dict(result.metrics)
    scored = score_on_probe(con, settings, out)
    if scored:
        m |= scored
        from llambert.student.train import append_to_model_card

        append_to_model_card(out, {"gold probe accuracy": f"{scored['probe_accuracy']:.4f} on {scored['probe_n']} "
                                   "held-out gold train documents", "gold probe macro-F1": f"{scored['probe_f1']:.4f}"})
    sizes |= {"train": result.n_train, "val": result.n_val, "probe": probe["n"]}
    con.execute(
        "INSERT INTO students.checkpoints (checkpoint_id, task, base_model, recipe, label_source, n_train, n_val, "
        "training_config, metrics, val_accuracy, val_f1, path, train_seconds, fingerprint, data_sizes, probe_set, "
        "probe_n, probe_accuracy, probe_f1) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [checkpoint_id, task.name, base.identity, cfg.recipe, label_source, result.n_train, result.n_val,
         json.dumps(cfg.model_dump()), json.dumps(m | {"train_examples_per_s": result.train_examples_per_s}),
         m.get("val_accuracy"), m.get("val_f1"), str(out), result.seconds, fingerprint, json.dumps(sizes),
         probe["probe_set"] if scored else None, m.get("probe_n"), m.get("probe_accuracy"), m.get("probe_f1")],
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
        "checkpoint_id": checkpoint_id, "path": str(out), "reused": False, "fingerprint": fingerprint[:16],
        "recipe": cfg.recipe, "label_source": label_source, "n_train": result.n_train, "n_val": result.n_val,
        "best_epoch": result.best_epoch, **{k: v for k, v in m.items() if k != "best_epoch"},
        "train_examples_per_s": round(result.train_examples_per_s, 2), "history": result.history,
        "champion": champion["checkpoint_id"], "is_champion": champion["checkpoint_id"] == checkpoint_id,
        "champion_reason": champion["reason"],
    }
    record_stage(con, "train", None, result.n_train, time.perf_counter() - t0,
                 {k: v for k, v in stats.items() if k != "history"})
    return stats


def _store_probe_score(con: duckdb.DuckDBPyConnection, checkpoint_id: str, probe: dict, scored: dict | None) -> None:
    if scored:
        con.execute("UPDATE students.checkpoints SET probe_set = ?, probe_n = ?, probe_accuracy = ?, probe_f1 = ? "
                    "WHERE checkpoint_id = ?", [probe["probe_set"], scored["probe_n"], scored["probe_accuracy"],
                                                scored["probe_f1"], checkpoint_id])


def choose_champion(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict:
    """Rebuild students.champion: best checkpoint of the task by the configured metric (see champion.sql).

    probe_* metrics compare checkpoints on the same gold documents; without a gold probe (a corpus
    with no gold train labels) the val_* counterpart is used, and the reason says so.
    """
    metric = settings.student.champion_metric
    task = load_task(settings.task).name
    probe_set = None
    if metric.startswith("probe_"):
        probe = ensure_gold_probe(con, settings)
        probe_set = probe["probe_set"]
        if probe_set is None:
            metric = metric.replace("probe_", "val_")
        else:  # checkpoints of the task not yet scored on this probe are scored now (fair comparison)
            for cid, path in con.execute(
                "SELECT checkpoint_id, path FROM students.checkpoints WHERE task = ? AND probe_set IS DISTINCT FROM ?",
                [task, probe_set]).fetchall():
                if (Path(path) / "config.json").exists():
                    _store_probe_score(con, cid, probe, score_on_probe(con, settings, path))
    run_model(con, "students.champion", {"champion_metric": metric, "task": task, "probe_set": probe_set})
    row = con.execute("SELECT checkpoint_id, path, reason, metric, score FROM students.champion").fetchone()
    if row is None:
        raise LookupError("no student checkpoint for this task yet: materialize students.checkpoints first")
    return {"checkpoint_id": row[0], "path": row[1], "reason": row[2], "metric": row[3], "score": row[4]}


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
                                     bf16=resolve_bf16(cfg.bf16), threads=settings.threads)
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
    from llambert.teacher.accounting import project_costs

    choose_champion(con, settings)
    task = load_task(settings.task)
    write_task_labels(con, task)
    latest = con.execute("SELECT run_id FROM labeling.cost_projection ORDER BY created_at DESC LIMIT 1").fetchone()
    if latest:  # the student has run since: its docs/s completes the LLM-alone vs LlamBERT projection
        project_costs(con, settings, task, latest[0])
    run_model(con, "evaluation.report", {"eval_split": settings.eval_split})
    return con.execute("SELECT * FROM evaluation.report ORDER BY subject, metric").pl()


def report_value(report: pl.DataFrame, subject: str, metric: str):
    row = report.filter((pl.col("subject") == subject) & (pl.col("metric") == metric))
    return row["value"][0] if row.height else None
