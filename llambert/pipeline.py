"""The LlamBERT steps as plain functions over a DuckDB connection.

Dagster assets (``assets/``) and the CLI call these; nothing here imports Dagster. Each step
returns a small typed result (``llambert/results.py``) whose ``.metadata()`` the caller shows
(asset metadata, CLI summary) and records the stage's rows and seconds in ``ops.stage_runs``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from llambert.config import ConfigError, CorpusSource, Settings
from llambert.corpus.readers import CORPUS_SCHEMA, REJECTED_SCHEMA, read_source
from llambert.hardware import resolve_bf16, resolve_device
from llambert.progress import emit
from llambert.results import IngestResult, ParseResult, PredictResult, SampleResult, TeacherResult, TrainResult
from llambert.tasks import Task, load_task
from llambert.warehouse import (
    Warehouse,
    count,
    model_sql,
    record_stage,
    run_model,
    sessions,
    set_variables,
    transaction,
    write_task_labels,
)

INITIAL_BATCH = "initial"


# -- 1. raw.corpus ----------------------------------------------------------------------------
def batch_sources(settings: Settings, batch: str) -> list[tuple[CorpusSource, Path]]:
    """Which files make up a batch: the configured corpus for the initial batch, else an inbox file."""
    if batch == INITIAL_BATCH:
        return [(s, settings.resolve_source_path(s)) for s in settings.corpus_sources()]
    from llambert.inbox import inbox_source  # new batches arrive through the inbox

    return [inbox_source(settings, batch)]


def ingest_batch(con: duckdb.DuckDBPyConnection, settings: Settings, batch: str = INITIAL_BATCH) -> IngestResult:
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
    frames = {"staged_rows": staged, "staged_rejected": staged_rej}
    with transaction(con):
        set_variables(con, {"batch": batch, "eval_split": settings.eval_split})
        for model in ("raw.occurrences", "raw.corpus", "raw.rejected"):
            run_model(con, model, frames=frames, atomic=False)
    stats = IngestResult(
        batch=batch,
        input_rows=staged.height + staged_rej.height,
        accepted_rows=staged.height,
        rejected_rows=staged_rej.height,
        documents=count(con, "raw.corpus", f"batch = '{batch}'"),
        duplicate_rows=staged.height - staged["text"].n_unique() if staged.height else 0,
        already_known=con.execute(
            "SELECT count(DISTINCT doc_id) FROM raw.occurrences o WHERE batch = ? AND doc_id IN "
            "(SELECT doc_id FROM raw.corpus WHERE batch <> ?)",
            [batch, batch],
        ).fetchone()[0],
    )
    record_stage(con, "ingest", batch, stats.documents, time.perf_counter() - t0, stats.as_dict())
    return stats


# -- 2. labeling.pool / labeling.sample ------------------------------------------------------
def build_pool(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict:
    """Every document the teacher may label, in the seeded order (``sql/labeling/pool.sql``)."""
    t0 = time.perf_counter()
    s = settings.sample
    run_model(
        con, "labeling.pool", {"pool_splits": s.pool_splits, "exclude_splits": s.exclude_splits, "sample_seed": s.seed}
    )
    n = count(con, "labeling.pool")
    if n == 0:
        raise ConfigError(
            f"setting 'sample.pool_splits': the sample is empty: no document of raw.corpus is in a pool split "
            f"{s.pool_splits} (and in no excluded split {s.exclude_splits}). Check sample.pool_splits in llambert.yaml."
        )
    return {"rows": n, "seconds": round(time.perf_counter() - t0, 3)}  # recorded with the sample stage


def build_sample(con: duckdb.DuckDBPyConnection, settings: Settings) -> SampleResult:
    """Round 0 of the sample: all of it (random) or the seed round (uncertainty)."""
    from llambert.sampling import seed_size

    t0 = time.perf_counter()
    s = settings.sample
    pool = build_pool(con, settings)
    run_model(con, "labeling.sample", {"sample_size": seed_size(s.size, s.strategy, s.round_size)})
    n = count(con, "labeling.sample")
    if n == 0:
        raise ConfigError(
            f"setting 'sample.pool_splits': the sample is empty: no document of raw.corpus is in a pool split "
            f"{s.pool_splits} (and in no excluded split {s.exclude_splits}). Check sample.pool_splits in llambert.yaml."
        )
    stats = SampleResult(
        rows=n, requested=s.size, strategy=s.strategy, pool=pool["rows"], by_split=_sample_by_split(con)
    )
    record_stage(con, "sample", None, n, time.perf_counter() - t0, stats.as_dict())
    return stats


def _sample_by_split(con: duckdb.DuckDBPyConnection) -> dict:
    return dict(con.execute("SELECT split, count(*) FROM labeling.sample GROUP BY 1 ORDER BY 1").fetchall())


# -- 3. labeling.llm_responses ----------------------------------------------------------------
def teacher_variables(backend, task: Task, small=None, threshold: float | None = None) -> dict:
    """The variables of sql/labeling/llm_responses.sql: the teacher's configuration and, with a cascade,
    its small model's (``small``, ``threshold``). Always every key: DuckDB variables outlive a statement,
    so a key left out would keep an earlier run's value on the same connection."""
    return {
        "model_identity": backend.model_identity,
        "prompt_version": task.version,
        "decoding": backend.decoding.key(),
        "cascade_identity": small.model_identity if small is not None else None,
        "cascade_decoding": small.decoding.key() if small is not None else None,
        "cascade_threshold": float(threshold) if small is not None and threshold is not None else None,
    }


def _labels_so_far(con: duckdb.DuckDBPyConnection, task: Task, variables: dict) -> pl.DataFrame:
    """(text, label) of every sampled document the teacher has answered usefully so far."""
    write_task_labels(con, task)
    run_model(con, "labeling.llm_responses", variables)
    run_model(con, "labeling.answer_matches")
    run_model(con, "labeling.parsed_labels")
    return con.execute(
        "SELECT c.text, p.label FROM labeling.parsed_labels p JOIN raw.corpus c USING (doc_id) ORDER BY p.sample_rank"
    ).pl()


def _uncertainty_round(
    con: duckdb.DuckDBPyConnection, settings: Settings, task: Task, variables: dict, round_no: int
) -> dict | None:
    """Append the next round of ``sample.strategy: uncertainty`` to labeling.sample; None when full or exhausted."""
    from llambert.sampling import next_round, plan_round

    s = settings.sample
    plan = plan_round(round_no, count(con, "labeling.sample"), s.size, s.round_size, s.random_share)
    if plan is None:
        return None
    labeled = _labels_so_far(con, task, variables)
    candidates = con.execute(
        "SELECT p.doc_id, c.text FROM labeling.pool p JOIN raw.corpus c USING (doc_id) "
        "WHERE p.doc_id NOT IN (SELECT doc_id FROM labeling.sample) ORDER BY p.pool_rank LIMIT ?",
        [s.score_pool],
    ).pl()
    if candidates.is_empty():
        return None
    if labeled.is_empty():
        run_model(con, "labeling.discarded")
        n, reasons = con.execute(
            "SELECT count(*), string_agg(DISTINCT reason, ', ') FROM labeling.discarded"
        ).fetchone()
        raise NothingParsed(
            f"uncertainty sampling, round {round_no}: none of the {n} teacher answers so far names a label of task "
            f"'{task.name}' (every one is in labeling.discarded: {reasons or 'no answers'}), so there is nothing to "
            "pick the next round by, and more calls would be discarded too. Look at what the teacher said: "
            'llambert sql "SELECT reason, raw_text FROM labeling.discarded LIMIT 20"; then fix the task\'s answer '
            "words, the prompt or the teacher (teacher.model / teacher.mode) and run again: the paid answers are cached."
        )
    if labeled["label"].n_unique() < 2:  # one class so far: nothing to be unsure between; keep to the pool order
        plan = type(plan)(plan.round, 0, plan.size, 0, plan.size)
    t0 = time.perf_counter()
    picks = next_round(
        labeled["text"].to_list(), labeled["label"].to_list(), task.label_ids, candidates, plan, seed=s.seed
    )
    run_model(con, "labeling.sample", {"round": round_no}, section="round", frames={"round_picks": picks})
    added = con.execute("SELECT count(*) FROM labeling.sample WHERE round = ?", [round_no]).fetchone()[0]
    return {
        "round": round_no,
        "added": added,
        "uncertain": plan.n_uncertain,
        "random": plan.n_random,
        "trained_on": labeled.height,
        "scored": candidates.height,
        "select_seconds": round(time.perf_counter() - t0, 2),
    }


def _label_round(
    con: duckdb.DuckDBPyConnection | Warehouse,
    settings: Settings,
    task: Task,
    backend,
    small,
    docs: pl.DataFrame,
    variables: dict,
) -> list:
    """Answers for ``docs``: from the teacher, or with a cascade from the small model first and from the
    teacher only for the documents the small model is unsure of. Returns the runs' stats (small model first).

    Which documents go on is read back from labeling.llm_responses (its SQL holds the rule), so the step
    and the table never disagree; the small model's run row records how many went on.
    """
    from llambert.teacher.runner import label_documents

    t = settings.teacher
    kw = {"batch_size": t.resolved_batch_size(resolve_device(t.device)), "commit_every": t.commit_every}
    if small is None:
        return [label_documents(con, backend, docs, task.version, **kw)]
    threshold = t.cascade.threshold
    first = label_documents(con, small, docs, task.version, role="cascade_small", cascade_threshold=threshold, **kw)
    session = sessions(con)
    with session() as c:
        run_model(c, "labeling.llm_responses", variables)
        kept = {
            r[0]
            for r in c.execute(
                "SELECT doc_id FROM labeling.llm_responses WHERE answered_by = 'cascade_small'"
            ).fetchall()
        }
        escalate = docs.filter(~pl.col("doc_id").is_in(list(kept)))
        share = escalate.height / docs.height if docs.height else 0.0
        run_model(
            c,
            "labeling.llm_runs",
            {"run_id": first.run_id, "escalated": escalate.height, "escalated_share": share},
            section="cascade",
        )
    runs = [first]
    if escalate.height:
        runs.append(
            label_documents(con, backend, escalate, task.version, role="teacher", cascade_threshold=threshold, **kw)
        )
    return runs


def _server_details(backends: list) -> dict:
    """openai backend, choice mode (the teacher's or a cascade's small model): which server answered, and
    whether choice was constrained to the labels (False if any backend's was not)."""
    infos = [b.server_info() for b in backends if b is not None and hasattr(b, "server_info")]
    infos = [i for i in infos if i]
    if not infos:
        return {}
    flags = [i.get("constrained_choice") for i in infos]
    constrained = False if False in flags else (True if all(flags) else None)
    return {"server": ", ".join(sorted({i["server"] for i in infos})), "constrained_choice": constrained}


def label_sample(
    con: duckdb.DuckDBPyConnection | Warehouse, settings: Settings, backend=None, small_backend=None
) -> TeacherResult:
    """Ask the teacher about every sampled document that has no cached answer yet.

    Under ``sample.strategy: uncertainty`` this step also grows labeling.sample, round by round,
    until it holds ``sample.size`` documents (each round picked from the answers of the ones before).
    Given a :class:`~llambert.warehouse.Warehouse`, no connection is open while the model loads or
    answers (readers get in between commits); given a connection, it is used throughout.
    """
    from llambert.teacher import make_cascade_teacher, make_teacher, with_gold_examples

    session = sessions(con)
    t0 = time.perf_counter()
    with session(prepare=True) as c:
        task = with_gold_examples(c, settings, load_task(settings.task))
    sample_docs = (
        "SELECT s.doc_id, c.text FROM labeling.sample s JOIN raw.corpus c USING (doc_id) ORDER BY s.sample_rank"
    )
    cascade = settings.teacher.cascade
    own, own_small = backend is None, small_backend is None and cascade is not None
    backend = backend or make_teacher(settings, task)
    small = (small_backend or make_cascade_teacher(settings, task)) if cascade is not None else None
    variables = teacher_variables(backend, task, small, cascade.threshold if cascade else None)
    load_s = time.perf_counter() - t0
    runs, rounds, n_rounds = [], [], 0
    try:
        while True:
            with session() as c:
                docs = c.execute(sample_docs).pl()
            runs.extend(_label_round(con, settings, task, backend, small, docs, variables))
            n_rounds += 1
            if settings.sample.strategy != "uncertainty":
                break
            with session() as c:
                step = _uncertainty_round(c, settings, task, variables, n_rounds)
            if step is None:
                break
            rounds.append(step)
            print(
                f"[llambert] sample round {step['round']}: {step['added']} documents ({step['uncertain']} the "
                f"floor is least sure of, {step['random']} random), floor trained on {step['trained_on']} labels, "
                f"{step['scored']} pool documents scored in {step['select_seconds']} s",
                file=sys.stderr,
                flush=True,
            )
        with session() as c:
            run_model(c, "labeling.llm_responses", variables)
    finally:
        if own:
            backend.close()
        if own_small and small is not None:
            small.close()
    asked = sum(r.prompts for r in runs)
    seconds = sum(r.seconds for r in runs)
    with session() as c:
        by = dict(c.execute("SELECT answered_by, count(*) FROM labeling.llm_responses GROUP BY 1").fetchall())
        answered = sum(by.values())
        if small is not None:
            escalated = by.get("teacher", 0)
            details = {
                "cascade_model": small.model_identity,
                "cascade_threshold": cascade.threshold,
                "cascade_asked": sum(r.prompts for r in runs if r.role == "cascade_small"),
                "escalated": escalated,
                "escalated_share": round(escalated / answered, 4) if answered else None,
            }
        else:
            details = {}
        details |= _server_details([backend, small])
        stats = TeacherResult(
            rows=count(c, "labeling.llm_responses"),
            model=backend.model_identity,
            backend=backend.name,
            mode=backend.decoding.mode,
            asked=asked,
            from_cache=sum(r.cached for r in runs),
            prompt_tokens=sum(r.prompt_tokens for r in runs),
            completion_tokens=sum(r.completion_tokens for r in runs),
            label_seconds=round(seconds, 2),
            model_load_seconds=round(load_s, 2),
            prompts_per_s=round(asked / seconds, 3) if asked and seconds else None,
            run_id=runs[-1].run_id,
            strategy=settings.sample.strategy,
            rounds=n_rounds,
            sampled=count(c, "labeling.sample"),
            **details,
        )
        record_stage(
            c,
            "teacher",
            None,
            asked,
            time.perf_counter() - t0,
            {**stats.as_dict(), "round_details": rounds},
            runs[-1].run_id,
        )
    return stats


# -- 4. labeling.parsed_labels / labeling.discarded -------------------------------------------
def sample_directives(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Sampled documents with sentences ``teacher.strip_directives`` keeps from the teacher (doc_id,
    removed): what a reviewer checks when the option is on. The stored text is never changed."""
    from llambert.teacher.prompts import directives

    docs = con.execute(
        "SELECT s.doc_id, c.text FROM labeling.sample AS s INNER JOIN raw.corpus AS c USING (doc_id) ORDER BY s.doc_id"
    ).pl()
    removed = [" | ".join(directives(t or "")) for t in docs["text"].to_list()]
    return docs.select("doc_id").with_columns(removed=pl.Series(removed, dtype=pl.Utf8)).filter(pl.col("removed") != "")


def parse_labels(con: duckdb.DuckDBPyConnection, settings: Settings) -> ParseResult:
    t0 = time.perf_counter()
    task = load_task(settings.task)
    write_task_labels(con, task)
    run_model(con, "labeling.answer_matches")
    run_model(con, "labeling.parsed_labels")
    run_model(con, "labeling.discarded")
    parsed, discarded = count(con, "labeling.parsed_labels"), count(con, "labeling.discarded")
    total = parsed + discarded
    balance = dict(
        con.execute("SELECT label_name, count(*) FROM labeling.parsed_labels GROUP BY 1 ORDER BY 1").fetchall()
    )
    reasons = dict(con.execute("SELECT reason, count(*) FROM labeling.discarded GROUP BY 1 ORDER BY 1").fetchall())
    stats = ParseResult(
        parsed=parsed,
        discarded=discarded,
        discard_rate=discarded / total if total else 0.0,
        label_counts=balance,
        discard_reasons=reasons,
    )
    record_stage(con, "parse", None, total, time.perf_counter() - t0, stats.as_dict())
    return stats


def label_balance(con: duckdb.DuckDBPyConnection, task: Task) -> dict[str, int]:
    counts = dict(con.execute("SELECT label_name, count(*) FROM labeling.parsed_labels GROUP BY 1").fetchall())
    return {name: int(counts.get(name, 0)) for name in task.label_names}


# -- 5. students.checkpoints ------------------------------------------------------------------
_RECIPE_SOURCE = {"baseline": "gold", "llambert": "llm", "llambert_extra": "llm", "combined": "llm+gold"}
# The staged rows of sql/students/checkpoints.sql and sql/students/training_log.sql (JSON columns as text).
_CHECKPOINT = {
    "checkpoint_id": pl.Utf8,
    "task": pl.Utf8,
    "base_model": pl.Utf8,
    "recipe": pl.Utf8,
    "label_source": pl.Utf8,
    "n_train": pl.Int64,
    "n_val": pl.Int64,
    "training_config": pl.Utf8,
    "metrics": pl.Utf8,
    "val_accuracy": pl.Float64,
    "val_f1": pl.Float64,
    "path": pl.Utf8,
    "train_seconds": pl.Float64,
    "fingerprint": pl.Utf8,
    "data_sizes": pl.Utf8,
    "probe_set": pl.Utf8,
    "probe_n": pl.Int64,
    "probe_accuracy": pl.Float64,
    "probe_f1": pl.Float64,
    "kind": pl.Utf8,
    "docs_per_s": pl.Float64,
    "min_share_ratio": pl.Float64,
}
_TRAINING_LOG = {
    "checkpoint_id": pl.Utf8,
    "epoch": pl.Int64,
    "train_loss": pl.Float64,
    "val_loss": pl.Float64,
    "val_accuracy": pl.Float64,
    "val_f1": pl.Float64,
    "seconds": pl.Float64,
}
# Settings that change only how a checkpoint is used or compared, never its weights.
_NOT_TRAINING = {
    "route_max_changed",  # routing is fitted into an ensemble: its fingerprint has them (training_fingerprint)
    "route_docs",
    "self_distill",  # a distilled checkpoint's fingerprint has it through its pool documents
    "distill_from",  # ... and these two through _distill_fingerprint
    "distill_epochs",
    "infer_batch_size",
    "infer_max_length",
    "chunk_rows",
    "champion_metric",
    "probe_size",
    "kind",
    "champion_tolerance",
    "champion_speedup",
    "champion_ensemble_margin",
    "ensemble_weights",  # fitted into an ensemble: its fingerprint has it (training_fingerprint)
}


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
    current = (
        con.execute("SELECT any_value(probe_params), count(*) FROM students.gold_probe").fetchone() if exists else None
    )
    if current is None or current[0] != params or current[1] == 0:
        run_model(
            con, "students.gold_probe", {"probe_params": params, "probe_seed": cfg.seed, "probe_size": cfg.probe_size}
        )
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
    cfg = settings.student
    run_model(
        con,
        "students.training_examples",
        {"recipe": recipe, "confidence": cfg.confidence, "min_confidence": cfg.min_confidence},
    )
    rows = con.execute(
        "SELECT e.phase, e.doc_id, e.label, e.origin, e.split, c.text, "
        "map_keys(e.label_probs) AS probs_keys, map_values(e.label_probs) AS probs_values "
        "FROM students.training_examples e JOIN raw.corpus c USING (doc_id) ORDER BY e.phase_order, e.ord"
    ).pl()
    task = load_task(settings.task)
    id_of = {lab.name: lab.id for lab in task.labels}
    phases = []
    for name in ("llm", "gold"):
        part = rows.filter(pl.col("phase") == name)
        if part.height:
            probs = [
                None if ks is None else {id_of[k]: v for k, v in zip(ks, vs) if k in id_of}
                for ks, vs in zip(part["probs_keys"].to_list(), part["probs_values"].to_list())
            ]
            phases.append(
                Phase(
                    name,
                    part["text"].to_list(),
                    part["label"].to_list(),
                    part["doc_id"].to_list(),
                    probs=probs if any(probs) else None,
                )
            )
    sizes = {
        f"{r['phase']}_{r['origin']}_{r['split']}": r["n"]
        for r in rows.group_by("phase", "origin", "split").len("n").sort("phase", "origin", "split").to_dicts()
    }
    needed = {"baseline": ["gold"], "llambert": ["llm"], "llambert_extra": ["llm"], "combined": ["llm", "gold"]}[recipe]
    missing = [n for n in needed if n not in {p.name for p in phases}]
    if missing:
        what = {
            "gold": "gold labels in split 'train' of raw.corpus (outside students.gold_probe)",
            "llm": "parsed LLM labels (labeling.parsed_labels)"
            + (
                " of documents in split 'train' (the paper's llambert recipe; use llambert_extra to train on the "
                "extra pool too)"
                if recipe == "llambert"
                else ""
            ),
        }
        raise ConfigError(
            f"setting 'student.recipe': '{recipe}' needs "
            + " and ".join(what[m] for m in missing)
            + ", and there are none. Change student.recipe in llambert.yaml or add the labels."
        )
    return phases, _RECIPE_SOURCE[recipe], sizes


def training_fingerprint(base_identity: str, task: Task, settings: Settings, phases, kind: str = "encoder") -> str:
    """Same kind + base model + training settings + the same (doc_id, label) lists => the same checkpoint."""
    import hashlib

    cfg = {k: v for k, v in settings.student.model_dump().items() if k not in _NOT_TRAINING and k != "model"}
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "base": base_identity,
                "task": task.name,
                "task_version": task.version,
                "label_ids": task.label_ids,
                "config": cfg,
            },
            sort_keys=True,
        ).encode()
    )
    if kind != "encoder":  # encoder fingerprints stay those of the checkpoints made before the family existed
        h.update(f"\x1dkind={kind}".encode())
    if kind.endswith("ensemble") and settings.student.route_max_changed:  # the routing is saved in the ensemble
        h.update(f"\x1droute={settings.student.route_max_changed}/{settings.student.route_docs}".encode())
    if kind.endswith("ensemble") and settings.student.ensemble_weights != "fitted":  # (fitted: the old weights)
        h.update(f"\x1dweights={settings.student.ensemble_weights}".encode())
    for p in phases:
        h.update(f"\x1e{p.name}\x1f".encode())
        for d, y in zip(p.doc_ids, p.labels):
            h.update(f"{d}:{y}\x1f".encode())
    return h.hexdigest()


def _open_predictor(settings: Settings, path: str | Path):
    from llambert.student.predict import load_predictor

    cfg = settings.student
    return load_predictor(
        path,
        cfg.infer_max_length,
        cfg.infer_batch_size,
        cfg.truncation,
        bf16=resolve_bf16(cfg.bf16),
        threads=settings.threads,
    )


def judge_candidate(con: duckdb.DuckDBPyConnection, settings: Settings, path: str | Path, val=None) -> dict | None:
    """Score a student folder on students.gold_probe: accuracy, macro-F1, docs/s, predicted shares.

    ``min_share_ratio`` is the smallest (predicted share / true share) over the classes, add-one smoothed
    so a tiny judge set cannot call a student collapsed on one document: near 0 when the student (almost)
    never predicts a class that the probe holds, i.e. it collapsed. Without a gold
    probe the held-out teacher labels ``val`` (a Phase) are the judge; None when neither exists.
    """
    from llambert.metrics import classification_metrics, min_share_ratio

    probe = con.execute(
        "SELECT g.doc_id, g.gold_label, c.text FROM students.gold_probe g JOIN raw.corpus c USING (doc_id) ORDER BY g.doc_id"
    ).pl()
    if probe.height:
        texts, truth, prefix = probe["text"].to_list(), probe["gold_label"].to_list(), "probe_"
    elif val is not None and val.texts:
        texts, truth, prefix = val.texts, list(val.labels), "val_"
    else:
        return None
    task = load_task(settings.task)
    pred = _open_predictor(settings, path)
    t0 = time.perf_counter()
    labels, _ = pred.predict(texts)
    seconds = time.perf_counter() - t0
    m = classification_metrics(truth, labels, task.label_ids)
    pred_share = {lid: labels.count(lid) / len(labels) for lid in task.label_ids}
    ratio = min_share_ratio(truth, labels, task.label_ids)
    out = {
        f"{prefix}accuracy": m["accuracy"],
        f"{prefix}f1": m["macro_f1"],
        "docs_per_s": len(texts) / seconds if seconds > 0 else None,
        "min_share_ratio": ratio,
        "pred_shares": {task.label_by_id(k).name: round(v, 4) for k, v in pred_share.items()},
    }
    if prefix == "probe_":
        out["probe_n"] = probe.height
    return out


def score_on_probe(con: duckdb.DuckDBPyConnection, settings: Settings, path: str | Path) -> dict | None:
    """Accuracy / macro-F1 / docs/s / predicted shares of a checkpoint on students.gold_probe (None without one)."""
    scored = judge_candidate(con, settings, path)
    return scored if scored and "probe_n" in scored else None


def train_checkpoint(con: duckdb.DuckDBPyConnection, settings: Settings) -> TrainResult:
    """Train the student family for the configured recipe (linear floor, encoder, ensemble: ``student.kind``),
    reusing any member whose exact training was done before; judge each on the gold probe; pick the champion.

    Returns the figures of the main member (the encoder, or the floor for ``kind: linear``) with every
    candidate under ``candidates`` and the champion's id and reason.
    """
    from llambert.student.family import (
        LINEAR_KINDS,
        Trained,
        build_ensemble,
        distill_source,
        distill_start,
        kinds_for,
        pseudo_phase,
        split_phases,
        train_linear,
        with_pseudo,
    )
    from llambert.student.train import train_student

    t0 = time.perf_counter()
    task = load_task(settings.task)
    cfg = settings.student
    phases, label_source, sizes = training_phases(con, settings)
    probe = ensure_gold_probe(con, settings)
    kinds = kinds_for(cfg)
    base_identity, base_path = "tfidf-logreg", None
    if "encoder" in kinds:
        from llambert.models import resolve_model

        base = resolve_model(cfg.model, settings.models_dir, role="student")
        base_identity, base_path = base.identity, base.path
    train_phases, val = split_phases(phases, cfg)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    members: dict[str, Trained] = {}
    rows: dict[str, dict] = {}
    fingerprints: dict[str, str] = {}
    distill_pool = route_texts = distilled_pseudo = None
    for kind in kinds:
        fingerprint = training_fingerprint(base_identity, task, settings, phases, kind)
        if kind.startswith("distilled"):  # taught by a first-generation member on these pool documents
            if distill_pool is None:
                distill_pool = distill_pool_docs(con, cfg.self_distill)
                if distill_pool.is_empty():
                    emit(
                        "self-distillation skipped: every pool document was sampled or is in the gold probe "
                        "(student.self_distill needs unlabeled pool documents: a larger corpus or a smaller sample)"
                    )
            if distill_pool.is_empty():
                continue
            start = (  # where the distilled encoder starts (the linear model always starts from nothing)
                [cfg.distill_from, str(cfg.distill_epochs), fingerprints["encoder"]]
                if cfg.distill_from == "encoder" and kind != "distilled_linear"
                else []
            )
            fingerprint = _distill_fingerprint(
                fingerprint, fingerprints[distill_source(kinds)], distill_pool["doc_id"].to_list(), start
            )
        fingerprints[kind] = fingerprint
        prior = con.execute(
            "SELECT checkpoint_id, path, n_train, n_val, metrics, probe_set, train_seconds FROM students.checkpoints "
            "WHERE fingerprint = ? ORDER BY created_at DESC",
            [fingerprint],
        ).fetchall()
        prior = next((r for r in prior if Path(r[1]).is_dir()), None)
        if prior is not None:
            cid, out = prior[0], Path(prior[1])
            if prior[5] != probe["probe_set"]:  # the probe was rebuilt (other settings): score on the new one
                _store_probe_score(con, cid, probe, score_on_probe(con, settings, out))
            m = json.loads(prior[4])
            members[kind] = Trained(kind, out, prior[2], prior[3], m, prior[6])
            rows[kind] = {
                "checkpoint_id": cid,
                "kind": kind,
                "path": str(out),
                "reused": True,
                "fingerprint": fingerprint[:16],
                "n_train": prior[2],
                "n_val": prior[3],
                "history": [],
                **{k: v for k, v in m.items() if k.startswith(("val_", "probe_", "docs_"))},
            }
            continue
        checkpoint_id = f"{stamp}-{kind}"
        out = settings.checkpoints_dir / checkpoint_id
        pseudo = None
        if kind == "linear":
            trained = train_linear(train_phases, val, task.label_ids, cfg, out)
        elif kind == "distilled_linear":  # the floor's model on the distilled encoder's examples
            pseudo = distilled_pseudo
            if pseudo is None:  # the distilled encoder was reused: what it learned from is in the warehouse
                pseudo = _load_distill_labels(con, task, rows["distilled"]["checkpoint_id"], distill_pool)
            trained = train_linear(with_pseudo(train_phases, pseudo), val, task.label_ids, cfg, out, kind)
        elif kind in ("encoder", "distilled"):
            fit_on = train_phases
            if kind == "distilled":
                source = distill_source(kinds)
                emit(
                    f"self-distillation: the {source} labels {distill_pool.height:,} pool documents the teacher never saw"
                )
                pseudo = pseudo_phase(
                    _open_predictor(settings, members[source].path),
                    distill_pool["doc_id"].to_list(),
                    distill_pool["text"].to_list(),
                    task.label_ids,
                )
                fit_on = with_pseudo(train_phases, pseudo)
                distilled_pseudo = pseudo
            start_path, train_cfg = (
                distill_start(cfg, str(base_path), members["encoder"].path)
                if kind == "distilled"
                else (str(base_path), cfg)
            )
            card = {
                "title": f"llambert student for {task.name}",
                "task": task.name,
                "labels": ", ".join(task.label_names),
                "base model": base_identity,
                "recipe": cfg.recipe,
                "label source": label_source,
                "training data": ", ".join(f"{k}: {v}" for k, v in sizes.items()),
                "checkpoint": checkpoint_id,
                "fingerprint": fingerprint,
            }
            if pseudo is not None:
                card["self-distillation"] = (
                    f"plus {len(pseudo.texts)} pool documents soft-labeled by checkpoint "
                    f"{rows[distill_source(kinds)]['checkpoint_id']} (students.distill_labels)"
                )
                if cfg.distill_from == "encoder":
                    card["self-distillation"] += (
                        f"; continued from checkpoint {rows['encoder']['checkpoint_id']} for {cfg.distill_epochs} epoch(s)"
                    )
            r = train_student(
                start_path,
                task.label_names,
                task.label_ids,
                fit_on,
                train_cfg,
                out,
                val=val,
                model_card=card,
                threads=settings.threads,
            )
            trained = Trained(
                kind,
                out,
                r.n_train,
                r.n_val,
                dict(r.metrics),
                r.seconds,
                r.history,
                r.train_examples_per_s,
                r.best_epoch,
            )
        else:
            encoder = "distilled" if kind == "distilled_ensemble" else "encoder"
            if route_texts is None and cfg.route_max_changed and cfg.route_docs:  # unlabeled pool documents
                # to fit the routing on, after self-distillation's: the distilled encoder trained on those
                skip = cfg.self_distill if "distilled" in kinds else 0
                route_texts = distill_pool_docs(con, skip + cfg.route_docs)["text"].to_list()[skip:]
            linear = "distilled_linear" if kind == "distilled_ensemble" and "distilled_linear" in members else "linear"
            trained = build_ensemble(
                [members[encoder], members[linear]],
                val,
                task.label_ids,
                cfg,
                out,
                threads=settings.threads,
                route_texts=route_texts,
            )
            trained.kind = kind
        members[kind] = trained
        m = dict(trained.metrics)
        scored = judge_candidate(con, settings, out, val)
        if scored:
            m |= scored
            if kind in ("encoder", "distilled") and "probe_n" in scored:
                from llambert.student.train import append_to_model_card

                append_to_model_card(
                    out,
                    {
                        "gold probe accuracy": f"{scored['probe_accuracy']:.4f} on "
                        f"{scored['probe_n']} held-out gold train documents",
                        "gold probe macro-F1": f"{scored['probe_f1']:.4f}",
                    },
                )
        data_sizes = sizes | {"train": trained.n_train, "val": trained.n_val, "probe": probe["n"]}
        if kind.startswith("distilled"):
            data_sizes["distilled"] = distill_pool.height
        on_probe = bool(scored and "probe_n" in scored)
        row = {
            "checkpoint_id": checkpoint_id,
            "task": task.name,
            "base_model": "tfidf-logreg" if kind in LINEAR_KINDS else base_identity,
            "recipe": cfg.recipe,
            "label_source": label_source,
            "n_train": trained.n_train,
            "n_val": trained.n_val,
            "training_config": json.dumps(cfg.model_dump()),
            "metrics": json.dumps(m | {"train_examples_per_s": trained.train_examples_per_s}, default=str),
            "val_accuracy": m.get("val_accuracy"),
            "val_f1": m.get("val_f1"),
            "path": str(out),
            "train_seconds": trained.seconds,
            "fingerprint": fingerprint,
            "data_sizes": json.dumps(data_sizes),
            "probe_set": probe["probe_set"] if on_probe else None,
            "probe_n": m.get("probe_n"),
            "probe_accuracy": m.get("probe_accuracy"),
            "probe_f1": m.get("probe_f1"),
            "kind": kind,
            "docs_per_s": m.get("docs_per_s"),
            "min_share_ratio": m.get("min_share_ratio"),
        }
        run_model(
            con,
            "students.checkpoints",
            frames={"staged_checkpoints": pl.DataFrame([row], schema=_CHECKPOINT)},
            atomic=False,
        )
        if pseudo is not None:
            source_id = rows[distill_source(kinds)]["checkpoint_id"]
            _store_distill_labels(con, task, checkpoint_id, source_id, distill_pool, pseudo)
        if trained.history:
            log = pl.DataFrame(
                [
                    {
                        "checkpoint_id": checkpoint_id,
                        "epoch": r["epoch"],
                        "train_loss": r["train_loss"],
                        "val_loss": r.get("val_loss"),
                        "val_accuracy": r.get("val_accuracy"),
                        "val_f1": r.get("val_f1"),
                        "seconds": r["seconds"],
                    }
                    for r in trained.history
                ],
                schema=_TRAINING_LOG,
            )
            run_model(con, "students.training_log", frames={"staged_training_log": log}, atomic=False)
        rows[kind] = {
            "checkpoint_id": checkpoint_id,
            "kind": kind,
            "path": str(out),
            "reused": False,
            "fingerprint": fingerprint[:16],
            "n_train": trained.n_train,
            "n_val": trained.n_val,
            "history": trained.history,
            "best_epoch": trained.best_epoch,
            "train_examples_per_s": round(trained.train_examples_per_s, 2),
            **{k: v for k, v in m.items() if k.startswith(("val_", "probe_", "docs_", "min_share"))},
        }
    try:
        champion = choose_champion(con, settings)
    except NoEligibleStudent as exc:  # recorded; the blocking `champion` contract stops the run and says why
        champion = {"checkpoint_id": None, "kind": None, "reason": str(exc)}
    main = rows["encoder" if "encoder" in rows else "linear"]
    fixed = {
        "checkpoint_id",
        "kind",
        "path",
        "reused",
        "fingerprint",
        "n_train",
        "n_val",
        "history",
        "best_epoch",
        "train_examples_per_s",
    }
    stats = TrainResult(
        checkpoint_id=main["checkpoint_id"],
        kind=main["kind"],
        path=main["path"],
        reused=all(r["reused"] for r in rows.values()),
        fingerprint=main["fingerprint"],
        n_train=main["n_train"],
        n_val=main["n_val"],
        recipe=cfg.recipe,
        label_source=label_source,
        student_kind=cfg.kind,
        champion=champion["checkpoint_id"],
        champion_kind=champion["kind"],
        is_champion=champion["checkpoint_id"] == main["checkpoint_id"],
        champion_reason=champion["reason"],
        best_epoch=main.get("best_epoch"),
        train_examples_per_s=main.get("train_examples_per_s"),
        scores={k: v for k, v in main.items() if k not in fixed},
        history=main["history"],
        candidates=[{k: v for k, v in r.items() if k != "history"} for r in rows.values()],
    )
    n_trained = sum(r["n_train"] for r in rows.values() if not r["reused"])
    details = {k: v for k, v in stats.as_dict().items() if k not in ("history", "scores")} | stats.scores
    record_stage(con, "train", None, n_trained, time.perf_counter() - t0, details)
    return stats


def distill_pool_docs(con: duckdb.DuckDBPyConnection, n: int) -> pl.DataFrame:
    """The first ``n`` pool documents (seeded order) that are neither sampled nor in the gold probe
    (sql/students/distill_labels.sql, section pool): doc_id, pool_rank, text. Self-distillation labels
    them; routing fits its threshold on them."""
    set_variables(con, {"distill_n": n})
    return con.execute(model_sql("students.distill_labels", "pool")).pl()


def _distill_fingerprint(own: str, source: str, doc_ids: list[str], start: list[str] | None = None) -> str:
    """A distilled student is the same only with the same teacher checkpoint and the same pool documents
    (and, continued from the first encoder, the same encoder and epochs: ``start``)."""
    import hashlib

    h = hashlib.sha256("\x1d".join([own, source, *(start or [])]).encode())
    for d in doc_ids:
        h.update(f"\x1f{d}".encode())
    return h.hexdigest()


def _store_distill_labels(
    con: duckdb.DuckDBPyConnection, task: Task, checkpoint_id: str, source_id: str, pool: pl.DataFrame, pseudo
) -> None:
    """What the distilled student learned from besides the teacher: one row per pseudo-labeled document."""
    frame = pl.DataFrame(
        {
            "checkpoint_id": [checkpoint_id] * pool.height,
            "source_checkpoint_id": [source_id] * pool.height,
            "doc_id": pool["doc_id"],
            "pool_rank": pool["pool_rank"],
            "label": pseudo.labels,
            "label_probs_json": [json.dumps({task.label_by_id(k).name: v for k, v in p.items()}) for p in pseudo.probs],
        },
        schema={
            "checkpoint_id": pl.Utf8,
            "source_checkpoint_id": pl.Utf8,
            "doc_id": pl.Utf8,
            "pool_rank": pl.Int64,
            "label": pl.Int32,
            "label_probs_json": pl.Utf8,
        },
    )
    run_model(con, "students.distill_labels", frames={"staged_distill_labels": frame}, atomic=False)


def _load_distill_labels(con: duckdb.DuckDBPyConnection, task: Task, checkpoint_id: str, pool: pl.DataFrame):
    """The pseudo-labels a reused distilled checkpoint trained on (students.distill_labels), as a Phase in
    ``pool``'s order, so a new member can learn from them without labeling the pool again."""
    from llambert.student.train import Phase

    rows = con.execute(
        "SELECT doc_id, label, label_probs FROM students.distill_labels WHERE checkpoint_id = ?", [checkpoint_id]
    ).fetchall()
    by_doc = {d: (int(lab), probs) for d, lab, probs in rows}
    missing = [d for d in pool["doc_id"].to_list() if d not in by_doc]
    if missing:
        raise RuntimeError(
            f"students.distill_labels has no pseudo-label of checkpoint {checkpoint_id} for {len(missing)} of the "
            f"{pool.height} pool documents (first: {missing[0]}): delete that checkpoint's row from "
            "students.checkpoints (or its folder) and run again, so self-distillation labels the pool anew"
        )
    ids = {lab.name: lab.id for lab in task.labels}
    docs, texts = pool["doc_id"].to_list(), pool["text"].to_list()
    return Phase(
        "distilled",
        texts,
        [by_doc[d][0] for d in docs],
        docs,
        probs=[{ids[k]: float(v) for k, v in dict(by_doc[d][1]).items()} for d in docs],
    )


def _store_probe_score(con: duckdb.DuckDBPyConnection, checkpoint_id: str, probe: dict, scored: dict | None) -> None:
    if scored:
        frame = pl.DataFrame(
            [
                {
                    "checkpoint_id": checkpoint_id,
                    "probe_set": probe["probe_set"],
                    "probe_n": scored["probe_n"],
                    "probe_accuracy": scored["probe_accuracy"],
                    "probe_f1": scored["probe_f1"],
                    "docs_per_s": scored.get("docs_per_s"),
                    "min_share_ratio": scored.get("min_share_ratio"),
                }
            ],
            schema={
                k: _CHECKPOINT[k]
                for k in (
                    "checkpoint_id",
                    "probe_set",
                    "probe_n",
                    "probe_accuracy",
                    "probe_f1",
                    "docs_per_s",
                    "min_share_ratio",
                )
            },
        )
        run_model(
            con, "students.checkpoints", section="probe_score", frames={"staged_probe_scores": frame}, atomic=False
        )


def candidate_summary(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The newest training run's candidates (one per kind) with their judge-set scores and verdicts."""
    return con.execute(
        "WITH newest AS (SELECT DISTINCT ON (kind) * FROM students.candidates ORDER BY kind, created_at DESC) "
        "SELECT n.kind, coalesce(k.probe_accuracy, k.val_accuracy) AS accuracy, coalesce(k.probe_f1, k.val_f1) AS f1, "
        "n.docs_per_s, n.verdict, "
        "n.checkpoint_id = (SELECT checkpoint_id FROM students.champion) AS champion, "
        "CASE WHEN k.probe_n IS NOT NULL THEN format('the gold probe ({} documents)', k.probe_n) "
        "ELSE 'held-out teacher labels (no gold probe)' END AS judge "
        "FROM newest n JOIN students.checkpoints k USING (checkpoint_id) "
        "ORDER BY CASE n.kind WHEN 'distilled_ensemble' THEN 1 WHEN 'distilled' THEN 2 WHEN 'distilled_linear' THEN 3 "
        "WHEN 'ensemble' THEN 4 WHEN 'encoder' THEN 5 ELSE 6 END"
    ).pl()


class NothingParsed(RuntimeError):
    """Every teacher answer so far was discarded: asking for more would waste the calls."""


class NoEligibleStudent(LookupError):
    """Every student collapsed to (nearly) one class or scored below the linear floor."""


def choose_champion(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict:
    """Rebuild students.champion by the champion rule (sql/students/champion.sql, README "Students").

    probe_* metrics compare checkpoints on the same gold documents; without a gold probe (a corpus
    with no gold train labels) the val_* counterpart is used, and the reason says so. Raises
    :class:`NoEligibleStudent` when no candidate may label the corpus: a collapsed student never does.
    """
    cfg = settings.student
    metric = cfg.champion_metric
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
                [task, probe_set],
            ).fetchall():
                if Path(path).is_dir():
                    _store_probe_score(con, cid, probe, score_on_probe(con, settings, path))
    run_model(
        con,
        "students.candidates",
        {
            "champion_metric": metric,
            "task": task,
            "probe_set": probe_set,
            "champion_tolerance": cfg.champion_tolerance,
            "champion_speedup": cfg.champion_speedup,
            "champion_ensemble_margin": cfg.champion_ensemble_margin,
            "collapse_ratio": settings.checks.collapse_ratio,
        },
    )
    run_model(con, "students.champion")
    return current_champion(con)


def current_champion(con: duckdb.DuckDBPyConnection) -> dict:
    """students.champion as :func:`choose_champion` last wrote it (read, never rebuilt).

    Raises :class:`LookupError` when no student was trained yet and :class:`NoEligibleStudent` when the
    last choice found no eligible candidate (the reason names each candidate's verdict).
    """
    from llambert.warehouse import table_exists

    if not table_exists(con, "students.champion"):
        raise LookupError("no student checkpoint for this task yet: materialize students.checkpoints first")
    row = con.execute("SELECT checkpoint_id, path, reason, metric, score, kind FROM students.champion").fetchone()
    if row is None:
        n, rejected = con.execute(
            "SELECT count(*), string_agg(format('{} [{}]: {}', checkpoint_id, kind, verdict), '; ') "
            "FROM students.candidates"
        ).fetchone()
        if not n:
            raise LookupError("no student checkpoint for this task yet: materialize students.checkpoints first")
        raise NoEligibleStudent(
            f"no student may label the corpus: all {n} candidates were rejected ({rejected}). A collapsed student "
            "predicts (nearly) one class: check labeling.parsed_labels' balance (the teacher may answer one label), "
            "raise sample.size, or set student.class_weight: balanced; a student below the linear floor is worse "
            "than TF-IDF on the same labels: use student.kind: linear. (checks.collapse_ratio sets the bound.)"
        )
    return {
        "checkpoint_id": row[0],
        "path": row[1],
        "reason": row[2],
        "metric": row[3],
        "score": row[4],
        "kind": row[5],
    }


# -- 6. predictions.labels --------------------------------------------------------------------
def predict_batch(
    con: duckdb.DuckDBPyConnection | Warehouse, settings: Settings, batch: str = INITIAL_BATCH, replace: bool = False
) -> PredictResult:
    """Label every document of a batch that has no prediction from the champion yet.

    ``inference.engine`` local (:func:`_predict_local`) or ray (:mod:`llambert.ray_engine`); rows land
    as ``predictions.storage`` says (:mod:`llambert.predictions_store`). Given a
    :class:`~llambert.warehouse.Warehouse`, no connection is open while the student predicts, so
    readers get in between writes.
    """
    from llambert import predictions_store

    session = sessions(con)
    t0 = time.perf_counter()

    with session(prepare=True) as c:
        predictions_store.prepare(c, settings)
        champ = current_champion(c)  # chosen by the training step (students.champion), read here
        cid = champ["checkpoint_id"]
        if replace:
            predictions_store.delete(c, settings, batch, cid)
    if settings.inference.engine == "ray":
        from llambert.ray_engine import label_with_ray

        extra = label_with_ray(session, settings, batch, cid, champ["path"])
        done = extra.pop("predicted_now")
    else:
        extra = {"engine": "local"}
        done = _predict_local(session, settings, batch, cid, champ["path"], stats=extra)
    seconds = time.perf_counter() - t0
    engine = extra.pop("engine")
    with session() as c:
        rows = c.execute(
            "SELECT count(*) FROM predictions.labels WHERE batch = ? AND checkpoint_id = ?", [batch, cid]
        ).fetchone()[0]
        stats = PredictResult(
            batch=batch,
            checkpoint_id=cid,
            predicted_now=done,
            docs_per_s=round(done / seconds, 2) if done else None,
            rows=rows,
            engine=engine,
            details=extra,
        )
        record_stage(
            c, "predict", batch, done, seconds, {k: v for k, v in stats.as_dict().items() if k != "details"} | extra
        )
    return stats


def _predict_local(session, settings: Settings, batch: str, cid: str, path: str, stats: dict | None = None) -> int:
    """inference.engine local: chunks of ``student.chunk_rows`` documents, each committed with the next
    chunk's texts read in the same short session (no connection open while the student predicts).
    ``stats`` gets ``routed_to_floor``: documents a routed ensemble left to its linear floor."""
    from llambert import predictions_store
    from llambert.progress import progress

    cfg = settings.student
    with session() as c:
        # A pending-id snapshot (in memory, not a temp table: the connection closes between chunks), so
        # chunks are stable while we insert.
        pending_ids = [
            r[0]
            for r in c.execute(
                "SELECT doc_id FROM raw.corpus c WHERE c.batch = ? AND NOT EXISTS "
                "(SELECT 1 FROM predictions.labels p WHERE p.doc_id = c.doc_id AND p.checkpoint_id = ?) ORDER BY doc_id",
                [batch, cid],
            ).fetchall()
        ]
    pending = len(pending_ids)
    starts = list(range(0, pending, cfg.chunk_rows))

    def read_chunk(c, start: int) -> pl.DataFrame:
        ids = pl.DataFrame({"doc_id": pending_ids[start : start + cfg.chunk_rows]}, schema={"doc_id": pl.Utf8})
        c.register("chunk_ids", ids)
        try:
            return c.execute(
                "SELECT i.doc_id, c.text FROM chunk_ids i JOIN raw.corpus c USING (doc_id) ORDER BY i.doc_id"
            ).pl()
        finally:
            c.unregister("chunk_ids")

    done = 0
    if not pending:
        return 0
    predictor = _open_predictor(settings, path)
    with session() as c:
        chunk = read_chunk(c, 0)
    run = time.strftime("%Y%m%dT%H%M%S")
    with progress(pending, f"student labels batch {batch}", "doc") as bar:
        for i, start in enumerate(starts):
            out = predictor.predict_frame(chunk).with_columns(batch=pl.lit(batch), checkpoint_id=pl.lit(cid))
            with session() as c:
                predictions_store.write_frame(c, settings, out, f"{run}-{start:09d}")
                chunk = read_chunk(c, starts[i + 1]) if i + 1 < len(starts) else None
            done += out.height
            bar.update(out.height)
    if stats is not None and getattr(predictor, "route_threshold", 0):
        stats["routed_to_floor"] = predictor.routed
        stats["routed_share"] = round(predictor.routed / max(predictor.seen, 1), 4)
    return done


# -- 7. evaluation.report ---------------------------------------------------------------------
def build_report(con: duckdb.DuckDBPyConnection, settings: Settings) -> pl.DataFrame:
    from llambert.teacher.accounting import project_costs

    current_champion(con)  # the report compares the champion: none yet, or none eligible, says why
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
