"""The per-batch LLM audit: does the student still agree with the teacher on new reviews?

After the champion labels a new batch, its ``k`` least confident documents go to the teacher
(answers are cached in labeling.llm_cache, so a re-run pays nothing). The teacher's answers are
parsed with the task's parser (the table macro ``labeling.parse_answers`` of
``sql/labeling/answer_matches.sql``, the one the sample's labels go through), stored in
``labeling.audit_labels`` -- parsed ones join the student's training pool -- and the batch's
agreement lands in ``labeling.audit_runs``. A retrain is requested (``students.retrain_requests``)
when enough audit labels are newer than the champion, or agreement falls below the bound.
"""

from __future__ import annotations

import time

import duckdb
import polars as pl

from llambert.config import Settings
from llambert.hardware import resolve_device
from llambert.pipeline import INITIAL_BATCH, current_champion
from llambert.results import AuditResult
from llambert.tasks import load_task
from llambert.warehouse import record_stage, run_model, transaction, write_task_labels


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
    return int(
        con.execute(
            "SELECT count(*) FROM labeling.audit_labels WHERE label IS NOT NULL AND audited_at > "
            "coalesce((SELECT max(created_at) FROM students.checkpoints), TIMESTAMP '1970-01-01')"
        ).fetchone()[0]
    )


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
        with transaction(con):
            for table in ("labeling.audit_labels", "labeling.audit_runs"):
                run_model(con, table, {"batch": batch}, section="clear", atomic=False)
        return AuditResult(batch, skipped="no document of this batch has a champion prediction (nothing new in it?)")
    own = backend is None
    backend = backend or make_teacher(settings, task)
    try:
        run = label_documents(
            con,
            backend,
            docs.select("doc_id", "text"),
            task.version,
            batch_size=settings.teacher.resolved_batch_size(resolve_device(settings.teacher.device)),
            commit_every=settings.teacher.commit_every,
        )
        variables = teacher_variables(backend, task)
    finally:
        if own:
            backend.close()
    write_task_labels(con, task)
    run_model(con, "labeling.answer_matches")  # the parser, labeling.parse_answers, as the task now defines it
    with transaction(con):
        run_model(
            con,
            "labeling.audit_labels",
            {"batch": batch, "checkpoint_id": cid, **variables},
            frames={"staged_audit_docs": docs.drop("text")},
            atomic=False,
        )
        audited, parsed, agreed = con.execute(
            "SELECT count(*), count(label), count(*) FILTER (WHERE label = student_label) "
            "FROM labeling.audit_labels WHERE batch = ?",
            [batch],
        ).fetchone()
        agreement = agreed / parsed if parsed else None
        new_labels = new_labels_since_training(con)
        reason = retrain_reason(settings, new_labels, parsed, agreement)
        if reason:
            request = pl.DataFrame(
                [
                    {
                        "checkpoint_id": cid,
                        "batch": batch,
                        "reason": reason,
                        "new_labels": new_labels,
                        "agreement": agreement,
                    }
                ],
                schema={
                    "checkpoint_id": pl.Utf8,
                    "batch": pl.Utf8,
                    "reason": pl.Utf8,
                    "new_labels": pl.Int64,
                    "agreement": pl.Float64,
                },
            )
            run_model(con, "students.retrain_requests", frames={"staged_retrain_request": request}, atomic=False)
        else:  # a re-run that no longer warrants it withdraws this batch's request
            run_model(
                con,
                "students.retrain_requests",
                {"checkpoint_id": cid, "batch": batch},
                section="withdraw",
                atomic=False,
            )
        seconds = time.perf_counter() - t0
        audit_run = pl.DataFrame(
            [
                {
                    "batch": batch,
                    "checkpoint_id": cid,
                    "model_identity": variables["model_identity"],
                    "k": cfg.k,
                    "audited": audited,
                    "parsed": parsed,
                    "agreed": agreed,
                    "agreement": agreement,
                    "teacher_prompts": run.prompts,
                    "teacher_cached": run.cached,
                    "retrain_requested": reason is not None,
                    "seconds": seconds,
                }
            ],
            schema={
                "batch": pl.Utf8,
                "checkpoint_id": pl.Utf8,
                "model_identity": pl.Utf8,
                "k": pl.Int64,
                "audited": pl.Int64,
                "parsed": pl.Int64,
                "agreed": pl.Int64,
                "agreement": pl.Float64,
                "teacher_prompts": pl.Int64,
                "teacher_cached": pl.Int64,
                "retrain_requested": pl.Boolean,
                "seconds": pl.Float64,
            },
        )
        run_model(con, "labeling.audit_runs", frames={"staged_audit_run": audit_run}, atomic=False)
    stats = AuditResult(
        batch,
        checkpoint_id=cid,
        k=cfg.k,
        audited=audited,
        parsed=parsed,
        agreed=agreed,
        agreement=agreement,
        teacher_prompts=run.prompts,
        teacher_cached=run.cached,
        new_labels_since_training=new_labels,
        retrain_requested=reason is not None,
        retrain_reason=reason,
    )
    record_stage(
        con, "audit", batch, audited, seconds, {k: v for k, v in stats.as_dict().items() if k != "skipped"}, run.run_id
    )
    return stats


def open_retrain_requests(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Requests no checkpoint has answered yet (none was trained after them)."""
    return con.execute(
        "SELECT r.* FROM students.retrain_requests r WHERE NOT EXISTS "
        "(SELECT 1 FROM students.checkpoints c WHERE c.created_at > r.requested_at) ORDER BY r.requested_at"
    ).pl()
