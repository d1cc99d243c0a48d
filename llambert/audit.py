"""The per-batch LLM audit: does the student still agree with the teacher on new reviews?

After the champion labels a new batch, its ``k`` least confident documents go to the teacher
(answers are cached in labeling.llm_cache, so a re-run pays nothing). The teacher's answers are
parsed with the task's parser (the very SQL of ``sql/labeling/answer_matches.sql``), stored in
``labeling.audit_labels`` -- parsed ones join the student's training pool -- and the batch's
agreement lands in ``labeling.audit_runs``. A retrain is requested (``students.retrain_requests``)
when enough audit labels are newer than the champion, or agreement falls below the bound.
"""

from __future__ import annotations

import time

import duckdb
import polars as pl

from llambert.config import Settings
from llambert.pipeline import INITIAL_BATCH, current_champion, record_stage, write_task_labels
from llambert.results import AuditResult
from llambert.tasks import load_task
from llambert.warehouse import model_path, transaction

_PARSER_VIEW = "CREATE OR REPLACE VIEW labeling.answer_matches"
_PARSER_SOURCE = "FROM labeling.llm_responses"


def _parse_answers(con: duckdb.DuckDBPyConnection, answers: str) -> None:
    """Create temp view ``audit_answer_matches`` over table ``answers`` with the project's parser.

    The parser stays in one place (answer_matches.sql); only its input table is swapped.
    """
    sql = model_path("labeling.answer_matches").read_text()
    if _PARSER_VIEW not in sql or _PARSER_SOURCE not in sql:
        raise RuntimeError(
            f"sql/labeling/answer_matches.sql no longer starts with '{_PARSER_VIEW}' or reads '{_PARSER_SOURCE}': "
            "update llambert/audit.py::_parse_answers to match it"
        )
    sql = sql.replace(_PARSER_VIEW, "CREATE OR REPLACE TEMP VIEW audit_answer_matches").replace(
        _PARSER_SOURCE, f"FROM {answers}")
    con.execute(sql)


def least_confident(con: duckdb.DuckDBPyConnection, batch: str, checkpoint_id: str, k: int) -> pl.DataFrame:
    """The champion's k least confident documents of a batch (ties broken by doc_id, so stable)."""
    return con.execute(
        "SELECT p.doc_id, c.text, p.label AS student_label, p.probability AS student_probability "
        "FROM predictions.labels p JOIN raw.corpus c USING (doc_id) "
        "WHERE p.batch = ? AND p.checkpoint_id = ? ORDER BY p.probability ASC, p.doc_id LIMIT ?",
        [batch, checkpoint_id, k],
    ).pl()


def new_labels_since_training(con: duckdb.DuckDBPyConnection) -> int:
    """Parsed audit labels that no checkpoint was trained on yet (audited after the newest one)."""
    return int(con.execute(
        "SELECT count(*) FROM labeling.audit_labels WHERE label IS NOT NULL AND audited_at > "
        "coalesce((SELECT max(created_at) FROM students.checkpoints), TIMESTAMP '1970-01-01')"
    ).fetchone()[0])


def retrain_reason(settings: Settings, new_labels: int, parsed: int, agreement: float | None) -> str | None:
    """The configured policy: why a retrain is wanted now, or None."""
    cfg = settings.audit
    if new_labels >= cfg.retrain_min_new_labels:
        return f"{new_labels} audit labels newer than the last training (>= {cfg.retrain_min_new_labels})"
    if agreement is not None and parsed >= cfg.min_audited_for_agreement and agreement < cfg.retrain_min_agreement:
        return f"agreement {agreement:.3f} on {parsed} audited documents < {cfg.retrain_min_agreement}"
    return None


def audit_batch(con: duckdb.DuckDBPyConnection, settings: Settings, batch: str, backend=None) -> AuditResult:
    """Audit one batch (if the configuration asks for it); returns figures for metadata."""
    cfg = settings.audit
    if not cfg.enabled:
        return AuditResult(batch, skipped="audit.enabled is false")
    if batch == INITIAL_BATCH and not cfg.audit_initial:
        return AuditResult(batch, skipped="the initial batch is labeled through the LLM sample (audit.audit_initial)")
    from llambert.pipeline import teacher_variables
    from llambert.teacher import make_teacher
    from llambert.teacher.runner import label_documents

    t0 = time.perf_counter()
    task = load_task(settings.task)
    cid = current_champion(con)["checkpoint_id"]  # chosen by the training step
    docs = least_confident(con, batch, cid, cfg.k)
    if docs.height == 0:
        con.execute("DELETE FROM labeling.audit_labels WHERE batch = ?", [batch])
        con.execute("DELETE FROM labeling.audit_runs WHERE batch = ?", [batch])
        return AuditResult(batch, skipped="no document of this batch has a champion prediction (nothing new in it?)")
    own = backend is None
    backend = backend or make_teacher(settings, task)
    try:
        run = label_documents(con, backend, docs.select("doc_id", "text"), task.version,
                              batch_size=settings.teacher.resolved_batch_size(), commit_every=settings.teacher.commit_every)
        variables = teacher_variables(backend, task)
    finally:
        if own:
            backend.close()
    write_task_labels(con, task)
    con.register("audit_docs", docs.drop("text"))
    try:
        con.execute(
            """CREATE OR REPLACE TEMP TABLE audit_answers AS
               SELECT d.doc_id, c.raw_text, c.label_probs
               FROM audit_docs d
               JOIN labeling.llm_requests q ON q.doc_id = d.doc_id AND q.model_identity = $model_identity
                    AND q.prompt_version = $prompt_version AND q.decoding = $decoding
               JOIN labeling.llm_cache c USING (cache_key)
               QUALIFY row_number() OVER (PARTITION BY d.doc_id ORDER BY c.created_at) = 1""",
            variables,
        )
        _parse_answers(con, "audit_answers")
        with transaction(con):
            con.execute("DELETE FROM labeling.audit_labels WHERE batch = ?", [batch])
            con.execute(
                """INSERT INTO labeling.audit_labels (batch, doc_id, checkpoint_id, student_label, student_probability,
                       model_identity, prompt_version, raw_text, label, label_name, discard_reason)
                   SELECT $batch, d.doc_id, $cid, d.student_label, d.student_probability, $model_identity,
                          $prompt_version, m.raw_text, m.label, m.label_name, m.discard_reason
                   FROM audit_docs d JOIN audit_answer_matches m USING (doc_id)""",
                {"batch": batch, "cid": cid, "model_identity": variables["model_identity"],
                 "prompt_version": variables["prompt_version"]},
            )
            audited, parsed, agreed = con.execute(
                "SELECT count(*), count(label), count(*) FILTER (WHERE label = student_label) "
                "FROM labeling.audit_labels WHERE batch = ?", [batch]).fetchone()
            agreement = agreed / parsed if parsed else None
            new_labels = new_labels_since_training(con)
            reason = retrain_reason(settings, new_labels, parsed, agreement)
            if reason:
                con.execute(
                    "INSERT OR REPLACE INTO students.retrain_requests (checkpoint_id, batch, reason, new_labels, "
                    "agreement, requested_at) VALUES (?, ?, ?, ?, ?, current_timestamp)",
                    [cid, batch, reason, new_labels, agreement])
            else:  # a re-run that no longer warrants it withdraws this batch's request
                con.execute("DELETE FROM students.retrain_requests WHERE checkpoint_id = ? AND batch = ?", [cid, batch])
            seconds = time.perf_counter() - t0
            con.execute(
                "INSERT OR REPLACE INTO labeling.audit_runs (batch, checkpoint_id, model_identity, k, audited, parsed, "
                "agreed, agreement, teacher_prompts, teacher_cached, retrain_requested, seconds, audited_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp)",
                [batch, cid, variables["model_identity"], cfg.k, audited, parsed, agreed, agreement, run.prompts,
                 run.cached, reason is not None, seconds])
    finally:
        con.unregister("audit_docs")
        con.execute("DROP VIEW IF EXISTS audit_answer_matches")
        con.execute("DROP TABLE IF EXISTS audit_answers")
    stats = AuditResult(batch, checkpoint_id=cid, k=cfg.k, audited=audited, parsed=parsed, agreed=agreed,
                        agreement=agreement, teacher_prompts=run.prompts, teacher_cached=run.cached,
                        new_labels_since_training=new_labels, retrain_requested=reason is not None,
                        retrain_reason=reason)
    record_stage(con, "audit", batch, audited, seconds, {k: v for k, v in stats.as_dict().items() if k != "skipped"},
                 run.run_id)
    return stats


def open_retrain_requests(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Requests no checkpoint has answered yet (none was trained after them)."""
    return con.execute(
        "SELECT r.* FROM students.retrain_requests r WHERE NOT EXISTS "
        "(SELECT 1 FROM students.checkpoints c WHERE c.created_at > r.requested_at) ORDER BY r.requested_at"
    ).pl()
